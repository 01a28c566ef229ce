//! What every scenario test file needs: a gateway served on a loopback port.

use sluice_gateway::{Gateway, ServeOptions};

/// Serves `gateway` on a free loopback port until the test ends; returns `http://ADDR`.
pub(crate) async fn serve(gateway: Gateway) -> String {
    let listener = sluice_gateway::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sluice_gateway::serve(listener, gateway, ServeOptions::default(), std::future::pending()));
    base
}
