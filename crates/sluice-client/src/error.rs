//! Errors.

use std::{
    error::Error as StdError,
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::FailedAttempt;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a call failed, with the attempts that led there.
///
/// Match on [`Error::kind`]. Transport errors (reqwest) are reachable only through
/// [`std::error::Error::source`], so their types are not part of this API.
/// Nothing here ever contains an API key.
pub struct Error {
    kind: ErrorKind,
    attempts: Vec<FailedAttempt>,
    source: Option<BoxError>,
    /// The upstream's answer headers, for an answer ([`ErrorKind::Status`]).
    headers: Option<Box<http::HeaderMap>>,
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No region could take the call, even in panic mode.
    NoEligibleRegion {
        /// When the earliest cooldown or ejection ends, if one will.
        retry_at: Option<Instant>,
    },
    /// A region refused the credentials (401 or 403), and no region with another key was left.
    Credentials {
        /// The region.
        region: Arc<str>,
        /// 401 or 403.
        status: u16,
    },
    /// A region answered with an error status that is returned as is: a client error such
    /// as 400, 404, 413 or 422 (never retried), or the last retryable error when attempts or
    /// the retry budget ran out.
    Status {
        /// The region.
        region: Arc<str>,
        /// The HTTP status.
        status: u16,
        /// The answer's body, unchanged (an OpenAI error object, usually).
        body: Bytes,
        /// The answer's Retry-After, capped.
        retry_after: Option<Duration>,
    },
    /// The last attempt could not connect.
    Connect {
        /// The region.
        region: Arc<str>,
    },
    /// The last attempt timed out (before an answer, or before a stream's first chunk).
    Timeout {
        /// The region.
        region: Arc<str>,
    },
    /// The call's deadline passed.
    DeadlineExceeded,
    /// A region's answer could not be parsed.
    InvalidResponse {
        /// The region.
        region: Arc<str>,
    },
    /// A region answered with success, but its body could not be decoded. The answer was
    /// generated, so the call is not retried; the parse error is the [`source`](StdError::source).
    Decode {
        /// The region.
        region: Arc<str>,
    },
    /// Health checks marked the region down while the call waited for its answer, and no other
    /// region could take the call.
    Rescued {
        /// The region.
        region: Arc<str>,
    },
    /// An answer broke after the call committed, so it is not retried: a stream after its
    /// first content, or a plain answer's body after its success head (the answer was
    /// generated; a second attempt would generate it again).
    StreamInterrupted {
        /// The region.
        region: Arc<str>,
    },
    /// The request could not be encoded.
    InvalidRequest,
    /// No region serves the model (aliases resolved): the call was not sent. A gateway
    /// answers 404 `model_not_found`.
    ModelNotFound {
        /// The model asked for.
        model: String,
    },
    /// The call is restricted to zones where no region serves it: the call was not sent.
    /// A gateway answers 503.
    NoRegionInZones {
        /// The allowed zones, comma-separated.
        zones: String,
        /// The model, if the call named one.
        model: Option<String>,
    },
    /// A preferred region that the client does not know.
    UnknownRegion {
        /// The id asked for.
        region: String,
        /// The known ids, comma-separated.
        known: String,
    },
}

// ===== impl Error =====

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self { kind, attempts: Vec::new(), source: None, headers: None }
    }

    pub(crate) fn with_headers(mut self, headers: http::HeaderMap) -> Self {
        self.headers = Some(Box::new(headers));
        self
    }

    /// The headers of the upstream's error answer ([`ErrorKind::Status`]), as the region sent
    /// them: its `x-request-id`, `x-ratelimit-*`, `retry-after-ms`... A gateway passes the
    /// ones its callers need back. Never shown in `Debug` or `Display`.
    pub fn upstream_headers(&self) -> Option<&http::HeaderMap> {
        self.headers.as_deref()
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: Vec<FailedAttempt>) -> Self {
        self.attempts = attempts;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The attempts that failed before this error, in order.
    pub fn failed_attempts(&self) -> &[FailedAttempt] {
        &self.attempts
    }

    /// The upstream HTTP status, if the error is an answer.
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            ErrorKind::Status { status, .. } | ErrorKind::Credentials { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long to wait before calling again, when known: the earliest end of a cooldown for
    /// [`ErrorKind::NoEligibleRegion`], the Retry-After of a [`ErrorKind::Status`].
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.kind {
            ErrorKind::NoEligibleRegion { retry_at } => {
                retry_at.map(|t| t.saturating_duration_since(tokio::time::Instant::now().into_std()))
            }
            ErrorKind::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether calling again later may succeed (as opposed to a request that would fail
    /// everywhere, or a credentials fault).
    pub fn is_retryable(&self) -> bool {
        match &self.kind {
            ErrorKind::Status { status, .. } => *status == 429 || *status >= 500 || *status == 408,
            ErrorKind::NoEligibleRegion { .. }
            | ErrorKind::Connect { .. }
            | ErrorKind::Timeout { .. }
            | ErrorKind::DeadlineExceeded
            | ErrorKind::Rescued { .. }
            | ErrorKind::StreamInterrupted { .. } => true,
            _ => false,
        }
    }

    /// Whether a timeout or the deadline ended the call.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::Timeout { .. } | ErrorKind::DeadlineExceeded)
    }

    /// The region the error came from, if one.
    pub fn region(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::Credentials { region, .. }
            | ErrorKind::Status { region, .. }
            | ErrorKind::Connect { region }
            | ErrorKind::Timeout { region }
            | ErrorKind::InvalidResponse { region }
            | ErrorKind::Decode { region }
            | ErrorKind::Rescued { region }
            | ErrorKind::StreamInterrupted { region } => Some(region),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::NoEligibleRegion { .. } => match self.retry_after() {
                Some(after) => {
                    write!(f, "no region is eligible; the earliest cooldown ends in {:.1}s", after.as_secs_f64())
                }
                None => f.write_str("no region is eligible"),
            },
            ErrorKind::Credentials { region, status } => {
                write!(f, "region `{region}` rejected the api key (http {status})")
            }
            ErrorKind::Status { region, status, .. } => write!(f, "region `{region}` answered http {status}"),
            ErrorKind::Connect { region } => write!(f, "could not connect to region `{region}`"),
            ErrorKind::Timeout { region } => write!(f, "region `{region}` timed out"),
            ErrorKind::DeadlineExceeded => f.write_str("call deadline exceeded"),
            ErrorKind::InvalidResponse { region } => write!(f, "invalid response from region `{region}`"),
            ErrorKind::Decode { region } => write!(f, "the answer of region `{region}` could not be decoded"),
            ErrorKind::Rescued { region } => write!(f, "region `{region}` was marked down while the call waited"),
            ErrorKind::StreamInterrupted { region } => write!(f, "stream from region `{region}` was cut off"),
            ErrorKind::InvalidRequest => f.write_str("request could not be encoded"),
            ErrorKind::ModelNotFound { model } => write!(f, "no region serves model `{model}`"),
            ErrorKind::NoRegionInZones { zones, model: Some(model) } => {
                write!(f, "no region in zone(s) {zones} serves model `{model}`")
            }
            ErrorKind::NoRegionInZones { zones, model: None } => write!(f, "no region in zone(s) {zones}"),
            ErrorKind::UnknownRegion { region, known } => write!(f, "unknown region `{region}` (known: {known})"),
        }?;
        if !self.attempts.is_empty() {
            write!(f, " after {} failed attempt(s)", self.attempts.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .field("source", &self.source)
            .finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// Why a [`Client`](crate::Client) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The regions are invalid.
    #[error("invalid regions")]
    Regions(#[from] sluice_region_model::SnapshotError),
    /// A health setting is invalid.
    #[error("invalid health settings")]
    Health(#[from] sluice_health::ConfigError),
    /// A setting is out of range.
    #[error("{setting} must be {expected}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// `build` was called outside a Tokio runtime; the prober and the rescue watcher need one.
    #[error("Client::build must run inside a Tokio runtime")]
    NoRuntime,
    /// A region's provider, models or zone, or the model routing tables, are invalid.
    #[error("region `{region}`: {message}")]
    Routing {
        /// The region (or `[models]` for the routing tables).
        region: String,
        /// What is wrong.
        message: String,
    },
    /// The HTTP client could not be created.
    #[error("http client could not be created")]
    Http(#[source] BoxError),
}
