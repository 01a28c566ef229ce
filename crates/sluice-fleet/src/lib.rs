#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod error;
mod fleet;
mod limits;
mod message;

#[doc(inline)]
pub use self::{
    config::{
        DEFAULT_LEASE, DEFAULT_LIMIT_WINDOW, DEFAULT_NAMESPACE, DEFAULT_OP_TIMEOUT, DEFAULT_PASSWORD_ENV,
        DEFAULT_RECONNECT_MAX, DEFAULT_RECONNECT_MIN, DEFAULT_USERNAME_ENV, FleetBuilder, FleetConfig, QUEUE_CAPACITY,
    },
    error::FleetError,
    fleet::{Fleet, FleetStats},
};
