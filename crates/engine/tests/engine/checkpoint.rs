//! Checkpoints and imports: a collection's state taken as snapshot files
//! and made a collection again (new, or in place of one), with the same
//! points, payloads and search answers; damaged files are refused with
//! nothing published.

use std::collections::BTreeMap;

use serde_json::json;
use vectorizer_engine::collection::Collection;
use vectorizer_engine::{CollectionConfig, Deadline, Metric, Point, PointId, SearchRequest};
use vectorizer_testkit::Rng;

use crate::common::{TempDir, contents, open};

fn answers(c: &Collection, queries: &[Vec<f32>]) -> Vec<Vec<(PointId, f32)>> {
    queries
        .iter()
        .map(|q| {
            c.search(&SearchRequest {
                vector: q.clone(),
                limit: 10,
                filter: None,
                ef: None,
                score_threshold: None,
                with_payload: false,
                with_vector: false,
                deadline: Deadline::none(),
                exact: false,
            })
            .unwrap()
            .into_iter()
            .map(|h| (h.id, h.score))
            .collect()
        })
        .collect()
}

#[test]
fn a_checkpoint_imports_as_the_same_collection() {
    let dir = TempDir::new("checkpoint");
    let db = open(&dir);
    let config = CollectionConfig::new(8, Metric::Cosine);
    let c = db
        .create_collection("src", config.clone(), BTreeMap::new())
        .unwrap();
    let mut rng = Rng::new(7);
    let mut vec8 = || (0..8).map(|_| rng.normal()).collect::<Vec<f32>>();
    let pts: Vec<Point> = (0..2000u64)
        .map(|i| Point {
            id: PointId::Num(i),
            vector: vec8(),
            payload: Some(json!({"i": i}).as_object().unwrap().clone()),
        })
        .collect();
    c.upsert(pts).unwrap();
    c.delete((0..100).map(PointId::Num).collect()).unwrap();
    c.wait_indexed();
    let queries: Vec<Vec<f32>> = (0..20).map(|_| vec8()).collect();
    let (want, want_answers) = (contents(&c), answers(&c, &queries));

    let out = TempDir::new("checkpoint-out");
    let taken = c.checkpoint(&out.0).unwrap();
    assert_eq!(taken.points, 1900);
    // Later writes are not in it.
    c.upsert(vec![Point {
        id: PointId::Num(5000),
        vector: vec8(),
        payload: None,
    }])
    .unwrap();

    let meta = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
    let copy = db
        .import_collection(
            "copy",
            config.clone(),
            meta.clone(),
            &out.0,
            taken.seq,
            false,
        )
        .unwrap();
    assert_eq!(contents(&copy), want);
    assert_eq!(answers(&copy, &queries), want_answers);
    assert_eq!(copy.metadata(), meta);

    // The name is taken: refused unless replacing.
    let again = TempDir::new("checkpoint-again");
    let t2 = copy.checkpoint(&again.0).unwrap();
    assert!(
        db.import_collection(
            "src",
            config.clone(),
            BTreeMap::new(),
            &again.0,
            t2.seq,
            false
        )
        .is_err()
    );
    let old = db.collection("src").unwrap();
    let replaced = db
        .import_collection(
            "src",
            config.clone(),
            BTreeMap::new(),
            &again.0,
            t2.seq,
            true,
        )
        .unwrap();
    assert_eq!(contents(&replaced), want);
    // The replaced collection takes no more writes.
    assert!(
        old.upsert(vec![Point {
            id: PointId::Num(6000),
            vector: vec8(),
            payload: None,
        }])
        .is_err()
    );
    drop((old, replaced, copy, c));
    drop(db);

    // All of it survives a restart.
    let db = open(&dir);
    assert_eq!(contents(&db.collection("copy").unwrap()), want);
    assert_eq!(contents(&db.collection("src").unwrap()), want);
    assert_eq!(
        answers(&db.collection("copy").unwrap(), &queries),
        want_answers
    );

    // Files that do not decode: refused, nothing published, the old one
    // still served. (A flipped byte inside a vector decodes: catching it
    // is the job of the checksums a backup keeps.)
    for damage in [
        |b: &mut Vec<u8>| b.truncate(b.len() / 3),
        // A header that claims far more nodes than the file holds.
        |b: &mut Vec<u8>| b[24..32].copy_from_slice(&u64::MAX.to_le_bytes()),
    ] {
        let bad = TempDir::new("checkpoint-bad");
        let c = db.collection("copy").unwrap();
        let t = c.checkpoint(&bad.0).unwrap();
        let path = bad.0.join("index.hnsw");
        let mut bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
        assert!(
            db.import_collection("copy", config.clone(), BTreeMap::new(), &bad.0, t.seq, true)
                .is_err()
        );
        assert!(
            db.import_collection(
                "fresh",
                config.clone(),
                BTreeMap::new(),
                &bad.0,
                t.seq,
                false
            )
            .is_err()
        );
        assert!(db.collection("fresh").is_err());
        assert_eq!(contents(&db.collection("copy").unwrap()), want);
    }
    assert!(
        std::fs::read_dir(dir.0.join("trash"))
            .unwrap()
            .next()
            .is_none(),
        "nothing left behind"
    );
}

/// A rename keeps every point and payload, takes the new metadata, and
/// survives a restart; one cut short after its metadata named the new
/// name is completed at the next open.
#[test]
fn a_rename_keeps_the_data_and_completes_after_a_crash() {
    let dir = TempDir::new("rename");
    let db = open(&dir);
    let config = CollectionConfig::new(4, Metric::Euclidean);
    let c = db
        .create_collection("plain", config.clone(), BTreeMap::new())
        .unwrap();
    let pts: Vec<Point> = (0..300u64)
        .map(|i| Point {
            id: PointId::Num(i),
            vector: vec![i as f32, 1.0, 2.0, 3.0],
            payload: Some(json!({"i": i}).as_object().unwrap().clone()),
        })
        .collect();
    c.upsert(pts).unwrap();
    let want = contents(&c);
    let meta = BTreeMap::from([("owner_id".to_owned(), "u".to_owned())]);
    let renamed = db
        .rename_collection("plain", "user_u:plain", meta.clone())
        .unwrap();
    assert_eq!(contents(&renamed), want);
    assert_eq!(renamed.metadata(), meta);
    assert!(db.collection("plain").is_err());
    // The old handle takes no writes.
    assert!(
        c.upsert(vec![Point {
            id: PointId::Num(9),
            vector: vec![0.0; 4],
            payload: None
        }])
        .is_err()
    );
    assert!(
        db.rename_collection("user_u:plain", "user_u:plain", BTreeMap::new())
            .is_err()
    );
    drop((c, renamed));
    drop(db);
    let db = open(&dir);
    assert_eq!(contents(&db.collection("user_u:plain").unwrap()), want);
    drop(db);
    // Cut short after the catalog changed: the collection's own copy
    // still names the old name. The catalog is the truth, and the copy is
    // repaired when the collection opens.
    let moved = vectorizer_engine::database::collection_dir(&dir.0, "user_u:plain")
        .unwrap()
        .join("collection.json");
    let raw = std::fs::read_to_string(&moved).unwrap();
    std::fs::write(&moved, raw.replace("\"user_u:plain\"", "\"plain\"")).unwrap();
    let db = open(&dir);
    assert!(db.collection("plain").is_err());
    assert_eq!(contents(&db.collection("user_u:plain").unwrap()), want);
    assert!(
        std::fs::read_to_string(&moved)
            .unwrap()
            .contains("\"user_u:plain\"")
    );
}
