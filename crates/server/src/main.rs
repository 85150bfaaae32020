//! The `vectorizer` command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod backup_cli;
mod cluster_cli;
mod migrate_cli;
use vectorizer_server::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "vectorizer",
    version,
    about = "Vectorizer: a vector database server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `serve --help` says of the environment.
const SERVE_ENV: &str = "\
Environment:
  VECTORIZER_<SECTION>__<KEY>  any config key, e.g. VECTORIZER_SERVER__PORT=8080
                               (between the config file and the flags)
  HIVEHUB_SERVICE_API_KEY      the Hub's service key (with the Hub enabled)
  HIVEHUB_SIGNING_SECRET       checks calls signed by the Hub (with hub.node_id)
  VECTORIZER_OPERATOR_TOKEN    the operator's token for /metrics and /health
                               details (Authorization: Bearer; 16+ characters)
  VECTORIZER_API_KEY           with the Hub off: a key every route but /health
                               needs (reads and writes; 16+ characters)
  VECTORIZER_READ_API_KEY      with the Hub off: a read-only key
  VECTORIZER_CLUSTER_SECRET    with a `cluster:` section: the secret every node
                               shares, signing calls between nodes (32+ characters)
Secrets are read only from the environment, never from a file.";

#[derive(Subcommand)]
enum Command {
    /// Runs the server (defaults: 127.0.0.1:15002, ./data, Hub disabled).
    #[command(after_help = SERVE_ENV)]
    Serve {
        /// A YAML config file (see config.yml); optional.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where collections are stored (default ./data).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1; 0.0.0.0 for every
        /// interface).
        #[arg(long)]
        host: Option<String>,
        /// Port to listen on (default 15002); 0 picks a free one and prints it.
        #[arg(long)]
        port: Option<u16>,
        /// Also run a local Hub in this process (state in DATA_DIR/hub.json)
        /// and require its access keys: multi-tenant with no other set-up.
        #[arg(long)]
        local_hub: bool,
        /// Also serve Qdrant's REST API (default port 6333; see
        /// docs/QDRANT_COMPAT.md), over the same collections.
        #[arg(long)]
        qdrant: bool,
    },
    /// An MCP server for AI agents on standard input and output (a desktop
    /// agent spawns this process). The HTTP server has one at /mcp too.
    #[command(
        after_help = "Environment:\n  VECTORIZER_ACCESS_KEY  with the Hub enabled: the access key the agent acts for\n  HIVEHUB_SERVICE_API_KEY  the Hub's service key (with the Hub enabled)"
    )]
    Mcp {
        /// Speak MCP on stdin/stdout (the only transport of this command).
        #[arg(long, required = true)]
        stdio: bool,
        /// A YAML config file (see config.yml); optional.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where collections are stored (default ./data). The HTTP server
        /// must not be using it.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Loads and validates the configuration (file, environment), prints
    /// the result as JSON, and exits (2 if it is invalid).
    CheckConfig {
        /// A YAML config file (see config.yml); without one, the defaults
        /// and the environment are checked.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Compares the Hub's list of a user's collections with this data
    /// directory's and prints the drift (exit 1 if there is any).
    HubDrift {
        /// The user's id (a UUID).
        #[arg(long, value_name = "USER_ID")]
        user: String,
        /// A YAML config file naming the Hub (hub.api_url).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The data directory to compare (default ./data).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Offline backups of a data directory the server is not running on:
    /// create, list, verify, restore (progress on stderr, JSON on stdout).
    Backup {
        #[command(subcommand)]
        command: backup_cli::BackupCommand,
    },
    /// Assigns the collections of a single-tenant data directory to users:
    /// plan, run, status, rollback (see docs/HUB_MIGRATION.md).
    Migrate {
        #[command(subcommand)]
        command: migrate_cli::MigrateCommand,
    },
    /// Cluster mode: the cluster's status, and replacing a lost node (see
    /// docs/CLUSTER.md). Needs VECTORIZER_OPERATOR_TOKEN.
    Cluster {
        #[command(subcommand)]
        command: cluster_cli::ClusterCommand,
    },
    /// A local HiveHub for development and tests: serve it, and manage its
    /// plans, users and access keys.
    HubDev {
        /// The local Hub's state file (`serve --local-hub` keeps it in
        /// DATA_DIR/hub.json).
        #[arg(long, default_value = "hub.json", global = true, value_name = "FILE")]
        data: PathBuf,
        #[command(subcommand)]
        command: HubCommand,
    },
}

#[derive(Subcommand)]
enum HubCommand {
    /// Serves the Hub's HTTP contract; callers must send the service key
    /// from HIVEHUB_SERVICE_API_KEY as X-Service-Key.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on.
        #[arg(long, default_value_t = 12000)]
        port: u16,
    },
    /// Creates or replaces a plan.
    Plan {
        /// The plan's name, as `user --plan` names it.
        name: String,
        /// Most collections a user on this plan may have.
        #[arg(long)]
        max_collections: u32,
        /// Most vectors, over all of a user's collections.
        #[arg(long)]
        max_vectors: u64,
        /// Most bytes on disk, over all of a user's collections.
        #[arg(long)]
        max_storage_bytes: u64,
    },
    /// Lists the plans, one a line: name, then its limits.
    Plans,
    /// Lists the users, one a line: id, e-mail address, plan.
    Users,
    /// Lists the access keys (never the keys themselves), one a line: id,
    /// user id, name, permissions, active or revoked, expiry.
    Keys {
        /// Only this user's keys.
        #[arg(long, value_name = "USER_ID")]
        user: Option<String>,
    },
    /// Creates a user on a plan and prints its id; a user with the e-mail
    /// address exists already: prints that user's id (the plan is not
    /// changed).
    User {
        /// The user's e-mail address (unique).
        email: String,
        /// The plan's name (made with `plan`).
        #[arg(long)]
        plan: String,
    },
    /// Creates an access key for a user and prints it (once: only its hash is kept).
    Key {
        /// The user's id (the UUID `user` printed), not the e-mail address.
        #[arg(long, value_name = "USER_ID")]
        user: String,
        /// Comma-separated: read, write, delete, admin.
        #[arg(long, default_value = "read,write,delete")]
        permissions: String,
        /// RFC 3339 time after which the key is refused (in the future).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        /// A name for the key, to tell keys apart (in the Hub's key listing,
        /// GET /api/internal/access-keys).
        #[arg(long, default_value = "vectorizer")]
        name: String,
    },
    /// Revokes an access key. Servers that cached the key honour it until
    /// their key cache's TTL (hub.cache.api_key_ttl_seconds) runs out.
    Revoke {
        /// The key's id (the `access key id` that `key` printed).
        #[arg(value_name = "KEY_ID")]
        id: String,
    },
}

fn main() {
    // Files and directories this process creates are its own alone
    // (0600 and 0700): data, the local Hub's state, logs of nonces.
    // Safety: umask only sets the process's file-mode creation mask.
    unsafe { libc::umask(0o077) };
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve {
            config,
            data_dir,
            host,
            port,
            local_hub,
            qdrant,
        } => {
            let overrides = Overrides {
                data_dir,
                host,
                port,
                qdrant,
            };
            with_config(config.as_deref(), &overrides, |cfg| {
                on_runtime(
                    &cfg.clone(),
                    "vectorizer",
                    vectorizer_server::run(cfg, local_hub),
                )
            })
        }
        Command::Mcp {
            stdio: _,
            config,
            data_dir,
        } => {
            let overrides = Overrides {
                data_dir,
                ..Overrides::default()
            };
            with_config(config.as_deref(), &overrides, |cfg| {
                on_runtime(
                    &cfg.clone(),
                    "vectorizer-mcp",
                    vectorizer_server::mcp::stdio::serve(cfg),
                )
            })
        }
        Command::CheckConfig { config } => {
            match Config::load(config.as_deref(), &Overrides::default())
                .map_err(|e| e.to_string())
                .and_then(|cfg| vectorizer_server::check_environment(&cfg, false).map(|()| cfg))
            {
                Ok(cfg) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&cfg).expect("serializable")
                    );
                    0
                }
                Err(e) => {
                    eprintln!("vectorizer: {e}");
                    2
                }
            }
        }
        Command::HubDrift {
            user,
            config,
            data_dir,
        } => {
            let overrides = Overrides {
                data_dir,
                ..Overrides::default()
            };
            match Config::load(config.as_deref(), &overrides)
                .map_err(|e| e.to_string())
                .and_then(|cfg| hub_drift(&cfg, &user))
            {
                Ok(true) => 0,
                Ok(false) => 1,
                Err(e) => {
                    eprintln!("vectorizer hub-drift: {e}");
                    2
                }
            }
        }
        Command::Backup { command } => match backup_cli::run(command) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("vectorizer backup: {e}");
                1
            }
        },
        Command::Migrate { command } => match migrate_cli::run(command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("vectorizer migrate: {e}");
                1
            }
        },
        Command::Cluster { command } => match cluster_cli::run(command) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("vectorizer cluster: {e}");
                1
            }
        },
        Command::HubDev { data, command } => match hub_dev(&data, command) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("vectorizer hub-dev: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}

/// Prints the drift for `user`; true when there is none.
fn hub_drift(cfg: &Config, user: &str) -> Result<bool, String> {
    let user = user
        .parse()
        .map_err(|_| format!("--user takes a user id (a UUID), not {user:?}"))?;
    if std::env::var(vectorizer_hub::SERVICE_KEY_ENV).is_err() {
        return Err(format!(
            "hub-drift asks the Hub (hub.api_url): set {} to the service key",
            vectorizer_hub::SERVICE_KEY_ENV
        ));
    }
    let auth = vectorizer_server::hub_auth(cfg, None)?;
    let rt = tool_runtime()?;
    let d = rt
        .block_on(vectorizer_service::drift::drift(
            &cfg.storage.data_dir,
            auth.hub(),
            user,
        ))
        .map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&d).map_err(|e| e.to_string())?
    );
    Ok(d.is_empty())
}

