//! Chaos: 2,000 calls (8 at a time, 30 % streamed) against four loopback regions whose faults
//! move every second, with the default failover policy (rescue on, no hedging).
//!
//! At every tick one region carries one fault, in turn: kill (the port closes and open
//! connections die), accept and never answer, 429 with Retry-After, 503 with Retry-After, reset
//! mid-stream, stall mid-stream, +400 ms. The other three regions serve normally, so at least
//! one region is always healthy. Probing is ten times faster than by default (interval 100 ms,
//! timeout 300 ms, the default hysteresis) and the timeouts are short (attempt 5 s, first
//! chunk 2 s, idle 1 s, total 8 s) to keep the test's wall time bounded.
//!
//! On a failed run the report names the health transitions seen and, for a call generated
//! twice, the timeline of its attempts.
//!
//! Asserted on counts, never on timings (apart from the generous "no call outlives its deadline"
//! bound):
//! * every failure is an explicit error, and every stream that ends cleanly is complete;
//! * streams cut after their first content by a dying region fail explicitly and are counted
//!   apart; at least 99.9 % of the other calls succeed;
//! * no non-streaming call was generated twice (the mock counts generations per request id);
//! * upstream attempts per call stay at or below 1.2.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures_util::{StreamExt, stream};
use parking_lot::Mutex;
use sluice_client::{ChatCompletionRequest, ChatMessage, Client, ErrorKind, ProbeConfig, Timeouts};
use sluice_health::HealthEventKind;
use sluice_region_model::{GeoPoint, Region};
use tokio::{net::TcpSocket, task::JoinHandle};

const CALLS: usize = 2000;
const CONCURRENCY: usize = 8;
const REGIONS: usize = 4;
const TOTAL: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Fault {
    None,
    Kill,
    Hang,
    Throttle,
    Unavailable,
    ResetMidStream,
    StallMidStream,
    Slow,
}

const FAULTS: [Fault; 7] = [
    Fault::Kill,
    Fault::Hang,
    Fault::Throttle,
    Fault::Unavailable,
    Fault::ResetMidStream,
    Fault::StallMidStream,
    Fault::Slow,
];

impl Fault {
    fn from_u8(v: u8) -> Self {
        [
            Self::None,
            Self::Kill,
            Self::Hang,
            Self::Throttle,
            Self::Unavailable,
            Self::ResetMidStream,
            Self::StallMidStream,
            Self::Slow,
        ][usize::from(v)]
    }
}

/// The scripted fault of `region` at `tick`: one faulty region per tick, faults in turn.
fn fault_at(region: usize, tick: usize) -> Fault {
    if tick % REGIONS == region { FAULTS[tick % FAULTS.len()] } else { Fault::None }
}

#[derive(Debug, Default)]
struct Chaos {
    fault: AtomicU8,
    chat_hits: AtomicUsize,
    /// Completed generations per request id.
    generations: Mutex<HashMap<String, u32>>,
    /// What happened to each request, for the report of a failed run: (call, event, fault, when).
    timeline: Mutex<Vec<(String, &'static str, Fault, Instant)>>,
}

impl Chaos {
    fn fault(&self) -> Fault {
        Fault::from_u8(self.fault.load(Ordering::SeqCst))
    }
}

struct ChaosRegion {
    addr: SocketAddr,
    state: Arc<Chaos>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl ChaosRegion {
    async fn start(id: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Chaos::default());
        let region = Self { addr, state, server: Mutex::new(None) };
        region.serve(listener, id);
        region
    }

    fn serve(&self, listener: tokio::net::TcpListener, id: &'static str) {
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .with_state((id, Arc::clone(&self.state)));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        *self.server.lock() = Some(task);
    }

