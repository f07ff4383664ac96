//! Handler tests: `web::app(state)` called with `tower::ServiceExt::oneshot`, on a real SQLite
//! store and a real scheduler.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Harness, Setup};

async fn harness(api_token: Option<&str>) -> Harness {
    common::start(Setup {
        dags: &[
            ("demo.toml", common::TWO_TASK_DAG),
            (
                "broken.toml",
                "id = \"broken\"\n[[tasks]]\nid = \"x\"\nkind = \"nope\"\n",
            ),
        ],
        api_token,
        artifacts: false,
        ..Setup::default()
    })
    .await
}

async fn call(
    harness: &Harness,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let (status, _, bytes) = harness
        .send(request.body(Body::from(body.to_owned())).unwrap())
        .await;
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
    };
    (status, json)
}

#[tokio::test]
async fn dags_are_listed_with_import_errors() {
    let harness = harness(None).await;
    let (status, body) = call(&harness, "GET", "/api/v1/dags", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["dags"][0]["id"], "demo");
    assert_eq!(body["dags"][0]["tasks"], 2);
    let errors = body["import_errors"][0]["errors"].as_str().unwrap();
    assert!(errors.contains("unknown plugin kind `nope`"), "{errors}");
    let (status, body) = call(&harness, "GET", "/api/v1/dags/demo", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["params"]["count"]["type"], "integer");
    assert_eq!(body["task_list"][1]["depends_on"][0], "first");
    let (status, body) = call(&harness, "GET", "/api/v1/dags/nope", None, "").await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (StatusCode::NOT_FOUND, "DAG `nope` not found")
    );
}

