//! Access-key authentication against the Hub: keys are validated by the
//! Hub and cached under their SHA-256 (never in clear); one Hub call per new
//! key however many requests carry it at once; cached keys keep working for
//! a grace period while the Hub is unreachable, and nothing else gets in.
//!
//! Throttling cannot be turned against other clients: an address's
//! attempt is counted before the Hub is asked (so a burst of bad keys
//! reaches the Hub at most `max_failures` times), refused keys are cached
//! apart from valid ones (junk never evicts a valid key), and a key the Hub
//! validated before is never throttled for its address's failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use vectorizer_hub::HubClient;
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

/// A key the Hub validated; `expires` is the key's own expiry, which ends
/// the entry early.
#[derive(Clone)]
struct Valid {
    tenant: Tenant,
    at: Instant,
    expires: Option<SystemTime>,
}

pub struct Auth {
    hub: Arc<HubClient>,
    opts: AuthOptions,
    valid: Mutex<HashMap<KeyHash, Valid>>,
    /// Keys the Hub refused, by when; bounded apart from `valid`.
    refused: Mutex<HashMap<KeyHash, Instant>>,
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

/// Client addresses whose failures are counted, at most.
const MAX_CLIENTS: usize = 10_000;

/// The unit failures are counted by: an IPv4 address, or an IPv6 /64 (one
/// host commonly holds a whole /64, and could otherwise take a fresh
/// address for every guess).
fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
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
            valid: Mutex::default(),
            refused: Mutex::default(),
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

    fn cached(&self, h: &KeyHash) -> Option<Valid> {
        self.valid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(h)
            .cloned()
    }

    /// Inserts into a bounded map, dropping the oldest entry when full.
    fn bounded<V>(
        map: &mut HashMap<KeyHash, V>,
        cap: usize,
        h: KeyHash,
        v: V,
        at: impl Fn(&V) -> Instant,
    ) {
        if map.len() >= cap && !map.contains_key(&h) {
            let oldest = map.iter().min_by_key(|(_, v)| at(v)).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(h, v);
    }

    fn remember_valid(&self, h: KeyHash, v: Valid) {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&h);
        let mut c = self.valid.lock().unwrap_or_else(|e| e.into_inner());
        Self::bounded(&mut c, self.opts.capacity, h, v, |v| v.at);
    }

    fn remember_refused(&self, h: KeyHash) {
        self.valid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&h);
        let mut c = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        Self::bounded(&mut c, self.opts.capacity, h, Instant::now(), |at| *at);
    }

    /// A fresh cache answer, if there is one.
    fn fresh(&self, h: &KeyHash) -> Option<Result<Tenant, AuthError>> {
        if let Some(v) = self.cached(h) {
            if v.expires.is_some_and(|t| t <= SystemTime::now()) {
                return Some(Err(AuthError::Unauthorized));
            }
            if v.at.elapsed() < self.opts.ttl {
                return Some(Ok(v.tenant));
            }
            return None;
        }
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(h)
            .copied();
        refused
            .filter(|at| at.elapsed() < self.opts.negative_ttl)
            .map(|_| Err(AuthError::Unauthorized))
    }

    /// The tenant a key presented from `ip` stands for. Requests that
    /// carry the same key at the same time wait for one check and count
    /// as one attempt. An attempt that needs the Hub counts against the
    /// address before the Hub is asked, and is given back only if the key
    /// turns out valid (or the Hub could not say); a refused key, or a
    /// check abandoned half-way, stays counted.
    pub async fn authenticate(&self, key: &str, ip: IpAddr) -> Result<Tenant, AuthError> {
        let h = hash(key);
        if let Some(answer) = self.fresh(&h) {
            if answer.is_err() {
                self.failed(ip);
            }
            return answer;
        }
        let gate = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(h)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        // Leaves no entry behind, also when this check is abandoned.
        let _cleanup = Inflight(self, h, gate.clone());
        let _turn = match gate.try_lock() {
            Ok(turn) => turn,
            Err(_) => {
                // Another request is checking this key: its answer is this
                // request's too, and no attempt of its own.
                let turn = gate.lock().await;
                if let Some(answer) = self.fresh(&h) {
                    return answer;
                }
                // That check ended without an answer (the Hub could not
                // say, or it was abandoned): this request checks itself.
                turn
            }
        };
        if let Some(answer) = self.fresh(&h) {
            return answer;
        }
        // A key validated before is never held up by its address's
        // failures: only the Hub decides about it.
        let known = self.cached(&h).is_some();
        if !known {
            if let Some(wait) = self.throttled(ip) {
                return Err(AuthError::Throttled(wait));
            }
            self.failed(ip);
        }
        let answer = self.ask_hub(key, h).await;
        if !known && answer != Err(AuthError::Unauthorized) {
            self.refund(ip);
        }
        answer
    }

    /// Gives back an attempt counted in advance.
    fn refund(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = f.get_mut(&client(ip)) {
            e.0 = e.0.saturating_sub(1);
        }
    }

    /// Counts a failed key from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let ip = client(ip);
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.opts.failure_window;
        if f.len() >= MAX_CLIENTS && !f.contains_key(&ip) {
            // Bounded: forget addresses whose window is over, and if all
            // are current, the one whose window started first.
            f.retain(|_, (_, start)| start.elapsed() < window);
            if f.len() >= MAX_CLIENTS
                && let Some(oldest) = f.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| *k)
            {
                f.remove(&oldest);
            }
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
        let (count, start) = *f.get(&client(ip))?;
        let left = self.opts.failure_window.checked_sub(start.elapsed())?;
        (count >= self.opts.max_failures).then_some(left)
    }

    /// Entries of keys being checked (for tests: none once checks end).
    pub fn checks_in_flight(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
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
                // An expiry we cannot read is taken as passed: fail closed.
                let expires = v.expires_at.clone().flatten().map(|t| {
                    vectorizer_hub::time::parse_rfc3339(&t).unwrap_or(SystemTime::UNIX_EPOCH)
                });
                if expires.is_some_and(|t| t <= SystemTime::now()) {
                    return Err(AuthError::Unauthorized);
                }
                self.remember_valid(
                    h,
                    Valid {
                        tenant: tenant.clone(),
                        at: Instant::now(),
                        expires,
                    },
                );
                Ok(tenant)
            }
            Ok(_) => {
                self.remember_refused(h);
                Err(AuthError::Unauthorized)
            }
            Err(e) => {
                // Grace: a key validated before the outage keeps working for
                // a while; an unknown key never gets in.
                if let Some(Valid {
                    tenant,
                    at,
                    expires,
                }) = self.cached(&h)
                    && at.elapsed() < self.opts.ttl + self.opts.grace
                    && expires.is_none_or(|t| t > SystemTime::now())
                {
                    tracing::debug!(error = %e, "hub unreachable: serving a cached key in its grace period");
                    return Ok(tenant);
                }
                // The health loop says once what is wrong (unreachable, or
                // our service key refused); each request would repeat it.
                tracing::debug!(error = %e, "an access key could not be checked");
                Err(AuthError::HubUnavailable)
            }
        }
    }
}

/// Removes a key's in-flight entry when its check ends or is abandoned
/// (unless a newer check has taken the entry over).
struct Inflight<'a>(&'a Auth, KeyHash, Arc<tokio::sync::Mutex<()>>);

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        let mut m = self.0.inflight.lock().unwrap_or_else(|e| e.into_inner());
        // The map and this guard: no other request waits on this gate.
        if m.get(&self.1).is_some_and(|g| Arc::ptr_eq(g, &self.2))
            && Arc::strong_count(&self.2) <= 3
        {
            m.remove(&self.1);
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
