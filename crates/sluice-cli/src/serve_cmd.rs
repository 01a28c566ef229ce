//! `sluice serve`: configuration, logs and signals around the `sluice-gateway` library.

use std::{io::Write as _, net::SocketAddr, process::ExitCode, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use sluice_gateway::{Gateway, ServeOptions};

use crate::{CliError, Config, error::chain};

/// Buckets of the latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// How the command runs.
#[derive(Debug)]
pub(crate) struct ServeCommand {
    pub(crate) listen: SocketAddr,
    pub(crate) require_key_env: Option<String>,
    pub(crate) drain_timeout: Duration,
}

/// Runs the gateway until SIGTERM or Ctrl-C, then drains.
pub(crate) async fn run(config: &Config, command: ServeCommand) -> Result<ExitCode, CliError> {
    crate::init_logs(tracing::Level::INFO);
    let required_key = match &command.require_key_env {
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
            _ => {
                return Err(CliError::Usage(format!(
                    "--require-key-env {var}: environment variable {var} is not set or empty"
                )));
            }
        },
        None => None,
    };
    let listener = sluice_gateway::bind(command.listen).await?;
    let addr = listener.local_addr().map_err(|e| CliError::Failed(format!("cannot read the bound address: {e}")))?;
    if !addr.ip().is_loopback() && required_key.is_none() {
        tracing::warn!(
            %addr,
            "listening beyond loopback without --require-key-env: anyone who can reach this port can spend your keys"
        );
    }
    let client = config
        .client_builder()?
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the client: {}", chain(&e))))?;
    let fleet = match config.fleet() {
        Some(builder) => {
            let fleet_config =
                builder.clone().build().map_err(|e| CliError::Usage(format!("[fleet]: {}", chain(&e))))?;
            let fleet = sluice_fleet::Fleet::start(&fleet_config, &client.health())
                .map_err(|e| CliError::Failed(format!("cannot start fleet mode: {}", chain(&e))))?;
            tracing::info!(server = %fleet_config.server(), replica = fleet.replica_id(),
                "fleet mode: sharing health with the other replicas through redis");
            Some(fleet)
        }
        None => None,
    };
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("sluice_request_duration_seconds".to_owned()), LATENCY_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| CliError::Failed(format!("cannot set up metrics: {e}")))?;
    let server = config.server();
    let mut builder = Gateway::builder(client.clone())
        .max_concurrent_calls(server.max_concurrent_calls)
        .max_body(server.max_body_bytes)
        .header_policy(server.headers.clone())
        .state_map(server.state.0, server.state.1)
        .idempotency(server.idempotency.0, server.idempotency.1, server.idempotency.2)
        .stream_usage(server.stream_usage)
        .prices(server.prices.clone())
        .models(server.models.iter().cloned())
        .prometheus(handle);
    if let Some(key) = required_key {
        builder = builder.require_key(key);
    }
    if let Some(caller) = config.caller() {
        builder = builder.default_caller(caller);
    }
    let gateway = builder.build();

    let signal = shutdown_signal()?;
    let ids = config.region_ids();
    println!(
        "sluice serve: listening on http://{addr} ({} region(s): {}; strategy {})",
        ids.len(),
        ids.join(", "),
        client.strategy_name()
    );
    let _ = std::io::stdout().flush();

    let options =
        ServeOptions::default().header_read_timeout(server.header_read_timeout).drain_timeout(command.drain_timeout);
    let drained = sluice_gateway::serve(listener, gateway, options, signal).await?;
    client.shutdown_probing().await;
    if let Some(fleet) = fleet {
        // Hand this replica's probe leases over at once.
        fleet.shutdown().await;
    }
    if drained {
        eprintln!("sluice serve: drained, bye");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("sluice serve: drain timeout passed with calls still running; exiting");
        Ok(ExitCode::from(1))
    }
}

/// SIGTERM and SIGINT (Ctrl-C), registered at once so that a signal sent right after the
/// "listening" line is not lost to the default action.
#[cfg(unix)]
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let register = |kind: SignalKind| {
        signal(kind).map_err(|e| CliError::Failed(format!("cannot listen for shutdown signals: {e}")))
    };
    let (mut term, mut int) = (register(SignalKind::terminate())?, register(SignalKind::interrupt())?);
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CliError> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
