//! Sending log entries to a follower within Raft's timers. openraft 0.9
//! gives every AppendEntries call one heartbeat interval and sends the
//! same batch again when it runs out, so a batch that takes longer to
//! cross would be abandoned and resent forever. Here:
//! - a batch over [`BATCH_BYTES`] is refused before it is sent, with a
//!   hint of how many entries fit, and openraft sends fewer;
//! - each call runs to its end in a task of its own, with a deadline sized
//!   by its bytes; openraft's retry of the same batch on the same
//!   connection (a replication stream: same leader vote, same previous
//!   entry) waits for that call instead of starting over, and is told how
//!   far the follower got;
//! - a batch that outlasts its deadline is sent again as half as many
//!   entries.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{NetworkError, PayloadTooLarge, RPCError, RaftError, Unreachable};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{AnyError, BasicNode, RaftLogId, Vote};
use tokio::sync::watch;

use crate::net::{CallError, Peers};
use crate::types::{LogId, NodeId, Tc};

/// The most one AppendEntries call carries, unless it holds one entry
/// (whose size the entry cap bounds).
pub const BATCH_BYTES: usize = 4 << 20;

type Answer = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
type Outcome = Result<Answer, Failed>;
type AeError = RPCError<NodeId, BasicNode, RaftError<NodeId>>;

#[derive(Debug, Clone)]
enum Failed {
    Unreachable(String),
    /// Fewer entries at a time: at most this many.
    TooLarge(u64),
    Network(String),
}

/// A call with entries under way on a stream.
struct Pending {
    vote: Vote<NodeId>,
    prev: Option<LogId>,
    last: Option<LogId>,
    outcome: watch::Receiver<Option<Arc<Outcome>>>,
}

/// What one connection to one member of one group (a replication stream:
/// openraft makes a new one for each stream) knows of its calls: the call
/// with entries under way, and the failed calls in a row (replication that
/// stops progressing is an operator's concern, and openraft's own lines
/// are not shown at the usual levels).
#[derive(Default)]
pub struct Stream {
    pending: Option<Pending>,
    failures: u32,
    said: bool,
}

/// Failed calls in a row after which a stalled replication is logged.
const STALLED_AFTER: u32 = 20;

/// How long a call of `bytes` may take before it counts as lost: a
/// second, plus a second per 4 MiB.
fn deadline(bytes: usize) -> Duration {
    Duration::from_millis(1000 + (bytes as u64 >> 12))
}

fn copy(a: &Answer) -> Answer {
    match a {
        Ok(AppendEntriesResponse::Success) => Ok(AppendEntriesResponse::Success),
        Ok(AppendEntriesResponse::PartialSuccess(m)) => {
            Ok(AppendEntriesResponse::PartialSuccess(*m))
        }
        Ok(AppendEntriesResponse::Conflict) => Ok(AppendEntriesResponse::Conflict),
        Ok(AppendEntriesResponse::HigherVote(v)) => Ok(AppendEntriesResponse::HigherVote(*v)),
        Err(e) => Err(e.clone()),
    }
}

/// What the follower's answer to a call that sent entries up to `sent`
/// says of a request for entries up to `asked` (which starts at the same
/// place, so one range holds the other).
fn answer_for(a: &Answer, sent: Option<LogId>, asked: Option<LogId>) -> Answer {
    match copy(a) {
        Ok(AppendEntriesResponse::Success) if sent < asked => {
            Ok(AppendEntriesResponse::PartialSuccess(sent))
        }
        Ok(AppendEntriesResponse::PartialSuccess(m)) if m > asked => {
            Ok(AppendEntriesResponse::Success)
        }
        other => other,
    }
}

fn to_rpc(f: Failed) -> AeError {
    match f {
        Failed::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&AnyError::error(m))),
        Failed::TooLarge(n) => RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(n)),
        Failed::Network(m) => RPCError::Network(NetworkError::new(&AnyError::error(m))),
    }
}

/// Encodes and sends one AppendEntries call (see the module's comment).
async fn send_batch(
    peers: Arc<Peers>,
    group: u32,
    target: NodeId,
    addr: String,
    rpc: AppendEntriesRequest<Tc>,
) -> Outcome {
    let n = rpc.entries.len();
    let body = tokio::task::spawn_blocking(move || crate::codec::to_bytes(&rpc))
        .await
        .map_err(|e| Failed::Network(e.to_string()))?
        .map_err(Failed::Network)?;
    if n > 1 && body.len() > BATCH_BYTES {
        return Err(Failed::TooLarge(
            (n * BATCH_BYTES / body.len()).max(1) as u64
        ));
    }
    let path = format!("/internal/raft/{group}/append");
    let limit = deadline(body.len());
    let started = std::time::Instant::now();
    peers
        .send::<Answer>(target, &addr, &path, body, limit)
        .await
        .map(|(a, _)| a)
        .map_err(|e| match e {
            CallError::Unreachable(m) => Failed::Unreachable(m),
            // Over the receiver's body limit: one entry.
            CallError::Refused(413) => Failed::TooLarge(1),
            // Past its deadline: half as many entries.
            CallError::NoAnswer(_) if n > 1 && started.elapsed() >= limit => {
                Failed::TooLarge((n as u64 / 2).max(1))
            }
            other => Failed::Network(other.to_string()),
        })
}

