//! The API surface: what each `/v1/*` path is, and what the gateway reads from its body.

use http::Method;
use serde::Deserialize;

/// How a request body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// A JSON object (checked before it is sent).
    Json,
    /// `multipart/form-data` (audio, image edits, file uploads): the `model` field is read.
    Multipart,
    /// Anything else, passed as is.
    Opaque,
}

/// What the gateway does with one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// A bounded metric label for the endpoint.
    pub(crate) endpoint: &'static str,
    /// How the body is read.
    pub(crate) body: BodyKind,
    /// The object the path names (`/responses/{id}`, `/files/{id}/content`): it lives in one
    /// region.
    pub(crate) object: Option<String>,
    /// The answer's `id` names a new object that lives where it was created.
    pub(crate) creates: bool,
    /// A success forgets the path's object.
    pub(crate) deletes: bool,
    /// Unknown effect: never re-sent once delivered.
    pub(crate) deliver_once: bool,
}

/// The fields of a JSON body the gateway routes by.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct BodyFields {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    #[serde(default)]
    pub(crate) stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub(crate) previous_response_id: Option<String>,
    #[serde(default)]
    pub(crate) input_file_id: Option<String>,
    #[serde(default)]
    pub(crate) file_ids: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) file_id: Option<String>,
    /// Whether the body was read (as JSON or multipart), so that `stream` is known.
    #[serde(skip)]
    pub(crate) read: bool,
}

/// `stream_options` of a chat or completions request.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: Option<bool>,
}

impl BodyFields {
    /// The object this body refers to, which pins the call to that object's region.
    pub(crate) fn reference(&self) -> Option<&str> {
        self.previous_response_id
            .as_deref()
            .or(self.input_file_id.as_deref())
            .or(self.file_id.as_deref())
            .or_else(|| self.file_ids.as_ref().and_then(|f| f.first()).map(String::as_str))
            .filter(|s| !s.is_empty())
    }

    /// Whether the caller asked for a stream.
    pub(crate) fn streams(&self) -> bool {
        self.stream == Some(true)
    }
}

/// Classifies `method path`, `path` relative to `/v1/`.
pub(crate) fn route(method: &Method, path: &str) -> Route {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let post = *method == Method::POST;
    let mut r = Route {
        endpoint: "other",
        body: BodyKind::Opaque,
        object: None,
        creates: false,
        deletes: false,
        deliver_once: true,
    };
    let generate = |endpoint, body| Route { endpoint, body, deliver_once: false, ..r.clone() };
    match (segments.as_slice(), post) {
        (["chat", "completions"], true) => generate("chat.completions", BodyKind::Json),
        (["completions"], true) => generate("completions", BodyKind::Json),
        (["embeddings"], true) => generate("embeddings", BodyKind::Json),
        (["moderations"], true) => generate("moderations", BodyKind::Json),
        (["images", "generations"], true) => generate("images.generations", BodyKind::Json),
        (["images", "edits" | "variations"], true) => generate("images.edits", BodyKind::Multipart),
        (["audio", "speech"], true) => generate("audio.speech", BodyKind::Json),
        (["audio", "transcriptions"], true) => generate("audio.transcriptions", BodyKind::Multipart),
        (["audio", "translations"], true) => generate("audio.translations", BodyKind::Multipart),
        (["responses"], true) => Route { creates: true, ..generate("responses", BodyKind::Json) },
        (["models"], false) if *method == Method::GET => Route { endpoint: "models", deliver_once: false, ..r },
        (["files"], true) => Route { endpoint: "files", body: BodyKind::Multipart, creates: true, ..r },
        (["batches"], true) => Route { endpoint: "batches", body: BodyKind::Json, creates: true, ..r },
        (["vector_stores"], true) => Route { endpoint: "vector_stores", body: BodyKind::Json, creates: true, ..r },
        ([kind @ ("responses" | "files" | "batches" | "vector_stores"), id, rest @ ..], _) => {
            r.endpoint = match *kind {
                "responses" => "responses",
                "files" => "files",
                "batches" => "batches",
                _ => "vector_stores",
            };
            r.object = Some((*id).to_owned());
            r.deletes = *method == Method::DELETE && rest.is_empty();
            // Reading an object's state is safe to repeat in its region.
            r.deliver_once = *method != Method::GET;
            if post {
                r.body = BodyKind::Json;
            }
            r
        }
        _ => {
            if post {
                r.body = BodyKind::Opaque;
            }
            r
        }
    }
}

