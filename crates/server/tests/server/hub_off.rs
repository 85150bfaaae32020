//! The Hub-off server over a data directory that also holds tenants'
//! collections (the README's order: `serve`, then `serve --local-hub`, then
//! `serve` again on the same directory): the local namespace alone is
//! listed, served and backed up, every backup it acknowledges restores,
//! and the start says what it leaves alone.

use serde_json::{Value, json};
use vectorizer_testkit::TempDir;
use vectorizer_testkit::http::Client;

use crate::e2e::{Server, cli_ok, local_hub_user, spawn, start_local_hub, start_local_hub_logged};

fn serve(data: &std::path::Path, log: &std::path::Path) -> Server {
    let args = ["serve", "--port", "0", "--data-dir", data.to_str().unwrap()];
    spawn(&args, &[], "vectorizer listening on http://", Some(log))
}

fn call(
    c: &mut Client,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    let r = c.request(method, path, body.as_deref(), &headers).unwrap();
    (r.status, r.json())
}

fn names(list: &Value) -> Vec<String> {
    list["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_hub_off_server_serves_only_the_local_namespace() {
    let data = TempDir::new("hub-off-mixed");
    let log = data.path().join("serve.log");
    let point = json!({"points": [{"id": 1, "vector": [1.0, 0.5]}]});

    let server = serve(data.path(), &log);
    let mut c = Client::new(server.addr);
    let made = json!({"name": "mine", "dimension": 2, "metric": "cosine"});
    assert_eq!(
        call(&mut c, "POST", "/collections", Some(made), None).0,
        201
    );
    assert_eq!(
        call(
            &mut c,
            "POST",
            "/collections/mine/points",
            Some(point.clone()),
            None
        )
        .0,
        200
    );
    server.stop();

    let hub_log = data.path().join("local-hub.log");
    let server = start_local_hub_logged(data.path(), Some(&hub_log));
    let (user, key) = local_hub_user(data.path(), "a@example.com");
    let mut c = Client::new(server.addr);
    let made = json!({"name": "docs", "dimension": 2, "metric": "cosine"});
    let (s, b) = call(&mut c, "POST", "/collections", Some(made), Some(&key));
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        call(
            &mut c,
            "POST",
            "/collections/docs/points",
            Some(point),
            Some(&key)
        )
        .0,
        200
    );
    server.stop();

    let server = serve(data.path(), &log);
    let mut c = Client::new(server.addr);
    let (s, list) = call(&mut c, "GET", "/collections", None, None);
    assert_eq!((s, names(&list)), (200, vec!["mine".to_owned()]), "{list}");
    let (_, usage) = call(&mut c, "GET", "/usage", None, None);
    assert_eq!(usage["collections"], 1, "{usage}");
    let stored = format!("/collections/user_{user}:docs");
    let (s, b) = call(&mut c, "GET", &stored, None, None);
    assert_eq!(s, 400, "{b}");

    // The backup holds the local namespace only, and restores.
    let (s, made) = call(&mut c, "POST", "/api/hub/backups", Some(json!({})), None);
    assert_eq!(s, 201, "{made}");
    let held: Vec<&str> = made["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["mine"], "{made}");
    let id = made["id"].as_str().unwrap();
    let restore = json!({"backup_id": id, "rename": {"mine": "mine2"}});
    let (s, b) = call(
        &mut c,
        "POST",
        "/api/hub/backups/restore",
        Some(restore),
        None,
    );
    assert_eq!(s, 200, "{b}");
    let (_, got) = call(&mut c, "GET", "/collections/mine2", None, None);
    assert_eq!(got["points"], 1, "{got}");
    server.stop();

    // The offline check agrees.
    cli_ok(&[
        "backup",
        "verify",
        id,
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);

    // Said once at start, and the tenant's collection is where it was.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("1 collection in the data directory is in a user's namespace")
            .count(),
        1,
        "{text}"
    );
    let server = start_local_hub(data.path());
    let mut c = Client::new(server.addr);
    let (_, list) = call(&mut c, "GET", "/collections", None, Some(&key));
    assert_eq!(names(&list), ["docs"]);
    server.stop();
    // With --local-hub, nothing to warn of: the node id is `local`.
    let hub_text = std::fs::read_to_string(&hub_log).unwrap();
    assert!(!hub_text.contains("hub.node_id"), "{hub_text}");
}
