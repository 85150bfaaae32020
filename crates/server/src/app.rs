//! The application: shared state, the route table, and the router built
//! from it. Every route is declared once, in [`routes`]; the router and
//! the OpenAPI document are both generated from that table.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode};
use axum::routing::MethodRouter;
use tower_http::catch_panic::CatchPanicLayer;
use vectorizer_service::{Permission, Service};

use crate::error::ApiError;
use crate::{handlers, middleware, openapi};

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub limits: HttpLimits,
    /// Access-key authentication; `None` with the Hub switched off.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Who may scrape `GET /metrics`, and what it shows.
    pub metrics: crate::metrics::MetricsOptions,
    /// The operator's token, for server-wide views.
    pub operator: Option<Arc<crate::extract::OperatorToken>>,
    /// A trusted proxy's header naming the client's address; `None`: the
    /// connection's peer is the client.
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// With the Hub off, the deployment's API keys, if set.
    pub local_keys: Option<Arc<crate::extract::LocalKeys>>,
    /// The MCP server at `/mcp`; `None` when switched off.
    pub mcp: Option<Arc<crate::mcp::Mcp>>,
    /// This node of a cluster; `None` when it runs alone.
    pub cluster: Option<Arc<vectorizer_cluster::Node>>,
}

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// For the backup routes that move whole archives.
    pub backup_timeout: Duration,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the handler decides what it shows (health, metrics).
    Public,
    /// Any admitted caller (with the Hub on, any valid key).
    Caller,
    /// An admitted caller whose key allows this.
    Needs(Permission),
}

impl Access {
    pub fn permission(self) -> Option<Permission> {
        match self {
            Access::Needs(p) => Some(p),
            _ => None,
        }
    }
}

/// A schema generator for a request or response body.
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// One route: what the OpenAPI document says of it, and its handler.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub operation: &'static str,
    pub summary: &'static str,
    pub request: Option<SchemaFn>,
    pub response: SchemaFn,
    pub status: StatusCode,
    /// Who may call it.
    pub access: Access,
    pub handler: MethodRouter<AppState>,
}

