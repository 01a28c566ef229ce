use serde_json::Value;

use crate::support::{FAST_PROBES, Serve, chat_body, eventually, http, mocks, run, temp_dir, texts, write_config};

const ADMIN_KEY: &str = "adm-secret-key-123";

async fn regions(serve: &Serve) -> Vec<String> {
    let resp = http()
        .get(format!("http://{}/admin/regions", serve.addr))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("admin answers");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    v["regions"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

async fn admin_post(serve: &Serve, path: &str) -> (u16, Value) {
    let resp =
        http().post(format!("http://{}{path}", serve.addr)).bearer_auth(ADMIN_KEY).send().await.expect("admin answers");
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// Region that served a chat call sent with `x-sluice-region: preferred`.
async fn served_by(serve: &Serve, preferred: &str) -> String {
    let resp = http()
        .post(serve.url("/v1/chat/completions"))
        .header("x-sluice-region", preferred)
        .json(&chat_body(false))
        .send()
        .await
        .expect("call answers");
    assert_eq!(resp.status(), 200);
    resp.headers()["x-sluice-region"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn admin_needs_its_key_drains_reloads_and_status_prints_the_table() {
    let m = mocks(&[("ap-northeast-2", "Seoul"), ("ap-northeast-1", "Tokyo"), ("ap-southeast-1", "Singapore")]).await;
    let dir = temp_dir("serve-ops");
    let config = write_config(&dir, &[&m[0], &m[1]], FAST_PROBES);
    let good = std::fs::read_to_string(&config).unwrap();
    let serve = Serve::start(
        &config,
        &["--admin-key-env", "SLUICE_E2E_ADMIN", "--no-access-log"],
        &[("SLUICE_E2E_ADMIN", ADMIN_KEY)],
    )
    .await;

    // The admin API needs its key.
    let denied = http().get(format!("http://{}/admin/regions", serve.addr)).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let wrong = http().get(format!("http://{}/admin/regions", serve.addr)).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(regions(&serve).await, ["ap-northeast-2", "ap-northeast-1"]);

    // Drain tokyo: even calls that prefer it go elsewhere; undrain brings it back.
    assert_eq!(served_by(&serve, "ap-northeast-1").await, "ap-northeast-1");
    let (status, _) = admin_post(&serve, "/admin/regions/ap-northeast-1/drain").await;
    assert_eq!(status, 200);
    let tokyo_hits = m[1].chat_hits();
    for _ in 0..5 {
        assert_eq!(served_by(&serve, "ap-northeast-1").await, "ap-northeast-2");
    }
    assert_eq!(m[1].chat_hits(), tokyo_hits, "a drained region got calls");
    let (status, _) = admin_post(&serve, "/admin/regions/mars-1/drain").await;
    assert_eq!(status, 404);
    let (status, _) = admin_post(&serve, "/admin/regions/ap-northeast-1/undrain").await;
    assert_eq!(status, 200);
    assert_eq!(served_by(&serve, "ap-northeast-1").await, "ap-northeast-1");

    // A broken file is refused with check-config's message; the running regions stay.
    std::fs::write(&config, format!("{good}\n[[region]]\nid = \"broken\"\n")).unwrap();
    let (status, body) = admin_post(&serve, "/admin/reload").await;
    assert_eq!(status, 422, "{body}");
    let check = run(&["check-config", config.to_str().unwrap()], &[]).await;
    let (_, check_err) = texts(&check);
    let first_line = check_err.trim_start_matches("error: ").lines().next().unwrap().to_owned();
    assert!(body["error"].as_str().unwrap().contains(&first_line), "{body} vs {check_err}");
    assert_eq!(regions(&serve).await, ["ap-northeast-2", "ap-northeast-1"]);

    // A good file swaps in: tokyo leaves, singapore comes and takes calls at once.
    write_config(&dir, &[&m[0], &m[2]], FAST_PROBES);
    let (status, body) = admin_post(&serve, "/admin/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(regions(&serve).await, ["ap-northeast-2", "ap-southeast-1"]);
    assert_eq!(served_by(&serve, "ap-southeast-1").await, "ap-southeast-1");

    // `sluice status` prints the table, with the operator's switch.
    let (status, _) = admin_post(&serve, "/admin/regions/ap-southeast-1/drain").await;
    assert_eq!(status, 200);
    let out = run(
        &["status", "--url", &format!("http://{}", serve.addr), "--admin-key-env", "SLUICE_E2E_ADMIN"],
        &[("SLUICE_E2E_ADMIN", ADMIN_KEY)],
    )
    .await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("region") && stdout.contains("ap-southeast-1") && !stdout.contains("ap-northeast-1"),
        "{stdout}"
    );
    let singapore = stdout.lines().find(|l| l.starts_with("ap-southeast-1")).expect("a row per region");
    assert!(singapore.contains("drained"), "{stdout}");
    let wrong = run(
        &["status", "--url", &format!("http://{}", serve.addr), "--admin-key-env", "SLUICE_E2E_ADMIN"],
        &[("SLUICE_E2E_ADMIN", "not-the-key")],
    )
    .await;
    let (_, wrong_err) = texts(&wrong);
    assert_eq!(wrong.status.code(), Some(1), "{wrong_err}");
    assert!(wrong_err.contains("401"), "{wrong_err}");
    assert!(!serve.stderr().contains(ADMIN_KEY), "the admin key leaked into the log");
    // --no-access-log: the calls above wrote no access line (the admin switch did log).
    let log = serve.stderr();
    assert!(log.contains("operator switch"), "{log}");
    assert!(!log.contains("path=/v1/chat/completions") && !log.contains("request_id="), "{log}");
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_and_json_access_log_has_its_fields() {
    let m = mocks(&[("ap-northeast-2", "Seoul"), ("ap-northeast-1", "Tokyo")]).await;
    let dir = temp_dir("serve-hup");
    let config = write_config(&dir, &[&m[0], &m[1]], FAST_PROBES);
    let good = std::fs::read_to_string(&config).unwrap();
    let serve = Serve::start(
        &config,
        &["--admin-key-env", "SLUICE_E2E_ADMIN", "--log-format", "json"],
        &[("SLUICE_E2E_ADMIN", ADMIN_KEY), ("RUST_LOG", "info")],
    )
    .await;
    let pid = serve.child.id().expect("running").to_string();
    let hup = || async {
        let status = tokio::process::Command::new("kill").args(["-HUP", &pid]).status().await.unwrap();
        assert!(status.success());
    };
    for _ in 0..3 {
        assert_eq!(served_by(&serve, "ap-northeast-1").await, "ap-northeast-1");
    }

    // A broken file is refused on SIGHUP with check-config's message in the log.
    std::fs::write(&config, format!("{good}\n[[region]]\nid = \"broken\"\n")).unwrap();
    hup().await;
    eventually("the refusal in the log", || async { serve.stderr().contains("configuration refused").then_some(()) })
        .await;
    assert_eq!(regions(&serve).await, ["ap-northeast-2", "ap-northeast-1"]);

    // A good one swaps in.
    write_config(&dir, &[&m[0]], FAST_PROBES);
    hup().await;
    eventually("the SIGHUP reload", || async { (regions(&serve).await == ["ap-northeast-2"]).then_some(()) }).await;
    let resp = http().post(serve.url("/v1/chat/completions")).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-region"], "ap-northeast-2", "a removed region still served");
    let tokyo_hits = m[1].chat_hits();
    // The process is still serving (SIGHUP did not end it).
    assert!(serve.child.id().is_some());

    // One JSON access line per call (written when the body ends), without keys or bodies.
    let access_lines = |stderr: &str| -> Vec<Value> {
        stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "sluice::access" && v["path"] == "/v1/chat/completions")
            .collect()
    };
    eventually("four access lines", || async { (access_lines(&serve.stderr()).len() >= 4).then_some(()) }).await;
    let stderr = serve.stderr();
    assert!(!stderr.contains(ADMIN_KEY), "the admin key leaked");
    assert!(!stderr.contains("\"messages\"") && !stderr.contains("\"content\""), "a body reached the log");
    let chats = access_lines(&stderr);
    assert_eq!(chats.len(), 4, "one line per call: {chats:?}");
    let line = &chats[0];
    for field in [
        "timestamp",
        "method",
        "model",
        "region",
        "attempts",
        "status",
        "latency_ms",
        "first_chunk_ms",
        "tokens",
        "request_id",
    ] {
        assert!(line.get(field).is_some(), "{field} missing in {line}");
    }
    assert_eq!(line["method"], "POST");
    assert_eq!(line["status"], 200);
    assert_eq!(line["region"], "ap-northeast-1");
    assert_eq!(line["model"], "gpt-4o-mini");
    assert_eq!(line["attempts"], "1");
    assert_eq!(line["tokens"], 21, "the mock's usage.total_tokens");
    assert!(line["request_id"].as_str().unwrap().starts_with("sluice-"), "{line}");
    assert_eq!(chats[3]["region"], "ap-northeast-2");
    assert_eq!(m[1].chat_hits(), tokyo_hits);
}
