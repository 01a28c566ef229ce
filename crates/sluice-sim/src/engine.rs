//! The discrete-event loop.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    fmt,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::SmallRng};
use sluice_balancer::{Caller, PickView, Strategy, StrategyKind, WeightedRoundRobin};
use sluice_health::{HealthMonitor, Outcome, OutlierConfig, Selection};
use sluice_region_model::{GeoPoint, InFlightGuard, NodeId, Region, Snapshot};

use crate::{
    InFlight, NaiveBaseline, Phase, Scenario, SimError,
    naive::NAIVE_PROBE_INTERVAL,
    report::{Collector, RunReport},
};

/// Who routes the calls in one run: a real strategy or one of the two references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Contender {
    /// The oracle: knows every region's true state and current queue, and sends each attempt
    /// to the region with the lowest expected latency among those that would answer.
    /// Not a real strategy: an upper bound on what routing can achieve.
    Oracle,
    /// [`NaiveBaseline`]: the in-run baseline every real strategy should beat.
    NaiveBaseline,
    /// A real strategy of `sluice-balancer`, fed by the real `sluice-health` monitor.
    Strategy(StrategyKind),
}

/// Progress of a long run, passed to the callback of [`simulate_with_progress`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// Simulated seconds done.
    pub simulated_s: f64,
    /// Simulated seconds the run lasts (arrivals stop then; the run drains after).
    pub duration_s: f64,
    /// User calls finished so far.
    pub calls_done: u64,
}

// ===== impl Contender =====

impl Contender {
    /// The references first, then every built-in strategy: the rows of a report.
    pub fn all() -> Vec<Contender> {
        let mut all = vec![Contender::Oracle, Contender::NaiveBaseline];
        all.extend(StrategyKind::ALL.into_iter().map(Contender::Strategy));
        all
    }

    /// `oracle`, `naive-baseline` or the strategy's name.
    pub fn name(&self) -> &'static str {
        match self {
            Contender::Oracle => "oracle",
            Contender::NaiveBaseline => "naive-baseline",
            Contender::Strategy(kind) => kind.name(),
        }
    }
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Contender {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "oracle" => Ok(Contender::Oracle),
            "naive-baseline" | "naive" | "baseline" => Ok(Contender::NaiveBaseline),
            other => other
                .parse::<StrategyKind>()
                .map(Contender::Strategy)
                .map_err(|_| SimError::Unknown { what: "strategy", name: s.to_owned() }),
        }
    }
}

/// Runs `scenario` with `contender` routing, and reports what happened.
///
/// # Errors
/// [`SimError::InvalidScenario`] if the scenario does not validate.
pub fn simulate(scenario: &Scenario, contender: Contender) -> Result<RunReport, SimError> {
    simulate_with_progress(scenario, contender, &mut |_| {})
}

