//! sluice-client (work in progress).
