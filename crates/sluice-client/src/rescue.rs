//! In-flight rescue: waking attempts whose region health checks just marked down.

use std::{fmt, sync::Arc, time::Instant};

use sluice_health::{HealthEvent, HealthEventKind};
use sluice_region_model::NodeId;
use tokio::sync::{Notify, broadcast};

use crate::budget::RetryBudget;

/// One `Notify` per node, fired when the node is marked unhealthy or ejected.
pub(crate) struct RescueHub {
    nodes: Box<[Notify]>,
}

impl RescueHub {
    pub(crate) fn new(n: usize) -> Arc<Self> {
        Arc::new(Self { nodes: (0..n).map(|_| Notify::new()).collect() })
    }

    /// Follows health events until the monitor (the sender) is gone.
    pub(crate) async fn listen(self: Arc<Self>, mut events: broadcast::Receiver<HealthEvent>) {
        loop {
            match events.recv().await {
                Ok(HealthEvent {
                    node,
                    kind: HealthEventKind::BecameUnhealthy { .. } | HealthEventKind::Ejected { .. },
                    ..
                }) => {
                    if let Some(n) = self.nodes.get(node.index()) {
                        n.notify_waiters();
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Resolves when `node` is marked down while the caller waits **and** the retry budget
    /// grants a re-send. Never resolves otherwise.
    pub(crate) async fn rescued(&self, node: NodeId, budget: &RetryBudget) {
        let Some(notify) = self.nodes.get(node.index()) else { return std::future::pending().await };
        let notified = notify.notified();
        tokio::pin!(notified);
        // Only a change seen after the attempt started counts: a node offered while already
        // down (panic mode) is the best there is, and dropping its attempt would fail closed.
        notified.await;
        if budget.try_withdraw(now()) {
            return;
        }
        tracing::debug!(node = %node, "rescue refused by the retry budget; waiting on");
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
