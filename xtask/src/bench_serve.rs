//! `cargo xtask bench-serve`: the latency `sluice serve` adds, at 1,000 and 5,000 calls per
//! second, against calling the same loopback mock directly in the same run.
//!
//! Builds `sluice` in release mode and runs its hidden `bench-serve` subcommand, which holds
//! the load generator (this crate stays std-only). Extra arguments are passed on, for example
//! `cargo xtask bench-serve --rates 1000,5000 --seconds 5`.

use std::{env, path::PathBuf, process::Command};

use crate::{Result, project_root};

/// Builds the release binary and runs the benchmark.
pub(crate) fn run(args: &[String]) -> Result {
    let root = project_root();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "--package", "sluice-cli", "--bin", "sluice"])
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!("release build failed ({status})"));
    }
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = target.join("release").join(if cfg!(windows) { "sluice.exe" } else { "sluice" });
    let status = Command::new(&binary)
        .arg("bench-serve")
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if status.success() { Ok(()) } else { Err(format!("bench-serve failed ({status})")) }
}
