//! `vectorizer migrate`: assigns the collections of a single-tenant data
//! directory to users (see docs/HUB_MIGRATION.md). An adapter over
//! `vectorizer_service::migrate`: it reads the mapping, connects to the
//! Hub, draws the progress bars and prints the report.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;
use vectorizer_server::config::{Config, Overrides};
use vectorizer_service::migrate::{self, Mapping, Plan};

#[derive(clap::Args)]
pub struct Common {
    /// The data directory (no server may be running on it).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// A YAML config file naming the Hub (hub.api_url); the service key is
    /// read from HIVEHUB_SERVICE_API_KEY.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct Users {
    /// A YAML file: `default_user: <id>` and `collections: {name or glob: <id>}`
    /// (the first matching glob wins).
    #[arg(long, value_name = "FILE")]
    mapping: Option<PathBuf>,
    /// The user of every collection the mapping does not name.
    #[arg(long, value_name = "USER_ID")]
    default_user: Option<String>,
    /// Ask on the terminal for the user of each collection left unmapped.
    #[arg(long)]
    interactive: bool,
}

#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Prints what a run would do to each collection with no owner, with
    /// conflicts flagged (exit 1 if any). Changes nothing.
    Plan {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        users: Users,
    },
    /// Backs up, then moves each collection into its user's namespace and
    /// registers it with the Hub; resumes a run cut short.
    Run {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        users: Users,
        /// The plan and every check a run makes, changing nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Where the current run stands.
    Status {
        #[command(flatten)]
        common: Common,
    },
    /// Returns to the exact state before the run (during or after it).
    Rollback {
        #[command(flatten)]
        common: Common,
    },
}

/// Runs the command; 0 on success, 1 on conflicts or failure.
pub fn run(command: MigrateCommand) -> Result<i32, String> {
    let common = match &command {
        MigrateCommand::Plan { common, .. }
        | MigrateCommand::Run { common, .. }
        | MigrateCommand::Status { common }
        | MigrateCommand::Rollback { common } => common,
    };
    vectorizer_server::existing_data_dir(&common.data_dir)?;
    let overrides = Overrides {
        data_dir: Some(common.data_dir.clone()),
        ..Overrides::default()
    };
    let cfg = Config::load(common.config.as_deref(), &overrides).map_err(|e| e.to_string())?;
    let rt = crate::tool_runtime()?;
    rt.block_on(act(&cfg, &command, common.json))
}

fn hub(cfg: &Config, needed: bool) -> Result<Option<Arc<vectorizer_hub::HubClient>>, String> {
    match std::env::var(vectorizer_hub::SERVICE_KEY_ENV)
        .ok()
        .filter(|k| !k.is_empty())
    {
        Some(k) => vectorizer_server::hub_client(cfg, k).map(Some),
        None if needed => Err(format!(
            "the Hub at {} must be asked: set {} to the service key",
            cfg.hub.api_url,
            vectorizer_hub::SERVICE_KEY_ENV
        )),
        None => Ok(None),
    }
}

