//! Property: the balancer never sends a request to an ineligible region while an eligible
//! region's service is ready, whatever happens to health, admin state, exclusions and
//! readiness in between, including changes made behind the health monitor's back.

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Empty;
use parking_lot::Mutex;
use proptest::prelude::*;
use sluice_balancer::StrategyKind;
use sluice_health::Outcome;
use sluice_region_model::{AdminState, GeoPoint, HealthState, NodeId, Region, Snapshot};
use sluice_tower::{Balance, Error};
use tower::Service;

type Request = http::Request<()>;
type Response = http::Response<Empty<Bytes>>;

/// What every mock region shares with the test.
struct World {
    /// Whether the region's service would say ready if polled.
    ready: Vec<AtomicBool>,
    /// Whether it said ready since its last call (the readiness the balancer holds).
    granted: Vec<AtomicBool>,
    calls: Mutex<Vec<usize>>,
}

struct Mock {
    index: usize,
    world: Arc<World>,
}

impl Service<Request> for Mock {
    type Response = Response;
    type Error = Infallible;
    type Future = Ready<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.world.ready[self.index].load(Ordering::SeqCst) {
            self.world.granted[self.index].store(true, Ordering::SeqCst);
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, _: Request) -> Self::Future {
        assert!(self.world.granted[self.index].swap(false, Ordering::SeqCst), "called a service that was not ready");
        self.world.calls.lock().push(self.index);
        ready(Ok(http::Response::new(Empty::new())))
    }
}

#[derive(Debug, Clone)]
enum Op {
    Health(usize, u8),
    Admin(usize, bool),
    Exclude(usize, bool),
    Ready(usize, bool),
    Fail(usize),
    Request,
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..n, 0..3u8).prop_map(|(i, h)| Op::Health(i, h)),
        (0..n, any::<bool>()).prop_map(|(i, d)| Op::Admin(i, d)),
        (0..n, any::<bool>()).prop_map(|(i, e)| Op::Exclude(i, e)),
        (0..n, any::<bool>()).prop_map(|(i, r)| Op::Ready(i, r)),
        (0..n).prop_map(Op::Fail),
        Just(Op::Request),
        Just(Op::Request),
        Just(Op::Request),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, usize, Vec<Op>)> {
    (1usize..9, 0usize..5).prop_flat_map(|(n, kind)| (Just(n), Just(kind), proptest::collection::vec(op(n), 1..80)))
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn never_sends_to_an_ineligible_region_while_an_eligible_one_is_ready((n, kind, ops) in scenario()) {
        let regions = (0..n).map(|i| {
            Region::new(format!("r{i}"), format!("http://127.0.0.1:{}", 1000 + i), GeoPoint::new(i as f64, i as f64))
        });
        let snapshot = Arc::new(Snapshot::new(regions).unwrap());
        let world = Arc::new(World {
            ready: (0..n).map(|_| AtomicBool::new(true)).collect(),
            granted: (0..n).map(|_| AtomicBool::new(false)).collect(),
            calls: Mutex::new(Vec::new()),
        });
        let services = (0..n).map(|index| Mock { index, world: Arc::clone(&world) });
        let mut balance = Balance::builder()
            .strategy(StrategyKind::ALL[kind].build_seeded(3))
            .seed(5)
            .caller(GeoPoint::new(1.0, 1.0))
            .build(Arc::clone(&snapshot), services)
            .unwrap();
        let monitor = balance.health().unwrap().clone();
        let metrics = |i: usize| snapshot.node(NodeId::from_index(i as u32)).metrics();
        let mut cx = Context::from_waker(Waker::noop());

        for op in ops {
            match op {
                Op::Health(i, h) => {
                    let state = [HealthState::Unknown, HealthState::Healthy, HealthState::Unhealthy][h as usize];
                    metrics(i).set_health(state);
                }
                Op::Admin(i, drained) => {
                    metrics(i).set_admin(if drained { AdminState::Drained } else { AdminState::Enabled });
                }
                Op::Exclude(i, on) => {
                    metrics(i).set_excluded_until(on.then(|| now() + Duration::from_secs(600)));
                }
                Op::Ready(i, r) => world.ready[i].store(r, Ordering::SeqCst),
                Op::Fail(i) => monitor.record(NodeId::from_index(i as u32), Outcome::ConnectError, now()),
                Op::Request => {
                    if balance.poll_ready(&mut cx).is_pending() {
                        continue;
                    }
                    let at = now();
                    let eligible_ready: Vec<usize> = (0..n)
                        .filter(|&i| world.granted[i].load(Ordering::SeqCst) && metrics(i).is_eligible(at))
                        .collect();
                    let before = world.calls.lock().len();
                    let mut future = pin!(balance.call(http::Request::new(())));
                    let result = match future.as_mut().poll(&mut cx) {
                        Poll::Ready(result) => result,
                        Poll::Pending => panic!("a no-op call is pending"),
                    };
                    let calls = world.calls.lock();
                    match result {
                        Ok(_) => {
                            prop_assert_eq!(calls.len(), before + 1);
                            let picked = calls[before];
                            prop_assert!(
                                eligible_ready.is_empty() || metrics(picked).is_eligible(at),
                                "sent to ineligible r{} ({:?}) while {:?} were eligible and ready",
                                picked, metrics(picked).availability(at), eligible_ready
                            );
                        }
                        Err(e) => {
                            prop_assert!(matches!(e, Error::Unavailable { .. }), "{:?}", e);
                            prop_assert_eq!(calls.len(), before);
                            prop_assert!(eligible_ready.is_empty(), "failed while {:?} were eligible and ready", eligible_ready);
                        }
                    }
                }
            }
        }
    }
}
