//! OpenTelemetry export of `serve`'s spans over OTLP/HTTP (protobuf), configured by the
//! standard `OTEL_*` variables (feature `otel`).
//!
//! On when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (or
//! `OTEL_TRACES_EXPORTER=otlp`), off with `OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true`.
//! The exporter reads the endpoint, `OTEL_EXPORTER_OTLP_HEADERS` and the timeout; the SDK reads
//! `OTEL_SERVICE_NAME` (default `sluice`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`
//! and the `OTEL_BSP_*` batch settings.

use std::{fmt, time::Duration};

use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tokio::sync::oneshot;

/// The running export, to flush at shutdown.
#[derive(Debug)]
pub(crate) struct Otel {
    provider: SdkTracerProvider,
}

/// Whether the `OTEL_*` variables ask for trace export.
fn wanted() -> bool {
    let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty());
    if var("OTEL_SDK_DISABLED").as_deref() == Some("true") {
        return false;
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        Some("none") => false,
        Some("otlp") => true,
        _ => var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some(),
    }
}

/// Starts the export when the environment asks for it, returning the tracing layer to
/// install and the handle to flush; `Err` with a message when the settings are unusable.
pub(crate) fn start<S>() -> Result<Option<(impl tracing_subscriber::Layer<S>, Otel)>, String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if !wanted() {
        return Ok(None);
    }
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    if !matches!(protocol.trim(), "" | "http/protobuf") {
        return Err(format!("OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: this build exports http/protobuf only"));
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| "no async runtime for the exporter".to_owned())?;
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(TokioHttp::new(runtime)?)
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("sluice");
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("sluice"));
    Ok(Some((layer, Otel { provider })))
}

impl Otel {
    /// Exports the spans still buffered (bounded), then stops.
    pub(crate) async fn shutdown(self) {
        let provider = self.provider;
        // The flush waits on requests that run on this runtime: wait on another thread.
        let done = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(5))).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "OpenTelemetry: spans may be lost at shutdown");
        }
    }
}

/// The exporter's HTTP client: reqwest on the application's tokio runtime. The SDK's batch
/// processor exports from a thread of its own, which has no runtime; each request runs on
/// the application's, and the thread waits for its answer.
struct TokioHttp {
    runtime: tokio::runtime::Handle,
    http: reqwest::Client,
}

impl TokioHttp {
    fn new(runtime: tokio::runtime::Handle) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("OTLP exporter: cannot start an HTTP client: {e}"))?;
        Ok(Self { runtime, http })
    }
}

impl fmt::Debug for TokioHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokioHttp")
    }
}

#[async_trait::async_trait]
impl HttpClient for TokioHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (tx, rx) = oneshot::channel();
        let http = self.http.clone();
        self.runtime.spawn(async move {
            let result = async {
                let request = reqwest::Request::try_from(request)?;
                let answer = http.execute(request).await?;
                let mut response = Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    response = response.header(name, value);
                }
                let body = answer.bytes().await?;
                Ok::<_, HttpError>(response.body(body)?)
            }
            .await;
            let _ = tx.send(result);
        });
        rx.await.map_err(|_| HttpError::from("the runtime stopped before the export finished"))?
    }
}
