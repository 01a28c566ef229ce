//! `cargo xtask bench`: a placeholder until the benchmark issue lands.

use crate::Result;

/// Fails with "not yet implemented", so that no script mistakes the placeholder for a pass.
pub(crate) fn run(_args: &[String]) -> Result {
    Err("not yet implemented".to_owned())
}
