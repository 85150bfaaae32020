"""The Python client generated from the server's API document, against a
running server: a create, an upsert and a filtered search, through the
generated API functions and models only.

Usage: openapi_client_check.py BASE_URL CLIENT_DIR
(CLIENT_DIR: where openapi-python-client wrote the client; run by
scripts/openapi_client_check.sh.)
"""
import sys
import uuid

sys.path.insert(0, sys.argv[2] if len(sys.argv) == 3 else ".")

from vectorizer_client import Client
from vectorizer_client.api.default import create_collection, search, upsert_points
from vectorizer_client.models import (
    CollectionDetail,
    ConditionType0,
    CreateCollection,
    Filter,
    MatchValue,
    MetricSchema,
    PointInput,
    PointInputPayloadType0,
    Search,
    SearchResults,
    UpsertPoints,
    Upserted,
)

FILTER = {"must": [{"key": "color", "match": {"value": "red"}}]}


def payload(d):
    return PointInputPayloadType0.from_dict(d)


def main(base_url: str) -> None:
    client = Client(base_url=base_url, raise_on_unexpected_status=True)
    name = "check_" + uuid.uuid4().hex[:8]

    r = create_collection.sync_detailed(
        client=client, body=CreateCollection(name=name, dimension=2, metric=MetricSchema.COSINE)
    )
    assert r.status_code == 201 or r.status_code == 200, (r.status_code, r.content)
    assert isinstance(r.parsed, CollectionDetail), r.parsed
    assert r.parsed.name == name and r.parsed.dimension == 2

    r = upsert_points.sync_detailed(
        name,
        client=client,
        body=UpsertPoints(
            points=[
                PointInput(id=1, vector=[1.0, 0.0], payload=payload({"color": "red", "n": 1})),
                PointInput(id=2, vector=[0.9, 0.1], payload=payload({"color": "blue", "n": 2})),
            ]
        ),
    )
    assert r.status_code == 200, (r.status_code, r.content)
    assert isinstance(r.parsed, Upserted) and r.parsed.upserted == 2, r.parsed

    # The filter built two ways: parsed from JSON, and from the typed models.
    f_parsed = Filter.from_dict(FILTER)
    f_typed = Filter(must=[ConditionType0(key="color", match=MatchValue(value="red"))])
    assert isinstance(f_parsed.must, list) and isinstance(f_parsed.must[0], ConditionType0), f_parsed
    assert f_parsed.to_dict() == FILTER == f_typed.to_dict(), (f_parsed.to_dict(), f_typed.to_dict())

    # Without the filter both points come back; with it only the red one.
    r = search.sync_detailed(name, client=client, body=Search(vector=[1.0, 0.0], limit=10))
    assert r.status_code == 200, (r.status_code, r.content)
    assert isinstance(r.parsed, SearchResults) and len(r.parsed.results) == 2, r.parsed

    for f in (f_parsed, f_typed):
        r = search.sync_detailed(name, client=client, body=Search(vector=[1.0, 0.0], limit=10, filter_=f))
        assert r.status_code == 200, (r.status_code, r.content)
        res = r.parsed
        assert isinstance(res, SearchResults), res
        assert len(res.results) == 1, res.results
        hit = res.results[0]
        assert hit.id == 1, hit
        assert hit.payload is not None and hit.payload["color"] == "red", hit.payload
        assert abs(hit.score - 1.0) < 1e-5, hit.score
    print(f"OK: collection {name}, 2 points upserted, filtered search returned id={hit.id} score={hit.score:.4f} payload={hit.payload.to_dict()}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: openapi_client_check.py BASE_URL CLIENT_DIR")
    main(sys.argv[1])
