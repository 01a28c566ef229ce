//! In-flight rescue: waking attempts whose region health checks just marked down.

use std::{fmt, sync::Arc, time::Instant};

use parking_lot::Mutex;
use sluice_health::{HealthEvent, HealthEventKind};
use sluice_region_model::NodeId;
use tokio::sync::{Notify, broadcast};

use crate::budget::RetryBudget;

/// One `Notify` per node, fired when the node is marked unhealthy or ejected, with the time
/// of the latest such event.
pub(crate) struct RescueHub {
    nodes: Box<[(Notify, Mutex<Option<Instant>>)]>,
}

impl RescueHub {
    pub(crate) fn new(n: usize) -> Arc<Self> {
        Arc::new(Self { nodes: (0..n).map(|_| (Notify::new(), Mutex::new(None))).collect() })
    }

    /// Follows health events until the monitor (the sender) is gone.
    pub(crate) async fn listen(self: Arc<Self>, mut events: broadcast::Receiver<HealthEvent>) {
        loop {
            match events.recv().await {
                Ok(HealthEvent {
                    node,
                    kind: HealthEventKind::BecameUnhealthy { .. } | HealthEventKind::Ejected { .. },
                    at,
                    ..
                }) => {
                    if let Some((notify, last)) = self.nodes.get(node.index()) {
                        *last.lock() = Some(at);
                        notify.notify_waiters();
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Resolves when `node` is marked down after `started` (the attempt's start) **and** the
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
