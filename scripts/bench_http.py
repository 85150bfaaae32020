#!/usr/bin/env python3
"""HTTP load benchmark: Vectorizer and a Chroma server, driven by the same
native load generator (`vectorizer-bench http`) on the same seeded
100,000 x 128 data, in one run; prints the ratios.

Both servers run side by side. Each is loaded once (the acknowledged insert
rate), then the search phases take turns: ROUNDS rounds, each measuring
Vectorizer and then Chroma at 1, 4 and 16 clients; each side keeps its
best round per client count. The machine's speed drifts over seconds, and
turns put both sides under the same drift.

    python3 scripts/bench_http.py [--n 100000] [--out bench-out] [--rounds 3] [--skip-chroma]

Needs `chromadb` from PyPI for `chroma run` (installed on first use).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RELEASE = os.path.join(ROOT, "target", "release")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {seconds} s")


def drive(args, target, url, search_only=False):
    cmd = [os.path.join(RELEASE, "vectorizer-bench"), "http", "--target", target, "--url", url, "--n", str(args.n), "--out", args.out]
    if search_only:
        cmd.append("--search-only")
    subprocess.check_call(cmd, cwd=ROOT)
    suffix = "-search" if search_only else ""
    return json.load(open(os.path.join(args.out, f"http-{target}{suffix}.json")))


def start_vectorizer(stack):
    data = tempfile.mkdtemp(prefix="vz-bench-")
    env = dict(os.environ, VECTORIZER_LOGGING__LEVEL="warn")
    proc = subprocess.Popen([os.path.join(RELEASE, "vectorizer"), "serve", "--port", "0", "--data-dir", data],
                            stdout=subprocess.PIPE, text=True, env=env)
    stack.append((proc, data))
    line = proc.stdout.readline().strip()
    # Keep draining, so that nothing it prints later can block it.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return line.rsplit(" ", 1)[-1]


def start_chroma(stack):
    if shutil.which("chroma") is None:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "chromadb"])
    data = tempfile.mkdtemp(prefix="chroma-bench-")
    port = free_port()
    proc = subprocess.Popen(["chroma", "run", "--path", data, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.append((proc, data))
    wait_http(f"http://127.0.0.1:{port}/api/v2/heartbeat")
    return f"http://127.0.0.1:{port}"


def keep_best(best, result):
    """Merges a round's search rows into the best so far, per client count."""
    rows = {r["clients"]: r for r in best.get("search", [])}
    for r in result["search"]:
        if r["clients"] not in rows or r["qps"] > rows[r["clients"]]["qps"]:
            rows[r["clients"]] = r
    best["search"] = [rows[c] for c in sorted(rows)]
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-out"))
    ap.add_argument("--rounds", type=int, default=3, help="turns each side takes at search")
    ap.add_argument("--skip-chroma", action="store_true")
    args = ap.parse_args()
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "vectorizer-server", "-p", "vectorizer-bench"], cwd=ROOT)
    stack = []
    try:
        ours_url = start_vectorizer(stack)
        theirs_url = None if args.skip_chroma else start_chroma(stack)
        ours = drive(args, "vectorizer", ours_url)
        theirs = None if theirs_url is None else drive(args, "chroma", theirs_url)
        for r in range(1, args.rounds):
            print(f"-- search round {r + 1} of {args.rounds}", file=sys.stderr)
            ours = keep_best(ours, drive(args, "vectorizer", ours_url, search_only=True))
            if theirs_url is not None:
                theirs = keep_best(theirs, drive(args, "chroma", theirs_url, search_only=True))
    finally:
        for proc, data in stack:
            proc.terminate()
            proc.wait(timeout=30)
            shutil.rmtree(data, ignore_errors=True)
    print()
    print(f"== Vectorizer vs Chroma over HTTP (same load generator, same data; searches best of {args.rounds} rounds, in turns) ==")
    for a in ours["search"]:
        print(f"vectorizer {a['clients']:>2} clients: {a['qps']:.0f} QPS (p50 {a['p50_ms']:.2f} ms, p99 {a['p99_ms']:.2f} ms, recall {a['recall']:.4f})")
    if theirs is None:
        return
    print(f"acknowledged inserts: vectorizer {ours['insert_per_second']:.0f}/s, chroma {theirs['insert_per_second']:.0f}/s: "
          f"ratio {ours['insert_per_second'] / theirs['insert_per_second']:.1f}")
    for a, b in zip(ours["search"], theirs["search"]):
        print(f"{a['clients']:>2} clients: vectorizer {a['qps']:.0f} QPS (p50 {a['p50_ms']:.2f} ms, p99 {a['p99_ms']:.2f} ms, recall {a['recall']:.4f}); "
              f"chroma {b['qps']:.0f} QPS (p50 {b['p50_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms, recall {b['recall']:.4f}): "
              f"ratio {a['qps'] / b['qps']:.1f}")


if __name__ == "__main__":
    main()
