//! `sluice_tower::Balance` over reqwest, one `tower::service_fn` per region, with locality
//! (`GeoNearest`) and failover, on loopback.
//!
//! Callers in Seoul are served by the Seoul region while it works. When it starts failing,
//! `FailoverLayer` retries each call at the next nearest region the call has not tried, and
//! once the balancer has ejected Seoul, calls go straight to Tokyo; Frankfurt, far away, is
//! not needed.
//!
//! Run with `cargo run -p sluice-tower --example reqwest_service_fn`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode};
use http_body_util::BodyExt;
use sluice_balancer::GeoNearest;
use sluice_region_model::{GeoPoint, Region, Snapshot};
use sluice_tower::{Balance, FailoverLayer, FailoverPolicy, Tried};
use tower::{Layer, Service, ServiceExt, buffer::Buffer, service_fn};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CALLS: usize = 80;
const SEOUL: GeoPoint = GeoPoint::new(37.56, 126.97);

/// Starts an axum region that answers 200 with its id, or 503 while `failing` is set.
async fn start(id: &'static str, location: GeoPoint, failing: Arc<AtomicBool>) -> Result<Region, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .fallback(move |State(failing): State<Arc<AtomicBool>>| async move {
            if failing.load(Ordering::Relaxed) {
                (StatusCode::SERVICE_UNAVAILABLE, "down")
            } else {
                (StatusCode::OK, id)
            }
        })
        .with_state(failing);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Region::new(id, format!("http://{addr}"), location))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let seoul_failing = Arc::new(AtomicBool::new(false));
    let regions = [
        start("ap-northeast-2", SEOUL, Arc::clone(&seoul_failing)).await?,
        start("ap-northeast-1", GeoPoint::new(35.68, 139.69), Arc::default()).await?,
        start("eu-central-1", GeoPoint::new(50.11, 8.68), Arc::default()).await?,
    ];
    let snapshot = Arc::new(Snapshot::new(regions)?);

    // reqwest as a tower service: convert the http::Request, send it to this region's
    // endpoint, and hand back an http::Response whose body streams from reqwest.
    let client = reqwest::Client::new();
    let services = snapshot.nodes().iter().map(|node| {
        let client = client.clone();
        let base = node.endpoint().clone();
        service_fn(move |mut request: http::Request<String>| {
            let client = client.clone();
            let mut url = base.clone();
            url.set_path(request.uri().path());
            async move {
                *request.uri_mut() = url.as_str().parse()?;
                let response = client.execute(reqwest::Request::try_from(request)?).await?;
                Ok::<_, BoxError>(http::Response::from(response))
            }
        })
    });
    let balance = Balance::builder().strategy(Box::new(GeoNearest::new())).build(Arc::clone(&snapshot), services)?;
    let mut service = FailoverLayer::new(FailoverPolicy::new()).layer(Buffer::new(balance, 64));

    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let mut retried = 0;
    for i in 0..CALLS {
        if i == 20 {
            println!("call {i}: Seoul starts answering 503");
            seoul_failing.store(true, Ordering::Relaxed);
        }
        let tried = Tried::new();
        let mut request = http::Request::builder().uri("/v1/chat/completions").body(String::from("{}"))?;
        request.extensions_mut().insert(SEOUL);
        request.extensions_mut().insert(tried.clone());
        let response = service.ready().await?.call(request).await?;
        assert!(response.status().is_success(), "call {i}: {} after {:?}", response.status(), tried.regions());
        let body = response.into_body().collect().await?.to_bytes();
        if tried.len() > 1 {
            retried += 1;
        }
        *served.entry(String::from_utf8(body.to_vec())?).or_default() += 1;
    }

    println!("served by region: {served:?}; calls that needed a second region: {retried}");
    assert_eq!(served.get("ap-northeast-2"), Some(&20), "Seoul, the nearest, served while it worked");
    assert_eq!(served.get("ap-northeast-1"), Some(&60), "then Tokyo, the next nearest");
    assert!(retried <= 5, "Seoul was ejected after a few failures");
    Ok(())
}
