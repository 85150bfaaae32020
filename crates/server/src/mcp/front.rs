//! `/mcp`'s front: reads each POSTed message within the MCP body limit
//! and runs tool calls itself. A tool call's envelope is read without
//! building a value tree (its arguments stay JSON text until the tool's
//! typed request is read from them), and any message longer than
//! [`PARSE_IN_PLACE`] is read on one of the caller's worker threads,
//! inside the caller's share. Only short protocol messages (`initialize`,
//! `tools/list`, `ping`, notifications) reach rmcp, which reads them into
//! generic JSON; a request the headers already refuse reaches rmcp
//! without its body.

use std::borrow::Cow;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::ErrorData as McpError;
use rmcp::model::CallToolResult;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::handler::Handler;
use super::tools::{Args, Failure, PARSE_IN_PLACE};
use crate::error::ApiError;
use crate::extract::Admitted;

/// Longest message other than a tool call: protocol messages are short.
pub const PROTOCOL_MESSAGE: usize = 64 << 10;

/// What the front needs.
#[derive(Clone)]
pub struct Front {
    pub handler: Handler,
    /// The MCP body limit (`mcp.max_body_bytes`).
    pub limit: usize,
    /// `Host` values answered; empty: any.
    pub hosts: Vec<String>,
}

/// A message, as far as the front reads it.
enum Message {
    /// A `tools/call` request.
    ToolCall {
        id: Box<RawValue>,
        name: String,
        args: Result<Args, Failure>,
    },
    /// A `tools/call` request whose `params` are not a tool call's.
    BadCall { id: Box<RawValue>, message: String },
    /// Valid JSON, any other message: for rmcp.
    Protocol,
    /// Not JSON at all.
    NotJson,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct Reply<'a> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a CallToolResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a McpError>,
}

fn classify(bytes: &[u8]) -> Message {
    let env = match serde_json::from_slice::<Envelope>(bytes) {
        Ok(e) => e,
        Err(e) if e.is_data() => return Message::Protocol,
        Err(_) => return Message::NotJson,
    };
    // Anything but a JSON-RPC 2.0 tool call is rmcp's to answer (or refuse).
    let (Some(id), Some("tools/call"), Some("2.0")) =
        (env.id, env.method.as_deref(), env.jsonrpc.as_deref())
    else {
        return Message::Protocol;
    };
    // JSON-RPC ids are strings or numbers.
    let first = id.get().as_bytes().first().copied().unwrap_or(b'n');
    if !(first == b'"' || first == b'-' || first.is_ascii_digit()) {
        return Message::Protocol;
    }
    let id = id.to_owned();
    let params = env.params.map(RawValue::get).unwrap_or("null");
    match serde_json::from_str::<CallParams>(params) {
        Ok(p) => Message::ToolCall {
            id,
            name: p.name.into_owned(),
            args: p.arguments.map_or(Ok(Args::default()), Args::parse),
        },
        Err(_) => Message::BadCall {
            id,
            message: "`params`: expected {\"name\": <tool>, \"arguments\": {...}}".into(),
        },
    }
}

/// The `/mcp` layer in front of rmcp.
pub async fn front(State(front): State<Front>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if let Some(v) = parts.headers.get("mcp-protocol-version") {
        let known = v.to_str().is_ok_and(|v| {
            rmcp::model::ProtocolVersion::KNOWN_VERSIONS
                .iter()
                .any(|k| k.as_str() == v)
        });
        if !known {
            let versions: Vec<&str> = rmcp::model::ProtocolVersion::KNOWN_VERSIONS
                .iter()
                .map(|k| k.as_str())
                .collect();
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_protocol_version",
                format!(
                    "MCP-Protocol-Version `{}` is not one this server speaks ({})",
                    super::tools::echo(&String::from_utf8_lossy(v.as_bytes())),
                    versions.join(", ")
                ),
            )
            .into_response();
        }
    }
    if parts.method != Method::POST || !headers_ok(&front, &parts.headers) {
        // rmcp answers these from the headers alone.
        return next.run(Request::from_parts(parts, Body::empty())).await;
    }
    // The body within the request timeout (the route's own is the
    // backup tools' longer one).
    let reading = read(body, &parts.headers, front.limit);
    let read = match front.handler.timeout {
        Some(limit) => tokio::time::timeout(limit, reading)
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    "the request took too long",
                ))
            }),
        None => reading.await,
    };
    let bytes = match read {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let call = parts.extensions.get::<Admitted>().map(|a| a.0.clone());
    let classified = if bytes.len() <= PARSE_IN_PLACE {
        Ok((classify(&bytes), bytes))
    } else {
        match &call {
            Some(c) => c
                .run_blocking(move || (classify(&bytes), bytes))
                .await
                .map_err(ApiError::from),
            None => Err(ApiError::internal()),
        }
    };
    let (message, bytes) = match classified {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let (id, outcome) = match message {
        Message::NotJson if bytes.len() > PROTOCOL_MESSAGE => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body is not a JSON-RPC message",
            )
            .into_response();
        }
        Message::Protocol if bytes.len() > PROTOCOL_MESSAGE => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "MCP messages other than tools/call are at most {} KiB",
                    PROTOCOL_MESSAGE >> 10
                ),
            )
            .into_response();
        }
        Message::NotJson | Message::Protocol => {
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
        }
        Message::BadCall { id, message } => (id, Err(McpError::invalid_params(message, None))),
        Message::ToolCall { id, name, args } => {
            drop(bytes);
            let context = front.handler.context(Some(&parts)).await;
            (id, front.handler.call(&name, args, context).await)
        }
    };
    let encode = move || {
        let reply = Reply {
            jsonrpc: "2.0",
            id: &id,
            result: outcome.as_ref().ok(),
            error: outcome.as_ref().err(),
        };
        serde_json::to_vec(&reply)
    };
    // The answer may be large: written on the caller's workers too.
    let body = match &call {
        Some(c) => c.run_blocking(encode).await.map_err(ApiError::from),
        None => Ok(encode()),
    };
    match body {
        Ok(Ok(body)) => (
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from(body),
        )
            .into_response(),
        Ok(Err(_)) => ApiError::internal().into_response(),
        Err(e) => e.into_response(),
    }
}

