#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]

pub mod access_log;
pub mod admin;
mod body;
pub mod error;
mod gateway;
mod headers;
mod idempotency;
mod metrics;
mod proxy;
mod region_state;
mod routes;
mod serve;
mod state_map;
mod usage;

#[doc(inline)]
pub use self::{
    error::ServeError,
    gateway::{DEFAULT_MAX_BODY, DEFAULT_MAX_CONCURRENT_CALLS, Gateway, GatewayBuilder},
    headers::{Allowlist, DEFAULT_REQUEST_HEADERS, DEFAULT_RESPONSE_HEADERS, HeaderPolicy},
    idempotency::{DEFAULT_IDEMPOTENCY_BYTES, DEFAULT_IDEMPOTENCY_KEYS, DEFAULT_IDEMPOTENCY_TTL},
    metrics::{MAX_MODEL_LABELS, Price, Prices},
    proxy::{
        ATTEMPTS_HEADER, LOCATION_HEADER, MODEL_HEADER, REGION_HEADER, REPLAY_HEADER, REQUEST_ID_HEADER, ZONES_HEADER,
        parse_location,
    },
    region_state::{RegionState, now},
    serve::{DEFAULT_HEADER_READ_TIMEOUT, ServeOptions, bind, serve},
    state_map::{DEFAULT_STATE_CAPACITY, DEFAULT_STATE_TTL},
    usage::Usage,
};
