//! Plan quotas. Limits come from the Hub (cached for the quota TTL, and
//! kept for a grace period while the Hub cannot be reached); usage is the
//! engine's exact figures; writes reserve what they add before writing and
//! release it after, so concurrent writes cannot overshoot a limit together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;
use vectorizer_hub::HubClient;

use crate::error::{Result, ServiceError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    pub max_vectors: u64,
    pub max_storage_bytes: u64,
}

/// Usage or a request, in both dimensions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amount {
    pub vectors: u64,
    pub bytes: u64,
}

pub struct Quotas {
    hub: Arc<HubClient>,
    ttl: Duration,
    grace: Duration,
    limits: Mutex<HashMap<Uuid, (PlanLimits, Instant)>>,
    reserved: Mutex<HashMap<Uuid, Amount>>,
}

/// Held while a write is in flight; releases its amount when dropped.
pub struct Reservation {
    quotas: Arc<Quotas>,
    user: Uuid,
    amount: Amount,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut r = self
            .quotas
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(held) = r.get_mut(&self.user) {
            held.vectors -= self.amount.vectors;
            held.bytes -= self.amount.bytes;
        }
    }
}

impl Quotas {
    pub fn new(hub: Arc<HubClient>, ttl: Duration, grace: Duration) -> Quotas {
        Quotas {
            hub,
            ttl,
            grace,
            limits: Mutex::default(),
            reserved: Mutex::default(),
        }
    }

    fn cached(&self, user: &Uuid, within: Duration) -> Option<PlanLimits> {
        let l = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        l.get(user)
            .filter(|(_, at)| at.elapsed() < within)
            .map(|(p, _)| *p)
    }

    /// The user's plan limits: cached, or asked of the Hub. With the Hub
    /// unreachable, the last known limits serve for the grace period;
    /// after it, writes that need a decision are refused (503).
    pub async fn limits(&self, user: &Uuid) -> Result<PlanLimits> {
        if let Some(l) = self.cached(user, self.ttl) {
            return Ok(l);
        }
        let asked = async {
            let vectors = self
                .hub
                .check_quota(user, "insert_vectors", Some(0))
                .await?;
            let storage = self.hub.check_quota(user, "storage", Some(0)).await?;
            Ok::<_, vectorizer_hub::HubError>(PlanLimits {
                max_vectors: vectors.limit.unwrap_or(0).max(0) as u64,
                max_storage_bytes: storage.limit.unwrap_or(0).max(0) as u64,
            })
        };
        match asked.await {
            Ok(l) => {
                self.limits
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(*user, (l, Instant::now()));
                Ok(l)
            }
            Err(e) if e.is_transient() => {
                self.cached(user, self.ttl + self.grace).ok_or_else(|| {
                    ServiceError::Unavailable(format!(
                        "plan limits unknown and the hub unreachable: {e}"
                    ))
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reserves `want` for `user` if current usage (read under the same
    /// lock, so no two writes see the same headroom) plus what is already
    /// reserved plus `want` stays within `limits`.
    pub fn reserve(
        self: &Arc<Self>,
        user: Uuid,
        limits: PlanLimits,
        want: Amount,
        current: impl FnOnce() -> Amount,
    ) -> Result<Reservation> {
        let mut r = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let held = r.entry(user).or_default();
        let now = current();
        let used = Amount {
            vectors: now.vectors + held.vectors,
            bytes: now.bytes + held.bytes,
        };
        if want.vectors > 0 && used.vectors + want.vectors > limits.max_vectors {
            return Err(ServiceError::QuotaExceeded {
                quota: "vectors",
                limit: limits.max_vectors,
                current: used.vectors,
                requested: want.vectors,
            });
        }
        if used.bytes + want.bytes > limits.max_storage_bytes {
            return Err(ServiceError::QuotaExceeded {
                quota: "storage",
                limit: limits.max_storage_bytes,
                current: used.bytes,
                requested: want.bytes,
            });
        }
        held.vectors += want.vectors;
        held.bytes += want.bytes;
        Ok(Reservation {
            quotas: self.clone(),
            user,
            amount: want,
        })
    }
}