fn hub_dev(data: &std::path::Path, command: HubCommand) -> Result<(), String> {
    use vectorizer_hub::HubStore;
    use vectorizer_hub::store::Plan;
    let store = HubStore::open(data).map_err(|e| e.to_string())?;
    match command {
        HubCommand::Serve { host, port } => {
            let key = std::env::var(vectorizer_hub::SERVICE_KEY_ENV)
                .ok()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    format!(
                        "set {} to the service key callers must present",
                        vectorizer_hub::SERVICE_KEY_ENV
                    )
                })?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind((host.as_str(), port))
                    .await
                    .map_err(|e| format!("binding {host}:{port}: {e}"))?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                println!("local hub listening on http://{addr}");
                let app = vectorizer_hub::router(std::sync::Arc::new(store), &key);
                axum::serve(listener, app)
                    .with_graceful_shutdown(vectorizer_server::serve::signal())
                    .await
                    .map_err(|e| e.to_string())
            })
        }
        HubCommand::Plan {
            name,
            max_collections,
            max_vectors,
            max_storage_bytes,
        } => {
            let p = store
                .create_plan(Plan {
                    name,
                    max_collections,
                    max_vectors,
                    max_storage_bytes,
                })
                .map_err(|e| e.to_string())?;
            println!("plan {} saved", p.name);
            Ok(())
        }
        HubCommand::Plans => {
            let mut plans = store.plans();
            plans.sort_by(|a, b| a.name.cmp(&b.name));
            for p in plans {
                println!(
                    "{}\tmax_collections={}\tmax_vectors={}\tmax_storage_bytes={}",
                    p.name, p.max_collections, p.max_vectors, p.max_storage_bytes
                );
            }
            Ok(())
        }
        HubCommand::Users => {
            let mut users = store.users();
            users.sort_by(|a, b| a.email.cmp(&b.email));
            for u in users {
                println!("{}\t{}\tplan={}", u.id, u.email, u.plan);
            }
            Ok(())
        }
        HubCommand::Keys { user } => {
            let user = match user {
                None => None,
                Some(u) => Some(u.parse::<uuid::Uuid>().map_err(|_| {
                    format!(
                        "--user takes a user id (the UUID that `hub-dev user` printed), not {u:?}"
                    )
                })?),
            };
            for (owner, k) in store.keys_by_user(user) {
                let permissions: Vec<&str> = k.permissions.iter().map(|p| p.as_str()).collect();
                println!(
                    "{}\tuser={}\tname={}\tpermissions={}\t{}\texpires_at={}",
                    k.id,
                    owner,
                    k.name,
                    permissions.join(","),
                    if k.active { "active" } else { "revoked" },
                    k.expires_at.as_deref().unwrap_or("never"),
                );
            }
            Ok(())
        }
        HubCommand::User { email, plan } => {
            let existing = store
                .users()
                .into_iter()
                .find(|u| u.email.eq_ignore_ascii_case(&email));
            if let Some(u) = existing {
                eprintln!(
                    "a user with the e-mail address {email} exists already (plan {}); its id:",
                    u.plan
                );
                println!("{}", u.id);
                return Ok(());
            }
            let u = store
                .create_user(&email, &plan)
                .map_err(|e| e.to_string())?;
            println!("{}", u.id);
            Ok(())
        }
        HubCommand::Key {
            user,
            permissions,
            expires_at,
            name,
        } => {
            let user: uuid::Uuid = user.parse().map_err(|_| {
                format!(
                    "--user takes a user id (the UUID that `hub-dev user` printed), not {user:?}"
                )
            })?;
            for p in permissions.split(',').map(str::trim) {
                if !matches!(p, "read" | "write" | "delete" | "admin") {
                    return Err(format!(
                        "--permissions: `{p}` is not one of read, write, delete, admin"
                    ));
                }
            }
            let req = serde_json::json!({
                "service": "vectorizer",
                "name": name,
                "permissions": permissions.split(',').map(str::trim).collect::<Vec<_>>(),
                "user_id": user.to_string(),
                "expires_at": expires_at,
            });
            let req = serde_json::from_value(req).map_err(|e| format!("bad arguments: {e}"))?;
            let made = store.generate_key(&req).map_err(|e| e.to_string())?;
            println!("access key id: {}", made.access_key_id);
            println!("access key (shown once): {}", made.access_key);
            Ok(())
        }
        HubCommand::Revoke { id } => {
            let id = id.parse().map_err(|_| {
                "the key id is a UUID (the `access key id` that `hub-dev key` printed)".to_owned()
            })?;
            store.revoke_key(&id).map_err(|e| e.to_string())?;
            println!("revoked");
            Ok(())
        }
    }
}

