//! `cargo xtask bench`: runs every criterion suite and the simulator, then writes
//! `docs/benchmarks.md`.
//!
//! ```text
//! cargo xtask bench [--skip-criterion] [--skip-sim] [--only PACKAGE]...
//! ```
//!
//! 1. Finds the packages with `[[bench]]` targets (the balancer picks, health recording, client
//!    overhead, the simulator, ...) and runs `cargo bench -p PACKAGE` for each, one after
//!    another. A suite that fails to build or run is reported as such; the others still run.
//! 2. Reads criterion's `target/criterion/**/new/{benchmark,estimates}.json` files written
//!    during this run (older ones are ignored) and states each mean with its in-run baseline:
//!    the `naive-baseline` of the same size or group for the balancer, `direct/…` for client
//!    overhead, the `baseline…` function of the same group for health, and the `oracle` for
//!    the simulator.
//! 3. Runs the simulator's `report` example, which prints the per-scenario tables (every
//!    latency also as a ratio of the oracle's) and draws the plots, and copies the plots to
//!    `docs/img/`.
//! 4. Writes `docs/benchmarks.md` with the machine, the date and every table. With `--only`
//!    or `--skip-criterion`, the sections of suites not rerun are kept from the previous file,
//!    each marked with the date and commit of the run that measured it.
//!
//! Numbers come only from this run on this machine.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use crate::{Result, project_root};

/// Function names that serve as the in-run baseline of their group, in order of preference.
/// `tower-p2c-pending-requests` is tower's own balancer, which `sluice-tower` is measured against.
const BASELINES: &[&str] = &["naive-baseline", "oracle", "tower-p2c-pending-requests"];

/// Where the simulator writes its outputs, below the target directory.
const SIM_OUT: &str = "sim-report";

/// One measured benchmark.
#[derive(Debug, Clone, PartialEq)]
struct Estimate {
    /// `group/function/value`, as criterion names it.
    full_id: String,
    group: String,
    function: String,
    value: Option<String>,
    /// Mean time per iteration in nanoseconds.
    mean_ns: f64,
    /// Bounds of the 95 % confidence interval of the mean.
    low_ns: f64,
    high_ns: f64,
}

/// What running one suite gave.
struct Suite {
    package: String,
    outcome: std::result::Result<Vec<Estimate>, String>,
    took: Duration,
}

struct Options {
    criterion: bool,
    sim: bool,
    only: Vec<String>,
}

/// Runs the verb.
pub(crate) fn run(args: &[String]) -> Result {
    let opts = parse_args(args)?;
    let root = project_root();
    let target = target_dir(&root);
    let started = Instant::now();
    let mut suites = Vec::new();
    if opts.criterion {
        let packages: Vec<String> =
            bench_packages(&root).into_iter().filter(|p| opts.only.is_empty() || opts.only.contains(p)).collect();
        for package in packages {
            println!("\n==> cargo bench -p {package}");
            suites.push(run_suite(&root, &target, &package));
        }
    }
    let sim = if opts.sim {
        println!("\n==> simulator report");
        Some(run_sim(&root, &target))
    } else {
        None
    };
    let path = root.join("docs/benchmarks.md");
    let mut doc = render(&machine(&root), &suites, sim.as_ref());
    if !opts.only.is_empty() || !opts.criterion {
        // Suites not rerun keep their section of the previous report, marked as such.
        let previous = fs::read_to_string(&path).unwrap_or_default();
        let kept = kept_sections(&previous, &suites, &bench_packages(&root));
        if !kept.is_empty() {
            doc = doc.replacen("## Strategy simulator\n", &format!("{kept}## Strategy simulator\n"), 1);
        }
    }
    fs::write(&path, doc).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("\nxtask bench: wrote {} in {:.0} s", path.display(), started.elapsed().as_secs_f64());
    let failed: Vec<&str> = suites.iter().filter(|s| s.outcome.is_err()).map(|s| s.package.as_str()).collect();
    match (failed.is_empty(), &sim) {
        (true, None | Some(Ok(_))) => Ok(()),
        _ => Err(format!(
            "some runs failed (suites: {failed:?}{}); docs/benchmarks.md says which",
            if matches!(sim, Some(Err(_))) { ", simulator" } else { "" }
        )),
    }
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut opts = Options { criterion: true, sim: true, only: Vec::new() };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--skip-criterion" => opts.criterion = false,
            "--skip-sim" => opts.sim = false,
            "--only" => opts.only.push(it.next().ok_or("--only needs a package name")?.clone()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(opts)
}

/// `CARGO_TARGET_DIR`, or `target/` in the workspace root.
fn target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { root.join(dir) }
        }
        _ => root.join("target"),
    }
}

