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

/// Anything a filter can look into: a JSON object, held compactly or as
/// a `serde_json` map.
pub trait PayloadView {
    /// The value of a top-level field.
    fn field(&self, key: &str) -> Option<Node<'_>>;

    /// Walks the values at a dotted path, descending into arrays at every
    /// step (a list of objects is searched object by object, and a list
    /// at the end yields its elements, nested lists included).
    fn visit(&self, path: &[String], f: &mut dyn FnMut(Scalar<'_>)) {
        if let Some(v) = self.field(&path[0]) {
            v.visit(&path[1..], f);
        }
    }

    /// The values found at a dotted path as they are stored (a list stays a
    /// list), descending through lists on the way.
    fn leaves(&self, path: &[String], f: &mut dyn FnMut(Node<'_>)) {
        if let Some(v) = self.field(&path[0]) {
            v.leaves(&path[1..], f);
        }
    }
}

/// One value inside a payload, in either representation.
#[derive(Debug, Clone, Copy)]
pub enum Node<'a> {
    Json(&'a Value),
    Compact(&'a PValue),
}

impl<'a> Node<'a> {
    /// The value as a scalar, if it is one.
    pub fn scalar(self) -> Option<Scalar<'a>> {
        Some(match self {
            Node::Json(v) => match v {
                Value::Null => Scalar::Null,
                Value::Bool(b) => Scalar::Bool(*b),
                Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => Scalar::Int(i),
                    (None, Some(u)) => Scalar::UInt(u),
                    _ => Scalar::Float(n.as_f64().unwrap_or(0.0)),
                },
                Value::String(s) => Scalar::Str(s),
                Value::Array(_) | Value::Object(_) => return None,
            },
            Node::Compact(v) => match v {
                PValue::Null => Scalar::Null,
                PValue::Bool(b) => Scalar::Bool(*b),
                PValue::Int(i) => Scalar::Int(*i),
                PValue::UInt(u) => Scalar::UInt(*u),
                PValue::Float(x) => Scalar::Float(*x),
                PValue::Str(s) => Scalar::Str(s),
                PValue::Arr(_) | PValue::Obj(_) => return None,
            },
        })
    }

    /// The length of the value if it is a list.
    pub fn array_len(self) -> Option<usize> {
        match self {
            Node::Json(Value::Array(a)) => Some(a.len()),
            Node::Compact(PValue::Arr(a)) => Some(a.len()),
            _ => None,
        }
    }

    /// Calls `f` on each element if the value is a list; returns whether
    /// it was one.
    pub fn each_item(self, f: &mut dyn FnMut(Node<'a>)) -> bool {
        match self {
            Node::Json(Value::Array(a)) => a.iter().for_each(|v| f(Node::Json(v))),
            Node::Compact(PValue::Arr(a)) => a.iter().for_each(|v| f(Node::Compact(v))),
            _ => return false,
        }
        true
    }

    pub fn is_object(self) -> bool {
        matches!(
            self,
            Node::Json(Value::Object(_)) | Node::Compact(PValue::Obj(_))
        )
    }

    pub fn is_null(self) -> bool {
        matches!(self, Node::Json(Value::Null) | Node::Compact(PValue::Null))
    }

    fn get(self, key: &str) -> Option<Node<'a>> {
        match self {
            Node::Json(Value::Object(o)) => o.get(key).map(Node::Json),
            Node::Compact(PValue::Obj(o)) => find(o, key).map(Node::Compact),
            _ => None,
        }
    }

    // The hot path of every field condition: one plain recursion per
    // representation, no closure per step.
    fn visit(self, rest: &[String], f: &mut dyn FnMut(Scalar<'_>)) {
        match self {
            Node::Compact(v) => visit_compact(v, rest, f),
            Node::Json(v) => visit_json(v, rest, f),
        }
    }

    fn leaves(self, rest: &[String], f: &mut dyn FnMut(Node<'a>)) {
        let Some((k, tail)) = rest.split_first() else {
            return f(self);
        };
        if self.each_item(&mut |i| i.leaves(rest, f)) {
            return;
        }
        if let Some(next) = self.get(k) {
            next.leaves(tail, f);
        }
    }
}

/// An object inside a payload (an element of a `nested` list) seen as a
/// payload of its own.
impl PayloadView for Node<'_> {
    fn field(&self, key: &str) -> Option<Node<'_>> {
        self.get(key)
    }
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

fn visit_json(v: &Value, rest: &[String], f: &mut dyn FnMut(Scalar<'_>)) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| visit_json(i, rest, f)),
        Value::Object(o) if !rest.is_empty() => {
            if let Some(next) = o.get(&rest[0]) {
                visit_json(next, &rest[1..], f);
            }
        }
        _ if !rest.is_empty() => {}
        Value::Object(_) => {}
        v => {
            if let Some(s) = Node::Json(v).scalar() {
                f(s)
            }
        }
    }
}

impl PayloadView for Payload {
    fn field(&self, key: &str) -> Option<Node<'_>> {
        find(&self.0, key).map(Node::Compact)
    }
}

impl PayloadView for Map<String, Value> {
    fn field(&self, key: &str) -> Option<Node<'_>> {
        self.get(key).map(Node::Json)
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
