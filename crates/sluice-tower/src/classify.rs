//! Judging one attempt: the [`Classify`] trait and its default for `http::Response`.

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_health::classify::{Verdict, classify_status};

/// Judges the result of one attempt, for health and for retries.
///
/// The verdict decides what [`Balance`](crate::Balance) records into health (a success, a
/// server failure, a throttle with its Retry-After cooldown, or nothing for a bad request)
/// and whether [`FailoverPolicy`](crate::FailoverPolicy) tries another region.
///
/// Implementations:
/// * [`HttpClassify`]: the default, by status and Retry-After headers, with the same rules as
///   `sluice-client` (it calls the shared `sluice_health::classify::classify_status`).
///
/// Write your own to judge by something else, such as a `grpc-status` header.
pub trait Classify<Res, E>: Send + Sync + 'static {
    /// Judges one attempt's response or error.
    fn classify(&self, result: Result<&Res, &E>) -> Verdict;
}

/// The default [`Classify`]: an `http::Response` by its status and headers, through
/// `sluice_health::classify::classify_status` (2xx success; 401/403 credentials; 429 throttled;
/// 503 with Retry-After unavailable; 408 and 5xx retry; every other status fatal), and any
/// error of the inner service as retryable, as `sluice-client` treats connection errors.
///
/// A streaming body is judged by its head; an error in the middle of the body is recorded
/// against the region when it happens.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassify;

// ===== impl HttpClassify =====

impl<B, E> Classify<http::Response<B>, E> for HttpClassify {
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Verdict {
        match result {
            Ok(response) => {
                // The wall clock only measures an HTTP-date Retry-After; skip reading it when
                // there is no such header, which is nearly always.
                let headers = response.headers();
                let now = if headers.contains_key(http::header::RETRY_AFTER) { SystemTime::now() } else { UNIX_EPOCH };
                classify_status(response.status(), headers, now)
            }
            Err(_) => Verdict::Retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn check(status: u16, headers: &[(&str, &str)], expect: Verdict) {
        let mut response = http::Response::builder().status(status);
        for (k, v) in headers {
            response = response.header(*k, *v);
        }
        let response = response.body(()).unwrap();
        let got = Classify::<_, ()>::classify(&HttpClassify, Ok(&response));
        assert_eq!(got, expect, "{status} {headers:?}");
    }

    #[test]
    fn statuses_follow_the_shared_rules() {
        check(200, &[], Verdict::Success);
        check(400, &[], Verdict::Fatal);
        check(404, &[], Verdict::Fatal);
        check(401, &[], Verdict::Credentials);
        check(500, &[], Verdict::Retry);
        check(429, &[("retry-after", "3")], Verdict::Throttled { retry_after: Some(Duration::from_secs(3)) });
        check(503, &[("retry-after-ms", "1500")], Verdict::Unavailable { retry_after: Duration::from_millis(1500) });
    }

    #[test]
    fn errors_are_retryable() {
        let got = Classify::<http::Response<()>, &str>::classify(&HttpClassify, Err(&"reset"));
        assert_eq!(got, Verdict::Retry);
    }
}
