//! Per-user backups: create, list, read, download, upload, restore and
//! delete, each one entry point taking the [`Call`]. The user is always
//! the caller's: a backup id of another user finds nothing, and a restore
//! writes only into the caller's namespace whatever its manifest says.

pub mod archive;
mod restore;
pub mod store;
mod upload;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;

pub use archive::ReadCaps;
pub use restore::{RestoreBackup, Restored};
pub use store::{BackupCollection, BackupInfo, BackupList};
pub use upload::UploadBody;

use crate::caller::{Caller, Permission};
use crate::error::{Result, ServiceError};
use crate::service::{Call, Service};

/// Most collections one backup request names.
pub const MAX_COLLECTIONS: usize = 1000;
/// The longest label.
pub const MAX_LABEL: usize = 200;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Backups kept per user; the oldest beyond it are removed.
    pub max_per_user: usize,
    /// Backups older than this are removed; `None`: kept until the count
    /// pushes them out.
    pub max_age: Option<Duration>,
    /// The largest upload accepted.
    pub max_upload_bytes: u64,
    /// Caps on reading an uploaded archive.
    pub caps: ReadCaps,
    /// Longest wait for the next piece of an upload's body.
    pub idle_timeout: Duration,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            max_per_user: 10,
            max_age: Some(Duration::from_secs(30 * 86_400)),
            max_upload_bytes: 1 << 30,
            caps: ReadCaps {
                max_entries: 4096,
                max_file_bytes: 16 << 30,
                max_total_bytes: 32 << 30,
                max_ratio: 100,
            },
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Progress of long work, in bytes: `(done, total)`.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// No one listens.
pub fn quiet() -> Progress {
    Arc::new(|_, _| {})
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBackup {
    /// The collections to back up, by name (default: all of yours).
    #[serde(default)]
    pub collections: Option<Vec<String>>,
    /// A note to tell backups apart (at most 200 characters).
    #[serde(default)]
    pub label: Option<String>,
}

/// Backups on this node: operations by (op, result), and bytes stored.
#[derive(Default)]
pub struct BackupStats {
    ops: std::sync::Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    bytes: AtomicU64,
}

impl BackupStats {
    /// Operations so far by (op, result: ok, refused or failed).
    pub fn ops(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Bytes of the archives stored on this node.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn set_bytes(&self, b: u64) {
        self.bytes.store(b, Ordering::Relaxed);
    }

    fn record<T>(&self, op: &'static str, r: &Result<T>) {
        let result = match r {
            Ok(_) => "ok",
            Err(
                ServiceError::Internal(_) | ServiceError::Unavailable(_) | ServiceError::Timeout,
            ) => "failed",
            Err(_) => "refused",
        };
        *self
            .ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((op, result))
            .or_default() += 1;
    }
}

/// Runs `work` to its end on a task of its own, even when the caller
/// leaves: the locks, reservations and files it holds are released only
/// by the work itself, once it is done.
pub(crate) async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work)
        .await
        .unwrap_or_else(|e| Err(ServiceError::Internal(format!("backup work failed: {e}"))))
}

/// Caps for reading a backup this node stores: it passed every cap when
/// it was made or uploaded, and its SHA-256 is checked before it is read.
pub(crate) fn trusted() -> ReadCaps {
    ReadCaps {
        max_entries: u64::MAX,
        max_file_bytes: u64::MAX,
        max_total_bytes: u64::MAX,
        max_ratio: u64::MAX,
    }
}

/// Users with a create or upload under way: one each, so that the
/// temporary files of one user's archives never pass one cap.
#[derive(Default)]
pub(crate) struct Writers(std::sync::Mutex<std::collections::HashSet<String>>);

/// One user's create or upload under way; ends when dropped.
pub(crate) struct Writing<'a>(&'a Writers, String);

impl Writers {
    fn start(&self, owner: String) -> Option<Writing<'_>> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(owner.clone()).then(|| Writing(self, owner))
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut m = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&self.1);
    }
}

/// Removes a file or directory when dropped, unless disarmed.
pub(crate) struct Leftover(Option<PathBuf>);

impl Leftover {
    pub(crate) fn new(p: PathBuf) -> Self {
        Leftover(Some(p))
    }
    pub(crate) fn keep(mut self) {
        self.0 = None;
    }
    pub(crate) fn path(&self) -> PathBuf {
        self.0.clone().unwrap_or_default()
    }
}

