//! Which models each region serves, aliases and fallbacks.
//!
//! A region serves, in order of precedence:
//! 1. the models configured for it ([`ClientBuilder::region_models`](crate::ClientBuilder::region_models)),
//! 2. else the models of its provider's deployment table,
//! 3. else the list its `GET /models` returned (fetched by the first probe round),
//! 4. else, while no list is known, every model.
//!
//! An upstream 404 `model_not_found` (or Azure's `DeploymentNotFound`) removes that model
//! from that region for [`ModelRouting::not_found_ttl`].

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;

/// How long a model that a region answered 404 `model_not_found` for stays off that region:
/// 5 minutes.
pub const DEFAULT_MODEL_NOT_FOUND_TTL: Duration = Duration::from_secs(300);

/// Most fallbacks one model may have.
const MAX_FALLBACKS: usize = 8;

/// Model aliases and fallbacks. Set with
/// [`ClientBuilder::model_routing`](crate::ClientBuilder::model_routing).
///
/// * An alias names another model: a call for `fast` goes out as a call for `gpt-4o-mini`
///   (the body's `model` is rewritten). Aliases resolve once; they do not chain.
/// * Fallbacks are tried in order, each on every region that serves it, only after the
///   call for the first model failed with an error that another model might not have: every
///   eligible region failed or was throttled, or none could be reached. A client error
///   (400, 404...) or a timeout of a call that may have generated its answer ends the call.
///
/// The model that served a call is [`ResponseMeta::model`](crate::ResponseMeta::model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRouting {
    aliases: HashMap<String, String>,
    fallbacks: HashMap<String, Vec<String>>,
    not_found_ttl: Duration,
}

// ===== impl ModelRouting =====

impl ModelRouting {
    /// No aliases, no fallbacks, [`DEFAULT_MODEL_NOT_FOUND_TTL`].
    pub fn new() -> Self {
        Self { aliases: HashMap::new(), fallbacks: HashMap::new(), not_found_ttl: DEFAULT_MODEL_NOT_FOUND_TTL }
    }

    /// Makes `alias` a name for `model`.
    pub fn alias(mut self, alias: impl Into<String>, model: impl Into<String>) -> Self {
        self.aliases.insert(alias.into(), model.into());
        self
    }

    /// The models tried, in order, when every region of `model` failed.
    pub fn fallbacks(
        mut self,
        model: impl Into<String>,
        fallbacks: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.fallbacks.insert(model.into(), fallbacks.into_iter().map(Into::into).collect());
        self
    }

    /// How long a 404 `model_not_found` keeps a model off a region.
    pub fn not_found_ttl(mut self, ttl: Duration) -> Self {
        self.not_found_ttl = ttl;
        self
    }

    /// The model a requested name stands for: its alias target, or itself.
    pub fn resolve<'a>(&'a self, model: &'a str) -> &'a str {
        self.aliases.get(model).map_or(model, String::as_str)
    }

    /// The fallbacks of `model` (already resolved), in order, aliases resolved.
    pub fn fallbacks_of<'a>(&'a self, model: &str) -> impl Iterator<Item = &'a str> {
        self.fallbacks.get(model).into_iter().flatten().map(|m| self.resolve(m))
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.not_found_ttl
    }

    /// Checks the tables as [`ClientBuilder::build`](crate::ClientBuilder::build) does.
    ///
    /// # Errors
    /// [`BuildError::Routing`](crate::BuildError::Routing) (region `[models]`): an empty name,
    /// an alias of itself, a model among its own fallbacks, more than 8 fallbacks, a zero
    /// not-found ttl.
    pub fn check(&self) -> Result<(), crate::BuildError> {
        self.validate().map_err(|message| crate::BuildError::Routing { region: "[models]".to_owned(), message })
    }

    /// Checks the tables: no empty names, no alias of itself, no model among its own
    /// fallbacks, a bounded number of fallbacks.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (alias, model) in &self.aliases {
            if alias.is_empty() || model.is_empty() {
                return Err("an alias or its model is empty".to_owned());
            }
            if alias == model {
                return Err(format!("alias `{alias}` names itself"));
            }
        }
        for (model, list) in &self.fallbacks {
            if model.is_empty() || list.iter().any(String::is_empty) {
                return Err("a fallback model name is empty".to_owned());
            }
            if list.len() > MAX_FALLBACKS {
                return Err(format!("`{model}` has more than {MAX_FALLBACKS} fallbacks"));
            }
            if list.iter().any(|m| self.resolve(m) == self.resolve(model)) {
                return Err(format!("`{model}` is among its own fallbacks"));
            }
        }
        if self.not_found_ttl.is_zero() {
            return Err("not_found_ttl must be greater than zero".to_owned());
        }
        Ok(())
    }
}

impl Default for ModelRouting {
    fn default() -> Self {
        Self::new()
    }
}