fn schema<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// Every route the server has.
pub fn routes() -> Vec<Route> {
    use Permission::{Delete, Read, Write};
    use axum::routing::{delete, get, post};
    use handlers as h;
    use vectorizer_service::backup as b;
    use vectorizer_service::model as m;
    let r = |method,
             path,
             operation,
             summary,
             request,
             response,
             status,
             access: Access,
             handler: MethodRouter<AppState>| Route {
        method,
        path,
        operation,
        summary,
        request,
        response,
        status,
        access,
        handler,
    };
    vec![
        r(
            Method::GET,
            "/health",
            "health",
            "Liveness and readiness",
            None,
            schema::<m::Health> as SchemaFn,
            StatusCode::OK,
            Access::Public,
            get(h::health),
        ),
        r(
            Method::GET,
            "/metrics",
            "metrics",
            "Prometheus metrics (text format)",
            None,
            schema::<String>,
            StatusCode::OK,
            Access::Public,
            get(h::metrics),
        ),
        r(
            Method::GET,
            "/cluster",
            "cluster_status",
            "Cluster mode: nodes, groups, leaders and lag (operator token)",
            None,
            schema::<serde_json::Value>,
            StatusCode::OK,
            Access::Public,
            get(crate::cluster_admin::status),
        ),
        r(
            Method::POST,
            "/cluster/replace-node",
            "cluster_replace_node",
            "Cluster mode: put a new node in the place of a lost one (operator token)",
            Some(schema::<crate::cluster_admin::ReplaceNode> as SchemaFn),
            schema::<serde_json::Value>,
            StatusCode::OK,
            Access::Public,
            post(crate::cluster_admin::replace_node),
        ),
        r(
            Method::POST,
            "/cluster/repair-group",
            "cluster_repair_group",
            "Cluster mode: drop a node's copy of a failed group and send it the group again (operator token)",
            Some(schema::<crate::cluster_admin::RepairGroup> as SchemaFn),
            schema::<serde_json::Value>,
            StatusCode::OK,
            Access::Public,
            post(crate::cluster_admin::repair_group),
        ),
        r(
            Method::GET,
            "/openapi.json",
            "openapi",
            "This document",
            None,
            schema::<serde_json::Value>,
            StatusCode::OK,
            Access::Caller,
            get(h::openapi),
        ),
        r(
            Method::GET,
            "/usage",
            "usage",
            "Your usage and plan limits",
            None,
            schema::<m::Usage>,
            StatusCode::OK,
            Access::Needs(Read),
            get(h::usage),
        ),
        r(
            Method::GET,
            "/collections",
            "list_collections",
            "List collections",
            None,
            schema::<m::CollectionList>,
            StatusCode::OK,
            Access::Needs(Read),
            get(h::list_collections),
        ),
        r(
            Method::POST,
            "/collections",
            "create_collection",
            "Create a collection",
            Some(schema::<m::CreateCollection> as SchemaFn),
            schema::<m::CollectionDetail>,
            StatusCode::CREATED,
            Access::Needs(Write),
            post(h::create_collection),
        ),
        r(
            Method::GET,
            "/collections/{name}",
            "get_collection",
            "Describe a collection",
            None,
            schema::<m::CollectionDetail>,
            StatusCode::OK,
            Access::Needs(Read),
            get(h::get_collection),
        ),
        r(
            Method::DELETE,
            "/collections/{name}",
            "delete_collection",
            "Delete a collection",
            None,
            schema::<serde_json::Value>,
            StatusCode::OK,
            Access::Needs(Delete),
            delete(h::delete_collection),
        ),
        r(
            Method::GET,
            "/aliases",
            "list_aliases",
            "List your collections' aliases",
            None,
            schema::<vectorizer_service::aliases::AliasList>,
            StatusCode::OK,
            Access::Needs(Read),
            get(h::list_aliases),
        ),
        r(
            Method::POST,
            "/aliases",
            "update_aliases",
            "Create, move or delete aliases, all together",
            Some(schema::<vectorizer_service::aliases::AliasActions>),
            schema::<vectorizer_service::aliases::AliasList>,
            StatusCode::OK,
            Access::Needs(Write),
            post(h::update_aliases),
        ),
        r(
            Method::PATCH,
            "/collections/{name}",
            "update_collection",
            "Change a collection's search parameters",
            Some(schema::<m::UpdateCollection>),
            schema::<m::CollectionDetail>,
            StatusCode::OK,
            Access::Needs(Write),
            axum::routing::patch(h::update_collection),
        ),
        r(
            Method::POST,
            "/collections/{name}/points/payload",
            "set_payload",
            "Set payload keys of points (by ids or filter)",
            Some(schema::<m::SetPayload>),
            schema::<m::Updated>,
            StatusCode::OK,
            Access::Needs(Write),
            post(h::set_payload),
        ),
        r(
            Method::PUT,
            "/collections/{name}/points/payload",
            "overwrite_payload",
            "Replace the payload of points (by ids or filter)",
            Some(schema::<m::SetPayload>),
            schema::<m::Updated>,
            StatusCode::OK,
            Access::Needs(Write),
            axum::routing::put(h::overwrite_payload),
        ),
        r(
            Method::POST,
            "/collections/{name}/points/payload/delete",
            "delete_payload",
            "Remove payload keys of points (by ids or filter)",
            Some(schema::<m::DeletePayload>),
            schema::<m::Updated>,
            StatusCode::OK,
            Access::Needs(Write),
            post(h::delete_payload),
        ),
        r(
            Method::POST,
            "/collections/{name}/payload_index",
            "create_payload_index",
            "Index a payload field for filters",
            Some(schema::<m::CreatePayloadIndex>),
            schema::<m::CollectionDetail>,
            StatusCode::OK,
            Access::Needs(Write),
            post(h::create_payload_index),
        ),
        r(
            Method::DELETE,
            "/collections/{name}/payload_index/{field}",
            "drop_payload_index",
            "Stop indexing a payload field (filters on it then scan)",
            None,
            schema::<m::CollectionDetail>,
            StatusCode::OK,
            Access::Needs(Write),
            delete(h::drop_payload_index),
        ),
        r(
            Method::POST,
            "/collections/{name}/points",
            "upsert_points",
            "Insert or replace points (all or nothing)",
            Some(schema::<m::UpsertPoints>),
            schema::<m::Upserted>,
            StatusCode::OK,
            Access::Needs(Write),
            post(h::upsert),
        ),
        r(
            Method::GET,
            "/collections/{name}/points/{id}",
            "get_point",
            "Get one point with its vector and payload",
            None,
            schema::<m::PointRecord>,
            StatusCode::OK,
            Access::Needs(Read),
            get(h::get_point),
        ),
        r(
            Method::POST,
            "/collections/{name}/points/get",
            "get_points",
            "Get points by id",
            Some(schema::<m::GetPoints>),
            schema::<m::Points>,
            StatusCode::OK,
            Access::Needs(Read),
            post(h::get_points),
        ),
        r(
            Method::POST,
            "/collections/{name}/points/delete",
            "delete_points",
            "Delete points by ids or filter",
            Some(schema::<m::DeletePoints>),
            schema::<m::Deleted>,
            StatusCode::OK,
            Access::Needs(Delete),
            post(h::delete_points),
        ),
        r(
            Method::POST,
            "/collections/{name}/points/scroll",
            "scroll_points",
            "Page through points in id order",
            Some(schema::<m::Scroll>),
            schema::<m::ScrollPage>,
            StatusCode::OK,
            Access::Needs(Read),
            post(h::scroll),
        ),
        r(
            Method::POST,
            "/collections/{name}/points/count",
            "count_points",
            "Count points, optionally filtered",
            Some(schema::<m::Count>),
            schema::<m::Counted>,
            StatusCode::OK,
            Access::Needs(Read),
            post(h::count),
        ),
        r(
            Method::POST,
            "/collections/{name}/search",
            "search",
            "Nearest neighbours of a vector",
            Some(schema::<m::Search>),
            schema::<m::SearchResults>,
            StatusCode::OK,
            Access::Needs(Read),
            post(h::search),
        ),
        r(
            Method::POST,
            "/collections/{name}/search/batch",
            "search_batch",
            "Several searches in one call",
            Some(schema::<m::SearchBatch>),
            schema::<m::SearchBatchResults>,
            StatusCode::OK,
            Access::Needs(Read),
            post(h::search_batch),
        ),
        r(
            Method::GET,
            "/api/hub/backups",
            "list_backups",
            "Your backups, newest first",
            None,
            schema::<b::BackupList>,
            StatusCode::OK,
            Access::Needs(Read),
            get(crate::backups::list),
        ),
        r(
            Method::POST,
            "/api/hub/backups",
            "create_backup",
            "Back up your collections (all, or those named)",
            Some(schema::<b::CreateBackup>),
            schema::<b::BackupInfo>,
            StatusCode::CREATED,
            Access::Needs(Write),
            post(crate::backups::create),
        ),
        r(
            Method::GET,
            "/api/hub/backups/{id}",
            "get_backup",
            "Describe a backup",
            None,
            schema::<b::BackupInfo>,
            StatusCode::OK,
            Access::Needs(Read),
            get(crate::backups::get),
        ),
        r(
            Method::DELETE,
            "/api/hub/backups/{id}",
            "delete_backup",
            "Delete a backup",
            None,
            schema::<serde_json::Value>,
            StatusCode::OK,
            Access::Needs(Delete),
            delete(crate::backups::delete),
        ),
        r(
            Method::GET,
            "/api/hub/backups/{id}/download",
            "download_backup",
            "The backup's archive (application/gzip), checked first; X-Checksum-SHA256 holds its SHA-256",
            None,
            schema::<String>,
            StatusCode::OK,
            Access::Needs(Read),
            get(crate::backups::download),
        ),
        r(
            Method::POST,
            "/api/hub/backups/restore",
            "restore_backup",
            "Restore collections of a backup into your namespace",
            Some(schema::<b::RestoreBackup>),
            schema::<b::Restored>,
            StatusCode::OK,
            Access::Needs(Write),
            post(crate::backups::restore),
        ),
        r(
            Method::POST,
            "/api/hub/backups/upload",
            "upload_backup",
            "Store an archive (the raw application/gzip body; X-Checksum-SHA256 optional) as a backup",
            None,
            schema::<b::BackupInfo>,
            StatusCode::CREATED,
            Access::Needs(Write),
            // The archive is streamed to disk under `backups.max_upload_bytes`,
            // not buffered under the JSON body limit.
            post(crate::backups::upload).layer(DefaultBodyLimit::disable()),
        ),
    ]
}

