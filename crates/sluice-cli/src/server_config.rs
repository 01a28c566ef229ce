//! The `[server]` table: how `sluice serve` runs its gateway (limits, headers, usage, prices).

use std::{ops::Range, time::Duration};

use serde::Deserialize;
use sluice_gateway::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDEMPOTENCY_BYTES, DEFAULT_IDEMPOTENCY_KEYS, DEFAULT_IDEMPOTENCY_TTL,
    DEFAULT_MAX_BODY, DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_STATE_CAPACITY, DEFAULT_STATE_TTL, HeaderPolicy, Price,
    Prices,
};
use toml::Spanned;

use crate::config::Dur;

/// `[server]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    max_concurrent_calls: Option<usize>,
    header_read_timeout: Option<Dur>,
    max_body_bytes: Option<usize>,
    stream_usage: Option<bool>,
    state_capacity: Option<usize>,
    state_ttl: Option<Dur>,
    idempotency_ttl: Option<Dur>,
    idempotency_keys: Option<usize>,
    idempotency_bytes: Option<usize>,
    #[serde(default)]
    request_headers: Vec<String>,
    #[serde(default)]
    response_headers: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    price: Vec<RawPrice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    model: String,
    region: Option<String>,
    input: f64,
    output: f64,
    cached_input: Option<f64>,
}

/// `[server]`, checked, with the gateway's defaults filled in.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Calls served at once; beyond, an early 503 with Retry-After.
    pub max_concurrent_calls: usize,
    /// Time a client has to send a request head.
    pub header_read_timeout: Duration,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Whether to ask upstreams for stream usage.
    pub stream_usage: bool,
    /// Object ids remembered with their region, and for how long.
    pub state: (usize, Duration),
    /// `Idempotency-Key` TTL, key count and byte budget.
    pub idempotency: (Duration, usize, usize),
    /// Which headers cross the gateway.
    pub headers: HeaderPolicy,
    /// Models that may be `model` metric labels.
    pub models: Vec<String>,
    /// Prices for the cost counter.
    pub prices: Prices,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY,
            stream_usage: true,
            state: (DEFAULT_STATE_CAPACITY, DEFAULT_STATE_TTL),
            idempotency: (DEFAULT_IDEMPOTENCY_TTL, DEFAULT_IDEMPOTENCY_KEYS, DEFAULT_IDEMPOTENCY_BYTES),
            headers: HeaderPolicy::default(),
            models: Vec::new(),
            prices: Prices::new(),
        }
    }
}

impl ServerSettings {
    /// Checks `[server]`; an error names the table's span and what is wrong.
    pub(crate) fn from_raw(raw: Option<&Spanned<RawServer>>) -> Result<Self, (Range<usize>, String)> {
        let mut s = Self::default();
        let Some(spanned) = raw else { return Ok(s) };
        let span = spanned.span();
        let r = spanned.get_ref();
        let bad = |m: String| (span.clone(), format!("[server]: {m}"));
        if let Some(n) = r.max_concurrent_calls {
            if n == 0 {
                return Err(bad("max_concurrent_calls must be at least 1".to_owned()));
            }
            s.max_concurrent_calls = n;
        }
        if let Some(d) = r.header_read_timeout {
            if d.0.is_zero() {
                return Err(bad("header_read_timeout must be greater than zero".to_owned()));
            }
            s.header_read_timeout = d.0;
        }
        if let Some(n) = r.max_body_bytes {
            if n < 1024 {
                return Err(bad("max_body_bytes must be at least 1024".to_owned()));
            }
            s.max_body_bytes = n;
        }
        s.stream_usage = r.stream_usage.unwrap_or(true);
        s.state = (r.state_capacity.unwrap_or(s.state.0).max(1), r.state_ttl.map_or(s.state.1, |d| d.0));
        s.idempotency = (
            r.idempotency_ttl.map_or(s.idempotency.0, |d| d.0),
            r.idempotency_keys.unwrap_or(s.idempotency.1).max(1),
            r.idempotency_bytes.unwrap_or(s.idempotency.2),
        );
        s.headers = HeaderPolicy::with_extra(&r.request_headers, &r.response_headers).map_err(bad)?;
        s.models = r.models.clone();
        for p in &r.price {
            let prices = [p.input, p.output, p.cached_input.unwrap_or(0.0)];
            if prices.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return Err(bad(format!("price of {}: prices must be finite numbers >= 0", p.model)));
            }
            let price = Price { input: p.input, output: p.output, cached_input: p.cached_input };
            s.prices = std::mem::take(&mut s.prices).set(p.region.as_deref(), &p.model, price);
        }
        Ok(s)
    }
}
