use crate::support::{run, texts};

/// Calls served by `region` in the summary line of phase `n`, and the phase's total.
fn served(stdout: &str, n: usize, region: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("phase {n} (")) && l.contains("calls served"))
        .unwrap_or_else(|| panic!("no summary line for phase {n}: {stdout}"));
    let (head, served) = line.split_once(" calls served: ").unwrap_or_else(|| panic!("no counts in `{line}`"));
    let total = head.rsplit(' ').next().and_then(|t| t.parse().ok());
    let count = served
        .split(", ")
        .find_map(|part| part.strip_prefix(&format!("{region} ")))
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok());
    match (count, total) {
        (Some(c), Some(t)) => (c, t),
        _ => panic!("cannot read {region} in `{line}`"),
    }
}

#[tokio::test]
async fn demo_quick_stays_in_seoul_spills_under_429_and_comes_back() {
    let out = run(&["demo", "--quick"], &[]).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("lost calls: 0"), "{stdout}");
    assert!(stdout.contains("strategy locality"), "the demo runs the default policy: {stdout}");
    for region in ["Seoul", "Tokyo", "Singapore", "Frankfurt", "Virginia"] {
        assert!(stdout.contains(region), "{region} missing: {stdout}");
    }
    // Phase 1, all healthy: the nearest region serves most calls.
    let (seoul, total) = served(&stdout, 1, "Seoul");
    assert!(total > 0 && seoul * 2 > total, "phase 1: Seoul served {seoul} of {total}\n{stdout}");
    // Phase 2, Seoul answers 429 to every call: none is served there, Tokyo takes the most.
    let (seoul, total) = served(&stdout, 2, "Seoul");
    let (tokyo, _) = served(&stdout, 2, "Tokyo");
    assert_eq!(seoul, 0, "phase 2: Seoul answers only 429\n{stdout}");
    for other in ["Singapore", "Frankfurt", "Virginia"] {
        let (n, _) = served(&stdout, 2, other);
        assert!(tokyo >= n, "phase 2: spill goes to the next-nearest, Tokyo {tokyo} vs {other} {n}\n{stdout}");
    }
    assert!(total > 0, "{stdout}");
    // Phase 3, Seoul recovered: calls come back to it.
    let (seoul, total) = served(&stdout, 3, "Seoul");
    assert!(seoul > 0, "phase 3: Seoul served {seoul} of {total}\n{stdout}");
}
