// Drives Vectorizer's Qdrant dialect with the official
// `@qdrant/js-client-rest` and checks every answer against exact search and
// filter evaluation computed here.
//   node qdrant_js_check.mjs URL [API_KEY] [PREFIX] [cluster]
// With `cluster`, aliases are checked to be refused (as in cluster mode).
// The client is resolved from NODE_PATH (scripts/qdrant_clients_check.sh
// installs it, pinned, under target/).
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { QdrantClient } = require("@qdrant/js-client-rest");

const [url, key, prefix = "js", mode = ""] = process.argv.slice(2);
const client = new QdrantClient({ url, apiKey: key || undefined });
const name = `${prefix}-docs`;
const DIM = 6;
const N = 120;

function check(cond, what) {
  if (!cond) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

// A seeded generator, so runs are repeatable.
let seed = 42;
const rand = () => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648 * 2 - 1;
};
const id = (i) => (i % 4 === 0 ? `00000000-0000-4000-8000-${String(i).padStart(12, "0")}` : i);
const vectors = Array.from({ length: N }, () => Array.from({ length: DIM }, rand));
const docs = Array.from({ length: N }, (_, i) => ({ kind: ["a", "b", "c"][i % 3], n: i, tags: i % 2 ? ["x", "y"] : ["x"] }));
const byId = new Map(Array.from({ length: N }, (_, i) => [String(id(i)), i]));
const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);

function exact(q, pred = () => true, k = 5, skip = new Set()) {
  return Array.from({ length: N }, (_, i) => i)
    .filter((i) => pred(docs[i]) && !skip.has(i))
    .map((i) => [dot(q, vectors[i]), i])
    .sort((a, b) => b[0] - a[0])
    .slice(0, k)
    .map(([, i]) => i);
}
const ids = (points) => points.map((p) => byId.get(String(p.id)));
// Equal as JSON values, whatever the order of object keys.
const canon = (v) => Array.isArray(v) ? v.map(canon)
  : v && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])])) : v;
const same = (a, b) => JSON.stringify(canon(a)) === JSON.stringify(canon(b));
const exactParams = { exact: true };

if ((await client.collectionExists(name)).exists) await client.deleteCollection(name);
check(await client.createCollection(name, { vectors: { size: DIM, distance: "Dot" } }), "createCollection");
check((await client.collectionExists(name)).exists, "collectionExists");
await client.upsert(name, { wait: true, points: Array.from({ length: N / 2 }, (_, i) => ({ id: id(i), vector: vectors[i], payload: docs[i] })) });
const rest = Array.from({ length: N / 2 }, (_, j) => j + N / 2);
await client.upsert(name, { wait: true, batch: { ids: rest.map(id), vectors: rest.map((i) => vectors[i]), payloads: rest.map((i) => docs[i]) } });
const info = await client.getCollection(name);
check(info.points_count === N && info.config.params.vectors.size === DIM && info.config.params.vectors.distance === "Dot", "getCollection");

const got = await client.retrieve(name, { ids: [id(1), id(4)], with_payload: true, with_vector: true });
check(got.length === 2 && same(got.find((p) => p.id === 1).payload, docs[1]), "retrieve");

