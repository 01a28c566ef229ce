//! The running fleet: the hook given to health, and the two Redis links beside the call path.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use redis::{Value, aio::MultiplexedConnection};
use sluice_health::{HealthHook, HealthMonitor, RetryBudget, SharedVerdict};
use sluice_region_model::{AdminState, HealthState, NodeId};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::{Instant as TokioInstant, sleep_until, timeout},
};

use crate::{
    FleetConfig, FleetError, QUEUE_CAPACITY,
    limits::{BudgetRound, LimitState},
    message::{self, Body},
};

/// Fleet mode, running: shares this replica's verdicts and applies the others'.
///
/// Started by [`Fleet::start`] on a [`HealthMonitor`] (a client's `Client::health()`), it
/// attaches a [`HealthHook`] to the monitor and runs two tasks on the current tokio runtime:
/// one command link (publishing, probe leases, keyed records) and one subscription link
/// (applying other replicas' messages, resyncing from the keyed records after each
/// (re)connect). Neither is on the call path.
///
/// Dropping it stops both tasks without releasing the probe leases, as a crash would (the
/// other replicas take the regions over when the leases expire); [`shutdown`](Self::shutdown)
/// releases them first. Either way the monitor falls back to local probing.
#[must_use = "dropping the fleet stops it"]
pub struct Fleet {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

/// Counters of one replica's fleet traffic, from [`Fleet::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStats {
    /// Whether both Redis links are up (otherwise the replica runs on local health alone).
    pub connected: bool,
    /// Regions whose probe lease this replica holds.
    pub leases_held: u64,
    /// Messages this replica published.
    pub published: u64,
    /// Local verdicts not published: the queue was full, or Redis was down (those still
    /// running are republished from local state on reconnect).
    pub unsent: u64,
    /// Messages received from the channel, own ones included.
    pub received: u64,
    /// Messages from other replicas applied to local health.
    pub applied: u64,
    /// Messages rejected by the decoder (malformed or hostile), ignored.
    pub malformed: u64,
    /// Well-formed messages about a region this replica does not know, ignored.
    pub unknown_region: u64,
    /// Redis commands sent for verdicts and drains (publish and keyed record).
    pub verdict_ops: u64,
    /// Redis commands sent for leases, resyncs and liveness pings (time-driven, not per call).
    pub background_ops: u64,
    /// Times both links came up after being down, each followed by a resync.
    pub resyncs: u64,
    /// Times Redis was found unreachable or too slow after being up.
    pub outages: u64,
    /// Retries the fleet-wide retry budget granted this replica (0 unless it is shared).
    pub budget_granted: u64,
    /// Request-limit tokens this replica claimed from the fleet's per-region windows.
    pub limit_claimed: u64,
    /// Times a region's fleet-wide request window was found spent (each holds the region in
    /// cooldown for the rest of its window).
    pub limit_exhausted: u64,
}

/// Something to send on the command link.
#[derive(Debug, Clone, Copy)]
enum Outgoing {
    Verdict(NodeId, SharedVerdict),
    Admin(NodeId, AdminState),
}

/// What the hook, the tasks and the handle share.
struct Shared {
    config: FleetConfig,
    client: redis::Client,
    monitor: HealthMonitor,
    link: Arc<Link>,
    keys: Box<[RegionKeys]>,
    channel: String,
    /// The sorted set of live replicas.
    replicas_key: String,
    /// Live replicas in the fleet, as of the last lease round (1 until known).
    fleet_size: AtomicUsize,
    /// Per node: whether a fleet drain set its admin state (so a fleet enable may lift it).
    fleet_drained: Box<[AtomicBool]>,
    tx: mpsc::Sender<Outgoing>,
    connected: watch::Sender<bool>,
    /// Whether the outage in progress (or the failure to ever connect) was logged.
    down_logged: AtomicBool,
    ever_up: AtomicBool,
    /// Why Redis last failed (its error, which never holds the password), for the outage log.
    last_error: parking_lot::Mutex<String>,
    /// The client's retry budget, when the fleet shares it.
    budget: Option<Arc<RetryBudget>>,
    /// Key prefix of the shared budget.
    budget_prefix: String,
}

/// The state the hook reads; every field is an atomic.
#[derive(Default)]
struct Link {
    command_up: AtomicBool,
    subscription_up: AtomicBool,
    held: Box<[AtomicBool]>,
    published: AtomicU64,
    unsent: AtomicU64,
    received: AtomicU64,
    applied: AtomicU64,
    malformed: AtomicU64,
    unknown_region: AtomicU64,
    verdict_ops: AtomicU64,
    background_ops: AtomicU64,
    resyncs: AtomicU64,
    outages: AtomicU64,
    budget_granted: AtomicU64,
    limit_claimed: AtomicU64,
    limit_exhausted: AtomicU64,
}

