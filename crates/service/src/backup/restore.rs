//! Restoring a backup into the caller's namespace: the archive checked
//! against its SHA-256, the chosen collections extracted (checked against
//! the manifest) to a work directory, quotas reserved, new collections
//! registered with the Hub, and each collection imported whole (an
//! overwrite swaps it in atomically: the engine's import).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{Leftover, MAX_COLLECTIONS, Progress, ReadCaps, archive, store, verified};
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

/// One collection to restore: its name in the backup, and where it goes.
struct Target {
    from: String,
    short: String,
    full: String,
}

impl Service {
    /// Restores collections of the caller's backup into the caller's own
    /// namespace (whatever user the manifest names). Answers once every
    /// restored collection is served.
    pub async fn restore_backup(
        self: &Arc<Self>,
        call: &Call,
        req: RestoreBackup,
        progress: Progress,
    ) -> Result<Restored> {
        let r = self.restore_inner(call, req, progress).await;
        self.backup_stats.record("restore", &r);
        r
    }

    async fn restore_inner(
        self: &Arc<Self>,
        call: &Call,
        req: RestoreBackup,
        progress: Progress,
    ) -> Result<Restored> {
        let (caller, ticket) = call.enter(Permission::Write)?;
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
                return Err(ServiceError::CollectionExists(t.short.clone()));
            }
            if let Ok(old) = self.db.collection(&t.full) {
                if !req.overwrite {
                    return Err(ServiceError::CollectionExists(t.short.clone()));
                }
                caller.require(Permission::Delete)?;
                replaced.push(old);
            }
        }
        // The archive is read whole while no retention or delete of the
        // caller's backups can remove it.
        let work = {
            let held = self.hold_backups(caller).await;
            let work = dir.join(format!(".work-{}", uuid::Uuid::new_v4()));
            let leftover = Leftover::new(work.clone());
            let keep: HashSet<String> = targets.iter().map(|t| t.from.clone()).collect();
            let caps = ReadCaps {
                max_ratio: u64::MAX,
                ..self.options.backups.caps
            };
            let info = info.clone();
            let manifest = ticket
                .run(move |_| {
                    let total = info.size_bytes + info.collections.len() as u64;
                    let done = AtomicU64::new(0);
                    let tick = |n: u64| progress(done.fetch_add(n, Ordering::Relaxed) + n, total);
                    drop(verified(&dir, &info, &tick)?);
                    std::fs::create_dir(&work).map_err(|e| {
                        ServiceError::Internal(format!("creating a work directory: {e}"))
                    })?;
                    archive::read(
                        &store::archive_path(&dir, &info.id),
                        Some(&work),
                        Some(&keep),
                        caps,
                        &|_| {},
                    )
                })
                .await?;
            drop(held);
            (leftover, manifest)
        };
        let (work, manifest) = work;
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
        let mut metadata = Vec::new();
        let mut registrations: Vec<Registration> = Vec::new();
        let provisioned = async {
            for (t, c) in &chosen {
                match self.db.collection(&t.full) {
                    // An overwrite keeps the collection's owner and Hub id.
                    Ok(old) => metadata.push(old.metadata()),
                    Err(_) => match caller {
                        Caller::Tenant(tenant) => {
                            let (m, r) =
                                self.provision(tenant, &t.short, c.config.dimension).await?;
                            metadata.push(m);
                            registrations.extend(r);
                        }
                        Caller::Local | Caller::LocalReader => metadata.push(BTreeMap::new()),
                    },
                }
            }
            Ok::<_, ServiceError>(())
        }
        .await;
        if let Err(e) = provisioned {
            for r in registrations {
                r.withdraw().await;
            }
            return Err(e);
        }
        let jobs: Vec<_> = chosen
            .iter()
            .zip(metadata)
            .map(|((t, c), m)| {
                let exists = self.db.collection(&t.full).is_ok();
                let job = (t.full.clone(), t.short.clone(), t.from.clone());
                (job, c.config.clone(), m, c.seq, exists)
            })
            .collect();
        let svc = self.clone();
        let dir = work.path();
        let imported = ticket
            .run(move |_| {
                let mut done = Vec::new();
                for ((full, short, from), config, meta, seq, exists) in jobs {
                    let files = dir.join(&from);
                    let c = svc
                        .db
                        .import_collection(&full, config, meta, &files, seq, exists)?;
                    done.push((short, c));
                }
                Ok(done)
            })
            .await;
        drop(work);
        let imported = match imported {
            Ok(i) => i,
            Err(e) => {
                for r in registrations {
                    r.withdraw().await;
                }
                return Err(e);
            }
        };
        let mut restored = Vec::new();
        for (short, c) in imported {
            self.report(&c);
            tracing::info!(collection = %short, points = c.len(), "collection restored");
            let info = c.info();
            restored.push(CollectionSummary {
                name: short,
                dimension: info.config.dimension,
                metric: info.config.metric,
                points: info.points,
                bytes: info.disk_bytes,
            });
        }
        Ok(Restored { restored })
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
                    return Err(ServiceError::invalid(
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
            return Err(ServiceError::invalid("invalid_rename", "too many renames"));
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
        replaced: &[Arc<vectorizer_engine::collection::Collection>],
    ) -> Result<Option<crate::quota::Reservation>> {
        let (Caller::Tenant(t), Some(quotas)) = (caller, self.quotas.get().cloned()) else {
            return Ok(None);
        };
        let limits = quotas.limits(&t.user_id).await?;
        let adds = Amount {
            collections: (chosen.len() - replaced.len()) as u64,
            vectors: chosen.iter().map(|(_, c)| c.points).sum(),
            bytes: chosen
                .iter()
                .flat_map(|(_, c)| &c.files)
                .map(|f| f.size)
                .sum(),
        };
        let goes = Amount {
            collections: 0,
            vectors: replaced.iter().map(|c| c.len() as u64).sum(),
            bytes: replaced.iter().map(|c| c.disk_bytes()).sum(),
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
