//! The tool catalog: each tool's name, the permission it needs, what it
//! says of itself to a language model, and its argument and result
//! schemas. The schemas are the REST bodies' own, taken from the OpenAPI
//! document with the server's limits stated in them, plus a `collection`
//! argument where the REST route has it in its path.

use std::collections::BTreeSet;
use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Map, Value, json};
use vectorizer_service::Permission;

use crate::openapi::DocLimits;

/// One tool.
#[derive(Debug, Clone)]
pub struct ToolDef {
    pub name: &'static str,
    pub permission: Permission,
    /// Whether the tool names a collection (its `collection` argument).
    pub takes_collection: bool,
    pub tool: Tool,
}

/// What a tool is, before its schemas are resolved.
struct Spec {
    name: &'static str,
    permission: Permission,
    /// The REST body it takes, by schema name; `None`: no arguments but
    /// the collection.
    body: Option<&'static str>,
    takes_collection: bool,
    /// The REST answer, by schema name; `None`: `{"deleted": true}`.
    result: Option<&'static str>,
    description: String,
}

fn specs(l: DocLimits) -> Vec<Spec> {
    use Permission::{Delete, Read, Write};
    let e = l.engine;
    let s = |name, permission, body, takes_collection, result, description: String| Spec {
        name,
        permission,
        body,
        takes_collection,
        result,
        description,
    };
    let filter = "A filter is {\"must\": [...], \"should\": [...], \"must_not\": [...]} of conditions on payload fields: {\"key\": \"color\", \"match\": {\"value\": \"red\"}}, {\"key\": \"tag\", \"match\": {\"any\": [\"a\", \"b\"]}}, {\"key\": \"price\", \"range\": {\"gte\": 10, \"lt\": 20}}, {\"has_id\": [1, 2]}, {\"key\": \"c\", \"match\": {\"except\": [\"x\"]}}, {\"key\": \"title\", \"match\": {\"text\": \"word\"}}, {\"key\": \"tags\", \"values_count\": {\"gte\": 2}}, {\"is_empty\": {\"key\": \"k\"}}, {\"is_null\": {\"key\": \"k\"}}, {\"nested\": {\"key\": \"items\", \"filter\": {...}}}, and \"min_should\": {\"conditions\": [...], \"min_count\": 2}; nested keys are dotted paths (\"meta.lang\", \"items[].sku\").";
    vec![
        s(
            "list_collections",
            Read,
            None,
            false,
            Some("CollectionList"),
            "List your collections with their dimension, metric, point count and bytes on disk. Takes no arguments.".into(),
        ),
        s(
            "get_collection",
            Read,
            None,
            true,
            Some("CollectionDetail"),
            "Describe one collection: dimension, metric, graph parameters, indexed payload fields, point count, bytes on disk and in memory.".into(),
        ),
        s(
            "create_collection",
            Write,
            Some("CreateCollection"),
            false,
            Some("CollectionDetail"),
            "Create an empty collection of vectors of one fixed dimension. The name is 1 to 64 letters, digits, `_` or `-`, unique among your collections. `target_recall` (0.5 to 0.999; left out: the server's default, 0.95 unless configured; null: none) is the recall@10 that searches without `ef` aim for: the collection measures its own recall and picks the breadth that meets it. `quantization: {\"type\": \"int8\"}` keeps vectors in memory as 8-bit codes (about a quarter of the memory), the full vectors on disk to rescore each search's best `oversampling × limit` candidates (default 3). Counts against your plan's collection quota.".into(),
        ),
        s(
            "delete_collection",
            Delete,
            None,
            true,
            None,
            "Delete a collection and every point in it, for good.".into(),
        ),
        s(
            "upsert_points",
            Write,
            Some("UpsertPoints"),
            true,
            Some("Upserted"),
            format!(
                "Insert points, or replace the points with the same ids: 1 to {} points, each with an id, a vector of the collection's dimension and an optional JSON payload. All or nothing: one bad point and none is written. New points count against your plan's vector and storage quotas.",
                e.max_batch
            ),
        ),
        s(
            "get_points",
            Read,
            Some("GetPoints"),
            true,
            Some("Points"),
            format!(
                "Fetch points by id (1 to {}), with their payloads (default) and, if asked, their vectors. Ids that do not exist are left out.",
                e.max_batch
            ),
        ),
        s(
            "delete_points",
            Delete,
            Some("DeletePoints"),
            true,
            Some("Deleted"),
            format!(
                "Delete points, given either `ids` (1 to {}) or a `filter` (exactly one of the two). Answers how many were deleted. {filter}",
                e.max_batch
            ),
        ),
        s(
            "scroll_points",
            Read,
            Some("Scroll"),
            true,
            Some("ScrollPage"),
            format!(
                "Page through points in id order, optionally only those matching a filter. `limit` is 1 to {} (default 10); pass the answer's `next_cursor` as `cursor` for the next page (null at the end). {filter}",
                e.max_limit
            ),
        ),
        s(
            "count_points",
            Read,
            Some("Count"),
            true,
            Some("Counted"),
            format!("Count the points of a collection, or those matching a filter. {filter}"),
        ),
        s(
            "search",
            Read,
            Some("Search"),
            true,
            Some("SearchResults"),
            format!(
                "Find the points nearest to a query vector (same dimension as the collection), best first: `limit` 1 to {}, optionally only among points matching a filter. Scores are cosine similarity or dot product (higher is closer), or euclidean or manhattan distance (lower is closer). `ef` (1 to 4096) trades speed for recall; left out, the breadth the collection chose for its `target_recall`. {filter}",
                e.max_limit
            ),
        ),
        s(
            "search_batch",
            Read,
            Some("SearchBatch"),
            true,
            Some("SearchBatchResults"),
            format!(
                "Run 1 to {} searches on one collection in one call; each takes the arguments of `search` (without `collection`), and the results come in the same order.",
                l.max_batch_searches
            ),
        ),
        s(
            "update_collection",
            Write,
            Some("UpdateCollection"),
            true,
            Some("CollectionDetail"),
            "Change a collection's search parameters (at least one): `target_recall` (0.5 to 0.999, measured for anew; null: none), the recall@10 searches without `ef` aim for; `hnsw.ef_search`, the breadth of searches without `ef` while the collection has no target or has not measured yet (higher finds more of the true nearest points, more slowly). Answers the collection, with its last `recall` measurement.".into(),
        ),
        s(
            "set_payload",
            Write,
            Some("SetPayload"),
            true,
            Some("Updated"),
            format!(
                "Set keys in the payloads of points given by `ids` (1 to {}) or matching a `filter` (exactly one of the two): the keys in `payload` are set, the others kept. Answers how many points changed. {filter}",
                e.max_batch
            ),
        ),
        s(
            "overwrite_payload",
            Write,
            Some("SetPayload"),
            true,
            Some("Updated"),
            "Replace the whole payload of points given by `ids` or matching a `filter` (exactly one of the two) with `payload`. Answers how many points changed.".into(),
        ),
        s(
            "delete_payload",
            Write,
            Some("DeletePayload"),
            true,
            Some("Updated"),
            "Remove top-level `keys` from the payloads of points given by `ids` or matching a `filter` (exactly one of the two). Answers how many points changed.".into(),
        ),
        s(
            "create_payload_index",
            Write,
            Some("CreatePayloadIndex"),
            true,
            Some("CollectionDetail"),
            "Index a payload `field` (a dotted path) so that filters on it are fast. Answers the collection, with the field in its `payload_index`.".into(),
        ),
        s(
            "drop_payload_index",
            Write,
            Some("CreatePayloadIndex"),
            true,
            Some("CollectionDetail"),
            "Stop indexing a payload `field`; filters on it still work, by scanning. Answers the collection.".into(),
        ),
        s(
            "list_aliases",
            Read,
            None,
            false,
            Some("AliasList"),
            "List your aliases: each alias and the collection it names. Takes no arguments.".into(),
        ),
        s(
            "update_aliases",
            Write,
            Some("AliasActions"),
            false,
            Some("AliasList"),
            "Create, move or delete aliases, all together or none: `actions` is a list of {\"create_alias\": {\"alias\", \"collection\"}} (which also moves an existing alias) and {\"delete_alias\": {\"alias\"}}. An alias can stand for its collection's name in every tool; pointing it at a rebuilt collection swaps what searches see at once. Answers your aliases afterwards.".into(),
        ),
        s(
            "list_backups",
            Read,
            None,
            false,
            Some("BackupList"),
            "List your backups, newest first, with their collections, sizes and times. Takes no arguments.".into(),
        ),
        s(
            "create_backup",
            Write,
            Some("CreateBackup"),
            false,
            Some("BackupInfo"),
            "Back up your collections (all, or those named in `collections`), with an optional `label`. Answers the backup once it is whole. Counts against your plan's backup allowance.".into(),
        ),
        s(
            "get_backup",
            Read,
            Some("BackupRef"),
            false,
            Some("BackupInfo"),
            "Describe one of your backups, by `backup_id`.".into(),
        ),
        s(
            "delete_backup",
            Delete,
            Some("BackupRef"),
            false,
            None,
            "Delete one of your backups, by `backup_id`, for good.".into(),
        ),
        s(
            "restore_backup",
            Write,
            Some("RestoreBackup"),
            false,
            Some("Restored"),
            "Restore collections of one of your backups (`backup_id`; all its collections, or those in `collections`) into your collections, optionally under new names (`rename`: {old: new}). An existing name is refused unless `overwrite` is true (which needs the delete permission too). Counts against your quotas like any write.".into(),
        ),
        s(
            "get_usage",
            Read,
            None,
            false,
            Some("Usage"),
            "Your usage (collections, vectors, bytes on disk, per collection) and, with a plan, its limits. Takes no arguments.".into(),
        ),
    ]
}

