//! The service's operations as values, for cluster mode: a node hands an
//! [`Op`] to the cluster, which runs it where the caller's home shard is
//! led (its writes replicated before they are applied), and the answer
//! comes back as an [`Answer`]. On a shard replica the op runs through the
//! same service functions as on a single node ([`Service::execute`]), so
//! cluster mode has no second implementation of any operation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vectorizer_engine::{PointId, With};

use crate::caller::{Caller, Permission};
use crate::error::{Result, ServiceError};
use crate::model::*;
use crate::quota::{Amount, PlanLimits};
use crate::service::{Call, Service};

/// One service operation, with its arguments as the caller gave them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    CreateCollection {
        req: CreateCollection,
    },
    DeleteCollection {
        name: String,
    },
    ListCollections,
    GetCollection {
        name: String,
    },
    UpdateCollection {
        name: String,
        req: UpdateCollection,
    },
    CreatePayloadIndex {
        name: String,
        req: CreatePayloadIndex,
    },
    DropPayloadIndex {
        name: String,
        field: String,
    },
    Upsert {
        name: String,
        req: UpsertPoints,
    },
    GetPoint {
        name: String,
        id: String,
    },
    GetPoints {
        name: String,
        req: GetPoints,
    },
    DeletePoints {
        name: String,
        req: DeletePoints,
    },
    SetPayload {
        name: String,
        req: SetPayload,
        overwrite: bool,
    },
    DeletePayload {
        name: String,
        req: DeletePayload,
    },
    Scroll {
        name: String,
        req: Scroll,
    },
    Count {
        name: String,
        req: Count,
    },
    Search {
        name: String,
        req: Search,
    },
    SearchBatch {
        name: String,
        req: SearchBatch,
    },
    Usage,
}

impl Op {
    /// Whether the op changes data (and so goes through the shard's log).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::CreateCollection { .. }
                | Op::DeleteCollection { .. }
                | Op::UpdateCollection { .. }
                | Op::CreatePayloadIndex { .. }
                | Op::DropPayloadIndex { .. }
                | Op::Upsert { .. }
                | Op::DeletePoints { .. }
                | Op::SetPayload { .. }
                | Op::DeletePayload { .. }
        )
    }

    /// The permission the op needs: checked where the request arrives and
    /// again where it runs.
    pub fn permission(&self) -> Permission {
        match self {
            Op::DeleteCollection { .. } | Op::DeletePoints { .. } => Permission::Delete,
            op if op.is_write() => Permission::Write,
            _ => Permission::Read,
        }
    }

    /// The collection the op names, if any.
    pub fn collection(&self) -> Option<&str> {
        match self {
            Op::CreateCollection { req } => Some(&req.name),
            Op::ListCollections | Op::Usage => None,
            Op::DeleteCollection { name }
            | Op::GetCollection { name }
            | Op::UpdateCollection { name, .. }
            | Op::CreatePayloadIndex { name, .. }
            | Op::DropPayloadIndex { name, .. }
            | Op::Upsert { name, .. }
            | Op::GetPoint { name, .. }
            | Op::GetPoints { name, .. }
            | Op::DeletePoints { name, .. }
            | Op::SetPayload { name, .. }
            | Op::DeletePayload { name, .. }
            | Op::Scroll { name, .. }
            | Op::Count { name, .. }
            | Op::Search { name, .. }
            | Op::SearchBatch { name, .. } => Some(name),
        }
    }
}

/// What an [`Op`] answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", content = "body", rename_all = "snake_case")]
pub enum Answer {
    Detail(CollectionDetail),
    List(CollectionList),
    Done,
    Upserted(Upserted),
    Point(PointRecord),
    Points(Points),
    Deleted(Deleted),
    Updated(Updated),
    Page(ScrollPage),
    Counted(Counted),
    Results(SearchResults),
    Batch(SearchBatchResults),
    Usage(Usage),
}

/// Takes the expected variant out of an [`Answer`].
macro_rules! answer_as {
    ($fn:ident, $variant:ident, $ty:ty) => {
        pub fn $fn(self) -> Result<$ty> {
            match self {
                Answer::$variant(a) => Ok(a),
                other => Err(ServiceError::Internal(format!(
                    "the cluster answered {other:?} where {} was expected",
                    stringify!($variant)
                ))),
            }
        }
    };
}

impl Answer {
    answer_as!(detail, Detail, CollectionDetail);
    answer_as!(list, List, CollectionList);
    answer_as!(upserted, Upserted, Upserted);
    answer_as!(point, Point, PointRecord);
    answer_as!(points, Points, Points);
    answer_as!(deleted, Deleted, Deleted);
    answer_as!(updated, Updated, Updated);
    answer_as!(page, Page, ScrollPage);
    answer_as!(counted, Counted, Counted);
    answer_as!(results, Results, SearchResults);
    answer_as!(batch, Batch, SearchBatchResults);
    answer_as!(usage, Usage, Usage);

