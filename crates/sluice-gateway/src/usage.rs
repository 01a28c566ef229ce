//! Token usage read from answers: the `usage` object of a JSON answer, or of the final chunk
//! of a stream (chat's last chunk, the Responses API's `response.completed` event).

use serde::Deserialize;

/// Tokens of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub input: u64,
    /// Generated (output) tokens.
    pub output: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached: u64,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    input_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl Usage {
    fn from_raw(raw: Raw) -> Option<Self> {
        let input = raw.prompt_tokens.or(raw.input_tokens);
        let output = raw.completion_tokens.or(raw.output_tokens);
        if input.is_none() && output.is_none() && raw.total_tokens.is_none() {
            return None;
        }
        let input = input.unwrap_or_else(|| raw.total_tokens.unwrap_or(0).saturating_sub(output.unwrap_or(0)));
        let cached = raw.prompt_tokens_details.or(raw.input_tokens_details).and_then(|d| d.cached_tokens).unwrap_or(0);
        Some(Usage { input, output: output.unwrap_or(0), cached })
    }

    /// The last `"usage": {...}` object in `text` (the tail of a JSON answer, or one event's
    /// data). Never panics on truncated or odd input.
    pub fn find_last(text: &[u8]) -> Option<Self> {
        const KEY: &[u8] = b"\"usage\"";
        let mut end = text.len();
        while let Some(at) = rfind(&text[..end], KEY) {
            let rest = &text[at + KEY.len()..];
            let rest = skip_ws(rest);
            if let Some(rest) = rest.strip_prefix(b":") {
                let rest = skip_ws(rest);
                if rest.first() == Some(&b'{') {
                    let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Raw>();
                    if let Some(Ok(raw)) = values.next() {
                        return Usage::from_raw(raw);
                    }
                }
            }
            end = at;
        }
        None
    }
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).rev().find(|&i| &hay[i..i + needle.len()] == needle)
}

/// Whether `hay` contains `needle`.
pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// A chat stream's usage-only chunk: `"choices": []` with a `usage` object. The gateway hides
/// it from callers who did not ask for usage when it asked upstream on their behalf.
pub(crate) fn is_usage_only_chunk(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Option<Vec<serde::de::IgnoredAny>>,
        #[serde(default)]
        usage: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Chunk>(data)
        .is_ok_and(|c| c.usage.is_some() && c.choices.as_ref().is_none_or(Vec::is_empty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_and_responses_shapes() {
        let chat = br#"{"id":"c","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"prompt_tokens_details":{"cached_tokens":3}}}"#;
        assert_eq!(Usage::find_last(chat), Some(Usage { input: 11, output: 7, cached: 3 }));
        let resp = br#"{"type":"response.completed","response":{"id":"resp_1","usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}}"#;
        assert_eq!(Usage::find_last(resp), Some(Usage { input: 5, output: 2, cached: 0 }));
        let emb = br#"{"data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        assert_eq!(Usage::find_last(emb), Some(Usage { input: 4, output: 0, cached: 0 }));
        assert_eq!(Usage::find_last(br#"{"usage":null}"#), None);
        assert_eq!(Usage::find_last(br#"x"usage":{"prompt_tok"#), None);
        assert_eq!(Usage::find_last(b""), None);
    }

    #[test]
    fn usage_only_chunks() {
        assert!(is_usage_only_chunk(br#"{"choices":[],"usage":{"prompt_tokens":1}}"#));
        assert!(!is_usage_only_chunk(br#"{"choices":[{"delta":{}}],"usage":null}"#));
        assert!(!is_usage_only_chunk(br#"{"choices":[{"delta":{}}]}"#));
    }
}
