//! Workspace automation for Sluice, run as `cargo xtask <verb>`.
//!
//! Each verb lives in its own module.
//! This crate uses only the standard library so that it builds fast on a clean machine; keep it that way.
//! Tidy checks are not a verb: they are `#[test]`s in `tidy.rs`, so `cargo test` alone runs them.

mod bench;
mod bench_serve;
mod ci;
mod fuzz;
#[cfg(test)]
mod tidy;

use std::{
    env,
    path::{Path, PathBuf},
    process::ExitCode,
};

/// What a verb returns: `Err` carries a message for the user.
type Result<T = (), E = String> = std::result::Result<T, E>;

/// One `cargo xtask` verb.
struct Verb {
    /// The name typed on the command line.
    name: &'static str,
    /// One line for `cargo xtask help`.
    about: &'static str,
    /// Runs the verb with the remaining arguments.
    run: fn(&[String]) -> Result,
}

/// Every verb, in the order `help` lists them. Add new verbs here.
const VERBS: &[Verb] = &[
    Verb { name: "ci", about: "run every check CI runs: fmt, clippy, test (incl. tidy), doc", run: ci::run },
    Verb { name: "bench", about: "run the benches and the simulator, write docs/benchmarks.md", run: bench::run },
    Verb { name: "fuzz", about: "run the parser property tests for a while (--secs N, default 60)", run: fuzz::run },
    Verb { name: "bench-serve", about: "p50/p99 overhead of sluice serve vs the mocks", run: bench_serve::run },
];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((verb, rest)) = args.split_first() else {
        eprint!("{}", usage());
        return ExitCode::FAILURE;
    };
    if matches!(verb.as_str(), "help" | "-h" | "--help") {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let Some(found) = VERBS.iter().find(|v| v.name == verb) else {
        eprintln!("error: unknown verb `{verb}`\n");
        eprint!("{}", usage());
        return ExitCode::FAILURE;
    };
    match (found.run)(rest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: cargo xtask {}: {msg}", found.name);
            ExitCode::FAILURE
        }
    }
}

/// The help text listing every verb.
fn usage() -> String {
    let mut out = String::from("usage: cargo xtask <verb>\n\nverbs:\n");
    for v in VERBS {
        out.push_str(&format!("    {:<13}{}\n", v.name, v.about));
    }
    out.push_str(&format!("    {:<13}{}\n", "help", "print this message"));
    out
}

/// The workspace root: the parent of this crate's manifest directory.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Fails if a verb that takes no arguments got some.
fn no_args(args: &[String]) -> Result {
    match args.first() {
        None => Ok(()),
        Some(extra) => Err(format!("unexpected argument `{extra}`")),
    }
}
