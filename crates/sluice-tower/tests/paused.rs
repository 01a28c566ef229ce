//! Time-dependent behaviour under tokio's paused clock, with in-process services: cooldowns
//! that end, panic mode, streaming bodies, services made per region, and contract misuse.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use sluice_balancer::WeightedRoundRobin;
use sluice_region_model::{GeoPoint, HealthState, Region, Snapshot};
use sluice_tower::{Balance, Error, SluiceLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

fn snapshot(ids: &[&str]) -> Arc<Snapshot> {
    let regions = ids.iter().map(|id| Region::new(*id, format!("http://{id}.test"), GeoPoint::new(0.0, 0.0)));
    Arc::new(Snapshot::builder().epoch(tokio::time::Instant::now().into_std()).build(regions).unwrap())
}

type Reply = http::Response<Full<Bytes>>;

/// A region that counts its calls and answers with `status(call number)`.
fn region(
    hits: Arc<AtomicU64>,
    status: fn(u64) -> (u16, Option<&'static str>),
) -> impl Service<http::Request<()>, Response = Reply, Error = Infallible, Future: Send> + Clone {
    service_fn(move |_req: http::Request<()>| {
        let n = hits.fetch_add(1, Ordering::SeqCst);
        let (code, retry_after) = status(n);
        let mut response = http::Response::builder().status(code);
        if let Some(after) = retry_after {
            response = response.header("retry-after", after);
        }
        std::future::ready(Ok::<_, Infallible>(response.body(Full::new(Bytes::new())).unwrap()))
    })
}

async fn send<S>(balance: &mut S, n: usize)
where
    S: Service<http::Request<()>>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        balance.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_region_returns_when_its_retry_after_ends() {
    let snapshot = snapshot(&["a", "b"]);
    let a = Arc::new(AtomicU64::new(0));
    let b = Arc::new(AtomicU64::new(0));
    let services = vec![
        region(Arc::clone(&a), |n| if n == 0 { (429, Some("10")) } else { (200, None) }),
        region(Arc::clone(&b), |_| (200, None)),
    ];
    let mut balance = Balance::builder()
        .strategy(Box::new(WeightedRoundRobin::with_seed(1)))
        .build(Arc::clone(&snapshot), services)
        .unwrap();
    send(&mut balance, 40).await;
    assert_eq!(a.load(Ordering::SeqCst), 1, "a cools down after its 429");
    tokio::time::advance(Duration::from_secs(9)).await;
    send(&mut balance, 20).await;
    assert_eq!(a.load(Ordering::SeqCst), 1, "still cooling at 9 s of 10");
    tokio::time::advance(Duration::from_secs(2)).await;
    send(&mut balance, 40).await;
    assert!(a.load(Ordering::SeqCst) > 1, "a takes calls again once the cooldown is over");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn when_every_region_is_unhealthy_the_least_bad_still_serve() {
    let snapshot = snapshot(&["a", "b"]);
    let hits = Arc::new(AtomicU64::new(0));
    let services = vec![region(Arc::clone(&hits), |_| (200, None)), region(Arc::clone(&hits), |_| (200, None))];
    let mut balance = Balance::builder().build(Arc::clone(&snapshot), services).unwrap();
    for node in snapshot.nodes() {
        node.metrics().set_health(HealthState::Unhealthy);
    }
    send(&mut balance, 10).await;
    assert_eq!(hits.load(Ordering::SeqCst), 10, "panic mode serves rather than failing closed");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn calling_before_ready_is_an_error_not_a_panic() {
    let snapshot = snapshot(&["a"]);
    let hits = Arc::new(AtomicU64::new(0));
    let mut balance = Balance::builder().build(snapshot, vec![region(Arc::clone(&hits), |_| (200, None))]).unwrap();
    let err = balance.call(http::Request::new(())).await.unwrap_err();
    assert!(matches!(err, Error::NotReady), "{err:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_streaming_body_counts_as_in_flight_until_it_ends() {
    let snapshot = snapshot(&["a"]);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(4);
    let rx = Arc::new(parking_lot::Mutex::new(Some(rx)));
    let service = service_fn(move |_req: http::Request<()>| {
        let mut rx = rx.lock().take().unwrap();
        let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        std::future::ready(Ok::<_, Infallible>(http::Response::new(body)))
    });
    let mut balance = Balance::builder().build(Arc::clone(&snapshot), vec![service]).unwrap();
    let metrics = Arc::clone(snapshot.nodes()[0].metrics());
    let response = balance.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
    assert_eq!(metrics.in_flight(), 1, "the head arrived, the body has not");
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"hello")))).await.unwrap();
    let mut body = response.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "hello");
    assert_eq!(metrics.in_flight(), 1, "mid-stream");
    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(metrics.in_flight(), 0, "released at the end of the body");
    assert_eq!(metrics.successes(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_layer_makes_a_service_per_region_and_retires_one_that_cannot_be_made() {
    let snapshot = snapshot(&["a", "broken", "c"]);
    let hits = Arc::new(AtomicU64::new(0));
    let made = {
        let hits = Arc::clone(&hits);
        service_fn(move |region: Region| {
            let hits = Arc::clone(&hits);
            async move {
                if region.id() == "broken" {
                    return Err::<_, std::io::Error>(std::io::Error::other("cannot connect"));
                }
                Ok(region_service(hits))
            }
        })
    };
    let mut balance = SluiceLayer::new(Arc::clone(&snapshot)).layer(made);
    send(&mut balance, 20).await;
    assert_eq!(hits.load(Ordering::SeqCst), 20);
    let broken = snapshot.find("broken").unwrap();
    assert_eq!(snapshot.node(broken).metrics().failures(), 1, "the failed make is recorded");
    assert_eq!(snapshot.node(broken).metrics().successes(), 0);
}

fn region_service(
    hits: Arc<AtomicU64>,
) -> impl Service<http::Request<()>, Response = Reply, Error = Infallible, Future: Send> + Clone + Send {
    region(hits, |_| (200, None))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_4xx_is_returned_and_not_held_against_the_region() {
    let snapshot = snapshot(&["a"]);
    let hits = Arc::new(AtomicU64::new(0));
    let mut balance =
        Balance::builder().build(Arc::clone(&snapshot), vec![region(Arc::clone(&hits), |_| (400, None))]).unwrap();
    for _ in 0..20 {
        let response = balance.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
        assert_eq!(response.status(), 400);
        let _ = response.into_body().collect().await;
    }
    let metrics = snapshot.nodes()[0].metrics();
    assert_eq!(metrics.failures(), 0, "a bad request says nothing about the region");
    assert!(metrics.is_eligible(tokio::time::Instant::now().into_std()));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_caller_location_comes_from_a_request_extension() {
    let regions = [
        Region::new("seoul", "http://seoul.test", GeoPoint::new(37.56, 126.97)),
        Region::new("frankfurt", "http://frankfurt.test", GeoPoint::new(50.11, 8.68)),
    ];
    let snapshot = Arc::new(Snapshot::builder().epoch(tokio::time::Instant::now().into_std()).build(regions).unwrap());
    let seoul = Arc::new(AtomicU64::new(0));
    let frankfurt = Arc::new(AtomicU64::new(0));
    let services = vec![region(Arc::clone(&seoul), |_| (200, None)), region(Arc::clone(&frankfurt), |_| (200, None))];
    let mut balance = Balance::builder()
        .strategy(Box::new(sluice_balancer::GeoNearest::new()))
        .caller(GeoPoint::new(48.85, 2.35)) // Paris, for requests that say nothing
        .build(snapshot, services)
        .unwrap();
    let call = |point: Option<GeoPoint>| {
        let mut request = http::Request::new(());
        if let Some(point) = point {
            request.extensions_mut().insert(point);
        }
        request
    };
    for _ in 0..10 {
        balance.ready().await.unwrap().call(call(Some(GeoPoint::new(35.68, 139.69)))).await.unwrap(); // Tokyo
    }
    assert_eq!((seoul.load(Ordering::SeqCst), frankfurt.load(Ordering::SeqCst)), (10, 0));
    for _ in 0..10 {
        balance.ready().await.unwrap().call(call(None)).await.unwrap();
    }
    assert_eq!((seoul.load(Ordering::SeqCst), frankfurt.load(Ordering::SeqCst)), (10, 10), "the builder's default");
}

/// A discovery change keeps the passive health of the regions that stay: a failure streak
/// that began before another region joined goes on counting, so region `a` is ejected after
/// four failures in a row, not four more.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_membership_change_keeps_the_failure_streaks_of_regions_that_stay() {
    use sluice_health::OutlierConfig;
    use tower::discover::Change;

    let at = |id: &str| Region::new(id, format!("http://{id}.test"), GeoPoint::new(0.0, 0.0));
    let a = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<Change<String, _>, Infallible>>();
    let failing = region(Arc::clone(&a), |_| (500, None));
    let fine = || region(Arc::new(AtomicU64::new(0)), |_| (200, None));
    tx.send(Ok(Change::Insert("a".into(), sluice_tower::Regional::new(at("a"), failing)))).unwrap();
    tx.send(Ok(Change::Insert("b".into(), sluice_tower::Regional::new(at("b"), fine())))).unwrap();
    let discover = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let outlier =
        OutlierConfig::builder().consecutive_failures(4).failure_rate_min_requests(1_000_000).build().unwrap();
    let mut balance = Balance::builder()
        .strategy(Box::new(WeightedRoundRobin::with_seed(1)))
        .outlier(outlier)
        .discover(discover)
        .unwrap();
    // Round-robin over a and b until a has failed twice.
    for _ in 0..40 {
        if a.load(Ordering::SeqCst) == 2 {
            break;
        }
        send(&mut balance, 1).await;
    }
    assert_eq!(a.load(Ordering::SeqCst), 2);
    tx.send(Ok(Change::Insert("c".into(), sluice_tower::Regional::new(at("c"), fine())))).unwrap();
    send(&mut balance, 60).await;
    assert_eq!(balance.snapshot().unwrap().len(), 3, "c joined");
    assert_eq!(a.load(Ordering::SeqCst), 4, "a is ejected after its fourth failure in a row, streak kept");
}
