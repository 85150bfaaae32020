//! Signatures of calls between nodes, with the cluster secret: an HMAC-SHA256
//! over the method, path, time, a nonce, the sender's id and the body's
//! SHA-256. A node answers an internal call only if the signature holds,
//! the time is within a minute of its clock, and the nonce is new: a call
//! cannot be forged without the secret, altered, or replayed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const NODE: &str = "x-vz-node";
pub const TIME: &str = "x-vz-time";
pub const NONCE: &str = "x-vz-nonce";
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

/// The headers a signed call carries.
#[derive(Debug, Clone)]
pub struct Signed {
    pub node: String,
    pub time: String,
    pub nonce: String,
    pub signature: String,
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
            seen: Mutex::default(),
        })
    }

    fn mac(
        &self,
        method: &str,
        path: &str,
        time: &str,
        nonce: &str,
        node: &str,
        body: &[u8],
    ) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        let message = format!(
            "vzc1\n{method}\n{path}\n{time}\n{nonce}\n{node}\n{}",
            hex(&Sha256::digest(body))
        );
        mac.update(message.as_bytes());
        mac
    }

    /// Signs a call from node `node`.
    pub fn sign(&self, node: u64, method: &str, path: &str, body: &[u8]) -> Signed {
        let time = now().to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let node = node.to_string();
        let signature = hex(&self
            .mac(method, path, &time, &nonce, &node, body)
            .finalize()
            .into_bytes());
        Signed {
            node,
            time,
            nonce,
            signature,
        }
    }

    /// Checks a call; the sender's id if it holds. A refused call does not
    /// use up its nonce.
    pub fn verify(&self, method: &str, path: &str, s: &Signed, body: &[u8]) -> Option<u64> {
        let node: u64 = s.node.parse().ok()?;
        let time: u64 = s.time.parse().ok()?;
        if now().abs_diff(time) > SKEW.as_secs() || s.nonce.len() < 16 || s.nonce.len() > 64 {
            return None;
        }
        let sig = (0..s.signature.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.signature.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        self.mac(method, path, &s.time, &s.nonce, &s.node, body)
            .verify_slice(&sig)
            .ok()?;
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
        set.insert(s.nonce.clone(), time);
        order.push_back((now(), s.nonce.clone()));
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unaltered_fresh_call_passes() {
        let s = Signer::new(&"k".repeat(32)).unwrap();
        let call = s.sign(3, "POST", "/internal/forward/1", b"{}");
        assert_eq!(
            s.verify("POST", "/internal/forward/1", &call, b"{}"),
            Some(3)
        );
        assert_eq!(
            s.verify("POST", "/internal/forward/1", &call, b"{}"),
            None,
            "replayed"
        );
        let call = s.sign(3, "POST", "/internal/forward/1", b"{}");
        assert_eq!(
            s.verify("POST", "/internal/forward/1", &call, b"{ }"),
            None,
            "body"
        );
        assert_eq!(
            s.verify("POST", "/internal/forward/2", &call, b"{}"),
            None,
            "path"
        );
        let mut other = call.clone();
        other.node = "4".into();
        assert_eq!(
            s.verify("POST", "/internal/forward/1", &other, b"{}"),
            None,
            "sender"
        );
        let forger = Signer::new(&"x".repeat(32)).unwrap();
        let forged = forger.sign(3, "POST", "/internal/forward/1", b"{}");
        assert_eq!(
            s.verify("POST", "/internal/forward/1", &forged, b"{}"),
            None
        );
        // The refusals did not use up the genuine call's nonce.
        assert_eq!(
            s.verify("POST", "/internal/forward/1", &call, b"{}"),
            Some(3)
        );
        assert!(Signer::new("short").is_err());
    }
}
