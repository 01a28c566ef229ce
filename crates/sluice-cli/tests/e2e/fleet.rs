//! Two `sluice serve` replicas with `[fleet]` on one real redis-server (installed by
//! `.ci/run`; a missing binary fails the test with a clear message).

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::support::{FAST_PROBES, PATIENCE, Serve, chat_body, eventually, http, mocks, temp_dir, write_config};

/// A redis-server child on a free loopback port, killed on drop.
struct Redis(Child, u16);

impl Redis {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts it with extra arguments (such as `--requirepass`).
    async fn start_with(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("the fleet e2e test needs redis-server on PATH (Debian: apt-get install redis-server; .ci/run installs it)");
        let redis = Self(child, port);
        eventually("redis-server accepts connections", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
        redis
    }
}

impl Redis {
    /// Fast probes and a `[fleet]` table on this server, with `settings` (such as
    /// `replica_id = "x"`) added. Redis operations get 5 s: a loaded CI machine is slow.
    fn fleet_toml(&self, settings: &str) -> String {
        format!(
            "{FAST_PROBES}[fleet]\nredis_url = \"redis://127.0.0.1:{}/0\"\nlease = \"600ms\"\nop_timeout = \"5s\"\n{settings}\n",
            self.1
        )
    }
}

/// A plain chat call to `serve` that prefers Seoul.
async fn prefer_seoul(http: &reqwest::Client, serve: &Serve) -> reqwest::Result<reqwest::Response> {
    http.post(serve.url("/v1/chat/completions"))
        .header("x-sluice-region", "ap-northeast-2")
        .json(&chat_body(false))
        .send()
        .await
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Replica 1 takes a 429 with Retry-After from Seoul; replica 2, which Seoul would now serve,
/// keeps away from it: the cooldown came through Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_replicas_share_a_retry_after() {
    let redis = Redis::start().await;
    let regions = mocks(&[("ap-northeast-2", "Seoul"), ("ap-northeast-1", "Tokyo")]).await;
    let (seoul, tokyo) = (&regions[0], &regions[1]);
    let fleet = |id: &str| redis.fleet_toml(&format!("replica_id = \"{id}\""));
    let serves = [
        Serve::start(&write_config(&temp_dir("fleet-1"), &[seoul, tokyo], &fleet("serve-1")), &[], &[]).await,
        Serve::start(&write_config(&temp_dir("fleet-2"), &[seoul, tokyo], &fleet("serve-2")), &[], &[]).await,
    ];
    for serve in &serves {
        eventually("fleet mode connects", || async { serve.stderr().contains("fleet: connected").then_some(()) }).await;
    }
    let http = http();
    let call = |serve| prefer_seoul(&http, serve);

    seoul.set_rate_limited(Some(Duration::from_secs(30)));
    let r = call(&serves[0]).await.expect("replica 1 answers");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sluice-region"], "ap-northeast-1", "replica 1 failed over from the 429");
    // Seoul would serve again now; only the shared cooldown keeps replica 2 away.
    seoul.set_rate_limited(None);
    eventually("replica 2 applies the cooldown", || async {
        let text = http.get(serves[1].url("/metrics")).send().await.ok()?.text().await.ok()?;
        text.lines()
            .any(|l| l.starts_with("sluice_region_cooldowns_total{region=\"ap-northeast-2\"}") && !l.ends_with(" 0"))
            .then_some(())
    })
    .await;
    let before = seoul.chat_hits();
    for _ in 0..5 {
        let r = tokio::time::timeout(PATIENCE, call(&serves[1])).await.expect("in time").expect("replica 2 answers");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-sluice-region"], "ap-northeast-1", "replica 2 keeps away from Seoul");
    }
    assert_eq!(seoul.chat_hits(), before, "Seoul got no call from replica 2");
    assert!(tokyo.chat_hits() >= 6);
}

/// Redis AUTH: the password comes from the variable `[fleet] password_env` names. With it,
/// fleet mode connects; with a wrong one, serve still serves on local health and says why,
/// and neither password ever shows in its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_auth_comes_from_an_environment_variable() {
    const PASSWORD: &str = "fleet-secret-7f3a";
    let redis = Redis::start_with(&["--requirepass", PASSWORD]).await;
    let regions = mocks(&[("ap-northeast-2", "Seoul")]).await;
    let fleet = redis.fleet_toml("password_env = \"SLUICE_E2E_REDIS_PASSWORD\"");
    let config = write_config(&temp_dir("fleet-auth"), &[&regions[0]], &fleet);
    let good = Serve::start(&config, &[], &[("SLUICE_E2E_REDIS_PASSWORD", PASSWORD)]).await;
    eventually("fleet mode connects with the password", || async {
        good.stderr().contains("fleet: connected").then_some(())
    })
    .await;
    let bad = Serve::start(&config, &[], &[("SLUICE_E2E_REDIS_PASSWORD", "wrong-password-9c1e")]).await;
    let http = http();
    // No call fails because of Redis: the replica with the wrong password serves alone.
    for serve in [&good, &bad] {
        let r = http.post(serve.url("/v1/chat/completions")).json(&chat_body(false)).send().await.expect("answers");
        assert_eq!(r.status(), 200);
    }
    eventually("the wrong password is reported", || async {
        let log = bad.stderr().to_lowercase();
        log.lines()
            .any(|l| l.contains("fleet: redis unreachable") && (l.contains("wrongpass") || l.contains("auth")))
            .then_some(())
    })
    .await;
    assert!(!bad.stderr().contains("fleet: connected"), "{}", bad.stderr());
    for serve in [&good, &bad] {
        let log = serve.stderr();
        assert!(!log.contains(PASSWORD) && !log.contains("wrong-password-9c1e"), "a password leaked: {log}");
    }
}