struct RegionKeys {
    region: String,
    lease: String,
    health: String,
    eject: String,
    cool: String,
    admin: String,
    limit: String,
}

/// The [`HealthHook`] fleet mode attaches to the monitor.
struct FleetHook {
    tx: mpsc::Sender<Outgoing>,
    link: Arc<Link>,
}

/// Renews a lease only if it is still ours, and records the holder's verdict beside it.
/// KEYS: lease, health. ARGV: replica, lease ms, verdict ("" for none), verdict ttl ms.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
    if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end \
    return 1 else return 0 end";
/// Releases a lease only if it is still ours. KEYS: lease. ARGV: replica.
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Announces a replica in the fleet's sorted set (score: expiry by Redis's clock), drops
/// replicas that stopped announcing, and returns how many are alive.
/// KEYS: the set. ARGV: replica, ttl ms.
const PRESENCE: &str = "local t = redis.call('TIME') \
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) \
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) \
    redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
    return redis.call('ZCARD', KEYS[1])";
/// Extends a record's expiry to at least ARGV[1] ms; never shortens it. KEYS: record.
const EXTEND: &str = "if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then \
    redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end return 1";

/// One round of the shared retry budget, in one round trip, with Redis's clock.
/// Returns unspent retries to the bucket they were claimed from (if it is still kept), adds
/// this replica's calls to the current bucket, sums calls and claims over the window's buckets,
/// and claims a fair share (available / replicas, rounded up) of what is left of
/// `floor + ratio × calls − claims`. Returns {granted, bucket, fleet calls, fleet claims}.
/// KEYS: prefix. ARGV: bucket ms, buckets, calls, ratio (thousandths), floor, replicas,
/// bucket of the returned retries, retries returned.
const BUDGET: &str = "local t = redis.call('TIME')     local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)     local width = tonumber(ARGV[1]) local slots = tonumber(ARGV[2])     local b = math.floor(now / width) local keep = width * (slots + 1) local p = KEYS[1]     if tonumber(ARGV[8]) > 0 then local old = p .. ':claims:' .. ARGV[7]       if redis.call('EXISTS', old) == 1 then redis.call('DECRBY', old, ARGV[8]) end end     if tonumber(ARGV[3]) > 0 then redis.call('INCRBY', p .. ':calls:' .. b, ARGV[3])       redis.call('PEXPIRE', p .. ':calls:' .. b, keep) end     local calls = 0 local claims = 0     for i = 0, slots - 1 do       calls = calls + tonumber(redis.call('GET', p .. ':calls:' .. (b - i)) or '0')       claims = claims + tonumber(redis.call('GET', p .. ':claims:' .. (b - i)) or '0') end     local avail = math.floor((tonumber(ARGV[5]) * 1000 + tonumber(ARGV[4]) * calls) / 1000) - claims     local grant = 0 if avail > 0 then grant = math.ceil(avail / tonumber(ARGV[6])) end     if grant > 0 then redis.call('INCRBY', p .. ':claims:' .. b, grant)       redis.call('PEXPIRE', p .. ':claims:' .. b, keep) end     return {grant, b, calls, claims + grant}";
/// Claims request tokens from a region's fleet-wide window, with Redis's clock.
/// Returns {granted, window index, ms left in the window}; granted < asked means the window
/// is spent. KEYS: prefix. ARGV: window ms, tokens asked, limit.
const CLAIM: &str = "local t = redis.call('TIME')     local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)     local width = tonumber(ARGV[1]) local w = math.floor(now / width) local key = KEYS[1] .. ':' .. w     local want = tonumber(ARGV[2]) local limit = tonumber(ARGV[3])     local used = redis.call('INCRBY', key, want) redis.call('PEXPIRE', key, width * 2)     local grant = want if used > limit then grant = math.max(0, want - (used - limit)) end     return {grant, w, width - (now % width)}";

/// A Redis round trip failed or timed out: the link is down.
struct LinkDown;

// ===== impl Fleet =====

impl Fleet {
    /// Starts fleet mode for `monitor` on the current tokio runtime.
    ///
    /// Returns at once; connecting happens in the background, and until it succeeds (or
    /// whenever Redis is down) the replica runs on local health alone.
    ///
    /// # Errors
    /// [`FleetError::HookTaken`] if the monitor already has a hook.
    ///
    /// # Panics
    /// If called outside a tokio runtime.
    pub fn start(config: &FleetConfig, monitor: &HealthMonitor) -> Result<Self, FleetError> {
        if config.shared_retry_budget {
            return Err(FleetError::InvalidSetting {
                name: "shared_retry_budget",
                reason: "needs the client's retry budget: start with Fleet::start_with_budget",
            });
        }
        Self::start_inner(config, monitor, None)
    }