/// Reads the body, refusing one over `limit` before reading it when its
/// length is declared.
async fn read(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than mcp.max_body_bytes",
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if e.into_inner().is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "could not read the request body",
            )
        }
    })
}

/// Whether a POST's headers are those rmcp serves: an allowed `Host`, an
/// `Accept` of both JSON and event streams, a JSON body.
fn headers_ok(front: &Front, headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let host_ok = front.hosts.is_empty()
        || text(header::HOST)
            .and_then(authority)
            .is_some_and(|(host, port)| {
                front
                    .hosts
                    .iter()
                    .filter_map(|a| authority(a))
                    .any(|(h, p)| {
                        h.eq_ignore_ascii_case(&host) && p.is_none_or(|p| port == Some(p))
                    })
            });
    let essences = |v: &str| {
        v.split(',')
            .map(|e| {
                e.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .collect::<Vec<_>>()
    };
    let accepted: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(essences)
        .collect();
    let accept_ok = ["application/json", "text/event-stream"]
        .iter()
        .all(|m| accepted.iter().any(|a| a == m));
    let json = text(header::CONTENT_TYPE)
        .is_some_and(|v| essences(v).first().is_some_and(|e| e == "application/json"));
    host_ok && accept_ok && json
}

/// A `host[:port]` as host and port; an IPv6 host with or without its
/// brackets.
fn authority(a: &str) -> Option<(String, Option<u16>)> {
    let a = a.trim();
    if let Some(rest) = a.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match a.split(':').count() {
        1 => Some((a.to_owned(), None)),
        2 => {
            let (host, port) = a.split_once(':')?;
            Some((host.to_owned(), Some(port.parse().ok()?)))
        }
        _ => Some((a.to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_with_and_without_ports() {
        assert_eq!(authority("localhost"), Some(("localhost".into(), None)));
        assert_eq!(authority("a.b:8080"), Some(("a.b".into(), Some(8080))));
        assert_eq!(authority("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(authority("::1"), Some(("::1".into(), None)));
        assert_eq!(authority("a:b"), None);
    }

    #[test]
    fn tool_calls_are_told_from_protocol_messages() {
        let call = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"collection":"c","vector":[1,2]},"_meta":{"x":1}}}"#;
        match classify(call) {
            Message::ToolCall { id, name, args } => {
                assert_eq!(id.get(), "7");
                assert_eq!(name, "search");
                assert_eq!(
                    args.ok().map(|a| a.len()),
                    Some("collectionvector".len() + 8)
                );
            }
            _ => panic!("not read as a tool call"),
        }
        for other in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#[..],
            br#"{"jsonrpc":"2.0","method":"tools/call"}"#,
            br#"{"jsonrpc":"2.0","id":{"a":1},"method":"tools/call"}"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call"}]"#,
            br#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"search"}}"#,
        ] {
            assert!(matches!(classify(other), Message::Protocol));
        }
        assert!(matches!(classify(b"{not json"), Message::NotJson));
        assert!(matches!(
            classify(
                br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"arguments":{}}}"#
            ),
            Message::BadCall { .. }
        ));
    }
}
