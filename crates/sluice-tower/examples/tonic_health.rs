//! `sluice_tower::Balance` over a tonic `Channel` per region, calling the standard gRPC health
//! service with the client code that `tonic-health` ships (no `.proto`, no `protoc`), picking
//! with least-connections.
//!
//! Three regions run a tonic server each on loopback; a fourth is configured but nothing
//! listens on its port, as when a region is down. A call that lands there fails with a
//! connection error; the example retries it at another region with a shared `Tried` extension
//! (tonic bodies cannot be cloned, so `FailoverLayer` does not apply), and the balancer
//! ejects the dead region after a few failures.
//!
//! Run with `cargo run -p sluice-tower --example tonic_health`.

use std::{collections::BTreeMap, sync::Arc};

use sluice_balancer::LeastConnections;
use sluice_region_model::{GeoPoint, Region, Snapshot};
use sluice_tower::{Balance, Tried};
use tonic::transport::{Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CALLS: usize = 60;
const ATTEMPTS: usize = 3;

/// Starts a gRPC server with the health service on 127.0.0.1 and returns its region.
async fn start(id: &str, location: GeoPoint) -> Result<Region, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    tokio::spawn(async move {
        // Keep the reporter alive as long as the server.
        let _reporter = reporter;
        Server::builder().add_service(health).serve_with_incoming(TcpIncoming::from(listener)).await
    });
    Ok(Region::new(id, format!("http://{addr}"), location))
}

/// A region whose port nothing listens on.
async fn dead(id: &str, location: GeoPoint) -> Result<Region, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(Region::new(id, format!("http://{addr}"), location))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let regions = [
        start("eu-central-1", GeoPoint::new(50.11, 8.68)).await?,
        dead("eu-west-1", GeoPoint::new(53.35, -6.26)).await?,
        start("us-east-1", GeoPoint::new(38.9, -77.04)).await?,
        start("ap-northeast-2", GeoPoint::new(37.56, 126.97)).await?,
    ];
    let snapshot = Arc::new(Snapshot::new(regions)?);

    // One lazily connecting channel per region: tonic's `Channel` is a tower service.
    let channels = snapshot
        .nodes()
        .iter()
        .map(|node| Ok(Endpoint::from_shared(node.endpoint().to_string())?.connect_lazy()))
        .collect::<Result<Vec<_>, BoxError>>()?;
    // Calls here run one at a time, so least-connections breaks its ties at random and every
    // region, the dead one included, gets its turn.
    let balance =
        Balance::builder().strategy(Box::new(LeastConnections::new())).build(Arc::clone(&snapshot), channels)?;
    let health = balance.health().expect("built from a snapshot").clone();
    let mut client = HealthClient::new(balance);

    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors_seen = 0;
    for i in 0..CALLS {
        // One `Tried` per logical call, shared by its attempts: a retry never goes back to a
        // region this call already tried.
        let tried = Tried::new();
        let mut answer = None;
        for _ in 0..ATTEMPTS {
            let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
            request.extensions_mut().insert(tried.clone());
            match client.check(request).await {
                Ok(response) => {
                    answer = Some(response.into_inner().status());
                    break;
                }
                Err(status) => {
                    errors_seen += 1;
                    println!("call {i}: {:?} failed: {}", tried.last(), status.message());
                }
            }
        }
        let status = answer.ok_or_else(|| format!("call {i} failed at {:?}", tried.regions()))?;
        assert_eq!(status, ServingStatus::Serving);
        *served.entry(tried.last().map(|r| r.to_string()).unwrap_or_default()).or_default() += 1;
    }

    let now = tokio::time::Instant::now().into_std();
    let dead_id = snapshot.find("eu-west-1").expect("configured");
    let dead_status = health.status(dead_id, now).expect("node of this snapshot");
    println!("\nserved by region: {served:?}");
    println!("attempts that failed and were retried elsewhere: {errors_seen}");
    println!("eu-west-1: ejected until {:?}", dead_status.ejected_until.map(|t| t.saturating_duration_since(now)));
    assert_eq!(served.values().sum::<usize>(), CALLS, "every call was answered");
    assert!(!served.contains_key("eu-west-1"));
    assert!(errors_seen <= 5, "the dead region was ejected after at most 5 failures");
    Ok(())
}
