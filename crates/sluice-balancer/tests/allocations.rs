//! A pick never allocates: counted with dhat's heap profiler over 10,000 picks per strategy.
//!
//! dhat counts every thread's allocations, and libtest's own threads allocate at moments of
//! their own (they made this test fail about one run in two), so this test has its own `main`
//! (`harness = false`) and runs alone on the main thread.

use std::time::{Duration, Instant};

use sluice_balancer::{
    PickView, StrategyKind, WeightedRoundRobin,
    test_util::{EntropySource, set_latencies, snapshot_spread},
};
use sluice_region_model::{GeoPoint, Snapshot};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    picks_do_not_allocate();
    println!("test picks_do_not_allocate ... ok");
}

fn picks_do_not_allocate() {
    let t0 = Instant::now();
    let snapshot = std::sync::Arc::new(snapshot_spread(50));
    let latencies: Vec<Duration> = (0..50).map(|i| Duration::from_millis(10 + i)).collect();
    set_latencies(&snapshot, &latencies, t0);
    let subset: Vec<_> = snapshot.ids().iter().copied().filter(|id| id.index() % 3 != 0).collect();
    let strategies: Vec<_> = StrategyKind::ALL.iter().map(|k| k.build_seeded(7)).collect();
    let wrr = WeightedRoundRobin::with_seed(7);
    wrr.prepare(&snapshot);
    let caller = GeoPoint::new(37.5, 127.0);
    let mut entropy = EntropySource::new(1);
    let now = t0 + Duration::from_secs(2);
    // Warm up: the WRR inside `strategies` builds its table on the first pick, and locality
    // builds the nearness order of a caller's place on the first pick from there.
    for s in &strategies {
        s.pick(&PickView::all(&snapshot, now, 0));
        s.pick(&PickView::all(&snapshot, now, 0).with_caller(caller));
    }

    let _profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get();
    let mut picked = 0usize;
    for s in strategies.iter().map(|s| s.as_ref()).chain([&wrr as &dyn sluice_balancer::Strategy]) {
        for i in 0..10_000 {
            let view = if i % 2 == 0 {
                PickView::all(&snapshot, now, entropy.next_u64()).with_caller(caller)
            } else {
                PickView::new(&snapshot, &subset, now, entropy.next_u64())
            };
            picked += usize::from(s.pick(&view).is_some());
        }
    }
    let after = dhat::HeapStats::get();
    assert_eq!(picked, 10_000 * (StrategyKind::ALL.len() + 1));
    assert_eq!(
        after.total_blocks - before.total_blocks,
        0,
        "picks allocated {} blocks",
        after.total_blocks - before.total_blocks
    );

    // Two membership changes, each a newer snapshot with one region fewer. Once each
    // strategy has met the newest, picks over it and over the one it replaced (calls that
    // started before the swap) never allocate, in any order.
    let fewer = |s: &std::sync::Arc<Snapshot>| {
        std::sync::Arc::new(
            Snapshot::builder()
                .reuse_metrics(std::sync::Arc::clone(s))
                .build(s.nodes().iter().skip(1).map(|n| n.region().clone()).collect::<Vec<_>>())
                .unwrap(),
        )
    };
    let replaced = fewer(&snapshot);
    let next = fewer(&replaced);
    let replaced_subset: Vec<_> = replaced.ids().iter().copied().filter(|id| id.index() % 3 != 0).collect();
    for s in strategies.iter().map(|s| s.as_ref()).chain([&wrr as &dyn sluice_balancer::Strategy]) {
        for snapshot in [&replaced, &next] {
            s.pick(&PickView::all(snapshot, now, 0));
            s.pick(&PickView::all(snapshot, now, 0).with_caller(caller));
        }
    }
    let before = dhat::HeapStats::get();
    let mut picked = 0usize;
    for s in strategies.iter().map(|s| s.as_ref()).chain([&wrr as &dyn sluice_balancer::Strategy]) {
        for i in 0..10_000 {
            let view = if i % 2 == 0 {
                PickView::all(&next, now, entropy.next_u64()).with_caller(caller)
            } else {
                PickView::new(&replaced, &replaced_subset, now, entropy.next_u64())
            };
            picked += usize::from(s.pick(&view).is_some());
        }
    }
    let after = dhat::HeapStats::get();
    assert_eq!(picked, 10_000 * (StrategyKind::ALL.len() + 1));
    assert_eq!(
        after.total_blocks - before.total_blocks,
        0,
        "picks across a membership change allocated {} blocks",
        after.total_blocks - before.total_blocks
    );
}
