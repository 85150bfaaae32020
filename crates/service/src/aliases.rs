//! Collection aliases: a second name for a collection, in the caller's own
//! namespace, so that a rebuilt collection can be published by pointing an
//! alias at it in one step. The aliases live in `aliases.json` in the data
//! directory (alias → collection, both stored names), replaced atomically;
//! a change of several aliases is one replacement, so it lands whole.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::caller::{Caller, Permission};
use crate::error::{Result, ServiceError};
use crate::service::{Call, Service, validate_short_name};

const FILE: &str = "aliases.json";

/// One change in an alias request.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AliasAction {
    /// Points `alias` at `collection` (creating it, or moving it).
    CreateAlias { alias: String, collection: String },
    /// Removes `alias`.
    DeleteAlias { alias: String },
}

/// Changes applied together: all of them or none.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasActions {
    pub actions: Vec<AliasAction>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Alias {
    pub alias: String,
    pub collection: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AliasList {
    pub aliases: Vec<Alias>,
}

/// The alias table, by stored names. Lookups take `map` only for a read;
/// changes are serialized by `writing`, which is held across the file work,
/// and swap the new table into `map` once it is on disk.
pub(crate) struct Aliases {
    path: PathBuf,
    map: Mutex<BTreeMap<String, String>>,
    writing: Mutex<()>,
}

/// Most actions in one request.
const MAX_ACTIONS: usize = 100;
/// Most aliases one tenant (or the local caller) may have.
pub const MAX_ALIASES: usize = 100;

impl Aliases {
    pub(crate) fn open(data_dir: &std::path::Path) -> std::io::Result<Aliases> {
        let path = data_dir.join(FILE);
        let map = match std::fs::read(&path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Aliases {
            path,
            map: Mutex::new(map),
            writing: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The collection `alias` (a stored name) points at.
    pub(crate) fn target(&self, alias: &str) -> Option<String> {
        self.lock().get(alias).cloned()
    }

    pub(crate) fn is_alias(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// The aliases whose stored names start with `prefix` (a tenant's).
    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.lock()
            .range(prefix.to_owned()..)
            .take_while(|(a, _)| a.starts_with(prefix))
            .map(|(a, c)| (a.clone(), c.clone()))
            .collect()
    }

    /// Every alias and its collection.
    pub(crate) fn all(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(a, c)| (a.clone(), c.clone()))
            .collect()
    }

    /// The aliases (stored names) pointing at `collection`.
    pub(crate) fn of(&self, collection: &str) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, c)| *c == collection)
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Removes the aliases `remove` and sets `set` (alias → collection), in
    /// one replacement of the file.
    pub(crate) fn move_all(
        &self,
        remove: &[String],
        set: &[(String, String)],
    ) -> std::io::Result<()> {
        self.change(|next| {
            for a in remove {
                next.remove(a);
            }
            for (a, c) in set {
                next.insert(a.clone(), c.clone());
            }
            Ok::<_, std::io::Error>(())
        })
        .and_then(|r| r)
    }

    /// Drops aliases whose collection is gone (a crash between a drop and
    /// its aliases' removal).
    pub(crate) fn prune(&self, exists: impl Fn(&str) -> bool) -> std::io::Result<()> {
        self.change(|next| {
            next.retain(|_, c| exists(c));
            Ok::<_, std::io::Error>(())
        })
        .and_then(|r| r)
    }

    /// Drops the aliases of a deleted collection.
    pub(crate) fn forget(&self, collection: &str) -> std::io::Result<()> {
        self.change(|next| {
            next.retain(|_, c| c != collection);
            Ok::<_, std::io::Error>(())
        })
        .and_then(|r| r)
    }

    /// Applies `f` to a copy of the table; if it succeeds, writes the copy
    /// and then makes it the table. One change at a time; lookups never
    /// wait for the file.
    fn change<T, E>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, String>) -> Result<T, E>,
    ) -> std::io::Result<Result<T, E>> {
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.lock().clone();
        let before = next.clone();
        let out = match f(&mut next) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        if next != before {
            self.save(&next)?;
            *self.lock() = next;
        }
        Ok(Ok(out))
    }

    fn save(&self, m: &BTreeMap<String, String>) -> std::io::Result<()> {
        let raw = serde_json::to_vec_pretty(m).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &raw)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(d) = self.path.parent() {
            std::fs::File::open(d)?.sync_all()?;
        }
        Ok(())
    }
}

