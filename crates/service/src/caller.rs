//! Who a request acts for, and what it may touch.

use uuid::Uuid;

use crate::error::ServiceError;

/// What an access key allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
        format!("{}{short}", self.prefix())
    }

    /// What every engine name of this tenant's collections starts with.
    pub fn prefix(&self) -> String {
        format!("user_{}:", self.user_id)
    }
}

/// The party a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
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