/// Packages of the workspace with a `[[bench]]` target, sorted by name.
fn bench_packages(root: &Path) -> Vec<String> {
    let mut manifests: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = fs::read_dir(root.join("crates")) {
        manifests.extend(entries.flatten().map(|e| e.path().join("Cargo.toml")));
    }
    manifests.push(root.join("benches/Cargo.toml"));
    let mut out: Vec<String> = manifests
        .iter()
        .filter_map(|m| fs::read_to_string(m).ok())
        .filter(|text| text.lines().any(|l| l.trim() == "[[bench]]"))
        .filter_map(|text| package_name(&text))
        .collect();
    out.sort();
    out
}

/// The `name` of the `[package]` section.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(rest) = line.strip_prefix("name") {
            let value = rest.trim_start().strip_prefix('=')?.trim().trim_matches('"');
            return Some(value.to_owned());
        }
    }
    None
}

fn run_suite(root: &Path, target: &Path, package: &str) -> Suite {
    let started = Instant::now();
    let since = SystemTime::now();
    let status = Command::new(cargo()).args(["bench", "-p", package]).current_dir(root).status();
    let took = started.elapsed();
    let outcome = match status {
        Err(e) => Err(format!("could not start cargo: {e}")),
        Ok(s) if !s.success() => Err(format!("`cargo bench -p {package}` failed ({s})")),
        Ok(_) => Ok(read_estimates(&target.join("criterion"), since)),
    };
    Suite { package: package.to_owned(), outcome, took }
}

fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Every `new/estimates.json` under `dir` written at or after `since`.
fn read_estimates(dir: &Path, since: SystemTime) -> Vec<Estimate> {
    let mut found = Vec::new();
    collect_new_dirs(dir, &mut found);
    let mut out: Vec<Estimate> = found
        .into_iter()
        .filter(|d| fs::metadata(d.join("estimates.json")).and_then(|m| m.modified()).is_ok_and(|t| t >= since))
        .filter_map(|d| {
            let bench = fs::read_to_string(d.join("benchmark.json")).ok()?;
            let est = fs::read_to_string(d.join("estimates.json")).ok()?;
            parse_estimate(&bench, &est)
        })
        .collect();
    out.sort_by(|a, b| a.full_id.cmp(&b.full_id));
    out
}

fn collect_new_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if path.join("estimates.json").is_file() {
                out.push(path);
            }
        } else if path.file_name().is_none_or(|n| n != "report") {
            collect_new_dirs(&path, out);
        }
    }
}

/// Reads criterion's `benchmark.json` and `estimates.json` with plain string search (xtask is
/// std-only): the ids, and the mean with its confidence interval.
fn parse_estimate(benchmark: &str, estimates: &str) -> Option<Estimate> {
    let full_id = json_string(benchmark, "full_id")?;
    let group = json_string(benchmark, "group_id")?;
    let function = json_string(benchmark, "function_id").unwrap_or_default();
    let value = json_string(benchmark, "value_str");
    let mean = &estimates[estimates.find("\"mean\"")?..];
    Some(Estimate {
        full_id,
        group,
        function,
        value,
        mean_ns: json_number(mean, "point_estimate")?,
        low_ns: json_number(mean, "lower_bound")?,
        high_ns: json_number(mean, "upper_bound")?,
    })
}

