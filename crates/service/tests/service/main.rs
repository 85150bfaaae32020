//! The service layer with tenant callers: namespaces, isolation and
//! permissions, on real storage.

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;
use vectorizer_service::model::*;
use vectorizer_service::{Call, Caller, Permission, Service, ServiceError, ServiceOptions, Tenant};
use vectorizer_testkit::TempDir;

fn tenant(perms: &[Permission]) -> Caller {
    Caller::Tenant(Tenant {
        user_id: Uuid::new_v4(),
        access_key_id: Uuid::new_v4(),
        project_id: None,
        permissions: perms.to_vec(),
        plan: "free".into(),
    })
}

/// Admits a request of `c`.
fn call(s: &Service, c: &Caller) -> Call {
    s.admit(c.clone()).unwrap()
}

fn create(name: &str) -> CreateCollection {
    serde_json::from_value(json!({"name": name, "dimension": 2, "metric": "euclidean"})).unwrap()
}

fn upsert(id: u64, v: [f32; 2]) -> UpsertPoints {
    serde_json::from_value(json!({"points": [{"id": id, "vector": v}]})).unwrap()
}

fn search() -> Search {
    serde_json::from_value(json!({"vector": [0, 0], "limit": 10})).unwrap()
}

#[tokio::test]
async fn tenants_are_isolated() {
    let dir = TempDir::new("svc");
    let s = Arc::new(Service::open(ServiceOptions::new(dir.path())).unwrap());
    let all = [Permission::Admin];
    let (a, b) = (tenant(&all), tenant(&all));
    s.create_collection(&call(&s, &a), create("docs"))
        .await
        .unwrap();
    s.create_collection(&call(&s, &b), create("docs"))
        .await
        .unwrap();
    s.upsert(&call(&s, &a), "docs", upsert(1, [1.0, 0.0]))
        .await
        .unwrap();
    s.upsert(&call(&s, &b), "docs", upsert(2, [0.0, 1.0]))
        .await
        .unwrap();
    let ids = |r: SearchResults| r.results.iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.search(&call(&s, &a), "docs", search()).await.unwrap()),
        vec![1u64.into()]
    );
    assert_eq!(
        ids(s.search(&call(&s, &b), "docs", search()).await.unwrap()),
        vec![2u64.into()]
    );
    let names: Vec<String> = s
        .list_collections(&call(&s, &a))
        .await
        .unwrap()
        .collections
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["docs".to_owned()]);

    // Another tenant's collection answers exactly like a missing one, by
    // short name or by full name.
    s.create_collection(&call(&s, &b), create("private"))
        .await
        .unwrap();
    let missing = s
        .get_collection(&call(&s, &a), "nothing")
        .await
        .unwrap_err()
        .to_string();
    let theirs = s
        .get_collection(&call(&s, &a), "private")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        missing.replace("nothing", "X"),
        theirs.replace("private", "X")
    );
    let Caller::Tenant(tb) = &b else {
        unreachable!()
    };
    let full = tb.full_name("private");
    assert!(matches!(
        s.get_collection(&call(&s, &a), &full).await,
        Err(ServiceError::CollectionNotFound(_))
    ));
    assert!(matches!(
        s.create_collection(&call(&s, &a), create(&full)).await,
        Err(ServiceError::InvalidInput {
            code: "invalid_name",
            ..
        })
    ));
    assert!(matches!(
        s.delete_collection(&call(&s, &a), "private").await,
        Err(ServiceError::CollectionNotFound(_))
    ));
    assert_eq!(
        s.count(&call(&s, &b), "private", Count::default())
            .await
            .unwrap()
            .count,
        0
    );
    // A local caller sees plain names only as they are.
    assert!(
        s.get_collection(&call(&s, &Caller::Local), "docs")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn permissions_bound_what_a_key_does() {
    let dir = TempDir::new("svc-perm");
    let s = Arc::new(Service::open(ServiceOptions::new(dir.path())).unwrap());
    let writer = tenant(&[Permission::Read, Permission::Write]);
    let Caller::Tenant(t) = &writer else {
        unreachable!()
    };
    let reader = Caller::Tenant(Tenant {
        permissions: vec![Permission::Read],
        ..t.clone()
    });
    let deleter = Caller::Tenant(Tenant {
        permissions: vec![Permission::Delete],
        ..t.clone()
    });
    assert!(matches!(
        s.create_collection(&call(&s, &reader), create("docs"))
            .await,
        Err(ServiceError::Forbidden(_))
    ));
    s.create_collection(&call(&s, &writer), create("docs"))
        .await
        .unwrap();
    assert!(matches!(
        s.upsert(&call(&s, &reader), "docs", upsert(1, [1.0, 1.0]))
            .await,
        Err(ServiceError::Forbidden(_))
    ));
    s.upsert(&call(&s, &writer), "docs", upsert(1, [1.0, 1.0]))
        .await
        .unwrap();
    assert_eq!(
        s.search(&call(&s, &reader), "docs", search())
            .await
            .unwrap()
            .results
            .len(),
        1
    );
    assert!(matches!(
        s.search(&call(&s, &deleter), "docs", search()).await,
        Err(ServiceError::Forbidden(_))
    ));
    let del: DeletePoints = serde_json::from_value(json!({"ids": [1]})).unwrap();
    assert!(matches!(
        s.delete_points(&call(&s, &writer), "docs", del.clone())
            .await,
        Err(ServiceError::Forbidden(_))
    ));
    assert_eq!(
        s.delete_points(&call(&s, &deleter), "docs", del)
            .await
            .unwrap()
            .deleted,
        1
    );
    assert!(matches!(
        s.delete_collection(&call(&s, &writer), "docs").await,
        Err(ServiceError::Forbidden(_))
    ));
    s.delete_collection(&call(&s, &deleter), "docs")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_restart_keeps_owners_and_namespaces() {
    let dir = TempDir::new("svc-restart");
    let a = tenant(&[Permission::Admin]);
    let b = tenant(&[Permission::Admin]);
    {
        let s = Arc::new(Service::open(ServiceOptions::new(dir.path())).unwrap());
        s.create_collection(&call(&s, &a), create("docs"))
            .await
            .unwrap();
        s.create_collection(&call(&s, &b), create("docs"))
            .await
            .unwrap();
        s.upsert(&call(&s, &a), "docs", upsert(1, [1.0, 0.0]))
            .await
            .unwrap();
        s.flush().unwrap();
    }
    let s = Arc::new(Service::open(ServiceOptions::new(dir.path())).unwrap());
    let (Caller::Tenant(ta), Caller::Tenant(tb)) = (&a, &b) else {
        unreachable!()
    };
    assert!(s.belongs_to(&ta.full_name("docs"), &ta.user_id));
    assert!(!s.belongs_to(&ta.full_name("docs"), &tb.user_id));
    assert_eq!(
        s.count(&call(&s, &a), "docs", Count::default())
            .await
            .unwrap()
            .count,
        1
    );
    assert_eq!(
        s.count(&call(&s, &b), "docs", Count::default())
            .await
            .unwrap()
            .count,
        0
    );
}

/// Several users issue random interleaved operations (with restarts);
/// each user's view always equals its own reference model.
#[tokio::test]
async fn each_user_sees_exactly_its_own_model() {
    use std::collections::{BTreeMap, BTreeSet};
    use vectorizer_testkit::Rng;
    let dir = TempDir::new("svc-model");
    let users: Vec<Caller> = (0..3).map(|_| tenant(&[Permission::Admin])).collect();
    // Per user: collection -> set of point ids.
    let mut model: Vec<BTreeMap<String, BTreeSet<u64>>> = vec![BTreeMap::new(); users.len()];
    let mut s = Arc::new(Service::open(ServiceOptions::new(dir.path())).unwrap());
    let mut rng = Rng::new(77);
    let names = ["docs", "notes", "x"];
    for step in 0..1500 {
        let u = rng.below(users.len() as u64) as usize;
        let (c, m) = (&users[u], &mut model[u]);
        let name = names[rng.below(names.len() as u64) as usize];
        match rng.below(20) {
            0..3 => {
                let r = s.create_collection(&call(&s, c), create(name)).await;
                assert_eq!(r.is_ok(), !m.contains_key(name), "step {step}");
                m.entry(name.to_owned()).or_default();
            }
            3 => {
                let r = s.delete_collection(&call(&s, c), name).await;
                assert_eq!(r.is_ok(), m.remove(name).is_some(), "step {step}");
            }
            4 => {
                s.flush().unwrap();
                drop(s);
                s = Arc::new(Service::open(ServiceOptions::new(dir.path())).unwrap());
            }
            5..12 => {
                let id = rng.below(30);
                let r = s
                    .upsert(&call(&s, c), name, upsert(id, [rng.normal(), rng.normal()]))
                    .await;
                match m.get_mut(name) {
                    Some(ids) => {
                        r.unwrap();
                        ids.insert(id);
                    }
                    None => assert!(matches!(r, Err(ServiceError::CollectionNotFound(_)))),
                }
            }
            12..14 => {
                let id = rng.below(30);
                let del: DeletePoints = serde_json::from_value(json!({"ids": [id]})).unwrap();
                let r = s.delete_points(&call(&s, c), name, del).await;
                match m.get_mut(name) {
                    Some(ids) => assert_eq!(r.unwrap().deleted, ids.remove(&id) as usize),
                    None => assert!(r.is_err()),
                }
            }
            _ => {}
        }
        // The user's whole view against its model.
        let listed: BTreeSet<String> = s
            .list_collections(&call(&s, c))
            .await
            .unwrap()
            .collections
            .into_iter()
            .map(|x| x.name)
            .collect();
        assert_eq!(
            listed,
            m.keys().cloned().collect::<BTreeSet<_>>(),
            "step {step}"
        );
        for (coll, ids) in m.iter() {
            let page: Scroll = serde_json::from_value(json!({"limit": 100})).unwrap();
            let got: BTreeSet<u64> = s
                .scroll(&call(&s, c), coll, page)
                .await
                .unwrap()
                .points
                .iter()
                .map(|p| match p.id {
                    vectorizer_engine::PointId::Num(n) => n,
                    other => panic!("unexpected id {other}"),
                })
                .collect();
            assert_eq!(&got, ids, "step {step}: user {u} collection {coll}");
        }
    }
}

/// 10,000 collections of 100 tenants: after a restart, start-up, listing,
/// usage, quota figures and metrics open none of them; a search opens its
/// own only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_collections_cost_nothing_until_used() {
    const TENANTS: usize = 100;
    const EACH: usize = 100;
    let dir = TempDir::new("svc-scale");
    let options = || ServiceOptions {
        max_open_collections: Some(16),
        ..ServiceOptions::new(dir.path())
    };
    let callers: Vec<Caller> = (0..TENANTS).map(|_| tenant(&[Permission::Admin])).collect();
    {
        let s = Arc::new(Service::open(options()).unwrap());
        let mut tasks = Vec::new();
        for c in callers.clone() {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..EACH {
                    s.create_collection(&call(&s, &c), create(&format!("c{i}")))
                        .await
                        .unwrap();
                }
                s.upsert(&call(&s, &c), "c7", upsert(1, [1.0, 0.0]))
                    .await
                    .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(s.residency().open <= 16 + TENANTS, "{:?}", s.residency());
        s.flush().unwrap();
    }
    let s = Arc::new(Service::open(options()).unwrap());
    assert_eq!(s.health().collections, TENANTS * EACH);
    let user = |c: &Caller| match c {
        Caller::Tenant(t) => t.user_id,
        _ => unreachable!(),
    };
    for c in &callers {
        let listed = s.list_collections(&call(&s, c)).await.unwrap();
        assert_eq!(listed.collections.len(), EACH);
        let u = s.usage(&call(&s, c)).await.unwrap();
        assert_eq!((u.collections, u.vectors), (EACH, 1));
        // What a quota check counts.
        let q = s.usage_of(&user(c));
        assert_eq!((q.collections, q.vectors), (EACH as u64, 1));
        assert!(q.bytes > 0);
        let d = s.get_collection(&call(&s, c), "c7").await.unwrap();
        assert!(!d.loaded && d.points == 1);
    }
    assert_eq!(s.totals().0, TENANTS * EACH);
    assert_eq!(s.usage_by_owner().len(), TENANTS);
    assert_eq!(s.residency().opens, 0, "nothing was opened");
    let hits = s
        .search(&call(&s, &callers[3]), "c7", search())
        .await
        .unwrap();
    assert_eq!(hits.results.len(), 1);
    assert_eq!(s.residency().opens, 1);
    assert!(
        s.get_collection(&call(&s, &callers[3]), "c7")
            .await
            .unwrap()
            .loaded
    );
}
