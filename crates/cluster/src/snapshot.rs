//! Snapshots of a shard: every collection's checkpoint at one log id, in
//! a tar archive (`raft-snapshot.tar` in the shard's directory, replaced
//! atomically): `manifest.json` first (the snapshot's meta and each
//! collection's name, config, metadata and log sequence), then
//! `c/<i>/index.hnsw` and `c/<i>/points.bin` per collection. Openraft
//! sends it to a replica that is too far behind for the log, in chunks.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::ErrorVerb;
use serde::{Deserialize, Serialize};
use vectorizer_engine::CollectionConfig;
use vectorizer_service::Service;
use vectorizer_service::caller::split_stored;
use vectorizer_service::service::OWNER_KEY;

use crate::shard::sm_err;
use crate::types::*;

pub(crate) const FILE: &str = "raft-snapshot.tar";
const FILES: [&str; 2] = ["index.hnsw", "points.bin"];

#[derive(Serialize, Deserialize)]
struct Manifest {
    meta: SnapshotMeta,
    collections: Vec<Item>,
}

#[derive(Serialize, Deserialize)]
struct Item {
    name: String,
    config: CollectionConfig,
    metadata: BTreeMap<String, String>,
    seq: u64,
}

/// Checkpoints placed in a work directory, not yet packed.
pub struct Placed {
    work: PathBuf,
    manifest: Manifest,
}

fn work_dir(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!("{what}-{}", uuid::Uuid::new_v4().simple()))
}

/// Places every collection's checkpoint at the applied id `last` (the
/// caller holds the apply lock, so no entry lands meanwhile).
pub async fn place(
    service: &Arc<Service>,
    dir: &Path,
    last: Option<LogId>,
    membership: Membership,
) -> Result<Placed, StorageError> {
    let service = service.clone();
    let work = work_dir(dir, "snap-build");
    tokio::task::spawn_blocking(move || {
        let fail = |e: &dyn std::fmt::Display| sm_err(ErrorVerb::Write, e);
        std::fs::create_dir_all(&work).map_err(|e| fail(&e))?;
        let mut collections = Vec::new();
        let db = service.engine();
        let names = db.names().map_err(|e| fail(&e))?;
        // One at a time: each is opened if it is closed, and may close
        // again once checkpointed.
        for (i, name) in names.iter().enumerate() {
            let c = db.collection(name).map_err(|e| fail(&e))?;
            let dest = work.join(format!("c/{i}"));
            std::fs::create_dir_all(&dest).map_err(|e| fail(&e))?;
            let cp = c.checkpoint(&dest).map_err(|e| fail(&e))?;
            collections.push(Item {
                name: c.name().to_owned(),
                config: cp.config,
                metadata: c.metadata(),
                seq: cp.seq,
            });
        }
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id: format!(
                "{}-{}",
                last.map_or(0, |l| l.index),
                uuid::Uuid::new_v4().simple()
            ),
        };
        Ok(Placed {
            work,
            manifest: Manifest { meta, collections },
        })
    })
    .await
    .map_err(|e| sm_err(ErrorVerb::Write, e))?
}

/// Packs placed checkpoints into the shard's snapshot file.
pub async fn pack(dir: &Path, placed: Placed) -> Result<Snapshot, StorageError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let fail = |e: &dyn std::fmt::Display| sm_err(ErrorVerb::Write, e);
        let built = (|| -> Result<Vec<u8>, StorageError> {
            let mut tar = tar::Builder::new(Vec::new());
            let manifest = serde_json::to_vec(&placed.manifest).map_err(|e| fail(&e))?;
            append(&mut tar, "manifest.json", &manifest)?;
            for i in 0..placed.manifest.collections.len() {
                for f in FILES {
                    let bytes = std::fs::read(placed.work.join(format!("c/{i}/{f}")))
                        .map_err(|e| fail(&e))?;
                    append(&mut tar, &format!("c/{i}/{f}"), &bytes)?;
                }
            }
            tar.into_inner().map_err(|e| fail(&e))
        })();
        let _ = std::fs::remove_dir_all(&placed.work);
        let bytes = built?;
        vectorizer_engine::fsutil::write_atomic(&dir.join(FILE), &bytes).map_err(|e| fail(&e))?;
        Ok(Snapshot {
            meta: placed.manifest.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    })
    .await
    .map_err(|e| sm_err(ErrorVerb::Write, e))?
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, bytes)
        .map_err(|e| sm_err(ErrorVerb::Write, e))
}

