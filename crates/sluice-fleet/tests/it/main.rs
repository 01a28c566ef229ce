//! Fleet mode against a real `redis-server` started by the tests on a free loopback port.
//!
//! `redis-server` must be installed (`.ci/run` installs it); a missing binary fails the tests
//! with a clear message instead of skipping them.

// Fixtures: redis-server, a multi-replica upstream, replicas.
mod support;

// A 429 with Retry-After on one replica spares the region the others' calls.
mod propagation;
// Each region probed by one replica; a dead lease holder's regions are taken over.
mod probe_split;
// Redis killed or hung mid-run: calls keep succeeding; Redis back: resync.
mod outage;
// Down/up, ejections, a late starter's catch-up, hostile messages.
mod verdicts;
// Three replicas against rate-limited regions: fewer 429s with fleet mode than without.
mod chaos;
// Fleet-wide limits: a shared retry budget and per-region request limits; Redis down: off.
mod limits;
