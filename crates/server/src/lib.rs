//! Vectorizer's HTTP server: a thin adapter from REST to the service layer.

pub mod admission;
pub mod answer;
pub mod app;
pub mod auth;
pub mod backups;
pub mod cluster_admin;
pub mod config;
pub mod docs_page;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod internal;
pub mod mcp;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod qdrant;
pub mod serve;

use std::sync::Arc;
use std::time::Duration;

use vectorizer_engine::Limits;
use vectorizer_service::{Service, ServiceOptions, ShareOptions};

use crate::app::{AppState, HttpLimits};
use crate::config::{Config, LogFormat};

/// Opens storage and builds the application state from the configuration.
pub fn state(cfg: &Config) -> Result<AppState, String> {
    // A migration cut short must be finished (or undone) first: serving
    // would report and register collections halfway between two names.
    let migration =
        vectorizer_service::migrate::status(&cfg.storage.data_dir).map_err(|e| e.to_string())?;
    if matches!(migration.phase, "running" | "rolling_back") {
        return Err(format!(
            "a migration of {} stopped part way ({}): finish it with `vectorizer migrate {}` first (see docs/HUB_MIGRATION.md)",
            cfg.storage.data_dir.display(),
            migration.phase,
            if migration.phase == "running" {
                "run"
            } else {
                "rollback"
            }
        ));
    }
    let limits = Limits {
        max_batch: cfg.limits.max_batch_points,
        max_limit: cfg.limits.max_search_limit,
        max_payload_bytes: cfg.limits.max_payload_bytes,
        max_answer_bytes: cfg.limits.max_answer_bytes,
    };
    let share = ShareOptions {
        max_in_flight: cfg.tenants.max_in_flight,
        tenant_workers: cfg.tenants.max_workers,
        ..ShareOptions::default()
    };
    let options = ServiceOptions {
        data_dir: cfg.storage.data_dir.clone(),
        limits,
        max_batch_searches: cfg.limits.max_batch_searches,
        share,
        backups: cfg.backups.options(),
        max_open_collections: Some(cfg.storage.max_open_collections),
        memory_budget_bytes: (cfg.storage.memory_budget_bytes > 0)
            .then_some(cfg.storage.memory_budget_bytes),
        default_target_recall: cfg.search.target_recall,
        tuning_cpu_share: cfg.search.tuning_cpu_share,
    };
    let service = Service::open(options).map_err(|e| match e {
        vectorizer_engine::EngineError::InUse(_) => e.to_string(),
        e => format!("opening storage at {}: {e}", cfg.storage.data_dir.display()),
    })?;
    let operator = match std::env::var(extract::OperatorToken::ENV) {
        Ok(t) if t.len() < extract::OperatorToken::MIN_LEN => {
            return Err(format!(
                "{} must be at least {} characters",
                extract::OperatorToken::ENV,
                extract::OperatorToken::MIN_LEN
            ));
        }
        Ok(t) => extract::OperatorToken::new(&t).map(Arc::new),
        Err(_) => None,
    };
    let client_ip_header = (!cfg.server.client_ip_header.is_empty())
        .then(|| axum::http::HeaderName::from_bytes(cfg.server.client_ip_header.as_bytes()))
        .transpose()
        .map_err(|_| "`server.client_ip_header` must be an HTTP header name".to_owned())?;
    let local_keys = if cfg.hub.enabled {
        None
    } else {
        extract::LocalKeys::from_env()?.map(Arc::new)
    };
    let service = Arc::new(service);
    let mcp = cfg.mcp.enabled.then(|| Arc::new(mcp_parts(cfg, &service)));
    Ok(AppState {
        mcp,
        service,
        limits: HttpLimits {
            max_body_bytes: cfg.server.max_body_bytes,
            request_timeout: Duration::from_secs(cfg.server.request_timeout_seconds),
            backup_timeout: Duration::from_secs(cfg.backups.request_timeout_seconds),
        },
        auth: None,
        metrics: metrics::MetricsOptions {
            public: cfg
                .metrics
                .public
                .unwrap_or(!cfg.hub.enabled && local_keys.is_none()),
            tenant_labels: cfg
                .metrics
                .tenant_labels
                .then_some(cfg.metrics.max_tenant_labels),
        },
        operator,
        client_ip_header,
        local_keys,
        cluster: None,
    })
}

