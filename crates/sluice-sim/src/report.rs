//! What a run measured, as plain data: JSON for machines, a table for people.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::{Contender, Phase, Progress, Scenario, SimError, simulate_with_progress};

/// A quiet spell this long (or a fifth of the failure, if that is shorter) with no attempt
/// to the failed region counts as "stopped".
pub const STOP_GAP_S: f64 = 5.0;

/// Share of its pre-failure traffic a region must win back to count as "resumed".
pub const RESUME_SHARE: f64 = 0.5;

/// How far before a failure the "normal" share of the failed region is measured.
const PRE_FAILURE_WINDOW_S: f64 = 10.0;

/// Points of the latency CDF kept in a report.
const CDF_POINTS: usize = 400;

/// Every contender over every scenario of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// One entry per scenario, in run order.
    pub scenarios: Vec<ScenarioReport>,
}

/// Every contender over one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScenarioReport {
    /// The scenario's name.
    pub scenario: String,
    /// Its one-line description.
    pub description: String,
    /// The seed used.
    pub seed: u64,
    /// Simulated seconds of arrivals.
    pub duration_s: f64,
    /// One run per contender, in run order.
    pub runs: Vec<RunReport>,
}

/// What one contender did in one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunReport {
    /// The contender (`oracle`, `naive-baseline` or a strategy name).
    pub strategy: String,
    /// Whether this is the default strategy (`StrategyKind::default`, what a client uses
    /// unless told otherwise).
    #[serde(default)]
    pub default: bool,
    /// The scenario's name.
    pub scenario: String,
    /// User calls.
    pub calls: u64,
    /// User calls that succeeded, retries included.
    pub succeeded: u64,
    /// `succeeded / calls`.
    pub success_rate: f64,
    /// Attempts sent, first tries included.
    pub attempts: u64,
    /// Attempts beyond the first, per user call.
    pub retries_per_call: f64,
    /// User-visible latency, from arrival to the final answer (success or failure), of every
    /// call.
    pub latency_ms: Percentiles,
    /// Per `down` or `errors` phase: how fast traffic left and came back.
    pub failures: Vec<FailureReport>,
    /// Attempts per group and time bucket.
    pub share: ShareSeries,
    /// The latency CDF as `[latency_ms, fraction of calls at or below]` points.
    pub cdf_ms: Vec<[f64; 2]>,
}

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Mean.
    pub mean: f64,
    /// Maximum.
    pub max: f64,
}

/// Attempts sent to each group in each time bucket: the traffic share over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ShareSeries {
    /// Width of a bucket in seconds.
    pub bucket_s: f64,
    /// The groups (regions, or locations of many nodes), in column order.
    pub groups: Vec<String>,
    /// `attempts[bucket][group]`.
    pub attempts: Vec<Vec<u32>>,
}

impl ShareSeries {
    /// `group`'s share of the attempts in buckets `from..to` (clamped to the series; 0 when
    /// they hold no attempt); `None` for a group the series does not have.
    pub fn share(&self, group: &str, from: usize, to: usize) -> Option<f64> {
        let g = self.groups.iter().position(|x| x == group)?;
        let len = self.attempts.len();
        let rows = &self.attempts[from.min(len)..to.min(len).max(from.min(len))];
        let mine: u32 = rows.iter().map(|r| r[g]).sum();
        let all: u32 = rows.iter().flatten().sum();
        Some(f64::from(mine) / f64::from(all.max(1)))
    }
}

