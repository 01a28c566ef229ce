//! Which headers cross the gateway, in each direction: an explicit allowlist.
//!
//! Caller credentials (`authorization`, `api-key`, `x-api-key`, `cookie`,
//! `openai-organization`, `openai-project`, `proxy-authorization`), hop-by-hop headers,
//! any header named in `Connection`, and Sluice's own `x-sluice-*` headers never go upstream,
//! even when configured. `set-cookie` and hop-by-hop headers never come back.

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Request headers forwarded upstream by default.
pub const DEFAULT_REQUEST_HEADERS: &[&str] =
    &["accept", "content-type", "openai-beta", "idempotency-key", "user-agent", "x-stainless-*"];

/// Response headers returned to callers by default. A trailing `*` matches a prefix.
pub const DEFAULT_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-disposition",
    "cache-control",
    "x-request-id",
    "openai-processing-ms",
    "openai-version",
    "openai-model",
    "openai-organization",
    "x-ratelimit-*",
    "retry-after",
    "retry-after-ms",
];

/// Headers that never go upstream, whatever the configuration says.
const NEVER_UPSTREAM: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "openai-organization",
    "openai-project",
    "host",
    "content-length",
];

/// Headers that never come back, whatever the configuration says.
const NEVER_DOWNSTREAM: &[&str] = &["set-cookie", "set-cookie2"];

/// Hop-by-hop headers (RFC 9110 section 7.6.1), never forwarded in either direction.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"];

/// An allowlist of header names, with `prefix*` patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    exact: Vec<HeaderName>,
    prefixes: Vec<String>,
}

/// The header policy: what is forwarded upstream, and what comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPolicy {
    request: Allowlist,
    response: Allowlist,
}

// ===== impl Allowlist =====

impl Allowlist {
    /// An allowlist from names (case-insensitive) and `prefix*` patterns.
    ///
    /// # Errors
    ///
    /// A name that is not a valid header name.
    pub fn new<I, S>(names: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Allowlist::default();
        for name in names {
            list.add(name.as_ref())?;
        }
        Ok(list)
    }

    fn add(&mut self, name: &str) -> Result<(), String> {
        let lower = name.trim().to_ascii_lowercase();
        if let Some(prefix) = lower.strip_suffix('*') {
            HeaderName::from_bytes(format!("{prefix}x").as_bytes())
                .map_err(|_| format!("`{name}` is not a header name pattern"))?;
            self.prefixes.push(prefix.to_owned());
        } else {
            let h = HeaderName::from_bytes(lower.as_bytes()).map_err(|_| format!("`{name}` is not a header name"))?;
            if !self.exact.contains(&h) {
                self.exact.push(h);
            }
        }
        Ok(())
    }

    /// Whether `name` is on the list.
    pub fn allows(&self, name: &HeaderName) -> bool {
        self.exact.contains(name) || self.prefixes.iter().any(|p| name.as_str().starts_with(p.as_str()))
    }
}

// ===== impl HeaderPolicy =====

impl Default for HeaderPolicy {
    fn default() -> Self {
        Self {
            request: Allowlist::new(DEFAULT_REQUEST_HEADERS).expect("valid defaults"),
            response: Allowlist::new(DEFAULT_RESPONSE_HEADERS).expect("valid defaults"),
        }
    }
}

impl HeaderPolicy {
    /// The defaults plus these extra names in each direction.
    ///
    /// # Errors
    ///
    /// A name that is not a valid header name.
    pub fn with_extra<S: AsRef<str>>(request: &[S], response: &[S]) -> Result<Self, String> {
        let mut policy = Self::default();
        for name in request {
            policy.request.add(name.as_ref())?;
        }
        for name in response {
            policy.response.add(name.as_ref())?;
        }
        Ok(policy)
    }

    /// The headers of a caller's request that may go upstream.
    pub fn upstream(&self, headers: &HeaderMap) -> HeaderMap {
        let named = connection_named(headers);
        let mut out = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            let s = name.as_str();
            if NEVER_UPSTREAM.contains(&s)
                || HOP_BY_HOP.contains(&s)
                || s.starts_with("x-sluice-")
                || named.iter().any(|n| n.eq_ignore_ascii_case(s))
                || !self.request.allows(name)
            {
                continue;
            }
            out.append(name.clone(), value.clone());
        }
        out
    }

    /// The headers of an upstream answer that go back to the caller. `event_stream` drops
    /// `content-length` (the gateway may reframe a stream).
    pub fn downstream(&self, headers: &HeaderMap, event_stream: bool) -> HeaderMap {
        let named = connection_named(headers);
        let mut out = HeaderMap::with_capacity(headers.len() + 4);
        for (name, value) in headers {
            let s = name.as_str();
            if NEVER_DOWNSTREAM.contains(&s)
                || HOP_BY_HOP.contains(&s)
                || (event_stream && name == header::CONTENT_LENGTH)
                || named.iter().any(|n| n.eq_ignore_ascii_case(s))
                || !self.response.allows(name)
            {
                continue;
            }
            out.append(name.clone(), value.clone());
        }
        out
    }
}

/// Names listed in `Connection` headers.
fn connection_named(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn credentials_and_hop_by_hop_never_go_upstream() {
        let policy =
            HeaderPolicy::with_extra(&["authorization", "x-custom", "x-drop-me", "x-sluice-region"], &[]).unwrap();
        let h = map(&[
            ("authorization", "Bearer caller"),
            ("api-key", "k"),
            ("x-api-key", "k"),
            ("cookie", "a=b"),
            ("openai-organization", "org"),
            ("openai-project", "p"),
            ("connection", "keep-alive, x-drop-me"),
            ("keep-alive", "5"),
            ("x-drop-me", "1"),
            ("x-sluice-region", "r"),
            ("x-custom", "yes"),
            ("x-unlisted", "no"),
            ("content-type", "application/json"),
            ("x-stainless-lang", "python"),
        ]);
        let out = HeaderPolicy::upstream(&policy, &h);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-custom", "content-type", "x-stainless-lang"]);
    }

    #[test]
    fn set_cookie_never_comes_back_and_rate_limits_do() {
        let h = map(&[
            ("set-cookie", "a=b"),
            ("x-request-id", "req_1"),
            ("openai-processing-ms", "12"),
            ("x-ratelimit-remaining-tokens", "10"),
            ("retry-after-ms", "1500"),
            ("transfer-encoding", "chunked"),
            ("content-length", "10"),
            ("server", "upstream"),
        ]);
        let out = HeaderPolicy::default().downstream(&h, true);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-request-id", "openai-processing-ms", "x-ratelimit-remaining-tokens", "retry-after-ms"]);
        assert!(HeaderPolicy::default().downstream(&h, false).contains_key("content-length"));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(Allowlist::new(["bad header"]).is_err());
        assert!(Allowlist::new(["x-ok", "x-pre*"]).unwrap().allows(&HeaderName::from_static("x-pre-a")));
    }
}
