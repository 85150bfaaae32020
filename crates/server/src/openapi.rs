//! The OpenAPI 3.1 document, generated from the route table and the
//! service's body types, then given every bound the server enforces (from
//! the limits in force), every error status with its body, the filter
//! grammar and the security schemes.

use serde_json::{Map, Value, json};
use vectorizer_engine::Limits;
use vectorizer_engine::config::{MAX_DIMENSION, MAX_EF, MAX_INDEXED_FIELDS};
use vectorizer_engine::filter::{MAX_ANY, MAX_CONDITIONS, MAX_HAS_ID, MAX_TEXT};

use crate::app::{Access, Route};

/// A collection's (or alias's) short name.
const NAME: &str = "^[A-Za-z0-9_-]{1,64}$";
/// A backup's id: a UUID.
const BACKUP_ID: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
/// A point id in a string (a path, or a body): up to 19 decimal digits,
/// or a UUID, hyphenated or as 32 hex digits.
const POINT_ID: &str = "^([0-9]{1,19}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32})$";
/// The largest finite 32-bit float.
const F32_MAX: f64 = 3.4028234663852886e38;

/// The limits the document states (the server's, from its config).
#[derive(Debug, Clone, Copy)]
pub struct DocLimits {
    pub engine: Limits,
    pub max_batch_searches: usize,
}

pub fn document(routes: &[Route]) -> Value {
    document_with(
        routes,
        DocLimits {
            engine: Limits::default(),
            max_batch_searches: 100,
        },
    )
}