/// How one contender handled one failure phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FailureReport {
    /// `down` or `errors`.
    pub kind: String,
    /// The failed region or group.
    pub target: String,
    /// When the failure began.
    pub start_s: f64,
    /// When it ended.
    pub end_s: f64,
    /// Seconds from the start of the failure to the last attempt before traffic to the target
    /// first paused for [`STOP_GAP_S`] (or a fifth of the failure, if shorter); `None` if it
    /// never paused during the failure.
    pub time_to_stop_s: Option<f64>,
    /// Attempts sent to the target during the failure.
    pub attempts_during: u64,
    /// Attempts sent to the target during the failure after it first stopped (re-tries once an
    /// ejection ran out).
    pub attempts_after_stop: u64,
    /// Attempts to the target that failed during the failure.
    pub failed_attempts: u64,
    /// User calls arriving during the failure that saw at least one failed attempt.
    pub calls_with_failed_attempt: u64,
    /// User calls arriving during the failure that failed in the end.
    pub failed_calls: u64,
    /// Seconds from the end of the failure to the first successful attempt on the target.
    pub time_to_first_success_s: Option<f64>,
    /// Seconds from the end of the failure to the first bucket in which the target's share
    /// is back to [`RESUME_SHARE`] of its share in the 10 s before the failure; `None` if it
    /// never was, or had no traffic before.
    pub time_to_resume_s: Option<f64>,
    /// Seconds from the start of the failure to the first failed answer from the target (the
    /// earliest a client can know); `None` if none failed.
    #[serde(default)]
    pub detected_s: Option<f64>,
    /// Of the user calls' first attempts sent during the failure after `detected_s`, the
    /// share sent to the target; `None` if there were none.
    #[serde(default)]
    pub first_attempt_share_after_detection: Option<f64>,
}

/// Gathers measurements during a run.
pub(crate) struct Collector {
    bucket_ns: u64,
    groups: Vec<String>,
    share: Vec<Vec<u32>>,
    latencies_us: Vec<u32>,
    succeeded: u64,
    attempts: u64,
    tracks: Vec<Track>,
}

struct Track {
    kind: &'static str,
    target: String,
    group: usize,
    nodes: Vec<bool>,
    start: u64,
    end: u64,
    sends: Vec<u64>,
    failed_attempts: u64,
    calls_with_failed_attempt: u64,
    failed_calls: u64,
    first_success_after: Option<u64>,
    detected: Option<u64>,
    first_attempts_after: u64,
    first_attempts_to_target_after: u64,
}

// ===== impl Report =====

impl Report {
    /// Runs every contender over every scenario.
    ///
    /// `progress` gets `(scenario, contender, progress)` about once per simulated second.
    ///
    /// # Errors
    /// The first scenario that does not validate.
    pub fn run(
        scenarios: &[Scenario],
        contenders: &[Contender],
        progress: &mut dyn FnMut(&str, &str, Progress),
    ) -> Result<Report, SimError> {
        let scenarios = scenarios
            .iter()
            .map(|s| ScenarioReport::run(s, contenders, &mut |c, p| progress(&s.name, c, p)))
            .collect::<Result<_, _>>()?;
        Ok(Report { scenarios })
    }

    /// Pretty-printed JSON; the same runs give the same bytes.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports always serialize")
    }

    /// One table per scenario (see [`ScenarioReport::table`]).
    pub fn table(&self) -> String {
        self.scenarios.iter().map(ScenarioReport::table).collect::<Vec<_>>().join("\n")
    }
}

// ===== impl ScenarioReport =====

impl ScenarioReport {
    /// Runs every contender over `scenario`.
    ///
    /// # Errors
    /// If the scenario does not validate.
    pub fn run(
        scenario: &Scenario,
        contenders: &[Contender],
        progress: &mut dyn FnMut(&str, Progress),
    ) -> Result<ScenarioReport, SimError> {
        let runs = contenders
            .iter()
            .map(|&c| simulate_with_progress(scenario, c, &mut |p| progress(c.name(), p)))
            .collect::<Result<_, _>>()?;
        Ok(ScenarioReport {
            scenario: scenario.name.clone(),
            description: scenario.description.clone(),
            seed: scenario.seed,
            duration_s: scenario.duration_s,
            runs,
        })
    }

    /// The run of a contender, by name.
    pub fn run_of(&self, strategy: &str) -> Option<&RunReport> {
        self.runs.iter().find(|r| r.strategy == strategy)
    }

