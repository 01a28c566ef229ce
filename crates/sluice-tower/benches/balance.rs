//! Per-request cost of `sluice_tower::Balance` against tower's own `p2c::Balance` over
//! `PeakEwma` and over `PendingRequests`, in the same run, at 5, 50 and 500 endpoints.
//!
//! Every balancer wraps the same ready no-op services, and one iteration is one request end
//! to end: `poll_ready`, `call`, resolving the response future, dropping the response.
//! The sluice balancer does everything it does in production on that path: eligibility, the
//! default strategy with the caller's location from a request extension, an in-flight guard
//! held until the body ends, and an outcome record into health. Every request carries the
//! same `GeoPoint` extension, so building requests costs them all the same. `sluice-geo-nearest`
//! is the same balancer with the locality strategy, which reads that location.

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    hint::black_box,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group};
use http_body_util::Empty;
use sluice_balancer::{GeoNearest, test_util::snapshot_spread};
use sluice_region_model::GeoPoint;
use sluice_tower::Balance;
use tower::{
    Service,
    balance::p2c,
    discover::ServiceList,
    load::{CompleteOnResponse, PeakEwma, PendingRequests},
};

const SIZES: [usize; 3] = [5, 50, 500];
const SEOUL: GeoPoint = GeoPoint::new(37.56, 126.97);

type Request = http::Request<()>;
type Response = http::Response<Empty<Bytes>>;

/// A service that is always ready and answers at once.
#[derive(Clone, Copy, Debug)]
struct Noop;

impl Service<Request> for Noop {
    type Response = Response;
    type Error = Infallible;
    type Future = Ready<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request) -> Self::Future {
        ready(Ok(http::Response::new(Empty::new())))
    }
}

fn request() -> Request {
    let mut request = http::Request::new(());
    request.extensions_mut().insert(SEOUL);
    request
}

/// One request through `service`, polled by hand with a no-op waker.
fn once<S: Service<Request>>(service: &mut S, cx: &mut Context<'_>) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    match service.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        other => panic!("balancer not ready: {:?}", other.map(|r| r.map(drop))),
    }
    let mut future = pin!(service.call(request()));
    match future.as_mut().poll(cx) {
        Poll::Ready(Ok(response)) => response,
        Poll::Ready(Err(e)) => panic!("request failed: {e:?}"),
        Poll::Pending => panic!("no-op service pending"),
    }
}

/// The three balancers over `n` no-op services.
struct Contenders {
    sluice: Balance<Noop>,
    geo: Balance<Noop>,
    ewma: p2c::Balance<ServiceList<Vec<PeakEwma<Noop>>>, Request>,
    pending: p2c::Balance<ServiceList<Vec<PendingRequests<Noop>>>, Request>,
}

fn contenders(n: usize) -> Contenders {
    let snapshot = Arc::new(snapshot_spread(n));
    let sluice = Balance::builder().seed(1).build(Arc::clone(&snapshot), vec![Noop; n]).unwrap();
    let geo = Balance::builder().strategy(Box::new(GeoNearest::new())).seed(1).build(snapshot, vec![Noop; n]).unwrap();
    let ewma = (0..n)
        .map(|_| PeakEwma::new(Noop, Duration::from_millis(30), 10e9, CompleteOnResponse::default()))
        .collect::<Vec<_>>();
    let pending = (0..n).map(|_| PendingRequests::new(Noop, CompleteOnResponse::default())).collect::<Vec<_>>();
    Contenders {
        sluice,
        geo,
        ewma: p2c::Balance::new(ServiceList::new(ewma)),
        pending: p2c::Balance::new(ServiceList::new(pending)),
    }
}

fn balance(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance");
    let mut cx = Context::from_waker(Waker::noop());
    for n in SIZES {
        let Contenders { mut sluice, mut geo, mut ewma, mut pending } = contenders(n);
        group.bench_with_input(BenchmarkId::new("sluice-default", n), &n, |b, _| {
            b.iter(|| black_box(once(&mut sluice, &mut cx)));
        });
        group.bench_with_input(BenchmarkId::new("sluice-geo-nearest", n), &n, |b, _| {
            b.iter(|| black_box(once(&mut geo, &mut cx)));
        });
        group.bench_with_input(BenchmarkId::new("tower-p2c-peak-ewma", n), &n, |b, _| {
            b.iter(|| black_box(once(&mut ewma, &mut cx)));
        });
        group.bench_with_input(BenchmarkId::new("tower-p2c-pending-requests", n), &n, |b, _| {
            b.iter(|| black_box(once(&mut pending, &mut cx)));
        });
    }
    group.finish();
}

/// Rounds of the interleaved comparison, and requests per balancer per round.
const ROUNDS: usize = 41;
const BATCH: u32 = 20_000;

/// The same comparison with the three balancers interleaved in short batches, so that a
/// shared, loaded machine slows all three alike; prints the median of the per-round ratios.
/// Criterion measures one benchmark after another, seconds apart, which on a busy machine
/// mixes the load's swings into the ratios.
fn interleaved() {
    let mut cx = Context::from_waker(Waker::noop());
    println!("\ninterleaved: median over {ROUNDS} rounds of {BATCH} requests each, ns per request");
    println!(
        "{:>5}  {:>8}  {:>8}  {:>10}  {:>8}  {:>15}  {:>15}  {:>15}",
        "n", "default", "geo", "peak-ewma", "pending", "default/pending", "geo/pending", "default/ewma"
    );
    for n in SIZES {
        let Contenders { mut sluice, mut geo, mut ewma, mut pending } = contenders(n);
        let time = |f: &mut dyn FnMut()| {
            let start = std::time::Instant::now();
            for _ in 0..BATCH {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(BATCH)
        };
        let mut samples: [Vec<f64>; 4] = Default::default();
        let mut ratios: [Vec<f64>; 3] = Default::default();
        for round in 0..ROUNDS {
            // Rotate the order so that none always runs first.
            let mut t = [0.0; 4];
            for k in 0..4 {
                let which = (round + k) % 4;
                t[which] = match which {
                    0 => time(&mut || drop(black_box(once(&mut sluice, &mut cx)))),
                    1 => time(&mut || drop(black_box(once(&mut geo, &mut cx)))),
                    2 => time(&mut || drop(black_box(once(&mut ewma, &mut cx)))),
                    _ => time(&mut || drop(black_box(once(&mut pending, &mut cx)))),
                };
            }
            for (v, x) in samples.iter_mut().zip(t) {
                v.push(x);
            }
            ratios[0].push(t[0] / t[3]);
            ratios[1].push(t[1] / t[3]);
            ratios[2].push(t[0] / t[2]);
        }
        let [a, b, c, d] = samples.each_mut().map(|v| median(v));
        let [r0, r1, r2] = ratios.each_mut().map(|v| median(v));
        println!("{n:>5}  {a:>8.1}  {b:>8.1}  {c:>10.1}  {d:>8.1}  {r0:>15.3}  {r1:>15.3}  {r2:>15.3}");
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = balance
}

fn main() {
    benches();
    // `cargo test --benches` runs this binary with `--bench` absent; keep that quick.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--profile-time") {
        interleaved();
    }
    Criterion::default().configure_from_args().final_summary();
}
