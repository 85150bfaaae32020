//! Migration from a single-tenant data directory (collections with no
//! owner) to per-user collections: each one assigned to a user, renamed
//! into that user's namespace, registered with the Hub and its usage
//! reported; backed up first, journaled step by step, resumable after a
//! crash, and undone exactly by a rollback. Run while no server holds the
//! data directory.

mod journal;
mod steps;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;
use vectorizer_engine::{Database, EngineOptions};
use vectorizer_hub::HubClient;

pub use journal::{Item, Record};
pub use steps::Report;

use crate::caller::stored_name;
use crate::error::{Result, ServiceError};
use crate::service::OWNER_KEY;

/// Which user each collection goes to: the first rule whose glob (`*`, `?`)
/// matches its name, else the default user.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    pub default_user: Option<Uuid>,
    pub rules: Vec<(String, Uuid)>,
}

impl Mapping {
    pub fn user_for(&self, name: &str) -> Option<Uuid> {
        self.rules
            .iter()
            .find(|(g, _)| glob(g.as_bytes(), name.as_bytes()))
            .map(|(_, u)| *u)
            .or(self.default_user)
    }
}

/// Whether `name` matches `pattern` (`*` any run, `?` any one byte).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], name) || (!name.is_empty() && glob(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// What a run would do to one collection.
#[derive(Debug, Clone, Serialize)]
pub struct PlanItem {
    pub name: String,
    pub user: Option<Uuid>,
    /// Its new name, `user_{user_id}:{name}`.
    pub target: Option<String>,
    pub points: u64,
    pub bytes: u64,
    /// Why it cannot be migrated: `unmapped` (no user for it),
    /// `target_exists`, `unknown_user` (the Hub does not know the user),
    /// `invalid_name` (not a name a tenant can hold).
    pub conflict: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub collections: Vec<PlanItem>,
    /// Collections with an owner already: left alone.
    pub already_owned: usize,
    /// Whether the users were checked with the Hub.
    pub users_checked: bool,
}

impl Plan {
    pub fn conflicts(&self) -> usize {
        self.collections
            .iter()
            .filter(|c| c.conflict.is_some())
            .count()
    }
}

/// Opens the data directory for the migration (refused while a server
/// holds it), linking and snapshotting only when `writes`.
pub fn open(data_dir: &Path, writes: bool) -> Result<Database> {
    let options = EngineOptions {
        background: writes,
        ..EngineOptions::default()
    };
    Database::open(data_dir, options).map_err(|e| match e {
        vectorizer_engine::EngineError::InUse(_) => ServiceError::Unavailable(format!(
            "{} is in use by a running server: stop it first",
            data_dir.display()
        )),
        e => e.into(),
    })
}

/// Whether the engine collection `c` has no owner (a single-tenant one):
/// no owner in its metadata, and a name in no user's namespace.
pub fn unowned(c: &vectorizer_engine::collection::Collection) -> bool {
    !c.metadata().contains_key(OWNER_KEY) && crate::caller::split_stored(c.name()).is_none()
}

