//! `sluice demo`: five mock regions on loopback, real traffic through `sluice-client` from a
//! caller in Seoul under the default (locality) policy, and a scripted 429.
//!
//! The script, in three phases (times as shares of the run):
//! 1. 0–35 %: every region healthy. The caller is served by Seoul, the nearest region.
//! 2. 35–60 %: Seoul answers every call with 429 and a Retry-After. Each 429 keeps Seoul out
//!    for that long; its calls spill to Tokyo, the next-nearest region, and none is lost.
//! 3. 60–100 %: Seoul stops rate limiting. Once its cooldown ends, calls come back to it.
//!
//! The summary gives each phase's calls by the region that served them.
use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use sluice_client::{
    AttemptFailure, CallOptions, ChatCompletionRequest, ChatMessage, Client, FailoverPolicy, GeoPoint, OutlierConfig,
    ProbeConfig, Region, StrategyKind,
};
use sluice_health::HealthEventKind;

use crate::{
    CliError,
    error::chain,
    mock::MockRegion,
    table::{RegionState, Table, ms, now},
};

/// The caller: Seoul city hall.
const CALLER: GeoPoint = GeoPoint::new(37.5665, 126.978);

/// Id, name, location and round trip of each embedded region.
const REGIONS: [(&str, &str, f64, f64, u64); 5] = [
    ("ap-northeast-2", "Seoul", 37.56, 126.97, 23),
    ("ap-northeast-1", "Tokyo", 35.68, 139.69, 28),
    ("ap-southeast-1", "Singapore", 1.35, 103.82, 45),
    ("eu-central-1", "Frankfurt", 50.11, 8.68, 120),
    ("us-east-1", "Virginia", 38.9, -77.04, 150),
];

/// Concurrent callers, each sending one call every `PACE`: about one call in flight at a time,
/// so that the nearest region has room for all of them.
const WORKERS: usize = 4;
const PACE: Duration = Duration::from_millis(200);
/// Latency percentiles in the live table cover about this much time.
const WINDOW: Duration = Duration::from_secs(2);

/// Per-region counters.
struct RegionStats {
    picks: u64,
    served: u64,
    failed: u64,
    all: Histogram<u64>,
    recent: Histogram<u64>,
    previous: Histogram<u64>,
    recent_picks: u64,
    previous_picks: u64,
}

/// The script's phases.
const PHASES: [&str; 3] = ["all regions healthy", "Seoul answers 429 with Retry-After", "Seoul recovered"];
/// Where each phase starts, as a share of the run.
const PHASE_STARTS: [f64; 3] = [0.0, 0.35, 0.6];

struct Stats {
    regions: Vec<RegionStats>,
    /// Per phase, per region: calls that started in that phase and were served there.
    served_in_phase: [[u64; REGIONS.len()]; PHASES.len()],
    /// Per phase: calls that met a 429 before being served elsewhere.
    throttled_in_phase: [u64; PHASES.len()],
    calls: u64,
    lost: u64,
    failed_over: u64,
    rescues: u64,
    window_started: Instant,
    log: Vec<String>,
    first_lost: Option<String>,
}

