//! `sluice serve` driven by the official `openai` Python SDK, over loopback mock regions.
//!
//! `.ci/run` installs the SDK (pinned in `python/requirements.txt`) into a virtual environment
//! at `$SLUICE_PYENV`, by default `~/.cache/sluice/pyenv`. Without it these tests fail with the
//! command that creates it; set `SLUICE_SKIP_PYTHON_SDK=1` to skip them locally (loudly).
//!
//! One interpreter runs per scenario group (`python/openai_sdk.py`): it asserts what the caller
//! saw; these tests assert what each mock region saw (hits per model, keys, Azure paths).

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, OnceLock},
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::support::{FAST_PROBES, PATIENCE, Serve, temp_dir};

/// The script with the scenario groups.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/python/openai_sdk.py");
/// The pinned SDK.
const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/python/requirements.txt");

/// The venv's interpreter, or `None` when it is missing and the caller asked to skip.
fn python() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let venv = std::env::var_os("SLUICE_PYENV").map(PathBuf::from).unwrap_or_else(|| {
                let cache = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                    .unwrap_or_else(std::env::temp_dir);
                cache.join("sluice").join("pyenv")
            });
            let python = venv.join("bin").join("python");
            let works = std::process::Command::new(&python)
                .args(["-c", "import openai"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if works {
                return Some(python);
            }
            let how = format!(
                "python3 -m venv {v} && {v}/bin/pip install -r {REQUIREMENTS}",
                v = venv.display()
            );
            if std::env::var_os("SLUICE_SKIP_PYTHON_SDK").is_some_and(|v| v == "1") {
                eprintln!(
                    "\n!!!!! SKIPPED: the openai Python SDK end-to-end tests (SLUICE_SKIP_PYTHON_SDK=1 and no venv at {}).\n!!!!! Create it with: {how}\n",
                    venv.display()
                );
                return None;
            }
            panic!(
                "the openai Python SDK end-to-end tests need a venv with the SDK at {} (set SLUICE_PYENV to use another). \
                 .ci/run creates it; by hand: {how}. Set SLUICE_SKIP_PYTHON_SDK=1 to skip these tests locally.",
                venv.display()
            );
        })
        .clone()
}

/// Runs one scenario group against `base` and returns the facts it printed.
async fn run_group(python: &PathBuf, group: &str, base: &str, serve: &Serve) -> Value {
    let out = tokio::time::timeout(
        PATIENCE,
        Command::new(python)
            .args([SCRIPT, group, base])
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("python group {group} did not finish within {PATIENCE:?}"))
    .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python group {group} failed ({}):\n{}\n{stdout}\n--- sluice serve stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        serve.stderr()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("group {group} printed no JSON ({e}): {stdout}"))
}

/// One call a mock saw.
#[derive(Clone, Debug)]
struct Hit {
    method: Method,
    path: String,
    query: String,
    model: Option<String>,
    authorization: Option<String>,
    api_key: Option<String>,
}

/// How a mock region authenticates and lays out its paths.
#[derive(Clone)]
enum Kind {
    /// `Authorization: Bearer KEY`, paths under `/v1`.
    OpenAi,
    /// `api-key: KEY`, `api-version`, `/openai/deployments/{dep}/...`.
    Azure { api_version: &'static str, deployments: &'static [(&'static str, &'static str)] },
}

/// A mock region: answers like its provider, refuses a wrong key, records every call.
#[derive(Clone)]
struct Mock {
    name: &'static str,
    key: &'static str,
    kind: Kind,
    /// Models it answers 503 for.
    failing: &'static [&'static str],
    hits: Arc<Mutex<Vec<Hit>>>,
    responses: Arc<Mutex<Vec<String>>>,
}

