//! In-flight rescue: waking attempts whose region health checks just found silent.

use std::{
    fmt,
    sync::{Arc, Weak},
    time::Instant,
};

use parking_lot::Mutex;
use sluice_health::{HealthEvent, HealthEventKind, HealthMonitor};
use sluice_region_model::NodeId;
use tokio::sync::{Notify, broadcast};

use crate::budget::RetryBudget;

/// One `Notify` per node, fired when probes find the node silent, with the time of the
/// latest such event.
pub(crate) struct RescueHub {
    nodes: Box<[(Notify, Mutex<Option<Instant>>)]>,
    /// Region id per node: events are matched by region, because after a region update the
    /// channel carries events of both memberships, whose node ids differ.
    regions: Box<[Arc<str>]>,
}

impl RescueHub {
    /// A hub for `regions` (one per node, in node order), following `health`'s events on
    /// `runtime` for as long as the hub lives.
    pub(crate) fn start(runtime: &tokio::runtime::Handle, regions: &[Arc<str>], health: &HealthMonitor) -> Arc<Self> {
        let hub = Arc::new(Self {
            nodes: regions.iter().map(|_| (Notify::new(), Mutex::new(None))).collect(),
            regions: regions.into(),
        });
        runtime.spawn(Self::listen(Arc::downgrade(&hub), health.subscribe()));
        hub
    }

    /// Follows health events until the monitor (the sender) or the hub is gone.
    async fn listen(hub: Weak<Self>, mut events: broadcast::Receiver<HealthEvent>) {
        loop {
            let event = events.recv().await;
            let Some(hub) = hub.upgrade() else { return };
            match event {
                // Only silence rescues: a probe that got no answer at all (a timeout, a refused
                // or broken connection). A node that answered, even with an error status, is
                // alive and will answer the calls it holds; re-sending them would generate
                // twice. For the same reason a passive ejection never rescues: it is inferred
                // from other calls' answers, and says nothing of whether this one will come.
                Ok(HealthEvent { region, kind: HealthEventKind::BecameUnhealthy { silent: true, .. }, at, .. }) => {
                    let node = hub.regions.iter().position(|r| *r == region);
                    if let Some((notify, last)) = node.and_then(|i| hub.nodes.get(i)) {
                        *last.lock() = Some(at);
                        notify.notify_waiters();
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Resolves when probes find `node` silent after `started` (the attempt's start) **and** the
    /// retry budget grants a re-send. Never resolves otherwise.
    ///
    /// Only a change after the attempt started counts: a node offered while already down
    /// (panic mode) is the best there is, and dropping its attempt would fail closed. Events
    /// reach the hub a little late, so each one is checked against `started`.
    pub(crate) async fn rescued(&self, node: NodeId, started: Instant, budget: &RetryBudget) {
        let Some((notify, last)) = self.nodes.get(node.index()) else { return std::future::pending().await };
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if last.lock().is_some_and(|at| at >= started) {
                break;
            }
            notified.await;
        }
        if budget.try_withdraw(now()) {
            return;
        }
        tracing::debug!(node = %node, "rescue refused by the retry budget; waiting on");
        crate::telemetry::budget_refused("rescue");
        std::future::pending().await
    }
}

impl fmt::Debug for RescueHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RescueHub").field("nodes", &self.nodes.len()).finish()
    }
}

/// The current instant on Tokio's clock (paused clocks flow through).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
