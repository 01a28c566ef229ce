//! Scenario tests against real loopback regions: axum servers that fail and throttle as
//! providers do, one hyper-util client per region, and the balancer in between.

mod support;

use std::{future::Future, sync::Arc, time::Duration};

use futures_util::{StreamExt, stream::FuturesUnordered};
use sluice_balancer::{StrategyKind, WeightedRoundRobin};
use sluice_health::HealthMonitor;
use sluice_region_model::{NodeId, Snapshot};
use sluice_tower::{Balance, Error, FailoverLayer, FailoverPolicy, Regional, Tried};
use support::{Backend, Gate, Gated, Mode, Upstream, request, text};
use tokio::time::timeout;
use tower::{Layer, Service, ServiceExt, buffer::Buffer, discover::Change};

/// Generous bound for anything that should take milliseconds; only a hang trips it.
const PATIENCE: Duration = Duration::from_secs(20);

async fn regions(ids: &[&'static str]) -> (Vec<Arc<Backend>>, Arc<Snapshot>) {
    let mut backends = Vec::new();
    for id in ids {
        backends.push(Backend::start(id).await);
    }
    let regions: Vec<_> = backends.iter().enumerate().map(|(i, b)| b.region(10.0 * i as f64, 0.0)).collect();
    (backends, Arc::new(Snapshot::new(regions).unwrap()))
}

fn upstreams(snapshot: &Snapshot) -> Vec<Upstream> {
    snapshot.nodes().iter().map(|n| Upstream::new(n.region())).collect()
}

fn node(snapshot: &Snapshot, id: &str) -> NodeId {
    snapshot.find(id).unwrap()
}

#[tokio::test]
async fn a_region_failing_mid_run_is_skipped_and_callers_see_no_failure() {
    let (backends, snapshot) = regions(&["a", "b", "c"]).await;
    let balance = Balance::builder()
        .strategy(Box::new(WeightedRoundRobin::with_seed(7)))
        .seed(7)
        .build(Arc::clone(&snapshot), upstreams(&snapshot))
        .unwrap();
    let monitor: HealthMonitor = balance.health().unwrap().clone();
    let mut service = FailoverLayer::new(FailoverPolicy::new()).layer(Buffer::new(balance, 64));

    let mut served = Vec::new();
    for i in 0..130 {
        if i == 30 {
            backends[1].set(Mode::Fail);
        }
        let tried = Tried::new();
        let mut req = request();
        req.extensions_mut().insert(tried.clone());
        let response = timeout(PATIENCE, service.ready().await.unwrap().call(req)).await.unwrap().unwrap();
        assert_eq!(response.status(), 200, "request {i} failed for the caller");
        let body = text(response).await;
        assert_eq!(Some(body.as_str()), tried.last().as_deref(), "Tried names the region that answered");
        served.push(body);
    }
    let b_before = served[..30].iter().filter(|r| *r == "b").count() as u64;
    let b_failed_hits = backends[1].hits() - b_before;
    assert!(b_before > 0, "b served before it broke");
    assert!(b_failed_hits >= 1, "the failure was exercised");
    assert!(b_failed_hits <= 5, "b took {b_failed_hits} calls after breaking; ejection should stop it at 5");
    assert!(served[30..].iter().all(|r| r != "b"), "a 500 was never returned as a success");
    let status = monitor.status(node(&snapshot, "b"), tokio::time::Instant::now().into_std()).unwrap();
    assert!(status.ejected_until.is_some(), "b is ejected: {status:?}");
    assert_eq!(backends[0].hits() + backends[2].hits() + b_before, 130, "no call was sent twice");
}

#[tokio::test]
async fn retry_after_cools_a_region_down_and_the_call_fails_over() {
    let (backends, snapshot) = regions(&["a", "b", "c"]).await;
    backends[0].throttle(30);
    let balance = Balance::builder()
        .strategy(Box::new(WeightedRoundRobin::with_seed(1)))
        .build(Arc::clone(&snapshot), upstreams(&snapshot))
        .unwrap();
    let monitor = balance.health().unwrap().clone();
    let mut service = FailoverLayer::new(FailoverPolicy::new()).layer(Buffer::new(balance, 64));
    for i in 0..60 {
        let response = timeout(PATIENCE, service.ready().await.unwrap().call(request())).await.unwrap().unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        assert_ne!(text(response).await, "a");
    }
    assert_eq!(backends[0].hits(), 1, "a was asked once, then left alone for its 30 s Retry-After");
    assert_eq!(backends[1].hits() + backends[2].hits(), 60);
    let now = tokio::time::Instant::now().into_std();
    let status = monitor.status(node(&snapshot, "a"), now).unwrap();
    // `status` reports only a cooldown that is still running.
    assert!(status.cooldown_until.is_some(), "a is still cooling down: {status:?}");
}

#[tokio::test]
async fn failover_never_retries_a_4xx() {
    let (backends, snapshot) = regions(&["a", "b", "c"]).await;
    for b in &backends {
        b.set(Mode::BadRequest);
    }
    let balance = Balance::builder().build(Arc::clone(&snapshot), upstreams(&snapshot)).unwrap();
    let mut service = FailoverLayer::new(FailoverPolicy::new()).layer(Buffer::new(balance, 64));
    for i in 0..10 {
        let tried = Tried::new();
        let mut req = request();
        req.extensions_mut().insert(tried.clone());
        let response = timeout(PATIENCE, service.ready().await.unwrap().call(req)).await.unwrap().unwrap();
        assert_eq!(response.status(), 400, "request {i}");
        assert_eq!(tried.len(), 1, "a 400 is returned as is, not sent to another region");
    }
    let hits: u64 = backends.iter().map(|b| b.hits()).sum();
    assert_eq!(hits, 10, "one upstream call per request");
}

#[tokio::test]
async fn without_failover_a_4xx_and_a_429_reach_the_caller_once() {
    let (backends, snapshot) = regions(&["a"]).await;
    backends[0].throttle(5);
    let mut balance = Balance::builder().build(Arc::clone(&snapshot), upstreams(&snapshot)).unwrap();
    let response = balance.ready().await.unwrap().call(request()).await.unwrap();
    assert_eq!(response.status(), 429);
    // The only region is cooling down: the balancer fails fast instead of sending or hanging.
    balance.ready().await.unwrap();
    let err = balance.call(request()).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { retry_at: Some(_) }), "{err:?}");
    assert_eq!(backends[0].hits(), 1);
}

