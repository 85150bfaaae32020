//! The steps of a run and of a rollback. Every step is journaled before
//! and after it is taken, and every step is idempotent given what the
//! journal and the data directory say, so a run or a rollback cut short
//! anywhere (SIGKILL included) is finished by running it again.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;
use vectorizer_engine::Database;
use vectorizer_hub::HubClient;

use super::journal::{self, Item, Record};
use super::{ItemStatus, Plan, Status};
use crate::aliases::Aliases;
use crate::backup::{Leftover, archive, store};
use crate::error::{Result, ServiceError};
use crate::service::{HUB_ID_KEY, OWNER_KEY, PROJECT_KEY};

/// Hears of collection `name` finished, `done` of `total`.
pub type StepFn = Arc<dyn Fn(&str, usize, usize) + Send + Sync>;

/// Hears how far a run or rollback is.
#[derive(Clone)]
pub struct Progress {
    /// Bytes of the backup written so far, of the total.
    pub backup: crate::backup::Progress,
    /// Collection `name` finished, `done` of `total`.
    pub step: StepFn,
}

impl Progress {
    pub fn quiet() -> Progress {
        Progress {
            backup: crate::backup::quiet(),
            step: Arc::new(|_, _, _| {}),
        }
    }
}

/// What a run or a rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run: String,
    pub phase: &'static str,
    pub backup: Option<String>,
    pub collections: Vec<ItemStatus>,
}

/// The journal's records folded into what has been done.
pub(super) struct State {
    run: Option<String>,
    items: Vec<Item>,
    backing_up: Option<String>,
    backup: Option<String>,
    done: bool,
    rolling_back: bool,
    rolled_back: bool,
    renamed: HashSet<String>,
    registered: BTreeMap<String, Uuid>,
    reported: HashSet<String>,
    unregistered: HashSet<String>,
    restored: HashSet<String>,
}

impl State {
    pub(super) fn of(records: &[Record]) -> State {
        let mut s = State {
            run: None,
            items: Vec::new(),
            backing_up: None,
            backup: None,
            done: false,
            rolling_back: false,
            rolled_back: false,
            renamed: HashSet::new(),
            registered: BTreeMap::new(),
            reported: HashSet::new(),
            unregistered: HashSet::new(),
            restored: HashSet::new(),
        };
        for r in records {
            match r {
                Record::Begin { run, items, .. } => {
                    s.run = Some(run.clone());
                    s.items = items.clone();
                }
                Record::BackedUp { backup } => s.backup = Some(backup.clone()),
                Record::Renamed { name } => {
                    s.renamed.insert(name.clone());
                }
                Record::Registered { name, hub_id } => {
                    s.registered.insert(name.clone(), *hub_id);
                }
                Record::Reported { name } => {
                    s.reported.insert(name.clone());
                }
                Record::Done => s.done = true,
                Record::RollbackBegin => s.rolling_back = true,
                Record::Unregistered { name } => {
                    s.unregistered.insert(name.clone());
                }
                Record::Restored { name } => {
                    s.restored.insert(name.clone());
                }
                Record::RolledBack => s.rolled_back = true,
                Record::BackingUp { backup } => s.backing_up = Some(backup.clone()),
                Record::Renaming { .. } | Record::Registering { .. } => {}
            }
        }
        s
    }

    fn phase(&self) -> &'static str {
        match (&self.run, self.rolled_back, self.rolling_back, self.done) {
            (None, ..) => "none",
            (_, true, ..) => "rolled_back",
            (_, _, true, _) => "rolling_back",
            (_, _, _, true) => "done",
            _ => "running",
        }
    }

    pub(super) fn status(&self) -> Status {
        Status {
            phase: self.phase(),
            run: self.run.clone(),
            backup: self.backup.clone(),
            collections: self.item_status(),
        }
    }

    fn item_status(&self) -> Vec<ItemStatus> {
        self.items
            .iter()
            .map(|i| ItemStatus {
                name: i.name.clone(),
                target: i.target.clone(),
                user: i.user,
                renamed: self.renamed.contains(&i.name),
                registered: self.registered.get(&i.name).copied(),
                reported: self.reported.contains(&i.name),
                unregistered: self.unregistered.contains(&i.name),
                restored: self.restored.contains(&i.name),
            })
            .collect()
    }

    fn report(&self) -> Report {
        Report {
            run: self.run.clone().unwrap_or_default(),
            phase: self.phase(),
            backup: self.backup.clone(),
            collections: self.item_status(),
        }
    }
}