/// What the stored names of the caller's collections and aliases start with.
fn prefix(caller: &Caller) -> String {
    match caller {
        Caller::Tenant(t) => t.prefix(),
        _ => String::new(),
    }
}

fn short(caller: &Caller, full: &str) -> Option<String> {
    match caller {
        Caller::Tenant(t) => full.strip_prefix(&t.prefix()).map(str::to_owned),
        _ => (!full.contains(':')).then(|| full.to_owned()),
    }
}

impl Service {
    /// The caller's aliases.
    pub async fn list_aliases(self: &Arc<Self>, call: &Call) -> Result<AliasList> {
        let (caller, _ticket) = call.enter(Permission::Read)?;
        crate::service::unclustered(self, "aliases")?;
        let aliases = self
            .aliases
            .with_prefix(&prefix(caller))
            .iter()
            .filter_map(|(a, c)| {
                Some(Alias {
                    alias: short(caller, a)?,
                    collection: short(caller, c)?,
                })
            })
            .collect();
        Ok(AliasList { aliases })
    }

    /// Applies alias changes together, all or none: every alias is a short
    /// name that no collection has, every target one of the caller's
    /// collections, and every deleted alias exists (or is created earlier
    /// in the same request).
    pub async fn update_aliases(
        self: &Arc<Self>,
        call: &Call,
        req: AliasActions,
    ) -> Result<AliasList> {
        let (caller, ticket) = call.enter(Permission::Write)?;
        crate::service::unclustered(self, "aliases")?;
        if req.actions.is_empty() || req.actions.len() > MAX_ACTIONS {
            return Err(ServiceError::unprocessable(
                "invalid_request",
                format!("a request holds 1 to {MAX_ACTIONS} alias actions"),
            ));
        }
        // An alias and a collection of one name are never made at once:
        // the names are held like a create holds its own (in order, so two
        // requests cannot wait on each other).
        let mut names: Vec<String> = req
            .actions
            .iter()
            .filter_map(|a| match a {
                AliasAction::CreateAlias { alias, .. } => self.resolve(caller, alias).ok(),
                AliasAction::DeleteAlias { .. } => None,
            })
            .collect();
        names.sort();
        names.dedup();
        let mut _held = Vec::with_capacity(names.len());
        for n in &names {
            _held.push(self.names.lock(n).await);
        }
        let svc = self.clone();
        let who = caller.clone();
        ticket
            .run(move |_| {
                let applied = svc.aliases.change(|next| {
                    for a in &req.actions {
                        match a {
                            AliasAction::CreateAlias { alias, collection } => {
                                validate_short_name(alias)?;
                                let full = svc.resolve(&who, alias)?;
                                if svc.db.exists(&full) {
                                    return Err(ServiceError::conflict(
                                        "collection_exists",
                                        format!("`{alias}` is a collection: an alias cannot take its name"),
                                    ));
                                }
                                let target = svc.resolve(&who, collection)?;
                                if !svc.db.exists(&target) {
                                    return Err(ServiceError::CollectionNotFound(
                                        collection.clone(),
                                    ));
                                }
                                next.insert(full, target);
                            }
                            AliasAction::DeleteAlias { alias } => {
                                let full = svc.resolve(&who, alias)?;
                                if next.remove(&full).is_none() {
                                    return Err(ServiceError::AliasNotFound(alias.clone()));
                                }
                            }
                        }
                    }
                    let mine = prefix(&who);
                    let count = next
                        .range(mine.clone()..)
                        .take_while(|(a, _)| a.starts_with(&mine))
                        .count();
                    if count > MAX_ALIASES {
                        return Err(ServiceError::unprocessable(
                            "invalid_request",
                            format!("at most {MAX_ALIASES} aliases"),
                        ));
                    }
                    Ok(())
                });
                applied.map_err(|e| ServiceError::Internal(format!("writing aliases: {e}")))?
            })
            .await?;
        self.list_aliases(call).await
    }
}
