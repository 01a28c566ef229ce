//! `sluice probe`: one health round (or a running watch) over every configured region.

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use futures_util::future::join_all;
use sluice_health::{HealthEventKind, HealthMonitor, HttpProbe, OutlierConfig, Probe, ProbeError};
use sluice_region_model::Snapshot;

use crate::{
    CliError, Config,
    error::chain,
    table::{RegionState, Table, ms, now},
};

/// Probes every region once (`GET {url}/models`, which costs no tokens), or with `watch`
/// keeps probing with the configured hysteresis and redraws the table every interval.
///
/// Exit code 0 when at least one region is healthy, 1 otherwise.
pub(crate) async fn run(config: &Config, watch: bool, count: Option<u32>) -> Result<ExitCode, CliError> {
    crate::init_logs(tracing::Level::ERROR);
    let (regions, key) = config.resolve_keys()?;
    let snapshot = Snapshot::builder()
        .epoch(now())
        .build(regions)
        .map_err(|e| CliError::Failed(format!("invalid regions: {e}")))?;
    let probe_config = config.probe_config();
    let mut builder = HttpProbe::builder().timeout(probe_config.timeout());
    if let Some(k) = key {
        builder = builder.default_api_key(k);
    }
    let probe = builder.build().map_err(|e| CliError::Failed(format!("cannot build the probe: {}", chain(&e))))?;
    if watch {
        return watch_loop(Arc::new(snapshot), Arc::new(probe), probe_config.clone(), count).await;
    }

    let timeout = probe_config.timeout();
    let results = join_all(snapshot.nodes().iter().map(|node| {
        let probe = &probe;
        async move {
            match tokio::time::timeout(timeout + Duration::from_millis(100), probe.probe(node)).await {
                Ok(r) => r,
                Err(_) => Err(ProbeError::Timeout),
            }
        }
    }))
    .await;
    let mut table = Table::new(&["region", "name", "state", "latency", "reason"]);
    let mut healthy = 0;
    for (node, result) in snapshot.nodes().iter().zip(&results) {
        let r = node.region();
        let (state, latency, reason) = match result {
            Ok(d) => {
                healthy += 1;
                ("healthy", ms(*d), String::new())
            }
            Err(e) if e.is_credentials() => ("unhealthy", "-".to_owned(), format!("{} (check the api key)", chain(e))),
            Err(e) => ("unhealthy", "-".to_owned(), chain(e)),
        };
        table.row(vec![r.id().to_owned(), r.name().to_owned(), state.to_owned(), latency, reason]);
    }
    print!("{}", table.render());
    println!("{healthy} of {} region(s) healthy", snapshot.len());
    Ok(if healthy > 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn watch_loop(
    snapshot: Arc<Snapshot>,
    probe: Arc<HttpProbe>,
    config: sluice_health::ProbeConfig,
    count: Option<u32>,
) -> Result<ExitCode, CliError> {
    let monitor = HealthMonitor::new(Arc::clone(&snapshot), OutlierConfig::default());
    let mut events = monitor.subscribe();
    let interval = config.interval();
    let prober = monitor.spawn_prober(probe, config);
    let mut reasons: Vec<String> = vec![String::new(); snapshot.len()];
    let tty = std::io::stdout().is_terminal();
    let mut drawn = 0usize;
    let mut rounds = 0u32;
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
    ticker.tick().await;
    let serving = loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break count_serving(&monitor),
        }
        while let Ok(event) = events.try_recv() {
            let i = event.node.index();
            reasons[i] = match event.kind {
                HealthEventKind::BecameUnhealthy { reason, .. } => reason,
                HealthEventKind::CredentialsRejected { status } => format!("credentials rejected (http {status})"),
                HealthEventKind::BecameHealthy => String::new(),
                _ => continue,
            };
        }
        let at = now();
        let mut table = Table::new(&["region", "name", "state", "latency", "reason"]);
        for node in snapshot.nodes() {
            let state = monitor.status(node.id(), at).map_or(RegionState::Unknown, |s| RegionState::of(&s, at));
            let rtt = node.metrics().probe_rtt().map_or("-".to_owned(), ms);
            let r = node.region();
            table.row(vec![
                r.id().to_owned(),
                r.name().to_owned(),
                state.label(),
                rtt,
                reasons[node.id().index()].clone(),
            ]);
        }
        let lines = table.lines();
        let mut out = std::io::stdout().lock();
        if tty && drawn > 0 {
            let _ = write!(out, "\x1b[{drawn}A");
        }
        for line in &lines {
            let _ = if tty { writeln!(out, "\x1b[2K{line}") } else { writeln!(out, "{line}") };
        }
        if !tty {
            let _ = writeln!(out);
        }
        let _ = out.flush();
        drawn = lines.len();
        rounds += 1;
        if count.is_some_and(|c| rounds >= c) {
            break count_serving(&monitor);
        }
    };
    prober.shutdown().await;
    Ok(if serving > 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn count_serving(monitor: &HealthMonitor) -> usize {
    let at = now();
    monitor
        .snapshot()
        .nodes()
        .iter()
        .filter(|n| {
            monitor.status(n.id(), at).is_some_and(|s| {
                let st = RegionState::of(&s, at);
                matches!(st, RegionState::Healthy | RegionState::SlowStart(_))
            })
        })
        .count()
}
