//! The wire format of fleet messages on the Redis channel.
//!
//! One message is one line of ASCII fields separated by `|`, with the region id last so that
//! it may hold any character but a control character:
//!
//! ```text
//! v1|<kind>|<milliseconds>|<replica>|<region>
//! ```
//!
//! `kind` is one of `down`, `up`, `eject`, `eject-end`, `cool`, `drain`, `enable`; the
//! milliseconds are the remaining duration of an `eject` or `cool` and `0` otherwise.
//! Anything else is rejected by [`decode`], which never panics (a proptest feeds it arbitrary
//! bytes and mutations of valid messages).

use std::{fmt::Write, time::Duration};

use sluice_health::SharedVerdict;
use sluice_region_model::AdminState;

/// The longest message accepted.
pub(crate) const MAX_MESSAGE_LEN: usize = 1024;
/// The longest duration a message may carry (one day); longer ones are rejected as hostile.
pub(crate) const MAX_DURATION_MS: u64 = 24 * 60 * 60 * 1000;
/// The longest replica id.
pub(crate) const MAX_REPLICA_LEN: usize = 64;

/// What a message says about its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// A health verdict.
    Verdict(SharedVerdict),
    /// An operator's drain or enable.
    Admin(AdminState),
}

/// A decoded message, borrowing from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    pub(crate) replica: &'a str,
    pub(crate) region: &'a str,
    pub(crate) body: Body,
}

/// Why a payload was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    TooLong,
    NotUtf8,
    Fields,
    Version,
    Kind,
    Duration,
    Replica,
    Region,
}

/// Encodes a message; `None` for a body this version cannot carry (a verdict kind added
/// later) or a replica id that [`valid_replica`] rejects.
pub(crate) fn encode(replica: &str, region: &str, body: Body) -> Option<String> {
    let (kind, ms) = match body {
        Body::Verdict(SharedVerdict::Down) => ("down", 0),
        Body::Verdict(SharedVerdict::Up) => ("up", 0),
        Body::Verdict(SharedVerdict::Ejected { remaining }) => ("eject", millis(remaining)),
        Body::Verdict(SharedVerdict::EjectionEnded) => ("eject-end", 0),
        Body::Verdict(SharedVerdict::Cooldown { remaining }) => ("cool", millis(remaining)),
        Body::Verdict(_) => return None,
        Body::Admin(AdminState::Drained) => ("drain", 0),
        Body::Admin(_) => ("enable", 0),
    };
    if !valid_replica(replica) || !valid_region(region) {
        return None;
    }
    let mut out = String::with_capacity(16 + replica.len() + region.len());
    let _ = write!(out, "v1|{kind}|{ms}|{replica}|{region}");
    (out.len() <= MAX_MESSAGE_LEN).then_some(out)
}

/// Decodes a payload; never panics.
pub(crate) fn decode(payload: &[u8]) -> Result<Message<'_>, DecodeError> {
    if payload.len() > MAX_MESSAGE_LEN {
        return Err(DecodeError::TooLong);
    }
    let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?;
    let mut fields = text.splitn(5, '|');
    let mut next = || fields.next().ok_or(DecodeError::Fields);
    let (version, kind, ms, replica, region) = (next()?, next()?, next()?, next()?, next()?);
    if version != "v1" {
        return Err(DecodeError::Version);
    }
    if ms.is_empty() || ms.len() > 9 || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::Duration);
    }
    let ms: u64 = ms.parse().map_err(|_| DecodeError::Duration)?;
    if ms > MAX_DURATION_MS {
        return Err(DecodeError::Duration);
    }
    let remaining = Duration::from_millis(ms);
    let body = match kind {
        "down" => Body::Verdict(SharedVerdict::Down),
        "up" => Body::Verdict(SharedVerdict::Up),
        "eject" => Body::Verdict(SharedVerdict::Ejected { remaining }),
        "eject-end" => Body::Verdict(SharedVerdict::EjectionEnded),
        "cool" => Body::Verdict(SharedVerdict::Cooldown { remaining }),
        "drain" => Body::Admin(AdminState::Drained),
        "enable" => Body::Admin(AdminState::Enabled),
        _ => return Err(DecodeError::Kind),
    };
    if !valid_replica(replica) {
        return Err(DecodeError::Replica);
    }
    if !valid_region(region) {
        return Err(DecodeError::Region);
    }
    Ok(Message { replica, region, body })
}

