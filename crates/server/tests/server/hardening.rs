//! A hostile tenant against the server, over real HTTP: work that would
//! hold locks or threads, inputs that multiply work or memory, answers that
//! multiply bytes, and quota races. Another tenant, `/health` and refusals
//! must keep answering within a bound while it runs.
//!
//! Latency bound: 1 s for any of the other tenant's requests while the
//! attack runs for 4 s (without isolation they wait for the attack's end).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vectorizer_engine::Limits;
use vectorizer_hub::store::Plan;
use vectorizer_service::ShareOptions;

use crate::common::{AppOptions, TestApp};
use crate::hub_auth::{auth, bearer, hub, key, send, status};

/// How long any request of the victim may take during an attack.
const BOUND: Duration = Duration::from_secs(1);

/// Resident memory of this process, in MiB.
fn rss_mib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        / 1024
}

/// A filter within every bound that still costs every point its 256
/// conditions: none matches, so `should` tries them all.
fn heavy_filter() -> Value {
    let conds: Vec<Value> = (0..256)
        .map(|i| {
            let any: Vec<i64> = (0..64).map(|j| -1 - i * 64 - j).collect();
            json!({"key": "t", "match": {"any": any}})
        })
        .collect();
    json!({"should": conds})
}

fn batch(first: u64, n: u64) -> Value {
    json!({"points": (first..first + n)
        .map(|i| json!({"id": i, "vector": [1.0, i as f32 + 1.0], "payload": {"t": i}}))
        .collect::<Vec<_>>()})
}

struct Tenants {
    app: Arc<TestApp>,
    a_read: String,
    a_admin: String,
    b: String,
    _hub: crate::hub_auth::Hub,
}

/// Tenant A with 300,000 points in `big`; tenant B with 100 in `small`.
async fn two_tenants(share: ShareOptions, timeout: Duration) -> Tenants {
    let hub = hub().await;
    hub.store
        .create_plan(Plan {
            name: "big".into(),
            max_collections: 10,
            max_vectors: 1_000_000,
            max_storage_bytes: 1 << 32,
        })
        .unwrap();
    let ua = hub.store.create_user("a@example.com", "big").unwrap().id;
    let ub = hub.store.create_user("b@example.com", "big").unwrap().id;
    let (a_read, _) = key(&hub.store, ua, &["read"], None);
    let (a_admin, _) = key(&hub.store, ua, &["admin"], None);
    let (b, _) = key(&hub.store, ub, &["admin"], None);
    let app = Arc::new(TestApp::build(AppOptions {
        auth: Some(auth(hub.addr, Duration::from_secs(600))),
        share,
        limits: Limits {
            max_batch: 10_000,
            max_limit: 1000,
            max_payload_bytes: 1024,
            max_answer_bytes: 32 << 20,
        },
        max_body: 32 << 20,
        request_timeout: timeout,
        ..AppOptions::default()
    }));
    for (k, name) in [(&a_admin, "big"), (&b, "small")] {
        let made = json!({"name": name, "dimension": 2, "metric": "euclidean"});
        assert_eq!(
            status(&app, "POST", "/collections", bearer(k), Some(made)).await,
            201
        );
    }
    // Small batches, each well within the short request timeout. On a
    // loaded machine one may still outlast it (503, the write going on):
    // an upsert is idempotent, so it is sent again.
    for i in 0..150 {
        let mut tries = 0;
        loop {
            let s = status(
                &app,
                "POST",
                "/collections/big/points",
                bearer(&a_admin),
                Some(batch(i * 2_000, 2_000)),
            )
            .await;
            if s == 200 {
                break;
            }
            tries += 1;
            assert!(s == 503 && tries < 20, "loading got {s}");
        }
    }
    let s = status(
        &app,
        "POST",
        "/collections/small/points",
        bearer(&b),
        Some(batch(0, 100)),
    )
    .await;
    assert_eq!(s, 200);
    Tenants {
        app,
        a_read,
        a_admin,
        b,
        _hub: hub,
    }
}