/// The string value of the first `"key":"…"` in `json`; `None` for a missing key or `null`.
fn json_string(json: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":");
    let rest = json[json.find(&pat)? + pat.len()..].trim_start();
    let rest = rest.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// The number value of the first `"key":…` in `json`.
fn json_number(json: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let rest = json[json.find(&pat)? + pat.len()..].trim_start();
    let end =
        rest.find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The plain-scan baseline of `e` among `all`: `plain-vec-scan/GROUP/VALUE`, the same choice
/// done by a plain scan of a `Vec` (a second, non-strawman baseline beside the naive one).
fn plain_baseline_of<'a>(e: &Estimate, all: &'a [Estimate]) -> Option<&'a Estimate> {
    let id = format!("plain-vec-scan/{}/{}", e.group, e.value.as_deref()?);
    all.iter().find(|o| o.full_id == id && o.full_id != e.full_id)
}

/// The in-run baseline of `e` among `all`, if there is one.
///
/// In order: the same function and value under a baseline group (`naive-baseline/nodes/5` for
/// `adaptive/nodes/5`); a baseline function with the same group and value
/// (`contended-2-threads/naive-baseline/5`, `simulate-1M-calls/oracle/5-regions`);
/// `direct/…` for `sluice/…`; a function of the same group whose name starts with `baseline`.
fn baseline_of<'a>(e: &Estimate, all: &'a [Estimate]) -> Option<&'a Estimate> {
    let find = |id: &str| all.iter().find(|o| o.full_id == id && o.full_id != e.full_id);
    let join = |parts: &[&str]| parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join("/");
    let value = e.value.as_deref().unwrap_or("");
    for b in BASELINES {
        if let Some(found) = find(&join(&[b, &e.function, value])) {
            return Some(found);
        }
        if let Some(found) = find(&join(&[&e.group, b, value])) {
            return Some(found);
        }
    }
    if let Some(rest) = e.function.strip_prefix("sluice/")
        && let Some(found) = find(&join(&[&e.group, &format!("direct/{rest}"), value]))
    {
        return Some(found);
    }
    all.iter().find(|o| o.group == e.group && o.function.starts_with("baseline") && o.full_id != e.full_id)
}

/// The sections of `previous` (an earlier `docs/benchmarks.md`) for the bench packages that
/// were not run this time, each marked with the date and commit of the run that measured it.
fn kept_sections(previous: &str, suites: &[Suite], packages: &[String]) -> String {
    let field = |name: &str| {
        previous
            .lines()
            .find_map(|l| l.strip_prefix(&format!("| {name} | ")))
            .map_or("unknown", |v| v.trim_end_matches(" |").trim())
            .to_owned()
    };
    let (date, commit) = (field("date"), field("commit"));
    let mut out = String::new();
    for package in packages.iter().filter(|p| !suites.iter().any(|s| &s.package == *p)) {
        let head = format!("### `{package}`\n");
        let Some(start) = previous.find(&head) else { continue };
        let body = &previous[start + head.len()..];
        // The section ends at the next heading of either level, whichever comes first.
        let end = [body.find("\n### "), body.find("\n## ")].into_iter().flatten().min().map_or(body.len(), |e| e + 1);
        let body = body[..end].trim_start_matches('\n');
        let body = match body.strip_prefix("Kept from an earlier run") {
            // Already kept once: keep the original note.
            Some(_) => body.to_owned(),
            None => format!("Kept from an earlier run ({date}, commit {commit}); not rerun this time.\n\n{body}"),
        };
        out.push_str(&format!("{head}\n{body}"));
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
    }
    out
}

