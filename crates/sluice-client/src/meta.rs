//! What every response says about how it was served.

use std::{fmt, sync::Arc, time::Duration};

use sluice_region_model::NodeId;

/// How one call was served. Returned beside the body, never injected into it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResponseMeta {
    /// The region that served the call.
    pub region: Arc<str>,
    /// Its node id in the client's snapshot.
    pub node: NodeId,
    /// Attempts made, the successful one included (hedges and rescues count).
    pub attempts: u32,
    /// The attempts that did not serve the call, in the order they ended.
    pub failed_attempts: Vec<FailedAttempt>,
    /// From the start of the call to the response (for streams: to the first chunk).
    pub latency: Duration,
    /// Whether the call was served by another region than the first one tried.
    pub failed_over: bool,
    /// Attempts abandoned because health checks marked their region down.
    pub rescues: u32,
    /// Whether a hedge attempt was sent.
    pub hedged: bool,
    /// The model that served the call, when the call named one: the requested model with
    /// its alias resolved, or the fallback model that took over.
    pub model: Option<Arc<str>>,
}

/// One attempt that did not serve the call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FailedAttempt {
    /// The region tried.
    pub region: Arc<str>,
    /// Its node id.
    pub node: NodeId,
    /// What went wrong.
    pub failure: AttemptFailure,
    /// How long the attempt took.
    pub elapsed: Duration,
}

/// Why an attempt did not serve the call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptFailure {
    /// The connection could not be opened or broke before an answer.
    Connect,
    /// No answer within the attempt timeout.
    Timeout,
    /// The answer's status was an error.
    Status {
        /// The HTTP status.
        status: u16,
        /// The Retry-After it carried, capped.
        retry_after: Option<Duration>,
    },
    /// A stream's first chunk did not arrive in time, or the stream failed before it.
    FirstChunk,
    /// The answer could not be read or parsed.
    InvalidResponse,
    /// Health checks marked the region down while the call waited; it was re-sent.
    Rescued,
    /// A hedge that lost the race, cancelled.
    Cancelled,
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptFailure::Connect => f.write_str("connection failed"),
            AttemptFailure::Timeout => f.write_str("timed out"),
            AttemptFailure::Status { status, retry_after: Some(after) } => {
                write!(f, "http {status}, retry after {after:?}")
            }
            AttemptFailure::Status { status, retry_after: None } => write!(f, "http {status}"),
            AttemptFailure::FirstChunk => f.write_str("no first chunk"),
            AttemptFailure::InvalidResponse => f.write_str("invalid response"),
            AttemptFailure::Rescued => f.write_str("region marked down; re-sent"),
            AttemptFailure::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// A response body with its [`ResponseMeta`].
#[derive(Debug, Clone)]
pub struct Response<T> {
    /// The body.
    pub body: T,
    /// How it was served.
    pub meta: ResponseMeta,
}

impl<T> Response<T> {
    /// Splits into body and metadata.
    pub fn into_parts(self) -> (T, ResponseMeta) {
        (self.body, self.meta)
    }
}