/// [`simulate`], calling `progress` about once per simulated second.
///
/// # Errors
/// See [`simulate`].
pub fn simulate_with_progress(
    scenario: &Scenario,
    contender: Contender,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunReport, SimError> {
    scenario.validate()?;
    let mut sim = Sim::new(scenario, RouterSpec::Contender(contender))?;
    sim.run(progress);
    Ok(sim.collector.finish(scenario, contender.name()))
}

/// Runs `scenario` with a strategy of your own (any [`Strategy`], such as a tuned
/// `Adaptive`), fed by the real `HealthMonitor` exactly as the built-in strategies are.
///
/// The report's `strategy` field is `strategy.name()`.
///
/// # Errors
/// See [`simulate`].
pub fn simulate_strategy(
    scenario: &Scenario,
    strategy: Box<dyn Strategy>,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunReport, SimError> {
    scenario.validate()?;
    let name = strategy.name();
    let mut sim = Sim::new(scenario, RouterSpec::Custom(strategy))?;
    sim.run(progress);
    Ok(sim.collector.finish(scenario, name))
}

/// What [`Sim::new`] builds its router from.
enum RouterSpec {
    Contender(Contender),
    Custom(Box<dyn Strategy>),
}

// ===== the model =====

const NS: f64 = 1e9;

fn ns(seconds: f64) -> u64 {
    (seconds * NS).round().max(0.0) as u64
}

/// One region's queue: `capacity` slots, first come, first served.
struct NodeModel {
    rtt_ns: u64,
    median_ns: f64,
    sigma: f64,
    /// `e^(σ²/2)`: mean of the lognormal over its median.
    mean_over_median: f64,
    group: usize,
    /// When each slot becomes free.
    slots: BinaryHeap<Reverse<u64>>,
    /// When each accepted call leaves the region (queued or in service); kept only for
    /// nodes with a throttle phase, the only rule that reads it.
    ends: BinaryHeap<Reverse<u64>>,
    tracks_load: bool,
    /// Phases affecting this node, as indices into `Sim::phases`.
    phases: Vec<usize>,
}

/// A phase in nanoseconds.
struct PhaseNs {
    start: u64,
    end: u64,
    phase: Phase,
}

struct Call {
    arrival: u64,
    /// Standard normal draw of this call: its service-time quantile, the same wherever it
    /// goes (common random numbers make contenders comparable call by call).
    z: f64,
    attempts: u32,
    failed_attempt: bool,
    tried: Vec<NodeId>,
}

struct Attempt {
    call: usize,
    node: NodeId,
    outcome: Outcome,
    /// When the region finishes serving it; 0 if it never took it.
    server_end: u64,
    _guard: Option<InFlightGuard>,
}

enum Router {
    Oracle,
    Naive(NaiveBaseline),
    Real(Box<dyn Strategy>),
}

struct Sim<'s> {
    scenario: &'s Scenario,
    t0: Instant,
    snapshot: Arc<Snapshot>,
    monitor: HealthMonitor,
    router: Router,
    caller: Caller,
    nodes: Vec<NodeModel>,
    phases: Vec<PhaseNs>,
    /// Arrivals and the service-time quantile of each call.
    arrival_rng: SmallRng,
    /// Entropy for picks.
    pick_rng: SmallRng,
    /// Everything else random in the world (server errors).
    world_rng: SmallRng,
    /// `(time, sequence, what, generation)`: `what` is [`ARRIVAL`], a phase start below
    /// [`PHASE_START`], or an attempt slot whose generation must still match.
    events: BinaryHeap<Reverse<(u64, u64, usize, u64)>>,
    seq: u64,
    calls: Vec<Call>,
    free_calls: Vec<usize>,
    attempts: Vec<Option<Attempt>>,
    /// Bumped whenever an attempt slot's completion is rescheduled or the slot is reused.
    generations: Vec<u64>,
    free_attempts: Vec<usize>,
    candidates: Vec<NodeId>,
    timeout_ns: u64,
    end_ns: u64,
    collector: Collector,
}

/// Marks the pending arrival in the event queue.
const ARRIVAL: usize = usize::MAX;

/// Phase `i` starting is event `PHASE_START - i`.
const PHASE_START: usize = usize::MAX - 1;

/// How long a server error takes to come back, beyond the round trip.
const ERROR_SERVICE_NS: u64 = 20_000_000;

// ===== impl Sim =====

impl<'s> Sim<'s> {
    fn new(scenario: &'s Scenario, spec: RouterSpec) -> Result<Self, SimError> {
        let t0 = Instant::now();
        let regions = scenario.regions.iter().map(|r| {
            Region::new(r.id.clone(), format!("https://{}.sim.invalid/v1", r.id), GeoPoint::new(r.lat, r.lon))
                .with_weight(r.weight)
                .with_max_concurrency(r.max_concurrency)
        });
        let snapshot = Snapshot::builder()
            .epoch(t0)
            .build(regions)
            .map_err(|e| SimError::InvalidScenario { scenario: scenario.name.clone(), reason: e.to_string() })?;
        let snapshot = Arc::new(snapshot);
        let monitor = HealthMonitor::new(Arc::clone(&snapshot), OutlierConfig::default());
        let groups = scenario.groups();
        let region_groups = scenario.groups_of_regions();
        let phases: Vec<PhaseNs> = scenario
            .phases
            .iter()
            .map(|p| {
                let (s, e) = p.bounds();
                PhaseNs { start: ns(s), end: ns(e), phase: p.clone() }
            })
            .collect();
        let nodes = scenario
            .regions
            .iter()
            .zip(&region_groups)
            .map(|(r, g)| NodeModel {
                rtt_ns: ns(r.rtt_ms / 1e3),
                median_ns: r.service_median_ms * 1e6,
                sigma: r.service_sigma,
                mean_over_median: (r.service_sigma * r.service_sigma / 2.0).exp(),
                group: groups.iter().position(|x| x == g).expect("group listed"),
                slots: (0..r.capacity).map(|_| Reverse(0)).collect(),
                ends: BinaryHeap::new(),
                tracks_load: phases.iter().any(|p| {
                    matches!(p.phase, Phase::Throttle { .. }) && p.phase.target().is_some_and(|t| t == r.id || t == g)
                }),
                phases: phases
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.phase.target().is_some_and(|t| t == r.id || t == g))
                    .map(|(i, _)| i)
                    .collect(),
            })
            .collect();
        let router = match spec {
            RouterSpec::Contender(Contender::Oracle) => Router::Oracle,
            RouterSpec::Contender(Contender::NaiveBaseline) => Router::Naive(NaiveBaseline::new(snapshot.len())),
            RouterSpec::Contender(Contender::Strategy(kind)) => {
                Router::Real(build_strategy(kind, &snapshot, scenario.seed, t0))
            }
            RouterSpec::Custom(strategy) => Router::Real(strategy),
        };
        let seed = scenario.seed;
        Ok(Self {
            scenario,
            t0,
            monitor,
            router,
            caller: Caller::new(GeoPoint::new(scenario.caller.lat, scenario.caller.lon)),
            nodes,
            arrival_rng: SmallRng::seed_from_u64(seed),
            pick_rng: SmallRng::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15),
            world_rng: SmallRng::seed_from_u64(seed ^ 0xD1B5_4A32_D192_ED03),
            events: BinaryHeap::new(),
            seq: 0,
            calls: Vec::new(),
            free_calls: Vec::new(),
            attempts: Vec::new(),
            generations: Vec::new(),
            free_attempts: Vec::new(),
            candidates: Vec::with_capacity(snapshot.len()),
            timeout_ns: ns(scenario.attempt_timeout_s),
            end_ns: ns(scenario.duration_s),
            collector: Collector::new(scenario, &phases_of(&phases)),
            phases,
            snapshot,
        })
    }

    fn run(&mut self, progress: &mut dyn FnMut(Progress)) {
        let first = self.next_arrival_after(0);
        if let Some(t) = first {
            self.push(t, ARRIVAL, 0);
        }
        for i in 0..self.phases.len() {
            if let Phase::Down { in_flight: InFlight::Fail, .. } = self.phases[i].phase {
                self.push(self.phases[i].start, PHASE_START - i, 0);
            }
        }
        let mut next_probe = 0u64;
        let mut next_report = ns(1.0);
        while let Some(Reverse((t, _, what, generation))) = self.events.pop() {
            if what < PHASE_START - self.phases.len() && self.generations[what] != generation {
                // A completion that a hard failure rescheduled.
                continue;
            }
            if let Router::Naive(naive) = &self.router {
                while next_probe <= t && next_probe < self.end_ns {
                    for i in 0..self.nodes.len() {
                        let up = !self.is_down(i, next_probe);
                        naive.observe_probe(NodeId::from_index(i as u32), up);
                    }
                    next_probe += NAIVE_PROBE_INTERVAL.as_nanos() as u64;
                }
            }
            if t >= next_report {
                progress(Progress {
                    simulated_s: t as f64 / NS,
                    duration_s: self.scenario.duration_s,
                    calls_done: self.collector.calls_done(),
                });
                next_report = t - t % ns(1.0) + ns(1.0);
            }
            if what == ARRIVAL {
                self.arrive(t);
            } else if what > PHASE_START - self.phases.len() {
                self.break_in_flight(t, PHASE_START - what);
            } else {
                self.complete(t, what);
            }
        }
        progress(Progress {
            simulated_s: self.scenario.duration_s,
            duration_s: self.scenario.duration_s,
            calls_done: self.collector.calls_done(),
        });
    }

    fn push(&mut self, t: u64, what: usize, generation: u64) {
        self.seq += 1;
        self.events.push(Reverse((t, self.seq, what, generation)));
    }

    /// A `down` phase with [`InFlight::Fail`] begins at `t`: every call its targets are serving
    /// breaks, and the client sees a connect error half a round trip later. The regions' queues
    /// empty.
    fn break_in_flight(&mut self, t: u64, phase: usize) {
        let targets: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].phases.contains(&phase)).collect();
        for slot in 0..self.attempts.len() {
            let Some(a) = &mut self.attempts[slot] else { continue };
            let i = a.node.index();
            if !targets.contains(&i) || a.server_end <= t {
                continue;
            }
            a.outcome = Outcome::ConnectError;
            a.server_end = 0;
            let at = t + self.nodes[i].rtt_ns / 2;
            self.generations[slot] += 1;
            self.push(at, slot, self.generations[slot]);
        }
        for &i in &targets {
            let n = &mut self.nodes[i];
            let capacity = n.slots.len();
            n.slots = (0..capacity).map(|_| Reverse(t)).collect();
            n.ends.clear();
        }
    }

    /// The arrival rate at `t`, scaled by every active `load` phase.
    fn rate_at(&self, t: u64) -> f64 {
        let mut rate = self.scenario.rate_per_s;
        for p in &self.phases {
            if let Phase::Load { from, to, .. } = p.phase
                && t >= p.start
                && t < p.end
            {
                let x = (t - p.start) as f64 / (p.end - p.start).max(1) as f64;
                rate *= from + (to - from) * x;
            }
        }
        rate
    }

    /// The next arrival of the Poisson process after `t`, or `None` past the duration.
    fn next_arrival_after(&mut self, mut t: u64) -> Option<u64> {
        loop {
            let rate = self.rate_at(t);
            if rate > 0.0 {
                let u: f64 = self.arrival_rng.random();
                t += ns(-(1.0 - u).ln() / rate).max(1);
            } else {
                t += ns(0.1);
            }
            if t >= self.end_ns {
                return None;
            }
            if rate > 0.0 {
                return Some(t);
            }
        }
    }

    fn arrive(&mut self, t: u64) {
        let z = standard_normal(&mut self.arrival_rng);
        if let Some(next) = self.next_arrival_after(t) {
            self.push(next, ARRIVAL, 0);
        }
        let call = Call { arrival: t, z, attempts: 0, failed_attempt: false, tried: Vec::new() };
        let id = match self.free_calls.pop() {
            Some(id) => {
                let mut tried = std::mem::take(&mut self.calls[id].tried);
                tried.clear();
                self.calls[id] = Call { tried, ..call };
                id
            }
            None => {
                self.calls.push(call);
                self.calls.len() - 1
            }
        };
        self.send(id, t);
    }

    fn now(&self, t: u64) -> Instant {
        self.t0 + Duration::from_nanos(t)
    }

    /// Sends the next attempt of `call` at `t`, or finishes the call if no node is left.
    fn send(&mut self, call: usize, t: u64) {
        let now = self.now(t);
        let Some(node) = self.pick(call, t, now) else {
            self.finish(call, t, false);
            return;
        };
        let c = &mut self.calls[call];
        c.attempts += 1;
        c.tried.push(node);
        let (z, first) = (c.z, c.attempts == 1);
        let (outcome, done, server_end) = self.serve(node.index(), t, z);
        self.collector.sent(node.index(), self.nodes[node.index()].group, t, first);
        let guard = Some(self.snapshot.node(node).metrics().start_request());
        let attempt = Attempt { call, node, outcome, server_end, _guard: guard };
        let slot = match self.free_attempts.pop() {
            Some(slot) => {
                self.attempts[slot] = Some(attempt);
                self.generations[slot] += 1;
                slot
            }
            None => {
                self.attempts.push(Some(attempt));
                self.generations.push(0);
                self.attempts.len() - 1
            }
        };
        self.push(done, slot, self.generations[slot]);
    }

    fn pick(&mut self, call: usize, t: u64, now: Instant) -> Option<NodeId> {
        if let Router::Oracle = self.router {
            let tried = std::mem::take(&mut self.calls[call].tried);
            let picked = self.oracle_pick(&tried, t);
            self.calls[call].tried = tried;
            return picked;
        }
        let tried = &self.calls[call].tried;
        let skip = |id: NodeId| tried.contains(&id);
        match &self.router {
            Router::Oracle => None,
            Router::Naive(naive) => {
                naive.candidates(skip, &mut self.candidates);
                let view = PickView::new(&self.snapshot, &self.candidates, now, self.pick_rng.random())
                    .with_caller(self.caller);
                naive.pick(&view)
            }
            Router::Real(strategy) => {
                if let Selection::Unavailable { .. } = self.monitor.select(now, skip, &mut self.candidates) {
                    return None;
                }
                let view = PickView::new(&self.snapshot, &self.candidates, now, self.pick_rng.random())
                    .with_caller(self.caller);
                strategy.pick(&view)
            }
        }
    }

    /// The region with the lowest expected latency for an attempt sent at `t`, among those
    /// that would answer it; if none would, the untried one with the lowest expected latency.
    fn oracle_pick(&mut self, tried: &[NodeId], t: u64) -> Option<NodeId> {
        let mut best: Option<(bool, f64, usize)> = None;
        for i in 0..self.nodes.len() {
            if tried.contains(&NodeId::from_index(i as u32)) {
                continue;
            }
            let (answers, expected) = self.expected_latency(i, t);
            let better = match best {
                None => true,
                Some((b_answers, b_expected, _)) => (answers, -expected) > (b_answers, -b_expected),
            };
            if better {
                best = Some((answers, expected, i));
            }
        }
        best.map(|(_, _, i)| NodeId::from_index(i as u32))
    }

    /// What the oracle knows: whether node `i` would serve an attempt sent at `t`, and the
    /// expected latency if it did (round trip, the exact queueing wait, the mean service time).
    fn expected_latency(&mut self, i: usize, t: u64) -> (bool, f64) {
        let n = &mut self.nodes[i];
        let arrive = t + n.rtt_ns / 2;
        let mut answers = true;
        let mut factor = 1.0;
        let mut error_cost = 0.0;
        for &p in &n.phases {
            let p = &self.phases[p];
            if arrive < p.start || arrive >= p.end {
                continue;
            }
            match &p.phase {
                Phase::Down { .. } => answers = false,
                Phase::Slow { factor: f, .. } => factor *= f,
                Phase::Throttle { max_in_flight, .. } => {
                    if load_at(&mut n.ends, arrive) >= *max_in_flight as usize {
                        answers = false;
                    }
                }
                Phase::Errors { rate, .. } => {
                    if *rate >= 0.5 {
                        answers = false;
                    }
                    error_cost += rate * 2.0 * n.rtt_ns as f64;
                }
                Phase::Load { .. } => {}
            }
        }
        let free = n.slots.peek().map_or(0, |r| r.0);
        let wait = free.saturating_sub(arrive) as f64;
        (answers, n.rtt_ns as f64 + wait + n.median_ns * factor * n.mean_over_median + error_cost)
    }

    fn is_down(&self, i: usize, t: u64) -> bool {
        self.nodes[i].phases.iter().any(|&p| {
            let p = &self.phases[p];
            matches!(p.phase, Phase::Down { .. }) && t >= p.start && t < p.end
        })
    }

    /// What node `i` does with an attempt sent at `t`: the outcome, when the client sees it,
    /// and when the region finishes serving it (0 if it does not take it).
    fn serve(&mut self, i: usize, t: u64, z: f64) -> (Outcome, u64, u64) {
        let timeout = self.timeout_ns;
        let n = &mut self.nodes[i];
        let arrive = t + n.rtt_ns / 2;
        let mut factor = 1.0;
        for &p in &n.phases {
            let p = &self.phases[p];
            if arrive < p.start || arrive >= p.end {
                continue;
            }
            match &p.phase {
                Phase::Down { .. } => return (Outcome::ConnectError, t + n.rtt_ns, 0),
                Phase::Slow { factor: f, .. } => factor *= f,
                Phase::Throttle { max_in_flight, retry_after_s, .. } => {
                    if load_at(&mut n.ends, arrive) >= *max_in_flight as usize {
                        let retry_after = Some(Duration::from_secs_f64(*retry_after_s));
                        return (Outcome::RateLimited { retry_after }, t + n.rtt_ns, 0);
                    }
                }
                Phase::Errors { rate, status, .. } => {
                    if self.world_rng.random::<f64>() < *rate {
                        let outcome = Outcome::ServerError { status: *status, retry_after: None };
                        return (outcome, t + n.rtt_ns + ERROR_SERVICE_NS, 0);
                    }
                }
                Phase::Load { .. } => {}
            }
        }
        let Reverse(free) = n.slots.pop().expect("capacity is at least 1");
        let start = free.max(arrive);
        let service = (n.median_ns * factor * (n.sigma * z).exp()).max(1.0) as u64;
        let end = start + service;
        n.slots.push(Reverse(end));
        if n.tracks_load {
            n.ends.push(Reverse(end));
        }
        let answer = end + n.rtt_ns - n.rtt_ns / 2;
        if answer - t > timeout {
            (Outcome::Timeout, t + timeout, end)
        } else {
            (Outcome::Success { latency: Duration::from_nanos(answer - t) }, answer, end)
        }
    }

    fn complete(&mut self, t: u64, slot: usize) {
        let attempt = self.attempts[slot].take().expect("live attempt");
        self.free_attempts.push(slot);
        let Attempt { call, node, outcome, _guard, .. } = attempt;
        drop(_guard);
        self.monitor.record(node, outcome, self.now(t));
        let ok = matches!(outcome, Outcome::Success { .. });
        if let (Router::Naive(naive), Outcome::Success { latency }) = (&self.router, outcome) {
            naive.observe_success(node, latency);
        }
        self.collector.answered(node.index(), self.nodes[node.index()].group, t, ok);
        if ok {
            self.finish(call, t, true);
            return;
        }
        self.calls[call].failed_attempt = true;
        if self.calls[call].attempts < self.scenario.max_attempts {
            self.send(call, t);
        } else {
            self.finish(call, t, false);
        }
    }

    fn finish(&mut self, call: usize, t: u64, ok: bool) {
        let c = &self.calls[call];
        self.collector.finished(c.arrival, t, ok, c.attempts, c.failed_attempt);
        self.free_calls.push(call);
    }
}