/// The models one region serves, read on the pick path without locks or allocation.
pub(crate) struct RegionModels {
    /// Configured (or a deployment table): final, never replaced by a fetched list.
    fixed: Option<HashSet<Box<str>>>,
    /// The last list fetched from `/models`, if any.
    listed: ArcSwapOption<HashSet<Box<str>>>,
    /// Models removed after a 404 `model_not_found`, with the instant they return.
    removed: ArcSwap<Vec<(Box<str>, Instant)>>,
}

// ===== impl RegionModels =====

impl RegionModels {
    pub(crate) fn new(fixed: Option<impl IntoIterator<Item = impl Into<Box<str>>>>) -> Self {
        Self {
            fixed: fixed.map(|f| f.into_iter().map(Into::into).collect()),
            listed: ArcSwapOption::empty(),
            removed: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Whether the region serves `model` at `now`.
    pub(crate) fn serves(&self, model: &str, now: Instant) -> bool {
        if self.removed.load().iter().any(|(m, until)| &**m == model && *until > now) {
            return false;
        }
        self.lists(model)
    }

    /// Whether the region's list (configured, fetched, or unknown = all) has `model`.
    fn lists(&self, model: &str) -> bool {
        if let Some(fixed) = &self.fixed {
            return fixed.contains(model);
        }
        match &*self.listed.load() {
            Some(listed) => listed.contains(model),
            None => true,
        }
    }

    /// Records the list a `/models` answer gave. Ignored when the list is configured.
    pub(crate) fn set_listed(&self, models: HashSet<Box<str>>) {
        if self.fixed.is_none() {
            self.listed.store(Some(Arc::new(models)));
        }
    }

    /// Takes `model` off the region until `until`.
    pub(crate) fn remove(&self, model: &str, now: Instant, until: Instant) {
        self.removed.rcu(|current| {
            let mut next: Vec<(Box<str>, Instant)> =
                current.iter().filter(|(m, t)| *t > now && &**m != model).cloned().collect();
            next.push((model.into(), until));
            next
        });
    }

    /// The models known to be served, sorted; `None` while the list is unknown (all).
    pub(crate) fn known(&self, now: Instant) -> Option<Vec<String>> {
        let removed = self.removed.load();
        let gone = |m: &str| removed.iter().any(|(r, until)| &**r == m && *until > now);
        let mut list: Vec<String> = match (&self.fixed, &*self.listed.load()) {
            (Some(f), _) => f.iter().filter(|m| !gone(m)).map(|m| m.to_string()).collect(),
            (None, Some(l)) => l.iter().filter(|m| !gone(m)).map(|m| m.to_string()).collect(),
            (None, None) => return None,
        };
        list.sort_unstable();
        Some(list)
    }
}

impl fmt::Debug for RegionModels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegionModels")
            .field("fixed", &self.fixed.as_ref().map(HashSet::len))
            .field("listed", &self.listed.load().as_ref().map(|l| l.len()))
            .finish_non_exhaustive()
    }
}

/// The model ids of a `/models` answer (`{"data":[{"id":...}]}`), or `None` if it is not one.
pub(crate) fn parse_model_list(body: &[u8]) -> Option<HashSet<Box<str>>> {
    #[derive(serde::Deserialize)]
    struct List {
        data: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        id: Option<String>,
    }
    let list: List = serde_json::from_slice(body).ok()?;
    Some(list.data.into_iter().filter_map(|e| e.id).map(String::into_boxed_str).collect())
}

/// Whether an error answer says the model (or Azure deployment) does not exist there.
pub(crate) fn is_model_not_found(status: u16, body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: Option<String>,
    }
    status == 404
        && serde_json::from_slice::<Answer>(body)
            .ok()
            .and_then(|a| a.error.code)
            .is_some_and(|c| c == "model_not_found" || c == "DeploymentNotFound")
}

/// The body with its `model` set to `model`: the field of a JSON object body, or the `model`
/// part of a `multipart/form-data` body (audio uploads), given the body's content type.
/// `None` for any other body.
pub(crate) fn rewrite_model(body: &[u8], content_type: Option<&str>, model: &str) -> Option<Bytes> {
    if let Some(boundary) = content_type.and_then(multipart_boundary) {
        return rewrite_multipart_model(body, boundary, model);
    }
    let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    value.insert("model".to_owned(), serde_json::Value::String(model.to_owned()));
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

/// The OpenAI-shaped error answered for a body whose `model` cannot be set.
pub(crate) fn unrewritable_body(model: &str) -> Bytes {
    let message = format!("the request routes to model `{model}`, but its body has no `model` field that can be set");
    let value = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": "model", "code": null}});
    Bytes::from(value.to_string())
}

/// The boundary of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<&str> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"')).filter(|b| !b.is_empty())
    })
}

