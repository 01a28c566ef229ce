//! sluice-health (work in progress).
