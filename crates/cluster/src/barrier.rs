//! Read barriers: a read on a shard's leader waits until the leader has
//! confirmed with a majority that it still leads, in a round that began
//! after the read arrived (then the read sees every write acknowledged
//! before it). Reads that arrive together share one round instead of one
//! round each.

use std::time::Instant;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::Mutex;

use crate::types::{NodeId, Raft};

#[derive(Default)]
pub struct ReadBarrier {
    /// When the last confirmed round began.
    confirmed: Mutex<Option<Instant>>,
}

type Error = RaftError<NodeId, CheckIsLeaderError<NodeId, openraft::BasicNode>>;

impl ReadBarrier {
    /// Returns once a round that began after this call has confirmed the
    /// leader (and the entries it had committed then are applied).
    pub async fn pass(&self, raft: &Raft) -> Result<(), Error> {
        let arrived = Instant::now();
        let mut confirmed = self.confirmed.lock().await;
        if confirmed.is_some_and(|at| at >= arrived) {
            return Ok(());
        }
        // A round times out with Raft's heartbeat interval; a follower busy
        // appending a large entry answers later. Rounds are tried again
        // while the leader still leads (the caller bounds the wait).
        loop {
            let began = Instant::now();
            match raft.ensure_linearizable().await {
                Ok(_) => {
                    *confirmed = Some(began);
                    return Ok(());
                }
                Err(e) if is_quorum_not_enough(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_quorum_not_enough(e: &Error) -> bool {
    matches!(e.api_error(), Some(CheckIsLeaderError::QuorumNotEnough(_)))
}
