//! `HttpProbe`: `GET {endpoint}/models` over reqwest.

use std::{fmt, time::Duration};

use async_trait::async_trait;
use sluice_region_model::{ApiKey, Node};
use tokio::time::Instant as TokioInstant;

use crate::{ConfigError, DEFAULT_PROBE_TIMEOUT, Probe, ProbeError};

/// Largest models-list body read, 4 MiB. Aggregators list a few hundred models in well
/// under that; a bigger body is refused rather than buffered.
pub const MAX_MODELS_BODY: usize = 4 << 20;

/// Probes a node with `GET {endpoint}/models`, the OpenAI-compatible call that costs no
/// tokens.
///
/// * The request carries `Authorization: Bearer <key>`: the region's own key, else the
///   default key given to the builder, else no header.
/// * A 2xx whose body is a JSON object with a `data` array (the models list,
///   `{"object":"list","data":[...]}`) is a success; the latency is measured until the body
///   has been read.
/// * 401 and 403 are [`ProbeError::Credentials`]; other statuses, including 3xx (redirects
///   are not followed), are [`ProbeError::Status`]; any other body is
///   [`ProbeError::InvalidBody`].
///
/// The key is marked sensitive on the request, never logged, and not shown by `Debug`.
pub struct HttpProbe {
    client: reqwest::Client,
    default_key: Option<ApiKey>,
    timeout: Duration,
}

/// Builder of [`HttpProbe`].
pub struct HttpProbeBuilder {
    timeout: Duration,
    default_key: Option<ApiKey>,
    user_agent: Option<String>,
}

// ===== impl HttpProbe =====

impl HttpProbe {
    /// A probe with the given per-request timeout and no default key.
    ///
    /// # Panics
    /// If the HTTP client cannot be initialised (as `reqwest::Client::new` does); use
    /// [`HttpProbe::builder`] to get an error instead.
    pub fn new(timeout: Duration) -> Self {
        match Self::builder().timeout(timeout).build() {
            Ok(probe) => probe,
            Err(e) => panic!("cannot build the probe http client: {e}"),
        }
    }

    /// A builder, starting with [`DEFAULT_PROBE_TIMEOUT`] and no default key.
    pub fn builder() -> HttpProbeBuilder {
        HttpProbeBuilder { timeout: DEFAULT_PROBE_TIMEOUT, default_key: None, user_agent: None }
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn models_url(node: &Node) -> reqwest::Url {
        let mut url = node.endpoint().clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("models");
        }
        url
    }

    async fn get_models(&self, node: &Node) -> Result<(), ProbeError> {
        let mut request = self.client.get(Self::models_url(node)).header(reqwest::header::ACCEPT, "application/json");
        if let Some(key) = node.region().api_key().or(self.default_key.as_ref()) {
            // `bearer_auth` marks the header value sensitive.
            request = request.bearer_auth(key.expose_secret());
        }
        let response = request.send().await.map_err(transport_error)?;
        let body = read_models_response(response).await?;
        check_models_list(&body)
    }
}

impl fmt::Debug for HttpProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProbe")
            .field("timeout", &self.timeout)
            .field("default_key", &self.default_key)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Probe for HttpProbe {
    async fn probe(&self, node: &Node) -> Result<Duration, ProbeError> {
        let started = TokioInstant::now();
        self.get_models(node).await?;
        Ok(started.elapsed())
    }
}

// ===== impl HttpProbeBuilder =====

impl HttpProbeBuilder {
    /// Per-request timeout (connect, send and body). Defaults to [`DEFAULT_PROBE_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Key sent to regions that have none of their own.
    pub fn default_api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.default_key = Some(key.into());
        self
    }

    /// `User-Agent` header; defaults to `sluice-health/<version>`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Builds the probe and its HTTP client.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a zero timeout; [`ConfigError::HttpClient`] when the
    /// client cannot be initialised.
    pub fn build(self) -> Result<HttpProbe, ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid("timeout", "must be greater than zero"));
        }
        let user_agent = self.user_agent.unwrap_or_else(|| concat!("sluice-health/", env!("CARGO_PKG_VERSION")).into());
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(user_agent)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ConfigError::HttpClient { source: Box::new(e) })?;
        Ok(HttpProbe { client, default_key: self.default_key, timeout: self.timeout })
    }
}

impl fmt::Debug for HttpProbeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProbeBuilder")
            .field("timeout", &self.timeout)
            .field("default_key", &self.default_key)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// Turns a `/models` answer into its body: a 2xx status (401/403 are
/// [`ProbeError::Credentials`], any other status [`ProbeError::Status`]) and at most
/// [`MAX_MODELS_BODY`] bytes. Shared by every probe that speaks to `/models` over reqwest.
pub async fn read_models_response(mut response: reqwest::Response) -> Result<Vec<u8>, ProbeError> {
    let status = response.status().as_u16();
    match status {
        200..=299 => {}
        401 | 403 => return Err(ProbeError::Credentials { status }),
        _ => return Err(ProbeError::Status { status }),
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_MODELS_BODY {
            return Err(ProbeError::InvalidBody { reason: "body too large", source: None });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Classifies a reqwest failure of a probe: timeout, connect (no answer) or other transport
/// error. The URL is stripped so that no query-string secret reaches the error.
pub fn transport_error(e: reqwest::Error) -> ProbeError {
    if e.is_timeout() {
        ProbeError::Timeout
    } else if e.is_connect() || e.is_body() || e.is_request() {
        ProbeError::Connect { source: Box::new(e.without_url()) }
    } else {
        ProbeError::Transport { source: Box::new(e.without_url()) }
    }
}

/// Accepts a JSON object with a `data` array.
fn check_models_list(body: &[u8]) -> Result<(), ProbeError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ProbeError::InvalidBody { reason: "not json", source: Some(Box::new(e)) })?;
    match value.get("data") {
        Some(serde_json::Value::Array(_)) => Ok(()),
        _ => Err(ProbeError::InvalidBody { reason: "no `data` array", source: None }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_list_check() {
        let check = |body: &str, ok: bool| assert_eq!(check_models_list(body.as_bytes()).is_ok(), ok, "{body}");
        check(r#"{"object":"list","data":[{"id":"gpt-4o","object":"model"}]}"#, true);
        check(r#"{"data":[]}"#, true);
        check(r#"{"object":"list"}"#, false);
        check(r#"{"data":{}}"#, false);
        check("[1,2]", false);
        check("<html>oops</html>", false);
        check("", false);
    }

    #[test]
    fn debug_hides_the_key() {
        let probe = HttpProbe::builder().default_api_key("sk-secret-default-42").build().unwrap();
        let dbg = format!("{probe:?} {probe:#?}");
        assert!(!dbg.contains("sk-secret"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        let builder = HttpProbe::builder().default_api_key("sk-secret-default-42");
        assert!(!format!("{builder:?}").contains("sk-secret"));
    }

    #[test]
    fn zero_timeout_is_refused() {
        assert!(HttpProbe::builder().timeout(Duration::ZERO).build().is_err());
    }
}
