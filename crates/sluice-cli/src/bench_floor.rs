//! `sluice bench-floor` (hidden): the bare forwarder that `bench-serve` measures beside
//! `sluice serve`, as the floor of what any axum + reqwest proxy costs on the machine at hand.
//!
//! It has no routing, health, metrics, logs, header policy or failover: it reads the call,
//! sends it to one upstream with the same HTTP client settings as `sluice serve` (rustls,
//! `TCP_NODELAY`, no redirects, a keep-alive pool), and answers with the upstream's status,
//! content type and body. The gap between it and `serve` is what Sluice's own work costs.

use std::{process::ExitCode, sync::Arc};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use clap::Args;

use crate::CliError;

/// Options of `sluice bench-floor`.
#[derive(Debug, Args)]
pub(crate) struct FloorArgs {
    /// Base URL of the one upstream, e.g. `http://127.0.0.1:4000/v1`.
    #[arg(long)]
    upstream: String,
    /// Worker threads; 1 is a current-thread runtime, as in `serve --threads 1`.
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
}

struct Floor {
    http: reqwest::Client,
    upstream: String,
}

/// Serves on 127.0.0.1 (a free port, printed as `listening on http://ADDR`) until killed.
pub(crate) async fn run(args: FloorArgs) -> Result<ExitCode, CliError> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .use_rustls_tls()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot build the HTTP client: {e}")))?;
    let floor = Arc::new(Floor { http, upstream: args.upstream.trim_end_matches('/').to_owned() });
    let app = Router::new().fallback(forward).with_state(floor);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on 127.0.0.1: {e}")))?;
    let addr = listener.local_addr().map_err(|e| CliError::Failed(format!("no local address: {e}")))?;
    println!("bench-floor listening on http://{addr}");
    axum::serve(listener, app).await.map_err(|e| CliError::Failed(format!("bench-floor stopped: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// Forwards `/v1/{rest}` to the upstream's `{rest}`, once.
async fn forward(
    State(floor): State<Arc<Floor>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rest = uri.path().strip_prefix("/v1").unwrap_or(uri.path());
    let mut request = floor.http.request(method, format!("{}{rest}", floor.upstream)).body(body);
    if let Some(v) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, v);
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    match answer.bytes().await {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            if let Some(v) = content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            response
        }
        Err(_) => (StatusCode::BAD_GATEWAY, [(header::CONNECTION, HeaderValue::from_static("close"))]).into_response(),
    }
}
