//! Failover against three loopback regions, with no key and no network.
//!
//! Seoul's port is closed, Tokyo answers 429 with Retry-After, Singapore works. The client
//! prefers Seoul (nearest to the caller), fails over, and puts Tokyo in cooldown.
//!
//! Run: `cargo run -p sluice-client --example failover`

use std::time::Duration;

use axum::{
    Json, Router,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use sluice_client::{CallOptions, ChatCompletionRequest, ChatMessage, Client, GeoPoint, Region, StrategyKind};
use tokio::net::TcpListener;

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}/v1")
}

async fn ok() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "demo",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from Singapore"}, "finish_reason": "stop"}]
    }))
}

async fn throttled() -> Response {
    (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "30")], "{\"error\":{\"message\":\"slow down\"}}").into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A port with nothing behind it.
    let closed = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let tokyo = serve(Router::new().route("/v1/chat/completions", post(throttled))).await;
    let singapore = serve(Router::new().route("/v1/chat/completions", post(ok))).await;

    let client = Client::builder()
        .region(
            Region::new("ap-northeast-2", format!("http://{closed}/v1"), GeoPoint::new(37.56, 126.97))
                .with_name("Seoul"),
        )
        .region(Region::new("ap-northeast-1", tokyo, GeoPoint::new(35.68, 139.69)).with_name("Tokyo"))
        .region(Region::new("ap-southeast-1", singapore, GeoPoint::new(1.35, 103.82)).with_name("Singapore"))
        .strategy(StrategyKind::GeoNearest.build())
        .api_key("sk-demo-not-a-real-key")
        .active_probing(false)
        .build()?;

    let seoul_caller = CallOptions::new().caller(GeoPoint::new(37.5, 127.0)).timeout(Duration::from_secs(10));
    for call in 1..=3 {
        let request = ChatCompletionRequest::new("demo", vec![ChatMessage::user("hi")]);
        let response = client.chat_completions_with(request, &seoul_caller).await?;
        let meta = &response.meta;
        println!(
            "call {call}: {:?} from {} after {} attempt(s), failed over: {}",
            response.body.text().unwrap_or_default(),
            meta.region,
            meta.attempts,
            meta.failed_over
        );
        for failed in &meta.failed_attempts {
            println!("    {} -> {}", failed.region, failed.failure);
        }
    }
    Ok(())
}
