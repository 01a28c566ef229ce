//! Library metrics (through the `metrics` facade) and tracing spans.
//!
//! Every metric the client records is named here, once; the table in the crate README lists
//! them. Nothing is recorded unless the application installs a `metrics` recorder, and then
//! any exporter sees them.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use metrics::{Counter, Histogram};
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
#[derive(Debug)]
pub(crate) struct ModelLabels {
    seen: RwLock<Vec<Arc<str>>>,
    none: Arc<str>,
    other: Arc<str>,
}

impl Default for ModelLabels {
    fn default() -> Self {
        Self { seen: RwLock::default(), none: Arc::from("none"), other: Arc::from("other") }
    }
}

impl ModelLabels {
    /// The label for `model`: itself while fewer than [`MAX_MODEL_LABELS`] are known,
    /// `other` after that, `none` when the call names no model.
    pub(crate) fn label(&self, model: Option<&str>) -> Arc<str> {
        let Some(model) = model.filter(|m| !m.is_empty()) else { return Arc::clone(&self.none) };
        if let Some(known) = self.seen.read().iter().find(|m| &***m == model) {
            return Arc::clone(known);
        }
        let mut seen = self.seen.write();
        if let Some(known) = seen.iter().find(|m| &***m == model) {
            return Arc::clone(known);
        }
        if seen.len() >= MAX_MODEL_LABELS {
            return Arc::clone(&self.other);
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

/// Metric handles by their label values, so that recording pays one hash lookup instead of
/// the recorder's registry lookup (which builds, sorts and hashes a key, and may allocate).
///
/// Reads take no lock (an [`ArcSwap`] load); a label set seen for the first time is added
/// by copy-on-write. At most [`LabelCache::MAX_ENTRIES`] sets are kept: beyond that a handle
/// is made on every use and not kept, so a flood of label values cannot grow it.
///
/// A handle is bound to the recorder installed when it was made: install the recorder
/// before the first call is recorded.
pub struct LabelCache<K, H> {
    map: ArcSwap<HashMap<K, H>>,
}

impl<K, H> Default for LabelCache<K, H> {
    fn default() -> Self {
        Self { map: ArcSwap::from_pointee(HashMap::new()) }
    }
}

impl<K, H> std::fmt::Debug for LabelCache<K, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelCache").field("entries", &self.map.load().len()).finish()
    }
}

impl<K: Eq + Hash + Clone, H: Clone> LabelCache<K, H> {
    /// Label sets kept at most.
    pub const MAX_ENTRIES: usize = 4096;