pub fn document_with(routes: &[Route], limits: DocLimits) -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
    });
    let mut generator = settings.into_generator();
    let error = json!({"$ref": "#/components/responses/Error"});
    let mut paths: Map<String, Value> = Map::new();
    for r in routes {
        let success = if r.operation == "metrics" {
            json!({"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}})
        } else if r.operation == "download_backup" {
            json!({
                "description": "The archive (a gzip-compressed tar); its SHA-256 in X-Checksum-SHA256",
                "headers": {"X-Checksum-SHA256": {"schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}},
                "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}
            })
        } else {
            // Any JSON is `{}`, not the boolean schema `true`, which some
            // client generators cannot read.
            let mut schema = (r.response)(&mut generator).to_value();
            if schema == Value::Bool(true) {
                schema = json!({});
            }
            json!({
                "description": "Success",
                "content": {"application/json": {"schema": schema}}
            })
        };
        let mut responses = Map::new();
        responses.insert(r.status.as_u16().to_string(), success);
        for code in error_statuses(r) {
            responses.insert(code.to_string(), error.clone());
        }
        let mut op = json!({
            "operationId": r.operation,
            "summary": r.summary,
            "responses": responses,
        });
        if r.access == Access::Public {
            op["security"] = json!([{}, {"bearer": []}]);
        }
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| {
                let schema = match p {
                    "id" if r.path.starts_with("/api/hub/backups") => {
                        json!({"type": "string", "pattern": BACKUP_ID})
                    }
                    "id" => json!({"type": "string", "pattern": POINT_ID}),
                    "field" => field_path(),
                    _ => json!({"type": "string", "pattern": NAME}),
                };
                json!({"name": p, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(req) = r.request {
            let schema = req(&mut generator).to_value();
            // A body whose fields are all optional may be left out (it
            // reads as `{}`), unless `{}` itself is refused: an update
            // names at least one change (`minProperties`, set below).
            let name = schema["$ref"]
                .as_str()
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or("");
            let needed = name == "UpdateCollection"
                || generator
                    .definitions()
                    .get(name)
                    .and_then(|d| d.get("required"))
                    .and_then(Value::as_array)
                    .is_some_and(|r| !r.is_empty());
            op["requestBody"] = json!({
                "required": needed,
                "content": {"application/json": {"schema": schema}}
            });
        }
        if r.operation == "upload_backup" {
            op["requestBody"] = json!({
                "required": true,
                "content": {
                    "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                }
            });
            op["parameters"] = json!([{
                "name": "X-Checksum-SHA256", "in": "header", "required": false,
                "description": "The archive's SHA-256, checked before it is read",
                "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}
            }]);
        }
        let item = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        item[r.method.as_str().to_ascii_lowercase()] = op;
    }
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    bound(&mut schemas, limits);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Vectorizer", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        // With the Hub on (or the deployment's keys set), a key is needed;
        // with neither, none is.
        "security": [{"bearer": []}, {"x_api_key": []}, {"api_key": []}, {}],
        "components": {
            "schemas": schemas,
            "responses": {"Error": error_response()},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An access key the Hub issued (Hub on), or VECTORIZER_API_KEY / VECTORIZER_READ_API_KEY (Hub off); the operator token for /metrics"},
                "x_api_key": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "api_key": {"type": "apiKey", "in": "header", "name": "api-key"}
            }
        }
    })
}

/// The error statuses a route may answer.
/// A payload field path, as indexes name it (see
/// `vectorizer_engine::config::validate_field_path`).
fn field_path() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^.]+(\\.[^.]+)*$"})
}

fn error_statuses(r: &Route) -> Vec<u16> {
    if r.access == Access::Public {
        return match r.operation {
            "metrics" => vec![401, 500],
            // Operator only; 404 on a node that runs alone.
            "cluster_status" => vec![401, 404, 500, 503],
            "cluster_replace_node" | "cluster_repair_group" => {
                vec![400, 401, 404, 413, 415, 422, 500, 503]
            }
            _ => vec![500, 503],
        };
    }
    let mut v = vec![400, 401, 403, 404, 429, 500, 503];
    if r.request.is_some() || r.operation == "upload_backup" {
        v.extend([413, 415, 422]);
    } else {
        v.push(422);
    }
    if matches!(
        r.operation,
        "create_collection" | "update_aliases" | "restore_backup"
    ) {
        v.push(409);
    }
    v.sort_unstable();
    v.dedup();
    v
}

fn error_response() -> Value {
    json!({
        "description": "An error: a stable snake_case code and a message; a quota refusal adds its figures",
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["error"], "additionalProperties": false,
            "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "pattern": "^[a-z_]+$"},
                    "message": {"type": "string"},
                    "quota": {"type": "string", "enum": ["collections", "vectors", "storage", "backup"]},
                    "limit": {"type": "integer", "minimum": 0},
                    "current": {"type": "integer", "minimum": 0},
                    "requested": {"type": "integer", "minimum": 0}
                }
            }}
        }}}
    })
}

/// Sets `constraints` on property `prop` of schema `name` (or on the
/// schema itself for an empty `prop`).
fn set(schemas: &mut Map<String, Value>, name: &str, prop: &str, constraints: Value) {
    let Some(s) = schemas.get_mut(name) else {
        return;
    };
    let target = if prop.is_empty() {
        s
    } else {
        match s.pointer_mut(&format!("/properties/{prop}")) {
            Some(t) => t,
            None => return,
        }
    };
    if let (Some(t), Some(c)) = (target.as_object_mut(), constraints.as_object()) {
        t.extend(c.clone());
    }
}

