//! The OpenAPI document: served without a token, in step with the router, every `$ref` in it
//! resolves, and real responses match the schemas it gives for them.

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Harness, Setup};
use kiln_engine::store::now_micros;
use serde_json::{Value, json};

const API_TOKEN: &str = "api-secret";
const WORKER_TOKEN: &str = "worker-secret";

async fn harness() -> Harness {
    common::start(Setup {
        dags: &[("demo.toml", common::TWO_TASK_DAG)],
        api_token: Some(API_TOKEN),
        ..Setup::default()
    })
    .await
}

/// Calls the app with `token` as the bearer token; answers the status, the content type and
/// the body as JSON (null when it is not JSON).
async fn request(
    harness: &Harness,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, String, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let (status, headers, bytes) = harness.send(request.body(Body::empty()).unwrap()).await;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, json)
}

async fn served_document(harness: &Harness) -> Value {
    let (status, content_type, document) =
        request(harness, "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    document
}

/// Every operation of the document, as (method, path).
fn operations(document: &Value) -> Vec<(String, String)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

#[tokio::test]
async fn the_document_is_served_without_a_token() {
    let harness = harness().await;
    let document = served_document(&harness).await;
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        document["info"]["license"]["identifier"],
        "GPL-3.0-or-later"
    );
    assert_eq!(document, kiln_web::openapi::document());
    let doc = &document["paths"]["/api/v1/openapi.json"]["get"];
    assert_eq!(doc["security"], json!([]));
    let claim = &document["paths"]["/api/v1/exec/claim"]["post"];
    assert_eq!(claim["tags"], json!(["execution"]));
    assert_eq!(claim["security"], json!([{ "workerToken": [] }]));
    let dags = &document["paths"]["/api/v1/dags"]["get"];
    assert_eq!(dags["security"], json!([{ "apiToken": [] }]));

    // Everything else still wants its token.
    let (status, _, _) = request(&harness, "GET", "/api/v1/dags", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = request(&harness, "GET", "/api/v1/dags", Some(API_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = request(&harness, "POST", "/api/v1/exec/claim", Some(API_TOKEN)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The document cannot drift from the router: `app` mounts every `/api/v1` route from the
/// table the document is written from (`openapi::served` lists that table), and this test
/// checks the three ways they could still come apart: a route mounted outside the table, an
/// entry documented twice or not at all, and a documented path or method that misses the
/// handler (probed through the real app, where a miss is a 405 or the fallback's 404).
#[tokio::test]
async fn every_served_route_is_documented_once_and_every_documented_one_is_served() {
    let harness = harness().await;
    let document = served_document(&harness).await;

    let mut served: Vec<(String, String)> = kiln_web::openapi::served()
        .into_iter()
        .map(|(method, path)| (method.to_owned(), path.to_owned()))
        .collect();
    served.sort();
    let unique: BTreeSet<_> = served.iter().collect();
    assert_eq!(unique.len(), served.len(), "a route is mounted twice");
    let mut documented = operations(&document);
    documented.sort();
    assert_eq!(documented, served);

    // No `/api/v1` route is mounted by hand beside the table: literal paths are mounted in
    // `routes.rs` (where `app` is) only for the probes, `/healthz` and `/readyz`.
    let source = include_str!("../src/routes.rs");
    let by_hand: Vec<&str> = source
        .lines()
        .filter(|line| line.contains(".route(\""))
        .collect();
    assert_eq!(by_hand.len(), 2, "{by_hand:?}");
    assert!(by_hand[0].contains("\"/healthz\""), "{by_hand:?}");
    assert!(by_hand[1].contains("\"/readyz\""), "{by_hand:?}");

    // The fallback's answer, which the probe below must never get.
    let (status, _, body) = request(&harness, "GET", "/api/v1/nowhere", Some(API_TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no such endpoint: /api/v1/nowhere");

    let mut operation_ids = BTreeSet::new();
    for (method, path) in &documented {
        let operation = &document["paths"][path][method.to_lowercase()];
        let operation_id = operation["operationId"].as_str().unwrap();
        assert!(operation_ids.insert(operation_id), "{operation_id} twice");
        // Every `{name}` of the path is a documented path parameter, and nothing else is.
        let in_path: Vec<&str> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let parameters = operation["parameters"].as_array().unwrap();
        let path_parameters: Vec<&str> = parameters
            .iter()
            .filter(|parameter| parameter["in"] == "path")
            .map(|parameter| parameter["name"].as_str().unwrap())
            .collect();
        assert_eq!(path_parameters, in_path, "{method} {path}");
        for parameter in parameters {
            assert_ne!(parameter["description"], "", "{method} {path}: {parameter}");
        }
        let exec = path.starts_with("/api/v1/exec/");
        assert_eq!(
            operation["tags"][0] == "execution",
            exec,
            "{method} {path} is tagged {}",
            operation["tags"]
        );

        let uri = in_path.iter().fold(path.clone(), |uri, name| {
            let value = match *name {
                "run_id" => "424242".to_owned(),
                "sha256" => "0".repeat(64),
                _ => "x".to_owned(),
            };
            uri.replace(&format!("{{{name}}}"), &value)
        });
        let token = if exec { WORKER_TOKEN } else { API_TOKEN };
        let (status, _, body) = request(&harness, method, &uri, Some(token)).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        let missed = body["error"]
            .as_str()
            .is_some_and(|error| error.starts_with("no such endpoint"));
        assert!(!missed, "{method} {uri} reached no handler");
        // What the handler answered is one of the statuses the document gives.
        let documented_statuses = operation["responses"].as_object().unwrap();
        assert!(
            documented_statuses.contains_key(status.as_str()),
            "{method} {uri} answered {status}, documented {:?}",
            documented_statuses.keys().collect::<Vec<_>>()
        );
    }
}

/// Every `"$ref"` anywhere under `value`.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                match (key.as_str(), field) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => refs(field, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

#[tokio::test]
async fn every_ref_resolves_to_a_component_schema() {
    let document = served_document(&harness().await).await;
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for name in [
        "ErrorBody",
        "DagList",
        "RunDetail",
        "RunState",
        "TaskState",
        "Sha256",
    ] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(found.len() > 50, "only {} refs", found.len());
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{target} is not under components.schemas"));
        let name = name.replace("~1", "/").replace("~0", "~");
        assert!(schemas.contains_key(&name), "{target} does not resolve");
    }
}

/// Checks `value` against `schema` as far as the document's schemas go: `$ref`, `anyOf`,
/// `oneOf`, `allOf`, `type`, `enum`, `const`, `required`, `properties`,
/// `additionalProperties` and `items`. Answers the first mismatch, with where it is.
fn check(document: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let fields = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(format!("{at}: nothing is allowed here")),
        Value::Object(fields) => fields,
        other => return Err(format!("{at}: {other} is not a schema")),
    };
    if let Some(target) = fields.get("$ref").and_then(Value::as_str) {
        let name = target.trim_start_matches("#/components/schemas/");
        let resolved = &document["components"]["schemas"][name];
        if resolved.is_null() {
            return Err(format!("{at}: {target} does not resolve"));
        }
        check(document, resolved, value, at)?;
    }
    for (keyword, all) in [("anyOf", false), ("oneOf", false), ("allOf", true)] {
        if let Some(options) = fields.get(keyword).and_then(Value::as_array) {
            let results: Vec<_> = options
                .iter()
                .map(|option| check(document, option, value, at))
                .collect();
            let passed = results.iter().filter(|result| result.is_ok()).count();
            let ok = if all {
                passed == options.len()
            } else {
                passed > 0
            };
            if !ok {
                return Err(format!("{at}: {keyword} failed: {results:?}"));
            }
        }
    }
    if let Some(types) = fields.get("type") {
        let types: Vec<&str> = match types {
            Value::String(name) => vec![name.as_str()],
            Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
            other => return Err(format!("{at}: bad type {other}")),
        };
        let matches = types.iter().any(|name| match *name {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        });
        if !matches {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(choices) = fields.get("enum").and_then(Value::as_array)
        && !choices.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {choices:?}"));
    }
    if let Some(constant) = fields.get("const")
        && constant != value
    {
        return Err(format!("{at}: {value} is not {constant}"));
    }
    if let Value::Object(object) = value {
        for name in fields
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{at}: required `{name}` is missing from {value}"));
            }
        }
        let properties = fields.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            let at = format!("{at}.{name}");
            match properties.and_then(|properties| properties.get(name)) {
                Some(property) => check(document, property, field, &at)?,
                None => {
                    if let Some(extra) = fields.get("additionalProperties") {
                        check(document, extra, field, &at)?;
                    }
                }
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, fields.get("items")) {
        for (index, item) in items.iter().enumerate() {
            check(document, item_schema, item, &format!("{at}[{index}]"))?;
        }
    }
    Ok(())
}

/// The schema the document gives for `method path` answering `status` as JSON.
fn response_schema<'a>(
    document: &'a Value,
    method: &str,
    path: &str,
    status: StatusCode,
) -> &'a Value {
    let schema = &document["paths"][path][method]["responses"][status.as_str()]["content"]["application/json"]
        ["schema"];
    assert!(!schema.is_null(), "no JSON {status} for {method} {path}");
    schema
}

#[tokio::test]
async fn real_responses_match_their_documented_schemas() {
    let harness = harness().await;
    let document = served_document(&harness).await;
    let token = Some(API_TOKEN);
    let run = harness.start_run("demo", now_micros()).await;
    let run_path = format!("/api/v1/runs/{}", run.id);
    let cases = [
        (
            "get",
            "/api/v1/dags",
            "/api/v1/dags".to_owned(),
            StatusCode::OK,
        ),
        (
            "get",
            "/api/v1/dags/{dag_id}",
            "/api/v1/dags/demo".to_owned(),
            StatusCode::OK,
        ),
        ("get", "/api/v1/runs/{run_id}", run_path, StatusCode::OK),
        (
            "get",
            "/api/v1/runs",
            "/api/v1/runs?dag_id=demo".to_owned(),
            StatusCode::OK,
        ),
        (
            "get",
            "/api/v1/runs/{run_id}",
            "/api/v1/runs/424242".to_owned(),
            StatusCode::NOT_FOUND,
        ),
        (
            "get",
            "/api/v1/runs",
            "/api/v1/runs?state=sideways".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (method, path, uri, expected) in cases {
        let (status, _, body) = request(&harness, &method.to_uppercase(), &uri, token).await;
        assert_eq!(status, expected, "{uri}: {body}");
        let schema = response_schema(&document, method, path, status);
        if let Err(mismatch) = check(&document, schema, &body, "$") {
            panic!("{method} {uri}: {mismatch}");
        }
    }
    // The run's detail carries task instances, so their schema was walked too.
    let (_, _, detail) = request(&harness, "GET", &format!("/api/v1/runs/{}", run.id), token).await;
    assert_eq!(detail["tasks"].as_array().unwrap().len(), 2);

    // The check is not vacuous: a wrong body fails it.
    let schema = response_schema(&document, "get", "/api/v1/runs/{run_id}", StatusCode::OK);
    let mut wrong = detail.clone();
    wrong["run"]["state"] = json!("sideways");
    assert!(check(&document, schema, &wrong, "$").is_err());
    let mut wrong = detail.clone();
    wrong["tasks"][0].as_object_mut().unwrap().remove("task_id");
    assert!(check(&document, schema, &wrong, "$").is_err());
    assert!(check(&document, schema, &json!({ "run": 1 }), "$").is_err());

    // A query string that does not parse is axum's plain-text 400, as documented.
    let (status, content_type, _) =
        request(&harness, "GET", "/api/v1/runs?limit=many", token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let bad_request = &document["paths"]["/api/v1/runs"]["get"]["responses"]["400"]["content"];
    assert!(bad_request.get("text/plain").is_some(), "{bad_request}");
}
