//! Providers: how a region wants its calls addressed and authenticated.
//!
//! * [`Provider::openai`] (the default): `{url}/{path}`, `Authorization: Bearer KEY`.
//! * [`Provider::azure`]: Azure OpenAI, `api-key: KEY`. With `url =
//!   https://NAME.openai.azure.com/openai` (the classic form) calls for a model go to
//!   `{url}/deployments/{deployment}/{path}?api-version=...`; with a url ending in `/v1` (the
//!   `/openai/v1` form) they go to `{url}/{path}` and the body's `model` names the deployment.
//! * Any provider can send the key in another header ([`Provider::auth_header`]) and carry
//!   extra headers ([`Provider::header`]).
//!
//! The base url's query string is kept on every call.

use std::{collections::BTreeMap, fmt};

use http::{HeaderMap, HeaderName, HeaderValue, header};
use sluice_region_model::ApiKey;
use url::Url;

use crate::BuildError;

/// How one region is addressed and authenticated. Set per region with
/// [`ClientBuilder::provider`](crate::ClientBuilder::provider); regions without one use
/// [`Provider::openai`].
///
/// Settings are checked when the client is built, against the region's url.
#[derive(Clone, PartialEq, Eq)]
pub struct Provider {
    kind: ProviderKind,
    auth_header: Option<String>,
    api_version: Option<String>,
    deployments: Option<BTreeMap<String, String>>,
    headers: Vec<(String, String)>,
    pass_caller_key: bool,
}

/// Which API dialect a [`Provider`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderKind {
    /// OpenAI and every OpenAI-compatible server.
    OpenAi,
    /// Azure OpenAI.
    Azure,
}

/// The endpoints that Azure's classic form addresses through a deployment.
const DEPLOYMENT_PATHS: &[&str] = &[
    "chat/completions",
    "completions",
    "embeddings",
    "images/generations",
    "images/edits",
    "audio/transcriptions",
    "audio/translations",
    "audio/speech",
];

// ===== impl Provider =====

impl Provider {
    /// OpenAI or any OpenAI-compatible server: `Authorization: Bearer KEY`.
    pub fn openai() -> Self {
        Self {
            kind: ProviderKind::OpenAi,
            auth_header: None,
            api_version: None,
            deployments: None,
            headers: Vec::new(),
            pass_caller_key: false,
        }
    }

    /// Azure OpenAI: the key goes in the `api-key` header.
    ///
    /// The classic form (a url such as `https://NAME.openai.azure.com/openai`) needs an
    /// [`api_version`](Self::api_version); a model's calls go to its
    /// [`deployment`](Self::deployment), or to a deployment named like the model when the
    /// region has no deployment table. The `/openai/v1` form (a url ending in `/v1`) needs
    /// neither; an api version, if set, is still sent.
    pub fn azure() -> Self {
        Self { kind: ProviderKind::Azure, ..Self::openai() }
    }

    /// The dialect.
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// Sends the key, as is, in this header instead of the provider's own (for example
    /// `x-api-key`).
    pub fn auth_header(mut self, name: impl Into<String>) -> Self {
        self.auth_header = Some(name.into());
        self
    }

