#!/usr/bin/env python3
"""HTTP load benchmark: Vectorizer, then a Chroma server, driven by the same
native load generator (`vectorizer-bench http`) on the same seeded
100,000 x 128 data, in one run; prints the ratios.

    python3 scripts/bench_http.py [--n 100000] [--out bench-out] [--skip-chroma]

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


def load(args, target, url):
    cmd = [os.path.join(RELEASE, "vectorizer-bench"), "http", "--target", target, "--url", url, "--n", str(args.n), "--out", args.out]
    subprocess.check_call(cmd, cwd=ROOT)
    return json.load(open(os.path.join(args.out, f"http-{target}.json")))


def run_vectorizer(args):
    data = tempfile.mkdtemp(prefix="vz-bench-")
    env = dict(os.environ, VECTORIZER_LOGGING__LEVEL="warn")
    proc = subprocess.Popen([os.path.join(RELEASE, "vectorizer"), "serve", "--port", "0", "--data-dir", data],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline().strip()
        url = line.rsplit(" ", 1)[-1]
        return load(args, "vectorizer", url)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        shutil.rmtree(data, ignore_errors=True)


def run_chroma(args):
    if shutil.which("chroma") is None:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "chromadb"])
    data = tempfile.mkdtemp(prefix="chroma-bench-")
    port = free_port()
    proc = subprocess.Popen(["chroma", "run", "--path", data, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v2/heartbeat")
        return load(args, "chroma", f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-out"))
    ap.add_argument("--skip-chroma", action="store_true")
    args = ap.parse_args()
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "vectorizer-server", "-p", "vectorizer-bench"], cwd=ROOT)
    ours = run_vectorizer(args)
    if args.skip_chroma:
        return
    theirs = run_chroma(args)
    print()
    print("== Vectorizer vs Chroma over HTTP (same load generator, same data) ==")
    print(f"acknowledged inserts: vectorizer {ours['insert_per_second']:.0f}/s, chroma {theirs['insert_per_second']:.0f}/s: "
          f"ratio {ours['insert_per_second'] / theirs['insert_per_second']:.1f}")
    for a, b in zip(ours["search"], theirs["search"]):
        print(f"{a['clients']:>2} clients: vectorizer {a['qps']:.0f} QPS (p50 {a['p50_ms']:.2f} ms, p99 {a['p99_ms']:.2f} ms, recall {a['recall']:.4f}); "
              f"chroma {b['qps']:.0f} QPS (p50 {b['p50_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms, recall {b['recall']:.4f}): "
              f"ratio {a['qps'] / b['qps']:.1f}")


if __name__ == "__main__":
    main()
