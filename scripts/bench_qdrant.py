"""The Qdrant dialect's cost over the native API: the same searches on the
same collection, through `POST /collections/{name}/search` and through
`POST /collections/{name}/points/query`, in turns, one client at a time.
Prints QPS and p50/p99 latency of each.

    python3 scripts/bench_qdrant.py NATIVE_URL QDRANT_URL [--points 20000] [--dim 128] [--queries 2000]

Start the server with `vectorizer serve --qdrant` (a release build) first.
Needs only the standard library.
"""

import argparse
import json
import random
import statistics
import time
import urllib.request


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("native")
    ap.add_argument("qdrant")
    ap.add_argument("--points", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=2_000)
    args = ap.parse_args()
    rng = random.Random(5)
    name = "bench-qdrant"
    try:
        call(args.native, "DELETE", f"/collections/{name}")
    except Exception:
        pass
    call(args.qdrant, "PUT", f"/collections/{name}", {"vectors": {"size": args.dim, "distance": "Cosine"}})
    for start in range(0, args.points, 1000):
        pts = [{"id": i, "vector": [rng.gauss(0, 1) for _ in range(args.dim)], "payload": {"g": i % 10}}
               for i in range(start, min(start + 1000, args.points))]
        call(args.qdrant, "PUT", f"/collections/{name}/points?wait=true", {"points": pts})
    while call(args.native, "GET", f"/collections/{name}")["unindexed_points"] > 0:
        time.sleep(0.5)
    queries = [[rng.gauss(0, 1) for _ in range(args.dim)] for _ in range(args.queries)]
    forms = {
        "native  /search": (args.native, f"/collections/{name}/search",
                            lambda q: {"vector": q, "limit": 10, "with_payload": True}),
        "qdrant  /points/query": (args.qdrant, f"/collections/{name}/points/query",
                                  lambda q: {"query": q, "limit": 10, "with_payload": True}),
        "native  /search + filter": (args.native, f"/collections/{name}/search",
                                     lambda q: {"vector": q, "limit": 10, "filter": {"must": [{"key": "g", "match": {"value": 3}}]}}),
        "qdrant  /points/query + filter": (args.qdrant, f"/collections/{name}/points/query",
                                           lambda q: {"query": q, "limit": 10, "filter": {"must": [{"key": "g", "match": {"value": 3}}]}}),
    }
    times = {k: [] for k in forms}
    for q in queries[:50]:  # warm up
        for base, path, body in forms.values():
            call(base, "POST", path, body(q))
    for q in queries:
        for k, (base, path, body) in forms.items():
            t = time.perf_counter()
            call(base, "POST", path, body(q))
            times[k].append(time.perf_counter() - t)
    print(f"{args.points} points x {args.dim} dims, {args.queries} searches each, limit 10, one client, in turns")
    for k, ts in times.items():
        ts.sort()
        print(f"{k:32s} {len(ts) / sum(ts):8.0f} QPS   p50 {statistics.median(ts) * 1e3:6.2f} ms   "
              f"p99 {ts[int(len(ts) * 0.99)] * 1e3:6.2f} ms")
    call(args.native, "DELETE", f"/collections/{name}")


if __name__ == "__main__":
    main()
