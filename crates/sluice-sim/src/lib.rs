#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod engine;
mod error;
mod naive;
#[cfg(feature = "plots")]
mod plot;
mod report;
mod scenario;

#[doc(inline)]
pub use self::{
    engine::{Contender, Progress, simulate, simulate_strategy, simulate_with_progress},
    error::SimError,
    naive::{NAIVE_PROBE_INTERVAL, NAIVE_STRIKES, NaiveBaseline},
    report::{FailureReport, Percentiles, RESUME_SHARE, Report, RunReport, STOP_GAP_S, ScenarioReport, ShareSeries},
    scenario::{InFlight, Location, Phase, RegionSpec, Scenario},
};

#[cfg(feature = "plots")]
#[cfg_attr(docsrs, doc(cfg(feature = "plots")))]
#[doc(inline)]
pub use self::plot::{plot_cdf, plot_share};
