//! Operating `sluice serve`: logs (`RUST_LOG`, `--log-format`), live reload (SIGHUP and
//! `POST /admin/reload`), and `sluice status`.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use clap::{Args, ValueEnum};
use sluice_client::Client;
use sluice_gateway::admin::Reloader;

use crate::{CliError, Config, error};

/// How `serve` writes its logs (stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The log filter: `RUST_LOG` (tracing-subscriber's env-filter syntax) or `default`; the
/// access log goes off with `access_log = false`.
pub(crate) fn filter(default: &str, access_log: bool) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    if access_log {
        filter
    } else {
        match format!("{}=off", sluice_gateway::access_log::TARGET).parse() {
            Ok(directive) => filter.add_directive(directive),
            Err(_) => filter,
        }
    }
}

/// What `serve` must flush before it exits: the OpenTelemetry export (feature `otel`).
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    #[cfg(feature = "otel")]
    otel: Option<crate::otel::Otel>,
}

impl Telemetry {
    /// Exports what is still buffered.
    pub(crate) async fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(otel) = self.otel {
            otel.shutdown().await;
        }
    }
}

/// Installs `serve`'s log subscriber on stderr: the filter of [`filter`] (default `info`) and
/// the format, plus the OpenTelemetry export when built with `otel` and the `OTEL_*`
/// variables ask for it. A second call installs nothing.
pub(crate) fn init_logs(format: LogFormat, access_log: bool) -> Telemetry {
    use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_target(false).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).boxed(),
    };
    // Log lines are flat events: each names its region, model or request itself, and the
    // access log holds one line per call. Spans (one per call and per attempt) go only to
    // OpenTelemetry, so that with no exporter they cost nothing: formatting their fields for
    // the log's span context cost more per call than the rest of the logging together.
    // Every layer has its own filter and none has a global one: a span no layer wants is
    // then never created.
    let fmt = fmt
        .with_filter(filter("info", access_log))
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| !meta.is_span()));
    let registry = tracing_subscriber::registry().with(fmt);
    #[cfg(feature = "otel")]
    {
        let (layer, otel, problem) = match crate::otel::start() {
            Ok(Some((layer, otel))) => (Some(layer), Some(otel), None),
            Ok(None) => (None, None, None),
            Err(problem) => (None, None, Some(problem)),
        };
        let exporting = otel.is_some();
        let layer = layer.map(|l| l.with_filter(filter("info", access_log)));
        if registry.with(layer).try_init().is_err() {
            return Telemetry::default();
        }
        if let Some(problem) = problem {
            tracing::error!(%problem, "OpenTelemetry export is off");
        } else if exporting {
            tracing::info!("OpenTelemetry: exporting spans over OTLP/HTTP");
        }
        Telemetry { otel }
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = registry.try_init();
        Telemetry::default()
    }
}

/// Re-reads `path` and swaps its regions in; the errors are `check-config`'s.
pub(crate) fn reloader(path: PathBuf) -> Reloader {
    Arc::new(move |client: &Client| reload(&path, client))
}

fn reload(path: &Path, client: &Client) -> Result<String, String> {
    let config = Config::load(path).map_err(|e| error::chain(&e))?;
    let (regions, _) = config.resolve_keys().map_err(|e| error::chain(&e))?;
    let changes = client
        .update_regions_with(regions, config.providers(), config.region_models())
        .map_err(|e| format!("{}: {}", path.display(), error::chain(&e)))?;
    Ok(format!(
        "{} region(s); added [{}], removed [{}]",
        changes.kept.len() + changes.added.len(),
        changes.added.join(", "),
        changes.removed.join(", ")
    ))
}

