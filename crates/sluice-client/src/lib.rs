#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod budget;
mod builder;
mod client;
mod config;
mod credentials;
mod error;
mod latency;
mod meta;
mod models;
mod probe;
mod provider;
mod reload;
mod rescue;
mod routing;
mod sse;
mod stream;
pub mod telemetry;
mod trace;
mod types;

#[doc(inline)]
pub use self::{
    budget::RetryBudget,
    builder::ClientBuilder,
    client::{CallOptions, Client},
    config::{
        DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CREDENTIALS_EXCLUSION, DEFAULT_FIRST_CHUNK_TIMEOUT,
        DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_WAIT, DEFAULT_RETRY_AFTER_CAP,
        DEFAULT_RETRY_BUDGET_TTL, DEFAULT_RETRY_MIN_PER_SEC, DEFAULT_RETRY_RATIO, DEFAULT_TOTAL_TIMEOUT,
        FailoverPolicy, HedgePolicy, Timeouts,
    },
    error::{BuildError, Error, ErrorKind},
    meta::{AttemptFailure, FailedAttempt, Response, ResponseMeta},
    models::{DEFAULT_MODEL_NOT_FOUND_TTL, ModelRouting},
    provider::{Provider, ProviderKind},
    reload::RegionChanges,
    stream::{ChatStream, RawBody, RawRequest, RawResponse},
    trace::TraceParent,
    types::{
        ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Choice, ChunkChoice, Delta, Model,
        ModelList,
    },
};

pub use sluice_balancer::{Strategy, StrategyKind};
pub use sluice_health::{OutlierConfig, Probe, ProbeConfig, classify};
pub use sluice_region_model::{ApiKey, GeoPoint, Region};