/// The simulator's outputs.
struct Sim {
    /// The per-scenario Markdown tables.
    markdown: String,
    /// The stderr summary line ("simulated N calls in S s").
    summary: String,
    /// Plot files copied to `docs/img/`.
    plots: usize,
}

fn run_sim(root: &Path, target: &Path) -> std::result::Result<Sim, String> {
    let out = target.join(SIM_OUT);
    let output = Command::new(cargo())
        .args(["run", "--release", "-p", "sluice-sim", "--features", "plots", "--example", "report", "--", "--out"])
        .arg(&out)
        .current_dir(root)
        .output()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(format!(
            "the simulator failed ({}):\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    print!("{}", String::from_utf8_lossy(&output.stdout));
    let summary = stderr.lines().find(|l| l.starts_with("simulated ")).unwrap_or_default().to_owned();
    let markdown = fs::read_to_string(out.join("sim-report.md")).map_err(|e| format!("sim-report.md: {e}"))?;
    let img = root.join("docs/img");
    fs::create_dir_all(&img).map_err(|e| format!("{}: {e}", img.display()))?;
    let mut plots = 0;
    let entries = fs::read_dir(out.join("img")).map_err(|e| format!("sim plots: {e}"))?;
    for entry in entries.flatten() {
        let from = entry.path();
        if let Some(name) = from.file_name() {
            fs::copy(&from, img.join(name)).map_err(|e| format!("copy {}: {e}", from.display()))?;
            plots += 1;
        }
    }
    Ok(Sim { markdown, summary, plots })
}

/// What the report says about the machine and the run.
struct Machine {
    date: String,
    cpus: usize,
    model: String,
    rustc: String,
    commit: String,
}

fn machine(root: &Path) -> Machine {
    let capture = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    Machine {
        date: capture("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        model,
        rustc: capture("rustc", &["-V"]),
        commit: capture("git", &["rev-parse", "--short", "HEAD"]),
    }
}

/// A duration in nanoseconds, with a unit that keeps three significant digits.
fn human(ns: f64) -> String {
    match ns {
        x if x >= 1e9 => format!("{:.3} s", x / 1e9),
        x if x >= 1e6 => format!("{:.3} ms", x / 1e6),
        x if x >= 1e3 => format!("{:.3} µs", x / 1e3),
        x => format!("{x:.2} ns"),
    }
}

fn render(m: &Machine, suites: &[Suite], sim: Option<&std::result::Result<Sim, String>>) -> String {
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str("Written by `cargo xtask bench`; do not edit by hand.\n");
    md.push_str("Every figure below was measured in one run on the machine named here, and each is stated next to its baseline from the same run.\n");
    md.push_str("Rerun `cargo xtask bench` to refresh it.\n\n");
    md.push_str(&format!(
        "| | |\n|---|---|\n| date | {} |\n| CPU | {} |\n| logical CPUs (nproc) | {} |\n| rustc | {} |\n| commit | {} |\n\n",
        m.date, m.model, m.cpus, m.rustc, m.commit
    ));
    md.push_str("The machine is shared with other work, so absolute times carry noise; the ratios, taken within one run, are the figures to compare.\n\n");
    md.push_str("## Criterion suites\n\n");
    if suites.is_empty() {
        md.push_str("Not run this time (`--skip-criterion`).\n\n");
    }
    for suite in suites {
        md.push_str(&format!("### `{}`\n\n", suite.package));
        match &suite.outcome {
            Err(e) => md.push_str(&format!("**Did not run:** {e}.\n\n")),
            Ok(estimates) if estimates.is_empty() => md.push_str("Ran, but wrote no new criterion estimates.\n\n"),
            Ok(estimates) => {
                md.push_str(&format!("`cargo bench -p {}` took {:.0} s.\n\n", suite.package, suite.took.as_secs_f64()));
                md.push_str("Ratio = mean / the baseline's mean; below 1× is faster than the baseline.\n\n");
                md.push_str("| benchmark | mean | 95 % CI | vs in-run baseline |\n|---|---:|---:|---|\n");
                for e in estimates {
                    let mut ratio = baseline_of(e, estimates)
                        .map_or_else(|| "–".to_owned(), |b| format!("{:.2}× `{}`", e.mean_ns / b.mean_ns, b.full_id));
                    if let Some(b) = plain_baseline_of(e, estimates) {
                        ratio.push_str(&format!("; {:.2}× `{}`", e.mean_ns / b.mean_ns, b.full_id));
                    }
                    md.push_str(&format!(
                        "| `{}` | {} | {} – {} | {} |\n",
                        e.full_id,
                        human(e.mean_ns),
                        human(e.low_ns),
                        human(e.high_ns),
                        ratio
                    ));
                }
                md.push('\n');
            }
        }
    }
    md.push_str("## Strategy simulator\n\n");
    match sim {
        None => md.push_str("Not run (`--skip-sim`).\n"),
        Some(Err(e)) => md.push_str(&format!("**Did not run:** {e}\n")),
        Some(Ok(sim)) => {
            md.push_str("`cargo run --release -p sluice-sim --features plots --example report`: every strategy and the two references over the built-in scenarios (see the `sluice-sim` README for the model).\n");
            md.push_str("Latencies are user-visible (arrival to final answer, retries included); each is followed by its ratio to the oracle's in the same scenario.\n");
            md.push_str("\"stop s\" is the time from the start of a failure to the last attempt before traffic to the failed region first paused for 5 s; \"back s\" the time from its recovery until its traffic share was back to half its share before the failure.\n");
            if !sim.summary.is_empty() {
                md.push_str(&format!("Wall time: {}.\n", sim.summary));
            }
            md.push_str(&format!(
                "{} plot files (SVG with labels, PNG without text) are in `docs/img/`.\n\n",
                sim.plots
            ));
            md.push_str(&sim.markdown);
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(full_id: &str, group: &str, function: &str, value: Option<&str>, mean_ns: f64) -> Estimate {
        Estimate {
            full_id: full_id.to_owned(),
            group: group.to_owned(),
            function: function.to_owned(),
            value: value.map(str::to_owned),
            mean_ns,
            low_ns: mean_ns,
            high_ns: mean_ns,
        }
    }

    #[test]
    fn parses_criterion_files() {
        let bench = r#"{"group_id":"adaptive","function_id":"nodes","value_str":"5","throughput":null,"full_id":"adaptive/nodes/5","directory_name":"adaptive/nodes/5","title":"adaptive/nodes/5"}"#;
        let est = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":11.5,"upper_bound":12.5},"point_estimate":12.0,"standard_error":0.1},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":1.5e3,"standard_error":0.1}}"#;
        let e = parse_estimate(bench, est).unwrap();
        assert_eq!(e, est_full());
        fn est_full() -> Estimate {
            Estimate {
                full_id: "adaptive/nodes/5".into(),
                group: "adaptive".into(),
                function: "nodes".into(),
                value: Some("5".into()),
                mean_ns: 12.0,
                low_ns: 11.5,
                high_ns: 12.5,
            }
        }
        let no_value = r#"{"group_id":"g","function_id":"f","value_str":null,"full_id":"g/f"}"#;
        assert_eq!(parse_estimate(no_value, est).unwrap().value, None);
        assert_eq!(json_number(r#"{"x": -1.5e-3}"#, "x"), Some(-1.5e-3));
        assert_eq!(json_string(r#"{"x":"a\"b"}"#, "x").as_deref(), Some("a\"b"));
    }

    #[test]
    fn finds_the_in_run_baseline() {
        let all = vec![
            est("adaptive/nodes/5", "adaptive", "nodes", Some("5"), 20.0),
            est("naive-baseline/nodes/5", "naive-baseline", "nodes", Some("5"), 100.0),
            est("contended-2-threads/adaptive/5", "contended-2-threads", "adaptive", Some("5"), 30.0),
            est("contended-2-threads/naive-baseline/5", "contended-2-threads", "naive-baseline", Some("5"), 60.0),
            est("client-overhead/sluice/plain", "client-overhead", "sluice/plain", None, 11.0),
            est("client-overhead/direct/plain", "client-overhead", "direct/plain", None, 10.0),
            est("record/1_thread/success", "record/1_thread", "success", None, 5.0),
            est("record/1_thread/baseline_x", "record/1_thread", "baseline_x", None, 4.0),
            est("simulate-1M-calls/adaptive/5-regions", "simulate-1M-calls", "adaptive", Some("5-regions"), 2.0),
            est("simulate-1M-calls/oracle/5-regions", "simulate-1M-calls", "oracle", Some("5-regions"), 1.0),
            est("lonely/x", "lonely", "x", None, 1.0),
        ];
        let check = |id: &str, expect: Option<&str>| {
            let e = all.iter().find(|e| e.full_id == id).unwrap();
            assert_eq!(baseline_of(e, &all).map(|b| b.full_id.as_str()), expect, "{id}");
        };
        check("adaptive/nodes/5", Some("naive-baseline/nodes/5"));
        check("naive-baseline/nodes/5", None);
        check("contended-2-threads/adaptive/5", Some("contended-2-threads/naive-baseline/5"));
        check("client-overhead/sluice/plain", Some("client-overhead/direct/plain"));
        check("record/1_thread/success", Some("record/1_thread/baseline_x"));
        check("simulate-1M-calls/adaptive/5-regions", Some("simulate-1M-calls/oracle/5-regions"));
        check("lonely/x", None);
        let plain = est("plain-vec-scan/adaptive/5", "plain-vec-scan", "adaptive", Some("5"), 10.0);
        let with_plain = [all.clone(), vec![plain]].concat();
        let e = &with_plain[0];
        assert_eq!(plain_baseline_of(e, &with_plain).map(|b| b.full_id.as_str()), Some("plain-vec-scan/adaptive/5"));
        assert_eq!(plain_baseline_of(e, &all), None);
    }

    #[test]
    fn keeps_sections_of_suites_not_rerun() {
        let previous = "| date | 2026-11-26 18:53 UTC |\n| commit | ed5ddb5 |\n\n## Criterion suites\n\n### `a`\n\nA table.\n\n### `b`\n\nB table.\n\n## Strategy simulator\n\nIntro.\n\n### Targets\n";
        let ran = [Suite { package: "a".to_owned(), outcome: Ok(Vec::new()), took: Duration::ZERO }];
        let kept = kept_sections(previous, &ran, &["a".to_owned(), "b".to_owned()]);
        assert!(!kept.contains("A table"), "{kept}");
        assert!(
            kept.starts_with("### `b`\n\nKept from an earlier run (2026-11-26 18:53 UTC, commit ed5ddb5)"),
            "{kept}"
        );
        assert!(kept.contains("B table.\n"), "{kept}");
        // The last suite's section ends at the next heading of any level: the simulator's
        // section is written afresh, never kept.
        assert!(!kept.contains("Strategy simulator") && !kept.contains("Intro"), "{kept}");
        // Kept again later: the original note stays.
        let again = kept_sections(&format!("| date | later |\n{kept}## x\n"), &ran, &["b".to_owned()]);
        assert_eq!(again, kept);
    }

    #[test]
    fn finds_bench_packages_and_names() {
        assert_eq!(
            package_name("[package]\nname = \"sluice-sim\"\n[dependencies]\nname = 1"),
            Some("sluice-sim".into())
        );
        let packages = bench_packages(&project_root());
        assert!(packages.contains(&"sluice-balancer".to_owned()), "{packages:?}");
        assert!(packages.contains(&"sluice-sim".to_owned()), "{packages:?}");
        assert_eq!(human(1.5e9), "1.500 s");
        assert_eq!(human(12.345), "12.35 ns");
    }
}