    /// The `api-version` query parameter added to every call (Azure).
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = Some(version.into());
        self
    }

    /// Maps a model to the deployment that serves it (Azure). A region with a deployment
    /// table serves exactly the models in it.
    pub fn deployment(mut self, model: impl Into<String>, deployment: impl Into<String>) -> Self {
        self.deployments.get_or_insert_with(BTreeMap::new).insert(model.into(), deployment.into());
        self
    }

    /// An extra header sent with every call and probe to this region, such as
    /// `OpenAI-Project`. It replaces a caller's header of the same name.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends the caller's own key ([`CallOptions::caller_key`](crate::CallOptions::caller_key))
    /// to this region instead of the configured one, in the provider's auth header. A call
    /// without a caller key goes without a key. The configured key, if any, is used only
    /// for probes; without one, a probe refused with 401/403 still shows the region is up.
    ///
    /// A 401/403 from this region then refuses the caller's key, not the region: the call
    /// ends with that answer (never sent to a region holding another key), and the region
    /// stays in service for other callers.
    pub fn pass_caller_key(mut self) -> Self {
        self.pass_caller_key = true;
        self
    }

    /// Whether the region takes callers' own keys ([`Provider::pass_caller_key`]).
    pub fn passes_caller_key(&self) -> bool {
        self.pass_caller_key
    }

    /// The models of the deployment table, if there is one.
    pub fn deployment_models(&self) -> Option<impl Iterator<Item = &str>> {
        self.deployments.as_ref().map(|d| d.keys().map(String::as_str))
    }

    /// Checks the settings against a region's id and endpoint url, as
    /// [`ClientBuilder::build`](crate::ClientBuilder::build) does, so that a configuration
    /// file can be refused before a client is built.
    ///
    /// # Errors
    /// [`BuildError::Routing`] naming the region: an endpoint that is not a url, an Azure
    /// classic url without an api version, an invalid header name or value, a deployment
    /// name that is not a plain path segment.
    pub fn check(&self, region: &str, endpoint: &str) -> Result<(), BuildError> {
        let fail = |message: String| BuildError::Routing { region: region.to_owned(), message };
        let url = Url::parse(endpoint).map_err(|e| fail(format!("url: {e}")))?;
        self.resolve(&url).map(drop).map_err(fail)
    }

    /// Checks the settings against the region's url and prepares them for the request path.
    pub(crate) fn resolve(&self, base: &Url) -> Result<Upstream, String> {
        let form = match self.kind {
            ProviderKind::OpenAi => Form::OpenAi,
            ProviderKind::Azure if base.path().trim_end_matches('/').ends_with("/v1") => Form::AzureV1,
            ProviderKind::Azure => Form::AzureClassic,
        };
        if form == Form::AzureClassic && self.api_version.is_none() {
            return Err("an azure url without /v1 needs api_version".to_owned());
        }
        if let Some(v) = &self.api_version
            && (v.is_empty() || v.contains(['&', '#', '?', ' ']))
        {
            return Err(format!("api_version `{v}` is not a plain query value"));
        }
        let default_auth = match self.kind {
            ProviderKind::OpenAi => header::AUTHORIZATION,
            ProviderKind::Azure => HeaderName::from_static("api-key"),
        };
        let auth = match &self.auth_header {
            Some(name) => HeaderName::try_from(name.as_str())
                .map_err(|_| format!("auth header `{name}` is not a valid header name"))?,
            None => default_auth,
        };
        let bearer = self.auth_header.is_none() && self.kind == ProviderKind::OpenAi;
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let n = HeaderName::try_from(name.as_str())
                .map_err(|_| format!("header `{name}` is not a valid header name"))?;
            if n == auth {
                return Err(format!("header `{name}` would replace the key; use auth instead"));
            }
            let v =
                HeaderValue::try_from(value.as_str()).map_err(|_| format!("header `{name}` has an invalid value"))?;
            headers.insert(n, v);
        }
        if let Some(d) = &self.deployments {
            if d.is_empty() {
                return Err("the deployment table is empty".to_owned());
            }
            if let Some((model, _)) =
                d.iter().find(|(m, dep)| m.is_empty() || dep.is_empty() || dep.contains(['/', '?', '#']))
            {
                return Err(format!("deployment of `{model}` is not a plain name"));
            }
        }
        Ok(Upstream {
            form,
            auth,
            bearer,
            api_version: self.api_version.clone().map(String::into_boxed_str),
            deployments: self.deployments.clone(),
            headers,
            pass_caller_key: self.pass_caller_key,
            base: base.clone(),
            urls: UrlCache::default(),
        })
    }
}

impl Default for Provider {
    fn default() -> Self {
        Self::openai()
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("kind", &self.kind)
            .field("auth_header", &self.auth_header)
            .field("api_version", &self.api_version)
            .field("deployments", &self.deployments)
            .field("headers", &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .field("pass_caller_key", &self.pass_caller_key)
            .finish()
    }
}

/// The url form a region uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    OpenAi,
    AzureClassic,
    AzureV1,
}

