#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]

mod bench;
mod bench_floor;
mod chat;
pub mod config;
mod demo;
mod error;
pub mod mock;
mod ops;
#[cfg(feature = "otel")]
mod otel;
mod probe;
mod serve_cmd;
pub mod server_config;
mod simulate;
mod table;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

#[doc(inline)]
pub use self::{config::Config, error::CliError};
pub use sluice_balancer::StrategyKind;

/// Default address of `sluice serve`: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Routes OpenAI-compatible API calls across regions: a demo, a health probe, a one-shot chat
/// and an OpenAI-compatible proxy.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Five mock regions on loopback, traffic from a caller in Seoul, scripted faults: watch
    /// the router fail over, cool down and ramp back. No key, no network, no config.
    Demo(DemoArgs),
    /// Runs one health round against every region (or keeps watching) and prints a table.
    /// Exits non-zero when no region is healthy.
    Probe(ProbeArgs),
    /// Sends one chat completion through the router and prints the answer, the region that
    /// served it, the attempts and the latency.
    Chat(ChatArgs),
    /// Runs an OpenAI-compatible proxy (`/v1/chat/completions`, `/v1/models`) that routes
    /// through sluice, with `/metrics` and `/healthz`.
    Serve(ServeArgs),
    /// Prints the regions of a running `serve` as a table (through its admin API).
    Status(ops::StatusArgs),
    /// Checks a configuration file. Exit code 2 with the line, column and region on error.
    CheckConfig(CheckConfigArgs),
    /// Runs the deterministic simulator over built-in scenarios and compares the strategies.
    Simulate(simulate::SimulateArgs),
    /// Measures the proxy's latency overhead against calling loopback mocks directly.
    #[command(hide = true)]
    BenchServe(bench::BenchArgs),
    /// The bare forwarder that `bench-serve` measures as the floor of any proxy's cost.
    #[command(hide = true)]
    BenchFloor(bench_floor::FloorArgs),
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// How long the scripted run lasts, in seconds (5 to 55).
    #[arg(long, value_name = "SECS", default_value_t = 24.0)]
    duration: f64,
    /// A short run (8 s) for tests and impatient people.
    #[arg(long, conflicts_with = "duration")]
    quick: bool,
    /// Seeds the router's randomness.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Keeps probing and redraws the table every interval, until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// With `--watch`, stop after this many rounds.
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u32>,
}

#[derive(Debug, Args)]
struct ChatArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Prefer this region (by id) while it is eligible.
    #[arg(long, value_name = "ID")]
    region: Option<String>,
    /// The caller's latitude, for geo-aware strategies.
    #[arg(long, value_name = "DEG", requires = "lon", allow_negative_numbers = true)]
    lat: Option<f64>,
    /// The caller's longitude.
    #[arg(long, value_name = "DEG", requires = "lat", allow_negative_numbers = true)]
    lon: Option<f64>,
    /// Waits for the whole answer instead of streaming it.
    #[arg(long)]
    no_stream: bool,
    /// The model to ask for.
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,
    /// The prompt.
    #[arg(required = true, num_args = 1.., value_name = "PROMPT")]
    prompt: Vec<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Address to listen on. Port 0 picks a free port (printed at start).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Require `Authorization: Bearer <key>` on `/v1/*`, the key read from this environment
    /// variable.
    #[arg(long, value_name = "NAME")]
    require_key_env: Option<String>,
    /// Longest wait for in-flight calls and streams on shutdown, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    drain_timeout: f64,
    /// Worker threads. 1 (the default) is a single event loop, which has the lowest latency
    /// up to many thousands of calls per second; 0 means one per core, for more throughput.
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Log format on stderr; the filter comes from `RUST_LOG` (default `info`).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
    log_format: ops::LogFormat,
    /// Turns the access log (one line per call) off.
    #[arg(long)]
    no_access_log: bool,
    /// Serves the admin API under `/admin/`, guarded by `Authorization: Bearer <key>`, the key
    /// read from this environment variable. Off without it.
    #[arg(long, value_name = "NAME")]
    admin_key_env: Option<String>,
}

#[derive(Debug, Args)]
struct CheckConfigArgs {
    /// The configuration file (TOML).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// Parses the command line, runs the command and returns the process exit code.
///
/// Errors are printed to stderr as one line starting with `error:`.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig(args) => check_config(&args),
        other => match runtime(&other) {
            Ok(rt) => rt.block_on(run(other)),
            Err(e) => Err(CliError::Failed(format!("cannot start the async runtime: {e}"))),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error::chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

/// The async runtime: one per core, or what `serve --threads N` and `bench-serve` ask for
/// (1 is a current-thread runtime).
fn runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match command {
        Command::Serve(args) => args.threads,
        Command::BenchServe(args) => args.threads(),
        Command::BenchFloor(args) => args.threads,
        _ => 0,
    };
    let mut builder = match threads {
        0 => tokio::runtime::Builder::new_multi_thread(),
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.min(1024));
            b
        }
    };
    builder.enable_all().build()
}

async fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Demo(args) => {
            let duration = if args.quick { 8.0 } else { args.duration };
            if !(5.0..=55.0).contains(&duration) {
                return Err(CliError::Usage(format!("--duration must be between 5 and 55 seconds, got {duration}")));
            }
            demo::run(Duration::from_secs_f64(duration), args.seed).await
        }
        Command::Probe(args) => {
            let config = Config::load(&args.config.config)?;
            probe::run(&config, args.watch, args.count).await
        }
        Command::Chat(args) => {
            let config = Config::load(&args.config.config)?;
            let caller = match (args.lat, args.lon) {
                (Some(lat), Some(lon)) => {
                    let p = sluice_client::GeoPoint::new(lat, lon);
                    if !p.is_valid() {
                        return Err(CliError::Usage(format!(
                            "--lat {lat} --lon {lon} is not a valid location (lat within -90..=90, lon within -180..=180)"
                        )));
                    }
                    Some(p)
                }
                _ => None,
            };
            let options = chat::ChatOptions {
                region: args.region,
                caller,
                stream: !args.no_stream,
                model: args.model,
                prompt: args.prompt.join(" "),
            };
            chat::run(&config, options).await
        }
        Command::Serve(args) => {
            let config = Config::load(&args.config.config)?;
            if !(args.drain_timeout.is_finite() && args.drain_timeout >= 0.0) {
                return Err(CliError::Usage("--drain-timeout must be a number of seconds >= 0".to_owned()));
            }
            let command = serve_cmd::ServeCommand {
                config_path: args.config.config,
                listen: args.listen,
                require_key_env: args.require_key_env,
                drain_timeout: Duration::from_secs_f64(args.drain_timeout.min(3600.0)),
                log_format: args.log_format,
                access_log: !args.no_access_log,
                admin_key_env: args.admin_key_env,
            };
            serve_cmd::run(&config, command).await
        }
        Command::Simulate(args) => simulate::run(args).await,
        Command::BenchServe(args) => bench::run(args).await,
        Command::BenchFloor(args) => bench_floor::run(args).await,
        Command::CheckConfig(args) => check_config(&args),
        Command::Status(args) => ops::status(args).await,
    }
}

fn check_config(args: &CheckConfigArgs) -> Result<ExitCode, CliError> {
    let config = Config::load(&args.file)?;
    print!("{}", config.summary());
    Ok(ExitCode::SUCCESS)
}

/// Installs a stderr log subscriber: `RUST_LOG`, else `level`; a second call is ignored.
fn init_logs(level: tracing::Level) {
    let filter = ops::filter(&level.to_string().to_lowercase(), true);
    let _ =
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).with_target(false).try_init();
}
