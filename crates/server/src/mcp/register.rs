//! This node's MCP server in the Hub's MCP gateway: registered at start in
//! the background (start-up never waits for the Hub), again with backoff
//! while the Hub is down, again as soon as it comes back, and every
//! refresh interval (re-registering the same node replaces the entry, so a
//! Hub that lost it gets it back); deregistered on a graceful stop.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;
use uuid::Uuid;
use vectorizer_hub::model::McpTool;
use vectorizer_hub::{HubClient, HubHealth};

/// What this node tells the Hub.
#[derive(Debug, Clone)]
pub struct Announcement {
    pub node_id: String,
    pub url: String,
    pub tools: Vec<McpTool>,
    pub refresh: Duration,
}

#[derive(Default)]
pub struct Registration {
    server_id: Mutex<Option<Uuid>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Registration {
    pub fn is_registered(&self) -> bool {
        self.server_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn set(&self, id: Option<Uuid>) {
        *self.server_id.lock().unwrap_or_else(|e| e.into_inner()) = id;
    }

    /// Starts registering in the background.
    pub fn spawn(self: &Arc<Self>, hub: Arc<HubClient>, a: Announcement) {
        let me = self.clone();
        let task = tokio::spawn(async move { me.keep(hub, a).await });
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    async fn keep(&self, hub: Arc<HubClient>, a: Announcement) {
        let mut backoff = Duration::from_secs(1);
        let mut due = tokio::time::Instant::now();
        let mut was_up = true;
        let mut failing = false;
        loop {
            let now = tokio::time::Instant::now();
            let health = hub.health();
            let up = matches!(health, HubHealth::Up | HubHealth::Degraded);
            // The Hub is back after an outage: it may have lost the entry.
            let back = up && !was_up;
            was_up = up;
            if now >= due || back {
                match hub.register_mcp(&a.node_id, &a.url, a.tools.clone()).await {
                    Ok(id) => {
                        if failing || !self.is_registered() {
                            tracing::info!(node_id = %a.node_id, url = %a.url, "MCP server registered with the Hub");
                        }
                        self.set(Some(id));
                        failing = false;
                        backoff = Duration::from_secs(1);
                        due = tokio::time::Instant::now() + a.refresh;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "registering the MCP server with the Hub failed; retrying in the background");
                        }
                        failing = true;
                        due = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            let wait = due
                .saturating_duration_since(tokio::time::Instant::now())
                .min(Duration::from_secs(1));
            tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
        }
    }

    /// Stops registering and removes the entry from the Hub.
    pub async fn deregister(&self, hub: &HubClient) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            // Ended before the entry is removed: a registration the loop
            // had in flight would otherwise land after the removal.
            let _ = task.await;
        }
        let id = self
            .server_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(id) = id else { return };
        match hub.deregister_mcp(&id).await {
            Ok(()) => tracing::info!("MCP server deregistered from the Hub"),
            Err(e) => {
                tracing::warn!(error = %e, "deregistering the MCP server from the Hub failed")
            }
        }
    }
}