impl Mock {
    async fn start(
        name: &'static str,
        key: &'static str,
        kind: Kind,
        failing: &'static [&'static str],
    ) -> (Self, String) {
        let mock = Self { name, key, kind, failing, hits: Arc::default(), responses: Arc::default() };
        let prefix = match mock.kind {
            Kind::OpenAi => "v1",
            Kind::Azure { .. } => "openai",
        };
        let m = mock.clone();
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let m = m.clone();
            async move { m.handle(method, uri, headers, body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let url = format!("http://{}/{prefix}", listener.local_addr().expect("mock addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("mock serves") });
        (mock, url)
    }

    /// Calls other than probes (`GET .../models`).
    fn calls(&self) -> Vec<Hit> {
        self.hits.lock().iter().filter(|h| !h.path.ends_with("/models")).cloned().collect()
    }

    /// Calls for `model` on a path ending in `suffix`.
    fn count(&self, suffix: &str, model: &str) -> usize {
        self.calls().iter().filter(|h| h.path.ends_with(suffix) && h.model.as_deref() == Some(model)).count()
    }

    fn handle(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_type = text("content-type").unwrap_or_default();
        let json: Value = if content_type.starts_with("application/json") {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let mut model = json["model"].as_str().map(str::to_owned);
        if content_type.starts_with("multipart/form-data") {
            model = multipart_field(&body, "model");
        }
        let path = uri.path().to_owned();
        let query = uri.query().unwrap_or("").to_owned();
        let (authorization, api_key) = (text("authorization"), text("api-key"));
        self.hits.lock().push(Hit {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            model: model.clone(),
            authorization: authorization.clone(),
            api_key: api_key.clone(),
        });
        let err = |status: StatusCode, code: &str, message: String| {
            let body =
                json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
            (status, [("content-type", "application/json")], body.to_string()).into_response()
        };

        // Authentication and paths, as the provider does them.
        let endpoint = match &self.kind {
            Kind::OpenAi => {
                if authorization.as_deref() != Some(&format!("Bearer {}", self.key)) || api_key.is_some() {
                    return err(StatusCode::UNAUTHORIZED, "invalid_api_key", format!("{}: wrong key", self.name));
                }
                path.strip_prefix("/v1/").unwrap_or("").to_owned()
            }
            Kind::Azure { api_version, deployments } => {
                if api_key.as_deref() != Some(self.key) || authorization.is_some() {
                    return err(StatusCode::UNAUTHORIZED, "401", format!("{}: wrong api-key", self.name));
                }
                if !query.split('&').any(|p| p == format!("api-version={api_version}")) {
                    return err(StatusCode::NOT_FOUND, "404", format!("{}: api-version missing: {query}", self.name));
                }
                if path == "/openai/models" {
                    "models".to_owned()
                } else {
                    let Some(rest) = path.strip_prefix("/openai/deployments/") else {
                        return err(
                            StatusCode::NOT_FOUND,
                            "404",
                            format!("{}: not a deployment path: {path}", self.name),
                        );
                    };
                    let (deployment, op) = rest.split_once('/').unwrap_or((rest, ""));
                    let Some((served, _)) = deployments.iter().find(|(_, d)| *d == deployment) else {
                        return err(StatusCode::NOT_FOUND, "DeploymentNotFound", format!("no deployment {deployment}"));
                    };
                    // Azure answers with the model behind the deployment.
                    model = Some((*served).to_owned());
                    op.to_owned()
                }
            }
        };
        let model_name = model.clone().unwrap_or_default();
        if self.failing.contains(&model_name.as_str()) {
            return err(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("{} cannot serve {model_name}", self.name),
            );
        }
        let json_answer = |v: Value| ([("content-type", "application/json")], v.to_string()).into_response();
        match (method, endpoint.as_str()) {
            (Method::GET, "models") => json_answer(json!({"object": "list", "data": []})),
            (Method::POST, "chat/completions") => {
                let said = json["messages"].as_array().and_then(|m| m.last()).map(|m| m["content"].clone());
                let content = format!(
                    "Hello from {}: {}",
                    self.name,
                    said.and_then(|s| s.as_str().map(str::to_owned)).unwrap_or_default()
                );
                let usage = json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7});
                if json["stream"] == true {
                    let chunk = |delta: Value, finish: Value| {
                        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model_name,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                    };
                    let (head, tail) = content.split_at(content.len() / 2);
                    let mut events = vec![
                        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                        chunk(json!({"content": head}), Value::Null),
                        chunk(json!({"content": tail}), Value::Null),
                        chunk(json!({}), json!("stop")),
                    ];
                    if json["stream_options"]["include_usage"] == true {
                        events.push(json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                            "model": model_name, "choices": [], "usage": usage}));
                    }
                    let mut sse: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
                    sse.push_str("data: [DONE]\n\n");
                    ([("content-type", "text/event-stream")], sse).into_response()
                } else {
                    json_answer(
                        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model_name,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                        "usage": usage}),
                    )
                }
            }
            (Method::POST, "embeddings") => {
                // [0.5, -0.25, 1.0] as little-endian f32, base64 (what the SDK asks for by default).
                let embedding = if json["encoding_format"] == "base64" {
                    json!("AAAAPwAAgL4AAIA/")
                } else {
                    json!([0.5, -0.25, 1.0])
                };
                let n = json["input"].as_array().map_or(1, Vec::len);
                let data: Vec<Value> =
                    (0..n).map(|i| json!({"object": "embedding", "index": i, "embedding": embedding})).collect();
                json_answer(json!({"object": "list", "data": data, "model": model_name,
                    "usage": {"prompt_tokens": 2, "total_tokens": 2}}))
            }
            (Method::POST, "responses") => {
                let mut said = json["input"].as_str().unwrap_or("").to_owned();
                if let Some(prev) = json["previous_response_id"].as_str() {
                    if !self.responses.lock().iter().any(|r| r == prev) {
                        return err(
                            StatusCode::NOT_FOUND,
                            "previous_response_not_found",
                            format!("no response {prev}"),
                        );
                    }
                    said = format!("{said} (after {prev})");
                }
                let id = {
                    let mut r = self.responses.lock();
                    let id = format!("resp_{}_{}", self.name, r.len());
                    r.push(id.clone());
                    id
                };
                json_answer(response_object(&id, &model_name, &format!("{} answered: {said}", self.name)))
            }
            (Method::GET, p) if p.starts_with("responses/") => {
                let id = &p["responses/".len()..];
                if self.responses.lock().iter().any(|r| r == id) {
                    json_answer(response_object(id, "gpt-4o-mini", ""))
                } else {
                    err(StatusCode::NOT_FOUND, "not_found", format!("no response {id}"))
                }
            }
            (Method::POST, "audio/transcriptions") => {
                let Some(audio) = multipart_file(&body) else {
                    return err(StatusCode::BAD_REQUEST, "invalid_file", "no file part".to_owned());
                };
                json_answer(json!({"text": format!("{} heard {} bytes", self.name, audio.len())}))
            }
            (m, p) => err(StatusCode::NOT_FOUND, "unknown_url", format!("{}: no route {m} {p}", self.name)),
        }
    }
}