impl Drop for Leftover {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
    }
}

pub(crate) fn not_found(id: &str) -> ServiceError {
    ServiceError::BackupNotFound(id.chars().take(64).collect())
}

impl Service {
    /// One create or upload of the caller's at a time (429 otherwise), so
    /// that the archives being written for one user never pass one cap.
    pub(crate) fn writing_backup(&self, caller: &crate::caller::Caller) -> Result<Writing<'_>> {
        self.writers.start(store::owner_of(caller)).ok_or_else(|| {
            ServiceError::Busy(
                "a backup or upload of yours is being written: retry once it is done".into(),
            )
        })
    }

    /// The caller's backup directory.
    fn backup_dir(&self, caller: &Caller) -> PathBuf {
        store::dir_of(&self.options.data_dir, caller)
    }

    /// One store, delete or sweep of a user's backups at a time, and none
    /// while a restore reads one.
    async fn hold_backups(&self, caller: &Caller) -> crate::service::NameGuard<'_> {
        self.hold_backups_of(&store::owner_of(caller)).await
    }

    async fn hold_backups_of(&self, owner: &str) -> crate::service::NameGuard<'_> {
        // `/` is in no collection name: no collection lock is this one.
        self.names.lock(&format!("backups/{owner}")).await
    }

    /// The caller's backup `id`, if it has one.
    fn find_backup(&self, caller: &Caller, id: &str) -> Result<(PathBuf, BackupInfo)> {
        let dir = self.backup_dir(caller);
        let parsed = store::parse_id(id).ok_or_else(|| not_found(id))?;
        let info = store::info(&dir, &parsed).ok_or_else(|| not_found(id))?;
        Ok((dir, info))
    }

    /// Backup operations and bytes, for metrics.
    pub fn backup_stats(&self) -> &BackupStats {
        &self.backup_stats
    }

    pub async fn list_backups(self: &Arc<Self>, call: &Call) -> Result<BackupList> {
        let (caller, ticket) = call.enter(Permission::Read)?;
        crate::service::unclustered(self, "backups")?;
        let dir = self.backup_dir(caller);
        let r = ticket
            .run(move |_| {
                Ok(BackupList {
                    backups: store::list(&dir)?,
                })
            })
            .await;
        self.backup_stats.record("list", &r);
        r
    }

    pub async fn get_backup(self: &Arc<Self>, call: &Call, id: &str) -> Result<BackupInfo> {
        let (caller, ticket) = call.enter(Permission::Read)?;
        crate::service::unclustered(self, "backups")?;
        let svc = self.clone();
        let (caller, id) = (caller.clone(), id.to_owned());
        ticket
            .run(move |_| svc.find_backup(&caller, &id).map(|(_, i)| i))
            .await
    }

    /// The caller's backup `id`, checked against its stored SHA-256, and
    /// its archive opened at the start: ready to stream.
    pub async fn open_backup(
        self: &Arc<Self>,
        call: &Call,
        id: &str,
    ) -> Result<(BackupInfo, std::fs::File)> {
        let (caller, ticket) = call.enter(Permission::Read)?;
        crate::service::unclustered(self, "backups")?;
        let svc = self.clone();
        let (caller, id) = (caller.clone(), id.to_owned());
        let r = ticket
            .run(move |_| {
                let (dir, info) = svc.find_backup(&caller, &id)?;
                let file = verified(&dir, &info, &|_| {})?;
                Ok((info, file))
            })
            .await;
        self.backup_stats.record("download", &r);
        r
    }

    /// Checks the caller's backup `id` whole: the archive's SHA-256, then
    /// every file against the manifest.
    pub async fn verify_backup(
        self: &Arc<Self>,
        call: &Call,
        id: &str,
        progress: Progress,
    ) -> Result<BackupInfo> {
        let (caller, ticket) = call.enter(Permission::Read)?;
        crate::service::unclustered(self, "backups")?;
        let svc = self.clone();
        let (caller, id) = (caller.clone(), id.to_owned());
        ticket
            .run(move |_| {
                let (dir, info) = svc.find_backup(&caller, &id)?;
                let total = info.size_bytes * 2;
                let done = AtomicU64::new(0);
                let tick = |n: u64| progress(done.fetch_add(n, Ordering::Relaxed) + n, total);
                drop(verified(&dir, &info, &tick)?);
                let path = store::archive_path(&dir, &info.id);
                archive::read(&path, None, None, trusted(), &|_| {})?;
                Ok(info)
            })
            .await
    }

    pub async fn delete_backup(self: &Arc<Self>, call: &Arc<Call>, id: &str) -> Result<()> {
        let (svc, call, id) = (self.clone(), call.clone(), id.to_owned());
        detached(async move {
            let r = svc.delete_inner(&call, &id).await;
            svc.backup_stats.record("delete", &r);
            if r.is_ok() {
                tracing::info!(backup = %id, "backup deleted");
            }
            r
        })
        .await
    }

    async fn delete_inner(self: &Arc<Self>, call: &Call, id: &str) -> Result<()> {
        let (caller, ticket) = call.enter(Permission::Delete)?;
        crate::service::unclustered(self, "backups")?;
        let _held = self.hold_backups(caller).await;
        let svc = self.clone();
        let (caller, wanted) = (caller.clone(), id.to_owned());
        ticket
            .run(move |_| {
                let (dir, info) = svc.find_backup(&caller, &wanted)?;
                let size = store::remove(&dir, &info.id)?;
                svc.backup_stats.bytes.fetch_sub(size, Ordering::Relaxed);
                Ok(())
            })
            .await
    }

    /// Backs up the caller's collections (all, or those named): each one
    /// as one consistent state. With the Hub, the plan's `backup` quota is
    /// asked first with the collections' bytes on disk as the estimate.
    pub async fn create_backup(
        self: &Arc<Self>,
        call: &Arc<Call>,
        req: CreateBackup,
        progress: Progress,
    ) -> Result<BackupInfo> {
        let (svc, call) = (self.clone(), call.clone());
        detached(async move {
            let r = svc.create_backup_inner(&call, req, progress).await;
            svc.backup_stats.record("create", &r);
            r
        })
        .await
    }

    async fn create_backup_inner(
        self: &Arc<Self>,
        call: &Call,
        req: CreateBackup,
        progress: Progress,
    ) -> Result<BackupInfo> {
        let (caller, ticket) = call.enter(Permission::Write)?;
        crate::service::unclustered(self, "backups")?;
        let label = check_label(req.label)?;
        let _one = self.writing_backup(caller)?;
        let owned = self.owned(caller);
        let chosen: Vec<(String, vectorizer_engine::Listing)> = match req.collections {
            None if owned.len() > MAX_COLLECTIONS => {
                return Err(ServiceError::unprocessable(
                    "invalid_request",
                    format!("at most {MAX_COLLECTIONS} collections per backup: name them"),
                ));
            }
            None => owned,
            Some(names) => {
                if names.len() > MAX_COLLECTIONS {
                    return Err(ServiceError::unprocessable(
                        "invalid_request",
                        format!("at most {MAX_COLLECTIONS} collections per backup"),
                    ));
                }
                let mut seen = HashSet::new();
                let mut chosen = Vec::new();
                for n in names {
                    self.resolve(caller, &n)?;
                    let c = owned
                        .iter()
                        .find(|(short, _)| *short == n)
                        .ok_or_else(|| ServiceError::CollectionNotFound(n.clone()))?;
                    if seen.insert(n) {
                        chosen.push(c.clone());
                    }
                }
                chosen
            }
        };
        if chosen.is_empty() {
            return Err(ServiceError::unprocessable(
                "no_collections",
                "there are no collections to back up",
            ));
        }
        let estimate: u64 = chosen.iter().map(|(_, l)| l.stats.disk_bytes).sum();
        self.check_backup_quota(caller, estimate).await?;
        let dir = self.backup_dir(caller);
        let owner = match caller {
            Caller::Tenant(t) => Some(t.user_id.to_string()),
            _ => None,
        };
        let (info, tmp) = {
            let dir = dir.clone();
            let svc = self.clone();
            ticket
                .run(move |_| {
                    let chosen = chosen
                        .into_iter()
                        .map(|(short, l)| (short, l.name))
                        .collect();
                    write_backup(&svc.db, &dir, None, owner, label, chosen, &progress)
                })
                .await?
        };
        let info = self.keep_backup(caller, ticket, dir, tmp, info).await?;
        tracing::info!(backup = %info.id, bytes = info.size_bytes, "backup created");
        Ok(info)
    }

    /// Makes the archive written to `tmp` the caller's backup `info`, then
    /// applies retention to the caller's backups.
    pub(crate) async fn keep_backup(
        self: &Arc<Self>,
        caller: &Caller,
        ticket: &crate::share::Ticket,
        dir: PathBuf,
        tmp: Leftover,
        info: BackupInfo,
    ) -> Result<BackupInfo> {
        let _held = self.hold_backups(caller).await;
        let svc = self.clone();
        ticket
            .run(move |_| {
                store::commit(&dir, &tmp.path(), &info)?;
                tmp.keep();
                svc.backup_stats
                    .bytes
                    .fetch_add(info.size_bytes, Ordering::Relaxed);
                svc.sweep(&dir);
                Ok(info)
            })
            .await
    }

    /// The Hub's `backup` quota for a tenant, asked with `estimate` bytes.
    /// Asks the Hub whether `caller` may store `estimate` more bytes of
    /// backups; allowed, the plan's limit and the bytes left under it, when
    /// the Hub says.
    async fn check_backup_quota(
        &self,
        caller: &Caller,
        estimate: u64,
    ) -> Result<Option<(u64, u64)>> {
        let (Caller::Tenant(t), Some(hub)) = (caller, self.hub.get()) else {
            return Ok(None);
        };
        let refused = |limit: Option<i64>, remaining: Option<i64>| {
            let limit = limit.unwrap_or(0).max(0) as u64;
            ServiceError::QuotaExceeded {
                quota: "backup",
                limit,
                current: limit.saturating_sub(remaining.unwrap_or(0).max(0) as u64),
                requested: estimate,
            }
        };
        match hub
            .check_quota(&t.user_id, "backup", Some(estimate as i64))
            .await
        {
            Ok(a) if a.allowed => Ok(a.remaining.map(|r| {
                let left = r.max(0) as u64;
                (a.limit.map_or(left, |l| l.max(0) as u64), left)
            })),
            Ok(a) => Err(refused(a.limit, a.remaining)),
            Err(vectorizer_hub::HubError::QuotaExceeded(_)) => Err(refused(None, None)),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the backups in `dir` beyond the count and age the config
    /// keeps (newest first). Failures are logged: the next sweep retries.
    pub(crate) fn sweep(&self, dir: &Path) {
        let opts = &self.options.backups;
        // Newest stored first.
        let Ok(all) = store::list(dir) else {
            return;
        };
        let now = store::now_ms();
        for (i, b) in all.iter().enumerate() {
            let old = opts
                .max_age
                .is_some_and(|a| now.saturating_sub(b.stored_at_ms) > a.as_millis() as u64);
            if i >= opts.max_per_user || old {
                match store::remove(dir, &b.id) {
                    Ok(size) => {
                        self.backup_stats.bytes.fetch_sub(size, Ordering::Relaxed);
                        tracing::info!(backup = %b.id, "backup removed by retention");
                    }
                    Err(e) => tracing::warn!(error = %e, "retention could not remove a backup"),
                }
            }
        }
    }

    /// Sweeps every user's backups every `every` (on the runtime; the
    /// file work on blocking threads), each user's under its lock.
    pub fn spawn_backup_sweeper(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(s) = me.upgrade() else { return };
                let root = store::root(&s.options.data_dir);
                let owners = {
                    let root = root.clone();
                    tokio::task::spawn_blocking(move || store::owners(&root))
                        .await
                        .unwrap_or_default()
                };
                for owner in owners {
                    let _held = s.hold_backups_of(&owner).await;
                    let (svc, dir) = (s.clone(), root.join(&owner));
                    let _ = tokio::task::spawn_blocking(move || svc.sweep(&dir)).await;
                }
            }
        });
    }
}

