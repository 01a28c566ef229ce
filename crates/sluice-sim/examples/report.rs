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
use sluice_sim::{Contender, Report, Scenario, ScenarioReport, SimError, plot_cdf, plot_share};

/// Contenders whose traffic share over time gets a plot.
const SHARE_PLOTS: [&str; 2] = ["adaptive", "naive-baseline"];

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

/// The targets of the issue, checked over [`TARGET_SEEDS`] for the scenarios given that have
/// one (`degrade`, `hot-spot`, `outage`, `outage-drain`), as Markdown.
fn targets(scenarios: &[Scenario]) -> Result<String, SimError> {
    let contenders = [
        Contender::Oracle,
        Contender::Strategy(StrategyKind::Adaptive),
        Contender::Strategy(StrategyKind::WeightedRoundRobin),
    ];
    let mut md = format!(
        "### Targets, seeds {}–{}\n\n| scenario | target | measured (min – max over seeds) | met in |\n|---|---|---|---|\n",
        TARGET_SEEDS.start(),
        TARGET_SEEDS.end()
    );
    let range = |v: &[f64], unit: &str| {
        let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
        let digits = if unit.is_empty() { 0 } else { 2 };
        format!("{lo:.digits$}{unit} – {hi:.digits$}{unit}")
    };
    let seeds = TARGET_SEEDS.count();
    for base in
        scenarios.iter().filter(|s| ["degrade", "hot-spot", "outage", "outage-drain"].contains(&s.name.as_str()))
    {
        let mut vs_oracle = Vec::new();
        let mut vs_wrr = Vec::new();
        let mut stop = Vec::new();
        let mut failed_calls = Vec::new();
        let mut saw_failure = Vec::new();
        for seed in TARGET_SEEDS {
            let r = ScenarioReport::run(&base.clone().with_seed(seed), &contenders, &mut |_, _| {})?;
            let p99 = |name: &str| r.run_of(name).map_or(f64::NAN, |x| x.latency_ms.p99);
            vs_oracle.push(p99("adaptive") / p99("oracle"));
            vs_wrr.push(p99("weighted-round-robin") / p99("adaptive"));
            if let Some(f) = r.run_of("adaptive").and_then(|x| x.failures.first()) {
                stop.push(f.time_to_stop_s.unwrap_or(f64::INFINITY));
                failed_calls.push(f.failed_calls as f64);
                saw_failure.push(f.calls_with_failed_attempt as f64);
            }
        }
        let met = |v: &[f64], ok: &dyn Fn(f64) -> bool| format!("{}/{seeds}", v.iter().filter(|&&x| ok(x)).count());
        if base.name.starts_with("outage") {
            md.push_str(&format!(
                "| {} | adaptive stops sending to the failed region within 1 s | {} | {} |\n",
                base.name,
                range(&stop, " s"),
                met(&stop, &|x| x <= 1.0)
            ));
            md.push_str(&format!(
                "| {} | at most one failed user call (retries succeed elsewhere) | {} failed calls; {} calls saw a failed attempt | {} |\n",
                base.name,
                range(&failed_calls, ""),
                range(&saw_failure, ""),
                met(&failed_calls, &|x| x <= 1.0)
            ));
        } else {
            md.push_str(&format!(
                "| {} | adaptive p99 within 1.2× of the oracle's | {} | {} |\n",
                base.name,
                range(&vs_oracle, "×"),
                met(&vs_oracle, &|x| x <= 1.2)
            ));
            md.push_str(&format!(
                "| {} | adaptive p99 at least 5× better than weighted round-robin's | {} | {} |\n",
                base.name,
                range(&vs_wrr, "×"),
                met(&vs_wrr, &|x| x >= 5.0)
            ));
        }
    }
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
            "\n![latency CDF, {0}](img/sim-cdf-{0}.svg)\n\n![traffic share, {0}, adaptive](img/sim-share-{0}-adaptive.svg)\n\n",
            s.scenario
        ));
    }
    md
}
