//! Library metrics (through the `metrics` facade) and tracing spans.
//!
//! Every metric the client records is named here, once; the table in the crate README lists
//! them. Nothing is recorded unless the application installs a `metrics` recorder, and then
//! any exporter sees them.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::RwLock;
use sluice_health::{HealthEvent, HealthEventKind};
use tokio::sync::broadcast;
use tracing::Span;

use crate::{Error, ErrorKind, ResponseMeta, client::AttemptError, rescue::now};

/// Calls finished, by `model` and `outcome` (`ok` or an error kind).
pub const CALLS_TOTAL: &str = "sluice_calls_total";
/// Call duration from its start to the response (streams: to the first chunk), by `model`
/// and `outcome`.
pub const CALL_DURATION_SECONDS: &str = "sluice_call_duration_seconds";
/// Attempts ended, by `region`, `model` and `outcome` (`ok`, `connect`, `timeout`, `status`,
/// `first_chunk`, `invalid`, `rescued`, `cancelled`).
pub const ATTEMPTS_TOTAL: &str = "sluice_attempts_total";
/// Duration of successful attempts, by `region` and `model`.
pub const ATTEMPT_DURATION_SECONDS: &str = "sluice_attempt_duration_seconds";
/// Calls served by another region than the first one tried, by the serving `region`.
pub const FAILOVERS_TOTAL: &str = "sluice_failovers_total";
/// Attempts abandoned because health marked their region down, by that `region`.
pub const RESCUES_TOTAL: &str = "sluice_rescues_total";
/// Hedge attempts sent, by the hedged-to `region`.
pub const HEDGES_TOTAL: &str = "sluice_hedges_total";
/// Re-sends the retry budget refused, by `reason` (`retry`, `hedge`, `rescue`).
pub const BUDGET_REFUSALS_TOTAL: &str = "sluice_retry_budget_refusals_total";
/// Health transitions, by `region` and `to` (`healthy`, `unhealthy`, `ejected`,
/// `ejection_ended`, `credentials_rejected`).
pub const HEALTH_TRANSITIONS_TOTAL: &str = "sluice_health_transitions_total";
/// Retry-After cooldowns started or extended by a second or more, by `region`.
pub const COOLDOWNS_TOTAL: &str = "sluice_cooldowns_total";

/// Distinct `model` label values kept; later models are labelled `other`, so that callers
/// cannot blow up the metrics' cardinality.
pub const MAX_MODEL_LABELS: usize = 64;

/// Describes every metric to the installed recorder (units and help text).
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(CALLS_TOTAL, Unit::Count, "Calls finished, by model and outcome.");
    describe_histogram!(CALL_DURATION_SECONDS, Unit::Seconds, "Call duration to the response or first chunk.");
    describe_counter!(ATTEMPTS_TOTAL, Unit::Count, "Attempts ended, by region, model and outcome.");
    describe_histogram!(ATTEMPT_DURATION_SECONDS, Unit::Seconds, "Successful attempt duration, by region and model.");
    describe_counter!(FAILOVERS_TOTAL, Unit::Count, "Calls served by another region than the first tried.");
    describe_counter!(RESCUES_TOTAL, Unit::Count, "Attempts abandoned because health marked their region down.");
    describe_counter!(HEDGES_TOTAL, Unit::Count, "Hedge attempts sent.");
    describe_counter!(BUDGET_REFUSALS_TOTAL, Unit::Count, "Re-sends refused by the retry budget.");
    describe_counter!(HEALTH_TRANSITIONS_TOTAL, Unit::Count, "Health transitions, by region and new state.");
    describe_counter!(COOLDOWNS_TOTAL, Unit::Count, "Retry-After cooldowns started, by region.");
}

/// The bounded set of model label values.
#[derive(Debug, Default)]
pub(crate) struct ModelLabels {
    seen: RwLock<Vec<Arc<str>>>,
}

impl ModelLabels {
    /// The label for `model`: itself while fewer than [`MAX_MODEL_LABELS`] are known,
    /// `other` after that, `none` when the call names no model.
    pub(crate) fn label(&self, model: Option<&str>) -> Arc<str> {
        let Some(model) = model.filter(|m| !m.is_empty()) else { return Arc::from("none") };
        if let Some(known) = self.seen.read().iter().find(|m| &***m == model) {
            return Arc::clone(known);
        }
        let mut seen = self.seen.write();
        if let Some(known) = seen.iter().find(|m| &***m == model) {
            return Arc::clone(known);
        }
        if seen.len() >= MAX_MODEL_LABELS {
            return Arc::from("other");
        }
        let label: Arc<str> = Arc::from(model);
        seen.push(Arc::clone(&label));
        label
    }
}

