//! Fleet mode's cost on the call path, and its propagation latency, against a real
//! `redis-server` started here on a free loopback port (install it first; `.ci/run` does).
//!
//! * `call_path/fleet_off` vs `call_path/fleet_on`: one `select` plus one `record(Success)`,
//!   the health work of every call, on a monitor without and with a connected fleet, in the
//!   same run. Target: no measurable change (≤ 5 %).
//! * Printed before the criterion groups: propagation p50/p99 of a cooldown from one replica
//!   to two others, and the Redis operations the call path caused at steady state.

use std::{
    hint::black_box,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group};
use sluice_fleet::{Fleet, FleetBuilder};
use sluice_health::{HealthEventKind, HealthMonitor, Outcome, OutlierConfig};
use sluice_region_model::{GeoPoint, NodeId, Region, Snapshot};

const NODES: usize = 16;

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut server = Server(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("the fleet bench needs redis-server on PATH (Debian: apt-get install redis-server)"),
        port,
    );
    // Wait (bounded) until it accepts connections.
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = server.0.kill();
    panic!("redis-server did not start on port {port}");
}

fn monitor(nodes: usize) -> HealthMonitor {
    let regions = (0..nodes)
        .map(|i| Region::new(format!("r{i}"), format!("http://127.0.0.1:9/r{i}/v1"), GeoPoint::new(0.0, 0.0)));
    let snapshot = Snapshot::builder().epoch(Instant::now()).build(regions).expect("valid");
    HealthMonitor::new(Arc::new(snapshot), OutlierConfig::default())
}

fn fleet(server: &Server, monitor: &HealthMonitor, id: &str, ns: &str) -> Fleet {
    let config = FleetBuilder::new(format!("redis://127.0.0.1:{}/0", server.1))
        .namespace(ns)
        .replica_id(id)
        .build()
        .expect("valid config");
    Fleet::start(&config, monitor).expect("starts")
}

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * q).round() as usize]
}

/// Propagation of cooldowns from replica 1 to replicas 2 and 3, and Redis ops caused by
/// 100 000 successful calls' `select` + `record`.
fn measure(rt: &tokio::runtime::Runtime, server: &Server) {
    rt.block_on(async {
        const TRIALS: usize = 500;
        let monitors: Vec<_> = (0..3).map(|_| monitor(TRIALS)).collect();
        let fleets: Vec<_> =
            monitors.iter().enumerate().map(|(i, m)| fleet(server, m, &format!("p{i}"), "bench-prop")).collect();
        for f in &fleets {
            tokio::time::timeout(Duration::from_secs(20), f.wait_connected(true)).await.expect("connected");
        }
        let mut rx: Vec<_> = monitors[1..].iter().map(HealthMonitor::subscribe).collect();
        let mut samples = Vec::with_capacity(TRIALS * 2);
        for i in 0..TRIALS {
            let node = NodeId::from_index(i as u32);
            let t0 = Instant::now();
            monitors[0].record(node, Outcome::RateLimited { retry_after: Some(Duration::from_secs(30)) }, t0);
            for rx in &mut rx {
                loop {
                    let e = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("arrives").expect("open");
                    if e.node == node && matches!(e.kind, HealthEventKind::CooldownStarted { .. }) {
                        samples.push(t0.elapsed());
                        break;
                    }
                }
            }
        }
        let (p50, p99, max) =
            (quantile(&mut samples, 0.5), quantile(&mut samples, 0.99), quantile(&mut samples, 1.0));
        println!("propagation over {} deliveries: p50 {p50:?}, p99 {p99:?}, max {max:?} (target p99 100 ms)", samples.len());

        let before = fleets[0].stats();
        let started = Instant::now();
        let m = &monitors[0];
        let mut out = Vec::with_capacity(TRIALS);
        for i in 0..100_000u64 {
            let now = Instant::now();
            m.select(now, |_| false, &mut out);
            m.record(NodeId::from_index((i % 7) as u32 + 400), Outcome::Success { latency: Duration::from_millis(800) }, now);
        }
        let window = started.elapsed();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after = fleets[0].stats();
        println!(
            "redis ops caused by 100000 calls' select+record: {} (per call {:.6}); background ops in the same {:?}: {} (leases, pings)",
            after.verdict_ops - before.verdict_ops,
            (after.verdict_ops - before.verdict_ops) as f64 / 100_000.0,
            window,
            after.background_ops - before.background_ops
        );
    });
}

fn call_path(c: &mut Criterion) {
    let server = redis_server();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    measure(&rt, &server);

    let off = monitor(NODES);
    let on = monitor(NODES);
    let _fleet = rt.block_on(async {
        let f = fleet(&server, &on, "bench", "bench-call");
        tokio::time::timeout(Duration::from_secs(20), f.wait_connected(true)).await.expect("connected");
        f
    });
    paired(&off, &on);
    let mut group = c.benchmark_group("call_path");
    for (name, m) in [("fleet_off", &off), ("fleet_on", &on)] {
        let mut out = Vec::with_capacity(NODES);
        let mut i = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                let now = Instant::now();
                m.select(now, |_| false, &mut out);
                i += 1;
                let node = NodeId::from_index((i % NODES as u64) as u32);
                m.record(black_box(node), Outcome::Success { latency: Duration::from_millis(800) }, now);
                black_box(out.len())
            });
        });
    }
    group.finish();
}

/// The same `select` + `record(Success)` loop on both monitors, in alternating blocks, so
/// that the load of a shared machine hits both alike; prints the ratio of the medians.
fn paired(off: &HealthMonitor, on: &HealthMonitor) {
    const BLOCK: u64 = 20_000;
    const ROUNDS: usize = 60;
    let block = |m: &HealthMonitor, out: &mut Vec<NodeId>| {
        let started = Instant::now();
        for i in 0..BLOCK {
            let now = Instant::now();
            m.select(now, |_| false, out);
            let node = NodeId::from_index((i % NODES as u64) as u32);
            m.record(black_box(node), Outcome::Success { latency: Duration::from_millis(800) }, now);
        }
        started.elapsed() / BLOCK as u32
    };
    let mut out = Vec::with_capacity(NODES);
    let (mut t_off, mut t_on) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for round in 0..ROUNDS {
        // Alternate which goes first, too.
        if round % 2 == 0 {
            t_off.push(block(off, &mut out));
            t_on.push(block(on, &mut out));
        } else {
            t_on.push(block(on, &mut out));
            t_off.push(block(off, &mut out));
        }
    }
    let (m_off, m_on) = (quantile(&mut t_off, 0.5), quantile(&mut t_on, 0.5));
    println!(
        "call path (select + record), paired medians over {ROUNDS} alternating blocks of {BLOCK}: \
         fleet off {m_off:?}, fleet on {m_on:?}, on/off = {:.3} (target <= 1.05)",
        m_on.as_secs_f64() / m_off.as_secs_f64()
    );
}

criterion_group!(benches, call_path);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
