//! End-to-end tests: the built `sluice` binary against loopback mock regions.

mod support;

// check-config, probe and chat.
mod commands;
// demo --quick.
mod demo;
// serve, with async-openai as a real third-party client.
mod serve;
// serve with [fleet]: two replicas share a Retry-After through a real redis-server.
mod fleet;
// serve driven by the official openai Python SDK (a venv that .ci/run creates).
mod python_sdk;
// The admin API, live reload (POST and SIGHUP), `status`, JSON logs and the access log.
mod ops;
// serve's limits and metrics: tokens/cost, max_concurrent_calls, header_read_timeout, body limit, disconnects.
mod serve_limits;
// serve built with `otel`: spans reach an OTLP/HTTP receiver started in the test.
#[cfg(feature = "otel")]
mod otel;
