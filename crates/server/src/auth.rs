//! Access-key authentication against the Hub: keys are validated by the
//! Hub and cached under their SHA-256 (never in clear); one Hub call per new
//! key however many requests carry it at once; cached keys keep working for
//! a grace period while the Hub is unreachable, and nothing else gets in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use vectorizer_hub::{HubClient, HubError};
use vectorizer_service::{Permission, Tenant};

#[derive(Debug, Clone, Copy)]
pub struct AuthOptions {
    /// How long a validated key is trusted without asking the Hub.
    pub ttl: Duration,
    /// How long a refused key is remembered (fewer Hub calls for junk).
    pub negative_ttl: Duration,
    /// How long past its TTL a cached key keeps working while the Hub
    /// cannot be reached.
    pub grace: Duration,
    /// Most keys cached; the oldest entries go first.
    pub capacity: usize,
    /// Failed keys one client address may present per window before its
    /// requests that need the Hub are refused (429) without asking it.
    pub max_failures: u32,
    pub failure_window: Duration,
}

/// Why a request is not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Missing, unknown, revoked or expired key: one answer for all.
    Unauthorized,
    /// The Hub cannot be reached and the key is not cached.
    HubUnavailable,
    /// Too many failed keys from this address: retry after this long.
    Throttled(Duration),
}

type KeyHash = [u8; 32];

#[derive(Clone)]
enum Entry {
    /// `expires` is the key's own expiry, which ends the entry early.
    Valid {
        tenant: Tenant,
        at: Instant,
        expires: Option<SystemTime>,
    },
    Refused {
        at: Instant,
    },
}

pub struct Auth {
    hub: Arc<HubClient>,
    opts: AuthOptions,
    cache: Mutex<HashMap<KeyHash, Entry>>,
    /// One lock per key being validated, so that concurrent requests with
    /// the same new key wait for one Hub call instead of making their own.
    inflight: Mutex<HashMap<KeyHash, Arc<tokio::sync::Mutex<()>>>>,
    /// Failed keys per client address: (count, window start).
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Checks calls signed by the Hub.
    verifier: crate::internal::Verifier,
}

fn permission(p: vectorizer_hub::model::Permission) -> Permission {
    use vectorizer_hub::model::Permission as P;
    match p {
        P::Read => Permission::Read,
        P::Write => Permission::Write,
        P::Delete => Permission::Delete,
        P::Admin => Permission::Admin,
    }
}

fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

impl Auth {
    pub fn new(
        hub: Arc<HubClient>,
        opts: AuthOptions,
        verifier: crate::internal::Verifier,
    ) -> Auth {
        Auth {
            hub,
            opts,
            cache: Mutex::default(),
            inflight: Mutex::default(),
            failures: Mutex::default(),
            verifier,
        }
    }

    pub fn verifier(&self) -> &crate::internal::Verifier {
        &self.verifier
    }

    pub fn hub(&self) -> &Arc<HubClient> {
        &self.hub
    }

    fn cached(&self, h: &KeyHash) -> Option<Entry> {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(h)
            .cloned()
    }

