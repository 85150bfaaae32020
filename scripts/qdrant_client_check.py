"""Drives Vectorizer's Qdrant dialect with the official `qdrant-client`
(REST transport) and checks every answer against exact search and filter
evaluation computed here.

    python qdrant_client_check.py URL [API_KEY] [--prefix NAME]

Exits non-zero on the first answer that differs.
"""

import warnings
import argparse
import math
import random
import sys
import uuid

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

DIM = 8
N = 240
COLORS = ["red", "green", "blue", "ünïcødé"]

# The checks talk to a local server over plain HTTP on purpose.
warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def point_id(i):
    # Integer ids and UUIDs, mixed.
    return str(uuid.UUID(int=i + 1)) if i % 5 == 0 else i


def payload(i):
    p = {
        "color": COLORS[i % 4],
        "n": i - 100,
        "price": round(i * 0.75, 2),
        "tags": [f"t{i % 3}", "all"][: 1 + i % 2],
        "title": f"item number {i} of the {COLORS[i % 4]} kind",
        "meta": {"lang": ["en", "fr", "de"][i % 3], "deep": {"x": i % 10}},
        "items": [{"sku": f"s{i % 6}", "qty": i % 4}, {"sku": "z", "qty": 9}],
    }
    if i % 7 == 0:
        p["note"] = None
    if i % 11 == 0:
        p["items"] = []
    return p


def vector(rng):
    return [rng.uniform(-1, 1) for _ in range(DIM)]


def cosine(a, b):
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


# ---- a reference evaluation of the filters used below ----

def values(doc, key):
    """Scalars at a dotted key, lists searched element by element."""
    out = []

    def walk(v, parts):
        if isinstance(v, list):
            for x in v:
                walk(x, parts)
        elif not parts:
            if not isinstance(v, dict):
                out.append(v)
        elif isinstance(v, dict) and parts[0] in v:
            walk(v[parts[0]], parts[1:])

    walk(doc, [p.rstrip("[]") for p in key.split(".")])
    return out


