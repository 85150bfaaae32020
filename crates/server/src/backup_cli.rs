//! `vectorizer backup`: the operator's offline backups of a data
//! directory the server is not running on. Each command acts for one user
//! (`--user`) or, without it, for the deployment with the Hub off, through
//! the same service entry points the HTTP routes use.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use vectorizer_server::config::{Config, Overrides};
use vectorizer_service::backup::{CreateBackup, Progress, RestoreBackup};
use vectorizer_service::{Caller, Permission, Service, Tenant};

#[derive(clap::Args)]
pub struct Target {
    /// The data directory (the server must not be running on it).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The user whose backups these are (a UUID); without it, the
    /// deployment's own (the Hub off).
    #[arg(long, value_name = "USER_ID")]
    user: Option<String>,
    /// A YAML config file (see config.yml); with `hub.enabled`, a restore
    /// registers new collections with the Hub (HIVEHUB_SERVICE_API_KEY).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Backs up the user's collections (all, or those named).
    Create {
        #[command(flatten)]
        target: Target,
        /// Collections to back up, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        collections: Option<Vec<String>>,
        /// A note to tell backups apart.
        #[arg(long)]
        label: Option<String>,
    },
    /// Lists the user's backups, newest first (JSON).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Checks a backup whole: the archive's SHA-256 and every file's.
    Verify {
        /// The backup's id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Restores a backup's collections into the user's namespace.
    Restore {
        /// The backup's id.
        id: String,
        #[command(flatten)]
        target: Target,
        /// Collections to restore, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        collections: Option<Vec<String>>,
        /// Restore a collection under a new name: OLD=NEW (repeatable).
        #[arg(long, value_name = "OLD=NEW")]
        rename: Vec<String>,
        /// Replace collections that exist.
        #[arg(long)]
        overwrite: bool,
    },
}

impl BackupCommand {
    fn target(&self) -> &Target {
        match self {
            BackupCommand::Create { target, .. }
            | BackupCommand::List { target }
            | BackupCommand::Verify { target, .. }
            | BackupCommand::Restore { target, .. } => target,
        }
    }
}

/// Runs the command; its output is JSON on stdout, progress on stderr.
pub fn run(command: BackupCommand) -> Result<(), String> {
    let t = command.target();
    vectorizer_server::existing_data_dir(&t.data_dir)?;
    let overrides = Overrides {
        data_dir: Some(t.data_dir.clone()),
        ..Overrides::default()
    };
    let mut cfg = Config::load(t.config.as_deref(), &overrides).map_err(|e| e.to_string())?;
    // Nothing is served: no MCP server, and no log of its calls.
    cfg.mcp.enabled = false;
    let caller = match &t.user {
        None => Caller::Local,
        Some(u) => Caller::Tenant(Tenant {
            user_id: u
                .parse()
                .map_err(|_| format!("--user takes a user id (a UUID), not {u:?}"))?,
            access_key_id: uuid::Uuid::nil(),
            project_id: None,
            permissions: vec![Permission::Admin],
            plan: "operator".into(),
        }),
    };
    let rt = crate::tool_runtime()?;
    rt.block_on(async move {
        let state = tokio::task::spawn_blocking({
            let cfg = cfg.clone();
            move || vectorizer_server::state(&cfg)
        })
        .await
        .map_err(|e| e.to_string())??;
        let service = state.service;
        if cfg.hub.enabled && matches!(command, BackupCommand::Restore { .. }) {
            let auth = vectorizer_server::hub_auth(&cfg, None)?;
            vectorizer_server::connect_hub(&service, &auth, &cfg)?;
        }
        let out = act(&service, caller, command).await;
        // Every restored collection is durable before the process ends.
        service.flush().map_err(|e| e.to_string())?;
        println!("{}", out?);
        Ok(())
    })
}

async fn act(
    service: &Arc<Service>,
    caller: Caller,
    command: BackupCommand,
) -> Result<String, String> {
    let call = Arc::new(service.admit(caller).map_err(|e| e.to_string())?);
    let json = |v: serde_json::Result<String>| v.map_err(|e| e.to_string());
    match command {
        BackupCommand::Create {
            collections, label, ..
        } => {
            let (bar, progress) = bar("backing up");
            let req = CreateBackup { collections, label };
            let info = service.create_backup(&call, req, progress).await;
            bar.finish_and_clear();
            json(serde_json::to_string_pretty(
                &info.map_err(|e| e.to_string())?,
            ))
        }
        BackupCommand::List { .. } => {
            let list = service
                .list_backups(&call)
                .await
                .map_err(|e| e.to_string())?;
            json(serde_json::to_string_pretty(&list))
        }
        BackupCommand::Verify { id, .. } => {
            let (bar, progress) = bar("verifying");
            let info = service.verify_backup(&call, &id, progress).await;
            bar.finish_and_clear();
            let info = info.map_err(|e| e.to_string())?;
            json(serde_json::to_string_pretty(&serde_json::json!({
                "verified": true, "backup": info,
            })))
        }
        BackupCommand::Restore {
            id,
            collections,
            rename,
            overwrite,
            ..
        } => {
            let mut renames = BTreeMap::new();
            for r in rename {
                let (old, new) = r
                    .split_once('=')
                    .ok_or_else(|| format!("--rename takes OLD=NEW, not {r:?}"))?;
                renames.insert(old.to_owned(), new.to_owned());
            }
            let req = RestoreBackup {
                backup_id: id,
                collections,
                rename: renames,
                overwrite,
            };
            let (bar, progress) = bar("restoring");
            let done = service.restore_backup(&call, req, progress).await;
            bar.finish_and_clear();
            json(serde_json::to_string_pretty(
                &done.map_err(|e| e.to_string())?,
            ))
        }
    }
}

/// A progress bar on stderr, in bytes, and the callback feeding it.
fn bar(what: &'static str) -> (indicatif::ProgressBar, Progress) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what);
    let feed = bar.clone();
    let progress: Progress = Arc::new(move |done, total| {
        feed.set_length(total);
        feed.set_position(done);
    });
    (bar, progress)
}
