#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]

pub mod error;
mod proxy;
mod region_state;

#[doc(inline)]
pub use self::{
    error::ServeError,
    proxy::{ATTEMPTS_HEADER, LOCATION_HEADER, REGION_HEADER, ServeOptions, parse_location, run},
    region_state::{RegionState, now},
};
