//! The operations on collections and points, over the engine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use vectorizer_engine::collection::Collection;
use vectorizer_engine::{
    CollectionConfig, Database, EngineOptions, Filter, Limits, Point, PointId, Record,
    SearchRequest, With,
};

use crate::caller::{Caller, Permission};
use crate::error::{Result, ServiceError};
use crate::model::*;
use vectorizer_hub::HubClient;

use crate::quota::{Amount, Quotas};
use crate::usage::{Report, Reporter};

/// The longest collection name a caller may choose.
pub const MAX_NAME: usize = 64;
/// Collection metadata key holding the owning user's id.
pub const OWNER_KEY: &str = "owner_id";
/// Collection metadata key holding the Hub's id for the collection.
pub const HUB_ID_KEY: &str = "hub_collection_id";

/// Runs storage work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal(format!("a storage task failed: {e}")))?
}

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub data_dir: PathBuf,
    pub limits: Limits,
    /// Most searches in one batch request.
    pub max_batch_searches: usize,
}

impl ServiceOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServiceOptions {
            data_dir: data_dir.into(),
            limits: Limits::default(),
            max_batch_searches: 100,
        }
    }
}

pub struct Service {
    db: Database,
    options: ServiceOptions,
    /// The Hub, when it is enabled: collections are registered with it.
    hub: std::sync::OnceLock<Arc<HubClient>>,
    /// Plan quotas, when the Hub is enabled.
    quotas: std::sync::OnceLock<Arc<Quotas>>,
    /// Usage reporting, when the Hub is enabled.
    reporter: std::sync::OnceLock<Arc<Reporter>>,
}

/// Checks a caller-chosen collection name: 1 to 64 of `[A-Za-z0-9_-]`.
/// Stricter than the engine: `.` and `:` are reserved (the latter for the
/// per-user namespace).
pub fn validate_short_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "invalid_name",
            format!(
                "a collection name is 1 to {MAX_NAME} characters of letters, digits, `_` and `-`"
            ),
        ))
    }
}

fn parse_filter(v: Option<&Value>) -> Result<Option<Filter>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(Filter::from_json(v)?)),
    }
}

fn record(r: Record) -> PointRecord {
    PointRecord {
        id: r.id,
        vector: r.vector,
        payload: r.payload,
    }
}

