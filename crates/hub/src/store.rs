//! The local Hub's state and its operations, persisted to one JSON file
//! (written to a temporary file, fsynced and renamed on every change).
//! Access keys are kept only as SHA-256 hashes; the key itself is returned
//! once, when it is made. A change to the file by another process (the
//! `hub-dev` CLI beside a running Hub) is picked up on the next call; two
//! processes changing it at the same moment may lose one of the changes,
//! which is acceptable for a development Hub.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::model::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("storage: {0}")]
    Io(String),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A plan's limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub max_collections: u32,
    pub max_vectors: u64,
    pub max_storage_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub plan: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Key {
    id: Uuid,
    user_id: Uuid,
    project_id: Option<Uuid>,
    service: String,
    name: String,
    permissions: Vec<Permission>,
    /// Hex SHA-256 of the key; the key itself is never stored.
    hash: String,
    created_at: String,
    expires_at: Option<String>,
    revoked: bool,
    last_used_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CollectionRec {
    id: Uuid,
    user_id: Uuid,
    name: String,
    project_id: Uuid,
    dimension: u32,
    created_at: String,
    vector_count: u64,
    storage_bytes: u64,
}

/// One usage report as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEntry {
    pub at: String,
    pub collection_id: Uuid,
    pub vector_count: u64,
    pub storage_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct McpServer {
    id: Uuid,
    service: String,
    node_id: String,
    url: String,
    tools: Vec<McpTool>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    plans: BTreeMap<String, Plan>,
    users: BTreeMap<Uuid, User>,
    keys: BTreeMap<Uuid, Key>,
    collections: BTreeMap<Uuid, CollectionRec>,
    usage: Vec<UsageEntry>,
    mcp_servers: BTreeMap<Uuid, McpServer>,
}

pub struct HubStore {
    path: Option<PathBuf>,
    state: Mutex<State>,
    /// Modification time of the file as last read or written: another
    /// process (the `hub-dev` CLI) changing it makes the next call reload.
    seen: Mutex<Option<SystemTime>>,
}

fn read_state(path: &Path) -> Result<State> {
    match std::fs::read(path) {
        Ok(raw) => serde_json::from_slice(&raw)
            .map_err(|e| StoreError::Io(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(StoreError::Io(format!("{}: {e}", path.display()))),
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh access key: a prefix and 244 random bits (two v4 UUIDs).
fn new_key() -> String {
    format!("hvk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

fn expired(expires_at: Option<&str>) -> bool {
    expires_at
        .and_then(crate::time::parse_rfc3339)
        .is_some_and(|t| t <= SystemTime::now())
}

impl State {
    fn plan_of(&self, user: &Uuid) -> Result<(&User, &Plan)> {
        let u = self
            .users
            .get(user)
            .ok_or_else(|| StoreError::NotFound(format!("no user {user}")))?;
        let p = self
            .plans
            .get(&u.plan)
            .ok_or_else(|| StoreError::NotFound(format!("no plan {}", u.plan)))?;
        Ok((u, p))
    }

    fn user_totals(&self, user: &Uuid) -> (u32, u64, u64) {
        self.collections
            .values()
            .filter(|c| c.user_id == *user)
            .fold((0, 0, 0), |(n, v, b), c| {
                (n + 1, v + c.vector_count, b + c.storage_bytes)
            })
    }

    fn quota(&self, user: &Uuid) -> Result<Quota> {
        let (_, plan) = self.plan_of(user)?;
        let (_, vectors, _) = self.user_totals(user);
        Ok(Quota {
            max_vectors: plan.max_vectors,
            current_vectors: vectors,
            can_insert: vectors < plan.max_vectors,
        })
    }
}

impl HubStore {
    /// A store kept only in memory.
    pub fn in_memory() -> HubStore {
        HubStore {
            path: None,
            state: Mutex::new(State::default()),
            seen: Mutex::new(None),
        }
    }

    /// Opens (or creates) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<HubStore> {
        let path = path.as_ref().to_owned();
        let state = read_state(&path)?;
        Ok(HubStore {
            seen: Mutex::new(mtime(&path)),
            path: Some(path),
            state: Mutex::new(state),
        })
    }

    /// The state, reloaded first if another process changed the file.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.path {
            let now = mtime(path);
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if now != *seen {
                match read_state(path) {
                    Ok(fresh) => *st = fresh,
                    Err(e) => tracing::warn!(error = %e, "could not reload the hub state"),
                }
                *seen = now;
            }
        }
        st
    }

    /// Runs a change and persists the state if it succeeded. Another
    /// process may change the same file (`hub-dev` beside a server with
    /// the local Hub inside): changes take an exclusive lock on
    /// `<file>.lock`, start from the file as it is, and write through a
    /// temporary file of their own, so that none is lost.
    fn change<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let io =
            |path: &Path, e: std::io::Error| StoreError::Io(format!("{}: {e}", path.display()));
        let _locked = match &self.path {
            Some(path) => {
                let lock_path = path.with_extension("json.lock");
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(|e| io(&lock_path, e))?;
                file.lock().map_err(|e| io(&lock_path, e))?;
                Some(file)
            }
            None => None,
        };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.path {
            // Under the lock, whatever the file's time says (two changes
            // may share one timestamp).
            *st = read_state(path)?;
        }
        let out = f(&mut st)?;
        if let Some(path) = &self.path {
            let raw = serde_json::to_vec_pretty(&*st).map_err(|e| StoreError::Io(e.to_string()))?;
            let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&raw)?;
                f.sync_all()?;
                std::fs::rename(&tmp, path)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            };
            write().map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = mtime(path);
        }
        Ok(out)
    }

    pub fn create_plan(&self, plan: Plan) -> Result<Plan> {
        if plan.name.is_empty() {
            return Err(StoreError::BadRequest("a plan needs a name".into()));
        }
        self.change(|st| {
            st.plans.insert(plan.name.clone(), plan.clone());
            Ok(plan)
        })
    }

    pub fn plans(&self) -> Vec<Plan> {
        self.lock().plans.values().cloned().collect()
    }

    pub fn create_user(&self, email: &str, plan: &str) -> Result<User> {
        self.change(|st| {
            if !st.plans.contains_key(plan) {
                return Err(StoreError::NotFound(format!("no plan {plan}")));
            }
            if st
                .users
                .values()
                .any(|u| u.email.eq_ignore_ascii_case(email))
            {
                return Err(StoreError::BadRequest(format!(
                    "a user with the e-mail address {email} exists already"
                )));
            }
            let u = User {
                id: Uuid::new_v4(),
                email: email.to_owned(),
                plan: plan.to_owned(),
                created_at: now(),
            };
            st.users.insert(u.id, u.clone());
            Ok(u)
        })
    }

    pub fn users(&self) -> Vec<User> {
        self.lock().users.values().cloned().collect()
    }

    /// Makes an access key for a user; the key is in the answer, once.
    pub fn generate_key(
        &self,
        req: &GenerateAccessKeyRequest,
    ) -> Result<GenerateAccessKeyResponse> {
        let user_id = req
            .user_id
            .ok_or_else(|| StoreError::BadRequest("user_id is required".into()))?;
        if req.permissions.is_empty() {
            return Err(StoreError::BadRequest(
                "a key needs at least one permission".into(),
            ));
        }
        if let Some(t) = &req.expires_at {
            match crate::time::parse_rfc3339(t) {
                None => {
                    return Err(StoreError::BadRequest(
                        "expires_at must be an RFC 3339 time, e.g. 2030-01-31T12:00:00Z".into(),
                    ));
                }
                Some(at) if at <= SystemTime::now() => {
                    return Err(StoreError::BadRequest(format!(
                        "expires_at {t} has passed already"
                    )));
                }
                Some(_) => {}
            }
        }
        self.change(|st| {
            if !st.users.contains_key(&user_id) {
                return Err(StoreError::NotFound(format!("no user {user_id}")));
            }
            let access_key = new_key();
            let k = Key {
                id: Uuid::new_v4(),
                user_id,
                project_id: req.project_id,
                service: req.service.clone(),
                name: req.name.clone(),
                permissions: req.permissions.clone(),
                hash: hash_key(&access_key),
                created_at: now(),
                expires_at: req.expires_at.clone(),
                revoked: false,
                last_used_at: None,
            };
            let resp = GenerateAccessKeyResponse {
                success: true,
                access_key,
                access_key_id: k.id,
                service: k.service.clone(),
                name: k.name.clone(),
                permissions: k.permissions.clone(),
                created_at: k.created_at.clone(),
                expires_at: k.expires_at.clone(),
            };
            st.keys.insert(k.id, k);
            Ok(resp)
        })
    }

    fn info(k: &Key) -> AccessKeyInfo {
        AccessKeyInfo {
            id: k.id,
            service: k.service.clone(),
            name: k.name.clone(),
            permissions: k.permissions.clone(),
            active: !k.revoked && !expired(k.expires_at.as_deref()),
            created_at: k.created_at.clone(),
            last_used_at: k.last_used_at.clone(),
            expires_at: k.expires_at.clone(),
        }
    }

    pub fn list_keys(&self, service: Option<&str>) -> ListAccessKeysResponse {
        let st = self.lock();
        let keys = st
            .keys
            .values()
            .filter(|k| service.is_none_or(|s| k.service == s))
            .map(Self::info)
            .collect();
        ListAccessKeysResponse { keys }
    }

    /// Every key with its user (of `user` alone, when given), newest
    /// first.
    pub fn keys_by_user(&self, user: Option<Uuid>) -> Vec<(Uuid, AccessKeyInfo)> {
        let st = self.lock();
        let mut keys: Vec<(Uuid, AccessKeyInfo)> = st
            .keys
            .values()
            .filter(|k| user.is_none_or(|u| k.user_id == u))
            .map(|k| (k.user_id, Self::info(k)))
            .collect();
        keys.sort_by(|a, b| b.1.created_at.cmp(&a.1.created_at));
        keys
    }

    pub fn get_key(&self, id: &Uuid) -> Result<AccessKeyInfo> {
        self.lock()
            .keys
            .get(id)
            .map(Self::info)
            .ok_or_else(|| StoreError::NotFound(format!("no access key {id}")))
    }

    pub fn revoke_key(&self, id: &Uuid) -> Result<RevokeAccessKeyResponse> {
        self.change(|st| {
            let k = st
                .keys
                .get_mut(id)
                .ok_or_else(|| StoreError::NotFound(format!("no access key {id}")))?;
            k.revoked = true;
            Ok(RevokeAccessKeyResponse {
                success: true,
                message: format!("access key {id} revoked"),
            })
        })
    }

    /// Checks a tenant's key. Unknown, revoked and expired keys answer
    /// `valid: false` with the reason.
    pub fn validate_key(&self, req: &ValidateKeyRequest) -> ValidateKeyResponse {
        let hash = hash_key(&req.access_key);
        let mut st = self.lock();
        let invalid = |reason: &str| ValidateKeyResponse {
            valid: false,
            user_id: None,
            access_key_id: None,
            project_id: None,
            permissions: None,
            plan: None,
            expires_at: None,
            reason: Some(reason.to_owned()),
        };
        let Some(id) = st
            .keys
            .values()
            .find(|k| k.hash == hash && k.service == req.service)
            .map(|k| k.id)
        else {
            return invalid("unknown");
        };
        let plan = {
            let k = &st.keys[&id];
            if k.revoked {
                return invalid("revoked");
            }
            if expired(k.expires_at.as_deref()) {
                return invalid("expired");
            }
            st.users
                .get(&k.user_id)
                .map(|u| u.plan.clone())
                .unwrap_or_default()
        };
        // Last use is kept in memory and saved with the next change.
        let k = st.keys.get_mut(&id).expect("found above");
        k.last_used_at = Some(now());
        ValidateKeyResponse {
            valid: true,
            user_id: Some(k.user_id),
            access_key_id: Some(k.id),
            project_id: Some(k.project_id),
            permissions: Some(k.permissions.clone()),
            plan: Some(plan),
            expires_at: Some(k.expires_at.clone()),
            reason: None,
        }
    }

    pub fn user_collections(&self, user: &Uuid) -> Result<UserCollectionsResponse> {
        let st = self.lock();
        let (u, plan) = st.plan_of(user)?;
        let collections: Vec<CollectionEntry> = st
            .collections
            .values()
            .filter(|c| c.user_id == *user)
            .map(|c| CollectionEntry {
                collection_id: c.id,
                collection_name: c.name.clone(),
                project_id: c.project_id,
                project_name: format!("project-{}", c.project_id.simple()),
                vector_count: c.vector_count,
                dimension: c.dimension,
                created_at: c.created_at.clone(),
            })
            .collect();
        Ok(UserCollectionsResponse {
            user_id: *user,
            total_collections: collections.len() as u32,
            collections,
            plan: u.plan.clone(),
            collection_limit: plan.max_collections,
        })
    }

    /// Registers a collection, refusing past the plan's collection limit. A
    /// name the user already has answers its id with `created: false`.
    pub fn create_collection(
        &self,
        user: &Uuid,
        req: &CreateCollectionRequest,
    ) -> Result<CreateCollectionResponse> {
        if req.collection_name.is_empty() || req.dimension == 0 {
            return Err(StoreError::BadRequest(
                "collection_name and a positive dimension are required".into(),
            ));
        }
        self.change(|st| {
            let (_, plan) = st.plan_of(user)?;
            let limit = plan.max_collections;
            if let Some(c) = st
                .collections
                .values()
                .find(|c| c.user_id == *user && c.name == req.collection_name)
            {
                return Ok(CreateCollectionResponse {
                    collection_id: c.id,
                    collection_name: c.name.clone(),
                    created: false,
                });
            }
            let (count, _, _) = st.user_totals(user);
            if count >= limit {
                return Err(StoreError::QuotaExceeded(format!(
                    "collection limit of {limit} reached"
                )));
            }
            let c = CollectionRec {
                id: Uuid::new_v4(),
                user_id: *user,
                name: req.collection_name.clone(),
                project_id: req.project_id,
                dimension: req.dimension,
                created_at: now(),
                vector_count: 0,
                storage_bytes: 0,
            };
            let resp = CreateCollectionResponse {
                collection_id: c.id,
                collection_name: c.name.clone(),
                created: true,
            };
            st.collections.insert(c.id, c);
            Ok(resp)
        })
    }

    pub fn validate_collection(
        &self,
        collection: &Uuid,
        user: &Uuid,
    ) -> Result<CollectionValidation> {
        let st = self.lock();
        let (u, _) = st.plan_of(user)?;
        let valid = st
            .collections
            .get(collection)
            .is_some_and(|c| c.user_id == *user);
        Ok(CollectionValidation {
            valid,
            user_id: *user,
            collection_id: *collection,
            quota: st.quota(user)?,
            plan: u.plan.clone(),
        })
    }

    /// Records absolute usage figures for a collection (a repeat is harmless).
    pub fn update_usage(
        &self,
        collection: &Uuid,
        req: &UpdateUsageRequest,
    ) -> Result<UpdateUsageResponse> {
        self.change(|st| {
            let c = st
                .collections
                .get_mut(collection)
                .ok_or_else(|| StoreError::NotFound(format!("no collection {collection}")))?;
            let updated =
                c.vector_count != req.vector_count || c.storage_bytes != req.storage_bytes;
            c.vector_count = req.vector_count;
            c.storage_bytes = req.storage_bytes;
            let user = c.user_id;
            st.usage.push(UsageEntry {
                at: now(),
                collection_id: *collection,
                vector_count: req.vector_count,
                storage_bytes: req.storage_bytes,
            });
            Ok(UpdateUsageResponse {
                success: true,
                updated,
                quota: st.quota(&user)?,
            })
        })
    }

    pub fn delete_collection(&self, collection: &Uuid) -> Result<()> {
        self.change(|st| {
            st.collections
                .remove(collection)
                .map(|_| ())
                .ok_or_else(|| StoreError::NotFound(format!("no collection {collection}")))
        })
    }

    /// Removes a user and its collections (a user closed at the Hub); its
    /// keys are refused from then on.
    pub fn delete_user(&self, user: &Uuid) -> Result<()> {
        self.change(|st| {
            st.users
                .remove(user)
                .ok_or_else(|| StoreError::NotFound(format!("no user {user}")))?;
            st.collections.retain(|_, c| c.user_id != *user);
            st.keys.retain(|_, k| k.user_id != *user);
            Ok(())
        })
    }

    /// The usage reports received, oldest first.
    pub fn usage_ledger(&self) -> Vec<UsageEntry> {
        self.lock().usage.clone()
    }

    /// Decides a quota check from the figures reported so far.
    pub fn quota_check(&self, req: &QuotaCheckRequest) -> Result<QuotaCheckResponse> {
        let user: Uuid = req
            .project_id
            .parse()
            .map_err(|_| StoreError::BadRequest("project_id must be a user id".into()))?;
        let st = self.lock();
        let (_, plan) = st.plan_of(&user)?;
        let (count, vectors, bytes) = st.user_totals(&user);
        let want = req.estimated_size.unwrap_or(0).max(0) as u64;
        let (current, limit, want) = match req.operation.as_str() {
            "create_collection" => (count as u64, plan.max_collections as u64, 1),
            "insert_vectors" => (vectors, plan.max_vectors, want),
            "storage" | "backup" => (bytes, plan.max_storage_bytes, want),
            other => return Err(StoreError::BadRequest(format!("unknown operation {other}"))),
        };
        Ok(QuotaCheckResponse {
            allowed: current.saturating_add(want) <= limit,
            remaining: Some(limit.saturating_sub(current) as i64),
            limit: Some(limit as i64),
        })
    }

    pub fn register_mcp(&self, req: &RegisterMcpServer) -> Result<RegisterMcpResponse> {
        self.change(|st| {
            // Re-registering a node replaces its entry.
            st.mcp_servers.retain(|_, s| s.node_id != req.node_id);
            let s = McpServer {
                id: Uuid::new_v4(),
                service: req.service.clone(),
                node_id: req.node_id.clone(),
                url: req.url.clone(),
                tools: req.tools.clone(),
            };
            let id = s.id;
            st.mcp_servers.insert(id, s);
            Ok(RegisterMcpResponse { server_id: id })
        })
    }

    pub fn deregister_mcp(&self, id: &Uuid) -> Result<()> {
        self.change(|st| {
            st.mcp_servers
                .remove(id)
                .map(|_| ())
                .ok_or_else(|| StoreError::NotFound(format!("no MCP server {id}")))
        })
    }

    /// Node ids of the registered MCP servers.
    pub fn mcp_nodes(&self) -> Vec<String> {
        self.lock()
            .mcp_servers
            .values()
            .map(|s| s.node_id.clone())
            .collect()
    }
}

/// An expiry time `secs` from now, in RFC 3339.
pub fn expires_in(secs: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(secs)).to_string()
}