/// The bounds the server enforces, stated in the schemas.
fn bound(schemas: &mut Map<String, Value>, l: DocLimits) {
    let e = l.engine;
    let vector = json!({"type": "array", "minItems": 1, "maxItems": MAX_DIMENSION,
        "items": {"type": "number", "minimum": -F32_MAX, "maximum": F32_MAX}});
    // No `type`: the derive's own (an array, or null where the field is
    // optional and defaults to null) stays.
    let ids = |max: usize| json!({"minItems": 1, "maxItems": max, "items": {"$ref": "#/components/schemas/PointId"}});
    let field = field_path();
    schemas.insert(
        "PointId".into(),
        json!({"description": "A non-negative integer or a UUID string.", "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": 18_446_744_073_709_551_615u64},
            {"type": "string", "pattern": POINT_ID}
        ]}),
    );
    set(
        schemas,
        "CreateCollection",
        "name",
        json!({"pattern": NAME}),
    );
    set(
        schemas,
        "CreateCollection",
        "dimension",
        json!({"minimum": 1, "maximum": MAX_DIMENSION}),
    );
    set(
        schemas,
        "CreateCollection",
        "payload_index",
        json!({"maxItems": MAX_INDEXED_FIELDS, "uniqueItems": true, "items": field}),
    );
    // Optional, but not nullable: a field left out takes its default.
    set(
        schemas,
        "HnswSchema",
        "m",
        json!({"type": "integer", "minimum": 2, "maximum": 128}),
    );
    set(
        schemas,
        "HnswSchema",
        "ef_construction",
        json!({"type": "integer", "minimum": 4, "maximum": MAX_EF}),
    );
    set(
        schemas,
        "HnswSchema",
        "ef_search",
        json!({"type": "integer", "minimum": 1, "maximum": MAX_EF}),
    );
    set(
        schemas,
        "UpdateHnsw",
        "ef_search",
        json!({"minimum": 1, "maximum": MAX_EF}),
    );
    // A number in range, or null (no target).
    for owner in ["CreateCollection", "UpdateCollection"] {
        set(
            schemas,
            owner,
            "target_recall",
            json!({"minimum": 0.5, "maximum": 0.999}),
        );
    }
    // Left out for the default; never null.
    set(
        schemas,
        "QuantizationSchema",
        "oversampling",
        json!({"type": "number", "minimum": 1, "maximum": vectorizer_engine::config::MAX_OVERSAMPLING}),
    );
    set(
        schemas,
        "QuantizationSchema",
        "rescore",
        json!({"type": "boolean"}),
    );
    // At least one change; `hnsw`, if given, is an object.
    set(schemas, "UpdateCollection", "", json!({"minProperties": 1}));
    if let Some(hnsw) = schemas
        .get_mut("UpdateCollection")
        .and_then(|u| u.pointer_mut("/properties/hnsw"))
    {
        *hnsw = json!({"$ref": "#/components/schemas/UpdateHnsw"});
    }
    set(schemas, "CreatePayloadIndex", "field", field.clone());
    set(
        schemas,
        "UpsertPoints",
        "points",
        json!({"minItems": 1, "maxItems": e.max_batch}),
    );
    set(schemas, "PointInput", "vector", vector.clone());
    let names = |min: usize| json!({"minItems": min, "maxItems": 1000, "items": {"type": "string", "pattern": NAME}});
    set(schemas, "CreateBackup", "collections", names(0));
    set(
        schemas,
        "CreateBackup",
        "label",
        json!({"maxLength": 200, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"}),
    );
    set(
        schemas,
        "RestoreBackup",
        "backup_id",
        json!({"pattern": BACKUP_ID}),
    );
    set(schemas, "RestoreBackup", "collections", names(1));
    set(
        schemas,
        "RestoreBackup",
        "rename",
        json!({"maxProperties": 1000, "propertyNames": {"pattern": NAME}, "additionalProperties": {"type": "string", "pattern": NAME}}),
    );
    set(schemas, "GetPoints", "ids", ids(e.max_batch));
    set(schemas, "DeletePoints", "ids", ids(e.max_batch));
    set(schemas, "SetPayload", "ids", ids(e.max_batch));
    set(schemas, "DeletePayload", "ids", ids(e.max_batch));
    set(
        schemas,
        "DeletePayload",
        "keys",
        json!({"minItems": 1, "items": {"type": "string"}}),
    );
    set(
        schemas,
        "Scroll",
        "limit",
        json!({"minimum": 1, "maximum": e.max_limit}),
    );
    set(
        schemas,
        "Search",
        "limit",
        json!({"minimum": 1, "maximum": e.max_limit}),
    );
    set(schemas, "Search", "vector", vector);
    set(
        schemas,
        "Search",
        "ef",
        json!({"minimum": 1, "maximum": MAX_EF}),
    );
    set(
        schemas,
        "Search",
        "score_threshold",
        json!({"minimum": -F32_MAX, "maximum": F32_MAX}),
    );
    set(
        schemas,
        "SearchBatch",
        "searches",
        json!({"minItems": 1, "maxItems": l.max_batch_searches}),
    );
    set(
        schemas,
        "AliasActions",
        "actions",
        json!({"minItems": 1, "maxItems": 100}),
    );
    if let Some(a) = schemas.get_mut("AliasAction") {
        name_patterns(a);
    }
    // Each action's body is a component of its own: generators build an
    // inline object inside a `oneOf` member twice.
    hoist(
        schemas,
        "AliasAction",
        "/oneOf/0/properties/create_alias",
        "CreateAlias",
    );
    hoist(
        schemas,
        "AliasAction",
        "/oneOf/1/properties/delete_alias",
        "DeleteAlias",
    );
    filter_grammar(schemas);
    // With the Hub on, a caller without the operator token sees liveness
    // only; the details and the Hub's state are the operator's.
    set(schemas, "Health", "", json!({"required": ["status"]}));
    if let Some(Value::Object(props)) = schemas
        .get_mut("Health")
        .and_then(|h| h.get_mut("properties"))
    {
        props.insert(
            "hub".into(),
            json!({"type": "string", "enum": ["up", "degraded", "down", "key_refused"]}),
        );
    }
}

/// Moves the schema at `ptr` in component `owner` into component `name`,
/// leaving a reference in its place.
fn hoist(schemas: &mut Map<String, Value>, owner: &str, ptr: &str, name: &str) {
    let Some(slot) = schemas.get_mut(owner).and_then(|o| o.pointer_mut(ptr)) else {
        return;
    };
    let inner = std::mem::replace(
        slot,
        json!({"$ref": format!("#/components/schemas/{name}")}),
    );
    schemas.insert(name.into(), inner);
}

/// Gives every `alias` and `collection` property under `v` the name
/// pattern.
fn name_patterns(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get_mut("properties") {
                for key in ["alias", "collection"] {
                    if let Some(Value::Object(p)) = props.get_mut(key) {
                        p.insert("pattern".into(), NAME.into());
                    }
                }
            }
            m.values_mut().for_each(name_patterns);
        }
        Value::Array(a) => a.iter_mut().for_each(name_patterns),
        _ => {}
    }
}