/// Whether `l` is a label a create takes.
pub(crate) fn label_ok(l: &str) -> bool {
    l.chars().count() <= MAX_LABEL && !l.chars().any(char::is_control)
}

fn check_label(label: Option<String>) -> Result<Option<String>> {
    match label {
        Some(l) if !label_ok(&l) => Err(ServiceError::invalid(
            "invalid_label",
            format!("a label is at most {MAX_LABEL} characters, none of them control characters"),
        )),
        l => Ok(l),
    }
}

/// The archive of `info`, opened once its size and SHA-256 match.
fn verified(dir: &Path, info: &BackupInfo, tick: &dyn Fn(u64)) -> Result<std::fs::File> {
    use std::io::Seek;
    let path = store::archive_path(dir, &info.id);
    let mut file = std::fs::File::open(&path)
        .map_err(|e| ServiceError::Internal(format!("opening a backup: {e}")))?;
    let (sha, size) = archive::sha256_of(&mut file, tick)
        .map_err(|e| ServiceError::Internal(format!("reading a backup: {e}")))?;
    if size != info.size_bytes || sha != info.sha256 {
        tracing::error!(backup = %info.id, "a stored backup does not match its checksum");
        return Err(ServiceError::unprocessable(
            "backup_corrupt",
            "the backup's archive does not match its SHA-256: it is damaged",
        ));
    }
    file.rewind()
        .map_err(|e| ServiceError::Internal(format!("reading a backup: {e}")))?;
    Ok(file)
}