    fn remember(&self, h: KeyHash, e: Entry) {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= self.opts.capacity && !c.contains_key(&h) {
            // Bounded: drop the oldest entry.
            let oldest = c
                .iter()
                .min_by_key(|(_, e)| match e {
                    Entry::Valid { at, .. } | Entry::Refused { at } => *at,
                })
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                c.remove(&k);
            }
        }
        c.insert(h, e);
    }

    /// A fresh cache answer, if there is one.
    fn fresh(&self, h: &KeyHash) -> Option<Result<Tenant, AuthError>> {
        match self.cached(h)? {
            Entry::Valid {
                expires: Some(t), ..
            } if t <= SystemTime::now() => Some(Err(AuthError::Unauthorized)),
            Entry::Valid { tenant, at, .. } if at.elapsed() < self.opts.ttl => Some(Ok(tenant)),
            Entry::Refused { at } if at.elapsed() < self.opts.negative_ttl => {
                Some(Err(AuthError::Unauthorized))
            }
            _ => None,
        }
    }

    /// The tenant a key presented from `ip` stands for; a refused key counts
    /// against the address.
    pub async fn authenticate(&self, key: &str, ip: IpAddr) -> Result<Tenant, AuthError> {
        let answer = self.authenticate_inner(key, ip).await;
        if answer == Err(AuthError::Unauthorized) {
            self.failed(ip);
        }
        answer
    }

    /// Counts a failed key from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.opts.failure_window;
        if f.len() >= 10_000 {
            // Bounded: forget addresses whose window is over.
            f.retain(|_, (_, start)| start.elapsed() < window);
        }
        let e = f.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= window {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    /// How long `ip` must wait, if it failed too often.
    fn throttled(&self, ip: IpAddr) -> Option<Duration> {
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (count, start) = *f.get(&ip)?;
        let left = self.opts.failure_window.checked_sub(start.elapsed())?;
        (count >= self.opts.max_failures).then_some(left)
    }

    async fn authenticate_inner(&self, key: &str, ip: IpAddr) -> Result<Tenant, AuthError> {
        let h = hash(key);
        // A key known to be valid works even from a throttled address.
        if let Some(answer) = self.fresh(&h) {
            return answer;
        }
        if let Some(wait) = self.throttled(ip) {
            return Err(AuthError::Throttled(wait));
        }
        let gate = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(h)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let _turn = gate.lock().await;
        // Whoever held the gate before may have answered already.
        if let Some(answer) = self.fresh(&h) {
            return answer;
        }
        let answer = self.ask_hub(key, h).await;
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&h);
        answer
    }

    async fn ask_hub(&self, key: &str, h: KeyHash) -> Result<Tenant, AuthError> {
        match self.hub.validate_key(key).await {
            Ok(v) if v.valid => {
                let tenant = Tenant {
                    user_id: v.user_id.ok_or(AuthError::HubUnavailable)?,
                    access_key_id: v.access_key_id.ok_or(AuthError::HubUnavailable)?,
                    project_id: v.project_id.flatten(),
                    permissions: v
                        .permissions
                        .unwrap_or_default()
                        .into_iter()
                        .map(permission)
                        .collect(),
                    plan: v.plan.unwrap_or_default(),
                };
                let expires = v
                    .expires_at
                    .clone()
                    .flatten()
                    .and_then(|t| humantime::parse_rfc3339_weak(&t).ok());
                self.remember(
                    h,
                    Entry::Valid {
                        tenant: tenant.clone(),
                        at: Instant::now(),
                        expires,
                    },
                );
                Ok(tenant)
            }
            Ok(_) => {
                self.remember(h, Entry::Refused { at: Instant::now() });
                Err(AuthError::Unauthorized)
            }
            Err(e) => {
                // Grace: a key validated before the outage keeps working for
                // a while; an unknown key never gets in.
                if let Some(Entry::Valid {
                    tenant,
                    at,
                    expires,
                }) = self.cached(&h)
                    && at.elapsed() < self.opts.ttl + self.opts.grace
                    && expires.is_none_or(|t| t > SystemTime::now())
                {
                    tracing::warn!(error = %e, "hub unreachable: serving a cached key in its grace period");
                    return Ok(tenant);
                }
                match e {
                    HubError::Refused(_) => {
                        tracing::error!(error = %e, "the hub refused our service key")
                    }
                    _ => tracing::warn!(error = %e, "hub unreachable: cannot validate a key"),
                }
                Err(AuthError::HubUnavailable)
            }
        }
    }
}

/// The key a request carries: `Authorization: Bearer`, `X-API-Key` or
/// `api-key`.
pub fn key_of(headers: &axum::http::HeaderMap) -> Option<String> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 512)
        .map(str::to_owned)
}
