//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.
//!
//! Clippy, test and doc use the same `--all-features` set, so dependencies are compiled once for
//! the check artifacts (clippy and doc share them) and once for the test build.
//! Nothing here builds in release mode.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::{Result, no_args, project_root};

/// Flags for the doc step: any rustdoc warning, and broken intra-doc links in particular, fails.
const RUSTDOCFLAGS: &str = "-D warnings -D rustdoc::broken_intra_doc_links";

/// One step of the CI run.
struct Step {
    /// Short name used in progress and error messages.
    name: &'static str,
    /// Arguments to `cargo`.
    args: &'static [&'static str],
    /// Extra environment variables.
    env: &'static [(&'static str, &'static str)],
}

/// The required steps, in order. Cheap checks come first so that they fail fast.
const STEPS: &[Step] = &[
    Step { name: "fmt", args: &["fmt", "--all", "--", "--check"], env: &[] },
    Step {
        name: "clippy",
        args: &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"],
        env: &[],
    },
    Step { name: "test", args: &["test", "--workspace", "--all-features"], env: &[] },
    // A short fuzz pass: the parser property tests with more cases than the test step's 256,
    // reusing its build. `cargo xtask fuzz` runs the same for longer.
    Step { name: "fuzz", args: crate::fuzz::ARGS, env: &[("PROPTEST_CASES", "2048")] },
    // Examples that must run to completion, not just compile. They are `test = true` and
    // `harness = false`, so the test step already builds them once in the test profile and runs
    // their `main`; this step names them, and reruns them from that build without compiling.
    Step {
        name: "examples",
        args: &[
            "test",
            "--workspace",
            "--all-features",
            "--example",
            "hyper_util",
            "--example",
            "tonic_health",
            "--example",
            "reqwest_service_fn",
        ],
        env: &[],
    },
    Step {
        name: "doc",
        args: &["doc", "--workspace", "--no-deps", "--all-features"],
        env: &[("RUSTDOCFLAGS", RUSTDOCFLAGS)],
    },
];

/// Extra step run only when `cargo-hack` is installed: every feature on its own must build.
const HACK: Step =
    Step { name: "hack", args: &["hack", "check", "--workspace", "--each-feature", "--no-dev-deps"], env: &[] };

/// Runs [`STEPS`], then [`HACK`] if available.
pub(crate) fn run(args: &[String]) -> Result {
    no_args(args)?;
    let started = Instant::now();
    let mut steps: Vec<&Step> = STEPS.iter().collect();
    if cargo_hack_installed() {
        steps.push(&HACK);
    } else {
        println!("xtask ci: cargo-hack not installed, skipping the per-feature check");
    }
    let total = steps.len();
    for (i, step) in steps.into_iter().enumerate() {
        println!("\n==> [{}/{total}] {}: {}", i + 1, step.name, render(step));
        let took = run_step(step)?;
        println!("==> {} passed in {}", step.name, secs(took));
    }
    println!("\nxtask ci: all {total} steps passed in {}", secs(started.elapsed()));
    Ok(())
}

/// Runs one step in the workspace root and returns how long it took.
fn run_step(step: &Step) -> Result<Duration> {
    let started = Instant::now();
    let status = Command::new("cargo")
        .args(step.args)
        .envs(step.env.iter().copied())
        .current_dir(project_root())
        .status()
        .map_err(|e| format!("step `{}` could not start `cargo`: {e}", step.name))?;
    if status.success() {
        Ok(started.elapsed())
    } else {
        Err(format!("step `{}` failed ({status}); rerun it with: {}", step.name, render(step)))
    }
}

/// Whether `cargo hack` is available.
fn cargo_hack_installed() -> bool {
    Command::new("cargo")
        .args(["hack", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The step as a shell command line, for humans.
fn render(step: &Step) -> String {
    let env = step.env.iter().map(|(k, v)| format!("{k}=\"{v}\" "));
    let mut line: String = env.collect();
    line.push_str("cargo");
    for arg in step.args {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

/// A duration as seconds with one decimal.
fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_in_the_documented_order() {
        let names: Vec<&str> = STEPS.iter().map(|s| s.name).collect();
        assert_eq!(names, ["fmt", "clippy", "test", "fuzz", "examples", "doc"]);
    }

    #[test]
    fn clippy_test_and_doc_share_one_feature_set() {
        // Same features means dependencies are built once per profile.
        for step in &STEPS[1..] {
            assert!(step.args.contains(&"--all-features"), "{} lacks --all-features", step.name);
            assert!(step.args.contains(&"--workspace"), "{} lacks --workspace", step.name);
            assert!(!step.args.contains(&"--release"), "{} builds in release mode", step.name);
        }
    }

    #[test]
    fn every_tower_example_runs_in_ci_and_opts_out_of_the_harness() {
        let step = STEPS.iter().find(|s| s.name == "examples").unwrap();
        let listed: Vec<&str> = step.args.windows(2).filter(|w| w[0] == "--example").map(|w| w[1]).collect();
        let crate_dir = project_root().join("crates/sluice-tower");
        let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
        // `[[example]]` sections with `test = true` and `harness = false`: the test step builds
        // them in the test profile and runs their `main`, so this step compiles nothing.
        let unharnessed: Vec<String> = manifest
            .split("[[example]]")
            .skip(1)
            .filter_map(|section| {
                let section = section.split("\n[").next().unwrap_or_default();
                let name = section.lines().find_map(|l| l.trim().strip_prefix("name = "))?;
                (section.contains("harness = false") && section.contains("test = true"))
                    .then(|| name.trim_matches('"').to_owned())
            })
            .collect();
        let mut examples: Vec<String> = std::fs::read_dir(crate_dir.join("examples"))
            .unwrap()
            .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        examples.sort();
        let mut listed_sorted: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
        listed_sorted.sort();
        assert_eq!(listed_sorted, examples, "every sluice-tower example, and only those, runs in CI");
        for example in &examples {
            assert!(
                unharnessed.contains(example),
                "example `{example}` needs `harness = false` to run under cargo test"
            );
        }
    }

    #[test]
    fn render_shows_env_and_args() {
        assert_eq!(render(&STEPS[0]), "cargo fmt --all -- --check");
        assert_eq!(
            render(STEPS.iter().find(|s| s.name == "doc").unwrap()),
            "RUSTDOCFLAGS=\"-D warnings -D rustdoc::broken_intra_doc_links\" cargo doc --workspace --no-deps --all-features"
        );
    }
}
