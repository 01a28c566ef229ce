//! Tidy checks: repository-wide rules, as `#[test]`s so that `cargo test` alone enforces them.
//!
//! Each test names the rule it enforces and lists every offender, not just the first.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::project_root;

/// Balancing strategies that `docs/architecture.md` must describe.
const STRATEGIES: &[&str] =
    &["locality", "weighted round-robin", "least-connections", "response-time", "adaptive", "geo-nearest"];

/// Macros that must not be committed. Split so that this file does not flag itself.
const FORBIDDEN_MACROS: &[&str] = &[concat!("dbg", "!("), concat!("todo", "!("), concat!("unimplemented", "!(")];

/// The command the README documents and `.ci/run` runs.
const TEST_COMMAND: &str = "cargo xtask ci";

#[test]
fn every_crate_has_a_readme() {
    let missing: Vec<String> =
        crate_dirs().into_iter().filter(|dir| !dir.join("README.md").is_file()).map(|dir| rel(&dir)).collect();
    assert!(missing.is_empty(), "crates without README.md (it doubles as the crate doc): {missing:?}");
}

#[test]
fn every_crate_folder_is_named_after_its_package() {
    let mut wrong = Vec::new();
    for dir in crate_dirs() {
        let manifest = read(&dir.join("Cargo.toml"));
        let folder = dir.file_name().unwrap().to_string_lossy().into_owned();
        let name = section(&manifest, "package").into_iter().find_map(|line| value_of(line, "name"));
        if name.as_deref() != Some(folder.as_str()) {
            wrong.push(format!("{folder}: package name {name:?}"));
        }
    }
    assert!(wrong.is_empty(), "folder name must equal package name: {wrong:?}");
}

#[test]
fn every_package_uses_workspace_lints_and_metadata() {
    let mut problems = Vec::new();
    for manifest_path in member_manifests() {
        let manifest = read(&manifest_path);
        let who = rel(&manifest_path);
        let lints = section(&manifest, "lints");
        let top = section(&manifest, "");
        if !lints.iter().any(|l| is_workspace_true(l, "workspace"))
            && !top.iter().any(|l| is_workspace_true(l, "lints.workspace"))
        {
            problems.push(format!("{who}: missing `[lints] workspace = true`"));
        }
        let package = section(&manifest, "package");
        for field in ["edition", "rust-version", "license"] {
            if !package.iter().any(|l| is_workspace_true(l, &format!("{field}.workspace"))) {
                problems.push(format!("{who}: `{field}` is not inherited with `{field}.workspace = true`"));
            }
        }
    }
    assert!(problems.is_empty(), "workspace inheritance problems:\n  {}", problems.join("\n  "));
}