fn response_object(id: &str, model: &str, text: &str) -> Value {
    json!({"id": id, "object": "response", "created_at": 1, "status": "completed", "model": model,
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}})
}

/// The parts of a multipart body, as (headers, content).
fn multipart_parts(body: &[u8]) -> Vec<(String, &[u8])> {
    let Some(end) = body.windows(2).position(|w| w == b"\r\n") else { return Vec::new() };
    let boundary = [b"\r\n", &body[..end]].concat();
    let mut parts = Vec::new();
    let mut rest = &body[end + 2..];
    while let Some(head_end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let content = &rest[head_end + 4..];
        let Some(stop) = content.windows(boundary.len()).position(|w| w == boundary.as_slice()) else { break };
        parts.push((head, &content[..stop]));
        rest = content[stop + boundary.len()..].strip_prefix(b"\r\n").unwrap_or(&[]);
    }
    parts
}

fn multipart_field(body: &[u8], name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\"");
    multipart_parts(body)
        .into_iter()
        .find(|(head, _)| head.contains(&needle) && !head.contains("filename="))
        .map(|(_, content)| String::from_utf8_lossy(content).into_owned())
}

fn multipart_file(body: &[u8]) -> Option<Vec<u8>> {
    multipart_parts(body).into_iter().find(|(head, _)| head.contains("filename=")).map(|(_, c)| c.to_vec())
}

/// Three regions around a caller in Seoul: `near` (Seoul, OpenAI-style), `far` (Virginia,
/// OpenAI-style) and `azure-eu` (Amsterdam, Azure with one deployment); each with its own key.
struct Fleet {
    near: Mock,
    far: Mock,
    azure: Mock,
    serve: Serve,
}

async fn fleet() -> Fleet {
    let (near, near_url) = Mock::start("near", "near-key", Kind::OpenAi, &[]).await;
    let (far, far_url) = Mock::start("far", "far-key", Kind::OpenAi, &["o-broken"]).await;
    let azure_kind = Kind::Azure { api_version: "2024-10-21", deployments: &[("gpt-4o", "prod-4o")] };
    let (azure, azure_url) = Mock::start("azure-eu", "azure-key", azure_kind, &[]).await;
    let config = format!(
        r#"[[region]]
id = "near"
url = "{near_url}"
lat = 37.56
lon = 126.97
api_key_env = "NEAR_KEY"
models = ["gpt-4o-mini", "text-embedding-3-small", "whisper-1"]

[[region]]
id = "far"
url = "{far_url}"
lat = 38.9
lon = -77.0
api_key_env = "FAR_KEY"
models = ["gpt-4o-mini", "gpt-4.1", "o-broken"]

[[region]]
id = "azure-eu"
url = "{azure_url}"
lat = 52.37
lon = 4.90
provider = "azure"
api_version = "2024-10-21"
deployments = {{ "gpt-4o" = "prod-4o" }}
api_key_env = "AZURE_KEY"

[models]
fallbacks = {{ "o-broken" = ["gpt-4o-mini"] }}

[caller]
lat = 37.56
lon = 126.97

{FAST_PROBES}"#
    );
    let dir = temp_dir("python-sdk");
    let path = dir.join("sluice.toml");
    std::fs::write(&path, config).expect("write config");
    let env = [("NEAR_KEY", "near-key"), ("FAR_KEY", "far-key"), ("AZURE_KEY", "azure-key")];
    let serve = Serve::start(&path, &[], &env).await;
    Fleet { near, far, azure, serve }
}

