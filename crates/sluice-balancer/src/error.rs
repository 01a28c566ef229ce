//! Configuration errors.

/// A strategy setting was out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A numeric setting was NaN, infinite, negative or zero where that makes no sense.
    #[error("{setting} must be {expected}, got {value}")]
    OutOfRange {
        /// The setting's name.
        setting: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was, as text.
        value: String,
    },
    /// A strategy name was not recognised.
    #[error("unknown strategy `{name}` (expected one of: {expected})")]
    UnknownStrategy {
        /// The name given.
        name: String,
        /// The accepted names, comma-separated.
        expected: &'static str,
    },
}

pub(crate) fn check_positive(setting: &'static str, value: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange { setting, expected: "finite and > 0", value: value.to_string() })
    }
}

pub(crate) fn check_non_negative(setting: &'static str, value: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange { setting, expected: "finite and >= 0", value: value.to_string() })
    }
}
