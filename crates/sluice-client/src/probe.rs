//! The client's default probe: `GET {endpoint}/models` the way each region's provider wants
//! it, recording the models list it returns.

use std::{fmt, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderValue, header};
use sluice_health::{ConfigError, Probe, ProbeError, async_trait, read_models_response, transport_error};
use sluice_region_model::Node;
use tokio::time::Instant as TokioInstant;

use crate::{models::parse_model_list, provider::same_origin, routing::Routes};

/// Probes a region with `GET {endpoint}/models` through its provider (auth header, extra
/// headers, api-version), and records the listed models for routing.
///
/// Success as for `sluice-health`'s `HttpProbe`: a 2xx whose body is a models list.
pub(crate) struct RouteProbe {
    client: reqwest::Client,
    routes: Arc<Routes>,
}

impl RouteProbe {
    pub(crate) fn new(routes: Arc<Routes>, timeout: Duration) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sluice-client/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(90))
            .use_rustls_tls()
            .build()
            .map_err(|e| ConfigError::HttpClient { source: Box::new(e) })?;
        Ok(Self { client, routes })
    }
}

impl fmt::Debug for RouteProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteProbe").field("routes", &self.routes).finish_non_exhaustive()
    }
}

#[async_trait]
impl Probe for RouteProbe {
    async fn probe(&self, node: &Node) -> Result<Duration, ProbeError> {
        let started = TokioInstant::now();
        let Some(route) = self.routes.by_region(node.region().id()) else {
            return Err(ProbeError::Other { source: "region unknown to the client".into() });
        };
        let url = route.upstream.url("models", None);
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if !same_origin(&url, node.endpoint()) {
            return Err(ProbeError::Other { source: "models url left the region's host".into() });
        }
        route
            .upstream
            .authorize(&mut headers, route.key.as_ref())
            .map_err(|_| ProbeError::Other { source: "the key is not a valid header value".into() })?;
        let response = self.client.get(url).headers(headers).send().await.map_err(transport_error)?;
        let body = match read_models_response(response).await {
            // A region that takes callers' keys, probed without a key of its own: refusing
            // no key still shows that it is up (its model list stays unknown: all models).
            Err(ProbeError::Credentials { .. }) if route.upstream.passes_caller_key() && route.key.is_none() => {
                return Ok(started.elapsed());
            }
            other => other?,
        };
        let Some(models) = parse_model_list(&body) else {
            return Err(ProbeError::InvalidBody { reason: "not a models list", source: None });
        };
        let latency = started.elapsed();
        route.models.set_listed(models);
        Ok(latency)
    }
}