/// Checkpoints `chosen` (short names, and the engine's names in `db`)
/// into a work directory, one collection open at a time, and writes their
/// archive to a temporary file in `dir`: the info and the file, not yet
/// committed.
pub(crate) fn write_backup(
    db: &vectorizer_engine::Database,
    dir: &Path,
    id: Option<String>,
    owner: Option<String>,
    label: Option<String>,
    chosen: Vec<(String, String)>,
    progress: &Progress,
) -> Result<(BackupInfo, Leftover)> {
    let io = |what: &'static str| {
        move |e: std::io::Error| ServiceError::Internal(format!("{what}: {e}"))
    };
    std::fs::create_dir_all(dir).map_err(io("creating the backup directory"))?;
    let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().to_string());
    let work = dir.join(format!(".work-{id}"));
    std::fs::create_dir(&work).map_err(io("creating a work directory"))?;
    let _work = Leftover::new(work.clone());
    let mut collections = Vec::new();
    let mut dirs = Vec::new();
    for (short, full) in &chosen {
        let d = work.join(short);
        std::fs::create_dir(&d).map_err(io("creating a work directory"))?;
        let cp = db
            .collection(full)
            .and_then(|c| c.checkpoint(&d))
            .map_err(|e| match e {
                vectorizer_engine::EngineError::CollectionNotFound(_) => {
                    ServiceError::CollectionNotFound(short.clone())
                }
                e => e.into(),
            })?;
        collections.push((short.clone(), cp));
        dirs.push(d);
    }
    let total: u64 = collections.iter().map(|(_, cp)| cp.bytes * 2).sum();
    let done = AtomicU64::new(0);
    let tick = |n: u64| progress(done.fetch_add(n, Ordering::Relaxed) + n, total);
    let mut listed = Vec::new();
    for ((short, cp), d) in collections.iter().zip(&dirs) {
        let mut files = Vec::new();
        for f in archive::FILES {
            let file = std::fs::File::open(d.join(f)).map_err(io("reading a checkpoint"))?;
            let (sha256, size) =
                archive::sha256_of(file, &tick).map_err(io("reading a checkpoint"))?;
            files.push(archive::ManifestFile {
                name: f.to_owned(),
                size,
                sha256,
            });
        }
        listed.push(archive::ManifestCollection {
            name: short.clone(),
            config: cp.config.clone(),
            points: cp.points as u64,
            seq: cp.seq,
            files,
        });
    }
    let created_at_ms = store::now_ms();
    let manifest = archive::Manifest {
        format_version: archive::FORMAT_VERSION,
        user_id: owner,
        created_at: store::rfc3339(created_at_ms),
        created_at_ms,
        label,
        collections: listed,
    };
    let tmp_path = dir.join(format!("{id}.tar.gz.tmp"));
    let file = std::fs::File::create_new(&tmp_path).map_err(io("creating a backup"))?;
    let tmp = Leftover::new(tmp_path);
    let (size_bytes, sha256) = archive::write(file, &manifest, &dirs, &tick)?;
    Ok((info_of(id, &manifest, size_bytes, sha256), tmp))
}

/// The info of an archive with `manifest`.
pub(crate) fn info_of(
    id: String,
    manifest: &archive::Manifest,
    size_bytes: u64,
    sha256: String,
) -> BackupInfo {
    BackupInfo {
        id,
        label: manifest.label.clone(),
        created_at: manifest.created_at.clone(),
        created_at_ms: manifest.created_at_ms,
        stored_at_ms: store::now_ms(),
        format_version: manifest.format_version,
        collections: manifest
            .collections
            .iter()
            .map(|c| BackupCollection {
                name: c.name.clone(),
                dimension: c.config.dimension,
                metric: c.config.metric,
                points: c.points,
            })
            .collect(),
        size_bytes,
        sha256,
    }
}
