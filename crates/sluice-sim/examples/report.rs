//! Runs every contender over scenarios and writes the table, JSON, a Markdown summary and
//! plots.
//!
//! ```text
//! cargo run --release -p sluice-sim --features plots --example report -- \
//!     [--out DIR] [--seed N] [--scenario NAME|FILE.toml]...
//! ```
//!
//! Without `--scenario`, every built-in scenario runs. With `--out DIR` it writes
//! `DIR/sim-report.json`, `DIR/sim-report.md` and plots under `DIR/img/`; the table always
//! goes to stdout and progress to stderr.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use sluice_balancer::StrategyKind;
use sluice_sim::{Contender, Report, RunReport, Scenario, ScenarioReport, SimError, plot_cdf, plot_share};

/// Contenders whose traffic share over time gets a plot.
const SHARE_PLOTS: [&str; 3] = ["locality", "adaptive", "naive-baseline"];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut out: Option<PathBuf> = None;
    let mut seed: Option<u64> = None;
    let mut scenarios = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--seed" => seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--scenario" => scenarios.push(load(&value()?)?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if scenarios.is_empty() {
        scenarios = Scenario::builtins();
    }
    if let Some(seed) = seed {
        scenarios = scenarios.into_iter().map(|s| s.with_seed(seed)).collect();
    }
    let started = Instant::now();
    let mut last = String::new();
    let report = Report::run(&scenarios, &Contender::all(), &mut |scenario, strategy, p| {
        let done = (10.0 * p.simulated_s / p.duration_s).floor().min(10.0) * 10.0;
        let line = format!("{scenario} / {strategy}: {done:.0}%");
        if line != last {
            eprintln!("{line}");
            last = line;
        }
    })
    .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    print!("{}", report.table());
    let calls: u64 = report.scenarios.iter().flat_map(|s| &s.runs).map(|r| r.calls).sum();
    eprintln!("simulated {calls} calls in {:.2} s of wall time", elapsed.as_secs_f64());
    let targets = targets(&scenarios).map_err(|e| e.to_string())?;
    print!("\n{targets}");
    if let Some(dir) = out {
        write_outputs(&report, &targets, &dir).map_err(|e| e.to_string())?;
        eprintln!("wrote {}", dir.display());
    }
    Ok(())
}

/// A built-in name, or a path to a TOML file.
fn load(name: &str) -> Result<Scenario, String> {
    if let Some(s) = Scenario::builtin(name) {
        return Ok(s);
    }
    let text =
        fs::read_to_string(name).map_err(|e| format!("`{name}` is no built-in scenario, and reading it: {e}"))?;
    Scenario::from_toml(&text).map_err(|e| e.to_string())
}

