//! Helpers: temporary config files, running the built `sluice` binary, bounded waits.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use sluice_cli::mock::MockRegion;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The binary under test.
pub(crate) const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// Generous bound for anything a loaded CI machine might be slow at.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// A fresh temporary directory for one test.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sluice-cli-e2e-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// One `[[region]]` table for a mock, at a location.
pub(crate) fn region_toml(id: &str, name: &str, url: &str, lat: f64, lon: f64) -> String {
    format!("[[region]]\nid = \"{id}\"\nname = \"{name}\"\nurl = \"{url}\"\nlat = {lat}\nlon = {lon}\nweight = 100\n\n")
}

/// Writes a config for `mocks` (Seoul, Tokyo, ... locations in order) plus `extra` tables.
pub(crate) fn write_config(dir: &Path, mocks: &[&MockRegion], extra: &str) -> PathBuf {
    const PLACES: [(f64, f64); 5] = [(37.56, 126.97), (35.68, 139.69), (1.35, 103.82), (50.11, 8.68), (38.9, -77.04)];
    let mut text = String::new();
    for (m, (lat, lon)) in mocks.iter().zip(PLACES) {
        text.push_str(&region_toml(m.id(), m.name(), &m.url(), lat, lon));
    }
    text.push_str(extra);
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Fast probes so that tests see health changes quickly.
pub(crate) const FAST_PROBES: &str = "[health.probe]\ninterval = \"100ms\"\njitter = \"10ms\"\ninitial_jitter = \"0ms\"\ntimeout = \"500ms\"\nunhealthy_interval = \"100ms\"\n";

/// Runs `sluice ARGS` to completion (bounded) with extra environment variables.
pub(crate) async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(SLUICE);
    cmd.args(args).env_remove("OPENAI_API_KEY").stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(PATIENCE, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("sluice {args:?} did not finish within {PATIENCE:?}"))
        .expect("run sluice")
}

/// Text of stdout and stderr.
pub(crate) fn texts(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A running `sluice serve`.
pub(crate) struct Serve {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) stderr_path: PathBuf,
}

impl Serve {
    /// Starts `sluice serve --config CONFIG --listen 127.0.0.1:0 EXTRA` and waits for its
    /// "listening on" line.
    pub(crate) async fn start(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let stderr_path = config.with_file_name("serve.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(SLUICE);
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("OPENAI_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn sluice serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("serve printed nothing in time")
            .expect("read stdout")
            .unwrap_or_else(|| {
                panic!("serve exited early: {}", std::fs::read_to_string(&stderr_path).unwrap_or_default())
            });
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in `{line}`"));
        // Keep reading stdout so that the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, addr, stderr_path }
    }

    /// `http://ADDR/v1`.
    pub(crate) fn base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://ADDR` + path.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the server wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM through `kill`, without unsafe code.
    pub(crate) async fn terminate(&self) {
        let pid = self.child.id().expect("running child");
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }
}

/// Polls `check` every 20 ms until it returns `Some`, at most `PATIENCE`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP client for header-level assertions.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(PATIENCE).build().expect("reqwest client")
}

/// A minimal chat body.
pub(crate) fn chat_body(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    })
}

/// Starts the named mocks with zero latency.
pub(crate) async fn mocks(ids: &[(&str, &str)]) -> Vec<MockRegion> {
    let mut out = Vec::new();
    for (id, name) in ids {
        out.push(MockRegion::start(id, name, Duration::ZERO).await.expect("start mock"));
    }
    out
}
