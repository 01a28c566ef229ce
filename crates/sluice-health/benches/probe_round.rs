//! One probing round over 1,000 loopback nodes with `HttpProbe`, and the steady-state CPU
//! cost of probing them every second.
//!
//! The 1,000 nodes share four axum servers through distinct URL paths. The servers run on
//! their own runtime, whose threads are named `srv`, so that their CPU time can be told
//! apart from the prober's: CPU time is read per thread from `/proc/self/task/*/schedstat`
//! (nanoseconds on CPU; Linux only).
//!
//! Targets: a round completes within one probe timeout (1 s); steady-state probing of 1,000
//! nodes at a 1 s interval costs under 5 % of one core.

use std::{
    cell::RefCell,
    fs,
    hint::black_box,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, http::header, routing::get};
use criterion::{Criterion, criterion_group, criterion_main};
use sluice_health::{HealthMonitor, HttpProbe, OutlierConfig, Probe, ProbeConfig};
use sluice_region_model::{GeoPoint, HealthState, Region, Snapshot};
use tokio::{runtime::Runtime, task::JoinSet};

const NODES: usize = 1_000;
const SERVERS: usize = 4;
const MODELS: &str = r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","owned_by":"bench"}]}"#;

/// User and system CPU time of the prober-side threads, from `/proc/self/task/*/stat`
/// (clock ticks, usually 10 ms).
fn prober_user_sys() -> (Duration, Duration) {
    let tick = Duration::from_millis(10);
    let (mut user, mut sys) = (0u32, 0u32);
    let Ok(tasks) = fs::read_dir("/proc/self/task") else { return (Duration::ZERO, Duration::ZERO) };
    for task in tasks.flatten() {
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else { continue };
        // `pid (comm) state ...`: fields after the closing parenthesis; utime and stime are
        // fields 14 and 15.
        let Some((comm, rest)) = stat.split_once(") ") else { continue };
        if comm.contains("(srv") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        user += fields.get(11).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
        sys += fields.get(12).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    }
    (tick * user, tick * sys)
}

/// CPU time of this process's threads, split into (prober side, server side).
fn cpu_time() -> (Duration, Duration) {
    let (mut client, mut server) = (0u64, 0u64);
    let Ok(tasks) = fs::read_dir("/proc/self/task") else { return (Duration::ZERO, Duration::ZERO) };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns = fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
            .unwrap_or(0);
        if comm.starts_with("srv") { server += ns } else { client += ns }
    }
    (Duration::from_nanos(client), Duration::from_nanos(server))
}

fn start_servers(rt: &Runtime) -> Vec<SocketAddr> {
    (0..SERVERS)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let app = Router::new()
                .route("/{*rest}", get(|| async { ([(header::CONTENT_TYPE, "application/json")], MODELS) }));
            rt.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
            addr
        })
        .collect()
}

fn snapshot(addrs: &[SocketAddr]) -> Arc<Snapshot> {
    let regions = (0..NODES).map(|i| {
        let addr = addrs[i % addrs.len()];
        Region::new(format!("n{i}"), format!("http://{addr}/n{i}/v1"), GeoPoint::new(0.0, 0.0)).with_api_key("sk-bench")
    });
    let epoch = Instant::now();
    Arc::new(Snapshot::builder().epoch(epoch).build(regions).unwrap())
}

/// Probes every node concurrently, one task each (as the prober does); returns the
/// successes.
async fn round(probe: &Arc<HttpProbe>, snapshot: &Arc<Snapshot>) -> usize {
    let mut tasks = JoinSet::new();
    for id in snapshot.ids() {
        let (probe, snapshot, id) = (Arc::clone(probe), Arc::clone(snapshot), *id);
        tasks.spawn(async move { probe.probe(snapshot.node(id)).await.is_ok() });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += usize::from(r.unwrap());
    }
    ok
}

