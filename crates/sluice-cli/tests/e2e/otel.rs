//! `serve` built with `otel` exports its spans to an OTLP/HTTP receiver started here.

use std::sync::Arc;

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, KeyValue, any_value::Value as Any},
    trace::v1::Span,
};
use parking_lot::Mutex;
use prost::Message;

use crate::support::{FAST_PROBES, Serve, chat_body, eventually, http, mocks, temp_dir, write_config};

/// Spans received, with their service name.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(received): State<Received>, body: Bytes| async move {
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return (StatusCode::BAD_REQUEST, Vec::new());
                };
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .as_ref()
                        .and_then(|r| attribute(&r.attributes, "service.name"))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            received.lock().push((service.clone(), span));
                        }
                    }
                }
                (StatusCode::OK, ExportTraceServiceResponse::default().encode_to_vec())
            }),
        )
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value {
        AnyValue { value: Some(Any::StringValue(s)) } => Some(s.clone()),
        AnyValue { value: Some(Any::IntValue(i)) } => Some(i.to_string()),
        AnyValue { value: Some(Any::BoolValue(b)) } => Some(b.to_string()),
        AnyValue { value: Some(Any::DoubleValue(d)) } => Some(d.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn call_and_attempt_spans_reach_an_otlp_receiver_with_their_attributes() {
    let (endpoint, received) = receiver().await;
    let m = mocks(&[("ap-northeast-2", "Seoul"), ("ap-northeast-1", "Tokyo")]).await;
    // Seoul refuses calls: each call fails over to Tokyo, so it has two attempts.
    m[0].set_rate_limited(Some(std::time::Duration::from_secs(1)));
    let dir = temp_dir("serve-otel");
    let config = write_config(&dir, &[&m[0], &m[1]], FAST_PROBES);
    let serve = Serve::start(
        &config,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "sluice-e2e"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            // Probe-round spans are at debug level.
            ("RUST_LOG", "info,sluice_health::prober=debug"),
        ],
    )
    .await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = http()
        .post(serve.url("/v1/chat/completions"))
        .header("x-sluice-region", "ap-northeast-2")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-attempts"], "2");
    let upstream = m[1].last_traceparent().expect("the upstream got a traceparent");

    let spans = |name: &str| -> Vec<(String, Span)> {
        received.lock().iter().filter(|(_, s)| s.name == name).cloned().collect()
    };
    eventually("the call and its two attempt spans at the receiver", || async {
        (spans("sluice.call").len() == 1 && spans("sluice.attempt").len() == 2).then_some(())
    })
    .await;
    let (service, call) = spans("sluice.call").remove(0);
    assert_eq!(service, "sluice-e2e");
    assert_eq!(hex(&call.trace_id), trace_id, "the call joined the caller's trace");
    assert_eq!(hex(&call.parent_span_id), "00f067aa0ba902b7", "under the caller's span");
    assert_eq!(attribute(&call.attributes, "model").as_deref(), Some("gpt-4o-mini"));
    assert_eq!(attribute(&call.attributes, "region").as_deref(), Some("ap-northeast-1"));
    assert_eq!(attribute(&call.attributes, "attempts").as_deref(), Some("2"));
    assert!(attribute(&call.attributes, "outcome").is_some(), "{:?}", call.attributes);

    let attempts = spans("sluice.attempt");
    let regions: Vec<Option<String>> = attempts.iter().map(|(_, s)| attribute(&s.attributes, "region")).collect();
    assert!(
        regions.contains(&Some("ap-northeast-2".to_owned())) && regions.contains(&Some("ap-northeast-1".to_owned()))
    );
    for (_, attempt) in &attempts {
        assert_eq!(attempt.trace_id, call.trace_id);
        assert_eq!(attempt.parent_span_id, call.span_id, "an attempt is a child of its call");
        assert!(attribute(&attempt.attributes, "outcome").is_some(), "{:?}", attempt.attributes);
    }
    // What Tokyo saw names Tokyo's attempt span as its parent.
    let tokyo = attempts
        .iter()
        .find(|(_, s)| attribute(&s.attributes, "region").as_deref() == Some("ap-northeast-1"))
        .map(|(_, s)| hex(&s.span_id))
        .unwrap();
    assert_eq!(upstream, format!("00-{trace_id}-{tokyo}-01"));
    // Probe rounds have spans of their own, with the node and the outcome.
    eventually("probe spans at the receiver", || async { (!spans("sluice.probe").is_empty()).then_some(()) }).await;
    for (_, probe) in spans("sluice.probe") {
        assert!(attribute(&probe.attributes, "node").is_some(), "{:?}", probe.attributes);
        let outcome = attribute(&probe.attributes, "outcome");
        assert!(matches!(outcome.as_deref(), Some("ok" | "failed")), "{:?}", probe.attributes);
    }
    serve.terminate().await;
}
