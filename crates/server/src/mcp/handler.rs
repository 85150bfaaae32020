//! The MCP server handler: `tools/list` shows the tools the caller's key
//! may call, `tools/call` runs one. Over HTTP, the caller is the one the
//! admission layer found on that very HTTP request (nothing is kept
//! between requests); over stdio, the process's one user.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use vectorizer_service::{Call, Caller, Service};

use super::catalog::ToolDef;
use super::oplog::{self, OpLog, Record, Who};
use super::tools::{self, Args, Failure};
use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::Admitted;

/// Whom tool calls act for.
#[derive(Clone)]
pub enum Source {
    /// Each HTTP request's caller, admitted by the `/mcp` route's layer.
    Http,
    /// The stdio process's one user: local with the Hub off, else the
    /// holder of an access key, checked with the Hub like a REST key.
    Stdio(Option<(Arc<Auth>, String)>),
}

/// One handler; over HTTP a fresh one serves each request (cheap: it
/// holds only shared parts).
#[derive(Clone)]
pub struct Handler {
    pub service: Arc<Service>,
    pub tools: Arc<Vec<ToolDef>>,
    pub oplog: OpLog,
    pub source: Source,
    /// A tool call's time, as a REST request's (`server.request_timeout`);
    /// the backup tools that move whole archives are held to the backup
    /// routes' timeout instead, by the HTTP layer. `None`: no limit (stdio).
    pub timeout: Option<std::time::Duration>,
}

/// Tools that take as long as the backup routes they stand for.
const BACKUP_TOOLS: [&str; 2] = ["create_backup", "restore_backup"];

/// The request's call and request id.
pub struct Context {
    call: Arc<Call>,
    request_id: Option<String>,
}

impl Handler {
    /// The caller: over HTTP, the one admitted on the request `parts`.
    pub async fn context(&self, parts: Option<&http::request::Parts>) -> Result<Context, ApiError> {
        match &self.source {
            Source::Http => {
                let call = parts.and_then(|p| p.extensions.get::<Admitted>());
                let Some(Admitted(call)) = call else {
                    tracing::error!("an MCP request reached the handler without admission");
                    return Err(ApiError::internal());
                };
                let request_id = parts
                    .and_then(|p| p.headers.get(crate::middleware::REQUEST_ID))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok(Context {
                    call: call.clone(),
                    request_id,
                })
            }
            Source::Stdio(auth) => {
                let caller = match auth {
                    None => Caller::Local,
                    Some((auth, key)) => Caller::Tenant(
                        auth.authenticate(key, IpAddr::V4(Ipv4Addr::LOCALHOST))
                            .await
                            .map_err(crate::extract::auth_error)?,
                    ),
                };
                let call = self.service.admit(caller)?;
                Ok(Context {
                    call: Arc::new(call),
                    request_id: None,
                })
            }
        }
    }
}

impl Handler {
    /// The permission, then the arguments, then the operation.
    async fn execute(
        &self,
        tool: &ToolDef,
        call: &Arc<Call>,
        args: Result<Args, Failure>,
        collection: &mut Option<String>,
    ) -> Result<tools::Done, Failure> {
        // A call the key may not make is refused whatever its arguments.
        call.caller().require(tool.permission)?;
        let mut args = args?;
        *collection = tools::take_collection(&mut args, tool.takes_collection)?;
        tools::run(&self.service, call, tool.name, collection.as_deref(), args).await
    }
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("vectorizer", env!("CARGO_PKG_VERSION"))
                    .with_title("Vectorizer"),
            )
            .with_instructions(
                "A vector database. Create a collection with a fixed dimension and metric, upsert points (id, vector, optional JSON payload), then search by vector, optionally filtered by payload fields. You see and change only your own collections.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let c = self
            .context(ctx.extensions.get::<http::request::Parts>())
            .await
            .map_err(protocol)?;
        let tools = self
            .tools
            .iter()
            .filter(|t| c.call.caller().require(t.permission).is_ok())
            .map(|t| t.tool.clone())
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let context = self
            .context(ctx.extensions.get::<http::request::Parts>())
            .await;
        // Over stdio the one local user's arguments come parsed by rmcp;
        // over HTTP, `/mcp`'s front reads tool calls itself (see `front`).
        let args = match request.arguments {
            None => Ok(Args::default()),
            Some(a) => serde_json::value::to_raw_value(&a)
                .map_err(|_| Failure::Invalid("`arguments`: expected an object".into()))
                .and_then(|raw| Args::parse(&raw)),
        };
        self.call(request.name.as_ref(), args, context)
            .await
            .map(CallToolResponse::Complete)
    }
}