/// Runs the victim's requests for `d`; returns the slowest of each kind.
async fn victim(app: Arc<TestApp>, b: String, d: Duration) -> (Duration, Duration, Duration) {
    let (mut search, mut health, mut refused) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let end = Instant::now() + d;
    let q = json!({"vector": [1.0, 5.0], "limit": 3});
    while Instant::now() < end {
        let t = Instant::now();
        let (s, body) = send(
            &app,
            "POST",
            "/collections/small/search",
            bearer(&b),
            Some(q.clone()),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        search = search.max(t.elapsed());
        let t = Instant::now();
        assert_eq!(status(&app, "GET", "/health", None, None).await, 200);
        health = health.max(t.elapsed());
        let t = Instant::now();
        assert_eq!(status(&app, "GET", "/collections", None, None).await, 401);
        refused = refused.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (search, health, refused)
}

/// A tenant fills its share with long filtered reads, writes that wait for
/// the write lock, and quick searches: the runtime never waits for the
/// collection's lock, so the other tenant, `/health` and 401s answer
/// within the bound; the attacker gets 429 (share full) or 503 (its own
/// deadline), and its work stops at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_at_its_limits_slows_only_itself() {
    let share = ShareOptions {
        max_in_flight: 8,
        tenant_workers: 2,
        ..ShareOptions::default()
    };
    let t = two_tenants(share, Duration::from_millis(400)).await;
    let rss_before = rss_mib();
    let count = json!({"filter": heavy_filter()});
    // Alone, one heavy count outlives its deadline.
    let started = Instant::now();
    let (s, b) = send(
        &t.app,
        "POST",
        "/collections/big/points/count",
        bearer(&t.a_read),
        Some(count.clone()),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (503, Some("timeout")),
        "{b}"
    );
    eprintln!("heavy count cut off after {:?}", started.elapsed());

    let attack = Duration::from_secs(4);
    let attackers: Vec<_> = (0..16u64)
        .map(|i| {
            let (app, r, w, count) = (
                t.app.clone(),
                t.a_read.clone(),
                t.a_admin.clone(),
                count.clone(),
            );
            tokio::spawn(async move {
                let end = Instant::now() + attack;
                let mut codes = Vec::new();
                while Instant::now() < end {
                    let (s, _) = match i % 4 {
                        0 | 1 => {
                            send(
                                &app,
                                "POST",
                                "/collections/big/points/count",
                                bearer(&r),
                                Some(count.clone()),
                            )
                            .await
                        }
                        2 => {
                            send(
                                &app,
                                "POST",
                                "/collections/big/points",
                                bearer(&w),
                                Some(batch(i * 7, 50)),
                            )
                            .await
                        }
                        _ => {
                            send(
                                &app,
                                "POST",
                                "/collections/big/search",
                                bearer(&r),
                                Some(json!({"vector": [1.0, 2.0], "limit": 5})),
                            )
                            .await
                        }
                    };
                    codes.push(s);
                }
                codes
            })
        })
        .collect();
    let (search, health, refused) = victim(t.app.clone(), t.b.clone(), attack).await;
    let mut codes = Vec::new();
    for a in attackers {
        codes.extend(a.await.unwrap());
    }
    eprintln!(
        "victim's slowest: search {search:?}, health {health:?}, 401 {refused:?}; attacker: {} requests, {} refused 429, {} cut off 503",
        codes.len(),
        codes.iter().filter(|c| **c == 429).count(),
        codes.iter().filter(|c| **c == 503).count()
    );
    assert!(search < BOUND && health < BOUND && refused < BOUND);
    assert!(
        codes.iter().all(|c| [200, 429, 503].contains(c)),
        "{codes:?}"
    );
    assert!(codes.contains(&429) && codes.contains(&503));
    // The attacker's work stopped with its requests: its share is free at once.
    let started = Instant::now();
    let (s, b) = send(
        &t.app,
        "POST",
        "/collections/big/points/count",
        bearer(&t.a_read),
        Some(json!({})),
    )
    .await;
    assert_eq!((s, b["count"].as_u64()), (200, Some(300_000)));
    assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
    let grown = rss_mib().saturating_sub(rss_before);
    assert!(grown < 300, "memory grew {grown} MiB");
}

/// A client that hangs up stops its work: the tenant's only worker is free
/// again long before the abandoned count would have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_stops_when_its_client_goes_away() {
    let share = ShareOptions {
        max_in_flight: 8,
        tenant_workers: 1,
        ..ShareOptions::default()
    };
    let t = two_tenants(share, Duration::from_secs(30)).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let gone = client
            .post(t.app.url("/collections/big/points/count"))
            .bearer_auth(&t.a_read)
            .json(&json!({"filter": heavy_filter()}))
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(gone.is_err(), "the count should outlast 300 ms");
    }
    let started = Instant::now();
    let s = status(
        &t.app,
        "POST",
        "/collections/big/points/count",
        bearer(&t.a_read),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200);
    eprintln!(
        "worker free again {:?} after three abandoned counts",
        started.elapsed()
    );
    assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
}