def same(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


FILTERS = [
    ("match keyword",
     models.Filter(must=[models.FieldCondition(key="color", match=models.MatchValue(value="red"))]),
     lambda d: any(same(v, "red") for v in values(d, "color"))),
    ("match integer",
     models.Filter(must=[models.FieldCondition(key="n", match=models.MatchValue(value=20))]),
     lambda d: any(same(v, 20) for v in values(d, "n"))),
    ("match any",
     models.Filter(must=[models.FieldCondition(key="color", match=models.MatchAny(any=["green", "ünïcødé"]))]),
     lambda d: any(v in ("green", "ünïcødé") for v in values(d, "color"))),
    ("match except",
     models.Filter(must=[models.FieldCondition(key="tags", match=models.MatchExcept(**{"except": ["all", "t0"]}))]),
     lambda d: any(v is not None and v not in ("all", "t0") for v in values(d, "tags"))),
    ("match text",
     models.Filter(must=[models.FieldCondition(key="title", match=models.MatchText(text="blue kind"))]),
     lambda d: any(isinstance(v, str) and "blue kind" in v for v in values(d, "title"))),
    ("range on floats",
     models.Filter(must=[models.FieldCondition(key="price", range=models.Range(gte=30.5, lt=90))]),
     lambda d: any(isinstance(v, (int, float)) and 30.5 <= v < 90 for v in values(d, "price"))),
    ("range on integers",
     models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gt=-10, lte=10))]),
     lambda d: any(isinstance(v, (int, float)) and -10 < v <= 10 for v in values(d, "n"))),
    ("nested key",
     models.Filter(must=[models.FieldCondition(key="meta.lang", match=models.MatchValue(value="fr"))]),
     lambda d: "fr" in values(d, "meta.lang")),
    ("key through a list",
     models.Filter(must=[models.FieldCondition(key="items[].sku", match=models.MatchValue(value="s2"))]),
     lambda d: "s2" in values(d, "items[].sku")),
    ("values_count",
     models.Filter(must=[models.FieldCondition(key="tags", values_count=models.ValuesCount(gte=2))]),
     lambda d: len(d.get("tags", [])) >= 2),
    ("is_empty",
     models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="items"))]),
     lambda d: d.get("items") in (None, [])),
    ("is_null",
     models.Filter(must=[models.IsNullCondition(is_null=models.PayloadField(key="note"))]),
     lambda d: "note" in d and d["note"] is None),
    ("has_id",
     models.Filter(must=[models.HasIdCondition(has_id=[point_id(3), point_id(10), point_id(17)])]),
     lambda d: d["n"] + 100 in (3, 10, 17)),
    ("should",
     models.Filter(should=[
         models.FieldCondition(key="color", match=models.MatchValue(value="blue")),
         models.FieldCondition(key="n", range=models.Range(lt=-90)),
     ]),
     lambda d: d["color"] == "blue" or d["n"] < -90),
    ("must_not",
     models.Filter(must_not=[models.FieldCondition(key="color", match=models.MatchValue(value="red"))]),
     lambda d: d["color"] != "red"),
    ("min_should",
     models.Filter(min_should=models.MinShould(conditions=[
         models.FieldCondition(key="color", match=models.MatchValue(value="red")),
         models.FieldCondition(key="meta.lang", match=models.MatchValue(value="en")),
         models.FieldCondition(key="n", range=models.Range(gte=0)),
     ], min_count=2)),
     lambda d: (d["color"] == "red") + (d["meta"]["lang"] == "en") + (d["n"] >= 0) >= 2),
    ("nested objects",
     models.Filter(must=[models.NestedCondition(nested=models.Nested(key="items", filter=models.Filter(must=[
         models.FieldCondition(key="sku", match=models.MatchValue(value="s1")),
         models.FieldCondition(key="qty", range=models.Range(gte=1)),
     ])))]),
     lambda d: any(it.get("sku") == "s1" and it.get("qty", -1) >= 1 for it in d.get("items", []))),
    ("a filter within a filter",
     models.Filter(must=[models.Filter(should=[
         models.FieldCondition(key="meta.deep.x", range=models.Range(lte=2)),
         models.FieldCondition(key="color", match=models.MatchValue(value="green")),
     ])]),
     lambda d: d["meta"]["deep"]["x"] <= 2 or d["color"] == "green"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("key", nargs="?")
    ap.add_argument("--prefix", default="qc")
    ap.add_argument("--cluster", action="store_true", help="aliases are refused in cluster mode")
    args = ap.parse_args()
    client = QdrantClient(url=args.url, api_key=args.key, prefer_grpc=False, timeout=60)
    raw = httpx.Client(base_url=args.url, headers={"api-key": args.key} if args.key else {}, timeout=60)
    name = f"{args.prefix}-docs"
    rng = random.Random(7)

    info = raw.get("/").json()
    check(info["version"].count(".") == 2, f"GET / names a version: {info['version']}")
    check(raw.get("/healthz").status_code == 200 and raw.get("/readyz").status_code == 200, "health routes answer")

    if client.collection_exists(name):
        client.delete_collection(name)
    check(not client.collection_exists(name), "a collection that is not there does not exist")
    check(client.create_collection(
        name,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        hnsw_config=models.HnswConfigDiff(m=16, ef_construct=100),
    ), "create_collection")
    check(client.collection_exists(name), "collection_exists after create")
    check(name in [c.name for c in client.get_collections().collections], "get_collections lists it")

    vectors = {i: vector(rng) for i in range(N)}
    docs = {i: payload(i) for i in range(N)}
    half = N // 2
    client.upsert(name, wait=True, points=[
        models.PointStruct(id=point_id(i), vector=vectors[i], payload=docs[i]) for i in range(half)
    ])
    client.upsert(name, wait=True, points=models.Batch(
        ids=[point_id(i) for i in range(half, N)],
        vectors=[vectors[i] for i in range(half, N)],
        payloads=[docs[i] for i in range(half, N)],
    ))
    info = client.get_collection(name)
    check(info.points_count == N, f"get_collection counts {N} points")
    check(info.config.params.vectors.size == DIM and info.config.params.vectors.distance == models.Distance.COSINE,
          "get_collection reports size and distance")
    check(info.config.hnsw_config.m == 16 and info.config.hnsw_config.ef_construct == 100, "get_collection reports hnsw_config")
    by_id = {point_id(i): i for i in range(N)}

    # Retrieve.
    got = client.retrieve(name, ids=[point_id(0), point_id(1), point_id(999)], with_vectors=True)
    check(sorted(str(p.id) for p in got) == sorted([str(point_id(0)), str(point_id(1))]), "retrieve finds the ids that exist")
    p1 = next(p for p in got if p.id == point_id(1))
    check(p1.payload == docs[1], "retrieve returns the payload")
    check(all(abs(a - b) < 1e-5 for a, b in zip(p1.vector, vectors[1])), "retrieve returns the vector")
    got = client.retrieve(name, ids=[point_id(2)], with_payload=["color", "meta.lang"])
    check(got[0].payload == {"color": docs[2]["color"], "meta": {"lang": docs[2]["meta"]["lang"]}}, "with_payload includes only the keys named")
    got = client.retrieve(name, ids=[point_id(2)], with_payload=models.PayloadSelectorExclude(exclude=["items", "title"]))
    want = {k: v for k, v in docs[2].items() if k not in ("items", "title")}
    check(got[0].payload == want, "with_payload exclude leaves those keys out")

    # Exact search, with and without each filter.
    def exact(q, pred=None, skip=(), k=10):
        scored = sorted(((cosine(q, vectors[i]), i) for i in range(N)
                         if (pred is None or pred(docs[i])) and i not in skip), reverse=True)
        return [i for _, i in scored[:k]], [s for s, _ in scored[:k]]

    def ids_of(points):
        return [by_id[p.id] for p in points]

    q = vector(rng)
    res = client.query_points(name, query=q, limit=10, search_params=models.SearchParams(exact=True), with_payload=True)
    want, scores = exact(q)
    check(ids_of(res.points) == want, "query_points by vector equals exact search")
    check(all(abs(p.score - s) < 1e-4 for p, s in zip(res.points, scores)), "scores are cosine similarities")
    check(res.points[0].payload == docs[want[0]], "hits carry their payloads")
    res = client.query_points(name, query=q, limit=10)
    check(len(set(ids_of(res.points)) & set(want)) >= 9, "query_points with default settings finds the exact top 10 (recall >= 0.9)")
    res = client.query_points(name, query=q, limit=5, offset=5, search_params=models.SearchParams(exact=True))
    check(ids_of(res.points) == want[5:10], "offset skips the first hits")
    res = client.query_points(name, query=q, limit=50, score_threshold=scores[6] - 1e-6, search_params=models.SearchParams(exact=True))
    check(ids_of(res.points) == want[:7], "score_threshold keeps scores at or above it")
    res = client.query_points(name, query=q, limit=3, with_vectors=True, search_params=models.SearchParams(hnsw_ef=128))
    check(all(p.vector is not None and len(p.vector) == DIM for p in res.points), "with_vectors returns vectors")

    for what, f, pred in FILTERS:
        res = client.query_points(name, query=q, limit=10, query_filter=f, search_params=models.SearchParams(exact=True))
        check(ids_of(res.points) == exact(q, pred)[0], f"query_points with {what} equals exact search")
        n = client.count(name, count_filter=f, exact=True).count
        want_n = sum(1 for i in range(N) if pred(docs[i]))
        check(n == want_n and 0 < n < N, f"count with {what}: {n}")

    # Refused, by name.
    try:
        client.query_points(name, query=q, query_filter=models.Filter(must=[models.FieldCondition(
            key="loc", geo_radius=models.GeoRadius(center=models.GeoPoint(lat=0, lon=0), radius=10))]))
        check(False, "a geo filter is refused")
    except UnexpectedResponse as e:
        check(e.status_code == 400 and b"geo_radius" in e.content, "a geo filter is refused with 400 naming it")

    # Query by point id: the point itself is left out.
    res = client.query_points(name, query=point_id(4), limit=5, search_params=models.SearchParams(exact=True))
    check(ids_of(res.points) == exact(vectors[4], skip={4}, k=5)[0], "query by point id equals exact search without the point")

    # Recommend (average vector).
    pos, neg = [point_id(1), point_id(2)], [point_id(3)]
    res = client.query_points(name, query=models.RecommendQuery(recommend=models.RecommendInput(positive=pos, negative=neg)),
                              limit=5, search_params=models.SearchParams(exact=True))
    avg_p = [(a + b) / 2 for a, b in zip(vectors[1], vectors[2])]
    target = [a + (a - b) for a, b in zip(avg_p, vectors[3])]
    check(ids_of(res.points) == exact(target, skip={1, 2, 3}, k=5)[0], "recommend equals exact search from the average vector")

    # Groups.
    res = client.query_points_groups(name, query=q, group_by="color", group_size=2, limit=3,
                                     search_params=models.SearchParams(exact=True), with_payload=False)
    order, _ = exact(q, k=N)
    groups = []
    for i in order:
        c = docs[i]["color"]
        g = next((g for g in groups if g[0] == c), None)
        if g is None and len(groups) < 3:
            g = (c, [])
            groups.append(g)
        if g is not None and len(g[1]) < 2:
            g[1].append(i)
    check([(g.id, ids_of(g.hits)) for g in res.groups] == groups, "query_points_groups equals exact grouping")

    # Batch queries.
    qs = [vector(rng) for _ in range(3)]
    res = client.query_batch_points(name, requests=[
        models.QueryRequest(query=x, limit=4, params=models.SearchParams(exact=True)) for x in qs])
    check([ids_of(r.points) for r in res] == [exact(x, k=4)[0] for x in qs], "query_batch_points equals exact search")

    # The older routes, as Qdrant's REST API has them.
    r = raw.post(f"/collections/{name}/points/search", json={"vector": q, "limit": 4, "params": {"exact": True}, "with_payload": True})
    check(r.status_code == 200 and [by_id[h["id"]] for h in r.json()["result"]] == want[:4], "points/search equals exact search")
    r = raw.post(f"/collections/{name}/points/search/batch", json={"searches": [{"vector": x, "limit": 3, "params": {"exact": True}} for x in qs]})
    check([[by_id[h["id"]] for h in hs] for hs in r.json()["result"]] == [exact(x, k=3)[0] for x in qs], "points/search/batch equals exact search")
    r = raw.post(f"/collections/{name}/points/recommend", json={"positive": pos, "negative": neg, "limit": 5, "params": {"exact": True}})
    check([by_id[h["id"]] for h in r.json()["result"]] == exact(target, skip={1, 2, 3}, k=5)[0], "points/recommend equals exact search")

    # Scroll through every page.
    seen, offset, pages = [], None, 0
    while True:
        batch, offset = client.scroll(name, limit=37, offset=offset, with_payload=False)
        seen += [p.id for p in batch]
        pages += 1
        if offset is None:
            break
    check(sorted(map(str, seen)) == sorted(str(point_id(i)) for i in range(N)) and len(seen) == N, f"scroll visits every point once ({pages} pages)")
    batch, _ = client.scroll(name, scroll_filter=FILTERS[0][1], limit=N)
    check(sorted(by_id[p.id] for p in batch) == [i for i in range(N) if docs[i]["color"] == "red"], "scroll with a filter")
    check(client.count(name).count == N, "count without a filter")

    # Payload index.
    client.create_payload_index(name, field_name="color", field_schema=models.PayloadSchemaType.KEYWORD, wait=True)
    check("color" in client.get_collection(name).payload_schema, "the index is in payload_schema")
    res = client.query_points(name, query=q, limit=10, query_filter=FILTERS[0][1], search_params=models.SearchParams(exact=True))
    check(ids_of(res.points) == exact(q, FILTERS[0][2])[0], "a filter on an indexed field equals exact search")
    client.delete_payload_index(name, field_name="color", wait=True)
    check("color" not in client.get_collection(name).payload_schema, "delete_payload_index drops it")
    try:
        client.create_payload_index(name, field_name="title", field_schema=models.PayloadSchemaType.GEO)
        check(False, "a geo index is refused")
    except UnexpectedResponse as e:
        check(e.status_code == 400, "a geo index is refused with 400")

    # Payload operations.
    client.set_payload(name, payload={"seen": True, "color": "black"}, points=[point_id(1), point_id(5)], wait=True)
    got = {p.id: p.payload for p in client.retrieve(name, ids=[point_id(1), point_id(5)])}
    check(got[point_id(1)] == {**docs[1], "seen": True, "color": "black"}, "set_payload by ids")
    client.overwrite_payload(name, payload={"only": 1}, points=[point_id(5)], wait=True)
    check(client.retrieve(name, ids=[point_id(5)])[0].payload == {"only": 1}, "overwrite_payload")
    client.delete_payload(name, keys=["seen", "title"], points=[point_id(1)], wait=True)
    want = {k: v for k, v in {**docs[1], "color": "black"}.items() if k != "title"}
    check(client.retrieve(name, ids=[point_id(1)])[0].payload == want, "delete_payload")
    client.set_payload(name, payload={"flag": "x"}, points=models.Filter(must=[
        models.FieldCondition(key="n", range=models.Range(gte=100))]), wait=True)
    check(client.count(name, count_filter=models.Filter(must=[models.FieldCondition(key="flag", match=models.MatchValue(value="x"))])).count
          == sum(1 for i in range(N) if i - 100 >= 100), "set_payload by filter")
    client.clear_payload(name, points_selector=[point_id(1)], wait=True)
    check(client.retrieve(name, ids=[point_id(1)])[0].payload == {}, "clear_payload")

    # Batched updates.
    client.batch_update_points(name, update_operations=[
        models.UpsertOperation(upsert=models.PointsList(points=[models.PointStruct(id=10_000, vector=vector(rng), payload={"b": 1})])),
        models.SetPayloadOperation(set_payload=models.SetPayload(payload={"b": 2}, points=[10_000])),
        models.DeleteOperation(delete=models.PointIdsList(points=[point_id(2)])),
    ])
    check(client.retrieve(name, ids=[10_000])[0].payload == {"b": 2}, "batch_update_points applies in order")
    check(client.retrieve(name, ids=[point_id(2)]) == [], "batch_update_points deletes")

    # Deletes.
    client.delete(name, points_selector=models.PointIdsList(points=[point_id(6), point_id(7)]), wait=True)
    check(client.retrieve(name, ids=[point_id(6), point_id(7)]) == [], "delete by ids")
    before = client.count(name).count
    gone = sum(1 for i in range(N) if i not in (1, 2, 5, 6, 7) and docs[i]["color"] == "green")
    client.delete(name, points_selector=models.FilterSelector(filter=models.Filter(must=[
        models.FieldCondition(key="color", match=models.MatchValue(value="green"))])), wait=True)
    check(client.count(name).count == before - gone, f"delete by filter removed {gone}")

    # Aliases (refused in cluster mode).
    alias, alias2 = f"{args.prefix}-alias", f"{args.prefix}-alias2"
    if args.cluster:
        try:
            client.update_collection_aliases(change_aliases_operations=[
                models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=name, alias_name=alias))])
            check(False, "aliases are refused in cluster mode")
        except UnexpectedResponse as e:
            check(e.status_code == 400, "aliases are refused in cluster mode with 400")
    else:
        aliases(client, name, alias, alias2)
    finish(client, name)


def aliases(client, name, alias, alias2):
    client.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=name, alias_name=alias))])
    check(any(a.alias_name == alias and a.collection_name == name for a in client.get_aliases().aliases), "get_aliases lists it")
    check(client.count(alias).count == client.count(name).count, "an alias reaches its collection")
    client.update_collection_aliases(change_aliases_operations=[
        models.RenameAliasOperation(rename_alias=models.RenameAlias(old_alias_name=alias, new_alias_name=alias2))])
    check([a.alias_name for a in client.get_collection_aliases(name).aliases] == [alias2], "rename_alias")
    client.update_collection_aliases(change_aliases_operations=[
        models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias2))])
    check(client.get_collection_aliases(name).aliases == [], "delete_alias")


def finish(client, name):
    check(client.delete_collection(name), "delete_collection")
    check(not client.collection_exists(name), "the collection is gone")
    try:
        client.get_collection(name)
        check(False, "a missing collection is 404")
    except UnexpectedResponse as e:
        check(e.status_code == 404 and "error" in e.content.decode(), "a missing collection is 404 in Qdrant's error shape")
    print("qdrant-client check passed")


if __name__ == "__main__":
    main()
