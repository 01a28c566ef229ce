//! Workspace integration tests: real loopback HTTP servers play the regions.
//!
//! Each module is one family of scenarios; every scenario asserts the upstream hit counts as
//! well as the result.

// Failover on connect errors, 429 (every Retry-After form), 503, 5xx bursts, 400, 401.
mod failover;
// Streams: cut mid-way, failing before the first chunk.
mod streaming;
// Hedging, in-flight rescue, the retry budget, all regions down.
mod resilience;
// Preferred regions, geo-nearest, raw calls, models, secrets.
mod routing;
// Failure semantics: no panic, hang, fail-closed or accidental second generation.
mod semantics;
// Stream commit and end rules, idle timeout.
mod sse;
// 2,000 calls through faults that move every second.
mod chaos;
// Library metrics through the `metrics` facade.
mod telemetry;
// Live region updates under load.
mod reload;
// The default locality policy at model speed: stay, spill under a 429, come back.
mod locality;

use std::time::Duration;

use sluice_client::{ChatCompletionRequest, ChatMessage, Client, ClientBuilder, FailoverPolicy, Timeouts};
use sluice_region_model::GeoPoint;

/// Seoul, where the test caller sits.
pub(crate) const SEOUL: GeoPoint = GeoPoint::new(37.56, 126.97);
pub(crate) const TOKYO: GeoPoint = GeoPoint::new(35.68, 139.69);
pub(crate) const SINGAPORE: GeoPoint = GeoPoint::new(1.35, 103.82);

/// A builder with probing off and generous timeouts, for tests that drive health themselves.
pub(crate) fn builder() -> ClientBuilder {
    Client::builder()
        .api_key("sk-test-secret-key")
        .active_probing(false)
        .timeouts(Timeouts::default().attempt(Duration::from_secs(30)).total(Duration::from_secs(60)))
        .failover(FailoverPolicy::default())
        .seed(7)
}

pub(crate) fn request() -> ChatCompletionRequest {
    ChatCompletionRequest::new("mock", vec![ChatMessage::user("hi")])
}
