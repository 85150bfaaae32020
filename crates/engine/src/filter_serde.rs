//! A [`Filter`] as a serde value: written in the same Qdrant shape the
//! parser reads (so any self-describing format carries it, buffered or
//! not), and read through the bounded parser of `filter_parse`. The
//! written form is canonical: `has_id` sorted, `any` in the order given,
//! only the clauses that hold conditions; writing what was read gives the
//! same bytes again.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::filter::{AnyOf, Condition, FieldTest, Filter, MatchValue, MinShould, Range};

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let clauses = [
            ("must", &self.must),
            ("should", &self.should),
            ("must_not", &self.must_not),
        ];
        let n = clauses.iter().filter(|(_, c)| !c.is_empty()).count()
            + self.min_should.is_some() as usize;
        let mut m = s.serialize_map(Some(n))?;
        for (name, list) in clauses {
            if !list.is_empty() {
                m.serialize_entry(name, &Conditions(list))?;
            }
        }
        if let Some(ms) = &self.min_should {
            m.serialize_entry("min_should", &MinShouldOut(ms))?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Filter, D::Error> {
        crate::filter_parse::deserialize(d)
    }
}

struct MinShouldOut<'a>(&'a MinShould);

impl Serialize for MinShouldOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("conditions", &Conditions(&self.0.conditions))?;
        m.serialize_entry("min_count", &self.0.min_count)?;
        m.end()
    }
}

/// `{"key": "a.b"}`, the argument of `is_empty` and `is_null`.
struct KeyOut<'a>(&'a [String]);

impl Serialize for KeyOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("key", &self.0.join("."))?;
        m.end()
    }
}

struct NestedOut<'a>(&'a [String], &'a Filter);

impl Serialize for NestedOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("key", &self.0.join("."))?;
        m.serialize_entry("filter", self.1)?;
        m.end()
    }
}

struct Conditions<'a>(&'a [Condition]);

impl Serialize for Conditions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for c in self.0 {
            seq.serialize_element(c)?;
        }
        seq.end()
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Condition::HasId(ids) => {
                let mut sorted: Vec<_> = ids.iter().collect();
                sorted.sort_unstable();
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("has_id", &sorted)?;
                m.end()
            }
            Condition::Nested(f) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("filter", f.as_ref())?;
                m.end()
            }
            Condition::IsEmpty(key) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("is_empty", &KeyOut(key))?;
                m.end()
            }
            Condition::IsNull(key) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("is_null", &KeyOut(key))?;
                m.end()
            }
            Condition::Within { key, filter } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("nested", &NestedOut(key, filter))?;
                m.end()
            }
            Condition::Field { key, test } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("key", &key.join("."))?;
                match test {
                    FieldTest::Match(v) => m.serialize_entry("match", &Match::Value(v))?,
                    FieldTest::Any(a) => m.serialize_entry("match", &Match::Any(a))?,
                    FieldTest::Except(a) => m.serialize_entry("match", &Match::Except(a))?,
                    FieldTest::Text(t) => m.serialize_entry("match", &Match::Text(t))?,
                    FieldTest::Range(r) => m.serialize_entry("range", &RangeOut(r, false))?,
                    FieldTest::ValuesCount(r) => {
                        m.serialize_entry("values_count", &RangeOut(r, true))?
                    }
                }
                m.end()
            }
        }
    }
}

enum Match<'a> {
    Value(&'a MatchValue),
    Any(&'a AnyOf),
    Except(&'a AnyOf),
    Text(&'a str),
}

impl Serialize for Match<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        match self {
            Match::Value(v) => m.serialize_entry("value", v)?,
            Match::Any(a) => m.serialize_entry("any", a.values())?,
            Match::Except(a) => m.serialize_entry("except", a.values())?,
            Match::Text(t) => m.serialize_entry("text", t)?,
        }
        m.end()
    }
}

impl Serialize for MatchValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MatchValue::Keyword(k) => s.serialize_str(k),
            MatchValue::Integer(i) => s.serialize_i64(*i),
            MatchValue::Bool(b) => s.serialize_bool(*b),
            MatchValue::Float(f) => s.serialize_f64(f.get()),
        }
    }
}

/// Range bounds; `values_count` bounds are written as whole numbers.
struct RangeOut<'a>(&'a Range, bool);

impl Serialize for RangeOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let bounds = [("gt", r.gt), ("gte", r.gte), ("lt", r.lt), ("lte", r.lte)];
        let n = bounds.iter().filter(|(_, b)| b.is_some()).count();
        let mut m = s.serialize_map(Some(n))?;
        for (name, b) in bounds {
            match b {
                Some(b) if self.1 => m.serialize_entry(name, &(b as u32))?,
                Some(b) => m.serialize_entry(name, &b)?,
                None => {}
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_form_is_written_as_it_is_read() {
        let f: Filter = serde_json::from_value(json!({
            "must": [
                {"key": "color", "match": {"value": "red"}},
                {"key": "meta.lang", "match": {"any": ["en", "fr", "en"]}},
                {"key": "n", "match": {"value": -9_007_199_254_740_993i64}},
                {"key": "ok", "match": {"value": true}},
                {"key": "price", "range": {"gte": 10, "lt": 20.5}},
                {"has_id": [3, 1, "7c9e6679-7425-40de-944b-e07fc1f90ae7", 2]}
            ],
            "should": [{"filter": {"must_not": [{"key": "x", "match": {"any": [1, 2]}}]}}],
            "must_not": [{"must": [{"key": "é.ü", "match": {"value": "\u{2028}日本"}}]}],
            "min_should": {"conditions": [
                {"key": "f", "match": {"value": 2.5}},
                {"key": "c", "match": {"except": ["a", 3, false, 0.25]}},
                {"key": "t", "match": {"text": "needle"}},
                {"key": "tags", "values_count": {"gte": 1, "lt": 4}},
                {"is_empty": {"key": "e"}},
                {"is_null": {"key": "n.m"}},
                {"nested": {"key": "items", "filter": {"must": [{"key": "sku", "match": {"value": "x"}}]}}}
            ], "min_count": 2}
        }))
        .unwrap();
        let text = serde_json::to_string(&f).unwrap();
        let back: Filter = serde_json::from_str(&text).unwrap();
        assert_eq!(back, f);
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        assert!(text.contains(r#""has_id":[1,2,3,"7c9e6679"#), "{text}");
    }

    #[test]
    fn bounds_hold_when_read_through_serde() {
        let many: Vec<i64> = (0..=crate::filter::MAX_ANY as i64).collect();
        let e = serde_json::from_value::<Filter>(
            json!({"must": [{"key": "a", "match": {"any": many}}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        // Read from a buffered form (as in an internally tagged enum).
        #[derive(serde::Deserialize)]
        #[serde(tag = "t")]
        enum Tagged {
            A { f: Filter },
        }
        let t: Tagged = serde_json::from_value(
            json!({"t": "A", "f": {"must": [{"key": "a", "match": {"value": 1}}]}}),
        )
        .unwrap();
        let Tagged::A { f } = t;
        assert_eq!(f.must.len(), 1);
    }
}
