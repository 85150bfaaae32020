//! Membership changes a group's leader makes for a repair: taking one
//! member out (voter or learner) and adding it back. Each is one
//! incremental change (never a whole member set read from a snapshot of
//! the metrics, which a concurrent change could make stale), each is
//! skipped where it is done, and taking a voter out is refused when the
//! voters left would be fewer than a majority of the replication factor
//! (so a group never runs on a single copy, and two repairs at once
//! cannot both proceed).

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use vectorizer_service::ServiceError;

use crate::node::Forwarded;
use crate::types::*;
use crate::wire::WireError;

type WriteError = RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>;

/// The group's membership as its leader has it: the voters (of the last
/// configuration), the learners, and whether a change is under way (a
/// joint configuration).
fn members(raft: &Raft) -> (BTreeSet<NodeId>, BTreeSet<NodeId>, bool) {
    let m = raft.metrics().borrow().membership_config.clone();
    let joint = m.membership().get_joint_config();
    let voters = joint.last().cloned().unwrap_or_default();
    let learners: BTreeSet<NodeId> = m.membership().learner_ids().collect();
    (voters, learners, joint.len() > 1)
}

/// The voters (besides `but`) whose log the leader knows reaches its
/// applied index: the copies a group can count on.
fn caught_up(raft: &Raft, voters: &BTreeSet<NodeId>, but: NodeId) -> usize {
    let m = raft.metrics().borrow().clone();
    let applied = m.last_applied.map_or(0, |l| l.index);
    voters
        .iter()
        .filter(|v| **v != but)
        .filter(|v| {
            **v == m.id
                || m.replication
                    .as_ref()
                    .and_then(|r| r.get(*v).copied().flatten())
                    .is_some_and(|l| l.index >= applied)
        })
        .count()
}

fn refused(message: String) -> Forwarded {
    Forwarded::Reply {
        reply: Reply::Meta(Err(WireError::from(&ServiceError::invalid(
            "invalid_request",
            message,
        )))),
    }
}

async fn bounded(
    wait: Duration,
    change: impl std::future::Future<Output = Result<(), WriteError>>,
) -> Forwarded {
    match tokio::time::timeout(wait, change).await {
        Err(_) => Forwarded::Unavailable {
            reason: "the membership change did not finish in time; run it again".into(),
        },
        Ok(Ok(())) => Forwarded::Reply { reply: Reply::None },
        Ok(Err(e)) => crate::rpc::write_error(&e),
    }
}

/// Takes `node` out of the group as a voter. Answers `Meta(Ok(Done))`
/// where `node` is a learner (a repair under way: it resumes), `None`
/// where it was taken out or was no member.
pub async fn remove(raft: Raft, node: NodeId, replication: u32, wait: Duration) -> Forwarded {
    let (voters, learners, joint) = members(&raft);
    if joint {
        return refused(
            "a membership change of this group is under way: run the repair again in a moment"
                .into(),
        );
    }
    if voters.contains(&node) {
        let left = caught_up(&raft, &voters, node);
        let need = replication as usize / 2 + 1;
        if left < need {
            return refused(format!(
                "taking node {node} out would leave {left} up-to-date voter(s), fewer than {need}: repair one copy at a time, once the others have caught up"
            ));
        }
        return bounded(wait, async move {
            raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node])), false)
                .await
                .map(drop)
        })
        .await;
    }
    if learners.contains(&node) {
        return Forwarded::Reply {
            reply: Reply::Meta(Ok(MetaReply::Done)),
        };
    }
    Forwarded::Reply { reply: Reply::None }
}

/// Adds `node` (at `addr`) back: as a learner until its log reaches the
/// leader's (as it was once the learner was added), then as a voter.
pub async fn rejoin(raft: Raft, node: NodeId, addr: String, wait: Duration) -> Forwarded {
    let (voters, _, _) = members(&raft);
    if voters.contains(&node) {
        return Forwarded::Reply { reply: Reply::None };
    }
    bounded(wait, async move {
        raft.add_learner(node, openraft::BasicNode::new(addr), false)
            .await?;
        // openraft's own wait ends within its lag threshold (thousands of
        // entries): wait for the whole log as it is now.
        let target = raft.metrics().borrow().last_log_index.unwrap_or(0);
        let mut m = raft.metrics();
        loop {
            let reached = m
                .borrow()
                .replication
                .as_ref()
                .and_then(|r| r.get(&node).copied().flatten())
                .is_some_and(|l| l.index >= target);
            if reached {
                break;
            }
            if m.changed().await.is_err() {
                break;
            }
        }
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node])), false)
            .await
            .map(drop)
    })
    .await
}