#[test]
fn every_dependency_comes_from_the_workspace() {
    let mut problems = Vec::new();
    for manifest_path in member_manifests() {
        let manifest = read(&manifest_path);
        for (header, lines) in sections(&manifest) {
            if let Some((_, dep)) = header.split_once("dependencies.") {
                // A dependency written as its own table, such as `[dependencies.tokio]`.
                if !lines.iter().any(|l| is_workspace_true(l, "workspace")) {
                    problems.push(format!("{} [{header}] {dep}", rel(&manifest_path)));
                }
                continue;
            }
            if !header.ends_with("dependencies") {
                continue;
            }
            for line in lines {
                let Some((key, rest)) = line.split_once('=') else { continue };
                let key = key.trim();
                let inherited = key.ends_with(".workspace") && rest.trim() == "true"
                    || rest.replace(' ', "").contains("workspace=true");
                if !inherited {
                    problems.push(format!("{} [{header}] {key}", rel(&manifest_path)));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "declare versions in the root [workspace.dependencies] and write `dep.workspace = true`:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn internal_packages_are_unpublished() {
    let mut problems = Vec::new();
    for dir in ["xtask", "tests", "benches"] {
        let path = project_root().join(dir).join("Cargo.toml");
        if !path.is_file() {
            continue;
        }
        let manifest = read(&path);
        let package = section(&manifest, "package");
        if !package.iter().any(|l| value_of(l, "publish").as_deref() == Some("false")) {
            problems.push(format!("{dir}: missing `publish = false`"));
        }
        if !package.iter().any(|l| value_of(l, "version").as_deref() == Some("0.0.0")) {
            problems.push(format!("{dir}: version is not 0.0.0"));
        }
    }
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn no_debugging_leftovers_in_source() {
    let root = project_root();
    let mut hits = Vec::new();
    for top in ["crates", "tests", "benches", "xtask"] {
        for file in rust_files(&root.join(top)) {
            let text = read(&file);
            for (n, line) in text.lines().enumerate() {
                for mac in FORBIDDEN_MACROS {
                    if line.contains(mac) {
                        hits.push(format!("{}:{}: {}", rel(&file), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(hits.is_empty(), "remove debugging and placeholder macros:\n  {}", hits.join("\n  "));
}

#[test]
fn architecture_doc_names_every_strategy_and_crate() {
    let doc = read(&project_root().join("docs/architecture.md")).to_lowercase();
    let mut missing: Vec<String> = STRATEGIES.iter().filter(|s| !doc.contains(*s)).map(|s| s.to_string()).collect();
    missing.extend(crate_names().into_iter().filter(|c| !doc.contains(c.as_str())));
    assert!(missing.is_empty(), "docs/architecture.md does not mention: {missing:?}");
}

#[test]
fn readme_names_every_crate() {
    let readme = read(&project_root().join("README.md"));
    let missing: Vec<String> = crate_names().into_iter().filter(|c| !readme.contains(c.as_str())).collect();
    assert!(missing.is_empty(), "README.md does not mention: {missing:?}");
}

#[test]
fn ci_script_runs_the_readme_test_command() {
    let root = project_root();
    let readme = read(&root.join("README.md"));
    let fenced = fenced_blocks(&readme);
    assert!(
        fenced.iter().any(|block| block.lines().any(|l| l.trim() == TEST_COMMAND)),
        "README.md must give `{TEST_COMMAND}` on its own line in a fenced block"
    );
    let script = read(&root.join(".ci/run"));
    assert!(
        script.lines().any(|l| l.trim() == TEST_COMMAND),
        ".ci/run must run `{TEST_COMMAND}`, the command README.md documents"
    );
}

// ===== helpers =====

/// Every directory under `crates/` that holds a `Cargo.toml`, sorted.
fn crate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(project_root().join("crates"))
        .expect("crates/ exists")
        .map(|e| e.expect("readable crates/ entry").path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// The folder names under `crates/`, which equal the package names.
fn crate_names() -> Vec<String> {
    crate_dirs().iter().map(|d| d.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

/// Manifests of every workspace member: `crates/*`, `xtask`, `tests`, `benches`.
fn member_manifests() -> Vec<PathBuf> {
    let root = project_root();
    let mut all: Vec<PathBuf> = crate_dirs().into_iter().map(|d| d.join("Cargo.toml")).collect();
    all.extend(["xtask", "tests", "benches"].iter().map(|d| root.join(d).join("Cargo.toml")).filter(|p| p.is_file()));
    all
}

/// Every `.rs` file below `dir`, skipping `target` and hidden directories.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.expect("readable directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Reads a file or fails the test with its path.
fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `path` relative to the workspace root, for messages.
fn rel(path: &Path) -> String {
    let root = project_root();
    path.strip_prefix(&root).unwrap_or(path).display().to_string()
}

/// Splits a TOML file into `(header, meaningful lines)` per table, with `""` for lines before
/// the first header. Comments and blank lines are dropped.
///
/// This is a line-based reading that is enough for our manifests, not a TOML parser.
fn sections(toml: &str) -> Vec<(String, Vec<&str>)> {
    let mut out = vec![(String::new(), Vec::new())];
    for line in toml.lines() {
        let line = line.split(" #").next().unwrap().trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            out.push((line.trim_matches(['[', ']']).trim().to_owned(), Vec::new()));
        } else {
            out.last_mut().unwrap().1.push(line);
        }
    }
    out
}

/// The lines of one table, such as `package` or `lints`; empty if absent.
fn section<'a>(toml: &'a str, header: &str) -> Vec<&'a str> {
    sections(toml).into_iter().filter(|(h, _)| h == header).flat_map(|(_, lines)| lines).collect()
}

/// The unquoted value of `key = value` if `line` sets `key`.
fn value_of(line: &str, key: &str) -> Option<String> {
    let (k, v) = line.split_once('=')?;
    (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
}

/// Whether `line` is `key = true`.
fn is_workspace_true(line: &str, key: &str) -> bool {
    value_of(line, key).as_deref() == Some("true")
}

/// The bodies of the fenced code blocks in a Markdown text.
fn fenced_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(String::new()),
            }
        } else if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

#[test]
fn helpers_read_manifests_and_markdown() {
    let toml = "[package]\nname = \"a\" # c\nedition.workspace = true\n\n[lints]\nworkspace = true\n";
    assert_eq!(section(toml, "package"), ["name = \"a\"", "edition.workspace = true"]);
    assert_eq!(section(toml, "lints"), ["workspace = true"]);
    assert!(section(toml, "features").is_empty());
    assert_eq!(value_of("name = \"a\"", "name").as_deref(), Some("a"));
    assert_eq!(value_of("names = \"a\"", "name"), None);
    assert_eq!(fenced_blocks("x\n```sh\ncargo xtask ci\n```\ny\n"), ["cargo xtask ci\n"]);
}