/// Every schema name `v` refers to.
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                out.insert(name.to_owned());
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// Points `#/components/schemas/X` references at `#/$defs/X`.
fn rebase(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                *r = format!("#/$defs/{name}");
            }
            m.values_mut().for_each(rebase);
        }
        Value::Array(a) => a.iter_mut().for_each(rebase),
        _ => {}
    }
}

/// A self-contained schema: `root`, with the definitions it reaches.
fn standalone(mut root: Value, schemas: &Map<String, Value>) -> JsonObject {
    let mut seen = BTreeSet::new();
    refs(&root, &mut seen);
    let mut todo: Vec<String> = seen.iter().cloned().collect();
    while let Some(name) = todo.pop() {
        let mut more = BTreeSet::new();
        if let Some(s) = schemas.get(&name) {
            refs(s, &mut more);
        }
        for m in more {
            if seen.insert(m.clone()) {
                todo.push(m);
            }
        }
    }
    if !seen.is_empty() {
        let defs: Map<String, Value> = seen
            .iter()
            .filter_map(|n| schemas.get(n).map(|s| (n.clone(), s.clone())))
            .collect();
        root["$defs"] = Value::Object(defs);
    }
    rebase(&mut root);
    match root {
        Value::Object(m) => m,
        _ => JsonObject::new(),
    }
}

