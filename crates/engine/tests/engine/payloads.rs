//! Payload changes and deletion by filter: applied under the writer lock,
//! logged, and the same after a restart (log replay) and after a snapshot.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use vectorizer_engine::{
    CollectionConfig, Deadline, Filter, Metric, PayloadChange, Point, PointId, Selection,
};

use crate::common::{TempDir, contents, open};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn payload_changes_survive_restarts_and_snapshots() {
    let dir = TempDir::new("payloads");
    let mut config = CollectionConfig::new(2, Metric::Euclidean);
    config.payload_index = vec!["g".into()];
    let none = Deadline::none();
    let g = |v: i64| {
        Filter::from_json(&json!({"must": [{"key": "g", "match": {"value": v}}]})).unwrap()
    };
    let expected = {
        let db = open(&dir);
        let c = db.create_collection("c", config, BTreeMap::new()).unwrap();
        let pts = (0..50u64)
            .map(|i| Point {
                id: PointId::Num(i),
                vector: vec![i as f32, 1.0],
                payload: Some(obj(json!({"g": i % 5, "keep": i}))),
            })
            .collect();
        c.upsert(pts).unwrap();
        let admit = |_| Ok::<_, vectorizer_engine::EngineError>(());
        let (n, ()) = c
            .update_payloads(
                &Selection::Filter(g(0)),
                &PayloadChange::Set(obj(json!({"g": 9}))),
                &none,
                admit,
            )
            .unwrap();
        assert_eq!(n, 10);
        let ids = Selection::Ids(vec![PointId::Num(1), PointId::Num(1), PointId::Num(77)]);
        let (n, ()) = c
            .update_payloads(
                &ids,
                &PayloadChange::Overwrite(obj(json!({"only": 1}))),
                &none,
                admit,
            )
            .unwrap();
        assert_eq!(n, 1);
        let (n, ()) = c
            .update_payloads(
                &Selection::Filter(g(2)),
                &PayloadChange::DeleteKeys(vec!["keep".into()]),
                &none,
                admit,
            )
            .unwrap();
        assert_eq!(n, 10);
        assert_eq!(
            c.delete_selected(&Selection::Filter(g(3)), &none).unwrap(),
            10
        );
        // The index answers with the new values, not the old ones.
        assert_eq!(c.count(Some(&g(0)), &none).unwrap(), 0);
        assert_eq!(c.count(Some(&g(9)), &none).unwrap(), 10);
        assert_eq!(c.count(Some(&g(1)), &none).unwrap(), 9);
        contents(&c)
    };
    // Replayed from the log.
    let db = open(&dir);
    let c = db.collection("c").unwrap();
    assert_eq!(contents(&c), expected);
    assert_eq!(c.count(Some(&g(9)), &none).unwrap(), 10);
    assert_eq!(expected[&PointId::Num(1)].1, Some(obj(json!({"only": 1}))));
    assert_eq!(expected[&PointId::Num(2)].1, Some(obj(json!({"g": 2}))));
    // Loaded from a snapshot.
    c.flush().unwrap();
    drop(c);
    drop(db);
    let db = open(&dir);
    let c = db.collection("c").unwrap();
    assert_eq!(contents(&c), expected);
    assert_eq!(c.len(), 40);
}
