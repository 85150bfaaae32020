//! Every filter condition checked against a reference evaluation written
//! straight from the JSON (no parsed form shared with the engine), over
//! random payloads that hold nulls, empty lists, lists of lists, lists of
//! objects and mixed types. Each random filter is also checked through a
//! collection with payload indexes (whose candidates must never lose a
//! match), and written and read back unchanged.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use vectorizer_engine::payload::Payload;
use vectorizer_engine::{CollectionConfig, Deadline, Filter, Metric, Point, PointId};
use vectorizer_testkit::Rng;

use crate::common::{TempDir, open};

const KEYS: [&str; 8] = ["a", "b", "c", "o.a", "items[].a", "items.b", "missing", "o"];

fn pick<'a, T>(rng: &mut Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.below(xs.len() as u64) as usize]
}

fn scalar(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 1),
        2 => json!(rng.below(4)),
        3 => pick(
            rng,
            &[
                json!(0.5),
                json!(1.0),
                json!(2.5),
                json!(-1),
                json!(9_007_199_254_740_993i64),
                json!(9_007_199_254_740_992.0),
                json!(i64::MAX),
                json!(u64::MAX),
            ],
        )
        .clone(),
        _ => json!(pick(rng, &["x", "y", "xy", "yx", ""])),
    }
}

fn value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth == 0 { 1 } else { 4 }) {
        0 => scalar(rng),
        1 => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
        2 => Value::Array(vec![]),
        _ => {
            let mut m = Map::new();
            for k in ["a", "b"] {
                if rng.below(3) > 0 {
                    m.insert(k.into(), value(rng, depth - 1));
                }
            }
            Value::Object(m)
        }
    }
}

fn payload(rng: &mut Rng) -> Map<String, Value> {
    let mut m = Map::new();
    for k in ["a", "b", "c", "o"] {
        if rng.below(4) > 0 {
            m.insert(k.into(), value(rng, 2));
        }
    }
    if rng.below(2) == 0 {
        let items = (0..rng.below(4))
            .map(|_| {
                let mut o = Map::new();
                o.insert("a".into(), scalar(rng));
                if rng.below(2) == 0 {
                    o.insert("b".into(), value(rng, 1));
                }
                Value::Object(o)
            })
            .collect();
        m.insert("items".into(), Value::Array(items));
    }
    m
}

fn match_value(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!(rng.below(2) == 1),
        1 => json!(rng.below(4)),
        2 => pick(
            rng,
            &[
                json!(0.5),
                json!(2.5),
                json!(-1),
                json!(1.0),
                json!(9_007_199_254_740_993i64),
                json!(9_007_199_254_740_992i64),
                json!(i64::MAX),
            ],
        )
        .clone(),
        _ => json!(pick(rng, &["x", "y", "xy"])),
    }
}

fn bounds(rng: &mut Rng, whole: bool) -> Value {
    let mut m = Map::new();
    for b in ["gt", "gte", "lt", "lte"] {
        if rng.below(3) == 0 || (m.is_empty() && b == "lte") {
            let v = if whole {
                json!(rng.below(4))
            } else {
                json!(rng.below(8) as f64 / 2.0 - 1.0)
            };
            m.insert(b.into(), v);
        }
    }
    Value::Object(m)
}

fn condition(rng: &mut Rng, depth: u32, within: bool) -> Value {
    let key = *pick(rng, &KEYS);
    let n = if depth == 0 { 9 } else { 12 };
    match rng.below(n) {
        0 => json!({"key": key, "match": {"value": match_value(rng)}}),
        1 => {
            json!({"key": key, "match": {"any": (0..rng.below(3)).map(|_| match_value(rng)).collect::<Vec<_>>()}})
        }
        2 => {
            json!({"key": key, "match": {"except": (0..rng.below(3)).map(|_| match_value(rng)).collect::<Vec<_>>()}})
        }
        3 => json!({"key": key, "match": {"text": pick(rng, &["x", "y", "xy", ""])}}),
        4 => json!({"key": key, "range": bounds(rng, false)}),
        5 => json!({"key": key, "values_count": bounds(rng, true)}),
        6 => json!({"is_empty": {"key": key}}),
        7 => json!({"is_null": {"key": key}}),
        8 if within => json!({"is_null": {"key": key}}),
        8 => json!({"has_id": (0..rng.below(4)).map(|_| rng.below(40)).collect::<Vec<_>>()}),
        9 => json!({"filter": filter(rng, depth - 1, within)}),
        10 => {
            json!({"nested": {"key": pick(rng, &["items", "o", "a"]), "filter": filter(rng, depth - 1, true)}})
        }
        _ => {
            // A filter as a condition says something: `{}` is refused.
            let f = filter(rng, depth - 1, within);
            if f.as_object().unwrap().is_empty() {
                json!({"must": [{"is_null": {"key": key}}]})
            } else {
                f
            }
        }
    }
}