/// The MCP server's parts from the `mcp:` section.
pub fn mcp_parts(cfg: &Config, service: &Service) -> mcp::Mcp {
    let m = &cfg.mcp;
    let oplog = if m.log.enabled {
        mcp::oplog::OpLog::start(mcp::oplog::OpLogOptions {
            dir: cfg.storage.data_dir.clone(),
            max_file_bytes: m.log.max_file_bytes,
            max_files: m.log.max_files,
        })
    } else {
        mcp::oplog::OpLog::disabled()
    };
    let allowed_hosts = if m.allowed_hosts.iter().any(|h| h == "*") {
        Vec::new()
    } else if m.allowed_hosts.is_empty() {
        let mut hosts = mcp::default_hosts(&m.public_url);
        let bound = cfg.server.host.parse::<std::net::IpAddr>();
        if !bound.is_ok_and(|a| a.is_unspecified()) {
            hosts.push(cfg.server.host.clone());
        }
        hosts
    } else {
        m.allowed_hosts.clone()
    };
    mcp::Mcp::new(
        service,
        mcp::McpOptions {
            allowed_hosts,
            max_body_bytes: m.body_limit(&cfg.server),
        },
        oplog,
    )
}

/// Checks the secrets the environment must (or must not) hold for `cfg`,
/// before anything is opened: a boot that would fail for one, fails first
/// (and `check-config` says so too).
pub fn check_environment(cfg: &Config, local_hub: bool) -> Result<(), String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let service_key = var(vectorizer_hub::SERVICE_KEY_ENV);
    if cfg.hub.enabled && !local_hub && service_key.is_none() {
        return Err(format!(
            "`hub.enabled` is true but {} is not set",
            vectorizer_hub::SERVICE_KEY_ENV
        ));
    }
    if cfg.cluster.is_some() {
        let secret = var(vectorizer_cluster::SECRET_ENV).unwrap_or_default();
        if secret.len() < vectorizer_cluster::sign::MIN_SECRET {
            return Err(format!(
                "a `cluster:` section needs {} of at least {} characters, the same on every node",
                vectorizer_cluster::SECRET_ENV,
                vectorizer_cluster::sign::MIN_SECRET
            ));
        }
    }
    for name in [
        extract::OperatorToken::ENV,
        extract::LocalKeys::WRITE_ENV,
        extract::LocalKeys::READ_ENV,
    ] {
        if var(name).is_some_and(|v| v.len() < extract::OperatorToken::MIN_LEN) {
            return Err(format!(
                "{name} must be at least {} characters",
                extract::OperatorToken::MIN_LEN
            ));
        }
    }
    if var(internal::SIGNING_SECRET_ENV).is_some()
        && var(internal::SIGNING_SECRET_ENV) == service_key
    {
        return Err(format!(
            "{} must differ from the service key",
            internal::SIGNING_SECRET_ENV
        ));
    }
    Ok(())
}

/// The Hub client and access-key authentication, from the `hub:` section
/// and the service key in `HIVEHUB_SERVICE_API_KEY`.
pub fn hub_auth(cfg: &Config, service_key: Option<String>) -> Result<Arc<auth::Auth>, String> {
    let key = service_key
        .or_else(|| std::env::var(vectorizer_hub::SERVICE_KEY_ENV).ok())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            format!(
                "`hub.enabled` is true but {} is not set",
                vectorizer_hub::SERVICE_KEY_ENV
            )
        })?;
    let secret = std::env::var(internal::SIGNING_SECRET_ENV)
        .ok()
        .filter(|s| !s.is_empty());
    if secret.as_deref() == Some(key.as_str()) {
        return Err(format!(
            "{} must differ from the service key: a node that knows the service key could forge calls from the Hub",
            internal::SIGNING_SECRET_ENV
        ));
    }
    let verifier = internal::Verifier::new(
        secret.as_deref(),
        Some(cfg.hub.node_id.as_str()),
        Some(&cfg.storage.data_dir),
    )
    .map_err(|e| {
        format!(
            "opening the nonce log in {}: {e}",
            cfg.storage.data_dir.display()
        )
    })?;
    let hub = hub_client(cfg, key)?;
    let ttl = Duration::from_secs(cfg.hub.cache.api_key_ttl_seconds);
    let opts = auth::AuthOptions {
        ttl,
        negative_ttl: ttl.min(Duration::from_secs(30)),
        grace: Duration::from_secs(cfg.hub.grace_period_seconds),
        capacity: 10_000,
        max_failures: 20,
        failure_window: Duration::from_secs(60),
    };
    Ok(Arc::new(auth::Auth::new(hub, opts, verifier)))
}

