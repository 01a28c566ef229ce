//! `cargo xtask fuzz [--secs N]`: the parser property tests, run again and again for a set time.
//!
//! Every property test named `fuzz_*` feeds arbitrary bytes or header values to one parser and
//! asserts that it never panics: the SSE parser and event meanings (sluice-client), every
//! Retry-After form (sluice-health), the config loader (sluice-cli), `x-sluice-location`
//! (sluice-gateway), and the typed response decoders (sluice-client).
//! Each round draws fresh random inputs (proptest seeds every run anew) with
//! [`CASES_PER_ROUND`] cases per test; rounds repeat until the time is spent.
//! CI runs one short round with the same command (see the `fuzz` step of `cargo xtask ci`).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::{Result, project_root};

/// Default time budget.
const DEFAULT_SECS: u64 = 60;
/// Cases per property test per round.
pub(crate) const CASES_PER_ROUND: &str = "4096";
/// The test filter: every fuzz property test, and nothing else.
pub(crate) const FILTER: &str = "fuzz_";
/// Arguments to `cargo`: the unit tests of every crate (the same features as the test step, so
/// its build is reused), filtered to the fuzz tests.
pub(crate) const ARGS: &[&str] = &["test", "--workspace", "--all-features", "--lib", "--", FILTER];

pub(crate) fn run(args: &[String]) -> Result {
    let secs = match args {
        [] => DEFAULT_SECS,
        [flag, n] if flag == "--secs" => n.parse().map_err(|_| format!("--secs wants whole seconds, got `{n}`"))?,
        _ => return Err("usage: cargo xtask fuzz [--secs N]".to_owned()),
    };
    let budget = Duration::from_secs(secs);
    let started = Instant::now();
    let mut rounds = 0u32;
    // At least one round; then as many as fit. Bounded by the time budget.
    while rounds == 0 || started.elapsed() < budget {
        rounds += 1;
        println!("xtask fuzz: round {rounds} ({CASES_PER_ROUND} cases per test)");
        let status = Command::new("cargo")
            .args(ARGS)
            .env("PROPTEST_CASES", CASES_PER_ROUND)
            .current_dir(project_root())
            .status()
            .map_err(|e| format!("could not start `cargo`: {e}"))?;
        if !status.success() {
            return Err(format!("round {rounds} failed ({status}); proptest printed the failing input above"));
        }
    }
    println!("xtask fuzz: {rounds} round(s) in {:.1}s, no panic", started.elapsed().as_secs_f64());
    Ok(())
}
