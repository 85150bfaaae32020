#!/usr/bin/env python3
"""Runs the engine benchmark, then hnswlib (M=16, ef_construction=100) on the
same vectors in the same run, and prints the ratio of single-thread QPS at
equal recall, and of resident memory, for the engine's float and int8
(quantized, rescored) collections, on each set (two Gaussian mixtures and
the hard set: anisotropic clusters of very different sizes under a random
rotation). It also prints what searches with defaults (no `ef`: the breadth
each collection tuned for recall@10 = 0.95) get.

Search speed on a shared machine drifts by tens of percent over seconds, so
the head-to-head QPS figures are taken in turns: ROUNDS rounds, each
measuring the engine (a fresh `vectorizer-bench engine-search`, on the
collections the engine run left) and then hnswlib, over every ef; each side
keeps its best pass. Both sides get the same number of passes.

    python3 scripts/bench_hnswlib.py [--out bench-out] [--quick] [--skip-engine] [--rounds N]

Needs `hnswlib` and `numpy` from PyPI (installed on first use).
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EFS = [10, 16, 24, 32, 48, 64, 128, 256, 512]
TARGET = 0.95


def ensure_deps():
    try:
        import hnswlib  # noqa: F401
        import numpy  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "hnswlib", "numpy"])


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def load(data_dir):
    import numpy as np

    meta = json.load(open(os.path.join(data_dir, "meta.json")))
    n, dim, nq, k = meta["n"], meta["dim"], meta["queries"], meta["k"]
    base = np.fromfile(os.path.join(data_dir, "base.f32"), dtype="<f4").reshape(n, dim)
    queries = np.fromfile(os.path.join(data_dir, "queries.f32"), dtype="<f4").reshape(nq, dim)
    truth = np.fromfile(os.path.join(data_dir, "truth.i32"), dtype="<i4").reshape(nq, k)
    return meta, base, queries, truth


def space(metric):
    return {"euclidean": "l2", "cosine": "cosine", "dot": "ip"}[metric]


def open_only(path, metric, dim):
    """Child mode: load a saved index and report the RSS it added."""
    import hnswlib

    before = rss_bytes()
    t = time.perf_counter()
    idx = hnswlib.Index(space=space(metric), dim=dim)
    idx.load_index(path)
    secs = time.perf_counter() - t
    print(json.dumps({"open_seconds": secs, "rss_growth_bytes": rss_bytes() - before}))


PASSES = 2  # per round and ef, on each side


def build_hnswlib(data_dir):
    import hnswlib
    import numpy as np

    meta, base, queries, truth = load(data_dir)
    idx = hnswlib.Index(space=space(meta["metric"]), dim=meta["dim"])
    idx.init_index(max_elements=meta["n"], M=16, ef_construction=100, random_seed=1)
    t = time.perf_counter()
    idx.add_items(base, np.arange(meta["n"]), num_threads=2)
    build = time.perf_counter() - t
    path = os.path.join(data_dir, "hnswlib.bin")
    idx.save_index(path)
    out = subprocess.check_output([sys.executable, __file__, "--open-only", path, meta["metric"], str(meta["dim"])])
    opened = json.loads(out)
    return {"index": idx, "queries": queries, "truth": truth, "k": meta["k"], "build_seconds": build,
            "rss_bytes": opened["rss_growth_bytes"], "restart_seconds": opened["open_seconds"]}


def search_hnswlib(h):
    """One round: every ef, best of PASSES."""
    idx, queries, truth = h["index"], h["queries"], h["truth"]
    rows = []
    for ef in EFS:
        idx.set_ef(ef)
        secs = float("inf")
        for _ in range(PASSES):
            t = time.perf_counter()
            labels, _ = idx.knn_query(queries, k=h["k"], num_threads=1)
            secs = min(secs, time.perf_counter() - t)
        hits = sum(len(set(labels[i]) & set(truth[i])) for i in range(len(queries)))
        rows.append({"ef": ef, "recall": hits / truth.size, "qps_1": len(queries) / secs})
    return rows


def search_engine(out_dir):
    """One round of the engine: every dataset and ef, best of PASSES."""
    cmd = [os.path.join(ROOT, "target", "release", "vectorizer-bench"), "engine-search", out_dir,
           "--passes", str(PASSES), "--json"]
    rows = {}
    for line in subprocess.check_output(cmd, cwd=ROOT, text=True).splitlines():
        r = json.loads(line)
        rows.setdefault((r["dataset"], r.get("variant", "plain")), []).append(r)
    return rows


def keep_best(best, rows):
    """Merges a round into the best figures so far, per ef."""
    by_ef = {r["ef"]: r for r in best}
    for r in rows:
        if r["ef"] not in by_ef or r["qps_1"] > by_ef[r["ef"]]["qps_1"]:
            by_ef[r["ef"]] = r
    return [by_ef[ef] for ef in sorted(by_ef)]


def qps_at(rows, target):
    """QPS at exactly `target` recall, interpolated between the two ef rows
    around it (recall rises with ef). None if the target is never reached."""
    rows = sorted(rows, key=lambda r: r["ef"])
    for lo, hi in zip(rows, rows[1:]):
        if lo["recall"] < target <= hi["recall"]:
            f = (target - lo["recall"]) / (hi["recall"] - lo["recall"])
            return lo["qps_1"] + f * (hi["qps_1"] - lo["qps_1"])
    return rows[0]["qps_1"] if rows and rows[0]["recall"] >= target else None


def at_target(rows):
    """The fastest row whose recall reaches the target."""
    ok = [r for r in rows if r["recall"] >= TARGET]
    return max(ok, key=lambda r: r["qps_1"]) if ok else None


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--open-only":
        open_only(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-out"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-engine", action="store_true", help="reuse the last engine run's figures and data")
    ap.add_argument("--rounds", type=int, default=5, help="turns each side takes at search")
    args = ap.parse_args()
    ensure_deps()
    if not args.skip_engine:
        cmd = ["cargo", "run", "--release", "-q", "-p", "vectorizer-bench", "--", "engine", "--out", args.out]
        if args.quick:
            cmd.append("--quick")
        subprocess.check_call(cmd, cwd=ROOT)
    else:
        subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "vectorizer-bench"], cwd=ROOT)
    engine = json.load(open(os.path.join(args.out, "engine.json")))["engine"]
    hnsw = {ours["dataset"]: build_hnswlib(os.path.join(args.out, ours["dataset"], "data")) for ours in engine}
    ours_best = {(name, v): [] for name in hnsw for v in ("plain", "int8")}
    theirs_best = {name: [] for name in hnsw}
    for r in range(args.rounds):
        for key, rows in search_engine(args.out).items():
            ours_best[key] = keep_best(ours_best.get(key, []), rows)
        for name, h in hnsw.items():
            theirs_best[name] = keep_best(theirs_best[name], search_hnswlib(h))
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
    print()
    print(f"== Vectorizer engine vs hnswlib (M=16, ef_construction=100), single-thread search, "
          f"best of {args.rounds} rounds x {PASSES} passes each, in turns ==")
    for ours in engine:
        name = ours["dataset"]
        theirs = dict(hnsw[name])
        theirs["search"] = theirs_best[name]
        ours = dict(ours)
        ours["search"] = ours_best[(name, "plain")]
        int8 = dict(ours.get("int8") or {})
        int8["search"] = ours_best.get((name, "int8"), [])
        print(f"[{name}] build: vectorizer {ours['build_seconds']:.2f} s, hnswlib {theirs['build_seconds']:.2f} s (2 threads each)")
        print(f"[{name}]  ef  | vectorizer recall  QPS     | hnswlib recall  QPS     | QPS ratio")
        for a, b in zip(ours["search"], theirs["search"]):
            print(f"[{name}] {a['ef']:>4} | {a['recall']:.4f} {a['qps_1']:>9.0f}      | {b['recall']:.4f} {b['qps_1']:>9.0f}   | {a['qps_1'] / b['qps_1']:.2f}")
        a, b = at_target(ours["search"]), at_target(theirs["search"])
        if a and b:
            print(f"[{name}] at recall@10 >= {TARGET}: vectorizer {a['qps_1']:.0f} QPS (ef={a['ef']}, recall {a['recall']:.4f}), "
                  f"hnswlib {b['qps_1']:.0f} QPS (ef={b['ef']}, recall {b['recall']:.4f}): ratio {a['qps_1'] / b['qps_1']:.2f}")
        else:
            print(f"[{name}] one side never reached recall {TARGET}")
        qa, qb = qps_at(ours["search"], TARGET), qps_at(theirs["search"], TARGET)
        if qa and qb:
            print(f"[{name}] interpolated at recall@10 = {TARGET}: vectorizer {qa:.0f} QPS, hnswlib {qb:.0f} QPS: ratio {qa / qb:.2f}")
        print(f"[{name}] resident memory after loading: vectorizer {ours['rss_bytes'] / 2**20:.1f} MiB, hnswlib {theirs['rss_bytes'] / 2**20:.1f} MiB: "
              f"ratio {ours['rss_bytes'] / max(theirs['rss_bytes'], 1):.2f}")
        print(f"[{name}] restart: vectorizer {ours['restart_seconds']:.3f} s, hnswlib load_index {theirs['restart_seconds']:.3f} s")
        if int8["search"]:
            print(f"[{name}]  ef  | int8 recall  QPS     | hnswlib recall  QPS     | QPS ratio")
            for a, b in zip(int8["search"], theirs["search"]):
                print(f"[{name}] {a['ef']:>4} | {a['recall']:.4f} {a['qps_1']:>9.0f} | {b['recall']:.4f} {b['qps_1']:>9.0f}   | {a['qps_1'] / b['qps_1']:.2f}")
            qa, qb = qps_at(int8["search"], TARGET), qps_at(theirs["search"], TARGET)
            if qa and qb:
                print(f"[{name}] int8 interpolated at recall@10 = {TARGET}: {qa:.0f} QPS, hnswlib {qb:.0f} QPS: ratio {qa / qb:.2f}")
            else:
                print(f"[{name}] int8 or hnswlib never reached recall {TARGET}")
            print(f"[{name}] int8 resident memory after loading: {int8['rss_bytes'] / 2**20:.1f} MiB "
                  f"(vectors {int8['vector_bytes'] / 2**20:.1f} MiB), hnswlib {theirs['rss_bytes'] / 2**20:.1f} MiB: "
                  f"ratio {int8['rss_bytes'] / max(theirs['rss_bytes'], 1):.2f}")
        for variant, d in (ours.get("defaults") or {}).items():
            print(f"[{name}] {variant} with defaults (no ef): tuned ef {d['ef']}, recall@10 {d['recall']:.4f} "
                  f"(estimate {d['estimate']:.4f}), {d['qps_1']:.0f} QPS; tuned {d['tuned_after_seconds']:.1f} s after opening")


if __name__ == "__main__":
    main()