    /// Gives an answer that came from another node the weight of its wire
    /// form (the per-record weights do not travel): set on its first
    /// record, as adapters weigh an answer by the sum of its records'.
    pub fn set_wire_weight(&mut self, bytes: usize) {
        let first = match self {
            Answer::Point(p) => Some(&mut p.json_bytes),
            Answer::Points(p) => p.points.first_mut().map(|r| &mut r.json_bytes),
            Answer::Page(p) => p.points.first_mut().map(|r| &mut r.json_bytes),
            Answer::Results(r) => r.results.first_mut().map(|h| &mut h.json_bytes),
            Answer::Batch(b) => b
                .results
                .iter_mut()
                .find_map(|r| r.results.first_mut())
                .map(|h| &mut h.json_bytes),
            _ => None,
        };
        if let Some(w) = first {
            *w = bytes;
        }
    }

    pub fn done(self) -> Result<()> {
        match self {
            Answer::Done => Ok(()),
            other => Err(ServiceError::Internal(format!(
                "the cluster answered {other:?} where Done was expected"
            ))),
        }
    }
}

/// A boxed future, for the object-safe [`ClusterRouter`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a node's operations go in cluster mode. The service calls it
/// from each operation's one entry point, once the caller's permission
/// is checked, so no adapter can reach data around it.
pub trait ClusterRouter: Send + Sync {
    fn run<'a>(&'a self, caller: &'a Caller, op: Op) -> BoxFuture<'a, Result<Answer>>;
}

impl Service {
    /// Sends every operation through `router` from now on (cluster mode).
    pub fn attach_cluster(&self, router: Arc<dyn ClusterRouter>) {
        let _ = self.cluster.set(router);
    }

    /// The engine under this service (a shard replica's snapshots).
    pub fn engine(&self) -> &vectorizer_engine::Database {
        &self.db
    }

    /// The metadata of the caller's collection `name`, if it has one.
    pub fn metadata_of(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        Some(
            self.db
                .listing(&self.full_name(caller, name).ok()?)
                .ok()?
                .metadata,
        )
    }

    /// Registers the tenant's new collection with the Hub (Hub on) and
    /// gives the metadata it is created with; nothing for a local caller.
    pub async fn hub_register(
        &self,
        caller: &Caller,
        short: &str,
        dimension: usize,
    ) -> Result<(
        std::collections::BTreeMap<String, String>,
        Option<crate::service::Registration>,
    )> {
        match caller {
            Caller::Tenant(t) => self.provision(t, short, dimension).await,
            Caller::Local | Caller::LocalReader => Ok(Default::default()),
        }
    }

    /// Queues figures of a Hub collection for the Hub (Hub on).
    pub fn record_usage(&self, id: uuid::Uuid, report: crate::usage::Report) {
        if let Some(r) = self.reporter.get() {
            r.record(id, report);
        }
    }

    /// Owes the Hub a deletion, durably (Hub on).
    pub fn record_deletion(&self, id: uuid::Uuid) {
        self.record_usage(id, crate::usage::Report::Deleted);
    }

    /// The cluster this node belongs to, if any.
    pub(crate) fn cluster(&self) -> Option<&Arc<dyn ClusterRouter>> {
        self.cluster.get()
    }

