//! Reading Retry-After in all the forms providers send.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// Reads how long the server asks us to wait, from (in order of precision):
/// `retry-after-ms`, `x-ms-retry-after-ms` (Azure), then `retry-after` as delta-seconds
/// (integer or decimal) or as an HTTP-date.
///
/// `now` is the wall-clock time an HTTP-date is measured from. A date in the past gives zero.
/// Unparseable, negative or non-finite values are ignored. The result is capped at `cap`.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime, cap: Duration) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let millis = |v: &str| v.parse::<f64>().ok().filter(|ms| ms.is_finite() && *ms >= 0.0).map(|ms| ms / 1000.0);
    let found = text("retry-after-ms")
        .and_then(millis)
        .or_else(|| text("x-ms-retry-after-ms").and_then(millis))
        .map(Duration::from_secs_f64)
        .or_else(|| {
            let v = text("retry-after")?;
            match v.parse::<f64>() {
                Ok(secs) if secs.is_finite() && secs >= 0.0 => Some(Duration::from_secs_f64(secs.min(1e9))),
                Ok(_) => None,
                Err(_) => httpdate::parse_http_date(v).ok().map(|at| at.duration_since(now).unwrap_or(Duration::ZERO)),
            }
        })?;
    Some(found.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(60);

    fn check(headers: &[(&str, &str)], expect: Option<Duration>) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        assert_eq!(parse_retry_after(&map, now, CAP), expect, "{headers:?}");
    }

    #[test]
    fn every_form() {
        check(&[("retry-after", "7")], Some(Duration::from_secs(7)));
        check(&[("retry-after", "1.5")], Some(Duration::from_millis(1500)));
        check(&[("retry-after-ms", "250")], Some(Duration::from_millis(250)));
        check(&[("x-ms-retry-after-ms", "1200")], Some(Duration::from_millis(1200)));
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        check(&[("retry-after", "Tue, 14 Nov 2023 22:13:29 GMT")], Some(Duration::from_secs(9)));
        check(&[("retry-after", "Tue, 14 Nov 2023 22:13:00 GMT")], Some(Duration::ZERO));
        // The millisecond forms win over the coarse one.
        check(&[("retry-after", "9"), ("retry-after-ms", "100")], Some(Duration::from_millis(100)));
    }

    #[test]
    fn capped_and_garbage() {
        check(&[("retry-after", "86400")], Some(CAP));
        check(&[("retry-after", "soon")], None);
        check(&[("retry-after", "-3")], None);
        check(&[("retry-after-ms", "NaN"), ("retry-after", "2")], Some(Duration::from_secs(2)));
        check(&[], None);
    }
}
