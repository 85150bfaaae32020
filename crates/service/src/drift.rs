//! Drift between the Hub's record of a user's collections and ours.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use uuid::Uuid;
use vectorizer_hub::HubClient;

use crate::error::{Result, ServiceError};
use crate::service::HUB_ID_KEY;

/// What differs, by collection name.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// Registered at the Hub, missing here.
    pub only_at_hub: Vec<String>,
    /// Here, unknown to the Hub.
    pub only_here: Vec<String>,
    /// In both, under different Hub collection ids.
    pub different_ids: Vec<String>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.only_at_hub.is_empty() && self.only_here.is_empty() && self.different_ids.is_empty()
    }
}

/// Compares the Hub's list of `user`'s collections with the collections in
/// `data_dir`. Reads only metadata files, so a running server is not
/// disturbed.
pub async fn drift(data_dir: &Path, hub: &HubClient, user: Uuid) -> Result<Drift> {
    let prefix = crate::caller::stored_name(&user, "");
    let here: BTreeMap<String, Option<String>> =
        vectorizer_engine::database::read_catalog(data_dir)?
            .into_iter()
            .filter_map(|(name, meta)| {
                Some((
                    name.strip_prefix(&prefix)?.to_owned(),
                    meta.get(HUB_ID_KEY).cloned(),
                ))
            })
            .collect();
    let at_hub: BTreeMap<String, String> = hub
        .user_collections(&user)
        .await
        .map_err(ServiceError::from)?
        .collections
        .into_iter()
        .map(|c| (c.collection_name, c.collection_id.to_string()))
        .collect();
    let mut d = Drift::default();
    for (name, id) in &at_hub {
        match here.get(name) {
            None => d.only_at_hub.push(name.clone()),
            Some(local) if local.as_deref() != Some(id.as_str()) => {
                d.different_ids.push(name.clone())
            }
            Some(_) => {}
        }
    }
    d.only_here = here
        .keys()
        .filter(|n| !at_hub.contains_key(*n))
        .cloned()
        .collect();
    Ok(d)
}
