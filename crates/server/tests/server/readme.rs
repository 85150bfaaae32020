//! The README's command blocks marked `<!-- readme-test -->` (or
//! `<!-- readme-test: needs-server -->`, run against a server started
//! first) run as written, with `vectorizer` on the PATH, in a fresh
//! directory; every answer they show as `# {...}` comes back, in order.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vectorizer_testkit::TempDir;

struct Block {
    needs_server: bool,
    script: String,
    expected: Vec<Value>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = readme.lines();
    while let Some(l) = lines.next() {
        let Some(mark) = l.strip_prefix("<!-- readme-test") else {
            continue;
        };
        assert_eq!(
            lines.next().map(str::trim),
            Some("```sh"),
            "a readme-test mark precedes a sh block"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        // Answers: a comment from `# {` or `# [` on, with its continuation
        // lines, until it parses.
        let mut expected = Vec::new();
        let mut pending = String::new();
        for l in &body {
            let text = l.trim_start().strip_prefix('#').map(str::trim);
            match text {
                Some(t) if pending.is_empty() && (t.starts_with('{') || t.starts_with('[')) => {
                    pending.push_str(t)
                }
                Some(t) if !pending.is_empty() => pending.push_str(t),
                _ => {}
            }
            if !pending.is_empty()
                && let Ok(v) = serde_json::from_str::<Value>(&pending)
            {
                expected.push(v);
                pending.clear();
            }
        }
        assert!(
            pending.is_empty(),
            "an answer in the README is not JSON: {pending}"
        );
        out.push(Block {
            needs_server: mark.contains("needs-server"),
            script: body.join("\n"),
            expected,
        });
    }
    out
}

/// Every JSON value in `text`, in order (other output is skipped).
fn values(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if rest.starts_with('{') || rest.starts_with('[') {
            let mut s = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
            if let Some(Ok(v)) = s.next() {
                out.push(v);
                i += s.byte_offset();
                continue;
            }
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn readme_blocks_run_and_answer_as_shown() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let found = blocks(&readme);
    assert!(found.len() >= 2, "the README marks its runnable blocks");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_vectorizer"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (n, block) in found.iter().enumerate() {
        let dir = TempDir::new("readme");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let server = block.needs_server.then(|| {
            let mut child = Command::new(bin)
                .args(["serve", "--port", &port.to_string(), "--data-dir"])
                .arg(dir.path().join("data"))
                .env("VECTORIZER_LOGGING__LEVEL", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "the server did not start");
                assert!(child.try_wait().unwrap().is_none(), "the server exited");
                std::thread::sleep(Duration::from_millis(20));
            }
            child
        });
        // Its own process group: a server the block starts in the
        // background is stopped with it.
        let mut child = Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", &block.script])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("B", &url)
            .env("VECTORIZER_SERVER__PORT", port.to_string())
            .env("VECTORIZER_LOGGING__LEVEL", "warn")
            .env_remove("HIVEHUB_SERVICE_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        // Read on threads: a server the block left running keeps the pipes
        // open until its group is stopped.
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "block {n} did not finish");
            std::thread::sleep(Duration::from_millis(20));
        };
        // Stop whatever the block left running.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", child.id())])
            .status();
        let stdout = reader.join().unwrap();
        let stderr = err_reader.join().unwrap();
        if let Some(mut s) = server {
            let _ = s.kill();
            let _ = s.wait();
        }
        assert!(status.success(), "block {n} failed: {status}\n{stderr}");
        let got = values(&stdout);
        let mut at = 0;
        for want in &block.expected {
            match got[at..].iter().position(|v| v == want) {
                Some(i) => at += i + 1,
                None => panic!("block {n}: the README shows {want}; the answers were {got:?}"),
            }
        }
    }
}