/// Replaces the value of the `model` part of a multipart body.
fn rewrite_multipart_model(body: &[u8], boundary: &str, model: &str) -> Option<Bytes> {
    let delimiter = format!("--{boundary}");
    let mut at = find(body, delimiter.as_bytes(), 0)?;
    loop {
        let headers_start = at + delimiter.len();
        if body[headers_start..].starts_with(b"--") {
            return None;
        }
        let head_end = find(body, b"\r\n\r\n", headers_start)?;
        let value_start = head_end + 4;
        let next = find(body, format!("\r\n{delimiter}").as_bytes(), value_start)?;
        let head = std::str::from_utf8(&body[headers_start..head_end]).ok()?;
        let is_model = head.lines().any(|line| {
            let line = line.to_ascii_lowercase();
            line.starts_with("content-disposition:")
                && (line.contains("name=\"model\"") || line.contains("name=model;") || line.ends_with("name=model"))
        });
        if is_model {
            let mut out = Vec::with_capacity(body.len() + model.len());
            out.extend_from_slice(&body[..value_start]);
            out.extend_from_slice(model.as_bytes());
            out.extend_from_slice(&body[next..]);
            return Some(Bytes::from(out));
        }
        at = next + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_removal() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let unknown = RegionModels::new(None::<Vec<String>>);
        assert!(unknown.serves("anything", t0), "an unknown list serves every model");
        assert_eq!(unknown.known(t0), None);
        unknown.set_listed(["gpt-4o".into()].into_iter().collect());
        assert!(unknown.serves("gpt-4o", t0));
        assert!(!unknown.serves("gpt-4o-mini", t0));
        assert_eq!(unknown.known(t0), Some(vec!["gpt-4o".to_owned()]));

        let fixed = RegionModels::new(Some(["a", "b"]));
        fixed.set_listed(["c".into()].into_iter().collect());
        assert!(fixed.serves("a", t0) && !fixed.serves("c", t0), "configured models override the fetched list");

        fixed.remove("a", t0, later);
        assert!(!fixed.serves("a", t0));
        assert!(fixed.serves("b", t0));
        assert_eq!(fixed.known(t0), Some(vec!["b".to_owned()]));
        assert!(fixed.serves("a", later), "a removal ends");
        fixed.remove("b", later, later + Duration::from_secs(1));
        assert_eq!(fixed.removed.load().len(), 1, "expired removals are dropped");
    }

    #[test]
    fn routing_tables() {
        let r = ModelRouting::new().alias("fast", "gpt-4o-mini").fallbacks("gpt-4o", ["fast", "gpt-3.5"]);
        assert_eq!(r.resolve("fast"), "gpt-4o-mini");
        assert_eq!(r.resolve("gpt-4o"), "gpt-4o");
        assert_eq!(r.fallbacks_of("gpt-4o").collect::<Vec<_>>(), ["gpt-4o-mini", "gpt-3.5"]);
        assert_eq!(r.fallbacks_of("gpt-4o-mini").count(), 0);
        assert!(r.validate().is_ok());
        assert!(ModelRouting::new().alias("a", "a").validate().is_err());
        assert!(ModelRouting::new().alias("f", "m").fallbacks("m", ["f"]).validate().is_err());
        assert!(ModelRouting::new().fallbacks("m", [""]).validate().is_err());
        assert!(ModelRouting::new().not_found_ttl(Duration::ZERO).validate().is_err());
    }

    #[test]
    fn parsing() {
        let list =
            parse_model_list(br#"{"object":"list","data":[{"id":"a","object":"model"},{"id":"b"},{}]}"#).unwrap();
        assert_eq!(list.len(), 2);
        assert!(parse_model_list(b"{}").is_none());
        assert!(parse_model_list(b"<html>").is_none());

        let nf = br#"{"error":{"message":"The model `x` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#;
        assert!(is_model_not_found(404, nf));
        assert!(!is_model_not_found(400, nf));
        assert!(is_model_not_found(404, br#"{"error":{"code":"DeploymentNotFound","message":"m"}}"#));
        assert!(!is_model_not_found(404, br#"{"error":{"code":"not_found"}}"#));
        assert!(!is_model_not_found(404, b"not json"));

        let body = rewrite_model(br#"{"model":"fast","messages":[],"n":1}"#, None, "gpt-4o-mini").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(v["n"], 1);
        assert!(rewrite_model(b"--boundary", None, "m").is_none());
        assert!(rewrite_model(b"--boundary", Some("application/json"), "m").is_none());
    }

    #[test]
    fn multipart_model_part() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\x00\x01model\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nfast\r\n--XyZ\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\nen\r\n--XyZ--\r\n";
        let out = rewrite_model(body, Some("multipart/form-data; boundary=\"XyZ\""), "whisper-1").unwrap();
        let expect = String::from_utf8_lossy(body).replace("\r\n\r\nfast\r\n", "\r\n\r\nwhisper-1\r\n");
        assert_eq!(String::from_utf8_lossy(&out), expect);
        let no_model = b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--b--\r\n";
        assert!(rewrite_model(no_model, Some("multipart/form-data; boundary=b"), "m").is_none());
        assert!(rewrite_model(b"garbage", Some("multipart/form-data; boundary=b"), "m").is_none());
        assert!(
            rewrite_model(
                b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm",
                Some("multipart/form-data; boundary=b"),
                "x"
            )
            .is_none(),
            "no closing delimiter"
        );
    }
}