impl Service {
    pub fn open(options: ServiceOptions) -> Result<Service> {
        let engine = EngineOptions {
            limits: options.limits,
            ..EngineOptions::default()
        };
        let db = Database::open(&options.data_dir, engine)?;
        Ok(Service {
            db,
            options,
            hub: std::sync::OnceLock::new(),
            quotas: std::sync::OnceLock::new(),
            reporter: std::sync::OnceLock::new(),
        })
    }

    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }

    /// The engine's name for the caller's collection `name`: the name
    /// itself for a local caller, `user_{user_id}:{name}` for a tenant. A
    /// short name cannot hold `:`, so no name reaches another namespace.
    /// This is the one resolution step every operation goes through.
    fn resolve(&self, caller: &Caller, name: &str) -> Result<String> {
        match (caller, validate_short_name(name)) {
            (Caller::Local, Ok(())) => Ok(name.to_owned()),
            (Caller::Tenant(t), Ok(())) => Ok(t.full_name(name)),
            // A tenant naming something that is not a short name (another
            // user's full name, say) finds nothing, as for any missing
            // collection: the answer must not tell the two apart.
            (Caller::Tenant(_), Err(_)) => Err(ServiceError::CollectionNotFound(name.to_owned())),
            (Caller::Local, Err(e)) => Err(e),
        }
    }

    /// Whether the engine collection `full` belongs to `user`.
    pub fn belongs_to(&self, full: &str, user: &uuid::Uuid) -> bool {
        self.db.collection(full).is_ok_and(|c| {
            c.metadata()
                .get(OWNER_KEY)
                .is_some_and(|o| *o == user.to_string())
        })
    }

    fn collection(&self, caller: &Caller, name: &str) -> Result<Arc<Collection>> {
        let full = self.resolve(caller, name)?;
        self.db
            .collection(&full)
            .map_err(|_| ServiceError::CollectionNotFound(name.to_owned()))
    }

    fn detail(&self, name: &str, c: &Collection) -> CollectionDetail {
        let info = c.info();
        CollectionDetail {
            name: name.to_owned(),
            dimension: info.config.dimension,
            metric: info.config.metric,
            hnsw: info.config.hnsw,
            payload_index: info.config.payload_index,
            points: info.points,
            bytes: info.disk_bytes,
            memory_bytes: info.memory_bytes,
            unindexed_points: info.unindexed,
            created_at_ms: info.created_at_ms,
        }
    }

    /// Registers tenants' collections with the Hub and enforces their
    /// plans' quotas from now on (limits cached for `quota_ttl`, kept for
    /// `grace` while the Hub is unreachable).
    pub fn attach_hub(
        &self,
        hub: Arc<HubClient>,
        quota_ttl: std::time::Duration,
        grace: std::time::Duration,
    ) {
        let _ = self
            .quotas
            .set(Arc::new(Quotas::new(hub.clone(), quota_ttl, grace)));
        let _ = self.hub.set(hub);
    }

    /// Figures for metrics: (collections, points, bytes on disk) over the
    /// whole database.
    pub fn totals(&self) -> (usize, u64, u64) {
        let all = self.db.collections();
        (
            all.len(),
            all.iter().map(|c| c.len() as u64).sum(),
            all.iter().map(|c| c.disk_bytes()).sum(),
        )
    }

    /// Each tenant's exact usage, by user id, most vectors first (for
    /// per-tenant metrics); collections with no owner are left out.
    pub fn usage_by_owner(&self) -> Vec<(String, Amount)> {
        let mut by: BTreeMap<String, Amount> = BTreeMap::new();
        for c in self.db.collections() {
            let Some(owner) = c
                .name()
                .strip_prefix("user_")
                .and_then(|rest| rest.split_once(':'))
                .map(|(id, _)| id.to_owned())
            else {
                continue;
            };
            let a = by.entry(owner).or_default();
            a.collections += 1;
            a.vectors += c.len() as u64;
            a.bytes += c.disk_bytes();
        }
        let mut all: Vec<_> = by.into_iter().collect();
        all.sort_by(|a, b| b.1.vectors.cmp(&a.1.vectors).then_with(|| a.0.cmp(&b.0)));
        all
    }

    /// Quota checks by (quota, result), with the Hub enabled.
    pub fn quota_checks(&self) -> crate::quota::CheckCounts {
        self.quotas.get().map(|q| q.checks()).unwrap_or_default()
    }

    /// Usage reports (delivered, failed, pending), with the Hub enabled.
    pub fn report_counts(&self) -> Option<(u64, u64, usize)> {
        self.reporter
            .get()
            .map(|r| (r.delivered(), r.failed(), r.pending()))
    }

    /// Reports usage to the Hub from now on.
    pub fn attach_reporter(&self, reporter: Arc<Reporter>) {
        let _ = self.reporter.set(reporter);
    }

    /// Every registered collection's figures, for a full sync.
    pub fn all_usage(&self) -> Vec<(uuid::Uuid, Report)> {
        self.db
            .collections()
            .iter()
            .filter_map(|c| Some((hub_id(c)?, figures(c))))
            .collect()
    }

    /// Queues the collection's current figures for the Hub.
    fn report(&self, c: &Collection) {
        if let (Some(r), Some(id)) = (self.reporter.get(), hub_id(c)) {
            r.record(id, figures(c));
        }
    }

    /// The caller's usage, exactly, and its plan's limits.
    pub async fn usage(self: Arc<Self>, caller: Caller) -> Result<Usage> {
        caller.require(Permission::Read)?;
        let limits = match (&caller, self.quotas.get()) {
            (Caller::Tenant(t), Some(q)) => match q.limits(&t.user_id).await {
                Ok(l) => Some(UsageLimits {
                    max_collections: l.max_collections,
                    max_vectors: l.max_vectors,
                    max_storage_bytes: l.max_storage_bytes,
                }),
                // The usage is ours to tell; the limits are the Hub's, and
                // unknown while it cannot be reached.
                Err(ServiceError::Unavailable(m)) => {
                    tracing::warn!(reason = %m, "usage answered without plan limits");
                    None
                }
                Err(e) => return Err(e),
            },
            _ => None,
        };
        let prefix = match &caller {
            Caller::Local => String::new(),
            Caller::Tenant(t) => t.prefix(),
        };
        let per_collection: Vec<CollectionUsage> = self
            .db
            .collections()
            .iter()
            .filter_map(|c| {
                Some(CollectionUsage {
                    name: c.name().strip_prefix(prefix.as_str())?.to_owned(),
                    vectors: c.len() as u64,
                    storage_bytes: c.disk_bytes(),
                })
            })
            .collect();
        Ok(Usage {
            collections: per_collection.len(),
            vectors: per_collection.iter().map(|c| c.vectors).sum(),
            storage_bytes: per_collection.iter().map(|c| c.storage_bytes).sum(),
            limits,
            per_collection,
        })
    }

    /// A user's exact usage: collections, and points and bytes on disk
    /// over them.
    pub fn usage_of(&self, user: &uuid::Uuid) -> Amount {
        let prefix = format!("user_{user}:");
        self.db
            .collections()
            .iter()
            .filter(|c| c.name().starts_with(&prefix))
            .fold(Amount::default(), |a, c| Amount {
                collections: a.collections + 1,
                vectors: a.vectors + c.len() as u64,
                bytes: a.bytes + c.disk_bytes(),
            })
    }

    /// Upserts; with the Hub enabled, a tenant's batch is first checked
    /// against its plan as a whole (new points against the vector limit, an
    /// estimate of the bytes it adds against the storage limit) and the
    /// amount reserved until the write is done.
    pub async fn upsert_checked(
        self: Arc<Self>,
        caller: Caller,
        name: String,
        req: UpsertPoints,
    ) -> Result<Upserted> {
        caller.require(Permission::Write)?;
        let (Caller::Tenant(t), Some(quotas)) = (&caller, self.quotas.get().cloned()) else {
            return blocking(move || self.upsert(&caller, &name, req)).await;
        };
        let user = t.user_id;
        let c = self.collection(&caller, &name)?;
        let limits = quotas.limits(&user).await?;
        let ids: Vec<vectorizer_engine::PointId> = req.points.iter().map(|p| p.id).collect();
        let existing = if ids.is_empty() || ids.len() > self.options.limits.max_batch {
            // The write itself refuses such a batch.
            0
        } else {
            c.get(&ids, vectorizer_engine::With::default())?.len()
        };
        let dim = c.config().dimension as u64;
        let bytes: u64 = req
            .points
            .iter()
            .map(|p| {
                8 + 17
                    + 4
                    + dim * 4
                    + 4
                    + p.payload
                        .as_ref()
                        .map_or(0, |m| serde_json::to_vec(m).map_or(0, |v| v.len() as u64))
            })
            .sum();
        let want = Amount {
            collections: 0,
            vectors: (ids.len() - existing) as u64,
            bytes,
        };
        let svc = self.clone();
        let reservation = quotas.reserve(user, limits, want, || svc.usage_of(&user))?;
        let out = blocking(move || self.upsert(&caller, &name, req)).await;
        drop(reservation);
        out
    }

    /// Creates a collection; with the Hub enabled, a tenant's collection is
    /// registered with the Hub first (which enforces the plan's collection
    /// count: its 429 is ours) and keeps the Hub's collection id.
    pub async fn create_collection_registered(
        self: Arc<Self>,
        caller: Caller,
        req: CreateCollection,
    ) -> Result<CollectionDetail> {
        caller.require(Permission::Write)?;
        validate_short_name(&req.name)?;
        let (Caller::Tenant(t), Some(hub)) = (&caller, self.hub.get().cloned()) else {
            return blocking(move || self.create_collection(&caller, req)).await;
        };
        if self.db.collection(&t.full_name(&req.name)).is_ok() {
            return Err(ServiceError::CollectionExists(req.name));
        }
        let user = t.user_id;
        // The plan's collection count, checked against our own count (the
        // Hub's registry is checked again by its create call); the
        // reservation keeps concurrent creates from passing together.
        let _reservation = match self.quotas.get().cloned() {
            Some(quotas) => {
                let limits = quotas.limits(&user).await?;
                let svc = self.clone();
                let want = Amount {
                    collections: 1,
                    ..Amount::default()
                };
                Some(quotas.reserve(user, limits, want, || svc.usage_of(&user))?)
            }
            None => None,
        };
        let project = t.project_id.unwrap_or(t.user_id);
        let made = match hub
            .create_collection(&user, &req.name, project, req.dimension as u32)
            .await
        {
            Ok(made) => made,
            Err(vectorizer_hub::HubError::QuotaExceeded(m)) => {
                // The Hub counts collections we do not hold (made through
                // another node, say): its refusal stands, with our figures.
                tracing::info!(reason = %m, "the hub refused a collection for the plan");
                let limit = match self.quotas.get() {
                    Some(q) => q.limits(&user).await.map_or(0, |l| l.max_collections),
                    None => 0,
                };
                return Err(ServiceError::QuotaExceeded {
                    quota: "collections",
                    limit,
                    current: self.usage_of(&user).collections,
                    requested: 1,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let extra = BTreeMap::from([(HUB_ID_KEY.to_owned(), made.collection_id.to_string())]);
        let svc = self.clone();
        let created = blocking(move || svc.create_with(&caller, req, extra)).await;
        if created.is_err() && made.created {
            // Undo the registration the local create could not follow.
            if let Err(e) = hub.delete_collection(&made.collection_id).await {
                tracing::warn!(error = %e, "could not withdraw a hub registration");
            }
        }
        created
    }

    /// Deletes a collection; with the Hub enabled, the deletion of a
    /// registered collection is reported to it.
    pub async fn delete_collection_registered(
        self: Arc<Self>,
        caller: Caller,
        name: String,
    ) -> Result<()> {
        let hub_id = match (&caller, self.hub.get().cloned()) {
            (Caller::Tenant(_), Some(hub)) => self
                .collection(&caller, &name)
                .ok()
                .and_then(|c| {
                    c.metadata()
                        .get(HUB_ID_KEY)
                        .and_then(|id| id.parse::<uuid::Uuid>().ok())
                })
                .map(|id| (hub, id)),
            _ => None,
        };
        let svc = self.clone();
        blocking(move || svc.delete_collection(&caller, &name)).await?;
        match (hub_id, self.reporter.get()) {
            // Durable: delivered when the Hub takes it, also after a restart.
            (Some((_, id)), Some(r)) => r.record(id, Report::Deleted),
            (Some((hub, id)), None) => {
                if let Err(e) = hub.delete_collection(&id).await {
                    tracing::warn!(error = %e, hub_collection = %id, "could not report a deletion to the hub");
                }
            }
            (None, _) => {}
        }
        Ok(())
    }

    pub fn create_collection(
        &self,
        caller: &Caller,
        req: CreateCollection,
    ) -> Result<CollectionDetail> {
        self.create_with(caller, req, BTreeMap::new())
    }

    fn create_with(
        &self,
        caller: &Caller,
        req: CreateCollection,
        extra: BTreeMap<String, String>,
    ) -> Result<CollectionDetail> {
        caller.require(Permission::Write)?;
        // Creation refuses a name that is not a short name, for anyone.
        validate_short_name(&req.name)?;
        let full = self.resolve(caller, &req.name)?;
        let mut metadata = extra;
        if let Caller::Tenant(t) = caller {
            metadata.insert(OWNER_KEY.to_owned(), t.user_id.to_string());
        }
        let config = CollectionConfig {
            dimension: req.dimension,
            metric: req.metric,
            hnsw: req.hnsw.unwrap_or_default(),
            payload_index: req.payload_index,
        };
        let c = self
            .db
            .create_collection(&full, config, metadata)
            .map_err(|e| match e {
                vectorizer_engine::EngineError::CollectionExists(_) => {
                    ServiceError::CollectionExists(req.name.clone())
                }
                e => e.into(),
            })?;
        tracing::info!(collection = %req.name, dimension = req.dimension, "collection created");
        Ok(self.detail(&req.name, &c))
    }

    /// The caller's collections, by the names the caller uses.
    pub fn list_collections(&self, caller: &Caller) -> Result<CollectionList> {
        caller.require(Permission::Read)?;
        let prefix = match caller {
            Caller::Local => String::new(),
            Caller::Tenant(t) => t.prefix(),
        };
        let collections = self
            .db
            .collections()
            .into_iter()
            .filter_map(|c| {
                let short = c.name().strip_prefix(prefix.as_str())?.to_owned();
                let info = c.info();
                Some(CollectionSummary {
                    name: short,
                    dimension: info.config.dimension,
                    metric: info.config.metric,
                    points: info.points,
                    bytes: info.disk_bytes,
                })
            })
            .collect();
        Ok(CollectionList { collections })
    }

    pub fn get_collection(&self, caller: &Caller, name: &str) -> Result<CollectionDetail> {
        caller.require(Permission::Read)?;
        let c = self.collection(caller, name)?;
        Ok(self.detail(name, &c))
    }

    /// Indexes one more payload field of a collection (idempotent).
    pub fn create_payload_index(
        &self,
        caller: &Caller,
        name: &str,
        req: CreatePayloadIndex,
    ) -> Result<CollectionDetail> {
        caller.require(Permission::Write)?;
        let c = self.collection(caller, name)?;
        c.create_payload_index(&req.field)?;
        Ok(self.detail(name, &c))
    }

    pub fn delete_collection(&self, caller: &Caller, name: &str) -> Result<()> {
        caller.require(Permission::Delete)?;
        let full = self.resolve(caller, name)?;
        self.db.drop_collection(&full).map_err(|e| match e {
            vectorizer_engine::EngineError::CollectionNotFound(_) => {
                ServiceError::CollectionNotFound(name.to_owned())
            }
            e => e.into(),
        })?;
        tracing::info!(collection = %name, "collection deleted");
        Ok(())
    }

    pub fn upsert(&self, caller: &Caller, name: &str, req: UpsertPoints) -> Result<Upserted> {
        caller.require(Permission::Write)?;
        let c = self.collection(caller, name)?;
        let points = req
            .points
            .into_iter()
            .map(|p| Point {
                id: p.id,
                vector: p.vector,
                payload: p.payload,
            })
            .collect();
        let upserted = c.upsert(points)?;
        self.report(&c);
        Ok(Upserted { upserted })
    }

    pub fn get_point(&self, caller: &Caller, name: &str, id: &str) -> Result<PointRecord> {
        caller.require(Permission::Read)?;
        let c = self.collection(caller, name)?;
        let pid = PointId::parse_str(id)?;
        c.get(
            &[pid],
            With {
                payload: true,
                vector: true,
            },
        )?
        .into_iter()
        .next()
        .map(record)
        .ok_or_else(|| ServiceError::PointNotFound(pid.to_string()))
    }

    pub fn get_points(&self, caller: &Caller, name: &str, req: GetPoints) -> Result<Points> {
        caller.require(Permission::Read)?;
        let c = self.collection(caller, name)?;
        let with = With {
            payload: req.with_payload,
            vector: req.with_vector,
        };
        Ok(Points {
            points: c.get(&req.ids, with)?.into_iter().map(record).collect(),
        })
    }

    pub fn delete_points(&self, caller: &Caller, name: &str, req: DeletePoints) -> Result<Deleted> {
        caller.require(Permission::Delete)?;
        let c = self.collection(caller, name)?;
        let deleted = c.delete(req.ids)?;
        self.report(&c);
        Ok(Deleted { deleted })
    }

    pub fn scroll(&self, caller: &Caller, name: &str, req: Scroll) -> Result<ScrollPage> {
        caller.require(Permission::Read)?;
        let c = self.collection(caller, name)?;
        let filter = parse_filter(req.filter.as_ref())?;
        let with = With {
            payload: req.with_payload,
            vector: req.with_vector,
        };
        let (points, next_cursor) = c.scroll(req.limit, req.cursor, filter.as_ref(), with)?;
        Ok(ScrollPage {
            points: points.into_iter().map(record).collect(),
            next_cursor,
        })
    }

    pub fn count(&self, caller: &Caller, name: &str, req: Count) -> Result<Counted> {
        caller.require(Permission::Read)?;
        let c = self.collection(caller, name)?;
        let filter = parse_filter(req.filter.as_ref())?;
        Ok(Counted {
            count: c.count(filter.as_ref()),
        })
    }

    fn search_request(req: Search) -> Result<SearchRequest> {
        Ok(SearchRequest {
            filter: parse_filter(req.filter.as_ref())?,
            vector: req.vector,
            limit: req.limit,
            ef: req.ef,
            score_threshold: req.score_threshold,
            with_payload: req.with_payload,
            with_vector: req.with_vector,
        })
    }

    fn results(hits: Vec<vectorizer_engine::ScoredPoint>) -> SearchResults {
        SearchResults {
            results: hits
                .into_iter()
                .map(|h| Hit {
                    id: h.id,
                    score: h.score,
                    payload: h.payload,
                    vector: h.vector,
                })
                .collect(),
        }
    }

    pub fn search(&self, caller: &Caller, name: &str, req: Search) -> Result<SearchResults> {
        caller.require(Permission::Read)?;
        let c = self.collection(caller, name)?;
        Ok(Self::results(c.search(&Self::search_request(req)?)?))
    }

    /// [`search`](Self::search) from async code: a quick graph walk runs in
    /// place, since handing it to the blocking pool costs two thread
    /// switches, a large share of its time; anything longer (filters, wide
    /// beams, a backlog to scan) runs on the blocking pool so that it never
    /// holds up the runtime.
    pub async fn search_async(
        self: Arc<Self>,
        caller: Caller,
        name: String,
        req: Search,
    ) -> Result<SearchResults> {
        caller.require(Permission::Read)?;
        let c = self.collection(&caller, &name)?;
        let req = Self::search_request(req)?;
        if c.search_is_quick(&req) {
            return Ok(Self::results(c.search(&req)?));
        }
        blocking(move || Ok(Self::results(c.search(&req)?))).await
    }

    pub fn search_batch(
        &self,
        caller: &Caller,
        name: &str,
        req: SearchBatch,
    ) -> Result<SearchBatchResults> {
        caller.require(Permission::Read)?;
        let max = self.options.max_batch_searches;
        if req.searches.is_empty() || req.searches.len() > max {
            return Err(ServiceError::unprocessable(
                "invalid_request",
                format!("a batch holds 1 to {max} searches"),
            ));
        }
        let c = self.collection(caller, name)?;
        let reqs = req
            .searches
            .into_iter()
            .map(Self::search_request)
            .collect::<Result<Vec<_>>>()?;
        let results = c.search_batch(&reqs)?;
        Ok(SearchBatchResults {
            results: results.into_iter().map(Self::results).collect(),
        })
    }

    /// Liveness and readiness: storage must accept a durable write.
    pub fn health(&self) -> Health {
        let probe = self.db.root().join(".health");
        let ok = std::fs::write(&probe, b"ok")
            .and_then(|_| std::fs::remove_file(&probe))
            .is_ok();
        Health {
            status: if ok { "ok" } else { "unavailable" }.into(),
            storage: if ok { "ok" } else { "not writable" }.into(),
            collections: self.db.collections().len(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// Snapshots every collection (for shutdown).
    pub fn flush(&self) -> Result<()> {
        Ok(self.db.flush()?)
    }
}

fn hub_id(c: &Collection) -> Option<uuid::Uuid> {
    c.metadata().get(HUB_ID_KEY)?.parse().ok()
}

fn figures(c: &Collection) -> Report {
    Report::Usage {
        vector_count: c.len() as u64,
        storage_bytes: c.disk_bytes(),
    }
}
