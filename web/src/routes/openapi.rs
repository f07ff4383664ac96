//! The OpenAPI 3.1 document of everything under `/api/v1`, written from the route table that
//! `app` serves, so the document can neither promise a route the server does not serve nor
//! miss one it does.
//!
//! Schemas come from `schemars` (JSON Schema 2020-12, which OpenAPI 3.1 uses) and sit under
//! `components.schemas`. There is one schema per type, for what a reader of the JSON must
//! accept (schemars' deserialize contract): a response field that is `null` when empty is
//! documented as optional, which is looser than what the server sends but never wrong.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use axum::Json;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{Schema, json_schema};
use serde_json::{Map, Value, json};

use super::route::{Access, Body, EXECUTION, Reply, Route};
use super::routes;
use crate::wire::ErrorBody;
use crate::wire::schema::SHA256_PATTERN;

/// Every route `app` serves under `/api/v1`, as (method, path in OpenAPI syntax): what the drift
/// test holds the document against.
pub fn served() -> Vec<(&'static str, &'static str)> {
    routes()
        .iter()
        .map(|route| (route.method.as_str(), route.path))
        .collect()
}

static DOCUMENT: LazyLock<Value> = LazyLock::new(document);

/// `GET /api/v1/openapi.json`.
pub(super) async fn openapi_json() -> Json<Value> {
    Json(DOCUMENT.clone())
}

pub(super) fn document_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "description": "An OpenAPI 3.1 document." })
}

/// The OpenAPI 3.1 document of `/api/v1`, as `GET /api/v1/openapi.json` serves it.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            // The document says which dialect its schemas use, once, for all of them.
            settings.meta_schema = None;
        })
        .into_generator();
    let error = generator.subschema_for::<ErrorBody>();
    let mut paths = Map::new();
    for route in routes() {
        let operation = operation(&route, &mut generator, &error);
        if let Value::Object(item) = paths.entry(route.path).or_insert_with(|| json!({})) {
            item.insert(route.method.as_str().to_lowercase(), operation);
        }
    }
    let mut document = json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "kiln",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "kiln's REST API, and the execution API its workers call. Errors are \
                `{\"error\": \"…\"}`; times are RFC 3339 unless a field says otherwise.",
            "license": { "name": "GPL-3.0-or-later", "identifier": "GPL-3.0-or-later" },
        },
        "tags": [
            { "name": "dags", "description": "DAGs and triggering runs." },
            { "name": "runs", "description": "Runs, their tasks and logs." },
            { "name": "workers", "description": "The workers the server has heard from." },
            { "name": "models", "description": "The model registry and serving." },
            { "name": "artifacts", "description": "Artifact versions, their bytes and lineage." },
            { "name": EXECUTION, "description": "What workers call; not for people." },
            { "name": "meta", "description": "This document." },
        ],
        "paths": paths,
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": {
                "apiToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The server's API token (`--api-token` or `KILN_API_TOKEN`). \
                        A server started without one takes requests without it.",
                },
                "workerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token the server and its workers share \
                        (`--worker-token` or `KILN_WORKER_TOKEN`).",
                },
            },
        },
    });
    bound_integers(&mut document);
    document
}

/// Gives every integer schema with a width (`format: int64`, `uint32` …) the bounds of that
/// width, unless it has tighter ones. JSON Schema validators, schemathesis among them, do not
/// read bounds from `format`, so without them a client may send a number the server cannot hold
/// and be told nothing by the document.
fn bound_integers(document: &mut Value) {
    let mut pending = vec![document];
    while let Some(node) = pending.pop() {
        match node {
            Value::Array(items) => pending.extend(items.iter_mut()),
            Value::Object(fields) => {
                let bounds = match fields.get("format").and_then(Value::as_str) {
                    Some("int8") => Some((json!(i8::MIN), json!(i8::MAX))),
                    Some("uint8") => Some((json!(0), json!(u8::MAX))),
                    Some("int16") => Some((json!(i16::MIN), json!(i16::MAX))),
                    Some("uint16") => Some((json!(0), json!(u16::MAX))),
                    Some("int32") => Some((json!(i32::MIN), json!(i32::MAX))),
                    Some("uint32") => Some((json!(0), json!(u32::MAX))),
                    Some("int64") => Some((json!(i64::MIN), json!(i64::MAX))),
                    Some("uint64" | "uint") => Some((json!(0), json!(u64::MAX))),
                    _ => None,
                };
                if let Some((minimum, maximum)) = bounds {
                    fields.entry("minimum").or_insert(minimum);
                    fields.entry("maximum").or_insert(maximum);
                }
                pending.extend(fields.values_mut());
            }
            _ => {}
        }
    }
}

