//! The MCP adapter (Model Context Protocol): the service's operations as
//! tools for AI agents, beside REST. Over streamable HTTP at `/mcp`, with
//! no server-side sessions: every HTTP request is authenticated and
//! admitted exactly as a REST request is, and its tool call acts for that
//! request's key alone. Over stdio, for one local user.

pub mod catalog;
pub mod front;
pub mod handler;
pub mod oplog;
pub mod register;
pub mod stdio;
pub mod tools;

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use vectorizer_service::Service;

use crate::app::AppState;
use catalog::ToolDef;
use handler::{Handler, Source};
use oplog::OpLog;
use register::Registration;

/// How `/mcp` is served.
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// `Host` values answered; empty: any.
    pub allowed_hosts: Vec<String>,
    pub max_body_bytes: usize,
}

/// The MCP server's shared parts.
pub struct Mcp {
    pub tools: Arc<Vec<ToolDef>>,
    pub oplog: OpLog,
    pub options: McpOptions,
    pub registration: Arc<Registration>,
}

impl Mcp {
    pub fn new(service: &Service, options: McpOptions, oplog: OpLog) -> Mcp {
        let opts = service.options();
        let tools = catalog::catalog(crate::openapi::DocLimits {
            engine: opts.limits,
            max_batch_searches: opts.max_batch_searches,
        });
        Mcp {
            tools,
            oplog,
            options,
            registration: Arc::new(Registration::default()),
        }
    }

    /// The handler for one process-wide source of callers.
    pub fn handler(&self, service: Arc<Service>, source: Source) -> Handler {
        Handler {
            service,
            tools: self.tools.clone(),
            oplog: self.oplog.clone(),
            source,
            timeout: None,
        }
    }
}

/// The `/mcp` service: admission (authentication, the caller's share)
/// first, before any MCP message is read; then the front, which reads
/// messages and runs tool calls; then rmcp's stateless server for the
/// short protocol messages.
pub fn http_service(state: &AppState, mcp: &Mcp) -> axum::routing::Router<AppState> {
    let mut handler = mcp.handler(state.service.clone(), Source::Http);
    handler.timeout = Some(state.limits.request_timeout);
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(front::PROTOCOL_MESSAGE);
    config = if mcp.options.allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(mcp.options.allowed_hosts.clone())
    };
    let front = front::Front {
        handler: handler.clone(),
        limit: mcp.options.max_body_bytes,
        hosts: config.allowed_hosts.clone(),
    };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    axum::routing::Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::map_response(json_refusal))
        .layer(axum::middleware::from_fn_with_state(front, front::front))
        .layer(axum::middleware::from_fn_with_state(
            crate::admission::Gate {
                state: state.clone(),
                need: None,
            },
            crate::admission::admit,
        ))
}

/// rmcp's own refusals (a wrong method, `Accept` or `Host`, a body that
/// is not JSON-RPC) come as plain text: turned into the JSON error body
/// every other route answers with, keeping their headers (`Allow`).
async fn json_refusal(res: axum::response::Response) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // rmcp's refusal texts are one short line.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let (status, code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            status,
            "method_not_allowed",
            "use POST for MCP messages; this server keeps no sessions to stream or delete"
                .to_owned(),
        ),
        StatusCode::NOT_ACCEPTABLE => (
            status,
            "not_acceptable",
            "the Accept header must allow application/json and text/event-stream".to_owned(),
        ),
        StatusCode::FORBIDDEN => (
            status,
            "host_not_allowed",
            "the Host header is not one this server answers (mcp.allowed_hosts)".to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            status,
            "payload_too_large",
            "the request body is larger than mcp.max_body_bytes".to_owned(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE if text.starts_with("fail to deserialize") => (
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not a JSON-RPC message".to_owned(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            status,
            "unsupported_media_type",
            "the body must be application/json".to_owned(),
        ),
        s if s.is_server_error() => return crate::error::ApiError::internal().into_response(),
        s => (s, "invalid_request", text),
    };
    let mut out = crate::error::ApiError::new(status, code, message).into_response();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    for (k, v) in out.headers() {
        parts.headers.insert(k.clone(), v.clone());
    }
    *out.headers_mut() = parts.headers;
    out
}

/// The hosts `/mcp` answers by default: loopback names, and the host of
/// the public URL.
pub fn default_hosts(public_url: &str) -> Vec<String> {
    let mut hosts = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let authority = public_url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .unwrap_or("");
    if !authority.is_empty() {
        hosts.push(authority.to_owned());
        // The host without its port too.
        if let Some((h, port)) = authority.rsplit_once(':')
            && port.bytes().all(|b| b.is_ascii_digit())
            && !h.is_empty()
        {
            hosts.push(h.trim_start_matches('[').trim_end_matches(']').to_owned());
        }
    }
    hosts
}