    /// A fixed-width table: one row per contender, with p99 as a ratio of the oracle's.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} (seed {}): {}", self.scenario, self.seed, self.description);
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7}",
            "strategy", "p50 ms", "p99 ms", "p99.9 ms", "p99/orc", "success", "retries", "stop s", "back s"
        );
        let oracle_p99 = self.run_of("oracle").map(|r| r.latency_ms.p99);
        for r in &self.runs {
            let ratio = oracle_p99.filter(|&o| o > 0.0).map(|o| r.latency_ms.p99 / o);
            let f = r.failures.first();
            let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
            let _ = writeln!(
                out,
                "{:<22} {:>9.1} {:>9.1} {:>9.1} {:>8} {:>7.3}% {:>8.3} {:>7} {:>7}",
                r.strategy,
                r.latency_ms.p50,
                r.latency_ms.p99,
                r.latency_ms.p999,
                ratio.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x")),
                r.success_rate * 100.0,
                r.retries_per_call,
                f.map_or_else(|| "-".to_owned(), |f| opt(f.time_to_stop_s)),
                f.map_or_else(|| "-".to_owned(), |f| opt(f.time_to_resume_s)),
            );
        }
        out
    }
}

// ===== impl Collector =====

impl Collector {
    pub(crate) fn new(scenario: &Scenario, phases: &[(u64, u64, Phase)]) -> Self {
        let bucket_ns = (scenario.bucket_s * 1e9).round().max(1.0) as u64;
        let groups = scenario.groups();
        let region_groups = scenario.groups_of_regions();
        let tracks = phases
            .iter()
            .filter(|(_, _, p)| p.is_failure())
            .map(|(start, end, p)| {
                let target = p.target().unwrap_or_default().to_owned();
                let nodes: Vec<bool> =
                    scenario.regions.iter().zip(&region_groups).map(|(r, g)| r.id == target || *g == target).collect();
                let first = nodes.iter().position(|&b| b).unwrap_or(0);
                let group = groups.iter().position(|g| *g == region_groups[first]).unwrap_or(0);
                Track {
                    kind: p.kind(),
                    target,
                    group,
                    nodes,
                    start: *start,
                    end: *end,
                    sends: Vec::new(),
                    failed_attempts: 0,
                    calls_with_failed_attempt: 0,
                    failed_calls: 0,
                    first_success_after: None,
                    detected: None,
                    first_attempts_after: 0,
                    first_attempts_to_target_after: 0,
                }
            })
            .collect();
        Self { bucket_ns, groups, share: Vec::new(), latencies_us: Vec::new(), succeeded: 0, attempts: 0, tracks }
    }

    pub(crate) fn calls_done(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    pub(crate) fn sent(&mut self, node: usize, group: usize, t: u64, first: bool) {
        self.attempts += 1;
        let bucket = (t / self.bucket_ns) as usize;
        if self.share.len() <= bucket {
            self.share.resize_with(bucket + 1, || vec![0; self.groups.len()]);
        }
        self.share[bucket][group] += 1;
        for tr in &mut self.tracks {
            if tr.nodes[node] && t >= tr.start && t < tr.end {
                tr.sends.push(t);
            }
            if first && tr.detected.is_some_and(|d| t > d) && t < tr.end {
                tr.first_attempts_after += 1;
                tr.first_attempts_to_target_after += u64::from(tr.nodes[node]);
            }
        }
    }

    pub(crate) fn answered(&mut self, node: usize, _group: usize, t: u64, ok: bool) {
        for tr in &mut self.tracks {
            if !tr.nodes[node] {
                continue;
            }
            if !ok && t >= tr.start && t < tr.end {
                tr.failed_attempts += 1;
                tr.detected.get_or_insert(t);
            }
            if ok && t >= tr.end && tr.first_success_after.is_none() {
                tr.first_success_after = Some(t);
            }
        }
    }

    pub(crate) fn finished(&mut self, arrival: u64, t: u64, ok: bool, _attempts: u32, failed_attempt: bool) {
        let us = (t - arrival) / 1_000;
        self.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
        if ok {
            self.succeeded += 1;
        }
        for tr in &mut self.tracks {
            if arrival >= tr.start && arrival < tr.end {
                tr.calls_with_failed_attempt += u64::from(failed_attempt);
                tr.failed_calls += u64::from(!ok);
            }
        }
    }

    pub(crate) fn finish(mut self, scenario: &Scenario, strategy: &str) -> RunReport {
        self.latencies_us.sort_unstable();
        let lat = &self.latencies_us;
        let calls = lat.len() as u64;
        let ms = |us: u32| round3(f64::from(us) / 1e3);
        let rank = |q: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
            ms(lat[i])
        };
        let mean = if lat.is_empty() { 0.0 } else { lat.iter().map(|&x| f64::from(x)).sum::<f64>() / lat.len() as f64 };
        let latency_ms = Percentiles {
            p50: rank(0.5),
            p99: rank(0.99),
            p999: rank(0.999),
            mean: round3(mean / 1e3),
            max: lat.last().map_or(0.0, |&x| ms(x)),
        };
        let mut cdf_ms = Vec::with_capacity(CDF_POINTS + 3);
        if !lat.is_empty() {
            let mut qs: Vec<f64> = (1..=CDF_POINTS).map(|i| i as f64 / CDF_POINTS as f64).collect();
            qs.extend([0.995, 0.999, 0.9995, 0.9999]);
            qs.sort_by(f64::total_cmp);
            for q in qs {
                cdf_ms.push([rank(q), q]);
            }
        }
        let failures = self.tracks.iter().map(|tr| self.failure_report(tr)).collect();
        RunReport {
            strategy: strategy.to_owned(),
            default: strategy == sluice_balancer::StrategyKind::default().name(),
            scenario: scenario.name.clone(),
            calls,
            succeeded: self.succeeded,
            success_rate: if calls == 0 { 1.0 } else { round6(self.succeeded as f64 / calls as f64) },
            attempts: self.attempts,
            retries_per_call: if calls == 0 {
                0.0
            } else {
                round6(self.attempts.saturating_sub(calls) as f64 / calls as f64)
            },
            latency_ms,
            failures,
            share: ShareSeries { bucket_s: scenario.bucket_s, groups: self.groups.clone(), attempts: self.share },
            cdf_ms,
        }
    }