/// Reloads on every SIGHUP until the process ends. Registered before the caller prints that
/// it listens, so that a SIGHUP sent after that line is never lost to the default action.
#[cfg(unix)]
pub(crate) fn reload_on_sighup(client: Client, reload: Reloader) -> Result<(), CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| CliError::Failed(format!("cannot listen for SIGHUP: {e}")))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let (reload, client) = (Arc::clone(&reload), client.clone());
            match tokio::task::spawn_blocking(move || reload(&client)).await {
                Ok(Ok(summary)) => tracing::info!(%summary, "SIGHUP: configuration reloaded"),
                Ok(Err(errors)) => tracing::error!(%errors, "SIGHUP: configuration refused; the running one stays"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: the reload task failed; the running configuration stays")
                }
            }
        }
    });
    Ok(())
}

/// Windows has no SIGHUP: reload through `POST /admin/reload`.
#[cfg(not(unix))]
pub(crate) fn reload_on_sighup(_: Client, _: Reloader) -> Result<(), CliError> {
    Ok(())
}

/// `sluice status`: the admin API's region table.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The server, `http://HOST:PORT`.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The environment variable holding the admin key (`serve --admin-key-env`).
    #[arg(long, value_name = "NAME", default_value = "SLUICE_ADMIN_KEY")]
    admin_key_env: String,
}

/// Prints `GET /admin/regions` as a table.
pub(crate) async fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    let key = std::env::var(&args.admin_key_env)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| CliError::Usage(format!("--admin-key-env {0}: {0} is not set or empty", args.admin_key_env)))?;
    let base = args.url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(CliError::Usage(format!("--url {}: expected http://HOST:PORT", args.url)));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start an HTTP client: {e}")))?;
    let answer = http
        .get(format!("{base}/admin/regions"))
        .bearer_auth(key.trim())
        .send()
        .await
        .map_err(|e| CliError::Failed(format!("cannot reach {base}: {}", error::chain(&e))))?;
    let status = answer.status();
    let body = answer.text().await.map_err(|e| CliError::Failed(format!("cannot read the answer: {e}")))?;
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 => " (wrong or missing admin key)",
            404 => " (is the admin API on? serve --admin-key-env NAME)",
            _ => "",
        };
        return Err(CliError::Failed(format!("{base} answered {status}{hint}: {}", body.trim())));
    }
    let value: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| CliError::Failed(format!("not an admin answer: {e}")))?;
    print!("{}", render(&value));
    Ok(ExitCode::SUCCESS)
}

/// The admin answer as an aligned table.
pub(crate) fn render(value: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let until = |v: &serde_json::Value| match v.get("in_s") {
        Some(s) => {
            let reason = v.get("reason").and_then(|r| r.as_str()).map(|r| format!(" ({r})")).unwrap_or_default();
            format!("{}s{reason}", text(s))
        }
        None => "-".to_owned(),
    };
    let header = [
        "region",
        "state",
        "health",
        "admin",
        "eligible",
        "in-flight",
        "limit",
        "latency ms",
        "rtt ms",
        "cooldown",
        "ejection",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
    for r in value["regions"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        rows.push(vec![
            text(&r["id"]),
            text(&r["state"]),
            text(&r["health"]),
            text(&r["admin"]),
            text(&r["eligible"]),
            text(&r["in_flight"]),
            text(&r["concurrency_limit"]),
            text(&r["latency_ms"]),
            text(&r["probe_rtt_ms"]),
            until(&r["cooldown"]),
            until(&r["ejection"]),
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = format!("strategy: {}\n", text(&value["strategy"]));
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::render;

    #[test]
    fn status_table() {
        let v = json!({"strategy": "locality", "regions": [
            {"id": "eu-west-1", "state": "ejected 3.0s", "health": "healthy", "admin": "enabled", "eligible": false,
             "in_flight": 2, "concurrency_limit": 64, "latency_ms": 812.5, "probe_rtt_ms": 20.1, "cooldown": null,
             "ejection": {"in_s": 3.0, "at_unix_s": 1.0, "reason": "consecutive failures"}},
        ]});
        let table = render(&v);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "strategy: locality");
        assert!(lines[1].starts_with("region     state"), "{table}");
        assert!(lines[2].contains("eu-west-1") && lines[2].contains("3.0s (consecutive failures)"), "{table}");
        assert!(lines[2].contains("812.5") && lines[2].contains(" - "), "{table}");
    }
}
