//! Backup handlers, under `/api/hub/backups`: each calls its one service
//! entry point. The archive goes out and comes in streamed: a download is
//! read a chunk at a time on the caller's worker threads, and an upload's
//! body is handed to the service piece by piece as it arrives (past the
//! JSON body limit; the service caps it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::extract::Path;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use vectorizer_service::Call;
use vectorizer_service::backup::{
    BackupInfo, BackupList, CreateBackup, RestoreBackup, Restored, UploadBody, quiet,
};

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, CallOf};

/// The header carrying an archive's SHA-256, lowercase hex.
pub const CHECKSUM: &str = "x-checksum-sha256";
/// Bytes of a download read in one blocking step.
const CHUNK: usize = 256 << 10;

/// How long a download of `size` bytes may take: a minute, and a second
/// per MiB. A reader slower than that is cut off, so that no download
/// holds its slot and its file (perhaps a deleted backup's) for ever.
fn send_within(size: u64) -> std::time::Duration {
    std::time::Duration::from_secs(60 + size / (1 << 20))
}

impl crate::answer::Weight for BackupInfo {}
impl crate::answer::Weight for Restored {}
impl crate::answer::Weight for BackupList {
    fn weight(&self) -> usize {
        self.backups
            .iter()
            .map(|b| 300 + b.collections.len() * 120)
            .sum()
    }
}

pub async fn list(
    State(state): State<AppState>,
    CallOf(call): CallOf,
) -> Result<Response, ApiError> {
    let out = state.service.list_backups(&call).await?;
    crate::answer::json(&call, StatusCode::OK, out).await
}

pub async fn create(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    ApiJson(req): ApiJson<CreateBackup>,
) -> Result<Response, ApiError> {
    let out = state.service.create_backup(&call, req, quiet()).await?;
    crate::answer::json(&call, StatusCode::CREATED, out).await
}

pub async fn get(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let out = state.service.get_backup(&call, &id).await?;
    crate::answer::json(&call, StatusCode::OK, out).await
}

pub async fn delete(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.service.delete_backup(&call, &id).await?;
    crate::answer::json(&call, StatusCode::OK, serde_json::json!({"deleted": true})).await
}

pub async fn restore(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    ApiJson(req): ApiJson<RestoreBackup>,
) -> Result<Response, ApiError> {
    let out = state.service.restore_backup(&call, req, quiet()).await?;
    crate::answer::json(&call, StatusCode::OK, out).await
}

/// The archive, checked against its SHA-256 first, then streamed.
pub async fn download(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (info, file) = state.service.open_backup(&call, &id).await?;
    let stream = FileStream {
        call,
        file: Some(file),
        left: info.size_bytes,
        reading: None,
        until: std::time::Instant::now() + send_within(info.size_bytes),
    };
    let disposition = format!("attachment; filename=\"backup-{}.tar.gz\"", info.id);
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "application/gzip".parse().expect("valid"),
    );
    h.insert(header::CONTENT_LENGTH, info.size_bytes.into());
    h.insert(
        CHECKSUM,
        info.sha256.parse().map_err(|_| ApiError::internal())?,
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        disposition.parse().map_err(|_| ApiError::internal())?,
    );
    Ok(resp)
}

/// An archive from the client, as the raw body.
pub async fn upload(
    State(state): State<AppState>,
    CallOf(call): CallOf,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let gzip = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim();
            [
                "application/gzip",
                "application/x-gzip",
                "application/octet-stream",
            ]
            .iter()
            .any(|t| m.eq_ignore_ascii_case(t))
        });
    if !gzip {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected the archive with Content-Type: application/gzip",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let checksum = match headers.get(CHECKSUM).map(|v| v.to_str()) {
        Some(Ok(v)) => Some(v.to_owned()),
        Some(Err(_)) => Some(String::new()),
        None => None,
    };
    let (tx, rx) = UploadBody::channel();
    // The body is read only as fast as the service takes it; once the
    // service is done (taken or refused), the rest is not read.
    let pump = async move {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let piece = match frame {
                Ok(f) => match f.into_data() {
                    Ok(d) => Ok(d),
                    Err(_) => continue,
                },
                Err(e) => Err(e.to_string()),
            };
            let failed = piece.is_err();
            if tx.send(piece).await.is_err() || failed {
                return;
            }
        }
    };
    let service = state.service.clone();
    let stored = async {
        service
            .upload_backup(&call, declared, checksum.as_deref(), rx)
            .await
    };
    tokio::pin!(pump);
    tokio::pin!(stored);
    let mut pumping = true;
    let out = loop {
        tokio::select! {
            // The service first: it checks the key before the body is read.
            biased;
            r = &mut stored => break r,
            () = &mut pump, if pumping => pumping = false,
        }
    };
    let mut resp = match out {
        Ok(info) => crate::answer::json(&call, StatusCode::CREATED, info).await?,
        Err(e) => ApiError::from(e).into_response(),
    };
    if pumping {
        // The body was not read to its end: the connection cannot be reused.
        resp.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    Ok(resp)
}

type Reading = Pin<
    Box<dyn Future<Output = Result<std::io::Result<(std::fs::File, Vec<u8>)>, ApiError>> + Send>,
>;

/// A backup's archive, read on the caller's worker threads a chunk at a
/// time; the call (its slot) is held until the last byte is taken.
struct FileStream {
    call: Arc<Call>,
    file: Option<std::fs::File>,
    left: u64,
    reading: Option<Reading>,
    until: std::time::Instant,
}

impl futures_core::Stream for FileStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.reading.is_none() {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            if std::time::Instant::now() > self.until {
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client read the backup too slowly",
                ))));
            }
            let Some(mut file) = self.file.take() else {
                return Poll::Ready(None);
            };
            let want = CHUNK.min(self.left as usize);
            let call = self.call.clone();
            self.reading = Some(Box::pin(async move {
                call.run_blocking(move || {
                    use std::io::Read;
                    let mut buf = vec![0; want];
                    file.read_exact(&mut buf).map(|()| (file, buf))
                })
                .await
                .map_err(ApiError::from)
            }));
        }
        let reading = self.reading.as_mut().expect("set above");
        match reading.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.reading = None;
                match r {
                    Ok(Ok((file, buf))) => {
                        self.left -= buf.len() as u64;
                        self.file = Some(file);
                        Poll::Ready(Some(Ok(Bytes::from(buf))))
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "reading a backup for a download failed");
                        Poll::Ready(Some(Err(e)))
                    }
                    Err(_) => {
                        Poll::Ready(Some(Err(std::io::Error::other("the download was cut off"))))
                    }
                }
            }
        }
    }
}
