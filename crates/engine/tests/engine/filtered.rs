//! Filtered search against the exact filtered answer, at several
//! selectivities, and never fewer results than exist.

use std::collections::BTreeMap;

use serde_json::json;
use vectorizer_engine::{
    CollectionConfig, Deadline, Filter, Metric, Point, PointId, SearchRequest,
};
use vectorizer_testkit::{exact_top_k, gaussian_mixture, recall};

use crate::common::{TempDir, kind, open};

const N: usize = 20_000;

#[test]
fn filtered_search_matches_exact() {
    check(&[]);
}

/// The same answers with `sel` and `tag` indexed.
#[test]
fn filtered_search_matches_exact_with_payload_indexes() {
    check(&["sel", "tag"]);
}

fn check(indexed: &[&str]) {
    let dim = 128;
    let metric = Metric::Cosine;
    let (base, _) = gaussian_mixture(N, dim, 50, 0.5, 11);
    let (queries, _) = gaussian_mixture(100, dim, 50, 0.6, 11);
    let dir = TempDir::new("filtered");
    let db = open(&dir);
    let mut config = CollectionConfig::new(dim, metric);
    config.payload_index = indexed.iter().map(|s| s.to_string()).collect();
    let c = db.create_collection("f", config, BTreeMap::new()).unwrap();
    let sel = |i: usize| (i * 7919) % 1000;
    for (b, chunk) in base.chunks(1000).enumerate() {
        let pts = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let i = b * 1000 + j;
                Point {
                    id: PointId::Num(i as u64),
                    vector: v.clone(),
                    payload: Some(
                        json!({"sel": sel(i), "tag": ["x", format!("t{}", i % 3)]})
                            .as_object()
                            .unwrap()
                            .clone(),
                    ),
                }
            })
            .collect();
        c.upsert(pts).unwrap();
    }
    c.wait_indexed();
    type Pred = Box<dyn Fn(usize) -> bool>;
    let cases: Vec<(&str, serde_json::Value, Pred)> = vec![
        (
            "50%",
            json!({"must": [{"key": "sel", "range": {"lt": 500}}]}),
            Box::new(move |i| sel(i) < 500),
        ),
        (
            "5%",
            json!({"must": [{"key": "sel", "range": {"gte": 100, "lt": 150}}]}),
            Box::new(move |i| (100..150).contains(&sel(i))),
        ),
        (
            "0.1%",
            json!({"must": [{"key": "sel", "match": {"value": 7}}]}),
            Box::new(move |i| sel(i) == 7),
        ),
        (
            "5% via should/must_not",
            json!({"should": [{"key": "sel", "match": {"any": [1, 2, 3, 4, 5]}}, {"key": "sel", "range": {"gte": 900, "lt": 945}}], "must_not": [{"key": "tag", "match": {"value": "t0"}}]}),
            Box::new(move |i| {
                (matches!(sel(i), 1..=5) || (900..945).contains(&sel(i))) && i % 3 != 0
            }),
        ),
    ];
    for (name, fj, pred) in cases {
        let filter = Filter::from_json(&fj).unwrap();
        let matching = (0..N).filter(|i| pred(*i)).count();
        assert_eq!(
            c.count(Some(&filter), &Deadline::none()).unwrap(),
            matching,
            "{name}: count"
        );
        for k in [10, 50] {
            let mut total = 0.0;
            for q in &queries {
                let truth = exact_top_k(kind(metric), &base, q, k, Some(&*pred));
                let req = SearchRequest {
                    vector: q.clone(),
                    limit: k,
                    filter: Some(filter.clone()),
                    with_payload: true,
                    ..Default::default()
                };
                let hits = c.search(&req).unwrap();
                assert_eq!(hits.len(), k.min(matching), "{name} k={k}: result count");
                let got: Vec<usize> = hits
                    .iter()
                    .map(|h| {
                        let PointId::Num(n) = h.id else {
                            unreachable!()
                        };
                        assert!(
                            pred(n as usize),
                            "{name}: hit {n} does not match the filter"
                        );
                        n as usize
                    })
                    .collect();
                total += recall(&truth, &got);
            }
            let r = total / queries.len() as f64;
            assert!(r >= 0.95, "{name} k={k}: overlap {r}");
        }
    }
    // A filter matching fewer points than asked returns all of them.
    let few = Filter::from_json(&json!({"must": [{"has_id": [5, 77, 19_999, 123_456]}]})).unwrap();
    let hits = c
        .search(&SearchRequest {
            vector: queries[0].clone(),
            limit: 10,
            filter: Some(few),
            ..Default::default()
        })
        .unwrap();
    let mut ids: Vec<PointId> = hits.iter().map(|h| h.id).collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![PointId::Num(5), PointId::Num(77), PointId::Num(19_999)]
    );
}