/// The catalog, with the server's limits in its schemas.
pub fn catalog(limits: DocLimits) -> Arc<Vec<ToolDef>> {
    let doc = crate::openapi::document_with(&crate::app::routes(), limits);
    let mut schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    // Arguments a REST route takes in its path: a body of their own here.
    schemas.insert(
        "BackupRef".into(),
        json!({"type": "object", "additionalProperties": false, "required": ["backup_id"], "properties": {
            "backup_id": {"type": "string", "description": "The backup's id, as `list_backups` shows it."}
        }}),
    );
    let schemas = &schemas;
    let tools = specs(limits)
        .into_iter()
        .map(|s| {
            let mut input = match s.body.and_then(|b| schemas.get(b)) {
                Some(body) => body.clone(),
                None => json!({"type": "object", "properties": {}, "additionalProperties": false}),
            };
            if s.takes_collection {
                input["properties"]["collection"] = json!({
                    "type": "string",
                    "pattern": "^[A-Za-z0-9_-]{1,64}$",
                    "description": "The collection's name (one of yours, as `list_collections` shows it) or one of its aliases."
                });
                let mut required = vec![json!("collection")];
                if let Some(Value::Array(r)) = input.get("required") {
                    required.extend(r.iter().cloned());
                }
                input["required"] = Value::Array(required);
            }
            let output = match s.result.and_then(|r| schemas.get(r)) {
                Some(r) => r.clone(),
                None => json!({"type": "object", "properties": {"deleted": {"type": "boolean"}}, "required": ["deleted"]}),
            };
            let mut tool = Tool::new(
                s.name,
                s.description,
                Arc::new(standalone(input, schemas)),
            );
            tool.output_schema = Some(Arc::new(standalone(output, schemas)));
            let mut hints = ToolAnnotations::default();
            hints.read_only_hint = Some(s.permission == Permission::Read);
            hints.destructive_hint = Some(s.permission == Permission::Delete);
            hints.idempotent_hint = Some(s.name != "create_collection");
            hints.open_world_hint = Some(false);
            tool.annotations = Some(hints);
            ToolDef {
                name: s.name,
                permission: s.permission,
                takes_collection: s.takes_collection,
                tool,
            }
        })
        .collect();
    Arc::new(tools)
}