/// Runs a step's file work on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal(format!("a migration step failed: {e}")))?
}

fn open_aliases(data_dir: &Path) -> Result<Arc<Aliases>> {
    Aliases::open(data_dir)
        .map(Arc::new)
        .map_err(|e| ServiceError::Internal(format!("reading aliases.json: {e}")))
}

/// Runs a migration by `plan`, or resumes the one the journal holds (its
/// own plan then stands). Refused while the plan has conflicts, and while
/// a rollback is under way.
pub(super) async fn run(
    db: Arc<Database>,
    data_dir: &Path,
    plan: &Plan,
    hub: Arc<HubClient>,
    progress: &Progress,
) -> Result<Report> {
    let records = journal::load(data_dir)?;
    let mut state = State::of(&records);
    let aliases = open_aliases(data_dir)?;
    match state.phase() {
        "rolling_back" => {
            return Err(ServiceError::unprocessable(
                "rollback_under_way",
                "a rollback is under way: finish it with `vectorizer migrate rollback`",
            ));
        }
        "done" | "rolled_back" | "none" => {
            // Nothing left to migrate: the last run stays the one a
            // rollback undoes.
            if plan.collections.is_empty() {
                return Ok(state.report());
            }
            if plan.conflicts() > 0 {
                return Err(ServiceError::unprocessable(
                    "migration_conflicts",
                    format!(
                        "{} collections have conflicts: see `vectorizer migrate plan`",
                        plan.conflicts()
                    ),
                ));
            }
            if !plan.users_checked {
                return Err(ServiceError::Internal(
                    "the users were not checked with the Hub".into(),
                ));
            }
            let items = plan
                .collections
                .iter()
                .map(|p| {
                    let c = db.collection(&p.name)?;
                    Ok(Item {
                        name: p.name.clone(),
                        user: p.user.expect("no conflict: mapped"),
                        target: p.target.clone().expect("no conflict: mapped"),
                        metadata: c.metadata(),
                        dimension: c.config().dimension,
                        // The plan refuses names the Hub has already.
                        hub_had: false,
                        created_at_ms: c.info().created_at_ms,
                        aliases: aliases.of(&p.name),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            // Only now is the last run set aside: every check has passed.
            if let Some(run) = &state.run {
                journal::archive(data_dir, run)?;
            }
            let begin = Record::Begin {
                run: Uuid::new_v4().to_string(),
                at_ms: store::now_ms(),
                items,
            };
            journal::append(data_dir, &begin)?;
            state = State::of(std::slice::from_ref(&begin));
        }
        _ => {}
    }
    if state.backup.is_none() {
        // The id is journaled first, so a backup cut short is found again.
        let id = match &state.backing_up {
            Some(id) => id.clone(),
            None => {
                let id = Uuid::new_v4().hyphenated().to_string();
                journal::append(data_dir, &Record::BackingUp { backup: id.clone() })?;
                id
            }
        };
        let (db2, dd, items, p) = (
            db.clone(),
            data_dir.to_owned(),
            state.items.clone(),
            progress.clone(),
        );
        let backup = blocking(move || back_up(&db2, &dd, &id, &items, &p)).await?;
        journal::append(
            data_dir,
            &Record::BackedUp {
                backup: backup.clone(),
            },
        )?;
        state.backup = Some(backup);
    }
    let total = state.items.len();
    for (n, item) in state.items.clone().iter().enumerate() {
        let name = || item.name.clone();
        if !state.renamed.contains(&item.name) {
            journal::append(data_dir, &Record::Renaming { name: name() })?;
            let (db, item2, aliases) = (db.clone(), item.clone(), aliases.clone());
            blocking(move || rename_in(&db, &aliases, &item2)).await?;
            journal::append(data_dir, &Record::Renamed { name: name() })?;
            state.renamed.insert(name());
        }
        let hub_id = match state.registered.get(&item.name) {
            Some(id) => *id,
            None => {
                journal::append(data_dir, &Record::Registering { name: name() })?;
                // The Hub's create is idempotent by name: asked again after
                // a crash, it answers the same id.
                let made = hub
                    .create_collection(&item.user, &item.name, item.user, item.dimension as u32)
                    .await?;
                let id = made.collection_id;
                let (db, target, user) = (db.clone(), item.target.clone(), item.user);
                blocking(move || {
                    let c = db.collection(&target)?;
                    let mut meta = c.metadata();
                    meta.insert(HUB_ID_KEY.to_owned(), id.to_string());
                    meta.insert(PROJECT_KEY.to_owned(), user.to_string());
                    Ok(c.set_metadata(meta)?)
                })
                .await?;
                journal::append(
                    data_dir,
                    &Record::Registered {
                        name: name(),
                        hub_id: id,
                    },
                )?;
                state.registered.insert(name(), id);
                id
            }
        };
        if !state.reported.contains(&item.name) {
            let c = db.collection(&item.target)?;
            hub.update_usage(&hub_id, c.len() as u64, c.disk_bytes())
                .await?;
            journal::append(data_dir, &Record::Reported { name: name() })?;
            state.reported.insert(name());
        }
        (progress.step)(&item.name, n + 1, total);
        tracing::info!(collection = %item.name, user = %item.user, "collection migrated");
    }
    journal::append(data_dir, &Record::Done)?;
    state.done = true;
    Ok(state.report())
}

/// Renames `item`'s collection into its user's namespace with its owner
/// set, and moves its aliases with it, unless that is done already.
fn rename_in(db: &Database, aliases: &Aliases, item: &Item) -> Result<()> {
    if db.collection(&item.target).is_err() {
        let mut meta = item.metadata.clone();
        meta.insert(OWNER_KEY.to_owned(), item.user.to_string());
        db.rename_collection(&item.name, &item.target, meta)?;
    }
    let set: Vec<(String, String)> = item
        .aliases
        .iter()
        .map(|a| {
            (
                crate::caller::stored_name(&item.user, a),
                item.target.clone(),
            )
        })
        .collect();
    aliases
        .move_all(&item.aliases, &set)
        .map_err(|e| ServiceError::Internal(format!("writing aliases.json: {e}")))
}

/// Writes one archive of every item's collection (under its name before
/// the run) into the migration directory as backup `id`, unless it is
/// there whole already.
fn back_up(
    db: &Database,
    data_dir: &Path,
    id: &str,
    items: &[Item],
    progress: &Progress,
) -> Result<String> {
    let dir = journal::dir(data_dir);
    if store::info(&dir, id).is_some() {
        return Ok(id.to_owned());
    }
    // What a backup cut short left.
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") || name.starts_with(".work-") || name == format!("{id}.tar.gz") {
            let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
        }
    }
    let chosen = items
        .iter()
        .map(|i| (i.name.clone(), i.name.clone()))
        .collect();
    let (info, tmp) = crate::backup::write_backup(
        db,
        &dir,
        Some(id.to_owned()),
        None,
        Some("before migration".into()),
        chosen,
        &progress.backup,
    )?;
    store::commit(&dir, &tmp.path(), &info)?;
    tmp.keep();
    Ok(info.id)
}

/// Undoes the run the journal holds, finished or not: the Hub
/// registrations it made are deleted, and every collection gets back its
/// name, metadata and aliases (from the backup, if it is found under
/// neither name).
pub(super) async fn rollback(
    db: Arc<Database>,
    data_dir: &Path,
    hub: Arc<HubClient>,
    progress: &Progress,
) -> Result<Report> {
    let records = journal::load(data_dir)?;
    let mut state = State::of(&records);
    match state.phase() {
        "none" | "rolled_back" => {
            return Err(ServiceError::unprocessable(
                "nothing_to_roll_back",
                "no migration run to roll back",
            ));
        }
        "rolling_back" => {}
        _ => {
            journal::append(data_dir, &Record::RollbackBegin)?;
            state.rolling_back = true;
        }
    }
    let aliases = open_aliases(data_dir)?;
    let total = state.items.len();
    for (n, item) in state.items.clone().iter().enumerate().rev() {
        // Names and metadata first: a Hub entry is gone only once nothing
        // here names it.
        if !state.restored.contains(&item.name) {
            let (db2, item2, backup, dd) = (
                db.clone(),
                item.clone(),
                state.backup.clone(),
                data_dir.to_owned(),
            );
            let aliases = aliases.clone();
            blocking(move || restore_item(&db2, &aliases, &dd, &item2, backup.as_deref())).await?;
            journal::append(
                data_dir,
                &Record::Restored {
                    name: item.name.clone(),
                },
            )?;
            state.restored.insert(item.name.clone());
        }
        if !state.unregistered.contains(&item.name) {
            if !item.hub_had {
                let id = match state.registered.get(&item.name) {
                    Some(id) => Some(*id),
                    // Registered perhaps, not yet journaled: the Hub knows.
                    None => hub
                        .user_collections(&item.user)
                        .await?
                        .collections
                        .into_iter()
                        .find(|c| c.collection_name == item.name)
                        .map(|c| c.collection_id),
                };
                if let Some(id) = id {
                    match hub.delete_collection(&id).await {
                        Ok(()) | Err(vectorizer_hub::HubError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            journal::append(
                data_dir,
                &Record::Unregistered {
                    name: item.name.clone(),
                },
            )?;
            state.unregistered.insert(item.name.clone());
        }
        (progress.step)(&item.name, total - n, total);
    }
    journal::append(data_dir, &Record::RolledBack)?;
    state.rolled_back = true;
    tracing::info!("migration rolled back");
    Ok(state.report())
}

/// Gives `item`'s collection back its name, metadata and aliases.
fn restore_item(
    db: &Database,
    aliases: &Aliases,
    data_dir: &Path,
    item: &Item,
    backup: Option<&str>,
) -> Result<()> {
    restore_collection(db, data_dir, item, backup)?;
    let moved: Vec<String> = item
        .aliases
        .iter()
        .map(|a| crate::caller::stored_name(&item.user, a))
        .collect();
    let set: Vec<(String, String)> = item
        .aliases
        .iter()
        .map(|a| (a.clone(), item.name.clone()))
        .collect();
    aliases
        .move_all(&moved, &set)
        .map_err(|e| ServiceError::Internal(format!("writing aliases.json: {e}")))
}

/// The collection `item` moved, back under its name with its metadata: the
/// one at its new name if it is that collection (not one made there
/// since), else from the backup.
fn restore_collection(
    db: &Database,
    data_dir: &Path,
    item: &Item,
    backup: Option<&str>,
) -> Result<()> {
    let ours = |c: &vectorizer_engine::collection::Collection| {
        item.created_at_ms == 0 || c.info().created_at_ms == item.created_at_ms
    };
    if let Ok(c) = db.collection(&item.name) {
        if c.metadata() != item.metadata {
            c.set_metadata(item.metadata.clone())?;
        }
        return Ok(());
    }
    if let Ok(c) = db.collection(&item.target)
        && ours(&c)
    {
        db.rename_collection(&item.target, &item.name, item.metadata.clone())?;
        return Ok(());
    }
    // Under neither name: from the backup taken before the run.
    let Some(id) = backup else {
        return Err(ServiceError::Internal(format!(
            "collection `{}` is missing and no backup was taken",
            item.name
        )));
    };
    let dir = journal::dir(data_dir);
    let work = Leftover::new(dir.join(format!(".work-{}", Uuid::new_v4())));
    std::fs::create_dir(work.path())
        .map_err(|e| ServiceError::Internal(format!("creating a work directory: {e}")))?;
    let keep = HashSet::from([item.name.clone()]);
    let m = archive::read(
        &store::archive_path(&dir, id),
        Some(&work.path()),
        Some(&keep),
        crate::backup::trusted(),
        &|_| {},
    )?;
    let c = m
        .collections
        .iter()
        .find(|c| c.name == item.name)
        .ok_or_else(|| ServiceError::Internal(format!("`{}` is not in the backup", item.name)))?;
    db.import_collection(
        &item.name,
        c.config.clone(),
        item.metadata.clone(),
        &work.path().join(&item.name),
        c.seq,
        false,
    )?;
    Ok(())
}
