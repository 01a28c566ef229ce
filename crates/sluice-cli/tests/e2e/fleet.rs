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
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
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
    let fleet = |id: &str| {
        format!(
            "{FAST_PROBES}[fleet]\nredis_url = \"redis://127.0.0.1:{}/0\"\nreplica_id = \"{id}\"\nlease = \"600ms\"\n",
            redis.1
        )
    };
    let serves = [
        Serve::start(&write_config(&temp_dir("fleet-1"), &[seoul, tokyo], &fleet("serve-1")), &[], &[]).await,
        Serve::start(&write_config(&temp_dir("fleet-2"), &[seoul, tokyo], &fleet("serve-2")), &[], &[]).await,
    ];
    for serve in &serves {
        eventually("fleet mode connects", || async { serve.stderr().contains("fleet: connected").then_some(()) }).await;
    }
    let http = http();
    let call = |serve: &Serve| {
        http.post(serve.url("/v1/chat/completions"))
            .header("x-sluice-region", "ap-northeast-2")
            .json(&chat_body(false))
            .send()
    };

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
