//! Uploads: an archive from outside, hostile until proven otherwise. The
//! body is read only once the key's permission was checked, capped as it
//! arrives, written to a temporary file (hashed on the way), then read
//! whole against every cap and its own manifest before it becomes a
//! backup. Any refusal leaves nothing behind.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Leftover, archive, info_of, store};
use crate::caller::Permission;
use crate::error::{Result, ServiceError};
use crate::service::{Call, Service};

/// Bytes gathered before they are written out in one blocking step.
const CHUNK: usize = 1 << 20;

/// An upload's body as it arrives: pieces, or the reason it broke off.
pub struct UploadBody(mpsc::Receiver<std::result::Result<Bytes, String>>);

impl UploadBody {
    /// A body fed through the sender (a few pieces buffered).
    pub fn channel() -> (mpsc::Sender<std::result::Result<Bytes, String>>, UploadBody) {
        let (tx, rx) = mpsc::channel(8);
        (tx, UploadBody(rx))
    }
}

/// What an upload's body was refused for, when it is too large.
fn too_large(max: u64) -> ServiceError {
    ServiceError::TooLarge {
        code: "backup_too_large",
        message: format!("an uploaded backup is at most {max} bytes"),
    }
}

impl Service {
    /// Stores an archive the caller sends as one of its backups, once it is
    /// found whole: its SHA-256 against `checksum` (when given), every file
    /// against the manifest, and every cap of `backups` in the config.
    /// `declared` is the body's announced length, refused early when over
    /// the cap.
    pub async fn upload_backup(
        self: &Arc<Self>,
        call: &Arc<Call>,
        declared: Option<u64>,
        checksum: Option<&str>,
        body: UploadBody,
    ) -> Result<store::BackupInfo> {
        let (svc, call, checksum) = (self.clone(), call.clone(), checksum.map(str::to_owned));
        super::detached(async move {
            let r = svc
                .upload_inner(&call, declared, checksum.as_deref(), body)
                .await;
            svc.backup_stats.record("upload", &r);
            r
        })
        .await
    }

    async fn upload_inner(
        self: &Arc<Self>,
        call: &Call,
        declared: Option<u64>,
        checksum: Option<&str>,
        mut body: UploadBody,
    ) -> Result<store::BackupInfo> {
        let (caller, ticket) = call.enter(Permission::Write)?;
        crate::service::unclustered(self, "backups")?;
        let _one = self.writing_backup(caller)?;
        let checksum = match checksum {
            Some(c) if archive::is_sha256(c.trim()) => Some(c.trim().to_ascii_lowercase()),
            Some(_) => {
                return Err(ServiceError::invalid(
                    "invalid_checksum",
                    "X-Checksum-SHA256 must be 64 hex digits",
                ));
            }
            None => None,
        };
        let opts = self.options.backups.clone();
        if declared.is_some_and(|n| n > opts.max_upload_bytes) {
            return Err(too_large(opts.max_upload_bytes));
        }
        // The quota is asked before any byte is written: for a body of
        // unknown length, the bytes the plan has left bound what is read.
        let allowance = self
            .check_backup_quota(caller, declared.unwrap_or(1))
            .await?;
        let dir = self.backup_dir(caller);
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let tmp = dir.join(format!("{id}.tar.gz.tmp"));
        let leftover = Leftover::new(tmp.clone());
        let mut out = {
            let (dir, tmp) = (dir.clone(), tmp.clone());
            ticket
                .run(move |_| {
                    std::fs::create_dir_all(&dir)
                        .and_then(|()| std::fs::File::create_new(&tmp))
                        .map(|f| archive::Hashing::new(std::io::BufWriter::with_capacity(CHUNK, f)))
                        .map_err(|e| ServiceError::Internal(format!("creating an upload: {e}")))
                })
                .await?
        };
        let mut received = 0u64;
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
        loop {
            let next = tokio::time::timeout(opts.idle_timeout, body.0.recv()).await;
            let piece = match next {
                Err(_) => {
                    return Err(ServiceError::invalid(
                        "upload_stalled",
                        format!(
                            "no part of the body arrived for {} s",
                            opts.idle_timeout.as_secs()
                        ),
                    ));
                }
                Ok(None) => None,
                Ok(Some(Err(e))) => {
                    return Err(ServiceError::invalid(
                        "invalid_body",
                        format!("the body could not be read: {e}"),
                    ));
                }
                Ok(Some(Ok(b))) => Some(b),
            };
            if let Some(b) = &piece {
                received += b.len() as u64;
                if received > opts.max_upload_bytes {
                    return Err(too_large(opts.max_upload_bytes));
                }
                if let Some((limit, left)) = allowance.filter(|(_, left)| received > *left) {
                    return Err(ServiceError::QuotaExceeded {
                        quota: "backup",
                        limit,
                        current: limit.saturating_sub(left),
                        requested: received,
                    });
                }
                buf.extend_from_slice(b);
            }
            if buf.len() >= CHUNK || (piece.is_none() && !buf.is_empty()) {
                let chunk = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK));
                out = ticket
                    .run(move |_| {
                        out.write_all(&chunk)
                            .map(|()| out)
                            .map_err(|e| ServiceError::Internal(format!("writing an upload: {e}")))
                    })
                    .await?;
            }
            if piece.is_none() {
                break;
            }
        }
        if received == 0 {
            return Err(ServiceError::invalid("empty_body", "the archive is empty"));
        }
        if declared.is_none() {
            self.check_backup_quota(caller, received).await?;
        }
        let caps = opts.caps;
        let (size, sha, manifest) = {
            let tmp = tmp.clone();
            ticket
                .run(move |_| {
                    let (buffered, size, sha) = out.finish();
                    let file = buffered
                        .into_inner()
                        .map_err(|e| ServiceError::Internal(format!("writing an upload: {e}")))?;
                    file.sync_all()
                        .map_err(|e| ServiceError::Internal(format!("syncing an upload: {e}")))?;
                    drop(file);
                    if checksum.is_some_and(|c| c != sha) {
                        return Err(ServiceError::unprocessable(
                            "backup_corrupt",
                            "the body does not match X-Checksum-SHA256",
                        ));
                    }
                    let manifest = archive::read(&tmp, None, None, caps, &|_| {})?;
                    Ok((size, sha, manifest))
                })
                .await?
        };
        let info = info_of(id, &manifest, size, sha);
        let info = self
            .keep_backup(caller, ticket, dir, leftover, info)
            .await?;
        tracing::info!(backup = %info.id, bytes = info.size_bytes, "backup uploaded");
        Ok(info)
    }
}