/// An operator drains Seoul through replica 1's admin API; replica 2 stops sending it calls,
/// and undrain brings it back on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_drain_applies_to_the_whole_fleet() {
    const KEY: &str = "fleet-admin-key-1";
    let redis = Redis::start().await;
    let regions = mocks(&[("ap-northeast-2", "Seoul"), ("ap-northeast-1", "Tokyo")]).await;
    let (seoul, tokyo) = (&regions[0], &regions[1]);
    let fleet = |id: &str| redis.fleet_toml(&format!("replica_id = \"{id}\""));
    let admin = ["--admin-key-env", "SLUICE_E2E_ADMIN"];
    let env = [("SLUICE_E2E_ADMIN", KEY)];
    let serves = [
        Serve::start(&write_config(&temp_dir("fleet-drain-1"), &[seoul, tokyo], &fleet("serve-1")), &admin, &env).await,
        Serve::start(&write_config(&temp_dir("fleet-drain-2"), &[seoul, tokyo], &fleet("serve-2")), &admin, &env).await,
    ];
    for serve in &serves {
        eventually("fleet mode connects", || async { serve.stderr().contains("fleet: connected").then_some(()) }).await;
    }
    let http = http();
    let served_by = |serve: &Serve| {
        let request = http
            .post(serve.url("/v1/chat/completions"))
            .header("x-sluice-region", "ap-northeast-2")
            .json(&chat_body(false))
            .send();
        async move {
            let r = tokio::time::timeout(PATIENCE, request).await.expect("in time").expect("answers");
            assert_eq!(r.status(), 200);
            r.headers()["x-sluice-region"].to_str().unwrap().to_owned()
        }
    };
    let admin_state = |serve: &Serve| {
        let request = http.get(serve.url("/admin/regions")).bearer_auth(KEY).send();
        async move {
            let v: serde_json::Value = request.await.ok()?.json().await.ok()?;
            v["regions"].as_array()?.iter().find(|r| r["id"] == "ap-northeast-2").map(|r| r["admin"].clone())
        }
    };
    assert_eq!(served_by(&serves[1]).await, "ap-northeast-2");

    let r = http.post(serves[0].url("/admin/regions/ap-northeast-2/drain")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["fleet"], true, "{body}");
    eventually("replica 2 hears the drain", || async { (admin_state(&serves[1]).await? == "drained").then_some(()) })
        .await;
    let before = seoul.chat_hits();
    for _ in 0..5 {
        assert_eq!(served_by(&serves[1]).await, "ap-northeast-1", "replica 2 keeps away from drained Seoul");
    }
    assert_eq!(seoul.chat_hits(), before, "a drained region got calls");

    let r = http.post(serves[0].url("/admin/regions/ap-northeast-2/undrain")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    eventually("replica 2 hears the undrain", || async { (admin_state(&serves[1]).await? == "enabled").then_some(()) })
        .await;
    assert_eq!(served_by(&serves[1]).await, "ap-northeast-2");
}

