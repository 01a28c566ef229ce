use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use sluice_client::{BuildError, CallOptions};
use sluice_integration::{MockRegion, Reply};
use sluice_region_model::{NodeMetrics, Region};
use tokio::sync::Notify;

use crate::{SEOUL, SINGAPORE, TOKYO, builder, request};

const WORKERS: usize = 8;
const CALLS_PER_WORKER: usize = 25;

/// Calls started on a node so far: finished ones plus those in flight.
fn started(m: &NodeMetrics) -> u64 {
    m.successes() + m.failures() + u64::from(m.in_flight())
}

/// Waits until `done` calls have completed (bounded by the test's timeout).
async fn until(done: &AtomicUsize, progress: &Notify, n: usize) {
    loop {
        let notified = progress.notified();
        if done.load(Ordering::SeqCst) >= n {
            return;
        }
        notified.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_change_under_load_without_failing_a_call() {
    let slow = |r: &MockRegion| r.always(Reply::Delay(Duration::from_millis(20), Box::new(Reply::Ok)));
    let a = MockRegion::start("seoul").await;
    let b = MockRegion::start("tokyo").await;
    let c = MockRegion::start("singapore").await;
    for r in [&a, &b, &c] {
        slow(r);
    }
    let client = builder().regions([a.region(SEOUL), b.region(TOKYO)]).build().unwrap();
    let before = client.snapshot();
    let a_metrics = Arc::clone(before.node(before.find("seoul").unwrap()).metrics());
    let b_metrics = Arc::clone(before.node(before.find("tokyo").unwrap()).metrics());

    let done = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (client, done, progress) = (client.clone(), Arc::clone(&done), Arc::clone(&progress));
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..CALLS_PER_WORKER {
                if let Err(e) = client.chat_completions_with(request(), &CallOptions::new()).await {
                    failures.push(e.to_string());
                }
                done.fetch_add(1, Ordering::SeqCst);
                progress.notify_waiters();
            }
            failures
        }));
    }

    let run = async {
        until(&done, &progress, 30).await;
        // Remove tokyo, add singapore, while calls are in flight.
        let changes = client.update_regions([a.region(SEOUL), c.region(SINGAPORE)]).unwrap();
        assert_eq!(
            (changes.added.as_slice(), changes.removed.as_slice()),
            (&["singapore".to_owned()][..], &["tokyo".to_owned()][..])
        );
        assert_eq!(changes.kept, ["seoul"]);
        // Every call that will ever reach tokyo has started by now.
        let tokyo_bound = started(&b_metrics);

        until(&done, &progress, 90).await;
        // A bad list is refused and changes nothing.
        let dup = client.update_regions([a.region(SEOUL), a.region(SEOUL)]);
        assert!(matches!(dup, Err(BuildError::Regions(_))), "{dup:?}");
        let empty = client.update_regions(Vec::<Region>::new());
        assert!(matches!(empty, Err(BuildError::Regions(_))), "{empty:?}");
        tokyo_bound
    };
    let tokyo_bound = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the load ran");
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert!(failures.is_empty(), "calls failed across a reload: {failures:?}");
    assert_eq!(done.load(Ordering::SeqCst), WORKERS * CALLS_PER_WORKER);

    let after = client.snapshot();
    let ids: Vec<_> = after.nodes().iter().map(|n| n.region().id().to_owned()).collect();
    assert_eq!(ids, ["seoul", "singapore"], "the refused lists changed nothing");
    // Seoul kept its metrics (the same object, with every call it served counted).
    assert!(Arc::ptr_eq(&a_metrics, after.node(after.find("seoul").unwrap()).metrics()));
    assert_eq!(a_metrics.successes() as usize, a.chat_hits());
    // Tokyo drained: nothing in flight, and no call started there after the swap.
    assert_eq!(b_metrics.in_flight(), 0);
    assert!(b.chat_hits() as u64 <= tokyo_bound, "{} calls reached tokyo, {tokyo_bound} started before", b.chat_hits());
    // Singapore took calls at once, while its health was still unknown.
    assert!(c.chat_hits() > 0);
    assert_eq!(a.chat_hits() + b.chat_hits() + c.chat_hits(), WORKERS * CALLS_PER_WORKER);
}

/// The strategies that keep tables keyed on the snapshot pick the new set after a swap.
#[tokio::test]
async fn table_strategies_pick_the_new_regions_after_a_swap() {
    for kind in [sluice_client::StrategyKind::WeightedRoundRobin, sluice_client::StrategyKind::ResponseTime] {
        let a = MockRegion::start("seoul").await;
        let b = MockRegion::start("tokyo").await;
        let c = MockRegion::start("singapore").await;
        let client =
            builder().strategy(kind.build_seeded(7)).regions([a.region(SEOUL), b.region(TOKYO)]).build().unwrap();
        for _ in 0..20 {
            client.chat_completions_with(request(), &CallOptions::new()).await.unwrap();
        }
        assert!(a.chat_hits() > 0 && b.chat_hits() > 0, "{kind}: both regions served before the swap");
        let tokyo_before = b.chat_hits();
        client.update_regions([a.region(SEOUL), c.region(SINGAPORE)]).unwrap();
        let seoul_before = a.chat_hits();
        for _ in 0..40 {
            client.chat_completions_with(request(), &CallOptions::new()).await.unwrap();
        }
        assert_eq!(b.chat_hits(), tokyo_before, "{kind}: a removed region got calls");
        assert!(c.chat_hits() >= 3, "{kind}: the added region got {} of 40 calls", c.chat_hits());
        assert!(a.chat_hits() - seoul_before >= 3, "{kind}: the kept region got {}", a.chat_hits() - seoul_before);
        assert_eq!(a.chat_hits() - seoul_before + c.chat_hits(), 40);
    }
}