#[tokio::test]
async fn a_region_whose_service_is_not_ready_is_skipped_not_awaited() {
    let (backends, snapshot) = regions(&["a", "b", "c"]).await;
    let gates: Vec<Gate> = (0..3).map(|_| Gate::default()).collect();
    let services = upstreams(&snapshot).into_iter().zip(&gates).map(|(u, g)| Gated::new(u, g.clone()));
    let mut balance = Balance::builder()
        .strategy(StrategyKind::LeastConnections.build())
        .build(Arc::clone(&snapshot), services)
        .unwrap();
    gates[0].close();
    for i in 0..40 {
        let response = timeout(PATIENCE, async { balance.ready().await.unwrap().call(request()).await.unwrap() })
            .await
            .unwrap_or_else(|_| panic!("request {i} waited on the gated region"));
        assert_eq!(response.status(), 200);
    }
    assert_eq!(backends[0].hits(), 0, "the region that was not ready got nothing");
    assert_eq!(backends[1].hits() + backends[2].hits(), 40);

    // Every region held back: the balancer is not ready, and becomes ready when one opens.
    gates[1].close();
    gates[2].close();
    // A service keeps the readiness it reported until it is called (the tower contract), so
    // whichever of b and c still holds one takes one more call before the gates hold both.
    let mut extra = 0;
    loop {
        let mut ready = std::pin::pin!(balance.ready());
        let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(ready.as_mut().poll(cx))).await;
        match polled {
            std::task::Poll::Ready(balance) => {
                let response = balance.unwrap().call(request()).await.unwrap();
                assert_ne!(text(response).await, "a");
                extra += 1;
                assert!(extra <= 2, "b and c hold at most one readiness each");
            }
            std::task::Poll::Pending => break,
        }
    }
    let ready = std::pin::pin!(balance.ready());
    gates[0].open();
    let balance = timeout(PATIENCE, ready).await.expect("opening a gate wakes the balancer").unwrap();
    let response = balance.call(request()).await.unwrap();
    assert_eq!(text(response).await, "a");
}

