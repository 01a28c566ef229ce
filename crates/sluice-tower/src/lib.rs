#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod balance;
mod body;
mod builder;
mod classify;
mod error;
mod future;
mod layer;
mod retry;

#[doc(inline)]
pub use self::{
    balance::{Balance, DEFAULT_REFRESH, Regional},
    body::GuardedBody,
    builder::BalanceBuilder,
    classify::{Classify, HttpClassify},
    error::{BoxError, BuildError, Error},
    future::ResponseFuture,
    layer::SluiceLayer,
    retry::{DEFAULT_MAX_ATTEMPTS, Failover, FailoverLayer, FailoverPolicy, Tried},
};