fn operation(route: &Route, generator: &mut SchemaGenerator, error: &Schema) -> Value {
    let mut parameters = path_parameters(route.path);
    if let Some(query) = route.query {
        parameters.extend(query_parameters(&query(generator)));
    }
    let security = match route.access {
        Access::ApiToken => json!([{ "apiToken": [] }]),
        Access::WorkerToken => json!([{ "workerToken": [] }]),
        Access::Public => json!([]),
    };
    let mut responses = Map::new();
    match route.reply {
        Reply::Json(status, schema) => {
            responses.insert(
                status.to_string(),
                json!({
                    "description": route.summary,
                    "content": { "application/json": { "schema": schema(generator) } },
                }),
            );
        }
        Reply::NoContent => {
            responses.insert("204".to_owned(), json!({ "description": "Done." }));
        }
        Reply::Bytes => {
            responses.insert(
                "200".to_owned(),
                json!({ "description": route.summary, "content": bytes_content() }),
            );
        }
        Reply::TypedBytes => {
            responses.insert(
                "200".to_owned(),
                json!({
                    "description": route.summary,
                    "content": {
                        "*/*": {
                            "schema": { "type": "string", "format": "binary" },
                        },
                    },
                    "headers": {
                        "Content-Type": {
                            "description": "The media type recorded with the version.",
                            "schema": { "type": "string" },
                        },
                    },
                }),
            );
        }
    }
    for (status, response) in error_responses(route, error) {
        responses.insert(status.to_string(), response);
    }
    let mut operation = json!({
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": parameters,
        "responses": responses,
        "security": security,
    });
    let request_body = match route.body {
        Body::None => None,
        Body::Json(schema) => Some(json!({
            "required": true,
            "content": { "application/json": { "schema": schema(generator) } },
        })),
        Body::OptionalJson(schema) => Some(json!({
            "required": false,
            "description": "May be left out for the defaults.",
            "content": { "application/json": { "schema": schema(generator) } },
        })),
        // No body is the empty blob, which a task may well write.
        Body::Bytes => Some(json!({
            "required": false,
            "description": "The bytes; none at all is the empty blob.",
            "content": bytes_content(),
        })),
    };
    if let (Some(body), Value::Object(fields)) = (request_body, &mut operation) {
        fields.insert("requestBody".to_owned(), body);
    }
    operation
}

fn bytes_content() -> Value {
    json!({
        "application/octet-stream": {
            "schema": { "type": "string", "contentMediaType": "application/octet-stream" },
        },
    })
}

