//! Scenario tests: files, batches and vector stores live in the region that created them.
//! The gateway is served on loopback in front of three loopback mock regions.

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    body::Bytes,
    http::{Method, StatusCode, Uri},
    response::IntoResponse,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sluice_client::{Client, GeoPoint, Region};
use sluice_gateway::Gateway;

/// Every call any mock saw, in order: (region, method, path).
type Log = Arc<Mutex<Vec<(&'static str, Method, String)>>>;

/// A region that stores files, batches and vector stores by id.
#[derive(Clone)]
struct Store {
    name: &'static str,
    log: Log,
    objects: Arc<Mutex<Vec<String>>>,
    /// Answers 503 to everything while set.
    down: Arc<AtomicBool>,
}

impl Store {
    fn handle(&self, method: Method, uri: Uri, body: Bytes) -> axum::response::Response {
        let path = uri.path().to_owned();
        if !path.ends_with("/models") {
            self.log.lock().push((self.name, method.clone(), path.clone()));
        }
        let answer = |status: StatusCode, v: Value| (status, [("content-type", "application/json")], v.to_string());
        let missing = |what: &str| {
            answer(
                StatusCode::NOT_FOUND,
                json!({"error": {"message": format!("No such object: {what}"), "type": "invalid_request_error", "param": null, "code": null}}),
            )
            .into_response()
        };
        if self.down.load(Ordering::SeqCst) {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"message": "down", "type": "server_error"}}),
            )
            .into_response();
        }
        let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
        let known = |id: &str| self.objects.lock().iter().any(|o| o == id);
        let create = |prefix: &str| {
            let mut objects = self.objects.lock();
            let id = format!("{prefix}-{}-{}", self.name, objects.len());
            objects.push(id.clone());
            id
        };
        match (method, segments.as_slice()) {
            (Method::GET, ["models"]) => answer(StatusCode::OK, json!({"object": "list", "data": []})).into_response(),
            (Method::POST, ["files"]) => {
                assert!(body.windows(5).any(|w| w == b"lines"), "the upload arrived whole");
                answer(StatusCode::OK, json!({"id": create("file"), "object": "file", "purpose": "batch"}))
                    .into_response()
            }
            (Method::POST, [kind @ ("batches" | "vector_stores")]) => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let refs: Vec<&str> = match *kind {
                    "batches" => v["input_file_id"].as_str().into_iter().collect(),
                    _ => v["file_ids"].as_array().into_iter().flatten().filter_map(Value::as_str).collect(),
                };
                if let Some(gone) = refs.iter().find(|r| !known(r)) {
                    return missing(gone);
                }
                let prefix = if *kind == "batches" { "batch" } else { "vs" };
                answer(StatusCode::OK, json!({"id": create(prefix), "object": kind})).into_response()
            }
            (Method::GET, [_, id, ..]) if known(id) => answer(StatusCode::OK, json!({"id": id})).into_response(),
            (Method::DELETE, [_, id]) if known(id) => {
                self.objects.lock().retain(|o| o != id);
                answer(StatusCode::OK, json!({"id": id, "deleted": true})).into_response()
            }
            (_, [_, id, ..]) => missing(id),
            (m, _) => missing(&format!("{m} {path}")),
        }
    }
}

/// Seoul, Tokyo and Virginia, and a gateway in front of them; callers are in Seoul.
async fn setup() -> (Vec<Store>, Log, String) {
    let log = Log::default();
    let mut stores = Vec::new();
    let mut builder = Client::builder().api_key("sk-region-key").active_probing(false);
    for (name, lat, lon) in [("seoul", 37.56, 126.97), ("tokyo", 35.68, 139.69), ("virginia", 38.9, -77.0)] {
        let store = Store { name, log: Arc::clone(&log), objects: Arc::default(), down: Arc::default() };
        let s = store.clone();
        let app = Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
            let s = s.clone();
            async move { s.handle(method, uri, body) }
        });
        let url = common::upstream(app).await;
        builder = builder.region(Region::new(name, url, GeoPoint::new(lat, lon)));
        stores.push(store);
    }
    let gateway = Gateway::builder(builder.build().unwrap()).build();
    let base = format!("{}/v1", common::serve(gateway).await);
    (stores, log, base)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .default_headers([("x-sluice-location".parse().unwrap(), "37.5,127.0".parse().unwrap())].into_iter().collect())
        .build()
        .unwrap()
}

