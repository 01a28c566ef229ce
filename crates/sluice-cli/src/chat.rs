//! `sluice chat`: one chat completion through the router.

use std::{io::Write, process::ExitCode};

use futures_util::StreamExt;
use sluice_client::{CallOptions, ChatCompletionRequest, ChatMessage, GeoPoint, ResponseMeta};

use crate::{CliError, Config, error::chain, table::ms};

/// What to ask and how.
#[derive(Debug)]
pub(crate) struct ChatOptions {
    pub(crate) region: Option<String>,
    pub(crate) caller: Option<GeoPoint>,
    pub(crate) stream: bool,
    pub(crate) model: String,
    pub(crate) prompt: String,
}

/// Sends the prompt, prints the answer (streamed as it arrives unless `--no-stream`), then a
/// line with the region, the attempts and the latency.
pub(crate) async fn run(config: &Config, options: ChatOptions) -> Result<ExitCode, CliError> {
    crate::init_logs(tracing::Level::ERROR);
    if let Some(r) = &options.region
        && !config.region_ids().contains(&r.as_str())
    {
        return Err(CliError::Usage(format!(
            "unknown region `{r}` for --region; known regions: {}",
            config.region_ids().join(", ")
        )));
    }
    // One call: probes would only add traffic. Passive health still steers failover.
    let client = config
        .client_builder()?
        .active_probing(false)
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the client: {}", chain(&e))))?;
    let mut call = CallOptions::new();
    if let Some(r) = &options.region {
        call = call.prefer_region(r.clone());
    }
    if let Some(c) = options.caller {
        call = call.caller(c);
    }
    let request = ChatCompletionRequest::new(options.model.clone(), vec![ChatMessage::user(options.prompt.clone())]);
    let failed = |e: sluice_client::Error| CliError::Failed(format!("chat failed: {}", describe(&e)));
    let mut out = std::io::stdout().lock();
    let meta = if options.stream {
        let mut stream = client.chat_completions_stream_with(request, &call).await.map_err(failed)?;
        let meta = stream.meta().clone();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    for choice in &chunk.choices {
                        if let Some(text) = &choice.delta.content {
                            let _ = write!(out, "{text}");
                            let _ = out.flush();
                        }
                    }
                }
                Err(e) => {
                    let _ = writeln!(out);
                    return Err(CliError::Failed(format!("the answer broke off: {}", describe(&e))));
                }
            }
        }
        let _ = writeln!(out);
        meta
    } else {
        let response = client.chat_completions_with(request, &call).await.map_err(failed)?;
        let _ = writeln!(out, "{}", response.body.text().unwrap_or(""));
        response.meta
    };
    let _ = writeln!(out, "{}", served_line(&meta, &client));
    Ok(ExitCode::SUCCESS)
}

fn served_line(meta: &ResponseMeta, client: &sluice_client::Client) -> String {
    let name = client.snapshot().node(meta.node).region().name().to_owned();
    let mut line = format!(
        "-- served by {} ({name}) after {} attempt{}, {}",
        meta.region,
        meta.attempts,
        if meta.attempts == 1 { "" } else { "s" },
        ms(meta.latency)
    );
    for f in &meta.failed_attempts {
        line.push_str(&format!("; {} failed: {}", f.region, f.failure));
    }
    line
}

/// The error plus each failed attempt.
fn describe(e: &sluice_client::Error) -> String {
    let mut s = chain(e);
    if matches!(e.kind(), sluice_client::ErrorKind::Credentials { .. }) {
        s.push_str(" (check the environment variable named by api_key_env; OPENAI_API_KEY by default)");
    }
    for f in e.failed_attempts() {
        s.push_str(&format!("\n  attempt on {}: {}", f.region, f.failure));
    }
    s
}
