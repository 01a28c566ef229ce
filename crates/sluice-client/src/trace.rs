//! W3C trace context: a call given a [`TraceParent`] (with
//! [`CallOptions::trace_parent`](crate::CallOptions::trace_parent)) joins that trace.
//!
//! The `sluice.call` span records the trace id (`trace_id`), each `sluice.attempt` span its own
//! span id (`span_id`), and every attempt sends `traceparent: 00-{trace id}-{attempt span
//! id}-{flags}` upstream, so the provider's spans hang under the attempt that caused them.
//! With the `otel` feature and an OpenTelemetry layer installed, the call span's parent is the
//! incoming context and the ids sent upstream are OpenTelemetry's own.

use std::fmt;

/// A W3C `traceparent` value: trace id, parent span id and flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: u128,
    parent_id: u64,
    flags: u8,
}

impl TraceParent {
    /// The header name, `traceparent`.
    pub const HEADER: &'static str = "traceparent";

    /// A trace context from its parts; `None` when an id is zero (invalid by the standard).
    pub fn new(trace_id: u128, parent_id: u64, flags: u8) -> Option<Self> {
        (trace_id != 0 && parent_id != 0).then_some(Self { trace_id, parent_id, flags })
    }

    /// Parses a `traceparent` header value (`00-<32 hex>-<16 hex>-<2 hex>`; later versions may
    /// append fields, which are ignored). `None` for anything invalid, never a panic: an
    /// invalid header is ignored, as the standard asks.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            (s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(())
        };
        hex(version, 2)?;
        hex(trace, 32)?;
        hex(parent, 16)?;
        hex(flags, 2)?;
        if version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        Self::new(
            u128::from_str_radix(trace, 16).ok()?,
            u64::from_str_radix(parent, 16).ok()?,
            u8::from_str_radix(flags, 16).ok()?,
        )
    }

    /// The trace id.
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The parent span id.
    pub fn parent_id(&self) -> u64 {
        self.parent_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The same trace and flags under another parent span (zero is replaced by one).
    pub fn child(self, span_id: u64) -> Self {
        Self { parent_id: span_id.max(1), ..self }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

/// The header value: `00-{trace id}-{parent id}-{flags}`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.parent_id, self.flags)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::TraceParent;

    #[test]
    fn parses_and_prints_the_standard_form() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(text).unwrap();
        assert_eq!(tp.trace_id(), 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        assert_eq!(tp.parent_id(), 0x00f0_67aa_0ba9_02b7);
        assert_eq!(tp.flags(), 1);
        assert_eq!(tp.to_string(), text);
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = tp.child(0xabc);
        assert_eq!(child.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01");
        // A later version may append fields.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what").is_some());
    }

    #[test]
    fn refuses_invalid_values() {
        for bad in [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn fuzz_parse_never_panics_and_round_trips(text in "[-0-9a-fA-F+ ]{0,70}") {
            if let Some(tp) = TraceParent::parse(&text) {
                prop_assert_eq!(TraceParent::parse(&tp.to_string()), Some(tp));
            }
        }
    }
}
