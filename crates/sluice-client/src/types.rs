//! OpenAI-compatible request and response types.
//!
//! Only the fields routing needs are typed. Everything else (tools, response_format, logprobs,
//! provider extensions, …) is kept in each type's `extra` map and passes through untouched in
//! both directions.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A `POST /chat/completions` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model name.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Whether to stream. The client sets this itself for streaming calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Upper bound on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Every other field, passed through as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, `developer`, …
    pub role: String,
    /// Text, or an array of content parts, or absent (e.g. an assistant message with tool calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// Every other field (name, tool_calls, tool_call_id, refusal, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A `chat.completion` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// The completion id.
    #[serde(default)]
    pub id: String,
    /// `chat.completion`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The generated choices.
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Token usage, if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice of a [`ChatCompletion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Position among the choices.
    #[serde(default)]
    pub index: u32,
    /// The generated message.
    pub message: ChatMessage,
    /// Why generation stopped.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `chat.completion.chunk` of a streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The completion id.
    #[serde(default)]
    pub id: String,
    /// `chat.completion.chunk`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answers.
    #[serde(default)]
    pub model: String,
    /// Deltas per choice.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Every other field (usage on the last chunk, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice's delta in a [`ChatCompletionChunk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Position among the choices.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: Delta,
    /// Set on the last chunk of a choice.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The incremental content of a chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Set on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text to append.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Every other field (tool_calls, refusal, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A `GET /models` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    #[serde(default)]
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One model of a [`ModelList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// The model id.
    pub id: String,
    /// `model`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The owner.
    #[serde(default)]
    pub owned_by: String,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// ===== impl ChatCompletionRequest =====

impl ChatCompletionRequest {
    /// A request for `model` with `messages` and nothing else set.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self { model: model.into(), messages, stream: None, temperature: None, max_tokens: None, extra: Map::new() }
    }
}

// ===== impl ChatMessage =====

impl ChatMessage {
    /// A message with a role and text content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: Some(Value::String(content.into())), extra: Map::new() }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// The content if it is plain text.
    pub fn text(&self) -> Option<&str> {
        self.content.as_ref().and_then(Value::as_str)
    }
}

// ===== impl ChatCompletion =====

impl ChatCompletion {
    /// The text of the first choice, if any.
    pub fn text(&self) -> Option<&str> {
        self.choices.first().and_then(|c| c.message.text())
    }
}

// ===== impl ChatCompletionChunk =====

impl ChatCompletionChunk {
    /// The text delta of the first choice, if any.
    pub fn text(&self) -> Option<&str> {
        self.choices.first().and_then(|c| c.delta.content.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_round_trip() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi","name":"x"}],
            "tools":[{"type":"function","function":{"name":"f"}}],"response_format":{"type":"json_object"},"temperature":0.5}"#;
        let req: ChatCompletionRequest = serde_json::from_str(body).unwrap();
        assert_eq!(req.temperature, Some(0.5));
        assert!(req.extra.contains_key("tools") && req.extra.contains_key("response_format"));
        assert_eq!(req.messages[0].extra["name"], "x");
        let back: Value = serde_json::to_value(&req).unwrap();
        let orig: Value = serde_json::from_str(body).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn response_keeps_extras() {
        let body = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","system_fingerprint":"fp",
            "choices":[{"index":0,"message":{"role":"assistant","content":"ok","refusal":null},"finish_reason":"stop","logprobs":null}],
            "usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
        let r: ChatCompletion = serde_json::from_str(body).unwrap();
        assert_eq!(r.text(), Some("ok"));
        assert_eq!(serde_json::to_value(&r).unwrap(), serde_json::from_str::<Value>(body).unwrap());
    }

    #[test]
    fn chunk_parses() {
        let c: ChatCompletionChunk = serde_json::from_str(
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"he"},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(c.text(), Some("he"));
    }

    proptest::proptest! {
        /// No bytes make a typed decoder panic (errors are fine).
        #[test]
        fn fuzz_typed_decoders(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256), json in "[{}\\[\\]\":,a-z0-9 .eE+-]{0,128}") {
            for input in [&bytes[..], json.as_bytes()] {
                let _ = serde_json::from_slice::<ChatCompletion>(input);
                let _ = serde_json::from_slice::<ChatCompletionChunk>(input);
                let _ = serde_json::from_slice::<ModelList>(input);
                if let Ok(c) = serde_json::from_slice::<ChatCompletion>(input) {
                    let _ = c.text();
                }
                if let Ok(c) = serde_json::from_slice::<ChatCompletionChunk>(input) {
                    let _ = c.text();
                }
            }
        }
    }
}