/// A client of the Hub named by the `hub:` section, with service key `key`.
pub fn hub_client(cfg: &Config, key: String) -> Result<Arc<vectorizer_hub::HubClient>, String> {
    let mut hc = vectorizer_hub::HubClientConfig::new(
        cfg.hub.api_url.clone(),
        vectorizer_hub::Secret::new(key),
    );
    hc.timeout = Duration::from_secs(cfg.hub.timeout_seconds);
    hc.retries = cfg.hub.retries;
    Ok(Arc::new(
        vectorizer_hub::HubClient::new(hc).map_err(|e| e.to_string())?,
    ))
}

/// Refuses a data directory an offline command (backup, migrate) would
/// otherwise create: a mistyped path must not read as an empty deployment.
pub fn existing_data_dir(dir: &std::path::Path) -> Result<(), String> {
    if dir.join("collections").is_dir() {
        return Ok(());
    }
    let what = if dir.is_dir() {
        "holds no Vectorizer data (no collections/ directory)"
    } else {
        "does not exist"
    };
    Err(format!(
        "the data directory {} {what}; offline commands never create one: check --data-dir",
        dir.display()
    ))
}

/// With the Hub off: says, once at start, how many collections in the
/// data directory are tenants' (or otherwise outside the local namespace)
/// and so not served.
pub fn say_outside_local_namespace(service: &Service) {
    let n = service.outside_local_namespace();
    let what = match n {
        0 => return,
        1 => "1 collection in the data directory is in a user's namespace".to_owned(),
        n => format!("{n} collections in the data directory are in users' namespaces"),
    };
    tracing::warn!(
        collections = n,
        "{what} (made with the Hub on): with the Hub off they are not listed, served or backed up, and are kept as they are; start with the Hub on to serve them"
    );
}

/// Connects the service to the Hub: its health loop, quotas, and the
/// usage reporter with its outbox.
pub fn connect_hub(service: &Arc<Service>, auth: &auth::Auth, cfg: &Config) -> Result<(), String> {
    auth.hub().spawn_health_loop(Duration::from_secs(10));
    service.attach_hub(
        auth.hub().clone(),
        Duration::from_secs(cfg.hub.cache.quota_ttl_seconds),
        Duration::from_secs(cfg.hub.grace_period_seconds),
    );
    let reporter = vectorizer_service::usage::Reporter::open(
        auth.hub().clone(),
        &cfg.storage.data_dir,
        Duration::from_millis(500),
    )
    .map_err(|e| format!("opening the usage outbox: {e}"))?;
    service.attach_reporter(reporter, Duration::from_secs(cfg.hub.usage_report_interval));
    Ok(())
}

