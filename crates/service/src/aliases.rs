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

/// The alias table, by stored names.
pub(crate) struct Aliases {
    path: PathBuf,
    map: Mutex<BTreeMap<String, String>>,
}

/// Most actions in one request.
const MAX_ACTIONS: usize = 100;

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

    /// Drops the aliases of a deleted collection.
    pub(crate) fn forget(&self, collection: &str) -> std::io::Result<()> {
        let mut m = self.lock();
        let before = m.len();
        m.retain(|_, c| c != collection);
        if m.len() != before {
            self.save(&m)?;
        }
        Ok(())
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
        let aliases = self
            .aliases
            .lock()
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
        if req.actions.is_empty() || req.actions.len() > MAX_ACTIONS {
            return Err(ServiceError::unprocessable(
                "invalid_request",
                format!("a request holds 1 to {MAX_ACTIONS} alias actions"),
            ));
        }
        let svc = self.clone();
        let who = caller.clone();
        ticket
            .run(move |_| {
                let mut m = svc.aliases.lock();
                let mut next = m.clone();
                for a in &req.actions {
                    match a {
                        AliasAction::CreateAlias { alias, collection } => {
                            validate_short_name(alias)?;
                            let full = svc.resolve(&who, alias)?;
                            if svc.db.collection(&full).is_ok() {
                                return Err(ServiceError::CollectionExists(alias.clone()));
                            }
                            let target = svc.resolve(&who, collection)?;
                            if svc.db.collection(&target).is_err() {
                                return Err(ServiceError::CollectionNotFound(collection.clone()));
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
                svc.aliases
                    .save(&next)
                    .map_err(|e| ServiceError::Internal(format!("writing aliases: {e}")))?;
                *m = next;
                Ok(())
            })
            .await?;
        self.list_aliases(call).await
    }
}