tokio::task_local! {
    /// The model label of the call being driven, for the attempts it starts.
    pub(crate) static CALL_MODEL: Arc<str>;
}

/// The model label of the current call (`none` outside one).
pub(crate) fn call_model() -> Arc<str> {
    CALL_MODEL.try_with(Arc::clone).unwrap_or_else(|_| Arc::from("none"))
}

/// Records the end of a call.
pub(crate) fn call_finished(model: &Arc<str>, outcome: &'static str, elapsed: Duration) {
    let model = Arc::clone(model);
    metrics::counter!(CALLS_TOTAL, "model" => Arc::clone(&model), "outcome" => outcome).increment(1);
    metrics::histogram!(CALL_DURATION_SECONDS, "model" => model, "outcome" => outcome).record(elapsed.as_secs_f64());
}

/// Records the end of an attempt; `latency` only for a success.
pub(crate) fn attempt_finished(region: &Arc<str>, model: &Arc<str>, outcome: &'static str, latency: Option<Duration>) {
    metrics::counter!(ATTEMPTS_TOTAL, "region" => Arc::clone(region), "model" => Arc::clone(model), "outcome" => outcome)
        .increment(1);
    if let Some(latency) = latency {
        metrics::histogram!(ATTEMPT_DURATION_SECONDS, "region" => Arc::clone(region), "model" => Arc::clone(model))
            .record(latency.as_secs_f64());
    }
}

/// Counts one event labelled by region.
pub(crate) fn region_event(name: &'static str, region: &Arc<str>) {
    metrics::counter!(name, "region" => Arc::clone(region)).increment(1);
}

/// Counts one refusal of the retry budget; returns `false` so that it can end a condition.
pub(crate) fn budget_refused(reason: &'static str) -> bool {
    metrics::counter!(BUDGET_REFUSALS_TOTAL, "reason" => reason).increment(1);
    false
}

/// Records the end of a call on its span and in the metrics.
pub(crate) fn call_done(span: &Span, model: &Arc<str>, result: Result<&ResponseMeta, &Error>, started: Instant) {
    let elapsed = now().saturating_duration_since(started);
    let outcome = match result {
        Ok(meta) => {
            span.record("region", &*meta.region);
            span.record("attempts", meta.attempts);
            if meta.failed_over {
                region_event(FAILOVERS_TOTAL, &meta.region);
            }
            "ok"
        }
        Err(error) => {
            span.record("attempts", error.failed_attempts().len());
            error_label(error)
        }
    };
    span.record("outcome", outcome);
    call_finished(model, outcome, elapsed);
}

/// Watches one attempt: records its outcome on its span and in the metrics when it ends,
/// and as `cancelled` if it is dropped first (a hedge lost, or the call's deadline passed).
pub(crate) struct AttemptWatch {
    region: Arc<str>,
    model: Arc<str>,
    started: Instant,
    done: bool,
}

impl AttemptWatch {
    pub(crate) fn new(region: Arc<str>, started: Instant) -> Self {
        Self { region, model: call_model(), started, done: false }
    }

    pub(crate) fn finish(mut self, result: Result<(), &AttemptError>) {
        self.done = true;
        let (outcome, latency) = match result {
            Ok(()) => ("ok", Some(now().saturating_duration_since(self.started))),
            Err(e) => (attempt_label(e), None),
        };
        if matches!(result, Err(AttemptError::Rescued)) {
            region_event(RESCUES_TOTAL, &self.region);
        }
        Span::current().record("outcome", outcome);
        attempt_finished(&self.region, &self.model, outcome, latency);
    }
}

impl Drop for AttemptWatch {
    fn drop(&mut self) {
        if !self.done {
            Span::current().record("outcome", "cancelled");
            attempt_finished(&self.region, &self.model, "cancelled", None);
        }
    }
}

/// A short, stable label for an error's kind.
pub(crate) fn error_label(error: &Error) -> &'static str {
    match error.kind() {
        ErrorKind::NoEligibleRegion { .. } => "no_eligible_region",
        ErrorKind::Credentials { .. } => "credentials",
        ErrorKind::Status { .. } => "status",
        ErrorKind::Connect { .. } => "connect",
        ErrorKind::Timeout { .. } => "timeout",
        ErrorKind::DeadlineExceeded => "deadline_exceeded",
        ErrorKind::InvalidResponse { .. } => "invalid_response",
        ErrorKind::Decode { .. } => "decode",
        ErrorKind::Rescued { .. } => "rescued",
        ErrorKind::StreamInterrupted { .. } => "stream_interrupted",
        ErrorKind::InvalidRequest => "invalid_request",
        ErrorKind::UnknownRegion { .. } => "unknown_region",
        #[allow(unreachable_patterns)]
        _ => "error",
    }
}