impl Handler {
    /// Runs tool `name` for the caller in `context`, then meters and logs
    /// the call.
    pub async fn call(
        &self,
        name: &str,
        args: Result<Args, Failure>,
        context: Result<Context, ApiError>,
    ) -> Result<CallToolResult, McpError> {
        let started = Instant::now();
        let Some(tool) = self.tools.iter().find(|t| t.name == name) else {
            return Err(McpError::invalid_params(
                format!("unknown tool `{}`", tools::echo(name)),
                None,
            ));
        };
        let (context, failed) = match context {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(Failure::Failed(e))),
        };
        let mut collection = None;
        let result = match (&context, failed) {
            (Some(c), None) => {
                let run = self.execute(tool, &c.call, args, &mut collection);
                match self.timeout.filter(|_| !BACKUP_TOOLS.contains(&tool.name)) {
                    None => run.await,
                    Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                        Err(Failure::Failed(ApiError::new(
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            "timeout",
                            "the request took too long",
                        )))
                    }),
                }
            }
            (_, Some(f)) => Err(f),
            (None, None) => Err(Failure::Failed(ApiError::internal())),
        };
        let code = match &result {
            Ok(_) => "ok",
            Err(Failure::Invalid(_)) => "invalid_params",
            Err(Failure::Failed(e)) => e.code,
        };
        let count = result.as_ref().ok().and_then(|d| d.count);
        let seconds = started.elapsed().as_secs_f64();
        crate::metrics::METRICS.observe_tool(tool.name, code, seconds);
        let (who, user_id, access_key_id) = match context.as_ref().map(|c| c.call.caller()) {
            Some(Caller::Tenant(t)) => (
                Who::Tenant(t.user_id),
                Some(t.user_id),
                Some(t.access_key_id),
            ),
            Some(_) => (Who::Local, None, None),
            None => (Who::Unidentified, None, None),
        };
        // Only a valid name is written as it is: the argument is the
        // caller's, of any length and content.
        let collection =
            collection
                .as_deref()
                .map(|c| match vectorizer_engine::config::validate_name(c) {
                    Ok(()) => c,
                    Err(_) => oplog::INVALID_NAME,
                });
        self.oplog.record(
            who,
            &Record {
                time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                request_id: context.as_ref().and_then(|c| c.request_id.as_deref()),
                user_id,
                access_key_id,
                tool: tool.name,
                collection,
                outcome: code,
                latency_ms: (seconds * 1e6).round() / 1e3,
                results: count,
            },
        );
        match result {
            Ok(done) => Ok(tools::success(done)),
            Err(Failure::Invalid(m)) => Err(McpError::invalid_params(m, None)),
            Err(Failure::Failed(e)) => Ok(tools::failure(&e)),
        }
    }
}

/// An error outside a tool call (listing tools): a JSON-RPC error with the
/// stable code in its data.
fn protocol(e: ApiError) -> McpError {
    let data = Some(serde_json::json!({"code": e.code}));
    if e.status.is_server_error() {
        McpError::internal_error(e.message, data)
    } else {
        McpError::invalid_request(e.message, data)
    }
}
