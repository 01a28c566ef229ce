//! Cross-crate benchmarks for sluice; the code lives in `benches/`.