fn filter(rng: &mut Rng, depth: u32, within: bool) -> Value {
    let mut m = Map::new();
    for clause in ["must", "should", "must_not"] {
        if rng.below(2) == 0 {
            let list: Vec<Value> = (0..1 + rng.below(2))
                .map(|_| condition(rng, depth, within))
                .collect();
            m.insert(clause.into(), Value::Array(list));
        }
    }
    if rng.below(4) == 0 {
        let conditions: Vec<Value> = (0..1 + rng.below(3))
            .map(|_| condition(rng, depth, within))
            .collect();
        let min = rng.below(conditions.len() as u64 + 1);
        m.insert(
            "min_should".into(),
            json!({"conditions": conditions, "min_count": min}),
        );
    }
    Value::Object(m)
}

// ---- The reference: the rules, read straight off the JSON. ----

fn path(key: &str) -> Vec<String> {
    key.split('.')
        .map(|p| p.trim_end_matches("[]").to_owned())
        .collect()
}

/// Scalars at the path: lists are searched element by element at every
/// step and at the end, at any depth.
fn scalars<'a>(v: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(xs) => xs.iter().for_each(|x| scalars(x, path, out)),
        Value::Object(o) => {
            if let Some((k, rest)) = path.split_first()
                && let Some(next) = o.get(k)
            {
                scalars(next, rest, out)
            }
        }
        _ if path.is_empty() => out.push(v),
        _ => {}
    }
}

/// Values at the path as stored: lists are searched on the way only.
fn leaves<'a>(v: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
    let Some((k, rest)) = path.split_first() else {
        return out.push(v);
    };
    match v {
        Value::Array(xs) => xs.iter().for_each(|x| leaves(x, path, out)),
        Value::Object(o) => {
            if let Some(next) = o.get(k) {
                leaves(next, rest, out)
            }
        }
        _ => {}
    }
}

/// Numbers are equal by value: integers exactly, an integral float as the
/// integer it names, other floats as floats.
fn same(want: &Value, got: &Value) -> bool {
    let int = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or(n.as_u64().map(i128::from))
            .or_else(|| {
                let f = n.as_f64()?;
                (f.fract() == 0.0 && f.abs() < 1e30).then_some(f as i128)
            })
    };
    match (want, got) {
        (Value::Number(a), Value::Number(b)) => match (int(a), int(b)) {
            (Some(x), Some(y)) => x == y,
            (None, None) => a.as_f64() == b.as_f64(),
            _ => false,
        },
        (a, b) => a == b,
    }
}

fn in_bounds(b: &Value, x: f64) -> bool {
    let get = |k: &str| b.get(k).and_then(Value::as_f64);
    get("gt").is_none_or(|g| x > g)
        && get("gte").is_none_or(|g| x >= g)
        && get("lt").is_none_or(|g| x < g)
        && get("lte").is_none_or(|g| x <= g)
}