#[tokio::test]
async fn triggering_checks_json_and_params() {
    let harness = harness(None).await;
    let (status, body) = call(
        &harness,
        "POST",
        "/api/v1/dags/demo/runs",
        None,
        "{\"params\": {",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON body: EOF while parsing"),
        "{body}"
    );
    let (status, body) = call(
        &harness,
        "POST",
        "/api/v1/dags/demo/runs",
        None,
        r#"{"parms": {}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `parms`"),
        "{body}"
    );
    let (status, body) = call(
        &harness,
        "POST",
        "/api/v1/dags/demo/runs",
        None,
        r#"{"params": {"count": "two"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("param `count`: expected integer, got a string"),
        "{body}"
    );
    let (status, _) = call(&harness, "POST", "/api/v1/dags/nope/runs", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(&harness, "POST", "/api/v1/dags/demo/runs", None, "").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["params"], serde_json::json!({ "count": 1 }));
    assert_eq!(body["state"], "running");
    let run_id = body["id"].as_i64().unwrap();
    let (status, body) = call(&harness, "GET", &format!("/api/v1/runs/{run_id}"), None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["tasks"][0]["state"], "queued");
    assert_eq!(body["tasks"][1]["state"], "scheduled");
    let (status, _) = call(&harness, "GET", "/api/v1/runs/9999", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(&harness, "GET", "/api/v1/runs?state=bogus", None, "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = call(
        &harness,
        "GET",
        &format!("/api/v1/runs/{run_id}/tasks/first/logs?try_number=7"),
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = call(
        &harness,
        "POST",
        &format!("/api/v1/runs/{run_id}/tasks/first/mark"),
        None,
        r#"{"state": "queued"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = call(
        &harness,
        "POST",
        &format!("/api/v1/runs/{run_id}/cancel"),
        None,
        "",
    )
    .await;
    assert_eq!(
        (status, body["cancelled"].as_bool()),
        (StatusCode::OK, Some(true))
    );
}

#[tokio::test]
async fn an_api_token_guards_every_call() {
    let harness = harness(Some("api-secret")).await;
    for (method, uri) in [
        ("GET", "/api/v1/dags"),
        ("POST", "/api/v1/dags/demo/runs"),
        ("POST", "/api/v1/runs/1/cancel"),
    ] {
        let (status, body) = call(&harness, method, uri, None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(body, serde_json::json!({ "error": "unauthorized" }));
        let (status, _) = call(&harness, method, uri, Some("wrong"), "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = call(&harness, "GET", "/api/v1/dags", Some("api-secret"), "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&harness, "GET", "/healthz", None, "").await;
    assert_eq!(status, StatusCode::OK, "liveness needs no token");
}

#[tokio::test]
async fn the_execution_api_claims_heartbeats_and_completes() {
    let harness = harness(None).await;
    call(&harness, "POST", "/api/v1/dags/demo/runs", None, "").await;
    let claim = r#"{"worker_id": "w", "queues": ["default"], "limit": 5, "wait_ms": 0}"#;
    let (status, body) = call(&harness, "POST", "/api/v1/exec/claim", Some("wrong"), claim).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "unauthorized" })
        )
    );
    let (status, body) = call(
        &harness,
        "POST",
        "/api/v1/exec/claim",
        Some("api-or-anything"),
        claim,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let register = r#"{"worker_id": "w", "queues": ["default"], "concurrency": 2, "hostname": "h", "pid": 1, "version": "0"}"#;
    let (status, body) = call(
        &harness,
        "POST",
        "/api/v1/exec/register",
        Some("worker-secret"),
        register,
    )
    .await;
    assert_eq!(
        (status, body["lease_ms"].as_u64()),
        (StatusCode::OK, Some(30_000))
    );
    let (status, body) = call(
        &harness,
        "POST",
        "/api/v1/exec/claim",
        Some("worker-secret"),
        claim,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let task = &body["tasks"][0];
    assert_eq!(
        (
            task["task_id"].as_str(),
            task["kind"].as_str(),
            task["try_number"].as_i64()
        ),
        (Some("first"), Some("noop"), Some(1))
    );
    let lease = serde_json::json!({ "worker_id": "w", "running": [{ "task_instance_id": task["task_instance_id"], "fence": task["fence"] }] });
    let (status, body) = call(
        &harness,
        "POST",
        "/api/v1/exec/heartbeat",
        Some("worker-secret"),
        &lease.to_string(),
    )
    .await;
    assert_eq!(
        (status, body["stop"].clone()),
        (StatusCode::OK, serde_json::json!([]))
    );
    let done = serde_json::json!({
        "worker_id": "w",
        "completions": [{ "task_instance_id": task["task_instance_id"], "fence": task["fence"], "success": true }]
    });
    let (status, body) = call(
        &harness,
        "POST",
        "/api/v1/exec/complete",
        Some("worker-secret"),
        &done.to_string(),
    )
    .await;
    assert_eq!(
        (status, body["results"][0]["outcome"].as_str()),
        (StatusCode::OK, Some("succeeded"))
    );
    let (_, body) = call(
        &harness,
        "POST",
        "/api/v1/exec/complete",
        Some("worker-secret"),
        &done.to_string(),
    )
    .await;
    assert_eq!(
        body["results"][0]["outcome"], "refused",
        "a duplicate completion is refused"
    );
    assert_eq!(body["results"][0]["state"], "success");
    let (status, body) = call(
        &harness,
        "POST",
        "/api/v1/exec/claim",
        Some("worker-secret"),
        r#"{"worker_id": "w"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing field `queues`"),
        "{body}"
    );
}

#[tokio::test]
async fn a_released_task_is_a_lost_attempt_and_an_unclaimed_one_never_ran() {
    let harness = harness(None).await;
    call(&harness, "POST", "/api/v1/dags/demo/runs", None, "").await;
    let claim = r#"{"worker_id": "w", "queues": ["default"], "limit": 5, "wait_ms": 0}"#;
    let post = |uri: &'static str, body: String| {
        let harness = &harness;
        async move { call(harness, "POST", uri, Some("worker-secret"), &body).await }
    };
    let lease_of = |body: &serde_json::Value| {
        let task = &body["tasks"][0];
        serde_json::json!({ "worker_id": "w", "running": [{ "task_instance_id": task["task_instance_id"], "fence": task["fence"] }] })
            .to_string()
    };
    let (_, claimed) = post("/api/v1/exec/claim", claim.to_owned()).await;
    let (status, body) = post("/api/v1/exec/unclaim", lease_of(&claimed)).await;
    assert_eq!(
        (status, body["released"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let (_, claimed) = post("/api/v1/exec/claim", claim.to_owned()).await;
    assert_eq!(
        claimed["tasks"][0]["try_number"].as_i64(),
        Some(1),
        "the undone claim cost no try"
    );
    let (status, _) = post("/api/v1/exec/release", lease_of(&claimed)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, runs) = call(&harness, "GET", "/api/v1/runs", None, "").await;
    let run_id = runs["runs"][0]["id"].as_i64().unwrap();
    let (_, detail) = call(&harness, "GET", &format!("/api/v1/runs/{run_id}"), None, "").await;
    let first = &detail["tasks"][0];
    assert_eq!(
        (
            first["state"].as_str(),
            first["try_number"].as_i64(),
            first["max_tries"].as_i64(),
            first["lost_attempts"].as_i64()
        ),
        (Some("queued"), Some(1), Some(2), Some(1)),
        "{first}"
    );
    assert_eq!(
        first["error"].as_str(),
        Some("handed back by worker `w` shutting down")
    );
}

#[tokio::test]
async fn unknown_endpoints_are_404_with_a_message() {
    let harness = harness(None).await;
    let (status, body) = call(&harness, "GET", "/api/v2/anything", None, "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::NOT_FOUND,
            Some("no such endpoint: /api/v2/anything")
        )
    );
}