    /// As [`start`](Self::start), and shares `budget` (the client's, from
    /// `Client::retry_budget`) with the fleet if the config asks for it
    /// ([`FleetBuilder::shared_retry_budget`](crate::FleetBuilder::shared_retry_budget)).
    ///
    /// Every lease round (a third of the lease) the replica adds its calls since the last
    /// round to Redis counters of the budget's window, returns the retries it did not spend,
    /// and claims a fair share of what the fleet has left; retries are then taken from that
    /// grant with atomics only. While Redis is unreachable the local budget applies.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with_budget(
        config: &FleetConfig,
        monitor: &HealthMonitor,
        budget: Arc<RetryBudget>,
    ) -> Result<Self, FleetError> {
        let budget = config.shared_retry_budget.then_some(budget);
        Self::start_inner(config, monitor, budget)
    }

    fn start_inner(
        config: &FleetConfig,
        monitor: &HealthMonitor,
        budget: Option<Arc<RetryBudget>>,
    ) -> Result<Self, FleetError> {
        let client =
            redis::Client::open(config.connection.clone()).map_err(|e| FleetError::InvalidUrl { source: e.into() })?;
        let snapshot = monitor.snapshot();
        let n = snapshot.len();
        let ns = &config.namespace;
        let keys = snapshot
            .nodes()
            .iter()
            .map(|node| {
                let region = node.region().id();
                RegionKeys {
                    region: region.to_owned(),
                    lease: format!("{ns}:lease:{region}"),
                    health: format!("{ns}:health:{region}"),
                    eject: format!("{ns}:eject:{region}"),
                    cool: format!("{ns}:cool:{region}"),
                    admin: format!("{ns}:admin:{region}"),
                    limit: format!("{ns}:limit:{region}"),
                }
            })
            .collect();
        let link = Arc::new(Link { held: (0..n).map(|_| AtomicBool::new(false)).collect(), ..Link::default() });
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        monitor
            .set_hook(Arc::new(FleetHook { tx: tx.clone(), link: Arc::clone(&link) }))
            .map_err(|_| FleetError::HookTaken)?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            client,
            monitor: monitor.clone(),
            link,
            keys,
            channel: format!("{ns}:events"),
            replicas_key: format!("{ns}:replicas"),
            fleet_size: AtomicUsize::new(1),
            fleet_drained: (0..n).map(|_| AtomicBool::new(false)).collect(),
            tx,
            connected: watch::Sender::new(false),
            down_logged: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            last_error: parking_lot::Mutex::new("no answer yet".to_owned()),
            budget,
            budget_prefix: format!("{ns}:budget"),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(Arc::clone(&shared).command_loop(rx));
        tasks.spawn(Arc::clone(&shared).subscription_loop());
        tracing::info!(server = %config.server(), replica = %config.replica_id, regions = n, "fleet mode starting");
        Ok(Self { shared, tasks })
    }

    /// This replica's id.
    pub fn replica_id(&self) -> &str {
        &self.shared.config.replica_id
    }

    /// Whether both Redis links are up.
    pub fn is_connected(&self) -> bool {
        self.shared.link.is_up()
    }

    /// Waits until the links are up (`true`) or down (`false`). Up means connected, resynced
    /// and with this replica's leases known.
    pub async fn wait_connected(&self, up: bool) {
        let mut rx = self.shared.connected.subscribe();
        // The sender lives in `shared`, which outlives this borrow, so this cannot fail.
        let _ = rx.wait_for(|v| *v == up).await;
    }

    /// Whether this replica holds the probe lease of `region` (so it probes it for the fleet).
    pub fn holds_lease(&self, region: &str) -> bool {
        self.shared.node(region).is_some_and(|node| self.shared.link.held[node.index()].load(Ordering::Relaxed))
    }

    /// The counters so far.
    pub fn stats(&self) -> FleetStats {
        let l = &self.shared.link;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FleetStats {
            connected: l.is_up(),
            leases_held: l.held.iter().filter(|h| h.load(Ordering::Relaxed)).count() as u64,
            published: get(&l.published),
            unsent: get(&l.unsent),
            received: get(&l.received),
            applied: get(&l.applied),
            malformed: get(&l.malformed),
            unknown_region: get(&l.unknown_region),
            verdict_ops: get(&l.verdict_ops),
            background_ops: get(&l.background_ops),
            resyncs: get(&l.resyncs),
            outages: get(&l.outages),
            budget_granted: get(&l.budget_granted),
            limit_claimed: get(&l.limit_claimed),
            limit_exhausted: get(&l.limit_exhausted),
        }
    }

    /// Drains `region` on every replica: here at once, elsewhere when they hear it (or resync).
    /// A drain lasts until [`enable`](Self::enable), also across restarts of the replicas.
    pub async fn drain(&self, region: &str) -> Result<(), FleetError> {
        self.admin(region, AdminState::Drained).await
    }

    /// Lifts a fleet-wide drain of `region` on every replica.
    pub async fn enable(&self, region: &str) -> Result<(), FleetError> {
        self.admin(region, AdminState::Enabled).await
    }

    async fn admin(&self, region: &str, state: AdminState) -> Result<(), FleetError> {
        let node = self.shared.node(region).ok_or_else(|| FleetError::UnknownRegion { region: region.to_owned() })?;
        self.shared.set_admin(node, state);
        // The command task holds the receiver for as long as `self` lives.
        let _ = self.shared.tx.send(Outgoing::Admin(node, state)).await;
        Ok(())
    }

    /// Releases this replica's probe leases (so others take its regions over at once), then
    /// stops. Bounded by the operation timeout.
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let shared = &self.shared;
        shared.link.set_down();
        if let Some(mut conn) = shared.connect().await {
            let mut pipe = redis::pipe();
            for (i, keys) in shared.keys.iter().enumerate() {
                if shared.link.held[i].swap(false, Ordering::Relaxed) {
                    pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(&keys.lease).arg(&shared.config.replica_id).ignore();
                }
            }
            let _ = shared.query::<()>(&mut conn, &pipe, false).await;
        }
        // `Drop` runs next: it clears the leases still marked held and ends the shared budget.
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.tasks.abort_all();
        // Back to local probing of every region.
        self.shared.link.set_down();
        for held in &self.shared.link.held {
            held.store(false, Ordering::Relaxed);
        }
        if let Some(budget) = &self.shared.budget {
            budget.end_shared();
        }
    }
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet").field("config", &self.shared.config).field("stats", &self.stats()).finish()
    }
}