fn write_outputs(report: &Report, targets: &str, dir: &Path) -> Result<(), SimError> {
    let img = dir.join("img");
    fs::create_dir_all(&img).map_err(|e| io_error(&img, e))?;
    write(&dir.join("sim-report.json"), &report.to_json())?;
    write(&dir.join("sim-report.md"), &format!("{targets}\n{}", markdown(report)))?;
    for s in &report.scenarios {
        for ext in ["svg", "png"] {
            plot_cdf(s, &img.join(format!("sim-cdf-{}.{ext}", s.scenario)))?;
            for name in SHARE_PLOTS {
                if let Some(run) = s.run_of(name) {
                    plot_share(run, &img.join(format!("sim-share-{}-{name}.{ext}", s.scenario)))?;
                }
            }
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), SimError> {
    fs::write(path, text).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, source: std::io::Error) -> SimError {
    SimError::Io { path: path.display().to_string(), source }
}

/// Seeds over which the targets of the issue are checked.
const TARGET_SEEDS: std::ops::RangeInclusive<u64> = 1..=5;

/// One target checked on one seed: the figure as shown, and whether it was met.
type Check = (String, bool);

/// Share of `group` in the attempts of buckets `from..to` of a run.
fn share(run: &RunReport, group: &str, from: usize, to: usize) -> f64 {
    run.share.share(group, from, to).unwrap_or(f64::NAN)
}

/// The targets of a scenario, by name, for the default strategy `d` against the oracle `o`
/// and weighted round-robin `w` of the same seed.
fn checks(scenario: &str, d: &RunReport, o: &RunReport, w: &RunReport) -> Vec<(&'static str, Check)> {
    let x = |v: f64| format!("{v:.2}×");
    let pct = |v: f64| format!("{:.1} %", v * 100.0);
    let ratio = |a: f64, b: f64| a / b;
    let p50 = ratio(d.latency_ms.p50, o.latency_ms.p50);
    let p99 = ratio(d.latency_ms.p99, o.latency_ms.p99);
    let all = usize::MAX;
    let secs = |s: f64| (s / d.share.bucket_s).round() as usize;
    match scenario {
        "steady" => {
            let seoul = share(d, "seoul", 0, all);
            vec![
                ("≥ 95 % of attempts to Seoul", (pct(seoul), seoul >= 0.95)),
                ("p50 ≤ 1.05× oracle", (x(p50), p50 <= 1.05)),
            ]
        }
        "overload" => {
            let (t, s, v) = (share(d, "tokyo", 0, all), share(d, "singapore", 0, all), share(d, "virginia", 0, all));
            vec![
                (
                    "spill order: Tokyo, then Singapore, Virginia least (shares)",
                    (format!("{} / {} / {}", pct(t), pct(s), pct(v)), t > s && s >= v),
                ),
                ("p99 ≤ 1.2× oracle", (x(p99), p99 <= 1.2)),
                ("success ≥ 99.9 %", (pct(d.success_rate), d.success_rate >= 0.999)),
            ]
        }
        "recover" => {
            // Seoul is back at 90 s; buckets of 5 s from there.
            let back = (0..12)
                .map(|i| secs(90.0) + i * secs(5.0))
                .find(|&b| share(d, "seoul", b, b + secs(5.0)) >= 0.9)
                .map(|b| b as f64 * d.share.bucket_s + 5.0 - 90.0);
            let n = d.share.attempts.len();
            let last = share(d, "seoul", n - n / 5, n);
            vec![
                (
                    "Seoul ≥ 90 % (5 s bucket) within 45 s of recovery",
                    (back.map_or_else(|| "never".to_owned(), |s| format!("{s:.0} s")), back.is_some_and(|s| s <= 45.0)),
                ),
                ("Seoul ≥ 90 % over the last fifth", (pct(last), last >= 0.9)),
            ]
        }
        "throttle" => {
            let rel = share(d, "seoul", 0, all) / share(o, "seoul", 0, all);
            vec![
                (
                    "Seoul share ≥ 0.85× the oracle's",
                    (
                        format!("{rel:.3}× ({} vs {})", pct(share(d, "seoul", 0, all)), pct(share(o, "seoul", 0, all))),
                        rel >= 0.85,
                    ),
                ),
                (
                    "≤ 2 % of calls answered 429 (retries per call ≤ 0.02)",
                    (format!("{:.4}", d.retries_per_call), d.retries_per_call <= 0.02),
                ),
                ("p50 ≤ 1.05× oracle", (x(p50), p50 <= 1.05)),
                ("p99 ≤ 1.2× oracle", (x(p99), p99 <= 1.2)),
            ]
        }
        "fast-fail" => {
            let after = d.failures.first().and_then(|f| f.first_attempt_share_after_detection);
            vec![
                (
                    "≤ 1 % of first attempts to Tokyo after detection",
                    (after.map_or_else(|| "not detected".to_owned(), pct), after.is_some_and(|a| a <= 0.01)),
                ),
                ("retries per call ≤ 0.05", (format!("{:.4}", d.retries_per_call), d.retries_per_call <= 0.05)),
                ("success ≥ 99.9 %", (pct(d.success_rate), d.success_rate >= 0.999)),
            ]
        }
        "degrade" | "hot-spot" => {
            let vs_wrr = ratio(w.latency_ms.p99, d.latency_ms.p99);
            vec![
                ("p99 ≤ 1.2× oracle", (x(p99), p99 <= 1.2)),
                ("p99 ≥ 5× better than weighted round-robin's", (x(vs_wrr), vs_wrr >= 5.0)),
            ]
        }
        "outage" | "outage-drain" => match d.failures.first() {
            Some(f) => vec![
                (
                    "stops sending to the failed region within 1 s",
                    (
                        f.time_to_stop_s.map_or_else(|| "never".to_owned(), |s| format!("{s:.2} s")),
                        f.time_to_stop_s.is_some_and(|s| s <= 1.0),
                    ),
                ),
                (
                    "at most one failed user call (retries succeed elsewhere)",
                    (format!("{} failed", f.failed_calls), f.failed_calls <= 1),
                ),
            ],
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The targets of the issues, checked over [`TARGET_SEEDS`] for the default strategy in the
/// scenarios given that have one, as Markdown: every seed's figure, and how many met it.
fn targets(scenarios: &[Scenario]) -> Result<String, SimError> {
    let default = StrategyKind::default();
    let contenders =
        [Contender::Oracle, Contender::Strategy(default), Contender::Strategy(StrategyKind::WeightedRoundRobin)];
    let seeds: Vec<u64> = TARGET_SEEDS.collect();
    let mut md = format!(
        "### Targets, seeds {}–{}\n\nThe default strategy (`{}`) in each scenario with a target; every seed's figure, then how many seeds met it. Ratios are to the oracle's run of the same seed (the oracle is a greedy heuristic with full knowledge, not a bound: see the `sluice-sim` README).\n\n| scenario | target |{} met in |\n|---|---|{}---|\n",
        TARGET_SEEDS.start(),
        TARGET_SEEDS.end(),
        default.name(),
        seeds.iter().map(|s| format!(" seed {s} |")).collect::<String>(),
        "---|".repeat(seeds.len()),
    );
    for base in scenarios {
        let mut rows: Vec<(&'static str, Vec<Check>)> = Vec::new();
        for &seed in &seeds {
            let r = ScenarioReport::run(&base.clone().with_seed(seed), &contenders, &mut |_, _| {})?;
            let (Some(d), Some(o), Some(w)) =
                (r.run_of(default.name()), r.run_of("oracle"), r.run_of("weighted-round-robin"))
            else {
                continue;
            };
            for (i, (label, check)) in checks(&base.name, d, o, w).into_iter().enumerate() {
                if rows.len() <= i {
                    rows.push((label, Vec::new()));
                }
                rows[i].1.push(check);
            }
        }
        for (label, per_seed) in rows {
            let met = per_seed.iter().filter(|c| c.1).count();
            let cells: String =
                per_seed.iter().map(|(v, ok)| if *ok { format!(" {v} |") } else { format!(" **{v}** |") }).collect();
            md.push_str(&format!("| {} | {label} |{cells} {met}/{} |\n", base.name, per_seed.len()));
        }
    }
    md.push_str("\nA figure in bold misses its target.\n");
    Ok(md)
}

/// One Markdown table per scenario, every latency also as a ratio of the oracle's.
fn markdown(report: &Report) -> String {
    let mut md = String::new();
    for s in &report.scenarios {
        md.push_str(&format!("### {}\n\n{} (seed {}).\n\n", s.scenario, s.description, s.seed));
        md.push_str("| strategy | p50 ms | p99 ms | p99.9 ms | success | retries/call | stop s | back s |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        let oracle = s.run_of("oracle").map(|r| r.latency_ms);
        for r in &s.runs {
            let l = r.latency_ms;
            let cell = |v: f64, o: Option<f64>| match o.filter(|&o| o > 0.0) {
                Some(o) => format!("{v:.0} ({:.2}×)", v / o),
                None => format!("{v:.0}"),
            };
            let f = r.failures.first();
            let opt = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"));
            md.push_str(&format!(
                "| {} | {} | {} | {} | {:.3}% | {:.3} | {} | {} |\n",
                r.strategy,
                cell(l.p50, oracle.map(|o| o.p50)),
                cell(l.p99, oracle.map(|o| o.p99)),
                cell(l.p999, oracle.map(|o| o.p999)),
                r.success_rate * 100.0,
                r.retries_per_call,
                f.map_or_else(|| "–".to_owned(), |f| opt(f.time_to_stop_s)),
                f.map_or_else(|| "–".to_owned(), |f| opt(f.time_to_resume_s)),
            ));
        }
        md.push('\n');
        for r in &s.runs {
            for f in &r.failures {
                md.push_str(&format!(
                    "- {}: {} `{}` {:.0}–{:.0} s: {} attempts sent there ({} after the first stop), {} failed; {} user calls saw a failed attempt, {} failed; first success {} s after recovery.\n",
                    r.strategy,
                    f.kind,
                    f.target,
                    f.start_s,
                    f.end_s,
                    f.attempts_during,
                    f.attempts_after_stop,
                    f.failed_attempts,
                    f.calls_with_failed_attempt,
                    f.failed_calls,
                    f.time_to_first_success_s.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}")),
                ));
            }
        }
        md.push_str(&format!(
            "\n![latency CDF, {0}](img/sim-cdf-{0}.svg)\n\n![traffic share, {0}, locality (the default)](img/sim-share-{0}-locality.svg)\n\n",
            s.scenario
        ));
    }
    md
}
