//! `sluice_tower::Balance` over hyper-util's legacy client, one client per region, on loopback,
//! with weighted round-robin.
//!
//! Three regions (Seoul, Tokyo, Virginia) are axum servers in this process. Partway through,
//! Seoul starts failing with 500s and Tokyo answers 429 with a 30 s Retry-After. Every call
//! goes through `FailoverLayer`, so callers never see those failures; the balancer ejects Seoul
//! and cools Tokyo down, and the summary shows where the calls went.
//!
//! Run with `cargo run -p sluice-tower --example hyper_util`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use sluice_balancer::WeightedRoundRobin;
use sluice_region_model::{GeoPoint, Region, Snapshot};
use sluice_tower::{Balance, FailoverLayer, FailoverPolicy, Tried};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, buffer::Buffer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CALLS: usize = 120;

/// A loopback region: 0 = healthy, 1 = failing (500), 2 = throttling (429, Retry-After: 30).
struct Upstream {
    mode: AtomicU8,
    hits: AtomicU64,
}

async fn answer(State(up): State<Arc<Upstream>>) -> axum::response::Response {
    up.hits.fetch_add(1, Ordering::Relaxed);
    match up.mode.load(Ordering::Relaxed) {
        0 => (StatusCode::OK, "hello from the model").into_response(),
        1 => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
        _ => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "30")], "slow down").into_response(),
    }
}

async fn start(id: &str, location: GeoPoint) -> Result<(Region, Arc<Upstream>), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let up = Arc::new(Upstream { mode: AtomicU8::new(0), hits: AtomicU64::new(0) });
    let app = Router::new().fallback(answer).with_state(Arc::clone(&up));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((Region::new(id, format!("http://{addr}"), location), up))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (seoul, seoul_up) = start("ap-northeast-2", GeoPoint::new(37.56, 126.97)).await?;
    let (tokyo, tokyo_up) = start("ap-northeast-1", GeoPoint::new(35.68, 139.69)).await?;
    let (virginia, _) = start("us-east-1", GeoPoint::new(38.9, -77.04)).await?;
    let snapshot = Arc::new(Snapshot::new([seoul, tokyo, virginia])?);

    // One hyper-util client per region; a small map puts the region's authority on the URI.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let services = snapshot.nodes().iter().map(|node| {
        let base: http::Uri = node.endpoint().as_str().parse().expect("validated by the snapshot");
        ServiceBuilder::new()
            .map_request(move |mut req: http::Request<Full<Bytes>>| {
                let mut parts = base.clone().into_parts();
                parts.path_and_query = req.uri().path_and_query().cloned();
                *req.uri_mut() = http::Uri::from_parts(parts).expect("absolute URI");
                req
            })
            .service(client.clone())
    });
    // Weighted round-robin spreads the calls, so every region shows up in the summary.
    let balance =
        Balance::builder().strategy(Box::new(WeightedRoundRobin::new())).build(Arc::clone(&snapshot), services)?;
    let health = balance.health().expect("built from a snapshot").clone();
    let mut service = FailoverLayer::new(FailoverPolicy::new()).layer(Buffer::new(balance, 64));

    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    let (mut seoul_before, mut tokyo_before) = (0, 0);
    for i in 0..CALLS {
        if i == 40 {
            seoul_before = seoul_up.hits.load(Ordering::Relaxed);
            tokyo_before = tokyo_up.hits.load(Ordering::Relaxed);
            println!("call {i}: Seoul starts failing, Tokyo starts answering 429 with Retry-After: 30");
            seoul_up.mode.store(1, Ordering::Relaxed);
            tokyo_up.mode.store(2, Ordering::Relaxed);
        }
        let tried = Tried::new();
        let mut request = http::Request::builder().uri("/v1/chat/completions").body(Full::new(Bytes::new()))?;
        request.extensions_mut().insert(tried.clone());
        request.extensions_mut().insert(GeoPoint::new(37.5, 127.0)); // a caller in Seoul
        match service.ready().await?.call(request).await {
            Ok(response) if response.status().is_success() => {
                response.into_body().collect().await?;
                let region = tried.last().map_or_else(String::new, |r| r.to_string());
                *served.entry(region).or_default() += 1;
            }
            Ok(response) => {
                println!("call {i}: {} after {:?}", response.status(), tried.regions());
                failed += 1;
            }
            Err(e) => {
                println!("call {i}: {e}");
                failed += 1;
            }
        }
    }

    let now = tokio::time::Instant::now().into_std();
    println!("\nserved by region: {served:?}");
    for node in snapshot.nodes() {
        let status = health.status(node.id(), now).expect("node of this snapshot");
        let state = match (status.ejected_until, status.cooldown_until) {
            (Some(until), _) => format!("ejected for {:?}", until.saturating_duration_since(now)),
            (_, Some(until)) => format!("cooling down for {:?}", until.saturating_duration_since(now)),
            _ => "eligible".to_owned(),
        };
        println!("{:16} {state}", node.region().id());
    }
    println!(
        "seoul saw {} calls, tokyo {}; failed calls seen by callers: {failed}",
        seoul_up.hits.load(Ordering::Relaxed),
        tokyo_up.hits.load(Ordering::Relaxed)
    );
    assert_eq!(failed, 0, "failover hid every upstream failure");
    assert_eq!(served.values().sum::<usize>(), CALLS);
    assert!(tokyo_up.hits.load(Ordering::Relaxed) <= tokyo_before + 1, "Tokyo was asked at most once after its 429");
    assert!(seoul_up.hits.load(Ordering::Relaxed) <= seoul_before + 5, "Seoul was ejected after at most 5 failures");
    Ok(())
}
