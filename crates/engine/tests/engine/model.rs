//! Model-based test: random sequences of operations, including restarts and
//! invalid batches, checked after every step against a plain in-memory
//! reference.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use vectorizer_engine::{
    CollectionConfig, Database, Deadline, EngineError, EngineOptions, Filter, Metric, Point,
    PointId, SearchRequest, With,
};
use vectorizer_testkit::{Kind, Rng, score};

use crate::common::{Contents, TempDir, contents, kind, open_with};

struct RefColl {
    dim: usize,
    metric: Metric,
    points: Contents,
}

const NAMES: [&str; 3] = ["alpha", "beta", "user_1:gamma"];

fn random_id(rng: &mut Rng) -> PointId {
    if rng.below(8) == 0 {
        PointId::Uuid(uuid_from(rng.below(40)))
    } else {
        PointId::Num(rng.below(400))
    }
}

fn uuid_from(n: u64) -> uuid::Uuid {
    uuid::Uuid::from_u64_pair(0xabcd, n)
}

fn random_vec(rng: &mut Rng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.normal()).collect()
}

fn random_payload(rng: &mut Rng) -> Option<Map<String, Value>> {
    match rng.below(4) {
        0 => None,
        _ => Some(json!({"c": rng.below(5), "t": if rng.below(2) == 0 { "a" } else { "b" }, "n": {"x": rng.below(3)}}).as_object().unwrap().clone()),
    }
}

fn random_filter(rng: &mut Rng) -> Option<Value> {
    match rng.below(5) {
        0 => None,
        1 => Some(json!({"must": [{"key": "c", "match": {"value": rng.below(5)}}]})),
        2 => Some(
            json!({"must": [{"key": "t", "match": {"any": ["a"]}}], "must_not": [{"key": "n.x", "match": {"value": 1}}]}),
        ),
        3 => Some(
            json!({"should": [{"key": "c", "range": {"gte": 3}}, {"has_id": [1, 2, 3, 4, 5]}]}),
        ),
        _ => Some(json!({"must": [{"key": "c", "range": {"lt": 2}}]})),
    }
}

fn check_contents(db: &Database, model: &BTreeMap<&str, RefColl>) {
    let mut names: Vec<String> = db.names().unwrap();
    names.sort();
    let mut want: Vec<String> = model.keys().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
    // Usage by namespace, kept as things change, equals the model's.
    for ns in ["", "user_1"] {
        let (n, points) = model
            .iter()
            .filter(|(name, _)| vectorizer_engine::catalog::namespace(name) == ns)
            .fold((0, 0), |(n, p), (_, c)| (n + 1, p + c.points.len() as u64));
        let u = db.usage(ns).unwrap();
        assert_eq!((u.collections, u.points), (n, points), "namespace {ns:?}");
        let listed: u64 = db
            .list("")
            .unwrap()
            .iter()
            .filter(|l| vectorizer_engine::catalog::namespace(&l.name) == ns)
            .map(|l| l.stats.disk_bytes)
            .sum();
        assert_eq!(u.disk_bytes, listed, "namespace {ns:?}");
    }
    for (name, r) in model {
        let c = db.collection(name).unwrap();
        assert_eq!(c.len(), r.points.len());
        assert_eq!(&contents(&c), &r.points, "collection {name}");
    }
}