    /// The handle for `key`, made by `make` the first time.
    pub fn get(&self, key: K, make: impl FnOnce(&K) -> H) -> H {
        if let Some(h) = self.map.load().get(&key) {
            return h.clone();
        }
        let handle = make(&key);
        if self.map.load().len() < Self::MAX_ENTRIES {
            self.map.rcu(|map| {
                let mut map = HashMap::clone(map);
                map.entry(key.clone()).or_insert_with(|| handle.clone());
                map
            });
        }
        handle
    }
}

/// The client's per-call instruments, shared by every generation of its state.
#[derive(Debug, Default)]
pub(crate) struct Instruments {
    calls: LabelCache<(Arc<str>, &'static str), (Counter, Histogram)>,
    attempts: LabelCache<(Arc<str>, Arc<str>, &'static str), Counter>,
    attempt_latency: LabelCache<(Arc<str>, Arc<str>), Histogram>,
    region_events: LabelCache<(&'static str, Arc<str>), Counter>,
}

impl Instruments {
    /// Records the end of a call.
    pub(crate) fn call_finished(&self, model: &Arc<str>, outcome: &'static str, elapsed: Duration) {
        let (count, duration) = self.calls.get((Arc::clone(model), outcome), |(model, outcome)| {
            (
                metrics::counter!(CALLS_TOTAL, "model" => Arc::clone(model), "outcome" => *outcome),
                metrics::histogram!(CALL_DURATION_SECONDS, "model" => Arc::clone(model), "outcome" => *outcome),
            )
        });
        count.increment(1);
        duration.record(elapsed.as_secs_f64());
    }

    /// Records the end of an attempt; `latency` only for a success.
    pub(crate) fn attempt_finished(
        &self,
        region: &Arc<str>,
        model: &Arc<str>,
        outcome: &'static str,
        latency: Option<Duration>,
    ) {
        self.attempts
            .get((Arc::clone(region), Arc::clone(model), outcome), |(region, model, outcome)| {
                metrics::counter!(ATTEMPTS_TOTAL, "region" => Arc::clone(region), "model" => Arc::clone(model), "outcome" => *outcome)
            })
            .increment(1);
        if let Some(latency) = latency {
            self.attempt_latency
                .get((Arc::clone(region), Arc::clone(model)), |(region, model)| {
                    metrics::histogram!(ATTEMPT_DURATION_SECONDS, "region" => Arc::clone(region), "model" => Arc::clone(model))
                })
                .record(latency.as_secs_f64());
        }
    }

    /// Counts one event labelled by region.
    pub(crate) fn region_event(&self, name: &'static str, region: &Arc<str>) {
        self.region_events
            .get((name, Arc::clone(region)), |(name, region)| metrics::counter!(*name, "region" => Arc::clone(region)))
            .increment(1);
    }
}

/// Counts one refusal of the retry budget; returns `false` so that it can end a condition.
pub(crate) fn budget_refused(reason: &'static str) -> bool {
    metrics::counter!(BUDGET_REFUSALS_TOTAL, "reason" => reason).increment(1);
    false
}

/// Records the end of a call on its span and in the metrics.
pub(crate) fn call_done(
    instruments: &Instruments,
    span: &Span,
    model: &Arc<str>,
    result: Result<&ResponseMeta, &Error>,
    started: Instant,
) {
    let elapsed = now().saturating_duration_since(started);
    let outcome = match result {
        Ok(meta) => {
            span.record("region", &*meta.region);
            span.record("attempts", meta.attempts);
            if meta.failed_over {
                instruments.region_event(FAILOVERS_TOTAL, &meta.region);
            }
            "ok"
        }
        Err(error) => {
            span.record("attempts", error.failed_attempts().len());
            error_label(error)
        }
    };
    span.record("outcome", outcome);
    instruments.call_finished(model, outcome, elapsed);
}

/// Watches one attempt: records its outcome on its span and in the metrics when it ends,
/// and as `cancelled` if it is dropped first (a hedge lost, or the call's deadline passed).
pub(crate) struct AttemptWatch {
    instruments: Arc<Instruments>,
    region: Arc<str>,
    model: Arc<str>,
    started: Instant,
    done: bool,
}

impl AttemptWatch {
    pub(crate) fn new(instruments: Arc<Instruments>, region: Arc<str>, started: Instant) -> Self {
        Self { instruments, region, model: call_model(), started, done: false }
    }

    pub(crate) fn finish(mut self, result: Result<(), &AttemptError>) {
        self.done = true;
        let (outcome, latency) = match result {
            Ok(()) => ("ok", Some(now().saturating_duration_since(self.started))),
            Err(e) => (attempt_label(e), None),
        };
        if matches!(result, Err(AttemptError::Rescued)) {
            self.instruments.region_event(RESCUES_TOTAL, &self.region);
        }
        Span::current().record("outcome", outcome);
        self.instruments.attempt_finished(&self.region, &self.model, outcome, latency);
    }
}

impl Drop for AttemptWatch {
    fn drop(&mut self) {
        if !self.done {
            Span::current().record("outcome", "cancelled");
            self.instruments.attempt_finished(&self.region, &self.model, "cancelled", None);
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
pub(crate) async fn watch_health(instruments: Arc<Instruments>, mut events: broadcast::Receiver<HealthEvent>) {
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
                instruments.region_event(COOLDOWNS_TOTAL, &event.region);
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

    #[test]
    fn label_cache_makes_a_handle_once_per_label_set_and_stays_bounded() {
        let cache: LabelCache<(u32, &'static str), u32> = LabelCache::default();
        let mut made = 0;
        for _ in 0..3 {
            let h = cache.get((7, "ok"), |_| {
                made += 1;
                made
            });
            assert_eq!(h, 1);
        }
        assert_eq!(made, 1, "a kept handle is reused");
        let max = LabelCache::<(u32, &'static str), u32>::MAX_ENTRIES;
        for i in 0..max as u32 + 10 {
            let _ = cache.get((i + 100, "ok"), |_| 0);
        }
        assert_eq!(cache.map.load().len(), max, "the cache never grows past its bound");
        let mut remade = 0;
        for _ in 0..2 {
            let _ = cache.get((u32::MAX, "late"), |_| {
                remade += 1;
                0
            });
        }
        assert_eq!(remade, 2, "past the bound a handle is made each time and not kept");
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
