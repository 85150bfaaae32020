//! Configuration: built-in defaults, then `config.yml`, then environment
//! variables (`VECTORIZER_<SECTION>__<KEY>`), then command-line flags.
//! Unknown keys and bad values stop the boot with a message naming the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod backups;
mod cluster;
pub use backups::BackupsConfig;
pub use cluster::{ClusterConfig, ClusterNode};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub search: SearchConfig,
    pub limits: LimitsConfig,
    pub logging: LoggingConfig,
    pub metrics: MetricsConfig,
    pub tenants: TenantsConfig,
    pub hub: HubConfig,
    pub mcp: McpConfig,
    pub backups: BackupsConfig,
    /// Qdrant's REST dialect on a second listener.
    pub qdrant: QdrantConfig,
    /// Cluster mode; absent: a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// Qdrant's REST dialect (for code written against Qdrant's clients), on
/// a listener of its own, over the same collections as the native API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QdrantConfig {
    pub enabled: bool,
    /// Address to listen on; empty: the server's (`server.host`).
    pub host: String,
    /// 0 asks the system for a free port (the chosen one is printed).
    pub port: u16,
}

impl Default for QdrantConfig {
    fn default() -> Self {
        QdrantConfig {
            enabled: false,
            host: String::new(),
            port: 6333,
        }
    }
}

impl QdrantConfig {
    /// The address to listen on.
    pub fn host<'a>(&'a self, server: &'a ServerConfig) -> &'a str {
        if self.host.is_empty() {
            &server.host
        } else {
            &self.host
        }
    }
}

/// The MCP server at `/mcp` (Model Context Protocol, for AI agents).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    pub enabled: bool,
    /// The URL the Hub hands to agents; empty: `http://<host>:<port>/mcp`.
    pub public_url: String,
    /// `Host` values `/mcp` answers (others get 403, against DNS
    /// rebinding); empty: loopback names and the host of `public_url`;
    /// `["*"]`: any.
    pub allowed_hosts: Vec<String>,
    /// Largest MCP request body; unset: 2 MiB (or `server.max_body_bytes`
    /// if smaller). At most 16 MiB: an agent's calls are small, and larger
    /// batches go through REST.
    pub max_body_bytes: Option<usize>,
    /// With the Hub on, seconds between registrations of this node's MCP
    /// server (a Hub that lost the entry gets it back within this time).
    pub hub_refresh_seconds: u64,
    /// The operation log (`mcp-ops/<caller>.log` in the data directory).
    pub log: McpLogConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct McpLogConfig {
    pub enabled: bool,
    /// A file reaching this size is rotated.
    pub max_file_bytes: u64,
    /// Rotated files kept, besides the current one.
    pub max_files: usize,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            enabled: true,
            public_url: String::new(),
            allowed_hosts: Vec::new(),
            max_body_bytes: None,
            hub_refresh_seconds: 60,
            log: McpLogConfig::default(),
        }
    }
}

impl Default for McpLogConfig {
    fn default() -> Self {
        McpLogConfig {
            enabled: true,
            max_file_bytes: 4 << 20,
            max_files: 2,
        }
    }
}

impl McpConfig {
    /// The largest MCP request body, in bytes.
    pub fn body_limit(&self, server: &ServerConfig) -> usize {
        self.max_body_bytes
            .unwrap_or(server.max_body_bytes.min(DEFAULT_MCP_BODY))
    }

    /// The URL agents reach this node's MCP server at.
    pub fn url(&self, server: &ServerConfig, port: u16) -> String {
        if !self.public_url.is_empty() {
            return self.public_url.clone();
        }
        let host = match server.host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(a)) => format!("[{a}]"),
            _ => server.host.clone(),
        };
        format!("http://{host}:{port}/mcp")
    }
}

/// The largest MCP request body that may be configured.
pub const MAX_MCP_BODY: usize = 16 << 20;
/// The MCP body limit when none is set.
pub const DEFAULT_MCP_BODY: usize = 2 << 20;

/// Environment variables that hold secrets: read where they are used,
/// never as configuration keys.
pub const SECRET_ENV: &[&str] = &[
    "VECTORIZER_OPERATOR_TOKEN",
    "VECTORIZER_API_KEY",
    "VECTORIZER_READ_API_KEY",
    "VECTORIZER_ACCESS_KEY",
    "VECTORIZER_CLUSTER_SECRET",
];

/// Each tenant's fair share of the server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TenantsConfig {
    /// Requests one tenant may have in flight; more get 429.
    pub max_in_flight: usize,
    /// Storage and search jobs one tenant may run at once in each worker
    /// pool, however idle the others are (0: no cap; a tenant alone may
    /// use every worker, and under contention each gets its share).
    pub max_workers: usize,
}