impl Stream {
    fn note(&mut self, group: u32, target: NodeId, failed: Option<&Failed>) {
        match failed {
            None | Some(Failed::TooLarge(_)) => {
                if self.said {
                    tracing::info!(group = %crate::status::group_name(group), node = target, "replication to the node progresses again");
                }
                self.failures = 0;
                self.said = false;
            }
            Some(f) => {
                self.failures += 1;
                if self.failures >= STALLED_AFTER && !self.said {
                    self.said = true;
                    let reason = match f {
                        Failed::Unreachable(m) | Failed::Network(m) => m.as_str(),
                        Failed::TooLarge(_) => "",
                    };
                    tracing::warn!(group = %crate::status::group_name(group), node = target, reason, "replication to the node is not progressing");
                }
            }
        }
    }

    /// Sends `rpc` to `target` of `group` (see the module's comment),
    /// waiting at most `wait` for the answer.
    pub async fn append(
        &mut self,
        peers: &Arc<Peers>,
        (group, target, addr): (u32, NodeId, &str),
        rpc: AppendEntriesRequest<Tc>,
        wait: Duration,
    ) -> Result<AppendEntriesResponse<NodeId>, AeError> {
        let (vote, prev) = (rpc.vote, rpc.prev_log_id);
        let asked = rpc.entries.last().map(|e| *e.get_log_id()).or(prev);
        let n = rpc.entries.len();
        let joined = self
            .pending
            .as_ref()
            .filter(|p| p.vote == vote && p.prev == prev && n > 0)
            .map(|p| (p.last, p.outcome.clone()));
        let (sent, mut outcome) = match joined {
            Some(j) => j,
            None => {
                // Kept before anything is encoded: a retry of the same
                // batch joins this call even while it is encoded.
                let (tx, rx) = watch::channel(None);
                if n > 0 {
                    self.pending = Some(Pending {
                        vote,
                        prev,
                        last: asked,
                        outcome: rx.clone(),
                    });
                }
                let call = send_batch(peers.clone(), group, target, addr.to_owned(), rpc);
                tokio::spawn(async move {
                    let r = call.await;
                    let _ = tx.send(Some(Arc::new(r)));
                });
                (asked, rx)
            }
        };
        let got = tokio::time::timeout(wait, outcome.wait_for(Option::is_some)).await;
        let result = match got {
            Err(_) => {
                return Err(RPCError::Network(NetworkError::new(&AnyError::error(
                    "no answer yet; the call goes on",
                ))));
            }
            Ok(Err(_)) => Err(Failed::Network("the call was dropped".into())),
            Ok(Ok(r)) => match r.as_deref().expect("waited for an outcome") {
                Ok(a) => Ok(copy(a)),
                Err(f) => Err(f.clone()),
            },
        };
        // Done: the next batch starts afresh (a heartbeat leaves a call
        // with entries under way alone).
        if n > 0 {
            self.pending = None;
        }
        self.note(group, target, result.as_ref().err());
        match result {
            Ok(a) => answer_for(&a, sent, asked)
                .map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(target, e))),
            Err(f) => Err(to_rpc(f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn id(i: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(1, 1), i))
    }

    #[test]
    fn an_answer_speaks_only_of_what_was_sent() {
        let ok: Answer = Ok(AppendEntriesResponse::Success);
        // Sent up to 5, asked up to 9: the follower holds up to 5.
        assert_eq!(
            answer_for(&ok, id(5), id(9)).unwrap(),
            AppendEntriesResponse::PartialSuccess(id(5))
        );
        // Sent up to 9, asked up to 5: all that was asked is there.
        assert_eq!(
            answer_for(&ok, id(9), id(5)).unwrap(),
            AppendEntriesResponse::Success
        );
        let part: Answer = Ok(AppendEntriesResponse::PartialSuccess(id(7)));
        assert_eq!(
            answer_for(&part, id(9), id(5)).unwrap(),
            AppendEntriesResponse::Success
        );
        assert_eq!(
            answer_for(&part, id(9), id(8)).unwrap(),
            AppendEntriesResponse::PartialSuccess(id(7))
        );
        let conflict: Answer = Ok(AppendEntriesResponse::Conflict);
        assert_eq!(
            answer_for(&conflict, id(5), id(9)).unwrap(),
            AppendEntriesResponse::Conflict
        );
    }

    #[test]
    fn a_call_may_take_longer_the_more_it_carries() {
        assert_eq!(deadline(0), Duration::from_secs(1));
        assert_eq!(deadline(8 << 20), Duration::from_millis(3048));
    }
}