    /// Sets the fault; a kill closes the port, and the end of a kill opens it again.
    async fn set(&self, id: &'static str, fault: Fault) {
        let before = self.state.fault();
        self.state.fault.store(fault as u8, Ordering::SeqCst);
        if fault == Fault::Kill && before != Fault::Kill {
            if let Some(t) = self.server.lock().take() {
                t.abort();
            }
        } else if fault != Fault::Kill && before == Fault::Kill {
            // The old listener may take a moment to be released: bounded retries.
            for _ in 0..50 {
                let socket = TcpSocket::new_v4().unwrap();
                socket.set_reuseaddr(true).unwrap();
                if socket.bind(self.addr).is_ok()
                    && let Ok(listener) = socket.listen(1024)
                {
                    self.serve(listener, id);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("could not reopen {}", self.addr);
        }
    }
}

impl Drop for ChaosRegion {
    fn drop(&mut self) {
        if let Some(t) = self.server.lock().take() {
            t.abort();
        }
    }
}

type AppState = (&'static str, Arc<Chaos>);

/// A response whose body fails at once: the connection is aborted.
fn abort() -> Response {
    Response::new(Body::from_stream(stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("killed"))
    })))
}

fn status(code: u16) -> Response {
    let body = serde_json::json!({"error": {"message": format!("chaos {code}"), "type": "chaos", "code": code}});
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json"), ("retry-after", "1")],
        body.to_string(),
    )
        .into_response()
}

fn chunk(text: &str) -> Bytes {
    let v = serde_json::json!({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "chaos",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}],
    });
    Bytes::from(format!("data: {v}\n\n"))
}

async fn models(State((id, state)): State<AppState>) -> Response {
    match state.fault() {
        Fault::Kill => abort(),
        Fault::Hang => std::future::pending().await,
        Fault::Throttle => status(429),
        Fault::Unavailable => status(503),
        _ => (
            [("content-type", "application/json")],
            serde_json::json!({"object": "list", "data": [{"id": "chaos", "object": "model", "owned_by": id}]})
                .to_string(),
        )
            .into_response(),
    }
}

async fn chat(State((id, state)): State<AppState>, body: Bytes) -> Response {
    state.chat_hits.fetch_add(1, Ordering::SeqCst);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let call = v["user"].as_str().unwrap_or_default().to_owned();
    let streaming = v["stream"].as_bool().unwrap_or(false);
    let fault = state.fault();
    state.timeline.lock().push((call.clone(), "arrived", fault, Instant::now()));
    match fault {
        Fault::Kill => return abort(),
        Fault::Hang => return std::future::pending().await,
        Fault::Throttle => return status(429),
        Fault::Unavailable => return status(503),
        Fault::Slow => tokio::time::sleep(Duration::from_millis(400)).await,
        _ => {}
    }
    // Model latency.
    tokio::time::sleep(Duration::from_millis(20)).await;
    if state.fault() == Fault::Kill {
        // The region died while generating.
        return abort();
    }
    if !streaming {
        state.timeline.lock().push((call.clone(), "generated", state.fault(), Instant::now()));
        *state.generations.lock().entry(call).or_default() += 1;
        let answer = serde_json::json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "chaos",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("from {id}")}, "finish_reason": "stop"}],
        });
        return ([("content-type", "application/json")], answer.to_string()).into_response();
    }
    let state2 = Arc::clone(&state);
    let chunks = stream::iter(["a ", "b ", "c "].into_iter().enumerate()).then(move |(i, text)| {
        let state = Arc::clone(&state2);
        async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            match (i, fault, state.fault()) {
                (_, _, Fault::Kill) => Err(std::io::Error::other("killed")),
                (2, Fault::ResetMidStream, _) => Err(std::io::Error::other("reset")),
                (2, Fault::StallMidStream, _) => std::future::pending().await,
                _ => Ok(chunk(text)),
            }
        }
    });
    let done = stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"data: [DONE]\n\n")) });
    let body = chunks.chain(done);
    Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(body)).unwrap()
}

