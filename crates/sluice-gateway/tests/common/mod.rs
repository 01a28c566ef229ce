//! What every scenario test file needs: a mock upstream and a gateway, each served on a
//! loopback port.

use sluice_gateway::{Gateway, ServeOptions};

/// Serves `gateway` on a free loopback port until the test ends; returns `http://ADDR`.
pub(crate) async fn serve(gateway: Gateway) -> String {
    let listener = sluice_gateway::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sluice_gateway::serve(listener, gateway, ServeOptions::default(), std::future::pending()));
    base
}

/// Serves `app` (a mock upstream region) on a free loopback port until the test ends;
/// returns its base url, `http://ADDR/v1`.
pub(crate) async fn upstream(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}