/// A reload that reorders the regions changes their node ids. Fleet mode follows: after a
/// SIGHUP on replica 1, its 429 from Seoul still cools Seoul on replica 2, and never Tokyo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_mode_follows_a_reload_that_reorders_regions() {
    let redis = Redis::start().await;
    let regions = mocks(&[("ap-northeast-2", "Seoul"), ("ap-northeast-1", "Tokyo")]).await;
    let (seoul, tokyo) = (&regions[0], &regions[1]);
    let fleet = |id: &str| redis.fleet_toml(&format!("replica_id = \"{id}\""));
    let dir = temp_dir("fleet-reload-1");
    let config = write_config(&dir, &[seoul, tokyo], &fleet("serve-1"));
    let serves = [
        Serve::start(&config, &[], &[]).await,
        Serve::start(&write_config(&temp_dir("fleet-reload-2"), &[seoul, tokyo], &fleet("serve-2")), &[], &[]).await,
    ];
    for serve in &serves {
        eventually("fleet mode connects", || async { serve.stderr().contains("fleet: connected").then_some(()) }).await;
    }
    // Replica 1 now lists Tokyo first: Seoul becomes node 1.
    write_config(&dir, &[tokyo, seoul], &fleet("serve-1"));
    let pid = serves[0].child.id().expect("running").to_string();
    assert!(tokio::process::Command::new("kill").args(["-HUP", &pid]).status().await.unwrap().success());
    eventually("replica 1 reloads and restarts fleet mode", || async {
        serves[0].stderr().contains("fleet mode restarted on the new regions").then_some(())
    })
    .await;
    eventually("fleet mode reconnects", || async {
        (serves[0].stderr().matches("fleet: connected").count() >= 2).then_some(())
    })
    .await;

    let http = http();
    let call = |serve| prefer_seoul(&http, serve);
    seoul.set_rate_limited(Some(Duration::from_secs(30)));
    let r = call(&serves[0]).await.expect("replica 1 answers");
    assert_eq!(r.headers()["x-sluice-region"], "ap-northeast-1", "replica 1 failed over from the 429");
    seoul.set_rate_limited(None);
    let cooldowns = |text: &str, region: &str| {
        let series = format!("sluice_region_cooldowns_total{{region=\"{region}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.trim().parse::<u64>().unwrap_or(0))
    };
    let text = eventually("replica 2 applies Seoul's cooldown", || async {
        let text = http.get(serves[1].url("/metrics")).send().await.ok()?.text().await.ok()?;
        (cooldowns(&text, "ap-northeast-2") > 0).then_some(text)
    })
    .await;
    assert_eq!(cooldowns(&text, "ap-northeast-1"), 0, "Tokyo was never throttled:\n{text}");
    let r = call(&serves[1]).await.expect("replica 2 answers");
    assert_eq!(r.headers()["x-sluice-region"], "ap-northeast-1", "replica 2 keeps away from Seoul");
}
