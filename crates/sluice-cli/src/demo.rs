//! `sluice demo`.

use std::{process::ExitCode, time::Duration};

use crate::CliError;

/// Runs the demo.
pub(crate) async fn run(_duration: Duration, _seed: u64) -> Result<ExitCode, CliError> {
    Err(CliError::Unavailable("not yet".to_owned()))
}
