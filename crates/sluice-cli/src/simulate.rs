//! `sluice simulate`: the deterministic simulator of `sluice-sim`.

use std::process::ExitCode;

use clap::Args;

use crate::CliError;

/// Options of `sluice simulate`.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Arguments for the simulator.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

/// Not in this build yet.
pub(crate) async fn run(_args: SimulateArgs) -> Result<ExitCode, CliError> {
    Err(CliError::Unavailable(
        "simulate is not available in this build: the simulator crate (sluice-sim) is not wired into the CLI"
            .to_owned(),
    ))
}
