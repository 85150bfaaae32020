//! Signatures of calls between nodes, with the cluster secret. A call
//! carries two HMAC-SHA256s: one over its head (method, path, time, a
//! nonce, the sender's and the receiver's ids, the body's length), checked
//! before a byte of the body is read, and one over the head and the body's
//! SHA-256, checked once the body is in. A node answers an internal call
//! only if both hold, it is the call's receiver, the time is within a
//! minute of its clock and not before the node started, and the nonce is
//! new: a call cannot be forged without the secret, altered, aimed at
//! another node, or replayed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const NODE: &str = "x-vz-node";
pub const TO: &str = "x-vz-to";
pub const TIME: &str = "x-vz-time";
pub const NONCE: &str = "x-vz-nonce";
pub const HEAD: &str = "x-vz-head";
pub const SIGNATURE: &str = "x-vz-signature";

/// How far a call's time may be from the receiver's clock.
const SKEW: Duration = Duration::from_secs(60);

/// The environment variable that holds the cluster secret.
pub const SECRET_ENV: &str = "VECTORIZER_CLUSTER_SECRET";
/// The shortest secret accepted.
pub const MIN_SECRET: usize = 32;

/// Nonces accepted lately: the set, and the same oldest first with the
/// time each was accepted (to forget them once out of the window).
type Seen = (HashMap<String, u64>, VecDeque<(u64, String)>);

pub struct Signer {
    secret: Vec<u8>,
    /// When this process started: calls signed before it are refused (the
    /// nonces seen before a restart are forgotten).
    boot: u64,
    /// Nonces seen within the skew window.
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The headers a signed call carries.
#[derive(Debug, Clone)]
pub struct Signed {
    pub node: String,
    pub to: String,
    pub time: String,
    pub nonce: String,
    pub head: String,
    pub signature: String,
}

/// What the head MAC covers besides the headers themselves.
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub length: usize,
}

impl Signer {
    pub fn new(secret: &str) -> Result<Signer, String> {
        if secret.len() < MIN_SECRET {
            return Err(format!(
                "{SECRET_ENV} must be at least {MIN_SECRET} characters"
            ));
        }
        Ok(Signer {
            secret: secret.as_bytes().to_vec(),
            boot: now(),
            seen: Mutex::default(),
        })
    }

    fn mac(&self, c: &Call<'_>, s: &Signed, body: Option<&[u8]>) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        let head = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            c.method,
            c.path,
            s.time,
            s.nonce,
            s.node,
            s.to,
            c.length,
            body.is_some()
        );
        mac.update(b"vzc2\n");
        mac.update(head.as_bytes());
        if let Some(body) = body {
            mac.update(b"\n");
            mac.update(hex(&Sha256::digest(body)).as_bytes());
        }
        mac
    }

    /// Signs a call from node `node` to node `to`.
    pub fn sign(&self, node: u64, to: u64, method: &str, path: &str, body: &[u8]) -> Signed {
        let mut s = Signed {
            node: node.to_string(),
            to: to.to_string(),
            time: now().to_string(),
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            head: String::new(),
            signature: String::new(),
        };
        let c = Call {
            method,
            path,
            length: body.len(),
        };
        s.head = hex(&self.mac(&c, &s, None).finalize().into_bytes());
        s.signature = hex(&self.mac(&c, &s, Some(body)).finalize().into_bytes());
        s
    }

    /// Checks a call's head, for node `me`, before its body is read.
    pub fn verify_head(&self, me: u64, c: &Call<'_>, s: &Signed) -> bool {
        let (Ok(to), Ok(time)) = (s.to.parse::<u64>(), s.time.parse::<u64>()) else {
            return false;
        };
        to == me
            && s.node.parse::<u64>().is_ok()
            && now().abs_diff(time) <= SKEW.as_secs()
            && time >= self.boot
            && (16..=64).contains(&s.nonce.len())
            && unhex(&s.head).is_some_and(|h| self.mac(c, s, None).verify_slice(&h).is_ok())
    }

    /// Checks a whole call, head and body, for node `me`; the sender's id
    /// if it holds. A refused call does not use up its nonce.
    pub fn verify(&self, me: u64, c: &Call<'_>, s: &Signed, body: &[u8]) -> Option<u64> {
        if c.length != body.len() || !self.verify_head(me, c, s) {
            return None;
        }
        let sig = unhex(&s.signature)?;
        self.mac(c, s, Some(body)).verify_slice(&sig).ok()?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *seen;
        let cutoff = now().saturating_sub(2 * SKEW.as_secs());
        while order.front().is_some_and(|(t, _)| *t < cutoff) {
            if let Some((_, n)) = order.pop_front() {
                set.remove(&n);
            }
        }
        if set.contains_key(&s.nonce) {
            return None;
        }
        set.insert(s.nonce.clone(), now());
        order.push_back((now(), s.nonce.clone()));
        s.node.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(path: &'a str, body: &[u8]) -> Call<'a> {
        Call {
            method: "POST",
            path,
            length: body.len(),
        }
    }

    #[test]
    fn only_an_unaltered_fresh_call_to_this_node_passes() {
        let s = Signer::new(&"k".repeat(32)).unwrap();
        let p = "/internal/forward/1";
        let c = s.sign(3, 1, "POST", p, b"{}");
        assert!(s.verify_head(1, &call(p, b"{}"), &c));
        assert_eq!(s.verify(1, &call(p, b"{}"), &c, b"{}"), Some(3));
        assert_eq!(s.verify(1, &call(p, b"{}"), &c, b"{}"), None, "replayed");
        let c = s.sign(3, 1, "POST", p, b"{}");
        assert_eq!(
            s.verify(2, &call(p, b"{}"), &c, b"{}"),
            None,
            "another node's"
        );
        assert!(!s.verify_head(2, &call(p, b"{}"), &c));
        assert_eq!(s.verify(1, &call(p, b"{ }"), &c, b"{ }"), None, "body");
        assert_eq!(s.verify(1, &call(p, b"{}"), &c, b"{ }"), None, "length");
        assert_eq!(
            s.verify(1, &call("/internal/forward/2", b"{}"), &c, b"{}"),
            None,
            "path"
        );
        let mut other = c.clone();
        other.node = "4".into();
        assert_eq!(s.verify(1, &call(p, b"{}"), &other, b"{}"), None, "sender");
        let forger = Signer::new(&"x".repeat(32)).unwrap();
        let forged = forger.sign(3, 1, "POST", p, b"{}");
        assert!(!s.verify_head(1, &call(p, b"{}"), &forged));
        assert_eq!(s.verify(1, &call(p, b"{}"), &forged, b"{}"), None);
        let mut old = s.sign(3, 1, "POST", p, b"{}");
        old.time = (now() - 600).to_string();
        assert!(!s.verify_head(1, &call(p, b"{}"), &old), "stale");
        // The refusals did not use up the genuine call's nonce.
        assert_eq!(s.verify(1, &call(p, b"{}"), &c, b"{}"), Some(3));
        assert!(Signer::new("short").is_err());
    }

    #[test]
    fn calls_signed_before_a_restart_are_refused() {
        let before = Signer::new(&"k".repeat(32)).unwrap();
        let c = before.sign(3, 1, "POST", "/p", b"");
        let mut after = Signer::new(&"k".repeat(32)).unwrap();
        after.boot = now() + 1;
        assert!(!after.verify_head(1, &call("/p", b""), &c));
    }
}