/// Installs the log subscriber: text or JSON on stderr, at the configured level.
pub fn init_logging(cfg: &Config) {
    use std::io::IsTerminal;
    use tracing::Level;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level: Level = cfg.logging.level.parse().unwrap_or(Level::INFO);
    // The MCP library logs each stateless request's start and end at
    // `info`: three lines per tool call, only wanted when debugging.
    let rmcp = if level > Level::INFO {
        level
    } else {
        level.min(Level::WARN)
    };
    // Raft's library narrates every vote and replication at `info`, and
    // logs each failed call to a peer (one still booting, say) at `error`:
    // only wanted when debugging. The cluster crate says itself, at the
    // level each deserves, when a peer is unreachable or a group stops.
    let openraft = if level > Level::INFO {
        tracing_subscriber::filter::LevelFilter::from_level(level)
    } else {
        tracing_subscriber::filter::LevelFilter::OFF
    };
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target("rmcp", rmcp)
        .with_target("openraft", openraft);
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let layer = match cfg.logging.format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

/// Starts the local Hub in this process, with its state in the data
/// directory, and points the configuration at it. The service key is the
/// environment's, or a fresh random one that never leaves the process.
async fn start_local_hub(cfg: &mut Config) -> Result<String, String> {
    use std::hash::{BuildHasher, RandomState};
    let key = std::env::var(vectorizer_hub::SERVICE_KEY_ENV)
        .ok()
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| {
            let r = RandomState::new();
            format!("{:016x}{:016x}", r.hash_one(1u8), r.hash_one(2u8))
        });
    std::fs::create_dir_all(&cfg.storage.data_dir)
        .map_err(|e| format!("creating {}: {e}", cfg.storage.data_dir.display()))?;
    let path = cfg.storage.data_dir.join("hub.json");
    let store = vectorizer_hub::HubStore::open(&path).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("starting the local hub: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let router = vectorizer_hub::router(Arc::new(store), &key);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the local hub stopped");
        }
    });
    cfg.hub.enabled = true;
    cfg.hub.api_url = format!("http://{addr}");
    // The MCP server registers with the local Hub under a node id of its
    // own unless one is set.
    if cfg.hub.node_id.is_empty() {
        cfg.hub.node_id = "local".into();
    }
    println!("local hub on http://{addr}, state in {}", path.display());
    Ok(key)
}

/// With the Hub on and a node id, registers this node's MCP server with
/// the Hub in the background; what the stop needs to deregister it.
fn register_mcp(
    state: &AppState,
    auth: Option<&auth::Auth>,
    cfg: &Config,
    port: u16,
) -> Option<(
    Arc<mcp::register::Registration>,
    Arc<vectorizer_hub::HubClient>,
)> {
    let (mcp, auth) = (state.mcp.as_ref()?, auth?);
    if cfg.hub.node_id.is_empty() {
        tracing::warn!("hub.node_id is empty: the MCP server is not registered with the Hub");
        return None;
    }
    let announcement = mcp::register::Announcement {
        node_id: cfg.hub.node_id.clone(),
        url: cfg.mcp.url(&cfg.server, port),
        tools: mcp
            .tools
            .iter()
            .map(|t| vectorizer_hub::model::McpTool {
                name: t.name.to_owned(),
                description: t.tool.description.as_deref().unwrap_or_default().to_owned(),
            })
            .collect(),
        refresh: Duration::from_secs(cfg.mcp.hub_refresh_seconds),
    };
    mcp.registration.spawn(auth.hub().clone(), announcement);
    Some((mcp.registration.clone(), auth.hub().clone()))
}

