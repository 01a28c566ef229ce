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

impl From<sluice_gateway::ServeError> for CliError {
    fn from(e: sluice_gateway::ServeError) -> Self {
        match e {
            sluice_gateway::ServeError::Usage(m) => CliError::Usage(m),
            other => CliError::Failed(other.to_string()),
        }
    }
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

pub(crate) use sluice_gateway::error::chain;