/// A region's provider, checked and ready for the request path.
#[derive(Debug)]
pub(crate) struct Upstream {
    form: Form,
    auth: HeaderName,
    bearer: bool,
    api_version: Option<Box<str>>,
    deployments: Option<BTreeMap<String, String>>,
    headers: HeaderMap,
    pass_caller_key: bool,
    /// The region's url, which every call's url extends.
    base: Url,
    urls: UrlCache,
}

/// The urls built last, so that a call to a path seen before clones its url instead of
/// building and re-parsing it. Reads take no lock; at most [`UrlCache::MAX`] are kept, so
/// callers' paths (object ids, queries) cannot grow it.
#[derive(Debug, Default)]
struct UrlCache {
    entries: arc_swap::ArcSwap<Vec<UrlEntry>>,
}

#[derive(Debug, Clone)]
struct UrlEntry {
    path: Box<str>,
    model: Option<Box<str>>,
    url: Url,
}

impl UrlEntry {
    fn is(&self, path: &str, model: Option<&str>) -> bool {
        &*self.path == path && self.model.as_deref() == model
    }
}

impl UrlCache {
    const MAX: usize = 32;

    fn get(&self, path: &str, model: Option<&str>, build: impl FnOnce() -> Url) -> Url {
        if let Some(e) = self.entries.load().iter().find(|e| e.is(path, model)) {
            return e.url.clone();
        }
        let url = build();
        if self.entries.load().len() < Self::MAX {
            let entry = UrlEntry { path: path.into(), model: model.map(Into::into), url: url.clone() };
            self.entries.rcu(|entries| {
                let mut entries = Vec::clone(entries);
                if !entries.iter().any(|e| e.is(path, model)) {
                    entries.push(entry.clone());
                }
                entries
            });
        }
        url
    }
}

// ===== impl Upstream =====

impl Upstream {
    /// The url of a call: `path` (relative, may carry a query) under the region's url, with
    /// its query kept, for `model` when the call has one.
    pub(crate) fn url(&self, path: &str, model: Option<&str>) -> Url {
        // Only Azure's classic form puts the model (its deployment) in the url.
        let key = if self.form == Form::AzureClassic { model } else { None };
        self.urls.get(path, key, || self.build_url(path, model))
    }

    fn build_url(&self, path: &str, model: Option<&str>) -> Url {
        let base = &self.base;
        let (path, query) = split_query(path.trim_start_matches('/'));
        let deployment = match (self.form, model) {
            (Form::AzureClassic, Some(m)) if DEPLOYMENT_PATHS.contains(&path.trim_end_matches('/')) => {
                Some(self.wire_model(m))
            }
            _ => None,
        };
        let mut full = base.path().trim_end_matches('/').to_owned();
        if let Some(d) = deployment {
            full.push_str("/deployments/");
            full.push_str(d);
        }
        // Dot segments are dropped, so nothing in `path` climbs out of the base path; the host
        // never changes, as only the path and query are set.
        for segment in path.split('/').filter(|s| !is_dot_or_empty(s)) {
            full.push('/');
            full.push_str(segment);
        }
        let mut url = base.clone();
        url.set_path(&full);
        let mut query = join_query(base.query(), query);
        if let Some(v) = &self.api_version
            && !url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "api-version")
        {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str("api-version=");
            query.push_str(v);
        }
        url.set_query(if query.is_empty() { None } else { Some(&query) });
        url
    }

    /// The name the upstream knows `model` by: its deployment on Azure, else the model.
    pub(crate) fn wire_model<'a>(&'a self, model: &'a str) -> &'a str {
        match (self.form, &self.deployments) {
            (Form::AzureClassic | Form::AzureV1, Some(d)) => d.get(model).map_or(model, String::as_str),
            _ => model,
        }
    }

    /// The models of the deployment table, if there is one.
    pub(crate) fn deployment_models(&self) -> Option<impl Iterator<Item = &str>> {
        self.deployments.as_ref().map(|d| d.keys().map(String::as_str))
    }

    /// Whether calls carry the caller's key rather than the configured one.
    pub(crate) fn passes_caller_key(&self) -> bool {
        self.pass_caller_key
    }

    /// Puts the key (if any) and the region's extra headers on a request.
    pub(crate) fn authorize(
        &self,
        headers: &mut HeaderMap,
        key: Option<&ApiKey>,
    ) -> Result<(), http::header::InvalidHeaderValue> {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(key) = key {
            let mut value = if self.bearer {
                HeaderValue::try_from(format!("Bearer {}", key.expose_secret()))?
            } else {
                HeaderValue::try_from(key.expose_secret())?
            };
            value.set_sensitive(true);
            headers.insert(self.auth.clone(), value);
        }
        Ok(())
    }
}

