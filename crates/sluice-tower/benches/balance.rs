//! Per-request cost of `sluice_tower::Balance` against tower's own `p2c::Balance` over
//! `PeakEwma` and over `PendingRequests`, in the same run, at 5, 50 and 500 endpoints.
//!
//! Every balancer wraps the same ready no-op services, and one iteration is one request end
//! to end: `poll_ready`, `call`, resolving the response future, dropping the response.
//! The sluice balancer does everything it does in production on that path: eligibility, the
//! default strategy with the caller's location from a request extension, an in-flight guard
//! held until the body ends, and an outcome record into health. Every request carries the
//! same `GeoPoint` extension for all three, so building requests costs them the same.

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
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http_body_util::Empty;
use sluice_balancer::test_util::snapshot_spread;
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

fn balance(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance");
    let mut cx = Context::from_waker(Waker::noop());
    for n in SIZES {
        let snapshot = Arc::new(snapshot_spread(n));
        let mut sluice = Balance::builder().seed(1).build(Arc::clone(&snapshot), vec![Noop; n]).unwrap();
        group.bench_with_input(BenchmarkId::new("sluice-default", n), &n, |b, _| {
            b.iter(|| black_box(once(&mut sluice, &mut cx)));
        });

        let ewma = (0..n)
            .map(|_| PeakEwma::new(Noop, Duration::from_millis(30), 10e9, CompleteOnResponse::default()))
            .collect::<Vec<_>>();
        let mut tower_ewma = p2c::Balance::new(ServiceList::new(ewma));
        group.bench_with_input(BenchmarkId::new("tower-p2c-peak-ewma", n), &n, |b, _| {
            b.iter(|| black_box(once(&mut tower_ewma, &mut cx)));
        });

        let pending = (0..n).map(|_| PendingRequests::new(Noop, CompleteOnResponse::default())).collect::<Vec<_>>();
        let mut tower_pending = p2c::Balance::new(ServiceList::new(pending));
        group.bench_with_input(BenchmarkId::new("tower-p2c-pending-requests", n), &n, |b, _| {
            b.iter(|| black_box(once(&mut tower_pending, &mut cx)));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = balance
}
criterion_main!(benches);
