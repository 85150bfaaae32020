//! A hostile tenant against the real binary, where two features meet: MCP
//! messages meeting memory and the runtime. Each test does what the attack
//! does and asserts the bound that holds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vectorizer_testkit::TempDir;
use vectorizer_testkit::http::Client;

use crate::e2e::{Server, spawn};

/// Peak and current resident memory of process `pid`, in MiB.
fn memory_mib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            / 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

const MCP_HEADERS: [(&str, &str); 2] = [
    ("content-type", "application/json"),
    ("accept", "application/json, text/event-stream"),
];

fn mcp(c: &mut Client, body: &[u8]) -> (u16, Value) {
    let r = c.request("POST", "/mcp", Some(body), &MCP_HEADERS).unwrap();
    (r.status, r.json())
}

/// A `search_batch` tool call of about `bytes` bytes: 100 searches with
/// long vectors.
fn search_batch(bytes: usize) -> Vec<u8> {
    let per = bytes / 100 / 10;
    let vector: Vec<String> = (0..per)
        .map(|i| format!("0.{:07}", i % 9_999_999))
        .collect();
    let search = format!("{{\"vector\":[{}],\"limit\":10}}", vector.join(","));
    let searches = vec![search; 100].join(",");
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"search_batch\",\"arguments\":{{\"collection\":\"c\",\"searches\":[{searches}]}}}}}}"
    )
    .into_bytes()
}

fn serve(data: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let args = ["serve", "--port", "0", "--data-dir", data.to_str().unwrap()];
    spawn(&args, env, "vectorizer listening on http://", None)
}

/// Two connections sending 12 MiB tool calls as fast as they are answered:
/// the server's memory grows by a small multiple of what is in flight
/// (not by the ~80x of a generic JSON tree), and `/health` keeps
/// answering.
#[test]
fn large_mcp_tool_calls_cost_their_size_not_a_value_tree() {
    let data = TempDir::new("attack-mcp-memory");
    let server = serve(
        data.path(),
        &[("VECTORIZER_MCP__MAX_BODY_BYTES", "16777216")],
    );
    let addr: SocketAddr = server.addr;
    let mut c = Client::new(addr);
    let r = c
        .json(
            "POST",
            "/collections",
            &json!({"name": "c", "dimension": 4, "metric": "cosine"}),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let message = std::sync::Arc::new(search_batch(12 << 20));
    assert!(message.len() > 12 << 20);
    // One call first, so that the baseline holds what any call allocates
    // once (thread stacks, buffers).
    let (status, answer) = mcp(&mut c, &message);
    assert_eq!(status, 200, "{answer}");
    let (_, before) = memory_mib(server.child.id());

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..2)
        .map(|_| {
            let message = message.clone();
            std::thread::spawn(move || {
                let mut c = Client::new(addr);
                for _ in 0..6 {
                    let (status, answer) = mcp(&mut c, &message);
                    assert_eq!(status, 200, "{answer}");
                    // Refused for its vectors' length, after being read whole.
                    let e = &answer["result"]["structuredContent"]["error"];
                    let refused =
                        e["code"] == "dimension_mismatch" || answer["error"]["code"] == -32602;
                    assert!(refused, "{answer}");
                }
            })
        })
        .collect();
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut health = Client::new(addr);
            let mut slowest = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let r = health.request("GET", "/health", None, &[]).unwrap();
                assert_eq!(r.status, 200);
                slowest = slowest.max(t.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            slowest
        })
    };
    for a in attackers {
        a.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let slowest = watcher.join().unwrap();
    let (peak, _) = memory_mib(server.child.id());
    let grown = peak.saturating_sub(before);
    eprintln!("peak memory grew by {grown} MiB; /health at most {slowest:?}");
    // In flight: two 12 MiB bodies, their raw arguments and typed vectors
    // (read into a tree of JSON values, the same calls grow it by 340 MiB).
    assert!(grown < 200, "peak memory grew by {grown} MiB");
    assert!(slowest < Duration::from_secs(1), "/health took {slowest:?}");
}

/// The default MCP body limit is sized for agents; only tool calls may be
/// longer than a protocol message.
#[test]
fn mcp_bodies_are_bounded() {
    let data = TempDir::new("attack-mcp-limits");
    let server = serve(data.path(), &[]);
    let mut c = Client::new(server.addr);
    let (status, answer) = mcp(&mut c, &search_batch(3 << 20));
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large", "{answer}");
    let padding = "x".repeat(100 << 10);
    let ping = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"_meta\":{{\"pad\":\"{padding}\"}}}}}}"
    );
    let (status, answer) = mcp(&mut c, ping.as_bytes());
    assert_eq!(status, 413, "{answer}");
    // A tool name of any length comes back cut short.
    let name = "n".repeat(100 << 10);
    let call = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{{\"name\":\"{name}\",\"arguments\":{{}}}}}}"
    );
    let r = c
        .request("POST", "/mcp", Some(call.as_bytes()), &MCP_HEADERS)
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.len() < 1024, "{} bytes came back", r.body.len());
    assert_eq!(r.json()["error"]["code"], -32602);
}

/// A tool call is held to what rmcp holds every other message to: a known
/// protocol version, JSON-RPC 2.0; and its arguments to what REST holds a
/// body to: no name given twice.
#[test]
fn tool_calls_meet_the_protocol_and_the_rest_rules() {
    let data = TempDir::new("attack-mcp-protocol");
    let server = serve(data.path(), &[]);
    let mut c = Client::new(server.addr);
    let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_collections","arguments":{}}}"#;
    let mut headers = MCP_HEADERS.to_vec();
    headers.push(("mcp-protocol-version", "1999-01-01"));
    let r = c.request("POST", "/mcp", Some(call), &headers).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "unsupported_protocol_version");
    let old = br#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"list_collections","arguments":{}}}"#;
    let (status, _) = mcp(&mut c, old);
    assert!((400..500).contains(&status), "{status}");
    let (status, answer) = mcp(&mut c, call);
    assert_eq!(status, 200, "{answer}");
    let twice = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create_collection","arguments":{"name":"a","name":"b","dimension":2,"metric":"dot"}}}"#;
    let (status, answer) = mcp(&mut c, twice);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate argument `name`"),
        "{answer}"
    );
    let r = c.request("GET", "/collections", None, &[]).unwrap();
    assert_eq!(r.json()["collections"], serde_json::json!([]));
}
