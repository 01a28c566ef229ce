//! Server-sent events: an incremental parser (WHATWG `text/event-stream` rules) and what each
//! event means for the endpoint that sent it.
//!
//! Both the typed [`ChatStream`](crate::ChatStream) and the raw [`RawBody`](crate::RawBody)
//! read upstream bytes through this parser, so they share one commit rule (commit at the first
//! event that carries content) and one end rule (each endpoint's own end event, never a
//! substring of the bytes).

use serde_json::Value;

/// Longest line kept while waiting for its end; a longer one fails the stream.
pub(crate) const MAX_LINE: usize = 8 << 20;

/// One parsed unit of an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A comment line (`: keep-alive`): proof of life, never content.
    Comment,
    /// A dispatched event: its `event:` name, if any, and its joined `data:` lines.
    Event {
        /// The event type, when given.
        name: Option<String>,
        /// The data lines, joined with `\n`.
        data: String,
    },
}

/// Why the bytes could not be parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SseError {
    /// A line longer than [`MAX_LINE`].
    #[error("event stream line longer than {MAX_LINE} bytes")]
    LineTooLong,
}

/// An incremental event-stream parser: feed it bytes as they come, in any split.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    line: Vec<u8>,
    /// The last byte fed was a `\r`: a `\n` right after it ends no new line.
    after_cr: bool,
    name: Option<String>,
    data: String,
    has_data: bool,
}

impl Parser {
    /// Parses `bytes`, appending complete frames to `out`.
    pub(crate) fn feed(&mut self, bytes: &[u8], out: &mut Vec<Frame>) -> Result<(), SseError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.after_cr && rest[0] == b'\n' {
                rest = &rest[1..];
                self.after_cr = false;
                continue;
            }
            self.after_cr = false;
            match rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(i) => {
                    self.line.extend_from_slice(&rest[..i]);
                    self.after_cr = rest[i] == b'\r';
                    rest = &rest[i + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, out);
                    self.line = line;
                    self.line.clear();
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                }
            }
            if self.line.len() > MAX_LINE || self.data.len() > MAX_LINE {
                return Err(SseError::LineTooLong);
            }
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Frame>) {
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                out.push(Frame::Event { name: self.name.take(), data });
            }
            self.name = None;
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            out.push(Frame::Comment);
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
                self.has_data = true;
            }
            b"event" => self.name = Some(String::from_utf8_lossy(value).into_owned()),
            // `id`, `retry` and unknown fields do not matter to a proxy.
            _ => {}
        }
    }
}

/// Which API a stream comes from: each has its own end event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// Chat completions and legacy completions: `data: [DONE]` ends the stream.
    Chat,
    /// The Responses API: a `response.completed` (or `response.incomplete`) event ends it.
    Responses,
}

/// What an event means for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Meaning {
    /// Carries no content (a role-only or empty delta, a `response.created`): held back before
    /// the commit, so a cut before any content can still fail over unseen.
    Preamble,
    /// Carries content: the call commits here.
    Content,
    /// The endpoint's end event: the stream is complete.
    End,
    /// An error event from upstream, or data that does not parse.
    Failed(String),
}

impl Endpoint {
    /// The endpoint of a path relative to the region's base URL.
    pub(crate) fn of_path(path: &str) -> Self {
        if path.trim_start_matches('/').starts_with("responses") { Self::Responses } else { Self::Chat }
    }

    /// Whether an event is this endpoint's end event. Cheaper than [`meaning`](Self::meaning):
    /// it parses json only for a likely candidate.
    pub(crate) fn is_end(self, name: Option<&str>, data: &str) -> bool {
        match self {
            Self::Chat => data.trim() == "[DONE]",
            Self::Responses => {
                matches!(name, Some("response.completed" | "response.incomplete"))
                    || ((data.contains("response.completed") || data.contains("response.incomplete"))
                        && responses_meaning(name, data) == Meaning::End)
            }
        }
    }

    /// What `data` (with the optional event `name`) means.
    pub(crate) fn meaning(self, name: Option<&str>, data: &str) -> Meaning {
        match self {
            Self::Chat => chat_meaning(data),
            Self::Responses => responses_meaning(name, data),
        }
    }
}

fn chat_meaning(data: &str) -> Meaning {
    let data = data.trim();
    if data == "[DONE]" {
        return Meaning::End;
    }
    let v: Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(e) => return Meaning::Failed(format!("event data is not json: {e}")),
    };
    if let Some(error) = v.get("error") {
        return Meaning::Failed(format!("error event: {error}"));
    }
    let choices = v.get("choices").and_then(Value::as_array);
    let empty_choice = |c: &Value| {
        let finished = c.get("finish_reason").is_some_and(|f| !f.is_null());
        let delta_empty = c.get("delta").and_then(Value::as_object).is_none_or(|d| {
            d.iter().all(|(k, v)| match k.as_str() {
                "role" => true,
                _ => v.is_null() || v.as_str() == Some("") || v.as_array().is_some_and(Vec::is_empty),
            })
        });
        // Legacy completions stream `text`.
        let text_empty = c.get("text").and_then(Value::as_str).is_none_or(str::is_empty);
        !finished && delta_empty && text_empty
    };
    let usage = v.get("usage").is_some_and(|u| !u.is_null());
    if !usage && choices.is_some_and(|c| c.iter().all(empty_choice)) { Meaning::Preamble } else { Meaning::Content }
}

