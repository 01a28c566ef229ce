//! Fixtures: a real `redis-server` on a free loopback port, and a loopback upstream that
//! plays several regions for several replicas and counts what each replica sent.

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use parking_lot::Mutex;
use sluice_client::{CallOptions, ChatCompletionRequest, ChatMessage, Client, ClientBuilder};
use sluice_fleet::{Fleet, FleetBuilder};
use sluice_region_model::{GeoPoint, Region};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
    task::JoinHandle,
};

/// Generous bound for anything the tests wait for (CI is a loaded 2-core machine).
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// A `redis-server` child process on a loopback port, killed on drop.
pub(crate) struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it accepts connections.
    ///
    /// # Panics
    /// If `redis-server` is not installed: CI (`.ci/run`) installs it, so a missing binary is
    /// a broken setup, never a reason to skip.
    pub(crate) async fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        let mut server = Self { port, child: None };
        server.restart().await;
        server
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill)).
    pub(crate) async fn restart(&mut self) {
        let binary = std::env::var("SLUICE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let mut child = Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no", "--loglevel", "notice"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{binary}` ({e}): the fleet tests need a real redis-server. \
                     Install it (Debian: `apt-get install -y redis-server`; .ci/run does this) \
                     or point SLUICE_REDIS_SERVER at the binary"
                )
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(PATIENCE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Ready to accept connections") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "redis-server on port {} did not become ready", self.port);
        // Keep draining its log so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// The URL to give fleet mode.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    /// Sends a signal (`STOP` to hang the server, `CONT` to resume it).
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("running server");
        let status =
            std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}

/// How an upstream region answers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mode {
    /// 200 with a completion.
    Ok,
    /// 429 with `Retry-After` (seconds) to the listed replicas (all when empty), 200 to others.
    Throttle { retry_after_s: u64, only: Vec<String> },
    /// A shared rate limit: at most `per_window` calls per `window` (from all replicas
    /// together); the call over the limit and every call in the `retry_after_s` seconds after
    /// it get 429 with `Retry-After`, as a provider that means its Retry-After does. Every
    /// answer takes `latency`.
    RateLimit { per_window: usize, window: Duration, retry_after_s: u64, latency: Duration },
    /// Every call gets this status (e.g. 500), with an OpenAI-style error body.
    Status(u16),
}

#[derive(Default)]
struct UpstreamState {
    modes: HashMap<String, Mode>,
    /// (region, replica) -> chat calls received.
    calls: HashMap<(String, String), usize>,
    /// region -> 429s sent.
    throttled: HashMap<String, usize>,
    /// region -> when each chat call arrived (wall clock, as Redis's `TIME` on this host).
    arrivals: HashMap<String, Vec<SystemTime>>,
    /// region -> (window start, calls in it, blocked until), for `Mode::RateLimit`.
    windows: HashMap<String, (Instant, usize, Instant)>,
}

/// One loopback server playing every region for every replica: replica `r` reaches region
/// `g` at `http://ADDR/r/g/v1`.
pub(crate) struct Upstream {
    addr: SocketAddr,
    state: Arc<Mutex<UpstreamState>>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(UpstreamState::default()));
        let app = Router::new()
            .route("/{replica}/{region}/v1/chat/completions", post(chat))
            .route("/{replica}/{region}/v1/models", get(models))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    pub(crate) fn set(&self, region: &str, mode: Mode) {
        self.state.lock().modes.insert(region.to_owned(), mode);
    }

    /// Chat calls `replica` sent to `region`.
    pub(crate) fn calls(&self, region: &str, replica: &str) -> usize {
        self.state.lock().calls.get(&(region.to_owned(), replica.to_owned())).copied().unwrap_or(0)
    }

    /// When each chat call to `region` arrived, from any replica (wall clock).
    pub(crate) fn arrivals(&self, region: &str) -> Vec<SystemTime> {
        self.state.lock().arrivals.get(region).cloned().unwrap_or_default()
    }

    /// Chat calls `region` received from every replica.
    pub(crate) fn region_calls(&self, region: &str) -> usize {
        self.state.lock().calls.iter().filter(|((g, _), _)| g == region).map(|(_, n)| n).sum()
    }

    /// 429s `region` sent.
    pub(crate) fn throttled(&self, region: &str) -> usize {
        self.state.lock().throttled.get(region).copied().unwrap_or(0)
    }

    /// The regions as `replica` sees them, all at one place so that none is preferred by
    /// distance.
    pub(crate) fn regions(&self, replica: &str, ids: &[&str]) -> Vec<Region> {
        ids.iter()
            .map(|id| Region::new(*id, format!("http://{}/{replica}/{id}/v1", self.addr), GeoPoint::new(50.0, 8.0)))
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn chat(
    State(state): State<Arc<Mutex<UpstreamState>>>,
    Path((replica, region)): Path<(String, String)>,
) -> Response {
    let (throttle, latency) = {
        let mut s = state.lock();
        *s.calls.entry((region.clone(), replica.clone())).or_default() += 1;
        s.arrivals.entry(region.clone()).or_default().push(SystemTime::now());
        let (throttle, latency) = match s.modes.get(&region).cloned().unwrap_or(Mode::Ok) {
            Mode::Status(code) => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return (
                    status,
                    [("content-type", "application/json")],
                    r#"{"error":{"message":"upstream failed","type":"server_error","code":null}}"#,
                )
                    .into_response();
            }
            Mode::Ok => (None, Duration::ZERO),
            Mode::Throttle { retry_after_s, only } => {
                ((only.is_empty() || only.contains(&replica)).then_some(retry_after_s), Duration::ZERO)
            }
            Mode::RateLimit { per_window, window, retry_after_s, latency } => {
                let at = Instant::now();
                let entry = s.windows.entry(region.clone()).or_insert((at, 0, at));
                if at < entry.2 {
                    (Some(retry_after_s), latency)
                } else {
                    if at - entry.0 >= window {
                        (entry.0, entry.1) = (at, 0);
                    }
                    entry.1 += 1;
                    if entry.1 > per_window {
                        entry.2 = at + Duration::from_secs(retry_after_s);
                    }
                    ((entry.1 > per_window).then_some(retry_after_s), latency)
                }
            }
        };
        if throttle.is_some() {
            *s.throttled.entry(region.clone()).or_default() += 1;
        }
        (throttle, latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match throttle {
        Some(retry_after_s) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("content-type", "application/json"), ("retry-after", &retry_after_s.to_string())],
            r#"{"error":{"message":"slow down","type":"rate_limit","code":429}}"#,
        )
            .into_response(),
        None => (
            StatusCode::OK,
            [("content-type", "application/json")],
            serde_json::json!({
                "id": "chatcmpl-fleet", "object": "chat.completion", "created": 1, "model": "mock",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("hello from {region}")}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
            })
            .to_string(),
        )
            .into_response(),
    }
}

async fn models(Path((_replica, region)): Path<(String, String)>) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        serde_json::json!({"object": "list", "data": [{"id": "mock-1", "object": "model", "owned_by": region}]})
            .to_string(),
    )
        .into_response()
}

