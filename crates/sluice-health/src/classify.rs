//! What an upstream answer means for the call and for the region: one classification shared
//! by every crate that calls regions (`sluice-client`, `sluice-tower`).
//!
//! * [`classify_status`] turns a status and its headers into a [`Verdict`]: success, retry
//!   elsewhere, fatal (the same request fails everywhere), credentials, or a throttle.
//! * [`parse_retry_after`] reads every Retry-After form providers send. It never panics, on
//!   any header value, and its result is capped at [`MAX_RETRY_AFTER`].
//! * [`Verdict::outcome`] gives the [`Outcome`] to report to [`HealthMonitor::record`]
//!   (`None` when the answer says nothing about the region's health).
//!
//! [`HealthMonitor::record`]: crate::HealthMonitor::record

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

use crate::Outcome;

/// The largest wait [`parse_retry_after`] returns, whatever the server asked for.
///
/// A bound for arithmetic safety (adding it to an `Instant` never overflows), not a policy:
/// callers apply their own, smaller cap (60 s by default in the health and client configs).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// What an HTTP answer from a region means for the call.
///
/// Which statuses map where:
///
/// | status | verdict |
/// |---|---|
/// | 2xx | [`Success`](Verdict::Success) |
/// | 401, 403 | [`Credentials`](Verdict::Credentials) |
/// | 429 | [`Throttled`](Verdict::Throttled) |
/// | 503 with a Retry-After | [`Unavailable`](Verdict::Unavailable) |
/// | 408, 5xx | [`Retry`](Verdict::Retry) |
/// | anything else (400, 404, 413, 422, 3xx...) | [`Fatal`](Verdict::Fatal) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The region answered (2xx).
    Success,
    /// A server-side failure (408 or a 5xx): another region may well succeed. Counts against
    /// the region's health.
    Retry,
    /// The request itself is wrong for every region (400, 404, 413, 422, an unfollowed 3xx...):
    /// return the answer unchanged, never retry, never blame the region.
    Fatal,
    /// The region refused the credentials (401 or 403). Another region with another key may
    /// serve the call; this region is of no use with this key for a while.
    Credentials,
    /// The region is rate-limiting us (429). Retry elsewhere; cool this region down for
    /// `retry_after` when given. A rate limit is invisible to health probes, so only time ends
    /// the cooldown.
    Throttled {
        /// The capped Retry-After, if the answer carried one.
        retry_after: Option<Duration>,
    },
    /// The region is down for a while and said for how long (503 with Retry-After). Retry
    /// elsewhere; cool the region down. Unlike a 429, a probe that succeeds after the 503 was
    /// recorded may end this cooldown early.
    Unavailable {
        /// The capped Retry-After.
        retry_after: Duration,
    },
}

/// Classifies an answer by its status and headers. See [`Verdict`] for the table.
///
/// `now` is the wall-clock time an HTTP-date Retry-After is measured from. Never panics.
pub fn classify_status(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Success,
        401 | 403 => Verdict::Credentials,
        429 => Verdict::Throttled { retry_after: parse_retry_after(headers, now) },
        503 => match parse_retry_after(headers, now) {
            Some(retry_after) => Verdict::Unavailable { retry_after },
            None => Verdict::Retry,
        },
        408 | 500..=599 => Verdict::Retry,
        _ => Verdict::Fatal,
    }
}

/// Reads how long the server asks us to wait, from (in order of precision) `retry-after-ms`,
/// `x-ms-retry-after-ms` (Azure), then `retry-after` as delta-seconds (integer or decimal) or
/// as an HTTP-date.
///
/// `now` is the wall-clock time an HTTP-date is measured from; a date in the past gives zero.
/// A form whose value is unparseable, negative, NaN or not valid text is skipped and the next
/// form is tried. The result is capped at [`MAX_RETRY_AFTER`]. Never panics, on any input.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let found = text("retry-after-ms")
        .and_then(|v| seconds(v, 1e-3))
        .or_else(|| text("x-ms-retry-after-ms").and_then(|v| seconds(v, 1e-3)))
        .or_else(|| {
            let v = text("retry-after")?;
            if v.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '.' | '+' | '-')) {
                seconds(v, 1.0)
            } else {
                let at = httpdate::parse_http_date(v).ok()?;
                Some(at.duration_since(now).unwrap_or(Duration::ZERO))
            }
        })?;
    Some(found.min(MAX_RETRY_AFTER))
}