fn is_dot_or_empty(segment: &str) -> bool {
    let s = segment.to_ascii_lowercase();
    matches!(s.as_str(), "" | "." | ".." | "%2e" | ".%2e" | "%2e." | "%2e%2e")
}

fn split_query(path: &str) -> (&str, Option<&str>) {
    match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    }
}

fn join_query(base: Option<&str>, extra: Option<&str>) -> String {
    let parts = [base, extra];
    let mut out = String::new();
    for part in parts.into_iter().flatten().filter(|q| !q.is_empty()) {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(part);
    }
    out
}

/// Whether `url` may carry the key of the region whose endpoint is `base`: same scheme, host
/// and port.
pub(crate) fn same_origin(url: &Url, base: &Url) -> bool {
    url.scheme() == base.scheme()
        && url.host() == base.host()
        && url.port_or_known_default() == base.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(provider: &Provider, base: &str, path: &str, model: Option<&str>, expect: &str) {
        let base = Url::parse(base).unwrap();
        let upstream = provider.resolve(&base).unwrap();
        let url = upstream.url(path, model);
        assert_eq!(url.as_str(), expect, "{provider:?} {path}");
        assert!(same_origin(&url, &base));
    }

    #[test]
    fn urls_are_kept_per_path_and_deployment_and_the_cache_is_bounded() {
        let azure = Provider::azure().api_version("v1").deployment("a", "dep-a").deployment("b", "dep-b");
        let one = Url::parse("https://one.openai.azure.com/openai").unwrap();
        let two = Url::parse("https://two.openai.azure.com/openai").unwrap();
        let (upstream, other_region) = (azure.resolve(&one).unwrap(), azure.resolve(&two).unwrap());
        for _ in 0..2 {
            let a = upstream.url("chat/completions", Some("a"));
            assert_eq!(
                a.as_str(),
                "https://one.openai.azure.com/openai/deployments/dep-a/chat/completions?api-version=v1"
            );
            let b = upstream.url("chat/completions", Some("b"));
            assert_eq!(
                b.as_str(),
                "https://one.openai.azure.com/openai/deployments/dep-b/chat/completions?api-version=v1"
            );
            let other = other_region.url("chat/completions", Some("a"));
            assert_eq!(other.host_str(), Some("two.openai.azure.com"));
        }
        assert_eq!(upstream.urls.entries.load().len(), 2);
        assert_eq!(other_region.urls.entries.load().len(), 1);
        for i in 0..100 {
            let url = upstream.url(&format!("files/file-{i}"), None);
            assert!(url.path().ends_with(&format!("/files/file-{i}")));
        }
        assert_eq!(upstream.urls.entries.load().len(), UrlCache::MAX);
    }

    #[test]
    fn urls() {
        let openai = Provider::openai();
        check(
            &openai,
            "https://api.openai.com/v1",
            "chat/completions",
            Some("gpt-4o"),
            "https://api.openai.com/v1/chat/completions",
        );
        check(&openai, "https://api.openai.com/v1/", "/models", None, "https://api.openai.com/v1/models");
        // The base's query is kept, and merged with the call's own.
        check(&openai, "https://h/v1?team=a", "chat/completions", None, "https://h/v1/chat/completions?team=a");
        check(&openai, "https://h/v1?team=a", "files?limit=2", None, "https://h/v1/files?team=a&limit=2");
        // Nothing in the path leaves the base.
        check(&openai, "https://h/v1", "../../x/./y", None, "https://h/v1/x/y");
        check(&openai, "https://h/v1", "//evil.example/x", None, "https://h/v1/evil.example/x");
        check(&openai, "https://h/v1", "%2E%2e/files/a%20b", None, "https://h/v1/files/a%20b");

        let azure = Provider::azure().api_version("2024-10-21").deployment("gpt-4o-mini", "mini-eu");
        let base = "https://name.openai.azure.com/openai";
        check(
            &azure,
            base,
            "chat/completions",
            Some("gpt-4o-mini"),
            "https://name.openai.azure.com/openai/deployments/mini-eu/chat/completions?api-version=2024-10-21",
        );
        check(
            &azure,
            base,
            "embeddings",
            Some("other"),
            "https://name.openai.azure.com/openai/deployments/other/embeddings?api-version=2024-10-21",
        );
        check(&azure, base, "models", None, "https://name.openai.azure.com/openai/models?api-version=2024-10-21");
        check(
            &azure,
            base,
            "responses",
            Some("gpt-4o-mini"),
            "https://name.openai.azure.com/openai/responses?api-version=2024-10-21",
        );
        // An api-version in the call's own query wins.
        check(&azure, base, "models?api-version=x", None, "https://name.openai.azure.com/openai/models?api-version=x");

        let v1 = Provider::azure();
        check(
            &v1,
            "https://name.openai.azure.com/openai/v1",
            "chat/completions",
            Some("gpt-4o"),
            "https://name.openai.azure.com/openai/v1/chat/completions",
        );
        check(
            &v1.api_version("preview"),
            "https://n.openai.azure.com/openai/v1/",
            "responses",
            None,
            "https://n.openai.azure.com/openai/v1/responses?api-version=preview",
        );
    }

    #[test]
    fn wire_model() {
        let base = Url::parse("https://n.openai.azure.com/openai/v1").unwrap();
        let u = Provider::azure().deployment("gpt-4o", "dep-4o").resolve(&base).unwrap();
        assert_eq!(u.wire_model("gpt-4o"), "dep-4o");
        assert_eq!(u.wire_model("gpt-x"), "gpt-x");
        let u = Provider::openai().resolve(&base).unwrap();
        assert_eq!(u.wire_model("gpt-4o"), "gpt-4o");
    }

    #[test]
    fn auth_headers() {
        let base = Url::parse("https://h/v1").unwrap();
        let key = ApiKey::new("sk-secret-1");
        let headers = |p: Provider| {
            let mut h = HeaderMap::new();
            h.insert("x-api-key", HeaderValue::from_static("caller"));
            p.resolve(&base).unwrap().authorize(&mut h, Some(&key)).unwrap();
            h
        };
        let h = headers(Provider::openai().header("OpenAI-Project", "proj_x"));
        assert_eq!(h["authorization"], "Bearer sk-secret-1");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["openai-project"], "proj_x");
        let h = headers(Provider::azure().api_version("v"));
        assert_eq!(h["api-key"], "sk-secret-1");
        assert!(h.get("authorization").is_none());
        let h = headers(Provider::openai().auth_header("x-api-key"));
        assert_eq!(h["x-api-key"], "sk-secret-1", "the region's key replaces the caller's");
        assert!(h["x-api-key"].is_sensitive());
        assert!(h.get("authorization").is_none());
    }

    #[test]
    fn bad_settings_are_refused() {
        let base = Url::parse("https://n.openai.azure.com/openai").unwrap();
        let bad = |p: Provider| p.resolve(&base).unwrap_err();
        assert!(bad(Provider::azure()).contains("api_version"));
        assert!(bad(Provider::openai().auth_header("bad header")).contains("auth header"));
        assert!(bad(Provider::openai().header("x", "a\nb")).contains("invalid value"));
        assert!(bad(Provider::openai().header("authorization", "x")).contains("replace the key"));
        assert!(bad(Provider::azure().api_version("v").deployment("m", "a/b")).contains("plain name"));
        assert!(bad(Provider::azure().api_version("a&b")).contains("plain query"));
    }

    #[test]
    fn debug_hides_header_values() {
        let p = Provider::openai().header("x-secret-ish", "value-123");
        assert!(!format!("{p:?}").contains("value-123"));
    }
}