#[tokio::test]
async fn discovery_inserts_and_removes_regions_under_load_without_losing_a_request() {
    let backends =
        [Backend::start("a").await, Backend::start("b").await, Backend::start("c").await, Backend::start("d").await];
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Change<String, Regional<Upstream>>, std::io::Error>>();
    let insert = |b: &Backend| {
        let region = b.region(0.0, 0.0);
        let upstream = Upstream::new(&region);
        Ok(Change::Insert(b.id.to_owned(), Regional::new(region, upstream)))
    };
    tx.send(insert(&backends[0])).unwrap();
    tx.send(insert(&backends[1])).unwrap();
    let discover = tokio_stream_from(rx);
    let mut balance = Balance::builder().strategy(StrategyKind::LeastConnections.build()).discover(discover).unwrap();

    const TOTAL: usize = 600;
    const IN_FLIGHT: usize = 16;
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0;
    let mut answered = 0;
    let mut b_metrics = None;
    while answered < TOTAL {
        match sent {
            100 => tx.send(insert(&backends[2])).unwrap(),
            250 => tx.send(Ok(Change::Remove("a".to_owned()))).unwrap(),
            400 => {
                tx.send(insert(&backends[3])).unwrap();
                tx.send(Ok(Change::Remove("b".to_owned()))).unwrap();
            }
            _ => {}
        }
        if sent == 10 {
            let snapshot = balance.snapshot().unwrap();
            b_metrics = Some(Arc::clone(snapshot.node(snapshot.find("b").unwrap()).metrics()));
        }
        if sent < TOTAL && inflight.len() < IN_FLIGHT {
            let call = timeout(PATIENCE, balance.ready()).await.expect("balancer stuck").unwrap().call(request());
            inflight.push(async move {
                let response = call.await.expect("a request was lost");
                assert_eq!(response.status(), 200);
                text(response).await
            });
            sent += 1;
            continue;
        }
        timeout(PATIENCE, inflight.next()).await.expect("a request hung").unwrap();
        answered += 1;
        if sent == 300 {
            // b stays across the first two changes: it keeps its metrics object.
            let snapshot = balance.snapshot().unwrap();
            let now_b = snapshot.node(snapshot.find("b").unwrap()).metrics();
            assert!(Arc::ptr_eq(now_b, b_metrics.as_ref().unwrap()), "b kept its metrics across snapshots");
        }
    }
    let hits: Vec<u64> = backends.iter().map(|b| b.hits()).collect();
    assert_eq!(hits.iter().sum::<u64>(), TOTAL as u64, "every request reached exactly one region: {hits:?}");
    assert!(hits[2] > 0 && hits[3] > 0, "inserted regions took traffic: {hits:?}");
    let snapshot = balance.snapshot().unwrap();
    let ids: Vec<&str> = snapshot.nodes().iter().map(|n| n.region().id()).collect();
    assert_eq!(ids, ["c", "d"]);

    // Removed regions get nothing more.
    let before = (backends[0].hits(), backends[1].hits());
    for _ in 0..30 {
        let response = balance.ready().await.unwrap().call(request()).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!((backends[0].hits(), backends[1].hits()), before);
}

/// A `Stream` over an unbounded receiver, so that it can serve as a `Discover`.
fn tokio_stream_from<T>(mut rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