// ===== impl Link =====

impl Link {
    fn is_up(&self) -> bool {
        self.command_up.load(Ordering::Acquire) && self.subscription_up.load(Ordering::Acquire)
    }

    fn set_down(&self) {
        self.command_up.store(false, Ordering::Release);
        self.subscription_up.store(false, Ordering::Release);
    }
}

// ===== impl FleetHook =====

impl HealthHook for FleetHook {
    fn on_verdict(&self, node: NodeId, verdict: SharedVerdict) {
        if self.tx.try_send(Outgoing::Verdict(node, verdict)).is_err() {
            self.link.unsent.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn may_probe(&self, node: NodeId) -> bool {
        !self.link.is_up() || self.link.held.get(node.index()).is_none_or(|h| h.load(Ordering::Relaxed))
    }
}

impl fmt::Debug for FleetHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetHook").field("connected", &self.link.is_up()).finish_non_exhaustive()
    }
}

// ===== impl Shared =====

impl Shared {
    fn node(&self, region: &str) -> Option<NodeId> {
        self.monitor.snapshot().find(region)
    }

    fn now() -> std::time::Instant {
        TokioInstant::now().into_std()
    }

    fn lease_ms(&self) -> u64 {
        message::millis(self.config.lease).max(1)
    }

    /// Renew and seek leases every third of the lease.
    fn lease_period(&self) -> Duration {
        self.config.lease / 3
    }

