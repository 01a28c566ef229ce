//! `sluice serve`: configuration, logs and signals around the `sluice-gateway` library.

use std::{io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use sluice_gateway::{Gateway, ServeOptions, admin::AdminOptions};
use sluice_region_model::AdminState;

use crate::{CliError, Config, error::chain, ops};

/// Buckets of the latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// How the command runs.
#[derive(Debug)]
pub(crate) struct ServeCommand {
    /// The configuration file, re-read on reload.
    pub(crate) config_path: PathBuf,
    pub(crate) listen: SocketAddr,
    pub(crate) require_key_env: Option<String>,
    pub(crate) drain_timeout: Duration,
    pub(crate) log_format: ops::LogFormat,
    pub(crate) access_log: bool,
    pub(crate) admin_key_env: Option<String>,
}

/// The value of the environment variable a `--*-key-env NAME` flag names.
fn key_from_env(flag: &str, var: &str) -> Result<String, CliError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(CliError::Usage(format!("{flag} {var}: environment variable {var} is not set or empty"))),
    }
}

/// Runs the gateway until SIGTERM or Ctrl-C, then drains.
pub(crate) async fn run(config: &Config, command: ServeCommand) -> Result<ExitCode, CliError> {
    let telemetry = ops::init_logs(command.log_format, command.access_log);
    let required_key =
        command.require_key_env.as_deref().map(|var| key_from_env("--require-key-env", var)).transpose()?;
    let admin_key = command.admin_key_env.as_deref().map(|var| key_from_env("--admin-key-env", var)).transpose()?;
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
            let slot = FleetSlot::start(fleet_config, &client)
                .map_err(|e| CliError::Failed(format!("cannot start fleet mode: {e}")))?;
            Some(slot)
        }
        None => None,
    };
    let handle = PrometheusBuilder::new()
        // Every duration is a histogram with fixed buckets: a sample is one bucket increment,
        // and histograms add up across replicas (the exporter's default, a summary, keeps
        // every sample for its quantiles and is costly to drain on a busy gateway).
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
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
    let reload = match &fleet {
        Some(slot) => slot.reloader(ops::reloader(command.config_path.clone())),
        None => ops::reloader(command.config_path.clone()),
    };
    if let Some(key) = admin_key {
        let mut admin = AdminOptions::new(key).reload(Arc::clone(&reload));
        if let Some(fleet) = &fleet {
            admin = admin.switch(fleet_switch(fleet));
        }
        builder = builder.admin(admin);
    }
    let gateway = builder.access_log(command.access_log).build();
    ops::reload_on_sighup(client.clone(), reload)?;

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
    telemetry.shutdown().await;
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

/// Fleet mode across reloads. A reload gives the client a successor health monitor whose node
/// ids differ, so fleet mode is started anew on it (the old one hands its leases over first);
/// the `[fleet]` table itself is read once, at start.
struct FleetSlot {
    config: sluice_fleet::FleetConfig,
    current: parking_lot::Mutex<Option<Arc<sluice_fleet::Fleet>>>,
}

impl FleetSlot {
    fn start(config: sluice_fleet::FleetConfig, client: &sluice_client::Client) -> Result<Arc<Self>, String> {
        let slot = Arc::new(Self { config, current: parking_lot::Mutex::new(None) });
        slot.attach(client)?;
        tracing::info!(server = %slot.config.server(), replica = slot.config.replica_id(),
            "fleet mode: sharing health with the other replicas through redis");
        Ok(slot)
    }

    /// Starts fleet mode on the client's current monitor.
    fn attach(&self, client: &sluice_client::Client) -> Result<(), String> {
        let fleet = sluice_fleet::Fleet::start_with_budget(&self.config, &client.health(), client.retry_budget())
            .map_err(|e| chain(&e))?;
        *self.current.lock() = Some(Arc::new(fleet));
        Ok(())
    }

    fn current(&self) -> Option<Arc<sluice_fleet::Fleet>> {
        self.current.lock().clone()
    }

    /// Stops the running fleet mode; its leases go at once unless an admin call still holds it.
    async fn shutdown(&self) {
        let old = self.current.lock().take();
        if let Some(old) = old {
            match Arc::try_unwrap(old) {
                Ok(fleet) => fleet.shutdown().await,
                Err(_) => tracing::warn!("fleet mode: probe leases left to expire"),
            }
        }
    }

    /// `reload`, then fleet mode on the new monitor. Runs on a blocking thread.
    fn reloader(self: &Arc<Self>, reload: sluice_gateway::admin::Reloader) -> sluice_gateway::admin::Reloader {
        let slot = Arc::clone(self);
        Arc::new(move |client: &sluice_client::Client| {
            let summary = reload(client)?;
            tokio::runtime::Handle::current().block_on(slot.shutdown());
            slot.attach(client).map_err(|e| format!("{summary}; but fleet mode did not restart: {e}"))?;
            Ok(format!("{summary}; fleet mode restarted on the new regions"))
        })
    }
}

/// The admin API's drain switch in fleet mode: every replica drains.
fn fleet_switch(slot: &Arc<FleetSlot>) -> sluice_gateway::admin::Switch {
    let slot = Arc::downgrade(slot);
    Arc::new(move |region: String, to: AdminState| {
        let slot = slot.clone();
        Box::pin(async move {
            let fleet = slot.upgrade().and_then(|s| s.current()).ok_or_else(|| "fleet mode has stopped".to_owned())?;
            let result = match to {
                AdminState::Drained => fleet.drain(&region).await,
                _ => fleet.enable(&region).await,
            };
            result.map_err(|e| chain(&e))
        })
    })
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
