"""Checks Vectorizer's MCP server with the official Python `mcp` client.

    python mcp_client_check.py URL KEY_A KEY_A_READ KEY_B BIN DATA_DIR

URL is the server's /mcp endpoint (the server runs with the local Hub);
the keys are access keys: Alice read-write-delete, Alice read-only, Bob.
BIN and DATA_DIR run `BIN mcp --stdio --data-dir DATA_DIR`. Exits non-zero
on the first check that fails.
"""

import asyncio
import sys

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

READ_TOOLS = {
    "list_collections", "get_collection", "get_points", "scroll_points",
    "count_points", "search", "search_batch", "get_usage", "list_aliases",
    "list_backups", "get_backup",
}
ALL_TOOLS = READ_TOOLS | {
    "create_collection", "delete_collection", "upsert_points", "delete_points",
    "update_collection", "set_payload", "overwrite_payload", "delete_payload",
    "create_payload_index", "drop_payload_index", "update_aliases", "create_backup", "delete_backup",
    "restore_backup",
}


def client(url, key, extra=None, mode="auto"):
    headers = {"Authorization": f"Bearer {key}", **(extra or {})}
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode=mode)


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def error_code(result):
    return (result.structured_content or {}).get("error", {}).get("code")


async def main(url, key_a, key_a_read, key_b, binary, data_dir):
    for mode in ("legacy", "auto"):
        async with client(url, key_a, mode=mode) as a:
            names = {t.name for t in (await a.list_tools()).tools}
            check(names == ALL_TOOLS, f"[{mode}] a read-write key lists every tool")
    async with client(url, key_a_read) as r:
        names = {t.name for t in (await r.list_tools()).tools}
        check(names == READ_TOOLS, "a read-only key lists only the read tools")
        res = await r.call_tool("create_collection", {"name": "x", "dimension": 3, "metric": "cosine"})
        check(res.is_error and error_code(res) == "forbidden", "a read-only key cannot create")

    async with client(url, key_a, mode="legacy") as a:
        made = await a.call_tool("create_collection", {"name": "notes", "dimension": 3, "metric": "cosine"})
        check(not made.is_error and made.structured_content["name"] == "notes", "A creates a collection")
        up = await a.call_tool("upsert_points", {"collection": "notes", "points": [
            {"id": 1, "vector": [1, 0, 0], "payload": {"text": "one"}},
            {"id": 2, "vector": [0, 1, 0], "payload": {"text": "two"}},
        ]})
        check(not up.is_error and up.structured_content["upserted"] == 2, "A upserts points")
        hits = await a.call_tool("search", {"collection": "notes", "vector": [0.9, 0.1, 0], "limit": 1})
        check(not hits.is_error and hits.structured_content["results"][0]["id"] == 1, "A searches")

    async with client(url, key_b) as b:
        res = await b.call_tool("search", {"collection": "notes", "vector": [1, 0, 0], "limit": 1})
        check(res.is_error and error_code(res) == "collection_not_found", "B gets collection_not_found for A's collection")
        listed = await b.call_tool("list_collections", {})
        check(listed.structured_content["collections"] == [], "B sees none of A's collections")

    # An MCP session id minted for A, sent with B's key, acts as B.
    async with client(url, key_b, extra={"Mcp-Session-Id": "a-session-from-alice"}, mode="legacy") as b:
        res = await b.call_tool("count_points", {"collection": "notes"})
        check(res.is_error and error_code(res) == "collection_not_found", "a reused session id with B's key acts as B")

    try:
        async with client(url, "not-a-valid-key-at-all") as bad:
            await bad.list_tools()
        check(False, "a bad key is refused")
    except SystemExit:
        raise
    except BaseException:  # the client fails on the 401
        async with httpx2.AsyncClient() as h:
            resp = await h.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                headers={"Authorization": "Bearer not-a-valid-key-at-all",
                                         "Accept": "application/json, text/event-stream"})
        check(resp.status_code == 401, "a bad key gets 401")

    params = StdioServerParameters(command=binary, args=["mcp", "--stdio", "--data-dir", data_dir],
                                   env={"VECTORIZER_LOGGING__LEVEL": "warn"})
    async with Client(params, mode="legacy") as s:
        names = {t.name for t in (await s.list_tools()).tools}
        check(names == ALL_TOOLS, "stdio mode answers tools/list")
        made = await s.call_tool("create_collection", {"name": "local", "dimension": 2, "metric": "dot"})
        check(not made.is_error, "stdio mode creates a collection")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