/// A short, stable label for an attempt's failure.
pub(crate) fn attempt_label(error: &AttemptError) -> &'static str {
    match error {
        AttemptError::Connect(_) => "connect",
        AttemptError::Timeout => "timeout",
        AttemptError::Status { .. } => "status",
        AttemptError::FirstChunk(_) => "first_chunk",
        AttemptError::Invalid(_) => "invalid",
        AttemptError::Decode(_) => "decode",
        AttemptError::Cut(_) => "cut",
        AttemptError::Rescued => "rescued",
    }
}

/// Counts health transitions and cooldowns until the monitor's channel closes.
pub(crate) async fn watch_health(mut events: broadcast::Receiver<HealthEvent>) {
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "health metrics missed events");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let to = match event.kind {
            HealthEventKind::BecameHealthy => "healthy",
            HealthEventKind::BecameUnhealthy { .. } => "unhealthy",
            HealthEventKind::CredentialsRejected { .. } => "credentials_rejected",
            HealthEventKind::Ejected { .. } => "ejected",
            HealthEventKind::EjectionEnded => "ejection_ended",
            HealthEventKind::CooldownStarted { .. } => {
                region_event(COOLDOWNS_TOTAL, &event.region);
                continue;
            }
            _ => "other",
        };
        metrics::counter!(HEALTH_TRANSITIONS_TOTAL, "region" => event.region, "to" => to).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_bounded() {
        let labels = ModelLabels::default();
        assert_eq!(&*labels.label(None), "none");
        assert_eq!(&*labels.label(Some("")), "none");
        for i in 0..MAX_MODEL_LABELS {
            assert_eq!(&*labels.label(Some(&format!("m{i}"))), format!("m{i}"));
        }
        assert_eq!(&*labels.label(Some("m0")), "m0");
        assert_eq!(&*labels.label(Some("late")), "other");
    }
}

/// Joins the call span to the caller's trace: records `trace_id`, and with the `otel`
/// feature makes the incoming context the span's OpenTelemetry parent.
pub(crate) fn join_trace(span: &Span, trace: crate::TraceParent) {
    span.record("trace_id", tracing::field::display(format_args!("{:032x}", trace.trace_id())));
    #[cfg(feature = "otel")]
    otel::set_parent(span, trace);
}

/// The trace context an attempt sends upstream: the call's trace id under the attempt's own
/// span id (OpenTelemetry's when a layer is installed, else a random one), recorded on the
/// attempt span as `span_id`.
pub(crate) fn attempt_trace(span: &Span, trace: crate::TraceParent, entropy: u64) -> crate::TraceParent {
    #[cfg(feature = "otel")]
    if let Some(own) = otel::context_of(span) {
        span.record("span_id", tracing::field::display(format_args!("{:016x}", own.parent_id())));
        return own;
    }
    // A mixed, non-zero id from the client's entropy counter.
    let mut id = entropy.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    id ^= id >> 31;
    let child = trace.child(id);
    span.record("span_id", tracing::field::display(format_args!("{:016x}", child.parent_id())));
    child
}

/// OpenTelemetry context through `tracing-opentelemetry` (feature `otel`).
#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use crate::TraceParent;

    /// Makes the remote context of `trace` the parent of `span` (a no-op without a layer).
    pub(super) fn set_parent(span: &Span, trace: TraceParent) {
        let remote = SpanContext::new(
            TraceId::from_bytes(trace.trace_id().to_be_bytes()),
            SpanId::from_bytes(trace.parent_id().to_be_bytes()),
            TraceFlags::new(trace.flags()),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }

    /// The span's own OpenTelemetry ids, when an OpenTelemetry layer records it.
    pub(super) fn context_of(span: &Span) -> Option<TraceParent> {
        let context = span.context();
        let own = context.span().span_context().clone();
        if !own.is_valid() {
            return None;
        }
        TraceParent::new(
            u128::from_be_bytes(own.trace_id().to_bytes()),
            u64::from_be_bytes(own.span_id().to_bytes()),
            own.trace_flags().to_u8(),
        )
    }
}