fn regions(log: &Log) -> Vec<&'static str> {
    log.lock().iter().map(|(r, _, _)| *r).collect()
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, String, Value) {
    let r = req.send().await.unwrap();
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let region = r.headers().get("x-sluice-region").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, region, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn files_batches_and_vector_stores_stay_in_the_region_that_made_them() {
    let (stores, log, base) = setup().await;
    let http = http();
    // An upload goes to the nearest region.
    let form = "--xyz\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
        --xyz\r\ncontent-disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n{\"lines\": 1}\n\r\n--xyz--\r\n";
    let upload =
        http.post(format!("{base}/files")).header("content-type", "multipart/form-data; boundary=xyz").body(form);
    let (status, region, file) = send(upload).await;
    assert_eq!((status, region.as_str()), (StatusCode::OK, "seoul"), "{file}");
    let file_id = file["id"].as_str().unwrap().to_owned();

    // Everything that names it follows it there, whatever region the caller prefers.
    let (status, region, _) =
        send(http.get(format!("{base}/files/{file_id}")).header("x-sluice-region", "virginia")).await;
    assert_eq!((status, region.as_str()), (StatusCode::OK, "seoul"));
    let batch = json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (status, region, batch) =
        send(http.post(format!("{base}/batches")).header("x-sluice-region", "tokyo").json(&batch)).await;
    assert_eq!((status, region.as_str()), (StatusCode::OK, "seoul"), "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let (status, region, _) =
        send(http.get(format!("{base}/batches/{batch_id}")).header("x-sluice-region", "tokyo")).await;
    assert_eq!((status, region.as_str()), (StatusCode::OK, "seoul"));
    let store = json!({"name": "docs", "file_ids": [file_id]});
    let (status, region, vs) =
        send(http.post(format!("{base}/vector_stores")).header("x-sluice-region", "virginia").json(&store)).await;
    assert_eq!((status, region.as_str()), (StatusCode::OK, "seoul"), "{vs}");
    let vs_id = vs["id"].as_str().unwrap().to_owned();
    let (status, region, _) =
        send(http.get(format!("{base}/vector_stores/{vs_id}/files")).header("x-sluice-region", "virginia")).await;
    assert_eq!((status, region.as_str()), (StatusCode::OK, "seoul"));
    assert_eq!(regions(&log), vec!["seoul"; 6], "only the creating region saw the calls");

    // When that region cannot take a call, the call is not sent elsewhere: a clear 503.
    stores[0].down.store(true, Ordering::SeqCst);
    let (status, _, body) = send(http.get(format!("{base}/batches/{batch_id}"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(regions(&log).iter().all(|r| *r == "seoul"), "a pinned call left its region: {:?}", regions(&log));
    stores[0].down.store(false, Ordering::SeqCst);

    // A delete forgets the id; the next call for it searches again.
    let (status, region, _) = send(http.delete(format!("{base}/files/{file_id}"))).await;
    assert_eq!((status, region.as_str()), (StatusCode::OK, "seoul"));
    log.lock().clear();
    let (status, _, _) = send(http.get(format!("{base}/files/{file_id}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(regions(&log), vec!["seoul", "tokyo", "virginia"]);
}

#[tokio::test]
async fn an_unknown_id_is_looked_for_nearest_first_and_then_remembered() {
    let (stores, log, base) = setup().await;
    let http = http();
    // Another replica created these in Virginia and Seoul.
    stores[2].objects.lock().push("file-elsewhere".to_owned());
    stores[0].objects.lock().push("vs-elsewhere".to_owned());

    let (status, region, _) = send(http.get(format!("{base}/files/file-elsewhere"))).await;
    assert_eq!((status, region.as_str()), (StatusCode::OK, "virginia"));
    assert_eq!(regions(&log), vec!["seoul", "tokyo", "virginia"], "nearest first, each asked once");
    log.lock().clear();
    let (status, region, _) = send(http.get(format!("{base}/files/file-elsewhere"))).await;
    assert_eq!((status, region.as_str()), (StatusCode::OK, "virginia"));
    assert_eq!(regions(&log), vec!["virginia"], "remembered after the first find");

    // A caller in Virginia: the search starts there (Tokyo is a little nearer to it than Seoul).
    log.lock().clear();
    let (status, region, _) =
        send(http.get(format!("{base}/vector_stores/vs-elsewhere")).header("x-sluice-location", "38.9,-77.0")).await;
    assert_eq!((status, region.as_str()), (StatusCode::OK, "seoul"));
    assert_eq!(regions(&log), vec!["virginia", "tokyo", "seoul"]);

    // Nobody has it: each region is asked once, and the caller gets the 404.
    log.lock().clear();
    let (status, _, body) = send(http.get(format!("{base}/batches/batch-nowhere"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(regions(&log), vec!["seoul", "tokyo", "virginia"]);
}
