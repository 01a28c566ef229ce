//! sluice-balancer (work in progress).
