//! The command's errors and their exit codes.

use crate::config::ConfigError;

/// Why a command failed. Every variant maps to an exit code; none carries an API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A configuration file is missing, unreadable or invalid. Exit code 2.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Bad input on the command line or in the environment. Exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The work itself failed: no region answered, a port is taken, a stream broke. Exit code 1.
    #[error("{0}")]
    Failed(String),
    /// A feature that this build does not have. Exit code 2.
    #[error("{0}")]
    Unavailable(String),
}

// ===== impl CliError =====

impl CliError {
    /// The process exit code: 2 for bad input, 1 for a failure at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) | CliError::Unavailable(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

/// Writes an error and its sources as one line each.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
