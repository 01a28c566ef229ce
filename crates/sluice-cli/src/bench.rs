//! `sluice bench-serve` (hidden): the proxy's overhead against calling the mocks directly.

use std::process::ExitCode;

use clap::Args;

use crate::CliError;

/// Options of `sluice bench-serve`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {}

/// Runs the benchmark.
pub(crate) async fn run(_args: BenchArgs) -> Result<ExitCode, CliError> {
    Err(CliError::Unavailable("not yet".to_owned()))
}
