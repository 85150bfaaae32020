//! The OpenAPI 3.1 document, generated from the route table and the
//! service's body types.

use serde_json::{Map, Value, json};

use crate::app::Route;

pub fn document(routes: &[Route]) -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
    });
    let mut generator = settings.into_generator();
    let error = json!({
        "description": "An error",
        "content": {"application/json": {"schema": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "description": "A stable snake_case code"},
                "message": {"type": "string"}}}}}}}
    });
    let mut paths: Map<String, Value> = Map::new();
    for r in routes {
        let mut op = json!({
            "operationId": r.operation,
            "summary": r.summary,
            "responses": {
                r.status.as_u16().to_string(): {
                    "description": "Success",
                    "content": {"application/json": {"schema": (r.response)(&mut generator).to_value()}}
                },
                "default": error.clone()
            }
        });
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(req) = r.request {
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": req(&mut generator).to_value()}}
            });
        }
        let item = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        item[r.method.as_str().to_ascii_lowercase()] = op;
    }
    let schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Vectorizer", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas}
    })
}