impl Default for TenantsConfig {
    fn default() -> Self {
        TenantsConfig {
            max_in_flight: 64,
            max_workers: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `GET /metrics` needs no credential (else the operator token).
    /// Unset: public with the Hub off, private with it on.
    pub public: Option<bool>,
    /// Per-tenant usage gauges, labelled by user id.
    pub tenant_labels: bool,
    /// With `tenant_labels`, the largest tenants (by vectors) labelled.
    pub max_tenant_labels: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            public: None,
            tenant_labels: false,
            max_tenant_labels: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    /// 0 asks the system for a free port (the chosen one is logged).
    pub port: u16,
    pub request_timeout_seconds: u64,
    pub header_read_timeout_seconds: u64,
    pub max_body_bytes: usize,
    pub shutdown_timeout_seconds: u64,
    /// A trusted proxy's header carrying the client's address (the last
    /// one in it is used); empty: the connection's peer is the client.
    pub client_ip_header: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// Most collections open at once; idle ones beyond it are closed,
    /// least recently used first.
    pub max_open_collections: usize,
    /// Memory the open collections may hold together before idle ones are
    /// closed; 0: half the machine's memory.
    pub memory_budget_bytes: u64,
}

/// How searches pick their breadth.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// The recall@10 a collection created without `target_recall` aims
    /// for; `None`: no target (searches use `hnsw.ef_search`).
    pub target_recall: Option<f64>,
    /// Share of one core the background recall measurement may use; 0:
    /// none.
    pub tuning_cpu_share: f64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            target_recall: Some(vectorizer_engine::config::DEFAULT_TARGET_RECALL),
            tuning_cpu_share: 0.25,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_batch_points: usize,
    pub max_search_limit: usize,
    pub max_payload_bytes: usize,
    pub max_batch_searches: usize,
    /// Largest answer one request may build (vectors and payloads), bytes.
    pub max_answer_bytes: usize,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// error, warn, info, debug or trace.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    pub enabled: bool,
    pub api_url: String,
    pub timeout_seconds: u64,
    pub retries: u32,
    /// Seconds between full usage syncs.
    pub usage_report_interval: u64,
    /// While the Hub cannot be reached, keys validated before keep working
    /// this many seconds past their cache TTL.
    pub grace_period_seconds: u64,
    pub cache: HubCacheConfig,
    /// This node's id: signed calls from the Hub must name it. Empty: calls
    /// from the Hub are refused.
    pub node_id: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HubCacheConfig {
    pub api_key_ttl_seconds: u64,
    pub quota_ttl_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 15002,
            request_timeout_seconds: 30,
            header_read_timeout_seconds: 10,
            max_body_bytes: 32 << 20,
            shutdown_timeout_seconds: 10,
            client_ip_header: String::new(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("data"),
            max_open_collections: 1024,
            memory_budget_bytes: 0,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_batch_points: 10_000,
            max_search_limit: 10_000,
            max_payload_bytes: 64 << 10,
            max_batch_searches: 100,
            max_answer_bytes: 32 << 20,
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            enabled: false,
            api_url: "http://127.0.0.1:12000".into(),
            timeout_seconds: 5,
            retries: 3,
            usage_report_interval: 60,
            grace_period_seconds: 300,
            cache: HubCacheConfig::default(),
            node_id: String::new(),
        }
    }
}

impl Default for HubCacheConfig {
    fn default() -> Self {
        HubCacheConfig {
            api_key_ttl_seconds: 300,
            quota_ttl_seconds: 60,
        }
    }
}

/// Values given on the command line; they win over file and environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `serve --qdrant`: the Qdrant dialect on.
    pub qdrant: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// A configuration parser's message in the words of the file: the key,
/// and what it takes, not Rust's types.
fn plain_config_error(raw: &str) -> String {
    let key = raw
        .rsplit_once("for key `")
        .and_then(|(_, k)| k.split_once('`'))
        .map(|(k, _)| k.to_owned());
    let Some(key) = key else {
        return raw.to_owned();
    };
    let got = raw
        .split('`')
        .nth(1)
        .filter(|g| *g != key.as_str())
        .map_or(String::new(), |g| format!(" (got `{g}`)"));
    let takes = if raw.contains("variant constructor") || raw.contains("unknown variant") {
        match key.as_str() {
            "logging.format" => "must be one of text, json".to_owned(),
            _ => "is not one of the values it takes (see config.yml)".to_owned(),
        }
    } else if raw.contains("unsigned 16 bit") {
        "must be a whole number from 0 to 65535".to_owned()
    } else if raw.contains("unsigned") || raw.contains("usize") {
        "must be a whole number, 0 or more".to_owned()
    } else if raw.contains("expected a boolean") {
        "must be true or false".to_owned()
    } else if raw.contains("expected a string") {
        "must be text".to_owned()
    } else {
        return raw.to_owned();
    };
    format!("`{key}` {takes}{got}")
}

fn bad(key: &str, why: &str) -> ConfigError {
    ConfigError(format!("`{key}` {why}"))
}

impl Config {
    /// Loads the configuration: defaults < file < environment < flags.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_from(file, overrides, std::env::vars())
    }

