//! Filtered search against the exact filtered answer, at several
//! selectivities, and never fewer results than exist.

use std::collections::BTreeMap;

use serde_json::json;
use vectorizer_engine::{CollectionConfig, Filter, Metric, Point, PointId, SearchRequest};
use vectorizer_testkit::{exact_top_k, gaussian_mixture, recall};

use crate::common::{TempDir, kind, open};

const N: usize = 20_000;

#[test]
fn filtered_search_matches_exact() {
    let dim = 128;
    let metric = Metric::Cosine;
    let (base, _) = gaussian_mixture(N, dim, 50, 0.5, 11);
    let (queries, _) = gaussian_mixture(100, dim, 50, 0.6, 11);
    let dir = TempDir::new("filtered");
    let db = open(&dir);
    let c = db
        .create_collection("f", CollectionConfig::new(dim, metric), BTreeMap::new())
        .unwrap();
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
        assert_eq!(c.count(Some(&filter)), matching, "{name}: count");
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
