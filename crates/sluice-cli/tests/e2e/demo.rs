use crate::support::{run, texts};

#[tokio::test]
async fn demo_quick_finishes_without_lost_calls() {
    let out = run(&["demo", "--quick"], &[]).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("lost calls: 0"), "{stdout}");
    for region in ["Seoul", "Tokyo", "Singapore", "Frankfurt", "Virginia"] {
        assert!(stdout.contains(region), "{region} missing: {stdout}");
    }
}