/// The statuses a route fails with, each with its bodies: `AppError`'s JSON, or the plain text
/// of axum's own `Path` and `Query` rejections (which never reach `AppError`).
fn error_responses(route: &Route, error: &Schema) -> Vec<(u16, Value)> {
    let json_body = matches!(route.body, Body::Json(_) | Body::OptionalJson(_));
    // A path parameter that is not a number, or a query string that does not parse.
    let plain_400 = route.query.is_some() || route.path.contains("{run_id}");
    let mut statuses: BTreeSet<u16> = route.errors.iter().copied().collect();
    if json_body {
        // Unreadable JSON (400), too slow (408, `limits::buffer_body`), too large (413),
        // well-formed but wrong (422).
        statuses.extend([400, 408, 413, 422]);
    }
    if matches!(route.body, Body::Json(_)) {
        // `JsonBody` wants `content-type: application/json`.
        statuses.insert(415);
    }
    if plain_400 {
        statuses.insert(400);
    }
    if route.access != Access::Public {
        statuses.extend([401, 500]);
    }
    statuses
        .into_iter()
        .map(|status| {
            let mut content = Map::new();
            if status != 400 || json_body {
                content.insert("application/json".to_owned(), json!({ "schema": error }));
            }
            if status == 400 && plain_400 {
                content.insert(
                    "text/plain".to_owned(),
                    json!({ "schema": { "type": "string" } }),
                );
            }
            let response = json!({ "description": error_description(status), "content": content });
            (status, response)
        })
        .collect()
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "The request could not be read.",
        401 => "The bearer token is missing or wrong.",
        404 => "Not found; the message names what.",
        408 => "The body did not arrive within the server's body time (`--http-body-timeout`).",
        409 => "The request conflicts with the current state.",
        413 => "The body is too large; an oversized `Content-Length` is refused unread.",
        415 => "The body was not sent as `application/json`.",
        422 => "The request is well-formed but fails a check; the message says which.",
        503 => "A part of the server the request needs is not configured or not reachable.",
        _ => "The server failed; the details are in its log.",
    }
}

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let (schema, description) = match name {
                "run_id" => (
                    json!({ "type": "integer", "format": "int64" }),
                    "The run's id.",
                ),
                "dag_id" => (json!({ "type": "string" }), "The DAG's id."),
                "task_id" => (json!({ "type": "string" }), "The task's id in its DAG."),
                "name" if path.starts_with("/api/v1/models/") => {
                    (json!({ "type": "string" }), "The model's name.")
                }
                "name" => (json!({ "type": "string" }), "The artifact's name."),
                "version" => (
                    json!({ "type": "string", "pattern": "^([1-9][0-9]*|latest)$" }),
                    "A version number, from 1, or `latest`.",
                ),
                "sha256" => (
                    json!({ "type": "string", "pattern": SHA256_PATTERN }),
                    "The blob's SHA-256, in hex.",
                ),
                // The drift test fails on an empty description, so a new name gets one here.
                _ => (json!({ "type": "string" }), ""),
            };
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": description,
                "schema": schema,
            })
        })
        .collect()
}

/// One query parameter per property of a `Query<…>` type's schema.
fn query_parameters(schema: &Schema) -> Vec<Value> {
    let required: BTreeSet<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = without_null(property.clone());
            let description = property
                .as_object_mut()
                .and_then(|fields| fields.remove("description"))
                .unwrap_or_else(|| json!(""));
            json!({
                "name": name,
                "in": "query",
                "required": required.contains(name.as_str()),
                "description": description,
                "schema": property,
            })
        })
        .collect()
}

/// A query parameter's schema without the `null` an `Option` adds: a parameter is absent, never
/// null.
fn without_null(mut schema: Value) -> Value {
    let Value::Object(fields) = &mut schema else {
        return schema;
    };
    if let Some(Value::Array(types)) = fields.get_mut("type") {
        types.retain(|name| name != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            fields.insert("type".to_owned(), only);
        }
    }
    if let Some(Value::Array(values)) = fields.get_mut("enum") {
        values.retain(|value| !value.is_null());
    }
    if let Some(Value::Array(options)) = fields.get_mut("anyOf") {
        options.retain(|option| option != &json!({ "type": "null" }));
        if options.len() == 1 {
            let only = options.remove(0);
            fields.remove("anyOf");
            if let Value::Object(only) = only {
                fields.extend(only);
            }
        }
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_integer_of_a_width_carries_its_bounds() {
        let document = document();
        let mut pending = vec![&document];
        let mut bounded = 0;
        while let Some(node) = pending.pop() {
            match node {
                Value::Array(items) => pending.extend(items),
                Value::Object(fields) => {
                    if let Some(format) = fields.get("format").and_then(Value::as_str)
                        && format.contains("int")
                    {
                        assert!(
                            fields.contains_key("minimum") && fields.contains_key("maximum"),
                            "{format} without bounds: {node}"
                        );
                        bounded += 1;
                    }
                    pending.extend(fields.values());
                }
                _ => {}
            }
        }
        assert!(bounded > 20, "only {bounded} integers found");
        // The run id of a path: a 64-bit integer, as the server parses it.
        let run_id = &document["paths"]["/api/v1/runs/{run_id}"]["get"]["parameters"][0]["schema"];
        assert_eq!(run_id["maximum"], json!(i64::MAX), "{run_id}");
        assert_eq!(run_id["minimum"], json!(i64::MIN), "{run_id}");
    }
}
