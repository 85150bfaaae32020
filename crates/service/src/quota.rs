//! Plan quotas. Limits come from the Hub (cached for the quota TTL, and
//! kept for a grace period while the Hub cannot be reached); usage is the
//! engine's exact figures; writes reserve what they add before writing and
//! release it after, so concurrent writes cannot overshoot a limit together.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;
use vectorizer_hub::HubClient;

use crate::error::{Result, ServiceError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlanLimits {
    pub max_collections: u64,
    pub max_vectors: u64,
    pub max_storage_bytes: u64,
}

/// Usage or a request, in all three dimensions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amount {
    pub collections: u64,
    pub vectors: u64,
    pub bytes: u64,
}

impl Amount {
    pub fn plus(self, o: Amount) -> Amount {
        Amount {
            collections: self.collections + o.collections,
            vectors: self.vectors + o.vectors,
            bytes: self.bytes + o.bytes,
        }
    }

    fn minus(self, o: Amount) -> Amount {
        Amount {
            collections: self.collections.saturating_sub(o.collections),
            vectors: self.vectors.saturating_sub(o.vectors),
            bytes: self.bytes.saturating_sub(o.bytes),
        }
    }
}

/// Quota checks by (quota, result), for metrics.
pub type CheckCounts = BTreeMap<(&'static str, &'static str), u64>;

pub struct Quotas {
    hub: Arc<HubClient>,
    ttl: Duration,
    grace: Duration,
    limits: Mutex<HashMap<Uuid, (PlanLimits, Instant)>>,
    reserved: Mutex<HashMap<Uuid, Amount>>,
    checks: Mutex<CheckCounts>,
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
            *held = held.minus(self.amount);
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
            checks: Mutex::default(),
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
            // The contract gives one operation's limit per call; the three
            // go out together.
            let (collections, vectors, storage) = tokio::try_join!(
                self.hub.check_quota(user, "create_collection", Some(0)),
                self.hub.check_quota(user, "insert_vectors", Some(0)),
                self.hub.check_quota(user, "storage", Some(0)),
            )?;
            let limit = |l: Option<i64>| l.unwrap_or(0).max(0) as u64;
            Ok::<_, vectorizer_hub::HubError>(PlanLimits {
                max_collections: limit(collections.limit),
                max_vectors: limit(vectors.limit),
                max_storage_bytes: limit(storage.limit),
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

    /// Quota checks so far by (quota, result).
    pub fn checks(&self) -> CheckCounts {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reserves `want` for `user` if current usage (read under the same
    /// lock, so no two writes see the same headroom) plus what is already
    /// reserved plus `want` stays within `limits` in every dimension that
    /// `want` adds to. Storage is checked whenever anything is written.
    pub fn reserve(
        self: &Arc<Self>,
        user: Uuid,
        limits: PlanLimits,
        want: Amount,
        current: impl FnOnce() -> Amount,
    ) -> Result<Reservation> {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let held = r.entry(user).or_default();
        let used = current().plus(*held);
        let dims = [
            (
                "collections",
                want.collections > 0,
                used.collections,
                want.collections,
                limits.max_collections,
            ),
            (
                "vectors",
                want.vectors > 0,
                used.vectors,
                want.vectors,
                limits.max_vectors,
            ),
            (
                "storage",
                want.bytes > 0 || want.vectors > 0,
                used.bytes,
                want.bytes,
                limits.max_storage_bytes,
            ),
        ];
        for (quota, applies, current, requested, limit) in dims {
            if !applies {
                continue;
            }
            let ok = current.saturating_add(requested) <= limit;
            *checks
                .entry((quota, if ok { "allowed" } else { "exceeded" }))
                .or_default() += 1;
            if !ok {
                return Err(ServiceError::QuotaExceeded {
                    quota,
                    limit,
                    current,
                    requested,
                });
            }
        }
        *held = held.plus(want);
        Ok(Reservation {
            quotas: self.clone(),
            user,
            amount: want,
        })
    }
}
