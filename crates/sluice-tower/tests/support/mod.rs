//! Loopback regions for the scenario tests: axum servers that answer, fail or throttle on
//! command, and an inner service per region over hyper-util's legacy client.

#![allow(dead_code, unreachable_pub)]

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use parking_lot::Mutex;
use sluice_region_model::{GeoPoint, Region};
use tower::Service;

/// What a loopback region answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 with the region id as body.
    Ok = 0,
    /// 500.
    Fail = 1,
    /// 429 with `retry-after: <secs>`.
    Throttle = 2,
    /// 400, a request no region can serve.
    BadRequest = 3,
}

/// One loopback region: its address and what it has seen.
#[derive(Debug)]
pub struct Backend {
    pub id: &'static str,
    pub addr: SocketAddr,
    mode: AtomicU8,
    retry_after_secs: AtomicU64,
    hits: AtomicU64,
}

impl Backend {
    /// Starts a server for region `id` on 127.0.0.1.
    pub async fn start(id: &'static str) -> Arc<Backend> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(Backend {
            id,
            addr,
            mode: AtomicU8::new(Mode::Ok as u8),
            retry_after_secs: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        });
        let app = Router::new().fallback(answer).with_state(Arc::clone(&backend));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        backend
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn throttle(&self, retry_after_secs: u64) {
        self.retry_after_secs.store(retry_after_secs, Ordering::SeqCst);
        self.set(Mode::Throttle);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn region(&self, lat: f64, lon: f64) -> Region {
        Region::new(self.id, format!("http://{}", self.addr), GeoPoint::new(lat, lon))
    }
}

async fn answer(State(backend): State<Arc<Backend>>) -> Response {
    backend.hits.fetch_add(1, Ordering::SeqCst);
    match backend.mode.load(Ordering::SeqCst) {
        0 => (StatusCode::OK, backend.id).into_response(),
        1 => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        3 => (StatusCode::BAD_REQUEST, "context length exceeded").into_response(),
        _ => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
            let secs = backend.retry_after_secs.load(Ordering::SeqCst).to_string();
            r.headers_mut().insert("retry-after", HeaderValue::from_str(&secs).unwrap());
            r
        }
    }
}

/// The request body every test uses.
pub type Body = Full<Bytes>;

/// A request for path `/`.
pub fn request() -> http::Request<Body> {
    http::Request::builder().uri("/v1/ping").body(Full::new(Bytes::new())).unwrap()
}

/// An inner service for one region: hyper-util's legacy client, with the region's scheme and
/// authority put on every request.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    authority: http::uri::Authority,
}

impl Upstream {
    pub fn new(region: &Region) -> Self {
        let uri: http::Uri = region.endpoint().parse().unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { client, authority: uri.authority().unwrap().clone() }
    }
}

impl Service<http::Request<Body>> for Upstream {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        *request.uri_mut() =
            http::Uri::builder().scheme("http").authority(self.authority.clone()).path_and_query(path).build().unwrap();
        Service::call(&mut self.client, request)
    }
}

/// Wraps a service so that a test can hold its readiness back.
#[derive(Clone, Debug)]
pub struct Gated<S> {
    inner: S,
    gate: Gate,
}

/// The switch of a [`Gated`] service.
#[derive(Clone, Debug, Default)]
pub struct Gate {
    closed: Arc<AtomicBool>,
    wakers: Arc<Mutex<Vec<Waker>>>,
}

impl Gate {
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        for waker in self.wakers.lock().drain(..) {
            waker.wake();
        }
    }
}

impl<S> Gated<S> {
    pub fn new(inner: S, gate: Gate) -> Self {
        Self { inner, gate }
    }
}

impl<S: Service<R>, R> Service<R> for Gated<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.gate.closed.load(Ordering::SeqCst) {
            self.gate.wakers.lock().push(cx.waker().clone());
            // Re-check after registering, so an `open` in between is not missed.
            if self.gate.closed.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.inner.call(request)
    }
}

/// Reads a response body to the end, as text.
pub async fn text<B>(response: http::Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A boxed future, for tests that keep many calls in flight.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
