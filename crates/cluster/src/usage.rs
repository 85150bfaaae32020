//! Usage reports in cluster mode: a shard's figures go to the Hub from its
//! leader only, once per change (and all again every few minutes), from
//! the applied state, so the Hub hears each collection once for the whole
//! cluster, not once per replica.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vectorizer_service::usage::Report;

use crate::node::Node;

/// How often a leader looks at its shards' figures.
const EVERY: Duration = Duration::from_secs(1);
/// How often every figure is sent again, changed or not.
const RESEND: Duration = Duration::from_secs(300);

pub fn spawn(node: Arc<Node>) {
    let node = Arc::downgrade(&node);
    tokio::spawn(async move {
        let mut sent: HashMap<u32, HashMap<uuid::Uuid, Report>> = HashMap::new();
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(EVERY).await;
            let Some(node) = node.upgrade() else { return };
            let Some(main) = node.main.upgrade() else {
                return;
            };
            if since.elapsed() > RESEND {
                sent.clear();
                since = Instant::now();
            }
            for g in node.groups.keys() {
                let Some(group) = node.group(*g) else {
                    continue;
                };
                let Some(shard) = &group.shard else { continue };
                let leads = group.raft.metrics().borrow().current_leader == Some(node.id);
                if !leads {
                    // Sent again in full if this node leads it again.
                    sent.remove(g);
                    continue;
                }
                let service = shard.service.clone();
                let Ok(figures) = tokio::task::spawn_blocking(move || service.all_usage()).await
                else {
                    continue;
                };
                let mine = sent.entry(*g).or_default();
                // Gone while this node led the shard: a deletion the node
                // that took it may not have known it made (it saw no answer).
                let now: std::collections::HashSet<uuid::Uuid> =
                    figures.iter().map(|(id, _)| *id).collect();
                mine.retain(|id, _| {
                    let kept = now.contains(id);
                    if !kept {
                        main.record_deletion(*id);
                    }
                    kept
                });
                for (id, report) in figures {
                    if mine.get(&id) != Some(&report) {
                        main.record_usage(id, report);
                        mine.insert(id, report);
                    }
                }
            }
        }
    });
}
