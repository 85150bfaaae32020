//! Payloads held compactly in memory: a JSON object as a sorted boxed slice
//! of (key, value), values as a small enum. A one-field payload costs about
//! 80 bytes this way against roughly 600 as a `serde_json::Map`.

use serde_json::{Map, Number, Value};

/// A JSON value, compactly.
#[derive(Debug, Clone, PartialEq)]
pub enum PValue {
    Null,
    Bool(bool),
    Int(i64),
    /// Integers above `i64::MAX`.
    UInt(u64),
    Float(f64),
    Str(Box<str>),
    Arr(Box<[PValue]>),
    Obj(Box<[(Box<str>, PValue)]>),
}

/// A payload: a JSON object with its keys sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload(Box<[(Box<str>, PValue)]>);

/// A scalar seen while walking a path, for filters.
#[derive(Debug, Clone, Copy)]
pub enum Scalar<'a> {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
    Null,
}

impl Scalar<'_> {
    pub fn as_f64(self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(i as f64),
            Scalar::UInt(u) => Some(u as f64),
            Scalar::Float(f) => Some(f),
            _ => None,
        }
    }
}

/// Anything a filter can look into: walks the values at a dotted path,
/// descending into arrays.
pub trait PayloadView {
    fn visit(&self, path: &[String], f: &mut dyn FnMut(Scalar<'_>));
}

fn object(m: &Map<String, Value>) -> Box<[(Box<str>, PValue)]> {
    // serde_json's map is ordered by key already.
    m.iter()
        .map(|(k, v)| (k.as_str().into(), PValue::from(v)))
        .collect()
}

impl From<&Value> for PValue {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => PValue::Null,
            Value::Bool(b) => PValue::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => PValue::Int(i),
                (None, Some(u)) => PValue::UInt(u),
                _ => PValue::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => PValue::Str(s.as_str().into()),
            Value::Array(a) => PValue::Arr(a.iter().map(PValue::from).collect()),
            Value::Object(m) => PValue::Obj(object(m)),
        }
    }
}

impl From<&PValue> for Value {
    fn from(v: &PValue) -> Self {
        match v {
            PValue::Null => Value::Null,
            PValue::Bool(b) => Value::Bool(*b),
            PValue::Int(i) => Value::from(*i),
            PValue::UInt(u) => Value::from(*u),
            PValue::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            PValue::Str(s) => Value::String(s.to_string()),
            PValue::Arr(a) => Value::Array(a.iter().map(Value::from).collect()),
            PValue::Obj(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.to_string(), Value::from(v)))
                    .collect(),
            ),
        }
    }
}

impl Payload {
    pub fn from_map(m: &Map<String, Value>) -> Payload {
        Payload(object(m))
    }

    pub fn to_map(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect()
    }

    /// Heap bytes this payload holds (what memory accounting counts).
    pub fn heap_bytes(&self) -> usize {
        entries_bytes(&self.0)
    }
}

fn entries_bytes(e: &[(Box<str>, PValue)]) -> usize {
    std::mem::size_of_val(e)
        + e.iter()
            .map(|(k, v)| k.len() + value_bytes(v))
            .sum::<usize>()
}

fn value_bytes(v: &PValue) -> usize {
    match v {
        PValue::Str(s) => s.len(),
        PValue::Arr(a) => std::mem::size_of_val(&**a) + a.iter().map(value_bytes).sum::<usize>(),
        PValue::Obj(o) => entries_bytes(o),
        _ => 0,
    }
}

fn find<'a>(entries: &'a [(Box<str>, PValue)], key: &str) -> Option<&'a PValue> {
    entries
        .binary_search_by(|(k, _)| (**k).cmp(key))
        .ok()
        .map(|i| &entries[i].1)
}

fn visit_compact(v: &PValue, rest: &[String], f: &mut dyn FnMut(Scalar<'_>)) {
    match v {
        PValue::Arr(items) => items.iter().for_each(|i| visit_compact(i, rest, f)),
        PValue::Obj(o) if !rest.is_empty() => {
            if let Some(next) = find(o, &rest[0]) {
                visit_compact(next, &rest[1..], f);
            }
        }
        _ if !rest.is_empty() => {}
        PValue::Null => f(Scalar::Null),
        PValue::Bool(b) => f(Scalar::Bool(*b)),
        PValue::Int(i) => f(Scalar::Int(*i)),
        PValue::UInt(u) => f(Scalar::UInt(*u)),
        PValue::Float(x) => f(Scalar::Float(*x)),
        PValue::Str(s) => f(Scalar::Str(s)),
        PValue::Obj(_) => {}
    }
}

impl PayloadView for Payload {
    fn visit(&self, path: &[String], f: &mut dyn FnMut(Scalar<'_>)) {
        if let Some(v) = find(&self.0, &path[0]) {
            visit_compact(v, &path[1..], f);
        }
    }
}

fn visit_json(v: &Value, rest: &[String], f: &mut dyn FnMut(Scalar<'_>)) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| visit_json(i, rest, f)),
        Value::Object(o) if !rest.is_empty() => {
            if let Some(next) = o.get(&rest[0]) {
                visit_json(next, &rest[1..], f);
            }
        }
        _ if !rest.is_empty() => {}
        Value::Null => f(Scalar::Null),
        Value::Bool(b) => f(Scalar::Bool(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => f(Scalar::Int(i)),
            (None, Some(u)) => f(Scalar::UInt(u)),
            _ => f(Scalar::Float(n.as_f64().unwrap_or(0.0))),
        },
        Value::String(s) => f(Scalar::Str(s)),
        Value::Object(_) => {}
    }
}

impl PayloadView for Map<String, Value> {
    fn visit(&self, path: &[String], f: &mut dyn FnMut(Scalar<'_>)) {
        if let Some(v) = self.get(&path[0]) {
            visit_json(v, &path[1..], f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_is_small() {
        let v =
            json!({"b": [1, -2, 3.5, "x", null, {"z": true}], "a": {"k": u64::MAX}, "c": "text"});
        let m = v.as_object().unwrap();
        let p = Payload::from_map(m);
        assert_eq!(&p.to_map(), m);
        let one = Payload::from_map(json!({"sel": 42}).as_object().unwrap());
        assert!(one.heap_bytes() < 64, "{}", one.heap_bytes());
        assert_eq!(std::mem::size_of::<PValue>(), 24);
    }
}