/// How one call ended.
#[derive(Debug)]
enum Ended {
    /// Served; for a plain call, how (attempts and their failures).
    Ok(Option<String>),
    /// A stream cut after its first content: explicit, counted apart.
    CutMidStream,
    Failed(String),
}

async fn call(client: Client, i: usize) -> (Ended, Duration) {
    let started = Instant::now();
    let mut request = ChatCompletionRequest::new("chaos", vec![ChatMessage::user("hi")]);
    request.extra.insert("user".into(), format!("call-{i}").into());
    let ended = if i % 10 < 3 {
        match client.chat_completions_stream(request).await {
            Ok(mut stream) => {
                let mut text = String::new();
                let mut ended = None;
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(chunk) => text.push_str(chunk.text().unwrap_or_default()),
                        Err(e) if matches!(e.kind(), ErrorKind::StreamInterrupted { .. }) && !text.is_empty() => {
                            ended = Some(Ended::CutMidStream);
                            break;
                        }
                        Err(e) => {
                            ended = Some(Ended::Failed(format!("mid-stream {e:?}")));
                            break;
                        }
                    }
                }
                match ended {
                    Some(e) => e,
                    // A stream that ends cleanly must be complete: nothing is truncated silently.
                    None if text == "a b c " => Ended::Ok(None),
                    None => Ended::Failed(format!("stream ended cleanly but incomplete: {text:?}")),
                }
            }
            Err(e) => Ended::Failed(format!("{e:?}")),
        }
    } else {
        match client.chat_completions(request).await {
            Ok(resp) if resp.body.text().is_some_and(|t| t.starts_with("from ")) => {
                Ended::Ok(Some(format!("{:?}", resp.meta)))
            }
            Ok(resp) => Ended::Failed(format!("odd answer {:?}", resp.body)),
            Err(e) => Ended::Failed(format!("{e:?}")),
        }
    };
    (ended, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_calls_through_moving_faults() {
    const IDS: [&str; REGIONS] = ["r0", "r1", "r2", "r3"];
    let mut regions = Vec::new();
    for id in IDS {
        regions.push(ChaosRegion::start(id).await);
    }
    let regions = Arc::new(regions);
    let client = Client::builder()
        .api_key("sk-chaos")
        .regions(
            regions
                .iter()
                .zip(IDS)
                .enumerate()
                .map(|(i, (r, id))| Region::new(id, format!("http://{}/v1", r.addr), GeoPoint::new(i as f64, 0.0))),
        )
        .probe_config(
            ProbeConfig::builder()
                .interval(Duration::from_millis(100))
                .jitter(Duration::from_millis(20))
                .initial_jitter(Duration::from_millis(20))
                .unhealthy_interval(Duration::from_millis(100))
                .timeout(Duration::from_millis(300))
                // Two silent probes in a row mark a region down, as by default: one probe
                // stalled by a loaded machine is not an outage.
                .fall(2)
                .rise(1)
                .build()
                .unwrap(),
        )
        .timeouts(
            Timeouts::default()
                .attempt(Duration::from_secs(5))
                .first_chunk(Duration::from_secs(2))
                .idle(Duration::from_secs(1))
                .total(TOTAL),
        )
        .seed(11)
        .build()
        .unwrap();

    // Health transitions during the run, for the report.
    let events: Arc<Mutex<HashMap<&'static str, usize>>> = Arc::default();
    let listener = {
        let mut rx = client.health().subscribe();
        let counts = Arc::clone(&events);
        tokio::spawn(async move {
            loop {
                let kind = match rx.recv().await {
                    Ok(e) => match e.kind {
                        HealthEventKind::BecameUnhealthy { silent: true, .. } => "down (silent)",
                        HealthEventKind::BecameUnhealthy { .. } => "down (answered)",
                        HealthEventKind::Ejected { .. } => "ejected",
                        HealthEventKind::CooldownStarted { .. } => "cooldown",
                        _ => continue,
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                *counts.lock().entry(kind).or_default() += 1;
            }
        })
    };

    // Faults move every second until the calls are done (bounded: at most 120 ticks).
    let stop = Arc::new(AtomicBool::new(false));
    let mover = {
        let (regions, stop) = (Arc::clone(&regions), Arc::clone(&stop));
        tokio::spawn(async move {
            for tick in 0..120 {
                for (i, r) in regions.iter().enumerate() {
                    r.set(IDS[i], fault_at(i, tick)).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                if stop.load(Ordering::SeqCst) {
                    return tick + 1;
                }
            }
            120
        })
    };

    let begun = Instant::now();
    let results: Vec<(Ended, Duration)> = tokio::time::timeout(
        Duration::from_secs(110),
        stream::iter(0..CALLS).map(|i| call(client.clone(), i)).buffered(CONCURRENCY).collect(),
    )
    .await
    .expect("2,000 calls finish well within their bound");
    stop.store(true, Ordering::SeqCst);
    let ticks = mover.await.unwrap();

    let cut = results.iter().filter(|(e, _)| matches!(e, Ended::CutMidStream)).count();
    let failed: Vec<&String> =
        results.iter().filter_map(|(e, _)| if let Ended::Failed(m) = e { Some(m) } else { None }).collect();
    let others = CALLS - cut;
    let succeeded = others - failed.len();
    let attempts: usize = regions.iter().map(|r| r.state.chat_hits.load(Ordering::SeqCst)).sum();
    // Generations per request id, over every region.
    let generated: HashMap<String, u32> = regions.iter().fold(HashMap::new(), |mut m, r| {
        for (k, v) in r.state.generations.lock().iter() {
            *m.entry(k.clone()).or_default() += v;
        }
        m
    });
    let twice = generated.values().filter(|n| **n > 1).count();
    // On a failed run: the timeline of (at most three) calls generated twice.
    for (call, _) in generated.iter().filter(|(_, n)| **n > 1).take(3) {
        eprintln!("generated twice: {call}");
        for (r, id) in regions.iter().zip(IDS) {
            for (c, event, fault, at) in r.state.timeline.lock().iter() {
                if c == call {
                    eprintln!("  {id} {event} under {fault:?} at {:?}", at.duration_since(begun));
                }
            }
        }
        let i: usize = call.trim_start_matches("call-").parse().unwrap_or_default();
        match results.get(i) {
            Some((Ended::Ok(Some(meta)), _)) => eprintln!("  served: {meta}"),
            other => eprintln!("  caller saw {other:?}"),
        }
    }
    let slowest = results.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let rescued = results.iter().filter(|(e, _)| matches!(e, Ended::Ok(Some(m)) if m.contains("rescues: 1"))).count();
    listener.abort();
    eprintln!("chaos: health events {:?}; {rescued} plain calls rescued", events.lock());
    eprintln!(
        "chaos: {CALLS} calls over {ticks} fault ticks: {succeeded}/{others} succeeded, {cut} streams cut mid-answer, \
         {} failed, {attempts} upstream attempts ({:.3} per call), {twice} generated twice, slowest {slowest:?}",
        failed.len(),
        attempts as f64 / CALLS as f64,
    );
    for m in failed.iter().take(5) {
        eprintln!("  failure: {m}");
    }
    // Every failure is an explicit error: `Failed` carries one, and clean ends were complete.
    assert!(failed.iter().all(|m| !m.starts_with("stream ended cleanly")), "{failed:?}");
    assert!(succeeded * 1000 >= others * 999, "{succeeded}/{others} succeeded: {failed:?}");
    assert_eq!(twice, 0, "no non-streaming call may be generated twice");
    assert!(attempts * 10 <= CALLS * 12, "{attempts} upstream attempts for {CALLS} calls");
    // No call outlives its deadline (with a generous allowance for a loaded machine).
    assert!(slowest <= TOTAL + Duration::from_secs(5), "slowest call took {slowest:?}");
    assert!(ticks >= 2, "the faults moved while calls ran");
}