/// Every input dimension that multiplies work is bounded, and a filter of
/// many megabytes is refused after reading one bound's worth of it.
#[tokio::test]
async fn inputs_that_multiply_work_are_bounded() {
    let app = TestApp::build(AppOptions {
        max_body: 32 << 20,
        ..AppOptions::default()
    });
    let made = json!({"name": "c", "dimension": 2, "metric": "dot"});
    assert_eq!(app.call("POST", "/collections", Some(made)).await.0, 201);
    let count = |filter: Value| json!({"filter": filter});
    let nested = (0..12).fold(json!({"must": []}), |f, _| json!({"must": [f]}));
    let cases = [
        (
            "1,025 values in any",
            count(json!({"must": [{"key": "a", "match": {"any": (0..1025).collect::<Vec<_>>()}}]})),
        ),
        (
            "257 conditions",
            count(
                json!({"should": (0..257).map(|i| json!({"key": "a", "match": {"value": i}})).collect::<Vec<_>>()}),
            ),
        ),
        (
            "10,001 ids",
            count(json!({"must": [{"has_id": (0..10_001).collect::<Vec<_>>()}]})),
        ),
        ("12 levels of nesting", count(nested)),
    ];
    for (what, body) in cases {
        let (s, b) = app
            .call("POST", "/collections/c/points/count", Some(body))
            .await;
        assert_eq!(
            (s.as_u16(), b["error"]["code"].as_str()),
            (400, Some("invalid_filter")),
            "{what}: {b}"
        );
    }
    // About 30 MiB of `any` values.
    let huge: String = format!(
        r#"{{"filter": {{"must": [{{"key": "a", "match": {{"any": [{}]}}}}]}}}}"#,
        (0..3_000_000)
            .map(|i| (i % 10).to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(huge.len() > 5 << 20);
    let before = rss_mib();
    let started = Instant::now();
    let (s, _, b) = app
        .send(
            "POST",
            "/collections/c/points/count",
            Some(("application/json", huge.into_bytes())),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (400, Some("invalid_filter"))
    );
    assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
    let grown = rss_mib().saturating_sub(before);
    assert!(grown < 100, "memory grew {grown} MiB for a refused filter");
    // Nothing changed.
    let (_, c) = app
        .call("POST", "/collections/c/points/count", Some(json!({})))
        .await;
    assert_eq!(c["count"], 0);
}

/// Repeated ids come back once; answers past the answer limit are refused
/// before they are built; large answers within it arrive whole.
#[tokio::test]
async fn answers_are_bounded_by_size() {
    let app = TestApp::build(AppOptions {
        limits: Limits {
            max_batch: 10_000,
            max_limit: 1000,
            max_payload_bytes: 1024,
            max_answer_bytes: 4 << 20,
        },
        max_body: 32 << 20,
        ..AppOptions::default()
    });
    let dim = 4096;
    let made = json!({"name": "wide", "dimension": dim, "metric": "dot"});
    assert_eq!(app.call("POST", "/collections", Some(made)).await.0, 201);
    let pts: Vec<Value> = (0..200)
        .map(|i| json!({"id": i, "vector": vec![1.0 + i as f32; dim]}))
        .collect();
    let (s, _) = app
        .call(
            "POST",
            "/collections/wide/points",
            Some(json!({"points": pts})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = app
        .call(
            "POST",
            "/collections/wide/points/get",
            Some(json!({"ids": vec![7; 10_000], "with_vector": true})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b["points"].as_array().unwrap().len(),
        1,
        "one record per distinct id"
    );
    let too_big = [
        (
            "/collections/wide/points/get",
            json!({"ids": (0..200).collect::<Vec<_>>(), "with_vector": true}),
        ),
        (
            "/collections/wide/search",
            json!({"vector": vec![1.0; dim], "limit": 200, "with_vector": true}),
        ),
        (
            "/collections/wide/points/scroll",
            json!({"limit": 200, "with_vector": true}),
        ),
        (
            "/collections/wide/search/batch",
            json!({"searches": (0..10).map(|_| json!({"vector": vec![1.0; dim], "limit": 20, "with_vector": true})).collect::<Vec<_>>()}),
        ),
    ];
    for (path, body) in too_big {
        let (s, b) = app.call("POST", path, Some(body)).await;
        assert_eq!(
            (s.as_u16(), b["error"]["code"].as_str()),
            (422, Some("answer_too_large")),
            "{path}"
        );
    }
    // Without vectors the same asks are small.
    let (s, b) = app
        .call(
            "POST",
            "/collections/wide/points/get",
            Some(json!({"ids": (0..200).collect::<Vec<_>>()})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["points"].as_array().map(Vec::len)),
        (200, Some(200))
    );
    // A large answer within the limit streams in full.
    let (s, headers, b) = app
        .send(
            "POST",
            "/collections/wide/points/get",
            Some((
                "application/json",
                json!({"ids": (0..40).collect::<Vec<_>>(), "with_vector": true})
                    .to_string()
                    .into_bytes(),
            )),
        )
        .await;
    assert_eq!(s, 200);
    let pts = b["points"].as_array().unwrap();
    assert_eq!(pts.len(), 40);
    assert_eq!(pts[39]["vector"].as_array().unwrap().len(), dim);
    assert!(
        headers["content-length"]
            .to_str()
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 256 << 10
    );
}

/// Upserts of existing ids racing deletes of them and inserts of new ones
/// never leave more vectors than the plan allows; and what the storage
/// quota counts covers what the data takes on disk after a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_under_races_and_after_snapshots() {
    let hub = hub().await;
    hub.store
        .create_plan(Plan {
            name: "tight".into(),
            max_collections: 5,
            max_vectors: 100,
            max_storage_bytes: 200_000,
        })
        .unwrap();
    let user = hub.store.create_user("r@example.com", "tight").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    let app = Arc::new(TestApp::with_auth(auth(hub.addr, Duration::from_secs(600))));
    let made = json!({"name": "c", "dimension": 2, "metric": "euclidean"});
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&k), Some(made)).await,
        201
    );
    assert_eq!(
        status(
            &app,
            "POST",
            "/collections/c/points",
            bearer(&k),
            Some(batch(0, 50))
        )
        .await,
        200
    );
    let mut max_seen = 0;
    for round in 0..15u64 {
        let jobs = [0u64, 1, 2].map(|job| {
            let (app, k) = (app.clone(), k.clone());
            tokio::spawn(async move {
                match job {
                    0 => {
                        send(
                            &app,
                            "POST",
                            "/collections/c/points",
                            bearer(&k),
                            Some(batch(0, 50)),
                        )
                        .await
                        .0
                    }
                    1 => {
                        send(
                            &app,
                            "POST",
                            "/collections/c/points/delete",
                            bearer(&k),
                            Some(json!({"ids": (0..50).collect::<Vec<_>>()})),
                        )
                        .await
                        .0
                    }
                    _ => {
                        send(
                            &app,
                            "POST",
                            "/collections/c/points",
                            bearer(&k),
                            Some(batch(1000 + round * 50, 50)),
                        )
                        .await
                        .0
                    }
                }
            })
        });
        for j in jobs {
            assert!([200, 429].contains(&j.await.unwrap()));
        }
        let (_, n) = send(
            &app,
            "POST",
            "/collections/c/points/count",
            bearer(&k),
            Some(json!({})),
        )
        .await;
        let n = n["count"].as_u64().unwrap();
        max_seen = max_seen.max(n);
        assert!(n <= 100, "round {round}: {n} vectors on a 100-vector plan");
    }
    eprintln!("at most {max_seen} vectors seen on a plan of 100");

    // Storage: another user fills a collection until refused, then the
    // collection is snapshotted.
    hub.store
        .create_plan(Plan {
            name: "bytes".into(),
            max_collections: 5,
            max_vectors: 1_000_000,
            max_storage_bytes: 200_000,
        })
        .unwrap();
    let user = hub.store.create_user("s@example.com", "bytes").unwrap().id;
    let (k, _) = key(&hub.store, user, &["admin"], None);
    let made = json!({"name": "s", "dimension": 8, "metric": "euclidean"});
    assert_eq!(
        status(&app, "POST", "/collections", bearer(&k), Some(made)).await,
        201
    );
    let eight = |first: u64| json!({"points": (first..first + 20).map(|i| json!({"id": i, "vector": vec![i as f32 + 1.0; 8]})).collect::<Vec<_>>()});
    let mut first = 0;
    loop {
        let (s, b) = send(
            &app,
            "POST",
            "/collections/s/points",
            bearer(&k),
            Some(eight(first)),
        )
        .await;
        if s == 429 {
            assert_eq!(b["error"]["quota"], "storage", "{b}");
            break;
        }
        assert_eq!(s, 200);
        first += 20;
        assert!(first < 100_000);
    }
    app.service.flush().unwrap();
    let (_, d) = send(&app, "GET", "/collections/s", bearer(&k), None).await;
    let bytes = d["bytes"].as_u64().unwrap();
    eprintln!("{first} points stored; {bytes} bytes on disk after a snapshot, limit 200000");
    assert!(
        bytes <= 200_000,
        "{bytes} bytes on disk over a 200000-byte plan"
    );
    assert!(
        first >= 200,
        "the estimate should not be wildly pessimistic: {first} points"
    );
}