fn probe_round(c: &mut Criterion) {
    let server_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("srv").enable_all().build().unwrap();
    let addrs = start_servers(&server_rt);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let snapshot = snapshot(&addrs);
    let timeout = Duration::from_secs(1);

    // A cold round: 1,000 new connections.
    let probe = Arc::new(HttpProbe::new(timeout));
    let (c0, s0) = cpu_time();
    let t0 = Instant::now();
    let ok = rt.block_on(round(&probe, &snapshot));
    let wall = t0.elapsed();
    let (c1, s1) = cpu_time();
    assert_eq!(ok, NODES, "every probe must succeed");
    eprintln!("cold round, {NODES} nodes: wall {wall:?}, prober cpu {:?}, server cpu {:?}", c1 - c0, s1 - s0);

    // Warm rounds over kept-alive connections, as in steady state.
    let cpu = RefCell::new((Duration::ZERO, Duration::ZERO, 0u64));
    let mut g = c.benchmark_group("probe_round");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    g.bench_function("1000_loopback_nodes", |b| {
        b.iter_custom(|iters| {
            let (c0, s0) = cpu_time();
            let start = Instant::now();
            for _ in 0..iters {
                let ok = rt.block_on(round(&probe, &snapshot));
                assert_eq!(black_box(ok), NODES);
            }
            let wall = start.elapsed();
            let (c1, s1) = cpu_time();
            let mut acc = cpu.borrow_mut();
            acc.0 += c1 - c0;
            acc.1 += s1 - s0;
            acc.2 += iters;
            wall
        })
    });
    g.finish();
    let (client, server, rounds) = *cpu.borrow();
    if rounds > 0 {
        let per_round = client / rounds as u32;
        eprintln!(
            "warm round, {NODES} nodes: prober cpu {per_round:?}/round, server cpu {:?}/round over {rounds} rounds \
             => at a 1 s interval about {:.2} % of one core for probing",
            server / rounds as u32,
            per_round.as_secs_f64() * 100.0
        );
    }

    // Steady state with the real prober: default config (1 s interval), measured over 10 s.
    let monitor = HealthMonitor::new(Arc::clone(&snapshot), OutlierConfig::default());
    let probe: Arc<dyn Probe> = Arc::new(HttpProbe::new(timeout));
    let measured = Duration::from_secs(10);
    let (client, server, healthy) = rt.block_on(async {
        // BENCH_PROBE_MODE=sync (no jitter: all probes at once) or unaligned (no timer grid)
        // compares the schedule's effect; the default is the default config.
        let config = match std::env::var("BENCH_PROBE_MODE").as_deref() {
            Ok("sync") => ProbeConfig::builder().jitter(Duration::ZERO).initial_jitter(Duration::ZERO).build().unwrap(),
            Ok("unaligned") => ProbeConfig::builder().timer_granularity(Duration::ZERO).build().unwrap(),
            Ok(ms) if ms.parse::<u64>().is_ok() => {
                let grid = Duration::from_millis(ms.parse().unwrap());
                ProbeConfig::builder().timer_granularity(grid).build().unwrap()
            }
            _ => ProbeConfig::default(),
        };
        let prober = monitor.spawn_prober(probe, config);
        // Let the first (cold) round and its connections settle.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (c0, s0) = cpu_time();
        let (u0, k0) = prober_user_sys();
        tokio::time::sleep(measured).await;
        let (c1, s1) = cpu_time();
        let (u1, k1) = prober_user_sys();
        eprintln!(
            "steady state, prober threads: user {:.2} %, system {:.2} % of one core (10 ms ticks)",
            (u1 - u0).as_secs_f64() / measured.as_secs_f64() * 100.0,
            (k1 - k0).as_secs_f64() / measured.as_secs_f64() * 100.0
        );
        let healthy =
            monitor.snapshot().nodes().iter().filter(|n| n.metrics().health() == HealthState::Healthy).count();
        prober.shutdown().await;
        (c1 - c0, s1 - s0, healthy)
    });
    eprintln!(
        "steady state, spawn_prober over {NODES} nodes at 1 s for {measured:?}: prober cpu {client:?} \
         ({:.2} % of one core), server cpu {server:?}; {healthy} nodes healthy",
        client.as_secs_f64() / measured.as_secs_f64() * 100.0
    );
    assert_eq!(healthy, NODES);
}

criterion_group!(benches, probe_round);
criterion_main!(benches);
