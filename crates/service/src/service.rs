//! The service: collections over the engine, with tenancy, quotas, usage
//! reports and fair share. Every operation has one entry point, an async
//! function taking the [`Caller`]; it checks the permission, admits the
//! request into the caller's share, and runs storage work on a blocking
//! thread of that share. Point operations are in `points.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vectorizer_engine::collection::Collection;
use vectorizer_engine::{Database, EngineOptions, Limits};
use vectorizer_hub::HubClient;

use crate::caller::{Caller, Permission};
use crate::cluster::Op;
use crate::error::{Result, ServiceError};
use crate::model::*;
use crate::quota::{Amount, Quotas};
use crate::share::{FairShare, ShareOptions, Ticket};

/// A request admitted into its caller's share: whom it acts for, and its
/// slot. Every operation takes one, so none runs outside a share.
pub struct Call {
    pub(crate) caller: Caller,
    pub(crate) ticket: Ticket,
}

impl Call {
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The caller and the slot, once the caller is found to hold `p`.
    pub(crate) fn enter(&self, p: Permission) -> Result<(&Caller, &Ticket)> {
        self.caller.require(p)?;
        Ok((&self.caller, &self.ticket))
    }

    /// Runs `f` on one of the caller's worker threads: for adapters'
    /// own heavy work (parsing a large body, serializing a large answer),
    /// so that it counts against the caller's share like storage work.
    pub async fn run_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        self.ticket.run(move |_| Ok(f())).await
    }
}
use crate::usage::{Report, Reporter};

/// In cluster mode, runs `$op` where the caller's home shard is led and
/// returns its answer (taken out by `Answer::$take`) from the enclosing
/// operation. Placed right after the permission check of each entry point.
macro_rules! routed {
    ($self:ident, $caller:expr, $op:expr, $take:ident) => {
        if let Some(cl) = $self.cluster() {
            return cl.run($caller, $op).await?.$take();
        }
    };
}
pub(crate) use routed;

/// Refuses, in cluster mode, an operation that runs on one node only.
pub(crate) fn unclustered(service: &Service, what: &str) -> Result<()> {
    match service.cluster() {
        None => Ok(()),
        Some(_) => Err(ServiceError::invalid(
            "unavailable_in_cluster_mode",
            format!("{what} are not available in cluster mode yet"),
        )),
    }
}

/// The longest collection name a caller may choose.
pub const MAX_NAME: usize = 64;
/// Collection metadata key holding the owning user's id.
pub const OWNER_KEY: &str = "owner_id";
/// Collection metadata key holding the Hub's id for the collection.
pub const HUB_ID_KEY: &str = "hub_collection_id";
/// Collection metadata key holding the project the Hub registered it under.
pub const PROJECT_KEY: &str = "hub_project_id";

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub data_dir: PathBuf,
    pub limits: Limits,
    /// Most searches in one batch request.
    pub max_batch_searches: usize,
    /// Each tenant's share of requests in flight and of worker threads.
    pub share: ShareOptions,
    /// Backups: retention and the caps on uploads.
    pub backups: crate::backup::BackupOptions,
    /// Most collections open at once (the engine's default if unset).
    pub max_open_collections: Option<usize>,
    /// Memory the open collections may hold (the engine's default, half
    /// the machine's memory, if unset).
    pub memory_budget_bytes: Option<u64>,
    /// The recall target of a collection created without one (`None`: no
    /// target).
    pub default_target_recall: Option<f64>,
    /// Share of one core recall tuning may use (0: none).
    pub tuning_cpu_share: f64,
}

impl ServiceOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServiceOptions {
            data_dir: data_dir.into(),
            limits: Limits::default(),
            max_batch_searches: 100,
            share: ShareOptions::default(),
            backups: crate::backup::BackupOptions::default(),
            max_open_collections: None,
            memory_budget_bytes: None,
            default_target_recall: Some(vectorizer_engine::config::DEFAULT_TARGET_RECALL),
            tuning_cpu_share: EngineOptions::default().tuning_cpu_share,
        }
    }
}

pub struct Service {
    pub(crate) db: Database,
    pub(crate) options: ServiceOptions,
    pub(crate) share: Arc<FairShare>,
    /// The Hub, when it is enabled: collections are registered with it.
    pub(crate) hub: std::sync::OnceLock<Arc<HubClient>>,
    /// Plan quotas, when the Hub is enabled.
    pub(crate) quotas: std::sync::OnceLock<Arc<Quotas>>,
    /// Usage reporting, when the Hub is enabled.
    pub(crate) reporter: std::sync::OnceLock<Arc<Reporter>>,
    /// Whether storage accepted a durable write at the last probe.
    storage_ok: AtomicBool,
    /// Creates and deletes of one name, one at a time.
    pub(crate) names: Names,
    /// Second names of collections.
    pub(crate) aliases: crate::aliases::Aliases,
    pub(crate) backup_stats: crate::backup::BackupStats,
    pub(crate) writers: crate::backup::Writers,
    /// In cluster mode, where operations run.
    pub(crate) cluster: std::sync::OnceLock<Arc<dyn crate::cluster::ClusterRouter>>,
}

