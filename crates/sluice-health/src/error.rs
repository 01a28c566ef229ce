//! Errors of probing and configuration.

use std::error::Error as StdError;

/// A boxed error, used as the `source()` of errors that wrap a third-party error.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why one probe of one node failed.
///
/// Third-party errors (such as reqwest's) are reachable only through
/// [`source()`](std::error::Error::source), so that a major bump of a dependency is not a
/// breaking change here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No complete answer arrived within the probe timeout.
    #[error("probe timed out")]
    Timeout,
    /// The connection could not be set up or broke before the answer was complete: refused,
    /// reset, DNS or TLS failure.
    #[error("connection failed")]
    Connect {
        /// The underlying transport error.
        #[source]
        source: BoxError,
    },
    /// The request failed for another transport reason.
    #[error("request failed")]
    Transport {
        /// The underlying transport error.
        #[source]
        source: BoxError,
    },
    /// The node answered with a status that is not a success (redirects are not followed, so
    /// a 3xx lands here too).
    #[error("unexpected http status {status}")]
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// The node refused the credentials (HTTP 401 or 403).
    ///
    /// This is a configuration fault, not an outage: the prober logs it at `error` level and
    /// publishes [`HealthEventKind::CredentialsRejected`](crate::HealthEventKind::CredentialsRejected).
    #[error("credentials rejected with http status {status}")]
    Credentials {
        /// The HTTP status code, 401 or 403.
        status: u16,
    },
    /// A success status whose body is not a models list.
    #[error("response body is not a models list: {reason}")]
    InvalidBody {
        /// What was wrong, in a few words.
        reason: &'static str,
        /// The parse error, if there was one.
        #[source]
        source: Option<BoxError>,
    },
    /// A failure reported by a custom [`Probe`](crate::Probe) implementation.
    #[error("probe failed")]
    Other {
        /// The implementation's error.
        #[source]
        source: BoxError,
    },
}

/// A configuration value was refused by a `build()` method.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A successor snapshot that was not built from the monitor's own (another epoch).
    #[error("the new snapshot was not built from the monitor's snapshot (use SnapshotBuilder::reuse_metrics)")]
    ForeignSnapshot,
    /// A field has a value outside its allowed range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The builder method that set the field.
        field: &'static str,
        /// The rule the value broke.
        reason: &'static str,
    },
    /// The HTTP client could not be built (TLS backend or resolver initialisation).
    #[cfg(feature = "http")]
    #[error("failed to build the http client")]
    HttpClient {
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

// ===== impl ProbeError =====

impl ProbeError {
    /// Wraps a connection error from a custom probe.
    pub fn connect(source: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        Self::Connect { source: source.into() }
    }

    /// Wraps any other error from a custom probe.
    pub fn other(source: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        Self::Other { source: source.into() }
    }

    /// Whether the node gave no answer at all: a timeout, or a connection that was refused
    /// or broke. Any answer (an error status, refused credentials, a bad body) shows a node
    /// that is alive; so does a custom probe's [`Other`](Self::Other) error.
    pub fn is_silence(&self) -> bool {
        matches!(self, Self::Timeout | Self::Connect { .. } | Self::Transport { .. })
    }

    /// Whether the node refused our credentials (401/403): a configuration fault.
    pub fn is_credentials(&self) -> bool {
        matches!(self, Self::Credentials { .. })
    }

    /// Whether the probe timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// The HTTP status of the answer, if one arrived.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status } | Self::Credentials { status } => Some(*status),
            _ => None,
        }
    }
}

// ===== impl ConfigError =====

impl ConfigError {
    pub(crate) const fn invalid(field: &'static str, reason: &'static str) -> Self {
        Self::Invalid { field, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_one_level() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = ProbeError::connect(io);
        assert_eq!(e.to_string(), "connection failed");
        assert_eq!(e.source().unwrap().to_string(), "refused");
        assert_eq!(ProbeError::Credentials { status: 401 }.to_string(), "credentials rejected with http status 401");
        assert!(ProbeError::Credentials { status: 403 }.is_credentials());
        assert_eq!(ProbeError::Status { status: 500 }.status(), Some(500));
        assert!(ProbeError::Timeout.is_timeout());
        assert_eq!(ProbeError::Timeout.status(), None);
        assert_eq!(ConfigError::invalid("rise", "must be at least 1").to_string(), "invalid rise: must be at least 1");
    }
}
