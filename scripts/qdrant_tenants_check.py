"""Two tenants through Vectorizer's Qdrant dialect with the Hub on, with
the official `qdrant-client`: each sees only its own collections, a bad key
is refused, and a plan's vector quota answers 429 and writes nothing.

    python qdrant_tenants_check.py URL KEY_A KEY_B KEY_OF_A_TINY_PLAN
"""

import warnings
import sys

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

# The checks talk to a local server over plain HTTP on purpose.
warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def refused(call, status, what):
    try:
        call()
    except UnexpectedResponse as e:
        check(e.status_code == status, f"{what}: {e.status_code}")
        return
    check(False, f"{what}: not refused")


def main():
    url, key_a, key_b, key_t = sys.argv[1:5]
    a, b, t = (QdrantClient(url=url, api_key=k, prefer_grpc=False) for k in (key_a, key_b, key_t))
    params = models.VectorParams(size=2, distance=models.Distance.DOT)
    for c in (a, b):
        if c.collection_exists("shared-name"):
            c.delete_collection("shared-name")
    a.create_collection("shared-name", vectors_config=params)
    a.upsert("shared-name", points=[models.PointStruct(id=1, vector=[1, 0], payload={"owner": "a"})])
    check("shared-name" not in [c.name for c in b.get_collections().collections], "B's list leaves out A's collection")
    check(not b.collection_exists("shared-name"), "A's collection does not exist for B")
    refused(lambda: b.count("shared-name"), 404, "B counting A's collection is 404")
    b.create_collection("shared-name", vectors_config=params)
    b.upsert("shared-name", points=[models.PointStruct(id=1, vector=[0, 1], payload={"owner": "b"})])
    check(a.retrieve("shared-name", ids=[1])[0].payload == {"owner": "a"}, "A's collection holds A's point")
    check(b.retrieve("shared-name", ids=[1])[0].payload == {"owner": "b"}, "B's collection of the same name is B's")
    bad = QdrantClient(url=url, api_key="hvk_not_a_key", prefer_grpc=False)
    refused(lambda: bad.get_collections(), 401, "a bad key is refused")
    nokey = QdrantClient(url=url, prefer_grpc=False)
    refused(lambda: nokey.get_collections(), 401, "no key is refused")
    if t.collection_exists("small"):
        t.delete_collection("small")
    t.create_collection("small", vectors_config=params)
    t.upsert("small", points=[models.PointStruct(id=i, vector=[1, i]) for i in range(8)])
    refused(lambda: t.upsert("small", points=[models.PointStruct(id=100 + i, vector=[1, i]) for i in range(5)]),
            429, "past the plan's vectors, an upsert is 429")
    check(t.count("small").count == 8, "the refused upsert wrote nothing")
    for c in (a, b):
        c.delete_collection("shared-name")
    t.delete_collection("small")
    print("tenants check passed")


if __name__ == "__main__":
    main()
