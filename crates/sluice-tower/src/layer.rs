//! [`SluiceLayer`]: a [`Balance`] from a snapshot and a `MakeService`.

use std::sync::Arc;

use sluice_region_model::{Region, Snapshot};
use tower::{Layer, Service};

use crate::{Balance, BalanceBuilder, BoxError, HttpClassify};

/// A `tower::Layer` that turns a `MakeService` (a `Service<Region>` whose responses are the
/// per-region services) into a [`Balance`] over the regions of a [`Snapshot`].
///
/// Every `Balance` it builds gets the builder's options; a strategy set on the builder is
/// shared between them.
#[derive(Debug, Clone)]
pub struct SluiceLayer<C = HttpClassify> {
    snapshot: Arc<Snapshot>,
    builder: BalanceBuilder<C>,
}

// ===== impl SluiceLayer =====

impl SluiceLayer {
    /// A layer over `snapshot` with default options.
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Self { snapshot, builder: BalanceBuilder::default() }
    }
}

impl<C> SluiceLayer<C> {
    /// A layer over `snapshot` with the options of `builder`.
    ///
    /// # Errors
    /// What [`BalanceBuilder::make`] would return for these options.
    pub fn with_builder(snapshot: Arc<Snapshot>, builder: BalanceBuilder<C>) -> Result<Self, crate::BuildError> {
        // Check the options once, so that `layer` cannot fail.
        builder.check()?;
        Ok(Self { snapshot, builder })
    }
}

impl<M, C> Layer<M> for SluiceLayer<C>
where
    M: Service<Region> + Clone + Send + 'static,
    M::Future: Send,
    M::Error: Into<BoxError>,
    C: Clone,
{
    type Service = Balance<M::Response, C>;

    fn layer(&self, make: M) -> Self::Service {
        match self.builder.clone().make(Arc::clone(&self.snapshot), make) {
            Ok(balance) => balance,
            // `with_builder` checked the options and `new` uses the defaults.
            Err(e) => unreachable!("options were validated: {e}"),
        }
    }
}