/// The router, with every middleware, ready to serve.
pub fn router(state: AppState) -> Router {
    let opts = state.service.options();
    let doc = Arc::new(openapi::document_with(
        &routes(),
        openapi::DocLimits {
            engine: opts.limits,
            max_batch_searches: opts.max_batch_searches,
        },
    ));
    let mut app: Router<AppState> = Router::new();
    let mut paths: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for route in routes() {
        // Every route but the public ones admits its caller first.
        let handler = match route.access {
            Access::Public => route.handler,
            access => route.handler.layer(axum::middleware::from_fn_with_state(
                crate::admission::Gate {
                    state: state.clone(),
                    need: access.permission(),
                },
                crate::admission::admit,
            )),
        };
        match paths.iter_mut().find(|(p, _)| *p == route.path) {
            Some((_, mr)) => *mr = std::mem::take(mr).merge(handler),
            None => paths.push((route.path, handler)),
        }
    }
    for (path, mr) in paths {
        app = app.route(path, mr);
    }
    if let Some(mcp) = &state.mcp {
        app = app.merge(crate::mcp::http_service(&state, mcp));
    }
    app = app.merge(crate::docs_page::router());
    let limits = state.limits;
    app.fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn(middleware::no_query))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::internal::verify,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            middleware::timeout,
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .layer(axum::Extension(doc))
        .with_state(state)
}

/// A method the matched route does not take: 405, unless the path's id is
/// no id at all (`POST /collections/c/points/recommend` names no point, so
/// no such route exists: 404).
async fn not_allowed(
    uri: axum::http::Uri,
    matched: Option<axum::extract::MatchedPath>,
) -> ApiError {
    let last = uri.path().rsplit('/').next().unwrap_or("");
    let is_uuid = uuid::Uuid::parse_str(last).is_ok();
    let not_an_id = match matched.as_ref().map(|m| m.as_str()) {
        Some("/collections/{name}/points/{id}") => !(is_uuid || last.parse::<u64>().is_ok()),
        Some("/api/hub/backups/{id}") => !is_uuid,
        _ => false,
    };
    if not_an_id {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route");
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