async fn act(cfg: &Config, command: &MigrateCommand, json: bool) -> Result<i32, String> {
    let data = cfg.storage.data_dir.clone();
    match command {
        MigrateCommand::Status { .. } => {
            let s = migrate::status(&data).map_err(|e| e.to_string())?;
            print(json, &s, || {
                let mut out = format!("migration: {}", s.phase);
                if let Some(r) = &s.run {
                    out += &format!(" (run {r})");
                }
                if let Some(b) = &s.backup {
                    out += &format!("\nbackup: {}", backup_path(&data, b).display());
                }
                for c in &s.collections {
                    out += &format!(
                        "\n  {} -> {}: renamed {}, registered {}, reported {}{}",
                        c.name,
                        c.target,
                        yes(c.renamed),
                        yes(c.registered.is_some()),
                        yes(c.reported),
                        if s.phase.starts_with("roll") {
                            format!(
                                ", unregistered {}, restored {}",
                                yes(c.unregistered),
                                yes(c.restored)
                            )
                        } else {
                            String::new()
                        }
                    );
                }
                out
            });
            Ok(0)
        }
        MigrateCommand::Plan { users, .. } => {
            let db = migrate::open(&data, false).map_err(|e| e.to_string())?;
            let mapping = mapping(users)?;
            let hub = hub(cfg, false)?;
            let mut plan = migrate::plan(&db, &data, &mapping, hub.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            if users.interactive {
                let mapping = ask(&plan, mapping)?;
                plan = migrate::plan(&db, &data, &mapping, hub.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            show_plan(json, &plan);
            Ok(i32::from(plan.conflicts() > 0))
        }
        MigrateCommand::Run { users, dry_run, .. } => {
            let status = migrate::status(&data).map_err(|e| e.to_string())?;
            if status.phase == "rolling_back" {
                return Err(
                    "a rollback is under way: finish it with `vectorizer migrate rollback`".into(),
                );
            }
            let resuming = status.phase == "running";
            let hub = hub(cfg, true)?.expect("needed");
            // Planned on the directory opened for looking only: a run that
            // stops at a check has written nothing.
            let plan = {
                let db = migrate::open(&data, false).map_err(|e| e.to_string())?;
                let mut mapping = if resuming {
                    Mapping::default()
                } else {
                    mapping(users)?
                };
                let mut plan = migrate::plan(&db, &data, &mapping, Some(&hub))
                    .await
                    .map_err(|e| e.to_string())?;
                if users.interactive && !resuming {
                    mapping = ask(&plan, mapping)?;
                    plan = migrate::plan(&db, &data, &mapping, Some(&hub))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                plan
            };
            if resuming && *dry_run {
                eprintln!(
                    "run {} stopped part way: `run` resumes it with the plan it began with",
                    status.run.unwrap_or_default()
                );
                return Ok(0);
            }
            if !resuming && (*dry_run || plan.conflicts() > 0) {
                show_plan(json, &plan);
                if plan.conflicts() > 0 {
                    eprintln!(
                        "vectorizer migrate: {}; nothing was changed",
                        conflicts(plan.conflicts())
                    );
                    return Ok(1);
                }
                eprintln!("dry run: every check passed; nothing was changed");
                return Ok(0);
            }
            if resuming {
                eprintln!("resuming run {}", status.run.unwrap_or_default());
            }
            let db = Arc::new(migrate::open(&data, true).map_err(|e| e.to_string())?);
            let (bars, progress) = bars();
            let report = migrate::run(db.clone(), &data, &plan, hub, &progress).await;
            bars.clear().ok();
            db.flush().map_err(|e| e.to_string())?;
            let report = report.map_err(|e| e.to_string())?;
            print(json, &report, || summary(&data, &report));
            Ok(0)
        }
        MigrateCommand::Rollback { .. } => {
            let db = Arc::new(migrate::open(&data, true).map_err(|e| e.to_string())?);
            let hub = hub(cfg, true)?.expect("needed");
            let (bars, progress) = bars();
            let report = migrate::rollback(db.clone(), &data, hub, &progress).await;
            bars.clear().ok();
            db.flush().map_err(|e| e.to_string())?;
            let report = report.map_err(|e| e.to_string())?;
            print(json, &report, || summary(&data, &report));
            Ok(0)
        }
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn backup_path(data: &Path, id: &str) -> PathBuf {
    data.join("migration").join(format!("{id}.tar.gz"))
}

fn summary(data: &Path, r: &migrate::Report) -> String {
    if r.run.is_empty() {
        return "no collection without an owner: nothing to migrate".into();
    }
    let mut out = format!("migration {}: {}", r.run, r.phase);
    if let Some(b) = &r.backup {
        out += &format!("\nbackup: {}", backup_path(data, b).display());
    }
    for c in &r.collections {
        out += &match r.phase {
            "rolled_back" => format!("\n  {} <- {}", c.name, c.target),
            _ => format!(
                "\n  {} -> {} (user {}, hub collection {})",
                c.name,
                c.target,
                c.user,
                c.registered.map_or("-".into(), |u| u.to_string())
            ),
        };
    }
    out
}

fn print<T: serde::Serialize>(json: bool, v: &T, text: impl FnOnce() -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
    } else {
        println!("{}", text());
    }
}

fn show_plan(json: bool, plan: &Plan) {
    print(json, plan, || {
        let mut out = format!(
            "{} collections with no owner ({} owned already, left alone){}",
            plan.collections.len(),
            plan.already_owned,
            if plan.users_checked {
                ""
            } else {
                "; users not checked with the Hub (HIVEHUB_SERVICE_API_KEY unset)"
            }
        );
        for c in &plan.collections {
            out += &format!(
                "\n  {} -> {} ({} points, {} bytes){}",
                c.name,
                c.target.as_deref().unwrap_or("?"),
                c.points,
                c.bytes,
                c.conflict
                    .map_or(String::new(), |k| format!("  CONFLICT: {k}"))
            );
        }
        out += &format!("\n{}", conflicts(plan.conflicts()));
        out
    });
}

/// The mapping from `--mapping` and `--default-user`.
fn mapping(users: &Users) -> Result<Mapping, String> {
    let uuid = |s: &str, what: &str| {
        s.parse::<uuid::Uuid>()
            .map_err(|_| format!("{what}: {s:?} is not a user id (a UUID)"))
    };
    let mut m = Mapping::default();
    if let Some(path) = &users.mapping {
        let raw = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let docs = yaml_rust2::YamlLoader::load_from_str(&raw)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let bad = |why: &str| format!("{}: {why}", path.display());
        let Some(doc) = docs.first() else {
            return Err(bad("empty"));
        };
        let top = doc
            .as_hash()
            .ok_or_else(|| bad("must be a mapping with `default_user` and `collections`"))?;
        for (k, v) in top {
            match k.as_str() {
                Some("default_user") => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| bad("`default_user` must be a user id"))?;
                    m.default_user = Some(uuid(s, "default_user")?);
                }
                Some("collections") => {
                    let rules = v
                        .as_hash()
                        .ok_or_else(|| bad("`collections` must map names to user ids"))?;
                    for (name, user) in rules {
                        let name = name
                            .as_str()
                            .ok_or_else(|| bad("a collection name must be a string"))?;
                        let user = user
                            .as_str()
                            .ok_or_else(|| bad("a user must be a user id"))?;
                        m.rules.push((name.to_owned(), uuid(user, name)?));
                    }
                }
                _ => return Err(bad("unknown key: only `default_user` and `collections`")),
            }
        }
    }
    if let Some(u) = &users.default_user {
        m.default_user = Some(uuid(u, "--default-user")?);
    }
    Ok(m)
}

/// Asks on the terminal for the user of each unmapped collection.
fn ask(plan: &Plan, mut mapping: Mapping) -> Result<Mapping, String> {
    if !std::io::stdin().is_terminal() {
        return Err("--interactive needs a terminal".into());
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    for c in plan
        .collections
        .iter()
        .filter(|c| c.conflict == Some("unmapped"))
    {
        loop {
            eprint!(
                "collection `{}` ({} points, {} bytes): user id (empty to leave it): ",
                c.name, c.points, c.bytes
            );
            std::io::stderr().flush().ok();
            let line = lines
                .next()
                .transpose()
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let line = line.trim();
            if line.is_empty() {
                break;
            }
            match line.parse() {
                Ok(u) => {
                    mapping.rules.insert(0, (c.name.clone(), u));
                    break;
                }
                Err(_) => eprintln!("not a user id (a UUID)"),
            }
        }
    }
    Ok(mapping)
}

/// Progress bars on stderr: the backup's bytes, then the collections.
fn bars() -> (indicatif::MultiProgress, migrate::Progress) {
    let multi = indicatif::MultiProgress::new();
    let backup = multi.add(indicatif::ProgressBar::new(0));
    backup.set_style(
        indicatif::ProgressStyle::with_template("backup      [{bar:40}] {bytes}/{total_bytes}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let steps = multi.add(indicatif::ProgressBar::new(0));
    steps.set_style(
        indicatif::ProgressStyle::with_template("collections [{bar:40}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let progress = migrate::Progress {
        backup: Arc::new(move |done, total| {
            backup.set_length(total);
            backup.set_position(done);
        }),
        step: Arc::new(move |name, done, total| {
            steps.set_length(total as u64);
            steps.set_position(done as u64);
            steps.set_message(name.to_owned());
        }),
    };
    (multi, progress)
}

/// "1 conflict", "2 conflicts".
fn conflicts(n: usize) -> String {
    match n {
        1 => "1 conflict".to_owned(),
        n => format!("{n} conflicts"),
    }
}