/// Runs the demo for `duration` and prints the summary. Exit code 0 when no call was lost.
pub(crate) async fn run(duration: Duration, seed: u64) -> Result<ExitCode, CliError> {
    let failed = |what: &str, e: &dyn std::error::Error| CliError::Failed(format!("{what}: {}", chain(e)));
    let mut mocks = Vec::with_capacity(REGIONS.len());
    for (id, name, _, _, rtt) in REGIONS {
        let m = MockRegion::start(id, name, Duration::from_millis(rtt))
            .await
            .map_err(|e| failed("cannot start the mock regions on 127.0.0.1", &e))?;
        mocks.push(m);
    }
    let mocks = Arc::new(mocks);
    let share = move |x: f64| duration.mul_f64(x);
    let retry_after = Duration::from_secs((duration.as_secs_f64() * 0.08).round().max(1.0) as u64);
    let phase = Arc::new(AtomicUsize::new(0));
    let probe = ProbeConfig::builder()
        .interval(Duration::from_millis(250))
        .jitter(Duration::from_millis(25))
        .initial_jitter(Duration::ZERO)
        .timeout(Duration::from_millis(500))
        .unhealthy_interval(Duration::from_millis(200))
        .build()
        .map_err(|e| failed("probe settings", &e))?;
    let outlier =
        OutlierConfig::builder().slow_start_window(share(0.25)).build().map_err(|e| failed("outlier settings", &e))?;
    let regions = REGIONS
        .iter()
        .zip(mocks.iter())
        .map(|((id, name, lat, lon, _), m)| Region::new(*id, m.url(), GeoPoint::new(*lat, *lon)).with_name(*name));
    let client = Client::builder()
        .regions(regions)
        .strategy(StrategyKind::default().build_seeded(seed))
        .seed(seed)
        .probe_config(probe)
        .outlier_config(outlier)
        .failover(FailoverPolicy::default())
        .default_caller(CALLER)
        .build()
        .map_err(|e| failed("cannot start the client", &e))?;

    let started = Instant::now();
    let stats = Arc::new(Mutex::new(Stats {
        regions: (0..REGIONS.len()).map(|_| RegionStats::new()).collect(),
        served_in_phase: [[0; REGIONS.len()]; PHASES.len()],
        throttled_in_phase: [0; PHASES.len()],
        calls: 0,
        lost: 0,
        failed_over: 0,
        rescues: 0,
        window_started: started,
        log: Vec::new(),
        first_lost: None,
    }));
    let log = {
        let stats = Arc::clone(&stats);
        move |line: String| {
            let t = started.elapsed().as_secs_f64();
            stats.lock().log.push(format!("{t:5.1}s  {line}"));
        }
    };
    log(format!(
        "{} regions on 127.0.0.1, caller in Seoul, strategy {}, {WORKERS} callers x {:.0} calls/s",
        REGIONS.len(),
        client.strategy_name(),
        1.0 / PACE.as_secs_f64()
    ));

    // Health events, as the router sees them.
    let events_task = {
        let mut events = client.health().subscribe();
        let log = log.clone();
        tokio::spawn(async move {
            let mut was_down = [false; REGIONS.len()];
            while let Ok(event) = events.recv().await {
                let name = name_of(&event.region);
                let i = event.node.index().min(REGIONS.len() - 1);
                let line = match event.kind {
                    HealthEventKind::BecameUnhealthy { reason, .. } => {
                        was_down[i] = true;
                        let short = reason.split(':').next().unwrap_or(&reason).to_owned();
                        format!("health: probes mark {name} unhealthy ({short}); no new calls go there")
                    }
                    HealthEventKind::BecameHealthy if was_down[i] => {
                        format!("health: {name} healthy again; slow start ramps its share up")
                    }
                    HealthEventKind::BecameHealthy => format!("health: {name} healthy (first probe)"),
                    HealthEventKind::Ejected { until, .. } => format!(
                        "outlier: {name} ejected for {:.0}s (calls failing)",
                        until.saturating_duration_since(now()).as_secs_f64()
                    ),
                    HealthEventKind::EjectionEnded => format!("health: probes see {name} again; ejection lifted"),
                    HealthEventKind::CooldownStarted { until } => format!(
                        "cooldown: {name} honoured Retry-After, out for {:.1}s",
                        until.saturating_duration_since(now()).as_secs_f64()
                    ),
                    HealthEventKind::CredentialsRejected { status } => {
                        format!("health: {name} rejected the key ({status})")
                    }
                    _ => continue,
                };
                log(line);
            }
        })
    };

    // Traffic.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::with_capacity(WORKERS);
    for w in 0..WORKERS {
        let (client, stats, stop, log) = (client.clone(), Arc::clone(&stats), Arc::clone(&stop), log.clone());
        let phase = Arc::clone(&phase);
        workers.push(tokio::spawn(async move {
            // Spread the callers over one pace period.
            tokio::time::sleep(PACE.mul_f64(w as f64 / WORKERS as f64)).await;
            let mut ticker = tokio::time::interval(PACE);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                n += 1;
                let request = ChatCompletionRequest::new(
                    "gpt-4o-mini",
                    vec![ChatMessage::user(format!("caller {w}, call {n}: what is the capital of Korea?"))],
                );
                let started_in = phase.load(Ordering::SeqCst);
                let result = client.chat_completions_with(request, &CallOptions::new().caller(CALLER)).await;
                let mut s = stats.lock();
                s.calls += 1;
                match result {
                    Ok(response) => {
                        let meta = &response.meta;
                        s.served_in_phase[started_in][meta.node.index()] += 1;
                        if meta
                            .failed_attempts
                            .iter()
                            .any(|f| matches!(f.failure, AttemptFailure::Status { status: 429, .. }))
                        {
                            s.throttled_in_phase[started_in] += 1;
                        }
                        for f in &meta.failed_attempts {
                            let r = &mut s.regions[f.node.index()];
                            r.picks += 1;
                            r.recent_picks += 1;
                            r.failed += 1;
                        }
                        let r = &mut s.regions[meta.node.index()];
                        r.picks += 1;
                        r.recent_picks += 1;
                        r.served += 1;
                        let us = u64::try_from(meta.latency.as_micros()).unwrap_or(u64::MAX).max(1);
                        let _ = r.all.record(us);
                        let _ = r.recent.record(us);
                        if meta.failed_over {
                            s.failed_over += 1;
                            let first = s.failed_over == 1;
                            drop(s);
                            if first {
                                let f = &meta.failed_attempts[0];
                                log(format!(
                                    "failover: a call to {} failed ({}) and was served by {} instead",
                                    name_of(&f.region),
                                    f.failure,
                                    name_of(&meta.region)
                                ));
                            }
                            s = stats.lock();
                        }
                        s.rescues += u64::from(meta.rescues);
                    }
                    Err(e) => {
                        s.lost += 1;
                        for f in e.failed_attempts() {
                            let r = &mut s.regions[f.node.index()];
                            r.picks += 1;
                            r.recent_picks += 1;
                            r.failed += 1;
                        }
                        if s.first_lost.is_none() {
                            s.first_lost = Some(chain(&e));
                        }
                    }
                }
            }
        }));
    }

    // The script.
    let script = {
        let (mocks, log, phase) = (Arc::clone(&mocks), log.clone(), Arc::clone(&phase));
        tokio::spawn(async move {
            let at = |x: f64| tokio::time::sleep_until(tokio::time::Instant::from_std(started) + share(x));
            log(format!("phase 1: {}; calls should stay in Seoul", PHASES[0]));
            at(PHASE_STARTS[1]).await;
            mocks[0].set_rate_limited(Some(retry_after));
            phase.store(1, Ordering::SeqCst);
            log(format!(
                "phase 2, FAULT: Seoul answers every call with 429, Retry-After: {} s; calls should spill to Tokyo",
                retry_after.as_secs()
            ));
            at(PHASE_STARTS[2]).await;
            mocks[0].set_rate_limited(None);
            phase.store(2, Ordering::SeqCst);
            log("phase 3, RECOVERY: Seoul stops rate limiting; calls should come back to it".to_owned());
        })
    };

    // The screen.
    let tty = std::io::stdout().is_terminal();
    let refresh = if tty { Duration::from_millis(200) } else { duration.div_f64(5.0) };
    let mut ticker = tokio::time::interval(refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = tokio::time::Instant::from_std(started) + duration;
    let mut drawn = 0usize;
    let mut logged = 0usize;
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "sluice demo: {:.0} s of traffic through sluice-client; Ctrl-C to stop early\n",
        duration.as_secs_f64()
    );
    loop {
        let done = tokio::select! {
            _ = ticker.tick() => tokio::time::Instant::now() >= deadline,
            () = tokio::time::sleep_until(deadline) => true,
            _ = tokio::signal::ctrl_c() => true,
        };
        let frame = {
            let mut s = stats.lock();
            s.rotate();
            render(&s, &client, started)
        };
        let new_log: Vec<String> = {
            let s = stats.lock();
            let lines = s.log[logged..].to_vec();
            logged = s.log.len();
            lines
        };
        if tty {
            // Redraw the table in place; the event log scrolls above it.
            if drawn > 0 {
                let _ = write!(out, "\x1b[{drawn}A\x1b[J");
            }
            for line in &new_log {
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out);
            for line in &frame {
                let _ = writeln!(out, "{line}");
            }
            drawn = frame.len() + 1;
        } else {
            for line in &new_log {
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out, "--- {:.1}s", started.elapsed().as_secs_f64());
            for line in &frame {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
        if done {
            break;
        }
    }

    stop.store(true, Ordering::Relaxed);
    script.abort();
    for w in workers {
        // A call is bounded by the client's deadline; do not wait longer than a few seconds.
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    events_task.abort();
    client.shutdown_probing().await;

    let s = stats.lock();
    let mut table = Table::new(&["region", "name", "rtt", "picks", "served", "failed", "p50", "p99"]);
    for (i, (id, name, _, _, rtt)) in REGIONS.iter().enumerate() {
        let r = &s.regions[i];
        let (p50, p99) = percentiles(&r.all);
        table.row(vec![
            (*id).to_owned(),
            (*name).to_owned(),
            format!("{rtt} ms"),
            r.picks.to_string(),
            r.served.to_string(),
            r.failed.to_string(),
            p50,
            p99,
        ]);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\nsummary");
    for line in table.lines() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "\n  phases (calls by the phase they started in, and the region that served them):");
    for line in phase_lines(&s, duration) {
        let _ = writeln!(out, "    {line}");
    }
    let _ = writeln!(out, "\n  events:");
    for line in &s.log {
        let _ = writeln!(out, "    {line}");
    }
    let _ = writeln!(
        out,
        "\n  calls: {}  served: {}  failed over: {}  rescued: {}",
        s.calls,
        s.calls - s.lost,
        s.failed_over,
        s.rescues
    );
    let _ = writeln!(out, "  lost calls: {}", s.lost);
    if let Some(e) = &s.first_lost {
        let _ = writeln!(out, "  first lost call: {e}");
    }
    let _ = out.flush();
    Ok(if s.lost == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// One line per phase: its span, its calls and each region's share of them, nearest first.
fn phase_lines(s: &Stats, duration: Duration) -> Vec<String> {
    let mut lines = Vec::with_capacity(PHASES.len());
    for (i, what) in PHASES.iter().enumerate() {
        let from = duration.mul_f64(PHASE_STARTS[i]).as_secs_f64();
        let to = duration.mul_f64(PHASE_STARTS.get(i + 1).copied().unwrap_or(1.0)).as_secs_f64();
        let served = &s.served_in_phase[i];
        let total: u64 = served.iter().sum();
        let shares: Vec<String> = REGIONS
            .iter()
            .zip(served)
            .map(|(r, &n)| format!("{} {n} ({:.0} %)", r.1, n as f64 * 100.0 / total.max(1) as f64))
            .collect();
        let mut line =
            format!("phase {} ({from:.1}-{to:.1} s), {what}: {total} calls served: {}", i + 1, shares.join(", "));
        if s.throttled_in_phase[i] > 0 {
            line.push_str(&format!("; {} met a 429 and were served elsewhere", s.throttled_in_phase[i]));
        }
        lines.push(line);
    }
    lines
}

fn name_of(id: &str) -> &'static str {
    REGIONS.iter().find(|r| r.0 == id).map_or("?", |r| r.1)
}

fn percentiles(h: &Histogram<u64>) -> (String, String) {
    if h.is_empty() {
        return ("-".to_owned(), "-".to_owned());
    }
    let q = |x: f64| ms(Duration::from_micros(h.value_at_quantile(x)));
    (q(0.5), q(0.99))
}

fn render(s: &Stats, client: &Client, started: Instant) -> Vec<String> {
    let at = now();
    let total_recent: u64 = s.regions.iter().map(|r| r.recent_picks + r.previous_picks).sum();
    let mut table = Table::new(&["region", "state", "picks", "share", "p50", "p99"]);
    for (i, node) in client.snapshot().nodes().iter().enumerate() {
        let r = &s.regions[i];
        let state = client.health().status(node.id(), at).map_or(RegionState::Unknown, |st| RegionState::of(&st, at));
        let mut window = r.previous.clone();
        let _ = window.add(&r.recent);
        let (p50, p99) = percentiles(&window);
        let recent = r.recent_picks + r.previous_picks;
        let share = if total_recent == 0 { 0.0 } else { recent as f64 * 100.0 / total_recent as f64 };
        table.row(vec![
            format!("{} ({})", node.region().name(), node.region().id()),
            state.label(),
            r.picks.to_string(),
            format!("{share:3.0}% {}", bar(share)),
            p50,
            p99,
        ]);
    }
    let mut lines = table.lines();
    lines.push(format!(
        "t={:4.1}s  calls {}  failed over {}  lost calls: {}   (p50/p99 over the last ~{}s)",
        started.elapsed().as_secs_f64(),
        s.calls,
        s.failed_over,
        s.lost,
        WINDOW.as_secs()
    ));
    lines
}

fn bar(percent: f64) -> String {
    "#".repeat((percent / 5.0).round() as usize)
}

// ===== impl RegionStats =====

impl RegionStats {
    fn new() -> Self {
        let h = || Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds");
        Self {
            picks: 0,
            served: 0,
            failed: 0,
            all: h(),
            recent: h(),
            previous: h(),
            recent_picks: 0,
            previous_picks: 0,
        }
    }
}

impl Stats {
    /// Starts a new half-window when the current one is old enough.
    fn rotate(&mut self) {
        if self.window_started.elapsed() < WINDOW / 2 {
            return;
        }
        self.window_started = Instant::now();
        for r in &mut self.regions {
            std::mem::swap(&mut r.previous, &mut r.recent);
            r.recent.reset();
            r.previous_picks = r.recent_picks;
            r.recent_picks = 0;
        }
    }
}