/// Filters on indexed fields stay right through a field indexed late,
/// replacements, deletions, compaction (which renumbers keys) and a restart: counts equal a plain
/// model's, and every search returns the model's exact filtered answer.
#[test]
fn payload_indexes_follow_writes_compaction_and_restarts() {
    let dim = 16;
    let metric = Metric::Euclidean;
    let n = 4000;
    let (vectors, _) = gaussian_mixture(2 * n, dim, 20, 0.5, 5);
    let dir = TempDir::new("payload-index");
    let mut config = CollectionConfig::new(dim, metric);
    // `tag` is indexed later, over points already held.
    config.payload_index = vec!["sel".into()];
    // id -> (vector, sel, tag number)
    let mut model: BTreeMap<u64, (Vec<f32>, usize, usize)> = BTreeMap::new();
    let point = |id: u64, v: &[f32], sel: usize, tag: usize| Point {
        id: PointId::Num(id),
        vector: v.to_vec(),
        payload: Some(
            json!({"sel": sel, "tag": ["x", format!("t{tag}")]})
                .as_object()
                .unwrap()
                .clone(),
        ),
    };
    let cases = [
        json!({"must": [{"key": "sel", "match": {"value": 7}}]}),
        json!({"must": [{"key": "sel", "range": {"gte": 10, "lt": 13}}]}),
        json!({"must": [{"key": "tag", "match": {"any": ["t1"]}}, {"key": "sel", "range": {"lt": 5}}]}),
        json!({"should": [{"key": "sel", "match": {"value": 3}}, {"has_id": [1, 2, 3500]}]}),
    ];
    let preds: [&dyn Fn(u64, usize, usize) -> bool; 4] = [
        &|_, s, _| s == 7,
        &|_, s, _| (10..13).contains(&s),
        &|_, s, t| t == 1 && s < 5,
        &|id, s, _| s == 3 || [1, 2, 3500].contains(&id),
    ];
    let check = |c: &vectorizer_engine::collection::Collection,
                 model: &BTreeMap<u64, (Vec<f32>, usize, usize)>,
                 when: &str| {
        let ids: Vec<u64> = model.keys().copied().collect();
        let base: Vec<Vec<f32>> = model.values().map(|m| m.0.clone()).collect();
        for (fj, pred) in cases.iter().zip(preds) {
            let f = Filter::from_json(fj).unwrap();
            let ok = |i: usize| {
                let (_, s, t) = &model[&ids[i]];
                pred(ids[i], *s, *t)
            };
            let matching = (0..ids.len()).filter(|i| ok(*i)).count();
            assert_eq!(
                c.count(Some(&f), &Deadline::none()).unwrap(),
                matching,
                "{when} {fj}: count"
            );
            for q in vectors.iter().step_by(997).take(5) {
                let truth: Vec<u64> = exact_top_k(kind(metric), &base, q, 20, Some(&ok))
                    .into_iter()
                    .map(|i| ids[i])
                    .collect();
                let hits = c
                    .search(&SearchRequest {
                        vector: q.clone(),
                        limit: 20,
                        filter: Some(f.clone()),
                        ..Default::default()
                    })
                    .unwrap();
                let got: Vec<u64> = hits
                    .iter()
                    .map(|h| match h.id {
                        PointId::Num(n) => n,
                        PointId::Uuid(_) => unreachable!(),
                    })
                    .collect();
                assert_eq!(got, truth, "{when} {fj}");
            }
        }
    };
    {
        let db = open(&dir);
        let c = db.create_collection("p", config, BTreeMap::new()).unwrap();
        let pts: Vec<Point> = (0..n as u64)
            .map(|i| {
                let (s, t) = (i as usize % 50, i as usize % 3);
                model.insert(i, (vectors[i as usize].clone(), s, t));
                point(i, &vectors[i as usize], s, t)
            })
            .collect();
        c.upsert(pts).unwrap();
        check(&c, &model, "loaded");
        assert!(c.create_payload_index("tag").unwrap());
        assert!(!c.create_payload_index("tag").unwrap(), "already indexed");
        assert!(matches!(
            c.create_payload_index("a..b"),
            Err(vectorizer_engine::EngineError::InvalidConfig(_))
        ));
        assert_eq!(c.info().config.payload_index, vec!["sel", "tag"]);
        check(&c, &model, "tag indexed");
        // Replaced points move to other values; their old postings go stale.
        let pts: Vec<Point> = (0..1000u64)
            .map(|i| {
                let v = &vectors[n + i as usize];
                let (s, t) = ((i as usize + 1) % 50, (i as usize + 1) % 3);
                model.insert(i, (v.clone(), s, t));
                point(i, v, s, t)
            })
            .collect();
        c.upsert(pts).unwrap();
        c.delete((1000..2500).map(PointId::Num).collect()).unwrap();
        (1000..2500).for_each(|i| {
            model.remove(&i);
        });
        check(&c, &model, "after updates");
        // 2,500 dead nodes against 1,500 live ones: the snapshot compacts.
        db.flush().unwrap();
        check(&c, &model, "after compaction");
    }
    let db = open(&dir);
    let c = db.collection("p").unwrap();
    assert_eq!(c.info().config.payload_index, vec!["sel", "tag"]);
    check(&c, &model, "after a restart");
}

/// Only an unfiltered, narrow search over a linked graph counts as quick
/// (callers on an async runtime run those in place).
#[test]
fn quick_searches_are_told_apart() {
    let dir = TempDir::new("quick");
    let db = open(&dir);
    let c = db
        .create_collection("q", CollectionConfig::new(4, Metric::Dot), BTreeMap::new())
        .unwrap();
    let pts = (0..500u64)
        .map(|i| Point {
            id: PointId::Num(i),
            vector: vec![1.0, i as f32, 0.5, 2.0],
            payload: Some(json!({"k": i % 2}).as_object().unwrap().clone()),
        })
        .collect();
    c.upsert(pts).unwrap();
    c.wait_indexed();
    let req = |limit, ef, filter: Option<serde_json::Value>| SearchRequest {
        vector: vec![1.0, 2.0, 3.0, 4.0],
        limit,
        ef,
        filter: filter.map(|f| Filter::from_json(&f).unwrap()),
        ..Default::default()
    };
    assert!(c.search_is_quick(&req(10, None, None)));
    assert!(c.search_is_quick(&req(10, Some(256), Some(json!({})))));
    assert!(!c.search_is_quick(&req(10, Some(257), None)));
    assert!(!c.search_is_quick(&req(1000, None, None)));
    assert!(!c.search_is_quick(&req(
        10,
        None,
        Some(json!({"must": [{"key": "k", "match": {"value": 1}}]}))
    )));
}
