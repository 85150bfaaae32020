//! Restoring a backup into the caller's namespace: the archive checked
//! against its SHA-256, the chosen collections extracted (checked against
//! the manifest) to a work directory, quotas reserved, new collections
//! registered with the Hub, and each collection imported whole (an
//! overwrite swaps it in atomically: the engine's import).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{Leftover, MAX_COLLECTIONS, Progress, archive, store, verified};
use crate::caller::{Caller, Permission};
use crate::error::{Result, ServiceError};
use crate::model::CollectionSummary;
use crate::quota::Amount;
use crate::service::{Call, Registration, Service, validate_short_name};

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBackup {
    /// The backup to restore, one of the caller's.
    pub backup_id: String,
    /// The collections to restore, by their names in the backup (default:
    /// all of them).
    #[serde(default)]
    pub collections: Option<Vec<String>>,
    /// New names: `{name in the backup: name to restore it as}`.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Replace collections that exist (the key also needs `delete`);
    /// otherwise an existing name is a 409.
    #[serde(default)]
    pub overwrite: bool,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Restored {
    /// The collections restored, by their new names, as now served.
    pub restored: Vec<CollectionSummary>,
}

/// One collection to import: where it goes, from which files, as what.
struct Job {
    full: String,
    short: String,
    files: std::path::PathBuf,
    config: vectorizer_engine::CollectionConfig,
    metadata: BTreeMap<String, String>,
    seq: u64,
    replace: bool,
}

fn corrupt_backup() -> ServiceError {
    ServiceError::unprocessable(
        "backup_corrupt",
        "the backup's files do not decode as the collections its manifest describes",
    )
}

/// One collection to restore: its name in the backup, and where it goes.
struct Target {
    from: String,
    short: String,
    full: String,
}

impl Service {
    /// Restores collections of the caller's backup into the caller's own
    /// namespace (whatever user the manifest names). Answers once every
    /// restored collection is served. The work runs to its end even when
    /// the caller leaves: its quota reservation, name locks, Hub
    /// registrations and work directory are released only once the
    /// restore is done or undone.
    pub async fn restore_backup(
        self: &Arc<Self>,
        call: &Arc<Call>,
        req: RestoreBackup,
        progress: Progress,
    ) -> Result<Restored> {
        let (svc, call) = (self.clone(), call.clone());
        super::detached(async move {
            let r = svc.restore_inner(&call, req, progress).await;
            svc.backup_stats.record("restore", &r);
            r
        })
        .await
    }

    async fn restore_inner(
        self: &Arc<Self>,
        call: &Call,
        req: RestoreBackup,
        progress: Progress,
    ) -> Result<Restored> {
        let (caller, ticket) = call.enter(Permission::Write)?;
        crate::service::unclustered(self, "backups")?;
        let (dir, info) = {
            let (svc, caller, id) = (self.clone(), caller.clone(), req.backup_id.clone());
            ticket.run(move |_| svc.find_backup(&caller, &id)).await?
        };
        let targets = self.targets(caller, &info, &req)?;
        // Creates and deletes of these names wait for the restore; sorted,
        // so that two restores never hold each other's names.
        let mut fulls: Vec<&str> = targets.iter().map(|t| t.full.as_str()).collect();
        fulls.sort_unstable();
        let mut _names = Vec::new();
        for f in fulls {
            _names.push(self.names.lock(f).await);
        }
        let mut replaced = Vec::new();
        for t in &targets {
            if self.aliases.is_alias(&t.full) {
                return Err(crate::service::alias_exists(&t.short));
            }
            if let Ok(old) = self.db.listing(&t.full) {
                if !req.overwrite {
                    return Err(ServiceError::CollectionExists(t.short.clone()));
                }
                caller.require(Permission::Delete)?;
                let dimension = info
                    .collections
                    .iter()
                    .find(|c| c.name == t.from)
                    .map(|c| c.dimension);
                // The Hub keeps a collection's dimension from its registration.
                if crate::service::listed_hub_id(&old).is_some()
                    && dimension != Some(old.config.dimension)
                {
                    return Err(ServiceError::unprocessable(
                        "dimension_mismatch",
                        format!(
                            "`{}` has another dimension than the backup's: delete it first, or restore under another name",
                            t.short
                        ),
                    ));
                }
                replaced.push(old);
            }
        }
        // The archive is read while no retention or delete of the caller's
        // backups can remove it: checked whole against its SHA-256, its
        // manifest read, the quota reserved by it, then the chosen files
        // extracted (each checked against the manifest).
        let held = self.hold_backups(caller).await;
        let manifest = {
            let (dir, info, caps) = (dir.clone(), info.clone(), super::trusted());
            let progress = progress.clone();
            ticket
                .run(move |_| {
                    let total = info.size_bytes * 2;
                    let done = AtomicU64::new(0);
                    let tick = |n: u64| progress(done.fetch_add(n, Ordering::Relaxed) + n, total);
                    // Removed meanwhile (retention, a delete): not found.
                    if store::info(&dir, &info.id).is_none() {
                        return Err(super::not_found(&info.id));
                    }
                    drop(verified(&dir, &info, &tick)?);
                    archive::read_manifest(&store::archive_path(&dir, &info.id), caps)
                })
                .await?
        };
        let chosen: Vec<(&Target, &archive::ManifestCollection)> = targets
            .iter()
            .map(|t| {
                let c = manifest.collections.iter().find(|c| c.name == t.from);
                c.map(|c| (t, c)).ok_or_else(|| {
                    ServiceError::unprocessable(
                        "backup_corrupt",
                        "the archive does not match its info",
                    )
                })
            })
            .collect::<Result<_>>()?;
        let _reservation = self.reserve_restore(caller, &chosen, &replaced).await?;
        let work = dir.join(format!(".work-{}", uuid::Uuid::new_v4()));
        let work = Leftover::new(work);
        {
            let keep: HashSet<String> = targets.iter().map(|t| t.from.clone()).collect();
            let caps = super::trusted();
            let (path, work, info) = (
                store::archive_path(&dir, &info.id),
                work.path(),
                info.clone(),
            );
            let expected: Vec<(String, u64)> = chosen
                .iter()
                .map(|(t, c)| (t.from.clone(), c.points))
                .collect();
            ticket
                .run(move |_| {
                    let total = info.size_bytes * 2;
                    let done = AtomicU64::new(info.size_bytes);
                    let tick = |n: u64| progress(done.fetch_add(n, Ordering::Relaxed) + n, total);
                    std::fs::create_dir(&work).map_err(|e| {
                        ServiceError::Internal(format!("creating a work directory: {e}"))
                    })?;
                    let extracted = archive::read(&path, Some(&work), Some(&keep), caps, &tick)
                        .and_then(|_| {
                            // The quota was reserved by the manifest's
                            // counts: they must be the files'.
                            for (from, points) in expected {
                                let file = work.join(&from).join("points.bin");
                                let stated = vectorizer_engine::points_in(&file)
                                    .map_err(|_| corrupt_backup())?;
                                if stated != points {
                                    return Err(corrupt_backup());
                                }
                            }
                            Ok(())
                        });
                    if extracted.is_err() {
                        // Here, not on the runtime: it may be large.
                        let _ = std::fs::remove_dir_all(&work);
                    }
                    extracted
                })
                .await?;
        }
        drop(held);
        let mut metadata = Vec::new();
        let mut registrations: Vec<(String, Registration)> = Vec::new();
        let provisioned = async {
            for (t, c) in &chosen {
                match self.db.listing(&t.full) {
                    // An overwrite keeps the collection's owner and Hub id.
                    Ok(old) => metadata.push(old.metadata),
                    Err(_) => match caller {
                        Caller::Tenant(tenant) => {
                            let (m, r) =
                                self.provision(tenant, &t.short, c.config.dimension).await?;
                            metadata.push(m);
                            registrations.extend(r.map(|r| (t.full.clone(), r)));
                        }
                        Caller::Local | Caller::LocalReader => metadata.push(BTreeMap::new()),
                    },
                }
            }
            Ok::<_, ServiceError>(())
        }
        .await;
        if let Err(e) = provisioned {
            for (_, r) in registrations {
                r.withdraw().await;
            }
            return Err(e);
        }
        let jobs: Vec<Job> = chosen
            .iter()
            .zip(metadata)
            .map(|((t, c), metadata)| Job {
                full: t.full.clone(),
                short: t.short.clone(),
                files: work.path().join(&t.from),
                config: c.config.clone(),
                metadata,
                seq: c.seq,
                replace: self.db.exists(&t.full),
            })
            .collect();
        let svc = self.clone();
        let imported = ticket.run(move |_| svc.import_all(jobs)).await;
        // Removed on a worker thread: it may be large.
        let _ = ticket
            .run(move |_| {
                drop(work);
                Ok(())
            })
            .await;
        match imported {
            Ok(restored) => Ok(Restored { restored }),
            Err(e) => {
                // Those served keep their registration; the rest give theirs back.
                for (full, r) in registrations {
                    if !self.db.exists(&full) {
                        r.withdraw().await;
                    }
                }
                Err(e)
            }
        }
    }

    /// Stages every job (each collection decoded and checked whole), then
    /// serves them all: a file that does not decode stops the restore
    /// before anything is served. (Serving fails only when the disk does;
    /// those served before stay.)
    fn import_all(&self, jobs: Vec<Job>) -> Result<Vec<CollectionSummary>> {
        let mut staged = Vec::new();
        for j in &jobs {
            let s = self
                .db
                .stage_import(
                    &j.full,
                    j.config.clone(),
                    j.metadata.clone(),
                    &j.files,
                    j.seq,
                )
                .map_err(|e| match e {
                    vectorizer_engine::EngineError::Corrupt(_)
                    | vectorizer_engine::EngineError::Index(_) => corrupt_backup(),
                    e => e.into(),
                })?;
            staged.push(s);
        }
        let mut restored = Vec::new();
        for (j, s) in jobs.iter().zip(staged) {
            let c = self.db.publish(s, j.replace)?;
            self.report(&c);
            tracing::info!(collection = %j.short, points = c.len(), "collection restored");
            let info = c.info();
            restored.push(CollectionSummary {
                name: j.short.clone(),
                dimension: info.config.dimension,
                metric: info.config.metric,
                points: info.points,
                bytes: info.disk_bytes,
            });
        }
        Ok(restored)
    }

    /// The collections `req` restores and their new names, checked.
    fn targets(
        &self,
        caller: &Caller,
        info: &store::BackupInfo,
        req: &RestoreBackup,
    ) -> Result<Vec<Target>> {
        let in_backup: Vec<&str> = info.collections.iter().map(|c| c.name.as_str()).collect();
        let chosen: Vec<String> = match &req.collections {
            None => in_backup.iter().map(|s| (*s).to_owned()).collect(),
            Some(names) => {
                if names.is_empty() || names.len() > MAX_COLLECTIONS {
                    return Err(ServiceError::unprocessable(
                        "invalid_request",
                        format!("name 1 to {MAX_COLLECTIONS} collections, or none for all"),
                    ));
                }
                let mut seen = HashSet::new();
                let mut chosen = Vec::new();
                for n in names {
                    if !in_backup.contains(&n.as_str()) {
                        return Err(ServiceError::unprocessable(
                            "not_in_backup",
                            format!(
                                "collection `{}` is not in this backup",
                                n.chars().take(64).collect::<String>()
                            ),
                        ));
                    }
                    if seen.insert(n.clone()) {
                        chosen.push(n.clone());
                    }
                }
                chosen
            }
        };
        if req.rename.len() > MAX_COLLECTIONS {
            return Err(ServiceError::unprocessable(
                "invalid_rename",
                "too many renames",
            ));
        }
        for from in req.rename.keys() {
            if !chosen.contains(from) {
                return Err(ServiceError::unprocessable(
                    "invalid_rename",
                    format!(
                        "`{}` is renamed but not restored",
                        from.chars().take(64).collect::<String>()
                    ),
                ));
            }
        }
        let mut seen = HashSet::new();
        let mut targets = Vec::new();
        for from in chosen {
            let short = req
                .rename
                .get(&from)
                .cloned()
                .unwrap_or_else(|| from.clone());
            validate_short_name(&short)?;
            if !seen.insert(short.clone()) {
                return Err(ServiceError::unprocessable(
                    "invalid_rename",
                    format!("two collections would be restored as `{short}`"),
                ));
            }
            let full = self.resolve(caller, &short)?;
            targets.push(Target { from, short, full });
        }
        Ok(targets)
    }

    /// Reserves what the restore adds to the caller's usage: the new
    /// collections, and the points and bytes beyond those it replaces.
    async fn reserve_restore(
        self: &Arc<Self>,
        caller: &Caller,
        chosen: &[(&Target, &archive::ManifestCollection)],
        replaced: &[vectorizer_engine::Listing],
    ) -> Result<Option<crate::quota::Reservation>> {
        let (Caller::Tenant(t), Some(quotas)) = (caller, self.quotas.get().cloned()) else {
            return Ok(None);
        };
        let limits = quotas.limits(&t.user_id).await?;
        let adds = Amount {
            collections: (chosen.len() - replaced.len()) as u64,
            vectors: chosen
                .iter()
                .map(|(_, c)| c.points)
                .fold(0, u64::saturating_add),
            bytes: chosen
                .iter()
                .flat_map(|(_, c)| &c.files)
                .map(|f| f.size)
                .fold(0, u64::saturating_add),
        };
        let goes = Amount {
            collections: 0,
            vectors: replaced.iter().map(|l| l.stats.points).sum(),
            bytes: replaced.iter().map(|l| l.stats.disk_bytes).sum(),
        };
        let want = Amount {
            collections: adds.collections,
            vectors: adds.vectors.saturating_sub(goes.vectors),
            bytes: adds.bytes.saturating_sub(goes.bytes),
        };
        let user = t.user_id;
        Ok(Some(
            quotas.reserve(user, limits, want, || self.usage_of(&user))?,
        ))
    }
}