/// Runs the server until SIGTERM or SIGINT, then flushes storage. With
/// `local_hub`, a local Hub runs in the same process and the server uses it.
pub async fn run(mut cfg: Config, local_hub: bool) -> Result<(), String> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %cfg.storage.data_dir.display(),
        "vectorizer {} starting",
        env!("CARGO_PKG_VERSION")
    );
    check_environment(&cfg, local_hub)?;
    // The port first: a server that cannot listen touches no file.
    let listener = tokio::net::TcpListener::bind((cfg.server.host.as_str(), cfg.server.port))
        .await
        .map_err(|e| format!("binding {}:{}: {e}", cfg.server.host, cfg.server.port))?;
    let qdrant = if cfg.qdrant.enabled {
        let host = cfg.qdrant.host(&cfg.server).to_owned();
        let port = cfg.qdrant.port;
        Some(
            tokio::net::TcpListener::bind((host.as_str(), port))
                .await
                .map_err(|e| format!("binding {host}:{port} (qdrant): {e}"))?,
        )
    } else {
        None
    };
    let key = if local_hub {
        Some(start_local_hub(&mut cfg).await?)
    } else {
        None
    };
    let auth = if cfg.hub.enabled {
        Some(hub_auth(&cfg, key)?)
    } else {
        None
    };
    let mut state = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || state(&cfg)
    })
    .await
    .map_err(|e| e.to_string())??;
    if let Some(auth) = &auth {
        connect_hub(&state.service, auth, &cfg)?;
        tracing::info!(api_url = %cfg.hub.api_url, "hub enabled: requests need an access key");
        // Read from the whole catalog: off the start-up path, which reads
        // no more of it than its header.
        let service = state.service.clone();
        let data_dir = cfg.storage.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            let unowned = service.unowned_collections();
            if unowned > 0 {
                tracing::warn!(
                    collections = unowned,
                    "{unowned} collections have no owner: no tenant can reach them, and they count in no tenant's usage; to assign them to users, stop the server and run `vectorizer migrate plan --data-dir {}` (see docs/HUB_MIGRATION.md)",
                    data_dir.display()
                );
            }
        });
    }
    if auth.is_none() {
        let service = state.service.clone();
        tokio::task::spawn_blocking(move || say_outside_local_namespace(&service));
    }
    if let Some(c) = &cfg.cluster {
        let options = c.options(&cfg.storage.data_dir)?;
        let node = vectorizer_cluster::Node::start(options, &state.service).await?;
        tracing::info!(
            node = c.node_id,
            shards = c.shards,
            "cluster mode: this node serves every user through the shards' leaders"
        );
        state.cluster = Some(node);
    }
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback())
        && qdrant
            .as_ref()
            .is_none_or(|l| l.local_addr().is_ok_and(|a| a.ip().is_loopback()));
    if auth.is_none() && state.local_keys.is_none() && !loopback {
        tracing::warn!(
            "listening on a non-loopback address with no authentication: anyone who can reach the port can read and delete everything; set VECTORIZER_API_KEY (and VECTORIZER_READ_API_KEY)"
        );
    }
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let registered = register_mcp(&state, auth.as_deref(), &cfg, addr.port());
    state.auth = auth;
    let service = state.service.clone();
    let cluster = state.cluster.clone();
    let stopping = Arc::new(std::sync::OnceLock::new());
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = {
        let stopping = stopping.clone();
        let received = serve::signal();
        async move {
            received.await;
            let _ = stopping.set(std::time::Instant::now());
            let _ = stop.send(true);
        }
    };
    let stopped_too = {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    tracing::info!(%addr, data_dir = %cfg.storage.data_dir.display(), "vectorizer listening");
    println!("vectorizer listening on http://{addr}");
    let qdrant = match qdrant {
        Some(l) => {
            let at = l.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(addr = %at, "Qdrant-compatible API listening");
            println!("qdrant-compatible API listening on http://{at}");
            Some((l, qdrant::router(state.clone())))
        }
        None => None,
    };
    // Of the shutdown timeout, requests in flight get all but a last share
    // kept for the flush.
    let budget = Duration::from_secs(cfg.server.shutdown_timeout_seconds);
    let opts = serve::ServeOptions {
        header_read_timeout: Duration::from_secs(cfg.server.header_read_timeout_seconds),
        shutdown_timeout: budget.mul_f64(0.7),
    };
    service.spawn_storage_probe(Duration::from_secs(1));
    service.spawn_backup_sweeper(Duration::from_secs(cfg.backups.sweep_interval_seconds));
    let native = serve::serve(listener, app::router(state), opts, signal);
    match qdrant {
        Some((l, router)) => {
            tokio::join!(native, serve::serve(l, router, opts, stopped_too));
        }
        None => native.await,
    }
    let started = stopping
        .get()
        .copied()
        .unwrap_or_else(std::time::Instant::now);
    if let Some((registration, hub)) = registered {
        let left = budget
            .saturating_sub(started.elapsed())
            .min(Duration::from_secs(3));
        let _ = tokio::time::timeout(left, registration.deregister(&hub)).await;
    }
    // Requests cut off at the deadline dropped their futures, so their
    // scans stop at the next check. The flush writes snapshots; should it
    // not finish in time, every acknowledged write is in the log anyway.
    let left = budget
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    let flush = move || {
        service.flush()?;
        match &cluster {
            Some(node) => node.flush(),
            None => Ok(()),
        }
    };
    match tokio::time::timeout(left, tokio::task::spawn_blocking(flush)).await {
        Ok(Ok(Ok(()))) => tracing::info!("storage flushed; stopped"),
        Ok(Ok(Err(e))) => return Err(format!("flushing storage: {e}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => tracing::warn!(
            "snapshots not finished at the shutdown deadline; the log holds every write"
        ),
    }
    Ok(())
}