    async fn connect(&self) -> Option<MultiplexedConnection> {
        match timeout(self.config.op_timeout, self.client.get_multiplexed_async_connection()).await {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(error)) => {
                tracing::debug!(%error, "fleet: redis connection failed");
                self.failed_because(format!("connection failed: {error}"));
                None
            }
            Err(_) => {
                tracing::debug!("fleet: redis connection timed out");
                self.failed_because(format!("connection timed out after {:?}", self.config.op_timeout));
                None
            }
        }
    }

    /// Runs a pipeline within the operation timeout, counting its commands.
    async fn query<T: redis::FromRedisValue>(
        &self,
        conn: &mut MultiplexedConnection,
        pipe: &redis::Pipeline,
        verdict: bool,
    ) -> Result<T, LinkDown> {
        let ops = pipe.cmd_iter().count() as u64;
        let counter = if verdict { &self.link.verdict_ops } else { &self.link.background_ops };
        counter.fetch_add(ops, Ordering::Relaxed);
        match timeout(self.config.op_timeout, pipe.query_async::<T>(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(error)) => {
                tracing::debug!(%error, "fleet: redis command failed");
                self.failed_because(format!("command failed: {error}"));
                Err(LinkDown)
            }
            Err(_) => {
                tracing::debug!(timeout = ?self.config.op_timeout, "fleet: redis command timed out");
                self.failed_because(format!("command timed out after {:?}", self.config.op_timeout));
                Err(LinkDown)
            }
        }
    }

    /// Remembers why Redis failed last, for the outage log.
    fn failed_because(&self, reason: String) {
        *self.last_error.lock() = reason;
    }

    /// Records a link's state; logs once per outage and once per recovery.
    fn set_link(&self, command: bool, up: bool) {
        let link = &self.link;
        let was = link.is_up();
        let flag = if command { &link.command_up } else { &link.subscription_up };
        flag.store(up, Ordering::Release);
        if !up && command {
            for held in &link.held {
                held.store(false, Ordering::Relaxed);
            }
        }
        if !up {
            // Back to the local retry budget until the fleet grants again.
            if let Some(budget) = &self.budget {
                budget.end_shared();
            }
        }
        let now = link.is_up();
        if now && !was {
            if self.ever_up.swap(true, Ordering::Relaxed) {
                link.resyncs.fetch_add(1, Ordering::Relaxed);
                tracing::info!(server = %self.config.server(), "fleet: redis is back; resynced, sharing again");
            } else {
                tracing::info!(server = %self.config.server(), "fleet: connected; sharing health with the fleet");
            }
            self.down_logged.store(false, Ordering::Relaxed);
        }
        if !up && !self.down_logged.swap(true, Ordering::Relaxed) {
            if was {
                link.outages.fetch_add(1, Ordering::Relaxed);
            }
            let reason = self.last_error.lock().clone();
            tracing::warn!(server = %self.config.server(), %reason,
                "fleet: redis unreachable or too slow; running on local health and probing every region until it returns");
        }
        self.connected.send_if_modified(|v| std::mem::replace(v, now) != now);
    }

    fn set_admin(&self, node: NodeId, state: AdminState) {
        self.monitor.snapshot().node(node).metrics().set_admin(state);
        self.fleet_drained[node.index()].store(state == AdminState::Drained, Ordering::Relaxed);
    }

    async fn backoff(&self, delay: &mut Duration) {
        sleep_until(TokioInstant::now() + *delay).await;
        *delay = (*delay * 2).min(self.config.reconnect_max);
    }

    // ----- command link -----

    async fn command_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Outgoing>) {
        let mut delay = self.config.reconnect_min;
        // Drains asked for while Redis was down, sent on reconnect.
        let mut pending_admin: Vec<Option<AdminState>> = vec![None; self.keys.len()];
        let mut limits = self.limit_states();
        let mut budget = BudgetRound::default();
        loop {
            if let Some(mut conn) = self.connect().await {
                delay = self.config.reconnect_min;
                let _ = self.command_session(&mut conn, &mut rx, &mut pending_admin, &mut limits, &mut budget).await;
            }
            self.set_link(true, false);
            // Verdicts that arrive meanwhile are not queued: those still running are
            // republished from local state on reconnect.
            let until = TokioInstant::now() + delay;
            loop {
                tokio::select! {
                    () = sleep_until(until) => break,
                    msg = rx.recv() => match msg {
                        Some(Outgoing::Verdict(..)) => { self.link.unsent.fetch_add(1, Ordering::Relaxed); }
                        Some(Outgoing::Admin(node, state)) => pending_admin[node.index()] = Some(state),
                        None => return,
                    },
                }
            }
            delay = (delay * 2).min(self.config.reconnect_max);
        }
    }

    async fn command_session(
        &self,
        conn: &mut MultiplexedConnection,
        rx: &mut mpsc::Receiver<Outgoing>,
        pending_admin: &mut [Option<AdminState>],
        limits: &mut [LimitState],
        budget: &mut BudgetRound,
    ) -> Result<(), LinkDown> {
        self.lease_round(conn).await?;
        self.budget_round(conn, budget).await?;
        self.republish(conn, pending_admin).await?;
        self.set_link(true, true);
        let mut next_round = TokioInstant::now() + self.lease_period();
        let tick = crate::limits::tick(self.config.limit_window);
        let mut next_tick = TokioInstant::now();
        loop {
            tokio::select! {
                () = sleep_until(next_round) => {
                    next_round = TokioInstant::now() + self.lease_period();
                    self.lease_round(conn).await?;
                    self.budget_round(conn, budget).await?;
                }
                // Only when some region is limited.
                () = sleep_until(next_tick), if !limits.is_empty() => {
                    next_tick = TokioInstant::now() + tick;
                    self.limit_round(conn, limits).await?;
                }
                msg = rx.recv() => match msg {
                    Some(msg) => self.send(conn, msg).await?,
                    None => return Ok(()),
                },
            }
        }
    }

    /// One lease round, in one round trip: announces this replica (and learns the fleet's
    /// size), renews the leases it holds (recording its verdict for each) up to its fair share
    /// (regions / replicas, rounded up), releases any beyond it, and seeks free ones while
    /// below it. So probing spreads over the fleet, and a new replica gets its share within a
    /// round or two.
    async fn lease_round(&self, conn: &mut MultiplexedConnection) -> Result<(), LinkDown> {
        enum Act {
            Presence,
            Renew(usize),
            Release(usize),
            Seek(usize),
        }
        let me = &self.config.replica_id;
        let lease_ms = self.lease_ms();
        let regions = self.keys.len();
        let fair = regions.div_ceil(self.fleet_size.load(Ordering::Relaxed).max(1));
        let mut pipe = redis::pipe();
        let mut acts = Vec::with_capacity(regions + 1);
        pipe.cmd("EVAL").arg(PRESENCE).arg(1).arg(&self.replicas_key).arg(me).arg(lease_ms);
        acts.push(Act::Presence);
        let mut kept = 0;
        for (i, keys) in self.keys.iter().enumerate() {
            if !self.link.held[i].load(Ordering::Relaxed) {
                continue;
            }
            if kept < fair {
                kept += 1;
                let verdict = match self.monitor.snapshot().nodes()[i].metrics().health() {
                    HealthState::Healthy => "up",
                    HealthState::Unhealthy => "down",
                    _ => "",
                };
                pipe.cmd("EVAL").arg(RENEW).arg(2).arg(&keys.lease).arg(&keys.health);
                pipe.arg(me).arg(lease_ms).arg(verdict).arg(lease_ms.saturating_mul(2));
                acts.push(Act::Renew(i));
            } else {
                pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(&keys.lease).arg(me);
                acts.push(Act::Release(i));
            }
        }
        // Below the fair share, try every free-looking lease: which ones others hold is unknown
        // here. Getting more than the share is undone by the next round's releases.
        if kept < fair {
            for (i, keys) in self.keys.iter().enumerate() {
                if !self.link.held[i].load(Ordering::Relaxed) {
                    pipe.cmd("SET").arg(&keys.lease).arg(me).arg("NX").arg("PX").arg(lease_ms);
                    acts.push(Act::Seek(i));
                }
            }
        }
        let results: Vec<Value> = self.query(conn, &pipe, false).await?;
        for (act, value) in acts.iter().zip(&results) {
            let (i, held) = match act {
                Act::Presence => {
                    if let Value::Int(n) = value {
                        self.fleet_size.store(usize::try_from(*n).unwrap_or(1).max(1), Ordering::Relaxed);
                    }
                    continue;
                }
                Act::Renew(i) => (*i, matches!(value, Value::Int(1))),
                Act::Release(i) => (*i, false),
                Act::Seek(i) => {
                    (*i, matches!(value, Value::Okay) || matches!(value, Value::SimpleString(s) if s == "OK"))
                }
            };
            if self.link.held[i].swap(held, Ordering::Relaxed) != held {
                tracing::debug!(region = %self.keys[i].region, held, fair, "fleet: probe lease changed hands");
            }
        }
        Ok(())
    }

    /// One round of the shared retry budget (see [`BUDGET`]); nothing unless it is shared.
    async fn budget_round(&self, conn: &mut MultiplexedConnection, round: &mut BudgetRound) -> Result<(), LinkDown> {
        let Some(budget) = &self.budget else { return Ok(()) };
        // After an outage, share again only once both links are back (the local budget
        // applies meanwhile); at the first connection the links come up after this round.
        if self.ever_up.load(Ordering::Relaxed) && !self.link.subscription_up.load(Ordering::Acquire) {
            return Ok(());
        }
        let calls = budget.calls();
        let ask = round.ask(budget, calls);
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL").arg(BUDGET).arg(1).arg(&self.budget_prefix);
        pipe.arg(ask.bucket_ms).arg(crate::limits::BUDGET_BUCKETS).arg(ask.calls).arg(budget.ratio_milli());
        pipe.arg(budget.reserve()).arg(self.fleet_size.load(Ordering::Relaxed).max(1));
        pipe.arg(round.bucket).arg(ask.returned);
        let (reply,): (Vec<i64>,) = self.query(conn, &pipe, false).await?;
        let [granted, bucket, fleet_calls, fleet_claims] = reply[..] else { return Err(LinkDown) };
        round.answered(calls, bucket, granted);
        // The grant outlives a few missed rounds at most; a stalled link falls back to local.
        let valid = self.lease_period() * 3 + self.config.op_timeout * 2;
        budget.grant_shared(granted - ask.returned, Self::now() + valid);
        self.link.budget_granted.fetch_add(granted.max(0) as u64, Ordering::Relaxed);
        tracing::trace!(granted, returned = ask.returned, fleet_calls, fleet_claims, "fleet: retry budget round");
        Ok(())
    }

    /// The limited regions this replica knows (a limit on an unknown region is logged once).
    fn limit_states(&self) -> Vec<LimitState> {
        let snapshot = self.monitor.snapshot();
        self.config
            .region_limits
            .iter()
            .filter_map(|limit| {
                let node = snapshot.find(&limit.region);
                if node.is_none() {
                    tracing::warn!(region = %limit.region, "fleet: request limit on an unknown region, ignored");
                }
                let node = node?;
                let started = snapshot.node(node).metrics().requests_started();
                Some(LimitState::new(node, limit.per_window, limit.batch, started))
            })
            .collect()
    }

    /// Spends the limited regions' local tokens by the calls started since the last tick, and
    /// claims the next batch for each running low, in one round trip. A region whose fleet
    /// window is spent is held in cooldown for the rest of the window.
    async fn limit_round(&self, conn: &mut MultiplexedConnection, limits: &mut [LimitState]) -> Result<(), LinkDown> {
        let snapshot = self.monitor.snapshot();
        let now = Self::now();
        let window_ms = message::millis(self.config.limit_window).max(1);
        let mut pipe = redis::pipe();
        let mut asked = Vec::new();
        for (i, state) in limits.iter_mut().enumerate() {
            let started = snapshot.node(state.node).metrics().requests_started();
            if let Some(want) = state.spend(started, now) {
                pipe.cmd("EVAL").arg(CLAIM).arg(1).arg(&self.keys[state.node.index()].limit);
                pipe.arg(window_ms).arg(want).arg(state.per_window);
                asked.push((i, want));
            }
        }
        if asked.is_empty() {
            return Ok(());
        }
        let replies: Vec<Vec<i64>> = self.query(conn, &pipe, false).await?;
        let now = Self::now();
        for ((i, want), reply) in asked.into_iter().zip(replies) {
            let [granted, window, left_ms] = reply[..] else { return Err(LinkDown) };
            let state = &mut limits[i];
            self.link.limit_claimed.fetch_add(granted.max(0) as u64, Ordering::Relaxed);
            let left = Duration::from_millis(left_ms.max(1) as u64);
            if state.claimed(want, granted, window, left, now) {
                self.link.limit_exhausted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(region = %self.keys[state.node.index()].region, ?left,
                    "fleet: the region's request limit is spent fleet-wide; cooling it down for the rest of the window");
                self.monitor.apply_shared(state.node, SharedVerdict::Cooldown { remaining: left }, now);
            }
        }
        Ok(())
    }

    /// After a (re)connect: publishes the cooldowns and ejections still running here, and
    /// the drains asked for while Redis was down.
    async fn republish(
        &self,
        conn: &mut MultiplexedConnection,
        pending_admin: &mut [Option<AdminState>],
    ) -> Result<(), LinkDown> {
        let now = Self::now();
        for (i, id) in self.monitor.snapshot().ids().iter().enumerate() {
            if let Some(state) = pending_admin[i].take() {
                self.send(conn, Outgoing::Admin(*id, state)).await?;
            }
            let Some(status) = self.monitor.status(*id, now) else { continue };
            if let Some(until) = status.cooldown_until {
                let remaining = until.saturating_duration_since(now);
                self.send(conn, Outgoing::Verdict(*id, SharedVerdict::Cooldown { remaining })).await?;
            }
            if let Some(until) = status.ejected_until {
                let remaining = until.saturating_duration_since(now);
                self.send(conn, Outgoing::Verdict(*id, SharedVerdict::Ejected { remaining })).await?;
            }
        }
        Ok(())
    }

    /// Publishes one message and updates its keyed record, in one round trip.
    async fn send(&self, conn: &mut MultiplexedConnection, msg: Outgoing) -> Result<(), LinkDown> {
        let (node, body) = match msg {
            Outgoing::Verdict(node, v) => (node, Body::Verdict(v)),
            Outgoing::Admin(node, state) => (node, Body::Admin(state)),
        };
        let Some(keys) = self.keys.get(node.index()) else { return Ok(()) };
        let Some(wire) = message::encode(&self.config.replica_id, &keys.region, body) else { return Ok(()) };
        let mut pipe = redis::pipe();
        match body {
            Body::Verdict(SharedVerdict::Down) => {
                pipe.cmd("SET").arg(&keys.health).arg("down").arg("PX").arg(self.lease_ms() * 2).ignore();
            }
            Body::Verdict(SharedVerdict::Up) => {
                pipe.cmd("SET").arg(&keys.health).arg("up").arg("PX").arg(self.lease_ms() * 2).ignore();
            }
            Body::Verdict(SharedVerdict::Ejected { remaining }) => {
                pipe.cmd("EVAL").arg(EXTEND).arg(1).arg(&keys.eject).arg(message::millis(remaining)).ignore();
            }
            Body::Verdict(SharedVerdict::EjectionEnded) => {
                pipe.cmd("DEL").arg(&keys.eject).ignore();
            }
            Body::Verdict(SharedVerdict::Cooldown { remaining }) => {
                pipe.cmd("EVAL").arg(EXTEND).arg(1).arg(&keys.cool).arg(message::millis(remaining)).ignore();
            }
            Body::Admin(AdminState::Drained) => {
                pipe.cmd("SET").arg(&keys.admin).arg("drained").ignore();
            }
            Body::Admin(_) => {
                pipe.cmd("DEL").arg(&keys.admin).ignore();
            }
            Body::Verdict(_) => {}
        }
        pipe.cmd("PUBLISH").arg(&self.channel).arg(wire).ignore();
        self.query::<()>(conn, &pipe, true).await?;
        self.link.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    // ----- subscription link -----

    async fn subscription_loop(self: Arc<Self>) {
        let mut delay = self.config.reconnect_min;
        loop {
            if self.subscription_session(&mut delay).await.is_err() {
                self.set_link(false, false);
            }
            self.backoff(&mut delay).await;
        }
    }

    async fn subscription_session(&self, delay: &mut Duration) -> Result<(), LinkDown> {
        let op = self.config.op_timeout;
        let pubsub = match timeout(op, self.client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            Ok(Err(error)) => {
                self.failed_because(format!("subscription failed: {error}"));
                return Err(LinkDown);
            }
            Err(_) => {
                self.failed_because(format!("subscription timed out after {op:?}"));
                return Err(LinkDown);
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        self.link.background_ops.fetch_add(1, Ordering::Relaxed);
        if !matches!(timeout(op, sink.subscribe(&self.channel)).await, Ok(Ok(()))) {
            return Err(LinkDown);
        }
        // Subscribed first, then read the records: nothing published meanwhile is missed.
        let mut conn = self.connect().await.ok_or(LinkDown)?;
        self.resync(&mut conn).await?;
        drop(conn);
        *delay = self.config.reconnect_min;
        self.set_link(false, true);
        let mut next_ping = TokioInstant::now() + self.lease_period();
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => self.handle(msg.get_payload_bytes()),
                    None => return Err(LinkDown),
                },
                () = sleep_until(next_ping) => {
                    // A hung server sends nothing; a ping tells it apart from a quiet fleet.
                    next_ping = TokioInstant::now() + self.lease_period();
                    self.link.background_ops.fetch_add(1, Ordering::Relaxed);
                    if !matches!(timeout(op, sink.ping::<Value>()).await, Ok(Ok(_))) {
                        return Err(LinkDown);
                    }
                }
            }
        }
    }

    /// Reads every region's keyed records and applies them: what a late starter or a
    /// reconnecting replica missed on the channel.
    async fn resync(&self, conn: &mut MultiplexedConnection) -> Result<(), LinkDown> {
        let mut pipe = redis::pipe();
        for keys in &self.keys {
            pipe.cmd("GET").arg(&keys.health);
            pipe.cmd("PTTL").arg(&keys.eject);
            pipe.cmd("PTTL").arg(&keys.cool);
            pipe.cmd("GET").arg(&keys.admin);
        }
        let values: Vec<Value> = self.query(conn, &pipe, false).await?;
        let now = Self::now();
        for (i, record) in values.chunks_exact(4).enumerate().take(self.keys.len()) {
            let node = NodeId::from_index(i as u32);
            match text(&record[0]) {
                Some("down") => self.apply(node, SharedVerdict::Down, now),
                Some("up") => self.apply(node, SharedVerdict::Up, now),
                _ => {}
            }
            if let Some(ms) = ttl(&record[1]) {
                self.apply(node, SharedVerdict::Ejected { remaining: Duration::from_millis(ms) }, now);
            }
            if let Some(ms) = ttl(&record[2]) {
                self.apply(node, SharedVerdict::Cooldown { remaining: Duration::from_millis(ms) }, now);
            }
            match text(&record[3]) {
                Some("drained") => self.set_admin(node, AdminState::Drained),
                _ if self.fleet_drained[i].load(Ordering::Relaxed) => self.set_admin(node, AdminState::Enabled),
                _ => {}
            }
        }
        Ok(())
    }

    /// Handles one payload from the channel; never panics.
    fn handle(&self, payload: &[u8]) {
        let link = &self.link;
        link.received.fetch_add(1, Ordering::Relaxed);
        let msg = match message::decode(payload) {
            Ok(msg) => msg,
            Err(error) => {
                link.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?error, len = payload.len(), "fleet: ignored a malformed message");
                return;
            }
        };
        if msg.replica == self.config.replica_id {
            return;
        }
        let Some(node) = self.node(msg.region) else {
            link.unknown_region.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match msg.body {
            Body::Verdict(v) => self.apply(node, v, Self::now()),
            Body::Admin(state) => self.set_admin(node, state),
        }
        link.applied.fetch_add(1, Ordering::Relaxed);
    }

    fn apply(&self, node: NodeId, verdict: SharedVerdict, now: std::time::Instant) {
        // The lease holder probes this node itself: its own verdict stands.
        if matches!(verdict, SharedVerdict::Up | SharedVerdict::Down)
            && self.link.held[node.index()].load(Ordering::Relaxed)
        {
            return;
        }
        self.monitor.apply_shared(node, verdict, now);
    }
}

/// A string reply, if it is one.
fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A positive PTTL reply in milliseconds (missing keys and keys without expiry give `None`).
fn ttl(v: &Value) -> Option<u64> {
    match v {
        Value::Int(ms) if *ms > 0 => Some((*ms as u64).min(message::MAX_DURATION_MS)),
        _ => None,
    }
}