fn run(seed: u64, steps: usize, max_open: Option<usize>) {
    let mut rng = Rng::new(seed);
    let dir = TempDir::new("model");
    let options = EngineOptions {
        max_open_collections: max_open.unwrap_or(EngineOptions::default().max_open_collections),
        ..EngineOptions::default()
    };
    let open = |dir: &TempDir| open_with(&dir.0, options.clone());
    let mut db = open(&dir);
    let mut model: BTreeMap<&str, RefColl> = BTreeMap::new();
    for step in 0..steps {
        let name = NAMES[rng.below(NAMES.len() as u64) as usize];
        match rng.below(100) {
            0..4 => {
                let dim = 1 + rng.below(8) as usize;
                let metric =
                    [Metric::Cosine, Metric::Euclidean, Metric::Dot][rng.below(3) as usize];
                let res =
                    db.create_collection(name, CollectionConfig::new(dim, metric), BTreeMap::new());
                if model.contains_key(name) {
                    assert!(matches!(res, Err(EngineError::CollectionExists(_))));
                } else {
                    res.unwrap();
                    model.insert(
                        name,
                        RefColl {
                            dim,
                            metric,
                            points: BTreeMap::new(),
                        },
                    );
                }
            }
            4..6 => {
                let res = db.drop_collection(name);
                if model.remove(name).is_some() {
                    res.unwrap();
                } else {
                    assert!(matches!(res, Err(EngineError::CollectionNotFound(_))));
                }
            }
            6..9 => {
                if rng.below(2) == 0 {
                    db.flush().unwrap();
                }
                drop(db);
                db = open(&dir);
                check_contents(&db, &model);
            }
            _ => {
                let Some(r) = model.get_mut(name) else {
                    assert!(db.collection(name).is_err());
                    continue;
                };
                let c = db.collection(name).unwrap();
                match rng.below(10) {
                    0..4 => {
                        let n = 1 + rng.below(60) as usize;
                        let mut pts: Vec<Point> = (0..n)
                            .map(|_| Point {
                                id: random_id(&mut rng),
                                vector: random_vec(&mut rng, r.dim),
                                payload: random_payload(&mut rng),
                            })
                            .collect();
                        let mut seen = std::collections::HashSet::new();
                        pts.retain(|p| seen.insert(p.id));
                        // Now and then spoil the batch: it must leave no trace.
                        let spoil = rng.below(6);
                        match spoil {
                            0 => pts[0].vector.push(1.0),
                            1 => {
                                let last = pts.len() - 1;
                                pts[last].vector[0] = f32::NAN;
                            }
                            2 => pts.push(pts[0].clone()),
                            _ => {}
                        }
                        let res = c.upsert(pts.clone());
                        if spoil <= 2 {
                            assert!(res.is_err(), "spoiled batch accepted");
                        } else {
                            assert_eq!(res.unwrap(), pts.len());
                            for p in pts {
                                r.points.insert(p.id, (p.vector, p.payload));
                            }
                        }
                    }
                    4..6 => {
                        let ids: Vec<PointId> = (0..1 + rng.below(30))
                            .map(|_| random_id(&mut rng))
                            .collect();
                        let mut uniq = ids.clone();
                        uniq.sort();
                        uniq.dedup();
                        let existed = uniq.iter().filter(|i| r.points.contains_key(i)).count();
                        assert_eq!(c.delete(ids).unwrap(), existed);
                        for id in uniq {
                            r.points.remove(&id);
                        }
                    }
                    6..8 => {
                        let q = random_vec(&mut rng, r.dim);
                        let k = 1 + rng.below(15) as usize;
                        let fj = random_filter(&mut rng);
                        let filter = fj.as_ref().map(|f| Filter::from_json(f).unwrap());
                        let matching: Vec<_> = r
                            .points
                            .iter()
                            .filter(|(id, (_, p))| {
                                filter.as_ref().is_none_or(|f| f.matches(id, p.as_ref()))
                            })
                            .collect();
                        let mut scored: Vec<(f32, PointId)> = matching
                            .iter()
                            .map(|(id, (v, _))| (score(kind(r.metric), &q, v), **id))
                            .collect();
                        if matches!(kind(r.metric), Kind::Euclidean | Kind::Manhattan) {
                            scored.sort_by(|a, b| a.0.total_cmp(&b.0));
                        } else {
                            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                        }
                        let hits = c
                            .search(&SearchRequest {
                                vector: q,
                                limit: k,
                                filter,
                                with_payload: true,
                                // A beam wider than the collection: this test
                                // checks semantics; recall is tested apart.
                                ef: Some(512),
                                ..Default::default()
                            })
                            .unwrap();
                        assert_eq!(hits.len(), k.min(scored.len()), "step {step}: result count");
                        for (h, (s, _)) in hits.iter().zip(&scored) {
                            assert!(
                                (h.score - s).abs() < 1e-3 * (1.0 + s.abs()),
                                "step {step}: score {} vs {}",
                                h.score,
                                s
                            );
                            assert_eq!(h.payload, r.points[&h.id].1);
                        }
                        let want: std::collections::BTreeSet<PointId> =
                            scored.iter().take(k).map(|x| x.1).collect();
                        let got: std::collections::BTreeSet<PointId> =
                            hits.iter().map(|h| h.id).collect();
                        // Ties at the k-th place may resolve either way.
                        let tie_free =
                            scored.len() <= k || (scored[k - 1].0 - scored[k].0).abs() > 1e-4;
                        if tie_free {
                            assert_eq!(got, want, "step {step}");
                        }
                    }
                    _ => {
                        let fj = random_filter(&mut rng);
                        let filter = fj.as_ref().map(|f| Filter::from_json(f).unwrap());
                        let want: Vec<PointId> = r
                            .points
                            .iter()
                            .filter(|(id, (_, p))| {
                                filter.as_ref().is_none_or(|f| f.matches(id, p.as_ref()))
                            })
                            .map(|(id, _)| *id)
                            .collect();
                        assert_eq!(
                            c.count(filter.as_ref(), &Deadline::none()).unwrap(),
                            want.len()
                        );
                        let limit = 1 + rng.below(40) as usize;
                        let mut got = Vec::new();
                        let mut from = None;
                        loop {
                            let (page, next) = c
                                .scroll(
                                    limit,
                                    from,
                                    filter.as_ref(),
                                    With::default(),
                                    &Deadline::none(),
                                )
                                .unwrap();
                            assert!(page.len() <= limit);
                            got.extend(page.iter().map(|p| p.id));
                            match next {
                                Some(n) => from = Some(n),
                                None => break,
                            }
                        }
                        assert_eq!(got, want, "step {step}: scroll");
                    }
                }
            }
        }
    }
    drop(db);
    let db = open(&dir);
    check_contents(&db, &model);
}

#[test]
fn model_based_random_operations() {
    for seed in 0..6 {
        run(seed, 600, None);
    }
}

/// The same with at most one collection open: every switch between
/// collections closes one and opens another.
#[test]
fn model_with_collections_closed_and_opened_all_the_time() {
    for seed in 10..14 {
        run(seed, 400, Some(1));
    }
}
