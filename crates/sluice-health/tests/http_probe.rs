//! `HttpProbe` against a real loopback server. Only 127.0.0.1 is ever contacted.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sluice_health::{HttpProbe, Probe, ProbeError};
use sluice_region_model::{GeoPoint, Region, Snapshot};

const MODELS: &str = r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","owned_by":"test"}]}"#;

fn json(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

async fn server() -> SocketAddr {
    let app = Router::new()
        .route("/ok/v1/models", get(|| async { json(StatusCode::OK, MODELS) }))
        .route(
            "/keyed/v1/models",
            get(|headers: HeaderMap| async move {
                match bearer(&headers) {
                    Some("sk-region") => json(StatusCode::OK, MODELS),
                    Some("sk-default") => json(StatusCode::OK, r#"{"data":[]}"#),
                    _ => json(StatusCode::UNAUTHORIZED, r#"{"error":"bad key"}"#),
                }
            }),
        )
        .route("/forbidden/v1/models", get(|| async { json(StatusCode::FORBIDDEN, "{}") }))
        .route("/broken/v1/models", get(|| async { json(StatusCode::INTERNAL_SERVER_ERROR, "{}") }))
        .route("/html/v1/models", get(|| async { (StatusCode::OK, "<html>maintenance</html>") }))
        .route("/nodata/v1/models", get(|| async { json(StatusCode::OK, r#"{"object":"list"}"#) }))
        .route(
            "/slow/v1/models",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                json(StatusCode::OK, MODELS)
            }),
        )
        .route(
            "/redirect/v1/models",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/ok/v1/models")]).into_response() }),
        )
        .route(
            "/query/v1/models",
            get(|uri: Uri| async move {
                if uri.query() == Some("api-version=2024-10-21") {
                    json(StatusCode::OK, MODELS)
                } else {
                    json(StatusCode::BAD_REQUEST, "{}")
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn region(id: &str, endpoint: String) -> Region {
    Region::new(id, endpoint, GeoPoint::new(0.0, 0.0))
}

async fn probe_path(probe: &HttpProbe, addr: SocketAddr, path: &str) -> Result<Duration, ProbeError> {
    let snapshot = Snapshot::new([region("n", format!("http://{addr}{path}"))]).unwrap();
    probe.probe(&snapshot.nodes()[0]).await
}

/// Generous timeout where timing is not under test.
fn probe() -> HttpProbe {
    HttpProbe::new(Duration::from_secs(10))
}

#[tokio::test]
async fn a_models_list_is_a_success_with_latency() {
    let addr = server().await;
    let latency = probe_path(&probe(), addr, "/ok/v1").await.unwrap();
    assert!(latency > Duration::ZERO && latency < Duration::from_secs(10));
    // A trailing slash in the endpoint makes no difference.
    probe_path(&probe(), addr, "/ok/v1/").await.unwrap();
    // The query string of the endpoint is kept (Azure's api-version).
    probe_path(&probe(), addr, "/query/v1?api-version=2024-10-21").await.unwrap();
}

#[tokio::test]
async fn the_regions_key_wins_over_the_default_key() {
    let addr = server().await;
    let probe = HttpProbe::builder().timeout(Duration::from_secs(10)).default_api_key("sk-default").build().unwrap();
    let endpoint = format!("http://{addr}/keyed/v1");
    let snapshot = Snapshot::new([
        region("own", endpoint.clone()).with_api_key("sk-region"),
        region("fallback", endpoint.clone()),
        region("wrong", endpoint).with_api_key("sk-wrong"),
    ])
    .unwrap();
    let nodes = snapshot.nodes();
    probe.probe(&nodes[0]).await.unwrap();
    probe.probe(&nodes[1]).await.unwrap();
    let err = probe.probe(&nodes[2]).await.unwrap_err();
    assert!(err.is_credentials(), "{err:?}");
    // Without any key the server refuses as well.
    let err = self::probe().probe(&nodes[1]).await.unwrap_err();
    assert!(matches!(err, ProbeError::Credentials { status: 401 }), "{err:?}");
}

#[tokio::test]
async fn statuses_are_classified() {
    let addr = server().await;
    let p = probe();
    let err = probe_path(&p, addr, "/keyed/v1").await.unwrap_err();
    assert!(matches!(err, ProbeError::Credentials { status: 401 }), "{err:?}");
    assert_eq!(err.to_string(), "credentials rejected with http status 401");
    let err = probe_path(&p, addr, "/forbidden/v1").await.unwrap_err();
    assert!(matches!(err, ProbeError::Credentials { status: 403 }), "{err:?}");
    let err = probe_path(&p, addr, "/broken/v1").await.unwrap_err();
    assert!(matches!(err, ProbeError::Status { status: 500 }), "{err:?}");
    assert!(!err.is_credentials());
    // Redirects are not followed.
    let err = probe_path(&p, addr, "/redirect/v1").await.unwrap_err();
    assert!(matches!(err, ProbeError::Status { status: 302 }), "{err:?}");
    let err = probe_path(&p, addr, "/missing/v1").await.unwrap_err();
    assert!(matches!(err, ProbeError::Status { status: 404 }), "{err:?}");
}

#[tokio::test]
async fn a_body_that_is_not_a_models_list_fails() {
    let addr = server().await;
    let err = probe_path(&probe(), addr, "/html/v1").await.unwrap_err();
    assert!(matches!(err, ProbeError::InvalidBody { reason: "not json", source: Some(_) }), "{err:?}");
    assert_eq!(err.to_string(), "response body is not a models list: not json");
    let err = probe_path(&probe(), addr, "/nodata/v1").await.unwrap_err();
    assert!(matches!(err, ProbeError::InvalidBody { reason: "no `data` array", .. }), "{err:?}");
}

#[tokio::test]
async fn a_reply_slower_than_the_timeout_is_a_timeout() {
    let addr = server().await;
    let p = HttpProbe::new(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = probe_path(&p, addr, "/slow/v1").await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    // Bind, note the port, and close it again: nothing listens there now.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let err = probe_path(&probe(), addr, "/v1").await.unwrap_err();
    assert!(matches!(err, ProbeError::Connect { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn works_as_a_trait_object_and_never_shows_the_key() {
    let probe: Arc<dyn Probe> =
        Arc::new(HttpProbe::builder().default_api_key("sk-live-abcdef").user_agent("t").build().unwrap());
    let dbg = format!("{probe:?}");
    assert!(!dbg.contains("sk-live"), "{dbg}");
    let addr = server().await;
    let snapshot = Snapshot::new([region("n", format!("http://{addr}/ok/v1"))]).unwrap();
    probe.probe(&snapshot.nodes()[0]).await.unwrap();
}
