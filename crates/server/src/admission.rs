//! Admission: before a route's handler runs, and before any of the body
//! is read, the request's caller is identified, the route's permission is
//! checked, and the request is admitted into the caller's share. A refusal
//! (401, 403, 429, 503) reads at most a small body to its end, so that the
//! client sees the answer, and closes the connection past that.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use vectorizer_service::Permission;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{Admitted, identify};

/// Bodies of refused requests up to this size are read and dropped, so the
/// client can read the refusal; a larger one closes the connection.
const DRAIN: usize = 1 << 20;

/// How long a request refused because its tenant has its share in flight
/// waits before it is answered (holding nothing of the tenant's share). A
/// client that sends again at once, whatever `Retry-After` says, can then
/// make the server refuse only a few requests a second per connection:
/// refusing costs the runtime time that other tenants' requests need.
const BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// What the admission layer of one route needs.
#[derive(Clone)]
pub struct Gate {
    pub state: AppState,
    pub need: Option<Permission>,
}

pub async fn admit(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let decided = async {
        let caller = identify(&mut parts, &gate.state, gate.need).await?;
        gate.state.service.admit(caller).map_err(ApiError::from)
    }
    .await;
    match decided {
        Ok(call) => {
            parts.extensions.insert(Admitted(Arc::new(call)));
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => {
            if e.code == "too_many_requests" {
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            // A client that waits for `100 Continue`, or declares more than
            // is drained, is not asked to send a body only to be refused.
            let declared = parts
                .headers
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            let expects = parts.headers.contains_key(axum::http::header::EXPECT);
            let mut resp = e.into_response();
            if expects || declared.is_some_and(|n| n > DRAIN) {
                resp.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            } else {
                drain(body).await;
            }
            resp
        }
    }
}

/// Reads a refused request's body to its end, up to [`DRAIN`] bytes.
async fn drain(mut body: Body) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen > DRAIN {
            return;
        }
    }
}
