//! Cross-crate benchmarks for sluice; the benches live in `benches/`.
