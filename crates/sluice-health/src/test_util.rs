//! Test doubles (feature `test-util`).

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use parking_lot::Mutex;
use sluice_region_model::{Node, NodeId};

use crate::{Probe, ProbeError};

/// A [`Probe`] that answers from a per-node script, for tests under paused tokio time.
///
/// Each node answers the replies pushed for it, in order, then its default reply forever.
/// The default default is `Reply::Ok(10 ms)`. Every call is logged with its start instant
/// (`tokio::time::Instant::now().into_std()`), so tests can check intervals and jitter.
#[derive(Default)]
pub struct ScriptedProbe {
    state: Mutex<ScriptState>,
}

/// One scripted answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// Succeeds at once with this latency.
    Ok(Duration),
    /// Sleeps (tokio time) for the duration, then succeeds with it as latency.
    Slow(Duration),
    /// Never answers (the prober's timeout ends it).
    Hang,
    /// Fails with [`ProbeError::Timeout`].
    Timeout,
    /// Fails with [`ProbeError::Connect`] (connection refused).
    Refused,
    /// Fails with this HTTP status: 401/403 give [`ProbeError::Credentials`], anything else
    /// [`ProbeError::Status`].
    Status(u16),
}

#[derive(Default)]
struct ScriptState {
    scripts: HashMap<NodeId, VecDeque<Reply>>,
    defaults: HashMap<NodeId, Reply>,
    calls: Vec<(NodeId, Instant)>,
}

// ===== impl ScriptedProbe =====

impl ScriptedProbe {
    /// A probe whose every node succeeds in 10 ms until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `replies` for `node`, after any already queued.
    pub fn push(&self, node: NodeId, replies: impl IntoIterator<Item = Reply>) -> &Self {
        self.state.lock().scripts.entry(node).or_default().extend(replies);
        self
    }

    /// Sets the reply `node` gives once its queue is empty.
    pub fn set_default(&self, node: NodeId, reply: Reply) -> &Self {
        self.state.lock().defaults.insert(node, reply);
        self
    }

    /// Start instants of every probe of `node` so far.
    pub fn calls(&self, node: NodeId) -> Vec<Instant> {
        self.state.lock().calls.iter().filter(|(n, _)| *n == node).map(|(_, t)| *t).collect()
    }

    /// Number of probes of all nodes so far.
    pub fn total_calls(&self) -> usize {
        self.state.lock().calls.len()
    }

    fn next(&self, node: NodeId) -> Reply {
        let mut state = self.state.lock();
        state.calls.push((node, tokio::time::Instant::now().into_std()));
        if let Some(reply) = state.scripts.get_mut(&node).and_then(VecDeque::pop_front) {
            return reply;
        }
        state.defaults.get(&node).copied().unwrap_or(Reply::Ok(Duration::from_millis(10)))
    }
}

impl fmt::Debug for ScriptedProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedProbe").field("calls", &self.total_calls()).finish_non_exhaustive()
    }
}

#[async_trait]
impl Probe for ScriptedProbe {
    async fn probe(&self, node: &Node) -> Result<Duration, ProbeError> {
        match self.next(node.id()) {
            Reply::Ok(latency) => Ok(latency),
            Reply::Slow(latency) => {
                tokio::time::sleep(latency).await;
                Ok(latency)
            }
            Reply::Hang => std::future::pending().await,
            Reply::Timeout => Err(ProbeError::Timeout),
            Reply::Refused => Err(ProbeError::connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))),
            Reply::Status(status @ (401 | 403)) => Err(ProbeError::Credentials { status }),
            Reply::Status(status) => Err(ProbeError::Status { status }),
        }
    }
}

/// An in-process fleet: monitors that joined share their verdicts at once, and each node is
/// probed in full only by the member [`set_prober`](Self::set_prober) names.
///
/// It stands in for the Redis-backed fleet of `sluice-fleet` in tests of the hooks.
/// Verdicts are applied to the other members synchronously, at `tokio::time::Instant::now()`,
/// so they follow paused time.
#[derive(Default)]
pub struct FleetHub {
    state: Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    members: Vec<std::sync::Weak<crate::monitor::Inner>>,
    probers: HashMap<NodeId, usize>,
}

#[derive(Debug)]
struct HubMember {
    hub: std::sync::Arc<FleetHub>,
    index: usize,
}

// ===== impl FleetHub =====

impl fmt::Debug for FleetHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("FleetHub").field("members", &state.members.len()).field("probers", &state.probers).finish()
    }
}

impl FleetHub {
    /// An empty hub.
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::default()
    }

    /// Attaches the hub to `monitor` as its hook and returns its member index.
    ///
    /// # Panics
    /// If `monitor` already has a hook.
    pub fn join(self: &std::sync::Arc<Self>, monitor: &crate::HealthMonitor) -> usize {
        let index = {
            let mut state = self.state.lock();
            state.members.push(std::sync::Arc::downgrade(monitor.inner()));
            state.members.len() - 1
        };
        let member = HubMember { hub: std::sync::Arc::clone(self), index };
        monitor.set_hook(std::sync::Arc::new(member)).expect("the monitor has no hook yet");
        index
    }

    /// Makes `member` the only full prober of `node` (`None`: every member probes it).
    pub fn set_prober(&self, node: NodeId, member: Option<usize>) {
        let mut state = self.state.lock();
        match member {
            Some(m) => state.probers.insert(node, m),
            None => state.probers.remove(&node),
        };
    }
}

impl crate::HealthHook for HubMember {
    fn on_verdict(&self, node: NodeId, verdict: crate::SharedVerdict) {
        let others: Vec<_> = {
            let state = self.hub.state.lock();
            state
                .members
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != self.index)
                .filter_map(|(_, m)| m.upgrade())
                .collect()
        };
        let now = tokio::time::Instant::now().into_std();
        for inner in others {
            crate::HealthMonitor::from_inner(inner).apply_shared(node, verdict, now);
        }
    }

    fn may_probe(&self, node: NodeId) -> bool {
        self.hub.state.lock().probers.get(&node).is_none_or(|m| *m == self.index)
    }
}