/// The filter grammar as schemas: a filter's clauses hold conditions; a
/// condition tests a field, names ids, or nests a filter.
fn filter_grammar(schemas: &mut Map<String, Value>) {
    let r = |n: &str| json!({"$ref": format!("#/components/schemas/{n}")});
    let value = json!({"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]});
    // A null bound is a bound not given, as clients that write every
    // optional field send it.
    let bound = json!({"oneOf": [{"type": "number"}, {"type": "null"}]});
    let count = json!({"type": "integer", "minimum": 0, "maximum": u32::MAX});
    let count_bound = json!({"oneOf": [count.clone(), {"type": "null"}]});
    // Dotted parts; a part may end in `[]` ("every element of this list").
    let key = json!({"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^.\\[\\]]+(\\[\\])*(\\.[^.\\[\\]]+(\\[\\])*)*$"});
    let clause = json!({"oneOf": [
        {"type": "array", "maxItems": MAX_CONDITIONS, "items": r("Condition")},
        r("Condition"),
        {"type": "null"}
    ]});
    schemas.insert(
        "Filter".into(),
        json!({
            "description": format!("Conditions in `must` (all hold), `should` (one holds, if any are given), `must_not` (none holds) and `min_should` (at least `min_count` hold); at most {MAX_CONDITIONS} conditions in all, nested at most 8 deep."),
            "type": "object", "additionalProperties": false,
            "properties": {"must": clause, "should": clause, "must_not": clause, "min_should": {"oneOf": [r("MinShould"), {"type": "null"}]}}
        }),
    );
    schemas.insert(
        "MinShould".into(),
        json!({"type": "object", "additionalProperties": false, "required": ["conditions", "min_count"], "properties": {
            "conditions": {"type": "array", "maxItems": MAX_CONDITIONS, "items": r("Condition")},
            "min_count": count
        }}),
    );
    // Objects inside a `oneOf` member are components of their own, so that
    // client generators make one type of each.
    schemas.insert(
        "MatchValue".into(),
        json!({"type": "object", "additionalProperties": false, "required": ["value"], "properties": {"value": value}}),
    );
    schemas.insert(
        "MatchAny".into(),
        json!({"type": "object", "additionalProperties": false, "required": ["any"], "properties": {"any": {"type": "array", "maxItems": MAX_ANY, "items": value}}}),
    );
    schemas.insert(
        "MatchExcept".into(),
        json!({"description": "Some value of the field is none of these (a null is not).", "type": "object", "additionalProperties": false, "required": ["except"], "properties": {"except": {"type": "array", "maxItems": MAX_ANY, "items": value}}}),
    );
    schemas.insert(
        "MatchText".into(),
        json!({"description": "Some string value of the field contains this text.", "type": "object", "additionalProperties": false, "required": ["text"], "properties": {"text": {"type": "string", "maxLength": MAX_TEXT}}}),
    );
    schemas.insert(
        "Range".into(),
        json!({"type": "object", "additionalProperties": false, "minProperties": 1,
            "properties": {"gt": bound, "gte": bound, "lt": bound, "lte": bound}}),
    );
    schemas.insert(
        "ValuesCount".into(),
        json!({"description": "How many values the field holds (a list counts its elements, a null none).", "type": "object", "additionalProperties": false, "minProperties": 1,
            "properties": {"gt": count_bound, "gte": count_bound, "lt": count_bound, "lte": count_bound}}),
    );
    schemas.insert(
        "KeyOnly".into(),
        json!({"type": "object", "additionalProperties": false, "required": ["key"], "properties": {"key": key}}),
    );
    schemas.insert(
        "Nested".into(),
        json!({"description": "One object of the list at `key` satisfies `filter` on its own; `has_id` is refused inside.", "type": "object", "additionalProperties": false, "required": ["key", "filter"], "properties": {"key": key, "filter": r("Filter")}}),
    );
    schemas.insert(
        "Condition".into(),
        json!({"oneOf": [
            {"type": "object", "additionalProperties": false, "required": ["key", "match"], "properties": {
                "key": key,
                "match": {"oneOf": [r("MatchValue"), r("MatchAny"), r("MatchExcept"), r("MatchText")]}
            }},
            {"type": "object", "additionalProperties": false, "required": ["key", "range"], "properties": {
                "key": key,
                "range": r("Range")
            }},
            {"type": "object", "additionalProperties": false, "required": ["key", "values_count"], "properties": {
                "key": key,
                "values_count": r("ValuesCount")
            }},
            {"description": "The field is missing, null, an empty list or a list of nulls.", "type": "object", "additionalProperties": false, "required": ["is_empty"], "properties": {"is_empty": r("KeyOnly")}},
            {"description": "The field is present and null.", "type": "object", "additionalProperties": false, "required": ["is_null"], "properties": {"is_null": r("KeyOnly")}},
            {"type": "object", "additionalProperties": false, "required": ["nested"], "properties": {"nested": r("Nested")}},
            {"type": "object", "additionalProperties": false, "required": ["has_id"], "properties": {
                "has_id": {"type": "array", "maxItems": MAX_HAS_ID, "items": r("PointId")}
            }},
            {"type": "object", "additionalProperties": false, "required": ["filter"], "properties": {"filter": r("Filter")}},
            {"allOf": [r("Filter")], "minProperties": 1}
        ]}),
    );
}
