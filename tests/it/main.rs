//! Workspace integration tests: one binary, one module per scenario.