    /// Runs `op` here, for `caller`, through the operation's entry point:
    /// on a shard replica (a write being applied, or a read on the leader).
    /// With `limits`, a write that would take the caller's user past them
    /// is refused first, against figures every replica computes alike.
    /// A write being applied (`applying`) runs on the replica's own
    /// workers, not the caller's: the tenant's reads never hold up the
    /// shard's log, which every tenant of the shard waits on.
    pub async fn execute(
        self: &Arc<Self>,
        caller: Caller,
        op: Op,
        limits: Option<PlanLimits>,
        applying: bool,
        metadata: std::collections::BTreeMap<String, String>,
    ) -> Result<Answer> {
        if let (Some(limits), Caller::Tenant(t)) = (limits, &caller)
            && matches!(op, Op::Upsert { .. } | Op::SetPayload { .. })
        {
            // Reads the collection under its locks: off the async runtime.
            let (me, caller, op, user) = (self.clone(), caller.clone(), op.clone(), t.user_id);
            tokio::task::spawn_blocking(move || {
                me.check_replicated_quota(&caller, &user, &op, limits)
            })
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        }
        let call = if applying {
            let ticket = self.share.admit(&Caller::Local)?;
            Call { caller, ticket }
        } else {
            self.admit(caller)?
        };
        let call = &call;
        Ok(match op {
            Op::CreateCollection { req } => {
                Answer::Detail(self.create_collection_with(call, req, metadata).await?)
            }
            Op::DeleteCollection { name } => {
                self.delete_collection(call, &name).await?;
                Answer::Done
            }
            Op::ListCollections => Answer::List(self.list_collections(call).await?),
            Op::GetCollection { name } => Answer::Detail(self.get_collection(call, &name).await?),
            Op::UpdateCollection { name, req } => {
                Answer::Detail(self.update_collection(call, &name, req).await?)
            }
            Op::CreatePayloadIndex { name, req } => {
                Answer::Detail(self.create_payload_index(call, &name, req).await?)
            }
            Op::DropPayloadIndex { name, field } => {
                Answer::Detail(self.drop_payload_index(call, &name, &field).await?)
            }
            Op::Upsert { name, req } => Answer::Upserted(self.upsert(call, &name, req).await?),
            Op::GetPoint { name, id } => Answer::Point(self.get_point(call, &name, &id).await?),
            Op::GetPoints { name, req } => Answer::Points(self.get_points(call, &name, req).await?),
            Op::DeletePoints { name, req } => {
                Answer::Deleted(self.delete_points(call, &name, req).await?)
            }
            Op::SetPayload {
                name,
                req,
                overwrite,
            } => Answer::Updated(self.set_payload(call, &name, req, overwrite).await?),
            Op::DeletePayload { name, req } => {
                Answer::Updated(self.delete_payload(call, &name, req).await?)
            }
            Op::Scroll { name, req } => Answer::Page(self.scroll(call, &name, req).await?),
            Op::Count { name, req } => Answer::Counted(self.count(call, &name, req).await?),
            Op::Search { name, req } => Answer::Results(self.search(call, &name, req).await?),
            Op::SearchBatch { name, req } => {
                Answer::Batch(self.search_batch(call, &name, req).await?)
            }
            Op::Usage => Answer::Usage(self.usage(call).await?),
        })
    }

    /// A user's usage as replicas count it: points, and bytes as a function
    /// of the data alone (rows and payload text), so that every replica of
    /// a shard decides a quota the same way whatever its files look like.
    pub fn replicated_usage(&self, user: &uuid::Uuid) -> Amount {
        self.usage_with(user, true)
    }

    /// The quota check of a replicated write, against the limits the
    /// write carries: points and bytes an upsert adds. Deterministic: it
    /// reads only applied data, and replicas apply one write at a time.
    fn check_replicated_quota(
        &self,
        caller: &Caller,
        user: &uuid::Uuid,
        op: &Op,
        limits: PlanLimits,
    ) -> Result<()> {
        let Some(c) = op
            .collection()
            .and_then(|name| self.collection(caller, name).ok())
        else {
            // Refused by the operation itself, with its own error.
            return Ok(());
        };
        let text = |m: &serde_json::Map<String, serde_json::Value>| {
            serde_json::to_string(m).map_or(0, |s| s.len()) as u64
        };
        let held = |ids: &[PointId]| {
            let none = With {
                payload: false,
                vector: false,
            };
            c.get(ids, none).map_or(0, |r| r.len()) as u64
        };
        let (new_points, bytes) = match op {
            Op::Upsert { req, .. } => {
                let ids: Vec<PointId> = req.points.iter().map(|p| p.id).collect();
                let new_points = (ids.len() as u64).saturating_sub(held(&ids));
                let payloads: u64 = req
                    .points
                    .iter()
                    .map(|p| p.payload.as_ref().map_or(0, text))
                    .sum();
                (new_points, new_points * c.row_bytes() + payloads)
            }
            // A payload change may add its text to every point it selects
            // (counted whole, as if no key were replaced).
            Op::SetPayload { req, .. } => {
                let selected = match (&req.ids, &req.filter) {
                    (Some(ids), _) => held(ids),
                    (None, Some(f)) => c
                        .count(Some(f), &vectorizer_engine::Deadline::none())
                        .unwrap_or(0) as u64,
                    (None, None) => 0,
                };
                (0, selected * text(&req.payload))
            }
            _ => return Ok(()),
        };
        let used = self.replicated_usage(user);
        for (quota, applies, current, requested, limit) in [
            (
                "vectors",
                new_points > 0,
                used.vectors,
                new_points,
                limits.max_vectors,
            ),
            ("storage", true, used.bytes, bytes, limits.max_storage_bytes),
        ] {
            if applies && current.saturating_add(requested) > limit {
                return Err(ServiceError::QuotaExceeded {
                    quota,
                    limit,
                    current,
                    requested,
                });
            }
        }
        Ok(())
    }
}
