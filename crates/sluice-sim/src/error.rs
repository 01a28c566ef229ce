//! The one error type of the simulator.

use std::io;

/// What can go wrong when loading a scenario or writing a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The TOML text could not be parsed into a scenario.
    #[error("invalid scenario toml: {0}")]
    Toml(String),
    /// A scenario field has a value that makes no sense.
    #[error("scenario `{scenario}`: {reason}")]
    InvalidScenario {
        /// The scenario's name.
        scenario: String,
        /// What is wrong.
        reason: String,
    },
    /// No built-in scenario or contender has this name.
    #[error("unknown {what} `{name}`")]
    Unknown {
        /// `scenario` or `strategy`.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// Writing an output file failed.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Drawing a plot failed.
    #[error("cannot draw {path}: {reason}")]
    Plot {
        /// The file.
        path: String,
        /// The plotting library's message.
        reason: String,
    },
}
