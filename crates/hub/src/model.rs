//! Wire types of the Hub's HTTP contract. Field names follow the
//! `hivehub-internal-sdk` 1.0 models, which are binding.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectionEntry {
    pub collection_id: Uuid,
    pub collection_name: String,
    pub project_id: Uuid,
    pub project_name: String,
    pub vector_count: u64,
    pub dimension: u32,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserCollectionsResponse {
    pub user_id: Uuid,
    pub collections: Vec<CollectionEntry>,
    pub total_collections: u32,
    pub plan: String,
    pub collection_limit: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateCollectionRequest {
    pub collection_name: String,
    pub project_id: Uuid,
    pub dimension: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateCollectionResponse {
    pub collection_id: Uuid,
    pub collection_name: String,
    pub created: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quota {
    pub max_vectors: u64,
    pub current_vectors: u64,
    pub can_insert: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectionValidation {
    pub valid: bool,
    pub user_id: Uuid,
    pub collection_id: Uuid,
    pub quota: Quota,
    pub plan: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateUsageRequest {
    pub vector_count: u64,
    pub storage_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateUsageResponse {
    pub success: bool,
    pub updated: bool,
    pub quota: Quota,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuotaCheckRequest {
    /// The user the check is for (the SDK names it `project_id`).
    pub project_id: String,
    pub operation: String,
    #[serde(default)]
    pub estimated_size: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuotaCheckResponse {
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
    Delete,
    Admin,
}

impl Permission {
    /// As it is spelt on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Delete => "delete",
            Permission::Admin => "admin",
        }
    }
}

/// As the SDK sends it, plus `user_id` (and `project_id`), which the SDK's
/// request lacks: a key must belong to a user, so this local Hub requires it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateAccessKeyRequest {
    pub service: String,
    pub name: String,
    pub permissions: Vec<Permission>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub user_id: Option<Uuid>,
    #[serde(default)]
    pub project_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateAccessKeyResponse {
    pub success: bool,
    pub access_key: String,
    pub access_key_id: Uuid,
    pub service: String,
    pub name: String,
    pub permissions: Vec<Permission>,
    pub created_at: String,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessKeyInfo {
    pub id: Uuid,
    pub service: String,
    pub name: String,
    pub permissions: Vec<Permission>,
    pub active: bool,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListAccessKeysResponse {
    pub keys: Vec<AccessKeyInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeAccessKeyResponse {
    pub success: bool,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidateKeyRequest {
    pub access_key: String,
    pub service: String,
}

/// The validation answer: the valid form, or `{valid: false, reason}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidateKeyResponse {
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Option<Uuid>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<Permission>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct McpTool {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterMcpServer {
    pub service: String,
    pub node_id: String,
    pub url: String,
    pub tools: Vec<McpTool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterMcpResponse {
    pub server_id: Uuid,
}