/// What a run would do, with every conflict flagged; changes nothing.
/// With the Hub, every user is checked with it.
pub async fn plan(
    db: &Database,
    data_dir: &Path,
    mapping: &Mapping,
    hub: Option<&HubClient>,
) -> Result<Plan> {
    // Offline, on a stopped server's data: every collection is read.
    let all = db
        .names()?
        .iter()
        .map(|n| db.collection(n))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let aliases = crate::aliases::Aliases::open(data_dir)
        .map_err(|e| ServiceError::Internal(format!("reading aliases.json: {e}")))?;
    let mut names: HashSet<String> = all.iter().map(|c| c.name().to_owned()).collect();
    names.extend(aliases.all().into_iter().map(|(a, _)| a));
    // Per user: the Hub's names for it and its plan's collection limit
    // (`None`: the Hub does not know the user).
    let mut users: BTreeMap<Uuid, Option<(HashSet<String>, u64)>> = BTreeMap::new();
    let mut collections = Vec::new();
    let mut already_owned = 0;
    for c in &all {
        if !unowned(c) {
            already_owned += 1;
            continue;
        }
        let name = c.name().to_owned();
        let user = mapping.user_for(&name);
        let target = user.map(|u| stored_name(&u, &name));
        let alias_taken = user.is_some_and(|u| {
            aliases
                .of(&name)
                .iter()
                .any(|a| names.contains(&stored_name(&u, a)))
        });
        let conflict = match (&user, &target) {
            _ if crate::service::validate_short_name(&name).is_err() => Some("invalid_name"),
            (None, _) => Some("unmapped"),
            (_, Some(t)) if names.contains(t) || alias_taken => Some("target_exists"),
            _ => None,
        };
        if let Some(u) = user {
            users.entry(u).or_default();
        }
        collections.push(PlanItem {
            name,
            user,
            target,
            points: c.len() as u64,
            bytes: c.disk_bytes(),
            conflict,
        });
    }
    if let Some(hub) = hub {
        for (u, known) in users.iter_mut() {
            *known = match hub.user_collections(u).await {
                Ok(r) => Some((
                    r.collections
                        .into_iter()
                        .map(|c| c.collection_name)
                        .collect(),
                    r.collection_limit as u64,
                )),
                Err(vectorizer_hub::HubError::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            };
        }
        for item in &mut collections {
            let Some(u) = item.user else { continue };
            if item.conflict.is_some() {
                continue;
            }
            item.conflict = match users.get(&u) {
                Some(None) => Some("unknown_user"),
                Some(Some((at_hub, _))) if at_hub.contains(&item.name) => Some("hub_exists"),
                _ => None,
            };
        }
        // What each user would hold at the Hub afterwards, against its plan.
        for (u, known) in &users {
            let Some((at_hub, limit)) = known else {
                continue;
            };
            let adding = collections
                .iter()
                .filter(|c| c.user == Some(*u) && c.conflict.is_none())
                .count() as u64;
            if at_hub.len() as u64 + adding > *limit {
                for c in collections.iter_mut().filter(|c| c.user == Some(*u)) {
                    c.conflict.get_or_insert("collection_limit");
                }
            }
        }
    }
    collections.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Plan {
        collections,
        already_owned,
        users_checked: hub.is_some(),
    })
}

/// Where the current (or last) run stands.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `none`, `running` (stopped part way: `run` resumes it),
    /// `done`, `rolling_back` (stopped part way: `rollback` finishes it)
    /// or `rolled_back`.
    pub phase: &'static str,
    pub run: Option<String>,
    /// Where the collections were backed up before any change.
    pub backup: Option<String>,
    pub collections: Vec<ItemStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemStatus {
    pub name: String,
    pub target: String,
    pub user: Uuid,
    pub renamed: bool,
    pub registered: Option<Uuid>,
    pub reported: bool,
    pub unregistered: bool,
    pub restored: bool,
}

/// The journal's account of the current run.
pub fn status(data_dir: &Path) -> Result<Status> {
    let records = journal::load(data_dir)?;
    Ok(steps::State::of(&records).status())
}

/// Collections with no owner in `db`, for the warning a server with the
/// Hub on gives.
pub fn count_unowned(db: &Database) -> usize {
    db.list("")
        .unwrap_or_default()
        .iter()
        .filter(|l| {
            !l.metadata.contains_key(OWNER_KEY) && crate::caller::split_stored(&l.name).is_none()
        })
        .count()
}

/// Runs (or resumes) a migration by `plan`; see [`steps::run`].
pub async fn run(
    db: Arc<Database>,
    data_dir: &Path,
    plan: &Plan,
    hub: Arc<HubClient>,
    progress: &steps::Progress,
) -> Result<Report> {
    steps::run(db, data_dir, plan, hub, progress).await
}

/// Undoes the current run, finished or not; see [`steps::rollback`].
pub async fn rollback(
    db: Arc<Database>,
    data_dir: &Path,
    hub: Arc<HubClient>,
    progress: &steps::Progress,
) -> Result<Report> {
    steps::rollback(db, data_dir, hub, progress).await
}

pub use steps::Progress;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_shells_do() {
        assert!(glob(b"team-*", b"team-a"));
        assert!(glob(b"team-*", b"team-"));
        assert!(!glob(b"team-*", b"teams"));
        assert!(glob(b"?ocs", b"docs"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"docs", b"docs2"));
        let u = Uuid::from_u128(1);
        let v = Uuid::from_u128(2);
        let m = Mapping {
            default_user: Some(v),
            rules: vec![("docs".into(), u), ("d*".into(), v)],
        };
        assert_eq!(m.user_for("docs"), Some(u));
        assert_eq!(m.user_for("dx"), Some(v));
        assert_eq!(m.user_for("zzz"), Some(v));
    }
}