fn ref_condition(c: &Value, id: u64, doc: &Value) -> bool {
    let o = c.as_object().unwrap();
    if let Some(ids) = o.get("has_id") {
        return ids
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_u64() == Some(id));
    }
    if let Some(f) = o.get("filter") {
        return ref_filter(f, id, doc);
    }
    if o.contains_key("must")
        || o.contains_key("should")
        || o.contains_key("must_not")
        || o.contains_key("min_should")
    {
        return ref_filter(c, id, doc);
    }
    let key_of = |v: &Value| path(v["key"].as_str().unwrap());
    if let Some(k) = o.get("is_empty") {
        let mut ls = Vec::new();
        leaves(doc, &key_of(k), &mut ls);
        return ls
            .iter()
            .all(|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty));
    }
    if let Some(k) = o.get("is_null") {
        let mut ls = Vec::new();
        leaves(doc, &key_of(k), &mut ls);
        return ls.iter().any(|v| v.is_null());
    }
    if let Some(n) = o.get("nested") {
        let mut ls = Vec::new();
        leaves(doc, &key_of(n), &mut ls);
        let items: Vec<&Value> = ls
            .iter()
            .flat_map(|v| match v {
                Value::Array(xs) => xs.iter().collect(),
                other => vec![*other],
            })
            .collect();
        return items
            .iter()
            .any(|it| it.is_object() && ref_filter(&n["filter"], id, it));
    }
    let key = key_of(c);
    if let Some(b) = o.get("values_count") {
        let mut ls = Vec::new();
        leaves(doc, &key, &mut ls);
        let count: usize = ls
            .iter()
            .map(|v| match v {
                Value::Array(xs) => xs.len(),
                Value::Null => 0,
                _ => 1,
            })
            .sum();
        return !ls.is_empty() && in_bounds(b, count as f64);
    }
    let mut vs = Vec::new();
    scalars(doc, &key, &mut vs);
    if let Some(b) = o.get("range") {
        return vs
            .iter()
            .any(|v| v.as_f64().is_some_and(|x| in_bounds(b, x)));
    }
    let m = &o["match"];
    if let Some(v) = m.get("value") {
        return vs.iter().any(|x| same(v, x));
    }
    if let Some(any) = m.get("any") {
        let any = any.as_array().unwrap();
        return vs.iter().any(|x| any.iter().any(|v| same(v, x)));
    }
    if let Some(ex) = m.get("except") {
        let ex = ex.as_array().unwrap();
        return vs
            .iter()
            .any(|x| !x.is_null() && !ex.iter().any(|v| same(v, x)));
    }
    let text = m["text"].as_str().unwrap();
    vs.iter()
        .any(|x| x.as_str().is_some_and(|s| s.contains(text)))
}