/// The `model` field of a `multipart/form-data` body, if it has one.
pub(crate) fn multipart_model(content_type: &str, body: &[u8]) -> Option<String> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty())?;
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let mut at = 0;
    while let Some(start) = find(&body[at..], d).map(|i| at + i + d.len()) {
        let part = &body[start..];
        let head_end = find(part, b"\r\n\r\n")?;
        let head = &part[..head_end];
        let value_start = head_end + 4;
        let value_end = find(&part[value_start..], d).map_or(part.len(), |i| value_start + i);
        let is_model = head.split(|b| *b == b'\n').any(|line| {
            let line = String::from_utf8_lossy(line).to_ascii_lowercase();
            line.starts_with("content-disposition") && (line.contains("name=\"model\"") || line.contains("name=model;"))
        });
        if is_model {
            let value = &part[value_start..value_end];
            let value = value.strip_suffix(b"\r\n").unwrap_or(value);
            return std::str::from_utf8(value).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        }
        at = start + value_end.max(1);
        if at >= body.len() {
            break;
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()].iter().position(|b| *b == first) {
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
            None => return None,
        }
    }
    None
}

/// The top-level `id` of a JSON answer.
pub(crate) fn answer_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Id {
        id: Option<String>,
    }
    serde_json::from_slice::<Id>(body).ok()?.id.filter(|s| !s.is_empty())
}

/// The response id of a Responses API stream event (`response.created` and later).
pub(crate) fn event_response_id(data: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Event {
        response: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        id: Option<String>,
    }
    serde_json::from_slice::<Event>(data).ok()?.response?.id.filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_surface() {
        let r = route(&Method::POST, "chat/completions");
        assert_eq!((r.endpoint, r.body, r.deliver_once), ("chat.completions", BodyKind::Json, false));
        assert_eq!(route(&Method::POST, "audio/transcriptions").body, BodyKind::Multipart);
        let r = route(&Method::GET, "responses/resp_1");
        assert_eq!((r.object.as_deref(), r.deliver_once, r.deletes), (Some("resp_1"), false, false));
        let r = route(&Method::DELETE, "responses/resp_1");
        assert!(r.deletes && r.deliver_once);
        let r = route(&Method::GET, "files/file-1/content");
        assert_eq!((r.endpoint, r.object.as_deref(), r.deletes), ("files", Some("file-1"), false));
        assert!(route(&Method::POST, "files").creates);
        let r = route(&Method::POST, "fine_tuning/jobs");
        assert_eq!((r.endpoint, r.deliver_once, r.object), ("other", true, None));
        assert_eq!(route(&Method::GET, "models").endpoint, "models");
    }

    #[test]
    fn multipart_model_field() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....--XyZ-ish\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ--\r\n";
        assert_eq!(multipart_model("multipart/form-data; boundary=XyZ", body).as_deref(), Some("whisper-1"));
        assert_eq!(multipart_model("multipart/form-data; boundary=\"XyZ\"", body).as_deref(), Some("whisper-1"));
        assert_eq!(multipart_model("multipart/form-data", body), None);
        assert_eq!(multipart_model("multipart/form-data; boundary=XyZ", b"--XyZ\r\nbroken"), None);
        assert_eq!(multipart_model("multipart/form-data; boundary=Q", b""), None);
    }

    #[test]
    fn ids() {
        assert_eq!(answer_id(br#"{"id":"resp_1","output":[{"id":"msg_1"}]}"#).as_deref(), Some("resp_1"));
        assert_eq!(
            event_response_id(br#"{"type":"response.created","response":{"id":"resp_2"}}"#).as_deref(),
            Some("resp_2")
        );
        let f: BodyFields =
            serde_json::from_slice(br#"{"model":"m","previous_response_id":"resp_1","input":[1]}"#).unwrap();
        assert_eq!(f.reference(), Some("resp_1"));
    }
}
