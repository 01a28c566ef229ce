//! `sluice simulate`: runs `sluice-sim` (the real strategies and passive health logic in
//! virtual time) over scenarios and prints the comparison.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_balancer::StrategyKind;
use sluice_sim::{Contender, Report, Scenario};

use crate::CliError;

/// Options of `sluice simulate`.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// A built-in scenario (see `--list`) or a scenario TOML file; repeat for several.
    /// Default: every built-in scenario.
    #[arg(long, value_name = "NAME|FILE")]
    scenario: Vec<String>,
    /// Only these strategies (plus the oracle and the naive baseline); repeat for several.
    #[arg(long, value_name = "NAME")]
    strategy: Vec<String>,
    /// Seed of every random choice; the same seed gives the same report.
    #[arg(long)]
    seed: Option<u64>,
    /// Multiplies every simulated time (0.1 runs a tenth of each scenario).
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    time_scale: f64,
    /// Also writes the full report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Lists the built-in scenarios and exits.
    #[arg(long)]
    list: bool,
}

/// Runs the simulator. Exit code 2 for an unknown scenario or strategy.
pub(crate) async fn run(args: SimulateArgs) -> Result<ExitCode, CliError> {
    if args.list {
        for name in Scenario::BUILTIN {
            let s = Scenario::builtin(name).map(|s| s.description).unwrap_or_default();
            println!("{name:<12} {s}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !(args.time_scale.is_finite() && args.time_scale > 0.0 && args.time_scale <= 10.0) {
        return Err(CliError::Usage("--time-scale must be in (0, 10]".to_owned()));
    }
    let mut scenarios = Vec::new();
    for name in &args.scenario {
        scenarios.push(load(name)?);
    }
    if scenarios.is_empty() {
        scenarios = Scenario::builtins();
    }
    scenarios = scenarios
        .into_iter()
        .map(|s| {
            let s = if (args.time_scale - 1.0).abs() > f64::EPSILON { s.time_scaled(args.time_scale) } else { s };
            match args.seed {
                Some(seed) => s.with_seed(seed),
                None => s,
            }
        })
        .collect();
    let contenders = if args.strategy.is_empty() {
        Contender::all()
    } else {
        let mut c = vec![Contender::Oracle, Contender::NaiveBaseline];
        for name in &args.strategy {
            let kind: StrategyKind = name.parse().map_err(|e| CliError::Usage(format!("--strategy: {e}")))?;
            c.push(Contender::Strategy(kind));
        }
        c
    };
    // Progress on stderr, drawn only when stderr is a terminal: indicatif hides the bar
    // otherwise, so pipes and log files get no carriage returns.
    let runs = (scenarios.len() * contenders.len()) as u64;
    let bar = ProgressBar::with_draw_target(Some(runs * 100), ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template("{msg:32} [{bar:30}] {percent:>3}%").expect("a valid progress template"),
    );
    let progress = bar.clone();
    let report = tokio::task::spawn_blocking(move || {
        let (mut last, mut run) = (String::new(), 0u64);
        Report::run(&scenarios, &contenders, &mut |scenario, strategy, p| {
            let name = format!("{scenario} / {strategy}");
            if name != last {
                run += 1;
                progress.set_message(name.clone());
                last = name;
            }
            let done = (100.0 * p.simulated_s / p.duration_s).clamp(0.0, 100.0) as u64;
            progress.set_position((run - 1) * 100 + done);
        })
    })
    .await
    .map_err(|e| CliError::Failed(format!("the simulation stopped: {e}")))?
    .map_err(|e| CliError::Usage(format!("invalid scenario: {e}")))?;
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", report.table());
    let _ = out.flush();
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json())
            .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// A built-in name, or a path to a TOML file.
fn load(name: &str) -> Result<Scenario, CliError> {
    if let Some(s) = Scenario::builtin(name) {
        return Ok(s);
    }
    let path = std::path::Path::new(name);
    if !path.exists() {
        return Err(CliError::Usage(format!(
            "unknown scenario `{name}`: not a built-in ({}) and no such file",
            Scenario::BUILTIN.join(", ")
        )));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    Scenario::from_toml(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}