const q = Array.from({ length: DIM }, rand);
let res = await client.query(name, { query: q, limit: 5, params: exactParams, with_payload: true });
check(same(ids(res.points), exact(q)), "query by vector equals exact search");
check(Math.abs(res.points[0].score - dot(q, vectors[exact(q)[0]])) < 1e-4, "Dot scores are dot products");
const filter = { must: [{ key: "kind", match: { value: "b" } }], must_not: [{ key: "tags", values_count: { gte: 2 } }] };
const pred = (d) => d.kind === "b" && d.tags.length < 2;
res = await client.query(name, { query: q, limit: 5, filter, params: exactParams });
check(same(ids(res.points), exact(q, pred)), "query with a filter equals exact search");
check((await client.count(name, { filter, exact: true })).count === docs.filter(pred).length, "count with a filter");
res = await client.query(name, { query: id(7), limit: 4, params: exactParams });
check(same(ids(res.points), exact(vectors[7], () => true, 4, new Set([7]))), "query by point id");
res = await client.query(name, { query: { recommend: { positive: [id(1), id(2)], negative: [id(3)] } }, limit: 4, params: exactParams });
const target = vectors[1].map((x, d) => { const p = (x + vectors[2][d]) / 2; return p + (p - vectors[3][d]); });
check(same(ids(res.points), exact(target, () => true, 4, new Set([1, 2, 3]))), "recommend (average vector)");
const batch = await client.queryBatch(name, { searches: [{ query: q, limit: 3, params: exactParams }, { query: vectors[9], limit: 2, params: exactParams }] });
check(same(batch.map((r) => ids(r.points)), [exact(q, () => true, 3), exact(vectors[9], () => true, 2)]), "queryBatch");
const groups = await client.queryGroups(name, { query: q, group_by: "kind", group_size: 2, limit: 3, params: exactParams });
const want = [];
for (const i of exact(q, () => true, N)) {
  let g = want.find((g) => g.id === docs[i].kind);
  if (!g && want.length < 3) want.push((g = { id: docs[i].kind, hits: [] }));
  if (g && g.hits.length < 2) g.hits.push(i);
}
check(same(groups.groups.map((g) => ({ id: g.id, hits: ids(g.hits) })), want), "queryGroups");

let seen = [];
let offset;
do {
  const page = await client.scroll(name, { limit: 25, offset, with_payload: false });
  seen = seen.concat(page.points.map((p) => String(p.id)));
  offset = page.next_page_offset ?? undefined;
} while (offset !== undefined);
check(seen.length === N && new Set(seen).size === N, "scroll visits every point once");

await client.setPayload(name, { payload: { flag: true }, points: [id(1)], wait: true });
await client.deletePayload(name, { keys: ["tags"], points: [id(1)], wait: true });
check(same((await client.retrieve(name, { ids: [id(1)] }))[0].payload, { kind: "b", n: 1, flag: true }), "setPayload and deletePayload");
await client.clearPayload(name, { points: [id(1)], wait: true });
check(same((await client.retrieve(name, { ids: [id(1)] }))[0].payload, {}), "clearPayload");
await client.createPayloadIndex(name, { field_name: "kind", field_schema: "keyword", wait: true });
check("kind" in (await client.getCollection(name)).payload_schema, "createPayloadIndex");
await client.deletePayloadIndex(name, "kind", { wait: true });
check(!("kind" in (await client.getCollection(name)).payload_schema), "deletePayloadIndex");
await client.batchUpdate(name, { operations: [{ upsert: { points: [{ id: 5000, vector: q, payload: { b: 1 } }] } }, { delete: { points: [id(2)] } }] });
check((await client.retrieve(name, { ids: [5000, id(2)] })).length === 1, "batchUpdate");
await client.delete(name, { filter: { must: [{ key: "kind", match: { value: "c" } }] }, wait: true });
check((await client.count(name, { filter: { must: [{ key: "kind", match: { value: "c" } }] } })).count === 0, "delete by filter");
const aliasing = client.updateCollectionAliases({ actions: [{ create_alias: { collection_name: name, alias_name: `${prefix}-alias` } }] });
if (mode === "cluster") {
  // Aliases are refused in cluster mode.
  check(await aliasing.then(() => false, (e) => e.status === 400), "aliases are refused in cluster mode");
} else {
  await aliasing;
  check((await client.getAliases()).aliases.some((a) => a.alias_name === `${prefix}-alias`), "aliases");
  await client.updateCollectionAliases({ actions: [{ delete_alias: { alias_name: `${prefix}-alias` } }] });
}
check(await client.deleteCollection(name), "deleteCollection");
try {
  await client.getCollection(name);
  check(false, "a missing collection is refused");
} catch (e) {
  check(e.status === 404, "a missing collection is 404");
}
console.log("js client check passed");
