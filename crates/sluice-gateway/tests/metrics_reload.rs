//! Per-region metrics stay right across a region update that removes one region, adds another
//! and reorders them: each call is counted under the region that served it.

mod common;

use axum::{Router, routing::post};
use serde_json::json;
use sluice_client::{Client, GeoPoint, Region};
use sluice_gateway::Gateway;

async fn region(name: &'static str) -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || async move {
            json!({"id": "c", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": name}, "finish_reason": "stop"}]})
            .to_string()
        }),
    );
    common::upstream(app).await
}

/// The value of `sluice_requests_total{region="id"}` in a scrape (0 when absent).
fn requests(scrape: &str, id: &str) -> u64 {
    let series = format!("sluice_requests_total{{region=\"{id}\"}} ");
    scrape.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_never_mislabels_region_series() {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().unwrap();
    let (a, b, c) = (region("a").await, region("b").await, region("c").await);
    let at = |lat| GeoPoint::new(lat, 0.0);
    let client = Client::builder()
        .region(Region::new("a", a, at(0.0)))
        .region(Region::new("b", b.clone(), at(1.0)))
        .api_key("sk-region-key")
        .active_probing(false)
        .build()
        .unwrap();
    let gateway = Gateway::builder(client.clone()).prometheus(prometheus).build();
    let base = common::serve(gateway).await;
    let http = reqwest::Client::new();
    let call = |region: &'static str| {
        http.post(format!("{base}/v1/chat/completions"))
            .header("x-sluice-region", region)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(call("b").await.unwrap().headers()["x-sluice-region"], "b");

    // `a` leaves; `c` arrives as node 0, where `a` was, and `b` stays node 1.
    client.update_regions([Region::new("c", c, at(2.0)), Region::new("b", b, at(1.0))]).unwrap();
    for region in ["c", "c", "b"] {
        let r = call(region).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-sluice-region"], region);
    }
    let scrape = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(
        (requests(&scrape, "a"), requests(&scrape, "b"), requests(&scrape, "c")),
        (0, 2, 2),
        "calls per region label:\n{scrape}"
    );
    assert!(scrape.contains("sluice_region_eligible{region=\"c\"}"), "the new region has its series");
}
