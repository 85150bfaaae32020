//! `vectorizer mcp --stdio`: one MCP session over standard input and
//! output, for a desktop agent that spawns the process. With the Hub off
//! it acts for the single local user; with it on, for the holder of the
//! access key in `VECTORIZER_ACCESS_KEY`, checked with the Hub on every
//! call like a REST key. Logs go to standard error only: standard output
//! carries the protocol.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;

use super::handler::Source;
use crate::config::Config;

/// The environment variable holding the access key, with the Hub on.
pub const ACCESS_KEY_ENV: &str = "VECTORIZER_ACCESS_KEY";

/// Serves MCP on stdin/stdout until the client closes it, then flushes.
pub async fn serve(cfg: Config) -> Result<(), String> {
    crate::check_environment(&cfg, false)?;
    let key = std::env::var(ACCESS_KEY_ENV).ok().filter(|k| !k.is_empty());
    if cfg.hub.enabled && key.is_none() {
        return Err(format!(
            "with the Hub enabled, the MCP server on stdio acts for an access key: set {ACCESS_KEY_ENV}"
        ));
    }
    let auth = if cfg.hub.enabled {
        Some(crate::hub_auth(&cfg, None)?)
    } else {
        None
    };
    let state = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || crate::state(&cfg)
    })
    .await
    .map_err(|e| e.to_string())??;
    let service = state.service.clone();
    match &auth {
        Some(auth) => crate::connect_hub(&service, auth, &cfg)?,
        None => crate::say_outside_local_namespace(&service),
    }
    let mcp = match &state.mcp {
        Some(m) => m.clone(),
        None => Arc::new(crate::mcp_parts(&cfg, &service)),
    };
    let source = Source::Stdio(auth.zip(key));
    let handler = mcp.handler(service.clone(), source);
    tracing::info!(data_dir = %cfg.storage.data_dir.display(), "MCP server on stdio");
    let running = handler
        .serve(rmcp::transport::io::stdio())
        .await
        .map_err(|e| format!("starting the MCP session: {e}"))?;
    let _ = running.waiting().await;
    let flushed = tokio::time::timeout(
        Duration::from_secs(cfg.server.shutdown_timeout_seconds),
        tokio::task::spawn_blocking(move || service.flush()),
    )
    .await;
    match flushed {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("flushing storage: {e}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Ok(()),
    }
}