fn phases_of(phases: &[PhaseNs]) -> Vec<(u64, u64, Phase)> {
    phases.iter().map(|p| (p.start, p.end, p.phase.clone())).collect()
}

/// Calls queued or in service at `t`, after dropping those that left by then.
///
/// Attempts reach a node in time order, so pruning never drops a call that a later query
/// would still count.
fn load_at(ends: &mut BinaryHeap<Reverse<u64>>, t: u64) -> usize {
    while ends.peek().is_some_and(|r| r.0 <= t) {
        ends.pop();
    }
    ends.len()
}

/// Builds a real strategy whose start is independent of the process's history: the
/// weighted round-robin cursor is rotated to the start of its cycle, so that runs with the
/// same seed are identical whatever ran before on this thread.
fn build_strategy(kind: StrategyKind, snapshot: &Snapshot, seed: u64, t0: Instant) -> Box<dyn Strategy> {
    if kind != StrategyKind::WeightedRoundRobin {
        return kind.build_seeded(seed);
    }
    let wrr = WeightedRoundRobin::with_seed(seed);
    let cycle = wrr.cycle(snapshot);
    let len = cycle.len();
    if len > 1 {
        // On a full view with no slow start every pick advances the cursor by one.
        let view = PickView::all(snapshot, t0, 0);
        let seen: Vec<NodeId> = (0..len).map(|_| wrr.pick(&view).expect("non-empty")).collect();
        let offset = (0..len).find(|&r| (0..len).all(|i| seen[i] == cycle[(r + i) % len])).unwrap_or(0);
        for _ in 0..(len - offset) % len {
            let _ = wrr.pick(&view);
        }
    }
    Box::new(wrr)
}

/// A standard normal draw (Box–Muller, one of the pair).
fn standard_normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random();
    let u2: f64 = rng.random();
    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