/// A replica id: 1 to 64 ASCII letters, digits, `.`, `_`, `:` or `-`.
pub(crate) fn valid_replica(id: &str) -> bool {
    (1..=MAX_REPLICA_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A region id as carried in messages and keys: not empty, no control character.
pub(crate) fn valid_region(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_MESSAGE_LEN / 2 && !id.chars().any(char::is_control)
}

/// Whole milliseconds, rounded up so that a short remainder is never sent as zero; capped.
pub(crate) fn millis(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).min(MAX_DURATION_MS)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bodies() -> Vec<Body> {
        let d = Duration::from_millis(9_950);
        vec![
            Body::Verdict(SharedVerdict::Down),
            Body::Verdict(SharedVerdict::Up),
            Body::Verdict(SharedVerdict::Ejected { remaining: d }),
            Body::Verdict(SharedVerdict::EjectionEnded),
            Body::Verdict(SharedVerdict::Cooldown { remaining: d }),
            Body::Admin(AdminState::Drained),
            Body::Admin(AdminState::Enabled),
        ]
    }

    #[test]
    fn every_body_round_trips() {
        for body in bodies() {
            let wire = encode("replica-1", "eu|west 1", body).expect("encodable");
            let m = decode(wire.as_bytes()).expect("decodable");
            assert_eq!(m, Message { replica: "replica-1", region: "eu|west 1", body }, "{wire}");
        }
        assert_eq!(
            encode("r", "a", Body::Verdict(SharedVerdict::Cooldown { remaining: Duration::from_micros(1) })).as_deref(),
            Some("v1|cool|1|r|a"),
            "a sub-millisecond remainder is not sent as zero"
        );
    }

    #[test]
    fn hostile_messages_are_rejected() {
        let check = |payload: &[u8], expect: DecodeError| assert_eq!(decode(payload), Err(expect), "{payload:?}");
        check(b"", DecodeError::Fields);
        check(b"v1|cool|10|r", DecodeError::Fields);
        check(b"v2|cool|10|r|a", DecodeError::Version);
        check(b"v1|nuke|10|r|a", DecodeError::Kind);
        check(b"v1|cool|-1|r|a", DecodeError::Duration);
        check(b"v1|cool||r|a", DecodeError::Duration);
        check(b"v1|cool|99999999999999999999|r|a", DecodeError::Duration);
        check(b"v1|cool|86400001|r|a", DecodeError::Duration);
        check(b"v1|cool|10|r r|a", DecodeError::Replica);
        check(b"v1|cool|10||a", DecodeError::Replica);
        check(b"v1|cool|10|r|", DecodeError::Region);
        check(b"v1|cool|10|r|a\nb", DecodeError::Region);
        check(b"v1|cool|10|r|\xff", DecodeError::NotUtf8);
        check(&[b'a'; MAX_MESSAGE_LEN + 1], DecodeError::TooLong);
        assert!(encode("bad id", "a", Body::Verdict(SharedVerdict::Up)).is_none());
        assert!(encode("r", "a\u{7}", Body::Verdict(SharedVerdict::Up)).is_none());
    }

    proptest! {
        /// The fuzz target of the decoder: arbitrary bytes never panic, and whatever decodes
        /// re-encodes to a message that decodes the same.
        #[test]
        fn decode_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..1100)) {
            if let Ok(m) = decode(&payload) {
                let wire = encode(m.replica, m.region, m.body).expect("a decoded message re-encodes");
                prop_assert_eq!(decode(wire.as_bytes()), Ok(m));
            }
        }

        /// Mutations of valid messages (a byte changed, the tail cut) never panic.
        #[test]
        fn mutated_messages_never_panic(which in 0usize..7, at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let mut wire = encode("replica-7", "ap-northeast-2", bodies()[which]).expect("encodable").into_bytes();
            let i = at.index(wire.len());
            wire[i] = byte;
            let _ = decode(&wire);
            wire.truncate(cut.index(wire.len() + 1));
            let _ = decode(&wire);
        }
    }
}
