//! Point ids: a non-negative integer or a UUID, as Qdrant clients send them.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::EngineError;

/// A point's id. Integers sort before UUIDs; scroll walks this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PointId {
    Num(u64),
    Uuid(Uuid),
}

/// The longest id string accepted before parsing is even tried.
const MAX_ID_STR: usize = 64;

impl PointId {
    /// Parses a string id: decimal digits or a UUID in any standard form.
    pub fn parse_str(s: &str) -> Result<PointId, EngineError> {
        if s.is_empty() || s.len() > MAX_ID_STR {
            return Err(EngineError::InvalidId(format!(
                "an id string must be 1 to {MAX_ID_STR} characters"
            )));
        }
        // Up to 19 decimal digits, or a UUID: hyphenated, or as 32 hex
        // digits (as Qdrant accepts, and LangChain sends); answers always
        // write it hyphenated.
        let simple = s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !simple && s.bytes().all(|b| b.is_ascii_digit()) {
            if s.len() > 19 {
                return Err(EngineError::InvalidId(
                    "an integer id in a string has at most 19 digits".into(),
                ));
            }
            return s
                .parse::<u64>()
                .map(PointId::Num)
                .map_err(|_| EngineError::InvalidId("integer id out of range".into()));
        }
        let hyphenated = s.len() == 36
            && s.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if !hyphenated && !simple {
            return Err(EngineError::InvalidId(
                "expected a non-negative integer or a UUID".into(),
            ));
        }
        Uuid::from_str(s)
            .map(PointId::Uuid)
            .map_err(|_| EngineError::InvalidId("expected a non-negative integer or a UUID".into()))
    }
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => write!(f, "{u}"),
        }
    }
}

impl From<u64> for PointId {
    fn from(n: u64) -> Self {
        PointId::Num(n)
    }
}

impl From<Uuid> for PointId {
    fn from(u: Uuid) -> Self {
        PointId::Uuid(u)
    }
}

impl Serialize for PointId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PointId::Num(n) => s.serialize_u64(*n),
            PointId::Uuid(u) => s.collect_str(u),
        }
    }
}

impl<'de> Deserialize<'de> for PointId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = PointId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer or a UUID string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PointId, E> {
                Ok(PointId::Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PointId, E> {
                u64::try_from(v)
                    .map(PointId::Num)
                    .map_err(|_| E::custom("a point id must not be negative"))
            }
            // JSON counts `5.0` as the integer 5 (so does JSON Schema).
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<PointId, E> {
                if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                    Ok(PointId::Num(v as u64))
                } else {
                    Err(E::custom(
                        "a point id must be a non-negative integer or a UUID string",
                    ))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PointId, E> {
                PointId::parse_str(v).map_err(E::custom)
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let a: PointId = serde_json::from_str("7").unwrap();
        let b: PointId = serde_json::from_str("\"550e8400-e29b-41d4-a716-446655440000\"").unwrap();
        assert_eq!(a, PointId::Num(7));
        assert!(a < b);
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            "\"550e8400-e29b-41d4-a716-446655440000\""
        );
        assert!(serde_json::from_str::<PointId>("-1").is_err());
        assert!(serde_json::from_str::<PointId>("1.5").is_err());
        assert!(serde_json::from_str::<PointId>("\"not-a-uuid\"").is_err());
        let long = format!("\"{}\"", "1".repeat(100));
        assert!(serde_json::from_str::<PointId>(&long).is_err());
        assert_eq!(PointId::parse_str("42").unwrap(), PointId::Num(42));
        // 32 hex digits are the same UUID, written hyphenated.
        let simple: PointId = serde_json::from_str("\"550e8400e29b41d4a716446655440000\"").unwrap();
        assert_eq!(simple, b);
        assert!(PointId::parse_str("550e8400e29b41d4a71644665544000g").is_err());
        // 32 decimal digits are a UUID too, not an integer out of range.
        assert!(matches!(
            PointId::parse_str(&"1".repeat(32)),
            Ok(PointId::Uuid(_))
        ));
        assert!(PointId::parse_str("{550e8400-e29b-41d4-a716-446655440000}").is_err());
    }
}