fn responses_meaning(name: Option<&str>, data: &str) -> Meaning {
    let v: Option<Value> = serde_json::from_str(data.trim()).ok();
    let kind = name.filter(|n| !n.is_empty()).or_else(|| v.as_ref()?.get("type")?.as_str());
    match kind {
        Some("response.completed" | "response.incomplete") => Meaning::End,
        Some("response.failed" | "error") => Meaning::Failed(format!("error event: {}", data.trim())),
        Some(
            "response.created"
            | "response.in_progress"
            | "response.queued"
            | "response.output_item.added"
            | "response.content_part.added",
        ) => Meaning::Preamble,
        Some(_) => Meaning::Content,
        None if v.is_none() => Meaning::Failed("event data is not json".to_owned()),
        None => Meaning::Content,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        out
    }

    fn event(data: &str) -> Frame {
        Frame::Event { name: None, data: data.to_owned() }
    }

    #[test]
    fn events_comments_and_line_endings() {
        assert_eq!(parse(&[b"data: a\n\n"]), [event("a")]);
        assert_eq!(parse(&[b"data: a\r\n\r\n"]), [event("a")]);
        assert_eq!(parse(&[b"data: a\r\r"]), [event("a")]);
        assert_eq!(parse(&[b"data: a\r", b"\n\r", b"\n"]), [event("a")]);
        assert_eq!(parse(&[b"da", b"ta:x\nda", b"ta: y\n", b"\n"]), [event("x\ny")]);
        assert_eq!(parse(&[b": PROCESSING\n\n"]), [Frame::Comment]);
        assert_eq!(
            parse(&[b"event: response.completed\ndata: {}\n\n"]),
            [Frame::Event { name: Some("response.completed".into()), data: "{}".into() }]
        );
        // No data, no event; an event without its blank line is not dispatched.
        assert_eq!(parse(&[b"event: x\n\n"]), []);
        assert_eq!(parse(&[b"data: [DONE]\n"]), []);
        assert_eq!(parse(&[b"data\n\n"]), [event("")]);
    }

    /// Defect: `[DONE]` was found by substring, so model text containing it ended a stream.
    #[test]
    fn done_inside_content_is_content() {
        let chunk = r#"data: {"choices":[{"index":0,"delta":{"content":"say [DONE] now"}}]}"#;
        let frames = parse(&[chunk.as_bytes(), b"\n\n"]);
        let [Frame::Event { name, data }] = &frames[..] else { panic!("{frames:?}") };
        assert_eq!(Endpoint::Chat.meaning(name.as_deref(), data), Meaning::Content);
        assert_eq!(Endpoint::Chat.meaning(None, "[DONE]"), Meaning::End);
    }

    #[test]
    fn chat_meanings() {
        let m = |d: &str| Endpoint::Chat.meaning(None, d);
        assert_eq!(m(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#), Meaning::Preamble);
        assert_eq!(
            m(r#"{"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}"#),
            Meaning::Preamble
        );
        assert_eq!(m(r#"{"choices":[]}"#), Meaning::Preamble);
        assert_eq!(m(r#"{"choices":[{"index":0,"delta":{"content":"hi"}}]}"#), Meaning::Content);
        assert_eq!(m(r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}"#), Meaning::Content);
        assert_eq!(m(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#), Meaning::Content);
        assert_eq!(m(r#"{"choices":[],"usage":{"total_tokens":3}}"#), Meaning::Content);
        assert_eq!(m(r#"{"choices":[{"index":0,"text":"hi"}]}"#), Meaning::Content);
        assert!(matches!(m(r#"{"error":{"message":"overloaded"}}"#), Meaning::Failed(_)));
        assert!(matches!(m("not json"), Meaning::Failed(_)));
    }

    #[test]
    fn responses_meanings() {
        let m = |n: Option<&str>, d: &str| Endpoint::Responses.meaning(n, d);
        assert_eq!(m(Some("response.created"), "{}"), Meaning::Preamble);
        assert_eq!(m(None, r#"{"type":"response.output_text.delta","delta":"hi"}"#), Meaning::Content);
        assert_eq!(m(Some("response.completed"), "{}"), Meaning::End);
        assert_eq!(m(None, r#"{"type":"response.completed"}"#), Meaning::End);
        // `[DONE]` is no end event for the Responses API.
        assert!(matches!(m(None, "[DONE]"), Meaning::Failed(_)));
        assert!(matches!(m(Some("response.failed"), "{}"), Meaning::Failed(_)));
        assert_eq!(Endpoint::of_path("/responses"), Endpoint::Responses);
        assert_eq!(Endpoint::of_path("chat/completions"), Endpoint::Chat);
    }

    #[test]
    fn overlong_lines_fail() {
        let mut p = Parser::default();
        let big = vec![b'a'; MAX_LINE + 1];
        assert!(p.feed(&big, &mut Vec::new()).is_err());
    }

    proptest! {
        /// Arbitrary bytes in arbitrary splits never panic the parser or the meanings, and
        /// the split never changes the frames.
        #[test]
        fn fuzz_sse_bytes(
            bytes in prop::collection::vec(any::<u8>(), 0..512).prop_map(|v| {
                // Bias towards the bytes that matter to the grammar.
                const SPECIAL: &[u8] = b"\n\r: data[DONE]{}\"event";
                v.into_iter().map(|b| if b < 128 { SPECIAL[usize::from(b) % SPECIAL.len()] } else { b }).collect::<Vec<u8>>()
            }),
            cut in any::<prop::sample::Index>(),
        ) {
            let whole = parse(&[&bytes]);
            let at = cut.index(bytes.len() + 1);
            let split = parse(&[&bytes[..at], &bytes[at..]]);
            prop_assert_eq!(&whole, &split);
            for f in &whole {
                if let Frame::Event { name, data } = f {
                    let _ = Endpoint::Chat.meaning(name.as_deref(), data);
                    let _ = Endpoint::Responses.meaning(name.as_deref(), data);
                }
            }
        }
    }
}
