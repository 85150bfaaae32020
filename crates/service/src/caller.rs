//! Who a request acts for, and what it may touch.

use uuid::Uuid;

use crate::error::ServiceError;

/// What an access key allows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// List, get, search.
    Read,
    /// Create collections, upsert.
    Write,
    /// Delete points and collections.
    Delete,
    /// All of them.
    Admin,
}

impl Permission {
    pub fn parse(s: &str) -> Option<Permission> {
        match s {
            "read" => Some(Permission::Read),
            "write" => Some(Permission::Write),
            "delete" => Some(Permission::Delete),
            "admin" => Some(Permission::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Delete => "delete",
            Permission::Admin => "admin",
        }
    }
}

/// A tenant as its access key describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tenant {
    pub user_id: Uuid,
    pub access_key_id: Uuid,
    pub project_id: Option<Uuid>,
    pub permissions: Vec<Permission>,
    pub plan: String,
}

impl Tenant {
    pub fn allows(&self, p: Permission) -> bool {
        self.permissions
            .iter()
            .any(|q| *q == p || *q == Permission::Admin)
    }

    /// The engine's name for this tenant's collection `short`.
    pub fn full_name(&self, short: &str) -> String {
        stored_name(&self.user_id, short)
    }

    /// What every engine name of this tenant's collections starts with.
    pub fn prefix(&self) -> String {
        stored_name(&self.user_id, "")
    }
}

/// The engine's name of `user`'s collection (or alias) `short`:
/// `user_{user}:{short}`. The one place the per-user namespace is spelt.
pub fn stored_name(user: &Uuid, short: &str) -> String {
    format!("user_{user}:{short}")
}

/// The engine namespace of a user's collections (their names up to `:`).
pub fn user_namespace(user: &Uuid) -> String {
    format!("user_{user}")
}

/// The user whose namespace `ns` is, if it is a user's.
pub fn owner_of_namespace(ns: &str) -> Option<Uuid> {
    Uuid::parse_str(ns.strip_prefix("user_")?).ok()
}

/// The user and short name an engine name holds, if it is in a user's
/// namespace.
pub fn split_stored(name: &str) -> Option<(Uuid, &str)> {
    let (id, short) = name.strip_prefix("user_")?.split_once(':')?;
    Some((Uuid::parse_str(id).ok()?, short))
}

/// The name a caller knows a collection by: its short name in a user's
/// namespace, else the name itself.
pub fn short_name(name: &str) -> &str {
    split_stored(name).map_or(name, |(_, short)| short)
}

/// The party a request acts for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Caller {
    /// A local, single-tenant deployment (the Hub switched off): full rights
    /// over every collection, addressed by plain names.
    Local,
    /// The same deployment, through its read-only key
    /// (`VECTORIZER_READ_API_KEY`): reads only.
    LocalReader,
    /// A tenant authenticated by an access key: its own collections only,
    /// within its key's permissions.
    Tenant(Tenant),
}

impl Caller {
    /// Refuses the call unless the caller holds `p`.
    pub fn require(&self, p: Permission) -> Result<(), ServiceError> {
        match self {
            Caller::Local => Ok(()),
            Caller::LocalReader if p == Permission::Read => Ok(()),
            Caller::LocalReader => Err(ServiceError::Forbidden(format!(
                "the read-only API key lacks the `{}` permission",
                p.as_str()
            ))),
            Caller::Tenant(t) if t.allows(p) => Ok(()),
            Caller::Tenant(_) => Err(ServiceError::Forbidden(format!(
                "this access key lacks the `{}` permission",
                p.as_str()
            ))),
        }
    }
}

#[cfg(test)]
mod names {
    use super::*;

    #[test]
    fn only_a_user_id_makes_a_namespace() {
        let u = Uuid::from_u128(7);
        let name = stored_name(&u, "docs");
        assert_eq!(split_stored(&name), Some((u, "docs")));
        assert_eq!(short_name(&name), "docs");
        // A single-tenant name that merely looks like one is its own.
        assert_eq!(split_stored("user_events"), None);
        assert_eq!(split_stored("user_x:docs"), None);
        assert_eq!(short_name("user_events"), "user_events");
    }
}
