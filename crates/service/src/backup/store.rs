//! Where backups live: `<data>/backups/<user id or "local">/`, an archive
//! `<id>.tar.gz` and its info `<id>.json` each. The info is written last,
//! and a backup exists only when both files do: a crash at any moment
//! leaves the whole backup or none, and [`clean`] removes the leftovers
//! (temporary files, work directories, an archive without its info).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vectorizer_engine::Metric;
use vectorizer_engine::fsutil::{sync_dir, write_atomic};

use crate::caller::Caller;
use crate::error::{Result, ServiceError};

/// What the API tells of a backup; stored beside the archive.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackupInfo {
    pub id: String,
    pub label: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub created_at_ms: u64,
    /// When this node stored it (an upload's differs from its creation):
    /// lists are ordered, and retention counts, by this.
    #[serde(default)]
    pub stored_at_ms: u64,
    pub format_version: u32,
    pub collections: Vec<BackupCollection>,
    /// The archive's size in bytes.
    pub size_bytes: u64,
    /// The archive's SHA-256, lowercase hex.
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BackupCollection {
    pub name: String,
    pub dimension: usize,
    #[schemars(with = "crate::model::MetricSchema")]
    pub metric: Metric,
    pub points: u64,
}

/// The caller's backups, newest first.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BackupList {
    pub backups: Vec<BackupInfo>,
}

/// The directory holding every user's backups.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("backups")
}

/// The caller's own directory: its user id, or `local` for a deployment
/// with the Hub off. Nothing in a request chooses it.
pub fn dir_of(data_dir: &Path, caller: &Caller) -> PathBuf {
    root(data_dir).join(owner_of(caller))
}

pub fn owner_of(caller: &Caller) -> String {
    match caller {
        Caller::Tenant(t) => t.user_id.to_string(),
        Caller::Local | Caller::LocalReader => "local".to_owned(),
    }
}

pub fn archive_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.tar.gz"))
}

fn info_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// A backup id as the caller gave it, if it can be one of ours (a UUID):
/// anything else names no backup, and never a path.
pub fn parse_id(id: &str) -> Option<String> {
    uuid::Uuid::parse_str(id)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

fn internal(what: &'static str) -> impl Fn(std::io::Error) -> ServiceError {
    move |e| ServiceError::Internal(format!("{what}: {e}"))
}

/// The backup `id` in `dir`, if it is whole.
pub fn info(dir: &Path, id: &str) -> Option<BackupInfo> {
    if !archive_path(dir, id).is_file() {
        return None;
    }
    let body = fs::read(info_path(dir, id)).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The owners with a backup directory under `root`.
pub fn owners(root: &Path) -> Vec<String> {
    fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Every whole backup in `dir`, newest first (by when it was stored here).
pub fn list(dir: &Path) -> Result<Vec<BackupInfo>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(internal("listing backups")(e)),
    };
    let mut all: Vec<BackupInfo> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let id = parse_id(name.strip_suffix(".json")?)?;
            info(dir, &id)
        })
        .collect();
    all.sort_by(|a, b| {
        (b.stored_at_ms, b.created_at_ms, &b.id).cmp(&(a.stored_at_ms, a.created_at_ms, &a.id))
    });
    Ok(all)
}

/// Makes the archive at `tmp` (written and synced) backup `info.id`: the
/// archive is renamed into place, then the info written beside it; the
/// backup exists from that second rename on.
pub fn commit(dir: &Path, tmp: &Path, info: &BackupInfo) -> Result<()> {
    fs::rename(tmp, archive_path(dir, &info.id)).map_err(internal("placing a backup"))?;
    let body = serde_json::to_vec_pretty(info).expect("serializable");
    // Synced with the directory, so the rename of the archive too.
    Ok(write_atomic(&info_path(dir, &info.id), &body)?)
}

/// Removes a backup: its info first, so that it is gone at once even if
/// removing the archive fails. Returns the archive's size.
pub fn remove(dir: &Path, id: &str) -> Result<u64> {
    let size = fs::metadata(archive_path(dir, id)).map_or(0, |m| m.len());
    fs::remove_file(info_path(dir, id)).map_err(internal("removing a backup"))?;
    if let Err(e) = fs::remove_file(archive_path(dir, id)) {
        tracing::warn!(error = %e, "removing a backup's archive failed; removed at next start");
    }
    sync_dir(dir)?;
    Ok(size)
}

/// Removes what an interrupted create, upload or restore left behind, in
/// every user's directory; returns the bytes of the whole backups kept.
pub fn clean(data_dir: &Path) -> std::io::Result<u64> {
    let root = root(data_dir);
    let users = match fs::read_dir(&root) {
        Ok(u) => u,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut kept = 0;
    for user in users {
        let user = user?;
        if !user.file_type()?.is_dir() {
            continue;
        }
        let dir = user.path();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let whole = |id: &str| parse_id(id).is_some_and(|id| info(&dir, &id).is_some());
            let keep = if let Some(id) = name.strip_suffix(".tar.gz") {
                whole(id)
            } else if let Some(id) = name.strip_suffix(".json") {
                whole(id)
            } else {
                false
            };
            if keep {
                if name.ends_with(".tar.gz") {
                    kept += entry.metadata()?.len();
                }
                continue;
            }
            tracing::info!(file = %name, "removing an unfinished backup file");
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
    }
    Ok(kept)
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// `ms` since the epoch as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_083_199_000), "2026-11-30T23:59:59.000Z");
    }

    #[test]
    fn ids_are_uuids_only() {
        assert!(parse_id("../etc/passwd").is_none());
        assert!(parse_id("").is_none());
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(parse_id(&id.to_uppercase()), Some(id));
    }
}
