//! The retry budget lives in `sluice-health`, so that fleet mode can share it without depending on the client.

pub use sluice_health::RetryBudget;