/// One replica: a client without active probing, and (optionally) fleet mode on it.
pub(crate) struct Replica {
    pub(crate) name: String,
    pub(crate) client: Client,
    pub(crate) fleet: Option<Fleet>,
}

impl Replica {
    pub(crate) fn new(name: &str, upstream: &Upstream, regions: &[&str], redis: Option<&RedisServer>) -> Self {
        Self::custom(name, upstream, regions, redis, |c| c, |f| f)
    }

    /// As [`new`](Self::new), with the client and fleet settings adjusted by `client` and `fleet`.
    pub(crate) fn custom(
        name: &str,
        upstream: &Upstream,
        regions: &[&str],
        redis: Option<&RedisServer>,
        client: impl FnOnce(ClientBuilder) -> ClientBuilder,
        fleet: impl FnOnce(FleetBuilder) -> FleetBuilder,
    ) -> Self {
        let client = client(Client::builder().regions(upstream.regions(name, regions)).active_probing(false).seed(7))
            .build()
            .expect("valid client");
        let fleet = redis.map(|redis| {
            let config = fleet(
                FleetBuilder::new(redis.url())
                    .replica_id(name)
                    .lease(Duration::from_millis(600))
                    .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(400)),
            )
            .build()
            .expect("valid fleet config");
            Fleet::start_with_budget(&config, &client.health(), client.retry_budget()).expect("fleet starts")
        });
        Self { name: name.to_owned(), client, fleet }
    }

    pub(crate) fn fleet(&self) -> &Fleet {
        self.fleet.as_ref().expect("fleet mode on")
    }

    /// One call preferring `region`; returns the region that served it.
    pub(crate) async fn call(&self, region: &str) -> String {
        self.try_call(region).await.unwrap_or_else(|e| panic!("the call fails: {e:?}"))
    }

    /// One call preferring `region`; the region that served it, or the error.
    pub(crate) async fn try_call(&self, region: &str) -> Result<String, sluice_client::Error> {
        let request = ChatCompletionRequest::new("mock", vec![ChatMessage::user("hi")]);
        let options = CallOptions::new().prefer_region(region);
        let response = self.client.chat_completions_with(request, &options).await?;
        Ok(response.meta.region.to_string())
    }
}

/// Waits (bounded) until every fleet is connected or disconnected.
pub(crate) async fn all_connected(replicas: &[&Replica], up: bool) {
    for r in replicas {
        let waited = tokio::time::timeout(PATIENCE, r.fleet().wait_connected(up)).await;
        assert!(
            waited.is_ok(),
            "{} did not become {} in {PATIENCE:?}",
            r.name,
            if up { "connected" } else { "disconnected" }
        );
    }
}

/// The `q` quantile of `samples` (sorted in place).
pub(crate) fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i.min(samples.len() - 1)]
}

/// `std::time::Instant` now (real time: these tests run against real servers).
pub(crate) fn now() -> Instant {
    Instant::now()
}