    fn failure_report(&self, tr: &Track) -> FailureReport {
        let secs = |ns: u64| round3(ns as f64 / 1e9);
        let gap = ((STOP_GAP_S * 1e9) as u64).min((tr.end - tr.start) / 5).max(1);
        // The last send before the first quiet spell of `gap` (or to the end of the failure).
        let mut prev = tr.start;
        let mut stopped_at = None;
        for &s in &tr.sends {
            if s - prev >= gap {
                stopped_at = Some(prev);
                break;
            }
            prev = s;
        }
        if stopped_at.is_none() && tr.end.saturating_sub(prev) >= gap {
            stopped_at = Some(prev);
        }
        let attempts_after_stop = stopped_at.map_or(0, |at| tr.sends.iter().filter(|&&s| s > at).count() as u64);
        // Share of the target's group per bucket.
        let share_at = |b: usize| -> Option<f64> {
            let row = self.share.get(b)?;
            let total: u32 = row.iter().sum();
            (total > 0).then(|| f64::from(row[tr.group]) / f64::from(total))
        };
        let b = |ns: u64| (ns / self.bucket_ns) as usize;
        let pre_from = b(tr.start.saturating_sub((PRE_FAILURE_WINDOW_S * 1e9) as u64));
        let pre: Vec<f64> = (pre_from..b(tr.start)).filter_map(share_at).collect();
        let pre_share = if pre.is_empty() { 0.0 } else { pre.iter().sum::<f64>() / pre.len() as f64 };
        let time_to_resume_s = (pre_share > 0.0)
            .then(|| {
                (b(tr.end)..self.share.len())
                    .find(|&i| share_at(i).is_some_and(|s| s >= RESUME_SHARE * pre_share))
                    .map(|i| secs((i as u64 * self.bucket_ns).saturating_sub(tr.end)))
            })
            .flatten();
        FailureReport {
            kind: tr.kind.to_owned(),
            target: tr.target.clone(),
            start_s: secs(tr.start),
            end_s: secs(tr.end),
            time_to_stop_s: stopped_at.map(|at| secs(at - tr.start)),
            attempts_during: tr.sends.len() as u64,
            attempts_after_stop,
            failed_attempts: tr.failed_attempts,
            calls_with_failed_attempt: tr.calls_with_failed_attempt,
            failed_calls: tr.failed_calls,
            time_to_first_success_s: tr.first_success_after.map(|t| secs(t - tr.end)),
            time_to_resume_s,
            detected_s: tr.detected.map(|t| secs(t - tr.start)),
            first_attempt_share_after_detection: (tr.first_attempts_after > 0)
                .then(|| round6(tr.first_attempts_to_target_after as f64 / tr.first_attempts_after as f64)),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
