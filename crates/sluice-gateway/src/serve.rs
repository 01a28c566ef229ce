//! Serving a [`Gateway`] on a TCP listener: HTTP/1.1 with a header read timeout, and a
//! graceful drain on shutdown.

use std::{future::Future, net::SocketAddr, time::Duration};

use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;

use crate::{Gateway, ServeError};

/// Default time a client has to send a request head; slower ones are disconnected.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How a gateway is served.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Time a client has to send a request head (default 10 s).
    pub header_read_timeout: Duration,
    /// Longest wait for in-flight calls and streams on shutdown.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self { header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT, drain_timeout: Duration::from_secs(30) }
    }
}

impl ServeOptions {
    /// Sets the header read timeout.
    pub fn header_read_timeout(mut self, d: Duration) -> Self {
        self.header_read_timeout = d;
        self
    }

    /// Sets the drain timeout.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }
}

/// Binds `addr`, with a clear error when it is taken.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            ServeError::Failed(format!("cannot listen on {addr}: the address is already in use"))
        } else {
            ServeError::Failed(format!("cannot listen on {addr}: {e}"))
        }
    })
}

/// Serves `gateway` on `listener` until `shutdown` resolves, then stops accepting, refuses
/// new calls on open connections, and waits up to the drain timeout for calls in flight.
/// Returns whether every call finished in time.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<bool, ServeError> {
    let service = TowerToHyperService::new(gateway.router());
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(options.header_read_timeout).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let conn = builder.serve_connection(TokioIo::new(tcp), service.clone());
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    gateway.drain();
    tracing::info!("shutting down: refusing new calls, draining in-flight calls and streams");
    Ok(tokio::time::timeout(options.drain_timeout, graceful.shutdown()).await.is_ok())
}
