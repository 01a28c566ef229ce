#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod budget;
pub mod classify;
mod config;
mod error;
mod event;
mod hook;
mod hysteresis;
mod monitor;
mod outlier;
// mockall's generated `MockProbe` uses `std::sync::Mutex` internally.
#[cfg_attr(any(test, feature = "mock"), allow(clippy::disallowed_types))]
mod probe;
mod prober;

#[cfg(feature = "http")]
mod http;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;

pub use async_trait::async_trait;

#[doc(inline)]
pub use self::{
    budget::RetryBudget,
    config::{
        DEFAULT_BASE_EJECTION, DEFAULT_CONSECUTIVE_FAILURES, DEFAULT_EJECTION_DECAY, DEFAULT_ERROR_PENALTY,
        DEFAULT_FAILURE_RATE_MIN_REQUESTS, DEFAULT_FAILURE_RATE_THRESHOLD, DEFAULT_FAILURE_RATE_WINDOW, DEFAULT_FALL,
        DEFAULT_INITIAL_JITTER, DEFAULT_MAX_EJECTION, DEFAULT_MAX_EJECTION_PERCENT, DEFAULT_PROBE_INTERVAL,
        DEFAULT_PROBE_JITTER, DEFAULT_PROBE_TIMEOUT, DEFAULT_RETRY_AFTER_CAP, DEFAULT_RISE, DEFAULT_SLOW_START_FLOOR,
        DEFAULT_SLOW_START_WINDOW, DEFAULT_TIMER_GRANULARITY, DEFAULT_UNHEALTHY_INTERVAL, OutlierConfig,
        OutlierConfigBuilder, ProbeConfig, ProbeConfigBuilder,
    },
    error::{ConfigError, ProbeError},
    event::{EjectionReason, HealthEvent, HealthEventKind},
    hook::{GATED_RTT_PROBE_EVERY, HealthHook, SharedVerdict},
    monitor::{EVENT_CHANNEL_CAPACITY, HealthMonitor, NodeStatus, Outcome, Selection},
    probe::Probe,
    prober::ProberHandle,
};

#[cfg(any(test, feature = "mock"))]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
#[doc(inline)]
pub use self::probe::MockProbe;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[doc(inline)]
pub use self::http::{HttpProbe, HttpProbeBuilder, MAX_MODELS_BODY, read_models_response, transport_error};
