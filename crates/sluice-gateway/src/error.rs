//! The gateway's errors.

/// Why the gateway could not start or run. None carries an API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Bad input from the command line or the environment.
    #[error("{0}")]
    Usage(String),
    /// Starting or running failed: a port is taken, metrics could not be set up.
    #[error("{0}")]
    Failed(String),
}

/// Writes an error and its sources on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
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