    /// As [`load`], with the environment given (so tests need not change
    /// the process's own).
    pub fn load_from(
        file: Option<&Path>,
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut b = config::Config::builder();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            b = b.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Yaml)
                    .required(true),
            );
        }
        // Only `VECTORIZER_<SECTION>__<KEY>` names configuration; secrets
        // such as the operator token are never read as keys. Anything else
        // under the prefix is a mistake (one underscore for two, say).
        let env: Vec<(String, String)> = env.into_iter().collect();
        if let Some((k, _)) = env.iter().find(|(k, _)| {
            k.strip_prefix("VECTORIZER_")
                .is_some_and(|rest| !rest.contains("__"))
                && !SECRET_ENV.contains(&k.as_str())
        }) {
            let hint = k
                .strip_prefix("VECTORIZER_")
                .and_then(|rest| rest.split_once('_'))
                .map_or(String::new(), |(s, key)| {
                    format!(
                        " (a config key is VECTORIZER_<SECTION>__<KEY>: VECTORIZER_{s}__{key}?)"
                    )
                });
            return Err(ConfigError(format!(
                "the environment variable {k} is not a configuration variable{hint}"
            )));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| {
                k.strip_prefix("VECTORIZER_")
                    .is_some_and(|rest| rest.contains("__"))
                    && !SECRET_ENV.contains(&k.as_str())
            })
            .collect();
        b = b.add_source(
            config::Environment::with_prefix("VECTORIZER")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        if let Some(d) = &overrides.data_dir {
            b = b
                .set_override("storage.data_dir", d.to_string_lossy().into_owned())
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        if let Some(h) = &overrides.host {
            b = b
                .set_override("server.host", h.clone())
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        if let Some(p) = overrides.port {
            b = b
                .set_override("server.port", p as i64)
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        if overrides.qdrant {
            b = b
                .set_override("qdrant.enabled", true)
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        let cfg: Config = b
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(plain_config_error(&e.to_string())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.metrics.max_tenant_labels) {
            return Err(bad(
                "metrics.max_tenant_labels",
                "must be between 1 and 10000",
            ));
        }
        let s = &self.server;
        let hostname = |h: &str| {
            h.len() <= 253
                && h.split('.').all(|l| {
                    (1..=63).contains(&l.len())
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        };
        let q = &self.qdrant;
        if !q.host.is_empty() && q.host.parse::<std::net::IpAddr>().is_err() && !hostname(&q.host) {
            return Err(bad(
                "qdrant.host",
                "must be empty (server.host), an IP address or a host name",
            ));
        }
        if q.enabled && q.port != 0 && q.port == s.port && q.host(s) == s.host {
            return Err(bad(
                "qdrant.port",
                "must differ from server.port: the Qdrant dialect has a listener of its own",
            ));
        }
        if s.host.parse::<std::net::IpAddr>().is_err() && !hostname(&s.host) {
            return Err(bad(
                "server.host",
                "must be an IP address (127.0.0.1, 0.0.0.0, ::1) or a host name",
            ));
        }
        if !(1..=3600).contains(&s.request_timeout_seconds) {
            return Err(bad(
                "server.request_timeout_seconds",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=300).contains(&s.header_read_timeout_seconds) {
            return Err(bad(
                "server.header_read_timeout_seconds",
                "must be between 1 and 300",
            ));
        }
        if !(1024..=1 << 30).contains(&s.max_body_bytes) {
            return Err(bad(
                "server.max_body_bytes",
                "must be between 1 KiB and 1 GiB",
            ));
        }
        if !(1..=60).contains(&s.shutdown_timeout_seconds) {
            return Err(bad(
                "server.shutdown_timeout_seconds",
                "must be between 1 and 60",
            ));
        }
        if !(1..=1_000_000).contains(&self.storage.max_open_collections) {
            return Err(bad("storage.max_open_collections", "must be 1 to 1000000"));
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(bad("storage.data_dir", "must not be empty"));
        }
        if self
            .search
            .target_recall
            .is_some_and(|t| !(0.5..=0.999).contains(&t))
        {
            return Err(bad(
                "search.target_recall",
                "must be between 0.5 and 0.999, or null (no target)",
            ));
        }
        if !(0.0..=1.0).contains(&self.search.tuning_cpu_share) {
            return Err(bad(
                "search.tuning_cpu_share",
                "must be between 0 and 1 (a share of one core)",
            ));
        }
        let l = &self.limits;
        if !(1..=100_000).contains(&l.max_batch_points) {
            return Err(bad(
                "limits.max_batch_points",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=100_000).contains(&l.max_search_limit) {
            return Err(bad(
                "limits.max_search_limit",
                "must be between 1 and 100000",
            ));
        }
        if !(64..=16 << 20).contains(&l.max_payload_bytes) {
            return Err(bad(
                "limits.max_payload_bytes",
                "must be between 64 and 16 MiB",
            ));
        }
        if !(1024..=1 << 30).contains(&l.max_answer_bytes) {
            return Err(bad(
                "limits.max_answer_bytes",
                "must be between 1 KiB and 1 GiB",
            ));
        }
        if !(1..=100_000).contains(&self.tenants.max_in_flight) {
            return Err(bad("tenants.max_in_flight", "must be between 1 and 100000"));
        }
        if self.tenants.max_workers > 1024 {
            return Err(bad("tenants.max_workers", "must be at most 1024"));
        }
        if !s.client_ip_header.is_empty()
            && axum::http::HeaderName::from_bytes(s.client_ip_header.as_bytes()).is_err()
        {
            return Err(bad(
                "server.client_ip_header",
                "must be an HTTP header name",
            ));
        }
        if self.hub.node_id.len() > 128 || !self.hub.node_id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "hub.node_id",
                "must be at most 128 printable characters without spaces",
            ));
        }
        if !(1..=10_000).contains(&l.max_batch_searches) {
            return Err(bad(
                "limits.max_batch_searches",
                "must be between 1 and 10000",
            ));
        }
        if !matches!(
            self.logging.level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(bad(
                "logging.level",
                "must be one of error, warn, info, debug, trace",
            ));
        }
        let h = &self.hub;
        if !(h.api_url.starts_with("http://") || h.api_url.starts_with("https://"))
            || h.api_url.ends_with('/')
        {
            return Err(bad(
                "hub.api_url",
                "must be an http(s) URL without a trailing slash",
            ));
        }
        if !(1..=300).contains(&h.timeout_seconds) {
            return Err(bad("hub.timeout_seconds", "must be between 1 and 300"));
        }
        if h.retries > 10 {
            return Err(bad("hub.retries", "must be at most 10"));
        }
        if !(1..=86_400).contains(&h.usage_report_interval) {
            return Err(bad(
                "hub.usage_report_interval",
                "must be between 1 and 86400 seconds",
            ));
        }
        if h.grace_period_seconds > 86_400 {
            return Err(bad("hub.grace_period_seconds", "must be at most 86400"));
        }
        let m = &self.mcp;
        if m.max_body_bytes
            .is_some_and(|b| !(1024..=MAX_MCP_BODY).contains(&b))
        {
            return Err(bad(
                "mcp.max_body_bytes",
                "must be between 1 KiB and 16 MiB",
            ));
        }
        let url = &m.public_url;
        let http = url.starts_with("http://") || url.starts_with("https://");
        if !url.is_empty() && !http {
            return Err(bad("mcp.public_url", "must be an http(s) URL"));
        }
        if m.allowed_hosts.len() > 64
            || m.allowed_hosts
                .iter()
                .any(|h| h.is_empty() || h.len() > 253 || !h.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(bad(
                "mcp.allowed_hosts",
                "must be at most 64 host names (or host:port), without spaces",
            ));
        }
        if !(1..=86_400).contains(&m.hub_refresh_seconds) {
            return Err(bad(
                "mcp.hub_refresh_seconds",
                "must be between 1 and 86400",
            ));
        }
        if !(4096..=1 << 30).contains(&m.log.max_file_bytes) {
            return Err(bad(
                "mcp.log.max_file_bytes",
                "must be between 4 KiB and 1 GiB",
            ));
        }
        if !(1..=100).contains(&m.log.max_files) {
            return Err(bad("mcp.log.max_files", "must be between 1 and 100"));
        }
        if h.cache.api_key_ttl_seconds > 86_400 || h.cache.quota_ttl_seconds > 86_400 {
            return Err(bad("hub.cache", "TTLs must be at most 86400 seconds"));
        }
        self.backups.validate()?;
        match &self.cluster {
            Some(c) => c.validate(),
            None => Ok(()),
        }
    }
}
