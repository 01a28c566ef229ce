use std::{collections::HashMap, time::Duration};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sluice_client::{CallOptions, FailoverPolicy, telemetry};
use sluice_integration::{MockRegion, Reply};

use crate::{SEOUL, TOKYO, builder, request};

/// Totals of what the client recorded, keyed by `name{label=value,...}` (labels sorted):
/// counter sums and histogram sample counts. (Each debugging snapshot drains the values.)
struct Totals {
    snapshotter: Snapshotter,
    seen: HashMap<String, u64>,
}

impl Totals {
    fn update(&mut self) -> &HashMap<String, u64> {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            labels.sort();
            let add = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(v) => v.len() as u64,
                DebugValue::Gauge(_) => 0,
            };
            *self.seen.entry(format!("{}{{{}}}", key.name(), labels.join(","))).or_default() += add;
        }
        &self.seen
    }

    fn get(&mut self, key: &str) -> u64 {
        self.update().get(key).copied().unwrap_or(0)
    }

    /// Lets spawned watchers (the health-metrics task) run until `key` is counted; bounded.
    async fn settle(&mut self, key: &str) {
        for _ in 0..10_000 {
            if self.get(key) > 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
    }
}

// One thread, so the thread-local recorder sees every task the client spawns.
#[tokio::test(flavor = "current_thread")]
async fn the_library_records_calls_attempts_failovers_and_health_through_the_facade() {
    let recorder = DebuggingRecorder::new();
    let mut m = Totals { snapshotter: recorder.snapshotter(), seen: HashMap::new() };
    let _guard = metrics::set_default_local_recorder(&recorder);

    let seoul = MockRegion::start("seoul").await;
    seoul.always(Reply::Status(500, vec![]));
    let tokyo = MockRegion::start("tokyo").await;
    let client = builder().region(seoul.region(SEOUL)).region(tokyo.region(TOKYO)).build().unwrap();
    // Five failures in a row eject seoul; the sixth call goes straight to tokyo.
    for _ in 0..6 {
        let resp = client.chat_completions_with(request(), &CallOptions::new().prefer_region("seoul")).await.unwrap();
        assert_eq!(&*resp.meta.region, "tokyo");
    }
    assert_eq!(seoul.chat_hits(), 5);
    assert_eq!(tokyo.chat_hits(), 6);
    let ejected = "sluice_health_transitions_total{region=seoul,to=ejected}";
    m.settle(ejected).await;
    assert_eq!(m.get("sluice_calls_total{model=mock,outcome=ok}"), 6);
    assert_eq!(m.get("sluice_call_duration_seconds{model=mock,outcome=ok}"), 6);
    assert_eq!(m.get("sluice_attempts_total{model=mock,outcome=status,region=seoul}"), 5);
    assert_eq!(m.get("sluice_attempts_total{model=mock,outcome=ok,region=tokyo}"), 6);
    assert_eq!(m.get("sluice_attempt_duration_seconds{model=mock,region=tokyo}"), 6);
    assert_eq!(m.get("sluice_attempt_duration_seconds{model=mock,region=seoul}"), 0);
    assert_eq!(m.get("sluice_failovers_total{region=tokyo}"), 5);
    assert_eq!(m.get(ejected), 1);
    assert_eq!(m.get("sluice_retry_budget_refusals_total{reason=retry}"), 0);
    drop(client);

    // A retry the budget refuses; a 429 that starts a cooldown.
    let busy = MockRegion::start("busy").await;
    busy.always(Reply::Status(429, vec![("retry-after", "30".into())]));
    let client = builder()
        .region(busy.region(SEOUL))
        .region(tokyo.region(TOKYO))
        .failover(FailoverPolicy::default().retry_budget(0.0, 0, Duration::from_secs(10)))
        .build()
        .unwrap();
    let err = client.chat_completions_with(request(), &CallOptions::new().prefer_region("busy")).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(busy.chat_hits(), 1);
    assert_eq!(tokyo.chat_hits(), 6, "the budget refused the retry");
    m.settle("sluice_cooldowns_total{region=busy}").await;
    assert_eq!(m.get("sluice_retry_budget_refusals_total{reason=retry}"), 1);
    assert_eq!(m.get("sluice_calls_total{model=mock,outcome=status}"), 1);
    assert_eq!(m.get("sluice_attempts_total{model=mock,outcome=status,region=busy}"), 1);
    assert_eq!(m.get("sluice_cooldowns_total{region=busy}"), 1);

    // Every name the library records is one of the documented constants.
    for key in m.update().keys() {
        let name = key.split('{').next().unwrap();
        assert!(
            [
                telemetry::CALLS_TOTAL,
                telemetry::CALL_DURATION_SECONDS,
                telemetry::ATTEMPTS_TOTAL,
                telemetry::ATTEMPT_DURATION_SECONDS,
                telemetry::FAILOVERS_TOTAL,
                telemetry::RESCUES_TOTAL,
                telemetry::HEDGES_TOTAL,
                telemetry::BUDGET_REFUSALS_TOTAL,
                telemetry::HEALTH_TRANSITIONS_TOTAL,
                telemetry::COOLDOWNS_TOTAL,
            ]
            .contains(&name),
            "{name} is not documented"
        );
    }
}
