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

fn members(raft: &Raft) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    let m = raft.metrics().borrow().membership_config.clone();
    let voters: BTreeSet<NodeId> = m.membership().voter_ids().collect();
    let learners: BTreeSet<NodeId> = m.membership().learner_ids().collect();
    (voters, learners)
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

/// Takes `node` out of the group: as a voter, or as a learner.
pub async fn remove(raft: Raft, node: NodeId, replication: u32, wait: Duration) -> Forwarded {
    let (voters, learners) = members(&raft);
    if voters.contains(&node) {
        let left = voters.len() - 1;
        let need = replication as usize / 2 + 1;
        if left < need {
            return refused(format!(
                "taking node {node} out would leave {left} voter(s), fewer than {need}: repair one copy at a time, once the others have caught up"
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
        return bounded(wait, async move {
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node])), false)
                .await
                .map(drop)
        })
        .await;
    }
    Forwarded::Reply { reply: Reply::None }
}

/// Adds `node` (at `addr`) back: as a learner until it has caught up with
/// the log, then as a voter.
pub async fn rejoin(raft: Raft, node: NodeId, addr: String, wait: Duration) -> Forwarded {
    let (voters, _) = members(&raft);
    if voters.contains(&node) {
        return Forwarded::Reply { reply: Reply::None };
    }
    bounded(wait, async move {
        // Blocks until the leader finds the learner's log close to its own
        // (a learner already there is added again, and waited for).
        raft.add_learner(node, openraft::BasicNode::new(addr), true)
            .await?;
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node])), false)
            .await
            .map(drop)
    })
    .await
}