/// The runtime of an offline command (backup, migrate, hub-drift): two
/// workers, whose blocking work goes to blocking threads.
fn tool_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Loads the configuration and hands it to `f`; an invalid one exits 2.
fn with_config(
    file: Option<&std::path::Path>,
    overrides: &Overrides,
    f: impl FnOnce(Config) -> i32,
) -> i32 {
    match Config::load(file, overrides) {
        Err(e) => {
            eprintln!("vectorizer: {e}");
            2
        }
        Ok(cfg) => f(cfg),
    }
}

/// Runs `main` on the server's runtime, logging as `cfg` says; exits 1 on
/// its error.
fn on_runtime(
    cfg: &Config,
    threads: &str,
    main: impl std::future::Future<Output = Result<(), String>>,
) -> i32 {
    vectorizer_server::init_logging(cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .thread_name(threads)
        .build()
        .expect("starting the runtime");
    let code = match rt.block_on(main) {
        Ok(()) => 0,
        Err(e) => {
            // Once, on stderr, in the log's format (the log is on stderr).
            tracing::error!("{threads}: {e}");
            1
        }
    };
    // The shutdown timeout is spent: whatever still runs (requests cut off
    // at the deadline, a snapshot not finished) is dropped, not waited for.
    // Every acknowledged write is in the log.
    rt.shutdown_background();
    code
}
