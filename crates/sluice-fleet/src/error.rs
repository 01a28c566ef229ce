//! Errors of fleet mode.

use std::error::Error as StdError;

/// A boxed error, used as the `source()` of errors that wrap a third-party error.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why fleet mode could not be configured or started.
///
/// Nothing here is ever returned on the call path: once started, fleet mode only logs and
/// falls back to local health.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The Redis URL could not be parsed. The message never contains the URL, which may hold
    /// a password.
    #[error("invalid redis url")]
    InvalidUrl {
        /// The parser's error.
        #[source]
        source: BoxError,
    },
    /// The URL is `rediss://` but the crate was built without its `tls` feature.
    #[error("rediss:// needs the `tls` feature of sluice-fleet")]
    TlsDisabled,
    /// A credential was to be read from an environment variable that is not set (or not
    /// unicode).
    #[error("environment variable {name} is not set")]
    MissingCredential {
        /// The variable's name.
        name: String,
    },
    /// A setting is out of range.
    #[error("invalid fleet setting `{name}`: {reason}")]
    InvalidSetting {
        /// The setting.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The health monitor already has a hook (fleet mode was started on it before).
    #[error("the health monitor already has a hook")]
    HookTaken,
    /// No region of the monitor's snapshot has this id.
    #[error("unknown region {region}")]
    UnknownRegion {
        /// The id asked for.
        region: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_one_level() {
        let errors = [
            FleetError::InvalidUrl { source: "bad".into() },
            FleetError::TlsDisabled,
            FleetError::MissingCredential { name: "X".into() },
            FleetError::InvalidSetting { name: "lease", reason: "must be at least 30 ms" },
            FleetError::HookTaken,
            FleetError::UnknownRegion { region: "r".into() },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(text.chars().next().is_some_and(|c| c.is_lowercase()), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
    }
}