fn list(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn ref_filter(f: &Value, id: u64, doc: &Value) -> bool {
    let should = list(f.get("should"));
    list(f.get("must"))
        .iter()
        .all(|c| ref_condition(c, id, doc))
        && (should.is_empty() || should.iter().any(|c| ref_condition(c, id, doc)))
        && !list(f.get("must_not"))
            .iter()
            .any(|c| ref_condition(c, id, doc))
        && f.get("min_should").is_none_or(|m| {
            let hits = list(m.get("conditions"))
                .iter()
                .filter(|c| ref_condition(c, id, doc))
                .count();
            hits as u64 >= m["min_count"].as_u64().unwrap()
        })
}

#[test]
fn every_condition_agrees_with_the_reference() {
    let mut rng = Rng::new(2027);
    let docs: Vec<Map<String, Value>> = (0..40).map(|_| payload(&mut rng)).collect();
    let dir = TempDir::new("filter-model");
    let db = open(&dir);
    let mut config = CollectionConfig::new(2, Metric::Euclidean);
    config.payload_index = vec!["a".into(), "o.a".into(), "items.a".into(), "c".into()];
    let c = db.create_collection("m", config, BTreeMap::new()).unwrap();
    let points = docs
        .iter()
        .enumerate()
        .map(|(i, d)| Point {
            id: PointId::Num(i as u64),
            vector: vec![i as f32, 1.0],
            payload: Some(d.clone()),
        })
        .collect();
    c.upsert(points).unwrap();
    let deadline = Deadline::none();
    let (mut matched, mut total) = (0usize, 0usize);
    for round in 0..1500 {
        let fj = filter(&mut rng, 3, false);
        let f = Filter::from_json(&fj).unwrap_or_else(|e| panic!("{fj}: {e}"));
        // The written form reads back as the same filter.
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(Filter::from_json_text(&text).unwrap(), f, "{fj}");
        let mut want = 0;
        for (i, d) in docs.iter().enumerate() {
            let id = PointId::Num(i as u64);
            let doc = Value::Object(d.clone());
            let r = ref_filter(&fj, i as u64, &doc);
            assert_eq!(f.matches(&id, Some(d)), r, "round {round}: {fj} on {doc}");
            assert_eq!(
                f.matches(&id, Some(&Payload::from_map(d))),
                r,
                "compact, round {round}: {fj} on {doc}"
            );
            want += r as usize;
        }
        assert_eq!(c.count(Some(&f), &deadline).unwrap(), want, "count: {fj}");
        matched += want;
        total += docs.len();
    }
    // The filters are neither all-pass nor all-fail.
    let share = matched as f64 / total as f64;
    assert!((0.1..0.9).contains(&share), "{share}");
}

#[test]
fn the_rules_on_chosen_payloads() {
    let cases = [
        // (payload, filter, matches)
        // Integers past 2^53 compare exactly in every form of match.
        (
            json!({"a": 9_007_199_254_740_993i64}),
            json!({"must": [{"key": "a", "match": {"any": [9_007_199_254_740_992i64]}}]}),
            false,
        ),
        (
            json!({"a": 9_007_199_254_740_993i64}),
            json!({"must": [{"key": "a", "match": {"any": [9_007_199_254_740_993i64]}}]}),
            true,
        ),
        (
            json!({"a": 9_007_199_254_740_993i64}),
            json!({"must": [{"key": "a", "match": {"except": [9_007_199_254_740_993i64]}}]}),
            false,
        ),
        (
            json!({"a": i64::MAX}),
            json!({"must": [{"key": "a", "match": {"any": [i64::MAX]}}]}),
            true,
        ),
        (
            json!({"a": 9_007_199_254_740_992.0}),
            json!({"must": [{"key": "a", "match": {"value": 9_007_199_254_740_993i64}}]}),
            false,
        ),
        (json!({"a": null}), json!({"is_null": {"key": "a"}}), true),
        (
            json!({"a": [null]}),
            json!({"is_null": {"key": "a"}}),
            false,
        ),
        (json!({}), json!({"is_null": {"key": "a"}}), false),
        (json!({}), json!({"is_empty": {"key": "a"}}), true),
        (json!({"a": []}), json!({"is_empty": {"key": "a"}}), true),
        (json!({"a": [1]}), json!({"is_empty": {"key": "a"}}), false),
        (
            json!({"a": [{"b": 1}, {"b": 2}]}),
            json!({"must": [{"key": "a[].b", "match": {"value": 2}}]}),
            true,
        ),
        (
            json!({"a": "red"}),
            json!({"must": [{"key": "a", "match": {"except": ["red", "blue"]}}]}),
            false,
        ),
        (
            json!({"a": ["red", "green"]}),
            json!({"must": [{"key": "a", "match": {"except": ["red"]}}]}),
            true,
        ),
        (
            json!({"a": null}),
            json!({"must": [{"key": "a", "match": {"except": ["red"]}}]}),
            false,
        ),
        (
            json!({}),
            json!({"must": [{"key": "a", "match": {"except": ["red"]}}]}),
            false,
        ),
        (
            json!({"a": 2.5}),
            json!({"must": [{"key": "a", "match": {"value": 2.5}}]}),
            true,
        ),
        (
            json!({"a": 2}),
            json!({"must": [{"key": "a", "match": {"value": 2.0}}]}),
            true,
        ),
        (
            json!({"a": "the quick fox"}),
            json!({"must": [{"key": "a", "match": {"text": "quick f"}}]}),
            true,
        ),
        (
            json!({"a": [1, 2, 3]}),
            json!({"must": [{"key": "a", "values_count": {"gt": 2}}]}),
            true,
        ),
        (
            json!({"a": 1}),
            json!({"must": [{"key": "a", "values_count": {"gt": 1}}]}),
            false,
        ),
        (
            json!({"a": 1, "b": 2}),
            json!({"min_should": {"conditions": [{"key": "a", "match": {"value": 1}}, {"key": "b", "match": {"value": 3}}, {"has_id": [7]}], "min_count": 2}}),
            true,
        ),
        (
            json!({"a": 1, "b": 2}),
            json!({"min_should": {"conditions": [{"key": "a", "match": {"value": 1}}, {"key": "b", "match": {"value": 3}}], "min_count": 2}}),
            false,
        ),
        // `nested`: both conditions in the same element, unlike a plain key.
        (
            json!({"d": [{"food": "meat", "likes": false}, {"food": "veg", "likes": true}]}),
            json!({"must": [{"nested": {"key": "d", "filter": {"must": [{"key": "food", "match": {"value": "meat"}}, {"key": "likes", "match": {"value": true}}]}}}]}),
            false,
        ),
        (
            json!({"d": [{"food": "meat", "likes": false}, {"food": "veg", "likes": true}]}),
            json!({"must": [{"key": "d[].food", "match": {"value": "meat"}}, {"key": "d[].likes", "match": {"value": true}}]}),
            true,
        ),
        (
            json!({"d": [{"food": "meat", "likes": true}]}),
            json!({"must": [{"nested": {"key": "d[]", "filter": {"must": [{"key": "food", "match": {"value": "meat"}}, {"key": "likes", "match": {"value": true}}]}}}]}),
            true,
        ),
    ];
    for (doc, fj, want) in cases {
        let clauses = ["must", "should", "must_not", "min_should"];
        let fj = if clauses.iter().any(|c| fj.get(c).is_some()) {
            fj
        } else {
            json!({"must": [fj]})
        };
        let f = Filter::from_json(&fj).unwrap();
        let m = doc.as_object().unwrap();
        assert_eq!(f.matches(&PointId::Num(7), Some(m)), want, "{fj} on {doc}");
        assert_eq!(ref_filter(&fj, 7, &doc), want, "reference: {fj} on {doc}");
    }
}

#[test]
fn what_is_not_supported_is_refused_by_name() {
    for (fj, says) in [
        (
            json!({"must": [{"key": "g", "geo_radius": {"center": {"lat": 0, "lon": 0}, "radius": 1}}]}),
            "geo_radius",
        ),
        (
            json!({"must": [{"key": "g", "geo_bounding_box": {}}]}),
            "geo_bounding_box",
        ),
        (
            json!({"must": [{"key": "g", "geo_polygon": {}}]}),
            "geo_polygon",
        ),
        (json!({"must": [{"has_vector": "v"}]}), "has_vector"),
        (
            json!({"must": [{"key": "d", "range": {"gt": "2024-01-01T00:00:00Z"}}]}),
            "datetime",
        ),
        (
            json!({"must": [{"key": "t", "match": {"text_any": "a b"}}]}),
            "text_any",
        ),
        (
            json!({"must": [{"key": "t", "match": {"phrase": "a b"}}]}),
            "phrase",
        ),
        (
            json!({"must": [{"key": "a[0].b", "match": {"value": 1}}]}),
            "[0]",
        ),
        (
            json!({"must": [{"nested": {"key": "d", "filter": {"must": [{"has_id": [1]}]}}}]}),
            "has_id",
        ),
        (
            json!({"must": [{"key": "a", "values_count": {"gt": -1}}]}),
            "whole number",
        ),
        (
            json!({"must": [{"key": "a", "match": {"text": "x".repeat(1025)}}]}),
            "1024",
        ),
        (json!({"min_should": {"conditions": []}}), "min_count"),
        (
            json!({"min_should": {"conditions": [], "min_count": 4_294_967_296u64}}),
            "min_count",
        ),
        (
            json!({"min_should": {"conditions": null, "min_count": 0}}),
            "a list of conditions",
        ),
        (json!({"must": [{}]}), "a condition needs"),
        (json!({"must": [{"has_id": null}]}), "a condition needs"),
        (
            json!({"must": [{"key": null, "geo_radius": null}]}),
            "a condition needs",
        ),
    ] {
        let e = Filter::from_json(&fj).unwrap_err().to_string();
        assert!(e.contains(says), "{fj}: {e}");
        let e = Filter::from_json_text(&fj.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{fj}: {e}");
    }
    // A filter that can only match everything says so.
    for fj in [
        json!({}),
        json!({"must": [{"must": []}]}),
        json!({"should": [{"filter": {}}, {"has_id": [1]}]}),
        json!({"min_should": {"conditions": [{"has_id": [1]}], "min_count": 0}}),
    ] {
        assert!(Filter::from_json(&fj).unwrap().is_empty(), "{fj}");
    }
    for fj in [
        json!({"must_not": [{"must": []}]}),
        json!({"should": [{"has_id": [1]}]}),
        json!({"min_should": {"conditions": [{"must": []}], "min_count": 2}}),
    ] {
        assert!(!Filter::from_json(&fj).unwrap().is_empty(), "{fj}");
    }
    // Null fields are fields not given, as clients that write every
    // optional field send them.
    let f = Filter::from_json(&json!({
        "must": [{"key": "a", "match": {"value": 1}, "range": null, "geo_radius": null, "values_count": null}],
        "should": null, "must_not": null, "min_should": null
    }))
    .unwrap();
    assert!(f.matches(&PointId::Num(1), Some(json!({"a": 1}).as_object().unwrap())));
    let f = Filter::from_json(
        &json!({"must": [{"key": "a", "range": {"gt": null, "gte": 1, "lt": null, "lte": null}}]}),
    )
    .unwrap();
    assert!(f.matches(&PointId::Num(1), Some(json!({"a": 1}).as_object().unwrap())));
}