/// Every call each mock saw carried its own key and only that (probes included), and the
/// caller's key reached none.
fn keys_stayed_home(f: &Fleet) {
    for m in [&f.near, &f.far, &f.azure] {
        for h in m.hits.lock().iter() {
            match m.kind {
                Kind::OpenAi => {
                    assert_eq!(h.authorization.as_deref(), Some(&*format!("Bearer {}", m.key)), "{}: {h:?}", m.name);
                    assert_eq!(h.api_key, None, "{}: {h:?}", m.name);
                }
                Kind::Azure { .. } => {
                    assert_eq!(h.api_key.as_deref(), Some(m.key), "{}: {h:?}", m.name);
                    assert_eq!(h.authorization, None, "{}: {h:?}", m.name);
                }
            }
        }
    }
}

#[tokio::test]
async fn python_sdk_chat_embeddings_responses_and_audio() {
    let Some(python) = python() else { return };
    let f = fleet().await;
    let seen = run_group(&python, "openai_surface", &f.serve.base(), &f.serve).await;

    for key in ["chat_region", "stream_region", "embeddings_region", "response_region", "transcription_region"] {
        assert_eq!(seen[key], "near", "{key}: {seen}");
    }
    // The follow-up preferred `far`, but its state lives in `near`.
    assert_eq!(seen["follow_up_region"], "near", "{seen}");
    assert!(
        f.far.calls().iter().all(|h| !h.path.contains("responses")),
        "far saw a responses call: {:?}",
        f.far.calls()
    );

    // What `near` saw: three chats (plain, streamed, streamed with usage), one embeddings
    // call, two created responses and one read back, one upload with the whole file.
    assert_eq!(f.near.count("/chat/completions", "gpt-4o-mini"), 3);
    assert_eq!(f.near.count("/embeddings", "text-embedding-3-small"), 1);
    assert_eq!(f.near.count("/responses", "gpt-4o-mini"), 2);
    assert_eq!(f.near.calls().iter().filter(|h| h.method == Method::GET && h.path.contains("/responses/")).count(), 1);
    assert_eq!(f.near.count("/audio/transcriptions", "whisper-1"), 1);
    assert_eq!(f.far.calls().len(), 0, "far saw calls: {:?}", f.far.calls());
    assert_eq!(f.azure.calls().len(), 0, "azure saw calls: {:?}", f.azure.calls());
    keys_stayed_home(&f);
}

#[tokio::test]
async fn python_sdk_azure_skipped_region_and_fallback() {
    let Some(python) = python() else { return };
    let f = fleet().await;
    let seen = run_group(&python, "providers_and_models", &f.serve.base(), &f.serve).await;

    // Azure: the mock answered only because key, api-version and deployment path were right.
    assert_eq!(seen["azure_region"], "azure-eu", "{seen}");
    assert_eq!(seen["azure_model_header"], "gpt-4o", "{seen}");
    let azure = f.azure.calls();
    assert_eq!(azure.len(), 1, "{azure:?}");
    assert_eq!(azure[0].path, "/openai/deployments/prod-4o/chat/completions");
    assert!(azure[0].query.contains("api-version=2024-10-21"), "{azure:?}");

    // A region without the model is skipped, even when preferred: it never saw the call.
    assert_eq!(seen["skipped_to_region"], "far", "{seen}");
    assert_eq!(f.near.count("/chat/completions", "gpt-4.1"), 0);
    assert_eq!(f.far.count("/chat/completions", "gpt-4.1"), 1);

    // The fallback: `o-broken` failed in its only region, `gpt-4o-mini` served (nearest).
    assert_eq!(seen["fallback_model_header"], "gpt-4o-mini", "{seen}");
    assert_eq!(seen["fallback_region"], "near", "{seen}");
    assert!(f.far.count("/chat/completions", "o-broken") >= 1);
    assert_eq!(f.near.count("/chat/completions", "o-broken"), 0);
    assert_eq!(f.near.count("/chat/completions", "gpt-4o-mini"), 1);
    let attempts: usize = seen["fallback_attempts"].as_str().and_then(|a| a.parse().ok()).expect("attempts header");
    assert_eq!(attempts, f.far.count("/chat/completions", "o-broken") + 1, "{seen}");

    // No region serves `no-such-model`: nothing was sent for it.
    for m in [&f.near, &f.far, &f.azure] {
        assert_eq!(m.count("/chat/completions", "no-such-model"), 0, "{}", m.name);
    }
    keys_stayed_home(&f);
}
