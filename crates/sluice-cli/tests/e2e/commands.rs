use std::time::Duration;

use sluice_cli::mock::MockRegion;

use crate::support::{mocks, region_toml, run, temp_dir, texts, write_config};

#[tokio::test]
async fn check_config_accepts_a_good_file() {
    let dir = temp_dir("check-good");
    let path = dir.join("good.toml");
    let text = format!(
        "{}{}[strategy]\nname = \"geo-nearest\"\n[failover]\nmax_attempts = 2\n[caller]\nlat = 37.5\nlon = 127.0\n",
        region_toml("ap-northeast-2", "Seoul", "http://127.0.0.1:8080/v1", 37.56, 126.97),
        region_toml("us-east-1", "Virginia", "https://virginia.example.com/v1", 38.9, -77.0),
    );
    std::fs::write(&path, text).unwrap();
    let out = run(&["check-config", path.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("ok: 2 region(s), strategy geo-nearest"), "{stdout}");
    assert!(stdout.contains("key from OPENAI_API_KEY (not set)"), "{stdout}");
}

#[tokio::test]
async fn check_config_rejects_bad_files_with_position_and_region() {
    let dir = temp_dir("check-bad");
    let good = region_toml("ap-northeast-2", "Seoul", "http://127.0.0.1:8080/v1", 37.56, 126.97)
        + &region_toml("eu-central-1", "Frankfurt", "http://127.0.0.1:8081/v1", 50.11, 8.68);
    let cases = [
        // A TOML syntax error inside the second region.
        (good.replace("lat = 50.11", "lat = 50.11.3"), "bad.toml:13:12:", "region `eu-central-1`: invalid float"),
        // An unknown key.
        (
            good.replace("weight = 100\n\n[[region]]", "wieght = 1\n\n[[region]]"),
            "bad.toml:7:1:",
            "unknown field `wieght`",
        ),
        // Region-model checks name the region.
        (good.replace("lon = 8.68", "lon = 200.0"), "bad.toml:14:7:", "region `eu-central-1`: longitude 200"),
        // A key written in the file is refused.
        (format!("api_key = \"sk-123\"\n{good}"), "bad.toml:1:1:", "unknown field `api_key`"),
    ];
    for (text, position, message) in cases {
        let path = dir.join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let out = run(&["check-config", path.to_str().unwrap()], &[]).await;
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(position) && stderr.contains(message), "want {position} {message}, got {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains("sk-123"), "the key leaked: {stderr}");
    }
    // A missing file.
    let out = run(&["check-config", dir.join("nope.toml").to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(texts(&out).1.contains("cannot read the file"), "{}", texts(&out).1);
    // No argument at all is a usage error from clap.
    let out = run(&["check-config"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn probe_exit_code_follows_health() {
    let regions = mocks(&[("ap-northeast-2", "Seoul"), ("ap-northeast-1", "Tokyo")]).await;
    let dir = temp_dir("probe");
    let config = write_config(&dir, &[&regions[0], &regions[1]], "");
    let out = run(&["probe", "--config", config.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("region") && stdout.contains("latency") && stdout.contains("reason"), "{stdout}");
    assert!(stdout.contains("2 of 2 region(s) healthy"), "{stdout}");

    // One down: still exit 0, and the table says why.
    regions[1].set_down(true);
    let out = run(&["probe", "--config", config.to_str().unwrap()], &[]).await;
    let (stdout, _) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("1 of 2 region(s) healthy") && stdout.contains("unhealthy"), "{stdout}");

    // All down: non-zero.
    regions[0].set_down(true);
    let out = run(&["probe", "--config", config.to_str().unwrap()], &[]).await;
    let (stdout, _) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("0 of 2 region(s) healthy"), "{stdout}");

    // Watch mode with a bounded number of rounds.
    regions[0].set_down(false);
    let out = run(&["probe", "--config", config.to_str().unwrap(), "--watch", "--count", "2"], &[]).await;
    let (stdout, stderr) = texts(&out);
    assert!(stdout.contains("ap-northeast-2"), "{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(0), "watch ends with a region serving: {stdout}{stderr}");
}

#[tokio::test]
async fn chat_streams_and_reports_the_region() {
    let seoul = MockRegion::start("ap-northeast-2", "Seoul", Duration::ZERO).await.unwrap();
    let tokyo = MockRegion::start("ap-northeast-1", "Tokyo", Duration::ZERO).await.unwrap();
    let dir = temp_dir("chat");
    let config = write_config(&dir, &[&seoul, &tokyo], "");
    let c = config.to_str().unwrap();

    let out = run(&["chat", "--config", c, "--region", "ap-northeast-1", "Say", "hello"], &[]).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("Hello from Tokyo (ap-northeast-1). You said: Say hello"), "{stdout}");
    assert!(stdout.contains("served by ap-northeast-1 (Tokyo) after 1 attempt"), "{stdout}");

    let out = run(&["chat", "--config", c, "--no-stream", "--lat", "37.5", "--lon", "127", "hi"], &[]).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("Hello from") && stdout.contains("served by"), "{stdout}");

    // Failover: the preferred region is down.
    tokyo.set_down(true);
    let out = run(&["chat", "--config", c, "--region", "ap-northeast-1", "hi"], &[]).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("served by ap-northeast-2 (Seoul) after 2 attempts"), "{stdout}");

    // Unknown region: a clear error listing the known ones.
    let out = run(&["chat", "--config", c, "--region", "mars-1", "hi"], &[]).await;
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown region `mars-1`") && stderr.contains("ap-northeast-2, ap-northeast-1"),
        "{stderr}"
    );

    // Bad coordinates and a missing config.
    let out = run(&["chat", "--config", c, "--lat", "95", "--lon", "0", "hi"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", texts(&out).1);
    let out = run(&["chat", "--config", "/nonexistent/sluice.toml", "hi"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(texts(&out).1.contains("cannot read the file"));

    // Everything down: non-zero with the attempts listed.
    seoul.set_down(true);
    let out = run(&["chat", "--config", c, "hi"], &[]).await;
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("chat failed"), "{stderr}");
}

#[tokio::test]
async fn simulate_runs_a_short_scenario() {
    let out = run(&["simulate", "--scenario", "outage", "--strategy", "adaptive", "--time-scale", "0.05"], &[]).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    for needle in ["outage", "oracle", "naive-baseline", "adaptive"] {
        assert!(stdout.contains(needle), "{needle} missing: {stdout}");
    }
    // Piped, as here: no progress line is drawn, so nothing carries a carriage return.
    assert!(!stderr.contains('\r') && !stdout.contains('\r'), "progress drawn into a pipe: {stderr:?}");
    let out = run(&["simulate", "--scenario", "no-such-scenario"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(texts(&out).1.contains("unknown scenario `no-such-scenario`"));
}

#[tokio::test]
async fn bench_serve_measures_every_path() {
    let out = run(&["bench-serve", "--rates", "100", "--seconds", "0.3", "--warmup", "0", "--rounds", "1"], &[]).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("overhead p99") && stdout.contains("100 rps"), "{stdout}");
    // The bare forwarder ran as the floor, and every path answered every call.
    assert!(stdout.contains("floor CPU/call") && stdout.contains("0 + 0 + 0"), "{stdout}");
}