/// Reads an archive: its manifest and its files by path.
fn unpack(bytes: &[u8]) -> Result<(Manifest, BTreeMap<String, Vec<u8>>), String> {
    let mut archive = tar::Archive::new(bytes);
    let mut manifest = None;
    let mut files = BTreeMap::new();
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err("a snapshot holds regular files only".into());
        }
        let path = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
        if path == "manifest.json" {
            manifest = Some(serde_json::from_slice::<Manifest>(&data).map_err(|e| e.to_string())?);
        } else {
            files.insert(path, data);
        }
    }
    Ok((manifest.ok_or("a snapshot without a manifest")?, files))
}

/// The shard's current snapshot, if one was built or installed.
pub async fn current(dir: &Path) -> Result<Option<Snapshot>, StorageError> {
    let path = dir.join(FILE);
    tokio::task::spawn_blocking(move || {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(sm_err(ErrorVerb::Read, e)),
        };
        let (manifest, _) = unpack(&bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: manifest.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    })
    .await
    .map_err(|e| sm_err(ErrorVerb::Read, e))?
}

/// Replaces the shard's data with a snapshot's. Every collection must be
/// in a user's namespace and carry that user as its owner, and that user
/// must live on this shard: a snapshot never moves data between users.
/// Every collection is staged (its files decoded and checked) before any
/// is served; then each is swapped in, and collections the snapshot does
/// not hold are dropped.
pub async fn install(
    service: &Arc<Service>,
    dir: &Path,
    meta: &SnapshotMeta,
    bytes: Vec<u8>,
    home: impl Fn(&uuid::Uuid) -> bool + Send + 'static,
) -> Result<(), StorageError> {
    let service = service.clone();
    let dir = dir.to_owned();
    let snapshot_id = meta.snapshot_id.clone();
    tokio::task::spawn_blocking(move || {
        let fail = |e: &dyn std::fmt::Display| sm_err(ErrorVerb::Write, e);
        let (manifest, mut files) = unpack(&bytes).map_err(|e| fail(&e))?;
        if manifest.meta.snapshot_id != snapshot_id {
            return Err(fail(&"the snapshot's manifest names another snapshot"));
        }
        for item in &manifest.collections {
            let owner = split_stored(&item.name).map(|(u, _)| u);
            let ok = owner.is_some_and(|u| {
                item.metadata.get(OWNER_KEY) == Some(&u.to_string()) && home(&u)
            }) || (owner.is_none() && !item.metadata.contains_key(OWNER_KEY) && home(&uuid::Uuid::nil()));
            if !ok {
                return Err(fail(&format!(
                    "the snapshot's collection {} is not owned as its name says, or not on this shard",
                    item.name
                )));
            }
        }
        let work = work_dir(&dir, "snap-in");
        let db = service.engine();
        let staged = (|| {
            let mut staged = Vec::new();
            for (i, item) in manifest.collections.iter().enumerate() {
                let d = work.join(format!("c/{i}"));
                std::fs::create_dir_all(&d).map_err(|e| fail(&e))?;
                for f in FILES {
                    let data = files
                        .remove(&format!("c/{i}/{f}"))
                        .ok_or_else(|| fail(&format!("the snapshot lacks c/{i}/{f}")))?;
                    std::fs::write(d.join(f), data).map_err(|e| fail(&e))?;
                }
                staged.push(
                    db.stage_import(
                        &item.name,
                        item.config.clone(),
                        item.metadata.clone(),
                        &d,
                        item.seq,
                    )
                    .map_err(|e| fail(&e))?,
                );
            }
            Ok::<_, StorageError>(staged)
        })();
        let _ = std::fs::remove_dir_all(&work);
        let staged = staged?;
        let keep: std::collections::BTreeSet<&str> =
            manifest.collections.iter().map(|i| i.name.as_str()).collect();
        for name in db.names().map_err(|e| fail(&e))? {
            if !keep.contains(name.as_str()) {
                db.drop_collection(&name).map_err(|e| fail(&e))?;
            }
        }
        for s in staged {
            db.publish(s, true).map_err(|e| fail(&e))?;
        }
        vectorizer_engine::fsutil::write_atomic(&dir.join(FILE), &bytes).map_err(|e| fail(&e))
    })
    .await
    .map_err(|e| sm_err(ErrorVerb::Write, e))?
}