/// A non-negative decimal number of `unit` seconds, capped at [`MAX_RETRY_AFTER`] before the
/// conversion (which would panic on overflow).
fn seconds(v: &str, unit: f64) -> Option<Duration> {
    let n = v.parse::<f64>().ok().filter(|n| !n.is_nan() && *n >= 0.0)?;
    Some(Duration::from_secs_f64((n * unit).min(MAX_RETRY_AFTER.as_secs_f64())))
}

// ===== impl Verdict =====

impl Verdict {
    /// Whether another region may succeed where this answer failed: `Retry`, `Throttled`,
    /// `Unavailable` and `Credentials` (another region may hold another key).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retry | Self::Throttled { .. } | Self::Unavailable { .. } | Self::Credentials)
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after } => *retry_after,
            Self::Unavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// What to report to [`HealthMonitor::record`](crate::HealthMonitor::record) for a failed
    /// answer with this verdict and `status`.
    ///
    /// `None` for `Success` (report [`Outcome::Success`] with the latency instead), `Fatal`
    /// (a bad request says nothing about the region) and `Credentials` (a key problem, not a
    /// health problem; the caller excludes the region for that key instead).
    pub fn outcome(&self, status: StatusCode) -> Option<Outcome> {
        match *self {
            Self::Retry => Some(Outcome::ServerError { status: status.as_u16(), retry_after: None }),
            Self::Unavailable { retry_after } => {
                Some(Outcome::ServerError { status: status.as_u16(), retry_after: Some(retry_after) })
            }
            Self::Throttled { retry_after } => Some(Outcome::RateLimited { retry_after }),
            Self::Success | Self::Fatal | Self::Credentials => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    use super::*;

    fn now() -> SystemTime {
        // Tue, 14 Nov 2023 22:13:20 GMT.
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn check(pairs: &[(&str, &str)], expect: Option<Duration>) {
        assert_eq!(parse_retry_after(&headers(pairs), now()), expect, "{pairs:?}");
    }

    #[test]
    fn every_form() {
        check(&[("retry-after", "7")], Some(Duration::from_secs(7)));
        check(&[("retry-after", "1.5")], Some(Duration::from_millis(1500)));
        check(&[("retry-after", " 3 ")], Some(Duration::from_secs(3)));
        check(&[("retry-after-ms", "250")], Some(Duration::from_millis(250)));
        check(&[("x-ms-retry-after-ms", "1200")], Some(Duration::from_millis(1200)));
        check(&[("retry-after", "Tue, 14 Nov 2023 22:13:29 GMT")], Some(Duration::from_secs(9)));
        check(&[("retry-after", "Tue, 14 Nov 2023 22:13:00 GMT")], Some(Duration::ZERO));
        // The millisecond forms win over the coarse one, the standard one over Azure's.
        check(&[("retry-after", "9"), ("retry-after-ms", "100")], Some(Duration::from_millis(100)));
        check(&[("x-ms-retry-after-ms", "5"), ("retry-after-ms", "100")], Some(Duration::from_millis(100)));
    }

    #[test]
    fn garbage_is_skipped() {
        check(&[("retry-after", "soon")], None);
        check(&[("retry-after", "-3")], None);
        check(&[("retry-after", "NaN")], None);
        check(&[("retry-after", "")], None);
        check(&[("retry-after-ms", "NaN"), ("retry-after", "2")], Some(Duration::from_secs(2)));
        check(&[("retry-after-ms", "-1"), ("x-ms-retry-after-ms", "40")], Some(Duration::from_millis(40)));
        check(&[], None);
    }

    /// Defect: `retry-after-ms: 99999999999999999999999` panicked in `Duration::from_secs_f64`.
    #[test]
    fn huge_values_are_capped_not_panics() {
        check(&[("retry-after-ms", "99999999999999999999999")], Some(MAX_RETRY_AFTER));
        check(&[("x-ms-retry-after-ms", "1e308")], Some(MAX_RETRY_AFTER));
        check(&[("retry-after", "inf")], None);
        check(&[("retry-after", "+inf")], Some(MAX_RETRY_AFTER));
        check(&[("retry-after", "1e400")], Some(MAX_RETRY_AFTER));
        check(&[("retry-after", "86401")], Some(MAX_RETRY_AFTER));
        check(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")], Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn non_text_values_are_skipped() {
        let mut map = HeaderMap::new();
        map.insert("retry-after-ms", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        map.insert("retry-after", HeaderValue::from_static("4"));
        assert_eq!(parse_retry_after(&map, now()), Some(Duration::from_secs(4)));
    }

    #[test]
    fn statuses() {
        let none = HeaderMap::new();
        let after = headers(&[("retry-after", "7")]);
        let seven = Duration::from_secs(7);
        let cases: &[(u16, &HeaderMap, Verdict)] = &[
            (200, &none, Verdict::Success),
            (204, &none, Verdict::Success),
            (301, &none, Verdict::Fatal),
            (400, &none, Verdict::Fatal),
            (404, &none, Verdict::Fatal),
            (413, &none, Verdict::Fatal),
            (422, &none, Verdict::Fatal),
            (401, &none, Verdict::Credentials),
            (403, &after, Verdict::Credentials),
            (408, &none, Verdict::Retry),
            (429, &none, Verdict::Throttled { retry_after: None }),
            (429, &after, Verdict::Throttled { retry_after: Some(seven) }),
            (500, &after, Verdict::Retry),
            (502, &none, Verdict::Retry),
            (503, &none, Verdict::Retry),
            (503, &after, Verdict::Unavailable { retry_after: seven }),
            (504, &none, Verdict::Retry),
        ];
        for (status, headers, expect) in cases {
            let status = StatusCode::from_u16(*status).unwrap();
            assert_eq!(classify_status(status, headers, now()), *expect, "{status}");
        }
    }

    #[test]
    fn outcomes() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        let seven = Duration::from_secs(7);
        assert_eq!(Verdict::Success.outcome(s(200)), None);
        assert_eq!(Verdict::Fatal.outcome(s(400)), None);
        assert_eq!(Verdict::Credentials.outcome(s(401)), None);
        assert_eq!(Verdict::Retry.outcome(s(502)), Some(Outcome::ServerError { status: 502, retry_after: None }));
        assert_eq!(
            Verdict::Unavailable { retry_after: seven }.outcome(s(503)),
            Some(Outcome::ServerError { status: 503, retry_after: Some(seven) })
        );
        assert_eq!(
            Verdict::Throttled { retry_after: None }.outcome(s(429)),
            Some(Outcome::RateLimited { retry_after: None })
        );
        assert!(Verdict::Credentials.is_retryable() && !Verdict::Fatal.is_retryable());
        assert_eq!(Verdict::Unavailable { retry_after: seven }.retry_after(), Some(seven));
    }

    fn header_name() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["retry-after", "retry-after-ms", "x-ms-retry-after-ms"])
    }

    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            // Anything a header may carry.
            prop::collection::vec(any::<u8>(), 0..48),
            // Numbers of every size and shape.
            "[+-]?[0-9]{0,40}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{1,4})?".prop_map(String::into_bytes),
            any::<f64>().prop_map(|f| f.to_string().into_bytes()),
            // Dates, valid or near-valid.
            "(Mon|Tue|Sun), [0-9]{1,2} (Jan|Nov|Dec) [0-9]{1,5} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
                .prop_map(String::into_bytes),
        ]
    }

    proptest! {
        /// No header value makes the parser panic, and whatever it returns is within the cap.
        #[test]
        fn fuzz_retry_after_headers(
            pairs in prop::collection::vec((header_name(), header_value()), 0..4),
            now_secs in any::<u64>(),
            status in 100u16..1000,
        ) {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    map.append(name, value);
                }
            }
            let now = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(now_secs >> 8)).unwrap_or(SystemTime::UNIX_EPOCH);
            if let Some(d) = parse_retry_after(&map, now) {
                prop_assert!(d <= MAX_RETRY_AFTER);
            }
            let verdict = classify_status(StatusCode::from_u16(status).unwrap(), &map, now);
            prop_assert!(verdict.retry_after().is_none_or(|d| d <= MAX_RETRY_AFTER));
        }
    }
}
