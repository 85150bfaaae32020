"""LangChain's and LlamaIndex's Qdrant vector stores against Vectorizer's
Qdrant dialect, used as their documentation shows, unchanged but for the
URL and key. Embeddings come from a fixed fake embedding defined here, and
every answer is checked against exact search computed here.

    python qdrant_frameworks_check.py URL [API_KEY] [--prefix NAME]
"""

import warnings
import argparse
import hashlib
import math

from qdrant_client import QdrantClient, models

DIM = 16
TEXTS = [
    ("the cat sat on the mat", {"topic": "pets", "year": 2020}),
    ("dogs love long walks in the park", {"topic": "pets", "year": 2021}),
    ("a recipe for tomato soup", {"topic": "food", "year": 2022}),
    ("bread needs flour water and salt", {"topic": "food", "year": 2019}),
    ("the stock market fell today", {"topic": "finance", "year": 2023}),
    ("interest rates and inflation", {"topic": "finance", "year": 2024}),
    ("kittens chase a ball of wool", {"topic": "pets", "year": 2024}),
    ("fresh pasta with basil", {"topic": "food", "year": 2024}),
]

# The checks talk to a local server over plain HTTP on purpose.
warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")


def embed(text):
    """A fixed fake embedding: hashed words, summed and normalised."""
    v = [0.0] * DIM
    for word in text.lower().split():
        h = hashlib.sha256(word.encode()).digest()
        for i in range(DIM):
            v[i] += (h[i] - 127.5) / 127.5
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def exact(query, pred=lambda m: True, k=3):
    q = embed(query)
    scored = sorted(((cosine(q, embed(t)), t) for t, m in TEXTS if pred(m)), reverse=True)
    return [t for _, t in scored[:k]]


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def langchain(url, key, name):
    from langchain_core.embeddings import Embeddings
    from langchain_qdrant import QdrantVectorStore

    class Fake(Embeddings):
        def embed_documents(self, texts):
            return [embed(t) for t in texts]

        def embed_query(self, text):
            return embed(text)

    store = QdrantVectorStore.from_texts(
        [t for t, _ in TEXTS],
        Fake(),
        metadatas=[m for _, m in TEXTS],
        url=url,
        api_key=key,
        prefer_grpc=False,
        collection_name=name,
        force_recreate=True,
    )
    docs = store.similarity_search("cats and kittens", k=3)
    check([d.page_content for d in docs] == exact("cats and kittens"), "LangChain similarity_search equals exact search")
    check(all(d.metadata == dict(TEXTS[[t for t, _ in TEXTS].index(d.page_content)][1], **{"_id": d.metadata["_id"], "_collection_name": name}) for d in docs),
          "LangChain documents carry their metadata")
    flt = models.Filter(must=[models.FieldCondition(key="metadata.topic", match=models.MatchValue(value="food"))])
    docs = store.similarity_search("cats and kittens", k=3, filter=flt)
    check([d.page_content for d in docs] == exact("cats and kittens", lambda m: m["topic"] == "food"),
          "LangChain similarity_search with a metadata filter equals exact search")
    flt = models.Filter(must=[models.FieldCondition(key="metadata.year", range=models.Range(gte=2022))])
    scored = store.similarity_search_with_score("money and markets", k=2, filter=flt)
    check([d.page_content for d, _ in scored] == exact("money and markets", lambda m: m["year"] >= 2022, k=2),
          "LangChain similarity_search_with_score with a range filter")
    ids = store.add_texts(["a parrot that talks"], metadatas=[{"topic": "pets", "year": 2025}])
    check(store.get_by_ids(ids)[0].page_content == "a parrot that talks", "LangChain add_texts and get_by_ids")
    store.delete(ids)
    check(store.get_by_ids(ids) == [], "LangChain delete")
    client = QdrantClient(url=url, api_key=key, prefer_grpc=False)
    client.delete_collection(name)


def llama_index(url, key, name):
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.types import (
        FilterOperator, MetadataFilter, MetadataFilters, VectorStoreQuery,
    )
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    client = QdrantClient(url=url, api_key=key, prefer_grpc=False)
    if client.collection_exists(name):
        client.delete_collection(name)
    store = QdrantVectorStore(collection_name=name, client=client)
    nodes = [TextNode(text=t, metadata=m, embedding=embed(t)) for t, m in TEXTS]
    ids = store.add(nodes)
    check(len(ids) == len(TEXTS), "LlamaIndex add")

    def texts(result):
        return [n.get_content() for n in result.nodes]

    res = store.query(VectorStoreQuery(query_embedding=embed("cats and kittens"), similarity_top_k=3))
    check(texts(res) == exact("cats and kittens"), "LlamaIndex query equals exact search")
    filters = MetadataFilters(filters=[MetadataFilter(key="topic", value="food")])
    res = store.query(VectorStoreQuery(query_embedding=embed("cats and kittens"), similarity_top_k=3, filters=filters))
    check(texts(res) == exact("cats and kittens", lambda m: m["topic"] == "food"), "LlamaIndex query with a metadata filter")
    filters = MetadataFilters(filters=[MetadataFilter(key="year", value=2022, operator=FilterOperator.GTE)])
    res = store.query(VectorStoreQuery(query_embedding=embed("money and markets"), similarity_top_k=2, filters=filters))
    check(texts(res) == exact("money and markets", lambda m: m["year"] >= 2022, k=2), "LlamaIndex query with a range filter")
    check(all(n.metadata["topic"] in ("pets", "food", "finance") for n in res.nodes), "LlamaIndex nodes carry their metadata")
    store.delete_nodes([ids[0]])
    res = store.query(VectorStoreQuery(query_embedding=embed(TEXTS[0][0]), similarity_top_k=8))
    check(TEXTS[0][0] not in texts(res) and len(res.nodes) == len(TEXTS) - 1, "LlamaIndex delete_nodes")
    client.delete_collection(name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("key", nargs="?")
    ap.add_argument("--prefix", default="fw")
    args = ap.parse_args()
    langchain(args.url, args.key, f"{args.prefix}-langchain")
    llama_index(args.url, args.key, f"{args.prefix}-llamaindex")
    print("framework check passed")


if __name__ == "__main__":
    main()
