//! Repairing one node's copy of one group (`vectorizer cluster
//! repair-group`): the group's leader takes the node out of the group,
//! the node drops its copy (entries and data; its vote stays), and the
//! leader adds it back as a learner, sends it the group's state (snapshot,
//! then log) and makes it a voter again once it has caught up. Each step
//! is skipped where it is done already, so a repair cut short can be run
//! again. Taking a voter out is refused when it would leave fewer voters
//! than a majority of the replication factor.

use std::time::Duration;

use vectorizer_service::ServiceError;

use crate::node::{Forward, Node};
use crate::status::group_name;
use crate::types::*;

/// The group a name (`meta`, `shard-<s>`) stands for.
pub fn group_of(name: &str, shards: u32) -> Option<u32> {
    if name == "meta" {
        return Some(META_GROUP);
    }
    let s: u32 = name.strip_prefix("shard-")?.parse().ok()?;
    (s < shards).then_some(s + 1)
}

impl Node {
    /// Repairs node `target`'s copy of the group named `name`.
    pub async fn repair_group(&self, target: NodeId, name: &str) -> Result<(), ServiceError> {
        let invalid = |m: String| ServiceError::invalid("invalid_request", m);
        let g = group_of(name, self.options.shards).ok_or_else(|| {
            invalid(format!(
                "no group `{name}`: groups are `meta` and `shard-0` to `shard-{}`",
                self.options.shards - 1
            ))
        })?;
        let (members, addr) =
            self.with_topology(|t| (t.members(g), t.addr(target).map(str::to_owned)));
        let addr = addr.ok_or_else(|| invalid(format!("node {target} is not in the cluster")))?;
        if !members.contains(&target) {
            return Err(invalid(format!(
                "node {target} holds no copy of {}",
                group_name(g)
            )));
        }
        tracing::info!(node = target, group = %group_name(g), "repairing a node's copy of a group");
        let refusal = |r: Reply| match r {
            Reply::Meta(Err(e)) => Err(ServiceError::from(e)),
            _ => Ok(()),
        };
        let removed = self.submit(g, Forward::Remove { node: target }).await?;
        // A learner already: a repair cut short, whose copy the leader is
        // sending; it resumes (its copy is not dropped again).
        let resuming = matches!(removed, Reply::Meta(Ok(MetaReply::Done)));
        refusal(removed)?;
        if resuming {
            tracing::info!(node = target, group = %group_name(g), "the node is a learner of the group already: the repair resumes");
        } else if target == self.id {
            self.reset_group(g).await?;
        } else {
            let path = format!("/internal/reset/{g}");
            self.peers
                .call::<(), Result<(), String>>(target, &addr, &path, (), Duration::from_secs(60))
                .await
                .map_err(|e| ServiceError::Unavailable(format!("node {target}: {e}")))?
                .0
                .map_err(ServiceError::Unavailable)?;
        }
        self.submit(g, Forward::Rejoin { node: target, addr })
            .await?;
        tracing::info!(node = target, group = %group_name(g), "the node's copy of the group is repaired");
        Ok(())
    }

    /// Drops this node's copy of group `g` and opens it again, empty (one
    /// group at a time).
    pub async fn reset_group(&self, g: u32) -> Result<(), ServiceError> {
        let _one = self.repairs.lock().await;
        let slot = self
            .groups
            .get(&g)
            .ok_or_else(|| ServiceError::invalid("invalid_request", "no such group here"))?;
        let main = self
            .main
            .upgrade()
            .ok_or_else(|| ServiceError::Unavailable("the node is shutting down".into()))?;
        let group = self
            .opener()
            .reset(g, slot.get(), &main)
            .await
            .map_err(ServiceError::Internal)?;
        slot.replace(group);
        tracing::info!(group = %group_name(g), "this node's copy of the group was dropped; the leader sends it again");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        assert_eq!(group_of("meta", 4), Some(0));
        assert_eq!(group_of("shard-0", 4), Some(1));
        assert_eq!(group_of("shard-3", 4), Some(4));
        assert_eq!(group_of("shard-4", 4), None);
        assert_eq!(group_of("shard-x", 4), None);
        assert_eq!(group_of("", 4), None);
    }
}