/// One async lock per collection name being created or deleted, so that a
/// name's Hub registration and its deletion report never interleave (two
/// creates of one name, or a delete and a create). Entries live only while
/// someone holds or waits for them.
#[derive(Default)]
pub(crate) struct Names(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// Holds a name; frees its entry when the last holder is done.
pub(crate) struct NameGuard<'a> {
    names: &'a Names,
    name: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Names {
    pub(crate) async fn lock(&self, name: &str) -> NameGuard<'_> {
        let lock = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone();
        let held = lock.clone().lock_owned().await;
        NameGuard {
            names: self,
            name: name.to_owned(),
            lock,
            _held: held,
        }
    }
}

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        let mut m = self.names.0.lock().unwrap_or_else(|e| e.into_inner());
        // The map's, this guard's and the held guard's: nobody else waits.
        if Arc::strong_count(&self.lock) <= 3 {
            m.remove(&self.name);
        }
    }
}

/// A collection cannot take an alias's name.
pub(crate) fn alias_exists(name: &str) -> ServiceError {
    ServiceError::conflict(
        "alias_exists",
        format!(
            "`{name}` is an alias: a collection cannot take its name (delete the alias, or choose another name)"
        ),
    )
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

impl Service {
    /// Opens the data directory (the engine's error as it is: a boot
    /// failure is told to an operator, not mapped for a tenant).
    pub fn open(
        options: ServiceOptions,
    ) -> std::result::Result<Service, vectorizer_engine::EngineError> {
        let share = FairShare::new(options.share);
        let defaults = EngineOptions::default();
        let engine = EngineOptions {
            limits: options.limits,
            max_open_collections: options
                .max_open_collections
                .unwrap_or(defaults.max_open_collections),
            memory_budget_bytes: options
                .memory_budget_bytes
                .unwrap_or(defaults.memory_budget_bytes),
            linker: Some(vectorizer_engine::collection::LinkerHandle(Arc::new(
                crate::share::ShareLinker(Arc::downgrade(&share)),
            ))),
            tuning_cpu_share: options.tuning_cpu_share,
            ..defaults
        };
        let db = Database::open(&options.data_dir, engine)?;
        let aliases = crate::aliases::Aliases::open(&options.data_dir).map_err(|e| {
            vectorizer_engine::EngineError::Corrupt(format!("reading aliases.json: {e}"))
        })?;
        aliases.prune(|c| db.exists(c)).map_err(|e| {
            vectorizer_engine::EngineError::Corrupt(format!("writing aliases.json: {e}"))
        })?;
        // What an interrupted backup, upload or restore left behind.
        let backup_bytes = crate::backup::store::clean(&options.data_dir).map_err(|e| {
            vectorizer_engine::EngineError::Corrupt(format!("cleaning backups: {e}"))
        })?;
        let service = Service {
            db,
            share,
            options,
            hub: std::sync::OnceLock::new(),
            quotas: std::sync::OnceLock::new(),
            reporter: std::sync::OnceLock::new(),
            storage_ok: AtomicBool::new(true),
            names: Names::default(),
            aliases,
            backup_stats: crate::backup::BackupStats::default(),
            writers: crate::backup::Writers::default(),
            cluster: std::sync::OnceLock::new(),
        };
        service.backup_stats.set_bytes(backup_bytes);
        service.probe_storage();
        Ok(service)
    }

    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }

    /// Admits a request of `caller` into its share of the server: the
    /// [`Call`] every operation takes. Refused (429) when the caller has
    /// its share of requests in flight already. Adapters admit before they
    /// read a request's body, so a refused request costs no parsing.
    pub fn admit(&self, caller: Caller) -> Result<Call> {
        let ticket = self.share.admit(&caller)?;
        Ok(Call { caller, ticket })
    }

    /// The engine's name for the caller's collection `name`: the name
    /// itself for a local caller, `user_{user_id}:{name}` for a tenant. A
    /// short name cannot hold `:`, so no name reaches another namespace.
    /// This is the one resolution step every operation goes through.
    pub(crate) fn resolve(&self, caller: &Caller, name: &str) -> Result<String> {
        match (caller, validate_short_name(name)) {
            (Caller::Local | Caller::LocalReader, Ok(())) => Ok(name.to_owned()),
            (Caller::Tenant(t), Ok(())) => Ok(t.full_name(name)),
            // A tenant naming something that is not a short name (another
            // user's full name, say) finds nothing, as for any missing
            // collection: the answer must not tell the two apart.
            (Caller::Tenant(_), Err(_)) => Err(ServiceError::CollectionNotFound(name.to_owned())),
            (Caller::Local | Caller::LocalReader, Err(e)) => Err(e),
        }
    }

    /// Whether the engine collection `full` belongs to `user`.
    pub fn belongs_to(&self, full: &str, user: &uuid::Uuid) -> bool {
        self.db.listing(full).is_ok_and(|l| {
            l.metadata
                .get(OWNER_KEY)
                .is_some_and(|o| *o == user.to_string())
        })
    }

    /// The engine name of the caller's collection `name`, or of the one
    /// its alias `name` points at (catalog lookups: opens nothing).
    pub(crate) fn full_name(&self, caller: &Caller, name: &str) -> Result<String> {
        let full = self.resolve(caller, name)?;
        if self.db.exists(&full) {
            return Ok(full);
        }
        self.aliases
            .target(&full)
            .filter(|t| self.db.exists(t))
            .ok_or_else(|| ServiceError::CollectionNotFound(name.to_owned()))
    }

    /// [`collection`](Self::collection) on a worker of the caller's share
    /// when it must be opened (reading its files is storage work).
    pub(crate) async fn open_collection(
        self: &Arc<Self>,
        ticket: &Ticket,
        caller: &Caller,
        name: &str,
    ) -> Result<Arc<Collection>> {
        // Open already: no catalog read. (A name is a collection's or an
        // alias's, never both.)
        if let Some(c) = self.db.open_now(&self.resolve(caller, name)?) {
            return Ok(c);
        }
        let full = self.full_name(caller, name)?;
        if let Some(c) = self.db.open_now(&full) {
            return Ok(c);
        }
        let svc = self.clone();
        let name = name.to_owned();
        ticket.run(move |_| svc.open_full(&full, &name)).await
    }

    /// The caller's collection `name`, or the one its alias `name` points
    /// at, opened if it is not open.
    pub(crate) fn collection(&self, caller: &Caller, name: &str) -> Result<Arc<Collection>> {
        let full = self.full_name(caller, name)?;
        self.open_full(&full, name)
    }

    /// The engine collection `full` (the caller's `name`), opened if it is
    /// not open.
    fn open_full(&self, full: &str, name: &str) -> Result<Arc<Collection>> {
        self.db.collection(full).map_err(|e| match e {
            vectorizer_engine::EngineError::CollectionNotFound(_) => {
                ServiceError::CollectionNotFound(name.to_owned())
            }
            e => e.into(),
        })
    }

    fn detail(name: &str, c: &Collection) -> CollectionDetail {
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
            loaded: true,
            target_recall: info.config.target_recall,
            recall: info.recall.map(|r| Box::new(r.into())),
            quantization: info.config.quantization,
        }
    }

    /// A collection's detail from its listing (opens nothing).
    fn detail_listed(name: &str, l: &vectorizer_engine::Listing) -> CollectionDetail {
        CollectionDetail {
            name: name.to_owned(),
            dimension: l.config.dimension,
            metric: l.config.metric,
            hnsw: l.config.hnsw,
            payload_index: l.config.payload_index.clone(),
            points: l.stats.points,
            bytes: l.stats.disk_bytes,
            memory_bytes: l.memory_bytes,
            unindexed_points: l.unindexed,
            created_at_ms: l.created_at_ms,
            loaded: l.loaded,
            target_recall: l.config.target_recall,
            recall: l.recall.clone().map(|r| Box::new(r.into())),
            quantization: l.config.quantization,
        }
    }

    /// Registers tenants' collections with the Hub and enforces their
    /// plans' quotas from now on (limits cached for `quota_ttl`, kept for
    /// `grace` while the Hub is unreachable).
    pub fn attach_hub(&self, hub: Arc<HubClient>, quota_ttl: Duration, grace: Duration) {
        let _ = self
            .quotas
            .set(Arc::new(Quotas::new(hub.clone(), quota_ttl, grace)));
        let _ = self.hub.set(hub);
    }

    /// Reports usage to the Hub from now on: a full sync every `interval`
    /// (and at once), changes shortly after they happen, and collections
    /// the Hub lost registered again.
    pub fn attach_reporter(self: &Arc<Self>, reporter: Arc<Reporter>, interval: Duration) {
        if self.reporter.set(reporter.clone()).is_err() {
            return;
        }
        let service = Arc::downgrade(self);
        reporter.spawn(interval, move || {
            service.upgrade().map(|s| s.all_usage()).unwrap_or_default()
        });
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                reporter.drifted().await;
                let Some(s) = service.upgrade() else { return };
                for id in reporter.take_drifted() {
                    s.reregister(id).await;
                }
            }
        });
    }

    /// Figures for metrics: (collections, points, bytes on disk) over the
    /// whole database. Reads counters only.
    pub fn totals(&self) -> (usize, u64, u64) {
        let all = self.db.usage_all().unwrap_or_default();
        (
            all.iter().map(|(_, u)| u.collections as usize).sum(),
            all.iter().map(|(_, u)| u.points).sum(),
            all.iter().map(|(_, u)| u.disk_bytes).sum(),
        )
    }

    /// Open collections, opens, evictions and the linking queue (metrics).
    pub fn residency(&self) -> vectorizer_engine::Residency {
        self.db.residency()
    }

    /// The open collections' last recall measurements, by full name.
    pub fn recall_reports(&self) -> Vec<(String, vectorizer_engine::RecallReport)> {
        self.db.recall_reports()
    }

    /// Each tenant's exact usage, by user id, most vectors first (for
    /// per-tenant metrics); collections with no owner are left out.
    pub fn usage_by_owner(&self) -> Vec<(String, Amount)> {
        let mut all: Vec<(String, Amount)> = self
            .db
            .usage_all()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(ns, u)| {
                let owner = crate::caller::owner_of_namespace(&ns)?;
                Some((
                    owner.to_string(),
                    Amount {
                        collections: u.collections,
                        vectors: u.points,
                        bytes: u.disk_bytes,
                    },
                ))
            })
            .collect();
        all.sort_by(|a, b| b.1.vectors.cmp(&a.1.vectors).then_with(|| a.0.cmp(&b.0)));
        all
    }

    /// Collections with no owner (from a single-tenant deployment): with
    /// the Hub on, no tenant reaches them until a migration assigns them.
    pub fn unowned_collections(&self) -> usize {
        crate::migrate::count_unowned(&self.db)
    }

    /// Quota checks by (quota, result), with the Hub enabled.
    pub fn quota_checks(&self) -> crate::quota::CheckCounts {
        self.quotas.get().map(|q| q.checks()).unwrap_or_default()
    }

    /// Usage reports (delivered, failed, pending, drift), with the Hub enabled.
    pub fn report_counts(&self) -> Option<crate::usage::ReportCounts> {
        self.reporter.get().map(|r| r.counts())
    }

    /// Every registered collection's figures, for a full sync.
    pub fn all_usage(&self) -> Vec<(uuid::Uuid, Report)> {
        self.db
            .list("")
            .unwrap_or_default()
            .iter()
            .filter_map(|l| Some((listed_hub_id(l)?, listed_figures(l))))
            .collect()
    }

    /// Queues the collection's current figures for the Hub.
    pub(crate) fn report(&self, c: &Collection) {
        if let (Some(r), Some(id)) = (self.reporter.get(), hub_id(c)) {
            r.record(id, figures(c));
        }
    }

    /// The caller's plan limits as the Hub gives them (cached), if the
    /// Hub is on and they are known.
    pub async fn plan_limits(&self, caller: &Caller) -> Result<Option<crate::quota::PlanLimits>> {
        match (caller, self.quotas.get()) {
            (Caller::Tenant(t), Some(q)) => q.limits(&t.user_id).await.map(Some),
            _ => Ok(None),
        }
    }

    async fn limits_of(&self, caller: &Caller) -> Option<UsageLimits> {
        self.plan_limits(caller)
            .await
            .ok()
            .flatten()
            .map(|l| UsageLimits {
                max_collections: l.max_collections,
                max_vectors: l.max_vectors,
                max_storage_bytes: l.max_storage_bytes,
            })
    }

    /// The caller's usage, exactly, and its plan's limits.
    pub async fn usage(self: &Arc<Self>, call: &Call) -> Result<Usage> {
        let (caller, _ticket) = call.enter(Permission::Read)?;
        if let Some(cl) = self.cluster() {
            let mut u = cl.run(caller, Op::Usage).await?.usage()?;
            u.limits = self.limits_of(caller).await;
            return Ok(u);
        }
        let limits = match (caller, self.quotas.get()) {
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
        let (svc, who) = (self.clone(), caller.clone());
        let per_collection: Vec<CollectionUsage> = _ticket
            .run(move |_| {
                Ok(svc
                    .owned(&who)
                    .into_iter()
                    .map(|(short, l)| CollectionUsage {
                        name: short,
                        vectors: l.stats.points,
                        storage_bytes: l.stats.disk_bytes,
                    })
                    .collect())
            })
            .await?;
        Ok(Usage {
            collections: per_collection.len(),
            vectors: per_collection.iter().map(|c| c.vectors).sum(),
            storage_bytes: per_collection.iter().map(|c| c.storage_bytes).sum(),
            limits,
            per_collection,
        })
    }

    /// The caller's collections, with the names the caller uses, from the
    /// catalog (opens nothing; reads only the caller's own entries for a
    /// tenant).
    pub(crate) fn owned(&self, caller: &Caller) -> Vec<(String, vectorizer_engine::Listing)> {
        match caller {
            // The local namespace is the names a local caller can address:
            // users' namespaces (left by a run with the Hub on) are not in
            // it, so no listing, usage or backup shows a name that no
            // route, restore or alias could take.
            Caller::Local | Caller::LocalReader => self
                .db
                .list("")
                .unwrap_or_default()
                .into_iter()
                .filter(|l| validate_short_name(&l.name).is_ok())
                .map(|l| (l.name.clone(), l))
                .collect(),
            Caller::Tenant(t) => {
                let prefix = t.prefix();
                self.db
                    .list(&prefix)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|l| Some((l.name.strip_prefix(prefix.as_str())?.to_owned(), l)))
                    .collect()
            }
        }
    }

    /// Collections outside the local namespace: those in users'
    /// namespaces, and any whose name is not a short name. With the Hub
    /// off they are kept as they are, and not served.
    pub fn outside_local_namespace(&self) -> usize {
        self.db
            .list("")
            .unwrap_or_default()
            .iter()
            .filter(|l| validate_short_name(&l.name).is_err())
            .count()
    }

    /// A user's usage as quotas count it: collections, points, and bytes
    /// on disk plus the snapshot rows its writes owe (counters only: no
    /// lock of any collection is taken).
    pub fn usage_of(&self, user: &uuid::Uuid) -> Amount {
        self.usage_with(user, false)
    }

    /// A user's collections and points, and bytes: committed bytes (see
    /// [`usage_of`](Self::usage_of)), or with `logical` the bytes as a
    /// function of the points alone. One catalog lookup: kept up to date
    /// by every change, never summed per request.
    pub(crate) fn usage_with(&self, user: &uuid::Uuid, logical: bool) -> Amount {
        let u = self
            .db
            .usage(&crate::caller::user_namespace(user))
            .unwrap_or_default();
        Amount {
            collections: u.collections,
            vectors: u.points,
            bytes: if logical {
                u.logical_bytes
            } else {
                u.committed_bytes
            },
        }
    }

    /// Creates a collection. The request is validated whole before anyone
    /// is asked; with the Hub enabled, a tenant's collection is checked
    /// against the plan's collection count and registered with the Hub
    /// (keeping its id: see [`provision`](Self::provision)). Creates and
    /// deletes of one name run one at a time (see [`Names`]).
    pub async fn create_collection(
        self: &Arc<Self>,
        call: &Call,
        req: CreateCollection,
    ) -> Result<CollectionDetail> {
        self.create_collection_with(call, req, BTreeMap::new())
            .await
    }

    /// [`create_collection`](Self::create_collection), with `extra`
    /// metadata written with the collection (a shard replica applying a
    /// create records the Hub's ids in the same durable step).
    pub(crate) async fn create_collection_with(
        self: &Arc<Self>,
        call: &Call,
        req: CreateCollection,
        extra: BTreeMap<String, String>,
    ) -> Result<CollectionDetail> {
        let (caller, ticket) = call.enter(Permission::Write)?;
        // The default is settled where the request arrives, so that every
        // replica of a cluster creates the same collection.
        let mut req = req;
        req.target_recall
            .get_or_insert(self.options.default_target_recall);
        crate::service::routed!(self, caller, Op::CreateCollection { req }, detail);
        validate_short_name(&req.name)?;
        let config = req.config();
        config.validate()?;
        let full = self.resolve(caller, &req.name)?;
        let _name = self.names.lock(&full).await;
        if self.aliases.is_alias(&full) {
            return Err(alias_exists(&req.name));
        }
        let (metadata, registered, _reservation) = match caller {
            Caller::Tenant(t) => {
                if self.db.exists(&full) {
                    return Err(ServiceError::CollectionExists(req.name));
                }
                let reservation = self.reserve_collection(&t.user_id).await?;
                let (metadata, registered) = self.provision(t, &req.name, config.dimension).await?;
                (metadata, registered, reservation)
            }
            Caller::Local | Caller::LocalReader => (BTreeMap::new(), None, None),
        };
        let mut metadata = metadata;
        metadata.extend(extra);
        let db = self.clone();
        let name = req.name.clone();
        let created = ticket
            .run(move |_| {
                let c = db
                    .db
                    .create_collection(&full, config, metadata)
                    .map_err(|e| match e {
                        vectorizer_engine::EngineError::CollectionExists(_) => {
                            ServiceError::CollectionExists(name.clone())
                        }
                        e => e.into(),
                    })?;
                Ok(Self::detail(&name, &c))
            })
            .await;
        if let (Some(r), Err(_)) = (registered, &created) {
            r.withdraw().await;
        }
        if created.is_ok() {
            tracing::info!(collection = %req.name, dimension = req.dimension, "collection created");
        }
        created
    }

    /// The metadata of the tenant's new collection `short`, registered
    /// with the Hub when it is enabled. If the Hub hands back an id whose
    /// deletion is still owed to it (the name was deleted and created again
    /// before the deletion was delivered), the deletion is delivered first
    /// and the collection registered anew, so the Hub sees the two in order.
    pub(crate) async fn provision(
        &self,
        t: &crate::caller::Tenant,
        short: &str,
        dimension: usize,
    ) -> Result<(BTreeMap<String, String>, Option<Registration>)> {
        let mut metadata = BTreeMap::from([(OWNER_KEY.to_owned(), t.user_id.to_string())]);
        let Some(hub) = self.hub.get().cloned() else {
            return Ok((metadata, None));
        };
        let project = t.project_id.unwrap_or(t.user_id);
        let mut made = self
            .register(&hub, &t.user_id, short, project, dimension)
            .await?;
        if let Some(r) = self.reporter.get()
            && !made.created
            && r.owes_deletion(&made.collection_id)
        {
            r.deliver_deletion(&made.collection_id).await?;
            made = self
                .register(&hub, &t.user_id, short, project, dimension)
                .await?;
        }
        metadata.insert(HUB_ID_KEY.to_owned(), made.collection_id.to_string());
        metadata.insert(PROJECT_KEY.to_owned(), project.to_string());
        Ok((metadata, Some(Registration { hub, made })))
    }

    /// The plan's collection count, checked against our own count (the
    /// Hub's registry is checked again by its create call); the
    /// reservation keeps concurrent creates from passing together.
    pub(crate) async fn reserve_collection(
        self: &Arc<Self>,
        user: &uuid::Uuid,
    ) -> Result<Option<crate::quota::Reservation>> {
        let Some(quotas) = self.quotas.get().cloned() else {
            return Ok(None);
        };
        let limits = quotas.limits(user).await?;
        let want = Amount {
            collections: 1,
            ..Amount::default()
        };
        Ok(Some(
            quotas.reserve(*user, limits, want, || self.usage_of(user))?,
        ))
    }

    /// Registers a collection with the Hub; its quota refusal is ours, with
    /// our figures.
    async fn register(
        &self,
        hub: &HubClient,
        user: &uuid::Uuid,
        name: &str,
        project: uuid::Uuid,
        dimension: usize,
    ) -> Result<vectorizer_hub::sdk::CreateCollectionResponse> {
        match hub
            .create_collection(user, name, project, dimension as u32)
            .await
        {
            Ok(made) => Ok(made),
            Err(vectorizer_hub::HubError::QuotaExceeded(m)) => {
                // The Hub counts collections we do not hold (made through
                // another node, say): its refusal stands, with our figures.
                tracing::info!(reason = %m, "the hub refused a collection for the plan");
                let limit = match self.quotas.get() {
                    Some(q) => q.limits(user).await.map_or(0, |l| l.max_collections),
                    None => 0,
                };
                Err(ServiceError::QuotaExceeded {
                    quota: "collections",
                    limit,
                    current: self.usage_of(user).collections,
                    requested: 1,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Registers again a collection the Hub answered 404 for (it lost or
    /// dropped it while it lives here), and reports its figures under the
    /// new id. A collection gone here too is left alone.
    async fn reregister(self: &Arc<Self>, lost: uuid::Uuid) {
        let (Some(hub), Some(reporter)) = (self.hub.get(), self.reporter.get()) else {
            return;
        };
        let svc = self.clone();
        let found = tokio::task::spawn_blocking(move || {
            svc.db
                .list("")
                .unwrap_or_default()
                .into_iter()
                .find(|l| listed_hub_id(l) == Some(lost))
        })
        .await
        .ok()
        .flatten();
        let Some(found) = found else {
            // Gone here too: nothing left to register, or to retry.
            reporter.registered_again(&lost);
            return;
        };
        // As a create or delete of the name would: one at a time, and the
        // collection must still be there once the name is held.
        let _name = self.names.lock(&found.name).await;
        let svc = self.clone();
        let name = found.name.clone();
        let Ok(Ok(c)) = tokio::task::spawn_blocking(move || svc.db.collection(&name)).await else {
            return;
        };
        if hub_id(&c) != Some(lost) {
            return;
        }
        let meta = c.metadata();
        let Some(user) = meta.get(OWNER_KEY).and_then(|u| u.parse().ok()) else {
            return;
        };
        let short = crate::caller::short_name(c.name()).to_owned();
        let project = meta
            .get(PROJECT_KEY)
            .and_then(|p| p.parse().ok())
            .unwrap_or(user);
        let made = match hub
            .create_collection(&user, &short, project, c.config().dimension as u32)
            .await
        {
            Ok(made) => made,
            Err(e) => {
                if reporter.mark_drifted(lost, &e.to_string()) {
                    tracing::warn!(error = %e, collection = %short, "could not register a collection the hub lost; retried with backoff, and said again only if the reason changes");
                } else {
                    tracing::debug!(error = %e, collection = %short, "could not register a collection the hub lost, again");
                }
                return;
            }
        };
        let mut meta = meta;
        meta.insert(HUB_ID_KEY.to_owned(), made.collection_id.to_string());
        let coll = c.clone();
        let saved = tokio::task::spawn_blocking(move || coll.set_metadata(meta)).await;
        match saved {
            Ok(Ok(())) => {
                reporter.registered_again(&lost);
                tracing::info!(collection = %short, hub_collection = %made.collection_id, "registered again with the hub");
                reporter.record(made.collection_id, figures(&c));
            }
            _ => {
                if reporter.mark_drifted(lost, "recording the new hub id") {
                    tracing::warn!(collection = %short, "could not record a new hub id; retried with backoff");
                }
            }
        }
    }

    /// Deletes a collection; with the Hub enabled, the deletion of a
    /// registered collection is owed to the Hub (durably) until delivered.
    pub async fn delete_collection(self: &Arc<Self>, call: &Call, name: &str) -> Result<()> {
        let (caller, ticket) = call.enter(Permission::Delete)?;
        crate::service::routed!(
            self,
            caller,
            Op::DeleteCollection { name: name.into() },
            done
        );
        let full = self.resolve(caller, name)?;
        let _name = self.names.lock(&full).await;
        if !self.db.exists(&full)
            && let Some(target) = self.aliases.target(&full)
        {
            return Err(ServiceError::conflict(
                "is_alias",
                format!(
                    "`{name}` is an alias of `{}`, not a collection: remove the alias with POST /aliases {{\"actions\": [{{\"delete_alias\": {{\"alias\": \"{name}\"}}}}]}}, or delete `{}` itself",
                    crate::caller::short_name(&target),
                    crate::caller::short_name(&target)
                ),
            ));
        }
        let hub_id = self.db.listing(&full).ok().and_then(|l| listed_hub_id(&l));
        let svc = self.clone();
        let short = name.to_owned();
        ticket
            .run(move |_| {
                svc.db.drop_collection(&full).map_err(|e| match e {
                    vectorizer_engine::EngineError::CollectionNotFound(_) => {
                        ServiceError::CollectionNotFound(short)
                    }
                    e => e.into(),
                })?;
                // Its aliases go with it.
                if let Err(e) = svc.aliases.forget(&full) {
                    tracing::error!(error = %e, "could not drop a deleted collection's aliases");
                }
                // Durable before the deletion is acknowledged: delivered when
                // the Hub takes it, also after a restart.
                if let (Some(id), Some(r)) = (hub_id, svc.reporter.get()) {
                    r.record(id, Report::Deleted);
                }
                Ok(())
            })
            .await?;
        tracing::info!(collection = %name, "collection deleted");
        if let (Some(id), None, Some(hub)) = (hub_id, self.reporter.get(), self.hub.get())
            && let Err(e) = hub.delete_collection(&id).await
        {
            tracing::warn!(error = %e, hub_collection = %id, "could not report a deletion to the hub");
        }
        Ok(())
    }

    /// The caller's collections, by the names the caller uses.
    pub async fn list_collections(self: &Arc<Self>, call: &Call) -> Result<CollectionList> {
        let (caller, ticket) = call.enter(Permission::Read)?;
        crate::service::routed!(self, caller, Op::ListCollections, list);
        let (svc, who) = (self.clone(), caller.clone());
        ticket
            .run(move |_| {
                // Read from the catalog on the caller's worker.
                let owned = svc.owned(&who);
                let collections = owned
                    .into_iter()
                    .map(|(short, l)| CollectionSummary {
                        name: short,
                        dimension: l.config.dimension,
                        metric: l.config.metric,
                        points: l.stats.points,
                        bytes: l.stats.disk_bytes,
                    })
                    .collect();
                Ok(CollectionList { collections })
            })
            .await
    }

    pub async fn get_collection(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
    ) -> Result<CollectionDetail> {
        let (caller, ticket) = call.enter(Permission::Read)?;
        crate::service::routed!(
            self,
            caller,
            Op::GetCollection { name: name.into() },
            detail
        );
        let full = self.full_name(caller, name)?;
        // Through an alias, the collection's own name.
        let name = crate::caller::short_name(&full).to_owned();
        let svc = self.clone();
        ticket
            .run(move |_| Ok(Self::detail_listed(&name, &svc.db.listing(&full)?)))
            .await
    }

    /// Changes a collection's search parameters: the default `ef_search`,
    /// the recall target, or both.
    pub async fn update_collection(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        req: UpdateCollection,
    ) -> Result<CollectionDetail> {
        let (caller, ticket) = call.enter(Permission::Write)?;
        if req.hnsw.is_none() && req.target_recall.is_none() {
            return Err(ServiceError::invalid(
                "invalid_body",
                "name what changes: `hnsw` ({\"ef_search\": n}), `target_recall`, or both",
            ));
        }
        if let Some(t) = req.target_recall {
            vectorizer_engine::config::validate_target_recall(t)?;
        }
        crate::service::routed!(
            self,
            caller,
            Op::UpdateCollection {
                name: name.into(),
                req
            },
            detail
        );
        let c = self.open_collection(ticket, caller, name).await?;
        let name = name.to_owned();
        ticket
            .run(move |_| {
                if let Some(hnsw) = &req.hnsw {
                    c.set_ef_search(hnsw.ef_search)?;
                }
                if let Some(t) = req.target_recall {
                    c.set_target_recall(t)?;
                }
                Ok(Self::detail(&name, &c))
            })
            .await
    }

    /// Indexes one more payload field of a collection (idempotent).
    pub async fn create_payload_index(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        req: CreatePayloadIndex,
    ) -> Result<CollectionDetail> {
        let (caller, ticket) = call.enter(Permission::Write)?;
        crate::service::routed!(
            self,
            caller,
            Op::CreatePayloadIndex {
                name: name.into(),
                req
            },
            detail
        );
        let c = self.open_collection(ticket, caller, name).await?;
        let name = name.to_owned();
        ticket
            .run(move |_| {
                c.create_payload_index(&req.field)?;
                Ok(Self::detail(&name, &c))
            })
            .await
    }

    /// Stops indexing a payload field of a collection (idempotent).
    pub async fn drop_payload_index(
        self: &Arc<Self>,
        call: &Call,
        name: &str,
        field: &str,
    ) -> Result<CollectionDetail> {
        let (caller, ticket) = call.enter(Permission::Write)?;
        vectorizer_engine::config::validate_field_path(field)?;
        crate::service::routed!(
            self,
            caller,
            Op::DropPayloadIndex {
                name: name.into(),
                field: field.into()
            },
            detail
        );
        let c = self.open_collection(ticket, caller, name).await?;
        let (name, field) = (name.to_owned(), field.to_owned());
        ticket
            .run(move |_| {
                c.drop_payload_index(&field)?;
                Ok(Self::detail(&name, &c))
            })
            .await
    }

    /// Liveness and readiness, from the last storage probe: answering never
    /// waits for storage or for any tenant's work.
    pub fn health(&self) -> Health {
        let ok = self.storage_ok.load(Ordering::Relaxed);
        Health {
            status: if ok { "ok" } else { "unavailable" }.into(),
            storage: if ok { "ok" } else { "not writable" }.into(),
            collections: self.db.len(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// Checks that storage accepts a durable write, for [`health`](Self::health).
    pub fn probe_storage(&self) -> bool {
        let probe = self.db.root().join(".health");
        let ok = std::fs::write(&probe, b"ok")
            .and_then(|_| std::fs::remove_file(&probe))
            .is_ok();
        self.storage_ok.store(ok, Ordering::Relaxed);
        ok
    }

    /// Probes storage every `every` on a thread of its own.
    pub fn spawn_storage_probe(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("storage-probe".into())
            .spawn(move || {
                while let Some(s) = me.upgrade() {
                    s.probe_storage();
                    // Collections left over their cap or budget (by opens
                    // that found the others busy) are closed once idle.
                    s.db.evict();
                    drop(s);
                    std::thread::sleep(every);
                }
            })
            .expect("starting the storage probe");
    }

    /// Tenants with requests in flight now (for metrics).
    pub fn active_tenants(&self) -> usize {
        self.share.active_tenants()
    }

    /// Snapshots every collection (for shutdown).
    pub fn flush(&self) -> Result<()> {
        Ok(self.db.flush()?)
    }
}

/// A collection registered with the Hub, to withdraw if the local create
/// does not follow.
pub struct Registration {
    hub: Arc<HubClient>,
    made: vectorizer_hub::sdk::CreateCollectionResponse,
}

impl Registration {
    /// Undoes the registration, if this create made it.
    pub async fn withdraw(self) {
        if !self.made.created {
            return;
        }
        if let Err(e) = self.hub.delete_collection(&self.made.collection_id).await {
            tracing::warn!(error = %e, "could not withdraw a hub registration");
        }
    }
}

pub(crate) fn hub_id(c: &Collection) -> Option<uuid::Uuid> {
    c.metadata().get(HUB_ID_KEY)?.parse().ok()
}

pub(crate) fn listed_hub_id(l: &vectorizer_engine::Listing) -> Option<uuid::Uuid> {
    l.metadata.get(HUB_ID_KEY)?.parse().ok()
}

pub(crate) fn listed_figures(l: &vectorizer_engine::Listing) -> Report {
    Report::Usage {
        vector_count: l.stats.points,
        storage_bytes: l.stats.disk_bytes,
    }
}

pub(crate) fn figures(c: &Collection) -> Report {
    Report::Usage {
        vector_count: c.len() as u64,
        storage_bytes: c.disk_bytes(),
    }
}
