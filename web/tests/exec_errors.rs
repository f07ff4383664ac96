//! The execution API's answers to ids that do not exist (404) and attempts that have ended
//! (409, or a per-item answer on the batch calls): never a 500, always a reason, and nothing
//! applied by a refused request. On SQLite and on PostgreSQL.

#[macro_use]
mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Db, Harness, Setup};
use kiln_engine::store::{ClaimedTask, now_micros};
use serde_json::{Value, json};

const UNKNOWN: i64 = 987_654;

async fn harness(db: Db) -> Option<Harness> {
    common::start_on(
        Setup {
            dags: &[("demo.toml", common::TWO_TASK_DAG)],
            ..Setup::default()
        },
        db,
    )
    .await
}

/// A running attempt of `first`, claimed by worker `w`.
async fn running(harness: &Harness) -> ClaimedTask {
    let now = now_micros();
    harness.start_run("demo", now).await;
    harness.claim("first", now).await
}

async fn exec(harness: &Harness, path: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::builder()
        .method("POST")
        .uri(format!("/api/v1/exec/{path}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer worker-secret")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, bytes) = harness.send(request).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn chunk(task_instance_id: i64, try_number: i64, seq: i64, text: &str) -> Value {
    json!({ "task_instance_id": task_instance_id, "try_number": try_number, "seq": seq, "text": text })
}

fn success(task_instance_id: i64, fence: i64) -> Value {
    json!({ "task_instance_id": task_instance_id, "fence": fence, "success": true })
}

fn lease(task_instance_id: i64, fence: i64) -> Value {
    json!({ "task_instance_id": task_instance_id, "fence": fence })
}

async fn log_text(harness: &Harness, task: &ClaimedTask) -> String {
    harness
        .store
        .log_read(task.task_instance_id, task.try_number, -1, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|chunk| chunk.chunk)
        .collect()
}

async fn state_of(harness: &Harness, task: &ClaimedTask) -> (String, Option<i64>) {
    let instances = harness.store.task_instance_list(task.run_id).await.unwrap();
    let instance = instances
        .iter()
        .find(|instance| instance.id == task.task_instance_id)
        .unwrap();
    (instance.state.to_string(), instance.lease_expires_at)
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

async fn logs_for_an_unknown_task_instance_are_404_and_store_nothing(db: Db) {
    let Some(harness) = harness(db).await else {
        return;
    };
    let task = running(&harness).await;
    let id = task.task_instance_id;
    let (status, body) = exec(
        &harness,
        "logs",
        json!({ "worker_id": "w", "chunks": [chunk(id, 1, 0, "mine\n"), chunk(UNKNOWN, 1, 0, "x")] }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error(&body), format!("task instance {UNKNOWN} not found"));
    assert_eq!(log_text(&harness, &task).await, "", "all or nothing");

    let (status, body) = exec(
        &harness,
        "logs",
        json!({ "worker_id": "w", "chunks": [chunk(id, 7, 0, "x")] }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        error(&body),
        format!("attempt 7 of task instance {id} not found")
    );

    let (status, body) = exec(
        &harness,
        "logs",
        json!({ "worker_id": "w", "chunks": [chunk(id, 1, 0, "mine\n")] }),
    )
    .await;
    assert_eq!((status, body["stored"].as_i64()), (StatusCode::OK, Some(1)));
    assert_eq!(log_text(&harness, &task).await, "mine\n");
    harness.cleanup().await;
}

async fn logs_for_an_ended_attempt_are_409(db: Db) {
    let Some(harness) = harness(db).await else {
        return;
    };
    let task = running(&harness).await;
    let id = task.task_instance_id;
    let (status, body) = exec(
        &harness,
        "complete",
        json!({ "worker_id": "w", "completions": [success(id, task.fence)], "logs": [chunk(id, 1, 0, "last\n")] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["outcome"], "succeeded");

    let (status, body) = exec(
        &harness,
        "logs",
        json!({ "worker_id": "w", "chunks": [chunk(id, 1, 1, "late\n")] }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        error(&body),
        format!(
            "attempt 1 of task instance {id} has ended (the task instance is success, on try 1); it takes no more log chunks"
        )
    );
    assert_eq!(log_text(&harness, &task).await, "last\n");
    harness.cleanup().await;
}

async fn complete_naming_an_unknown_task_instance_is_404_and_applies_nothing(db: Db) {
    let Some(harness) = harness(db).await else {
        return;
    };
    let task = running(&harness).await;
    let id = task.task_instance_id;
    // The case: a completion whose log chunk names a task instance that does not exist.
    let (status, body) = exec(
        &harness,
        "complete",
        json!({
            "worker_id": "w",
            "completions": [success(id, task.fence)],
            "logs": [chunk(id, 1, 0, "mine\n"), chunk(UNKNOWN, 1, 0, "x")],
        }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error(&body), format!("task instance {UNKNOWN} not found"));
    assert_eq!(state_of(&harness, &task).await.0, "running");
    assert_eq!(log_text(&harness, &task).await, "");

    let (status, body) = exec(
        &harness,
        "complete",
        json!({
            "worker_id": "w",
            "completions": [success(id, task.fence), success(UNKNOWN, 1), success(UNKNOWN + 1, 1)],
        }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        error(&body),
        format!("task instances {UNKNOWN}, {} not found", UNKNOWN + 1)
    );
    assert_eq!(state_of(&harness, &task).await.0, "running");
    harness.cleanup().await;
}

async fn a_stale_completion_is_refused_in_its_result_and_its_logs_dropped(db: Db) {
    let Some(harness) = harness(db).await else {
        return;
    };
    let task = running(&harness).await;
    let id = task.task_instance_id;
    let (status, body) = exec(
        &harness,
        "complete",
        json!({ "worker_id": "w", "completions": [success(id, task.fence)], "logs": [chunk(id, 1, 0, "last\n")] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The same report again, as a worker that missed the answer sends it, with more chunks.
    let (status, body) = exec(
        &harness,
        "complete",
        json!({
            "worker_id": "w",
            "completions": [success(id, task.fence)],
            "logs": [chunk(id, 1, 1, "after the end\n"), chunk(id, 9, 0, "no such try\n")],
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["outcome"], "refused");
    assert_eq!(body["results"][0]["state"], "success");
    assert!(
        body["results"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("has moved on"),
        "{body}"
    );
    assert_eq!(log_text(&harness, &task).await, "last\n");
    assert!(
        harness
            .store
            .log_read(id, 9, -1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    harness.cleanup().await;
}

async fn heartbeat_naming_an_unknown_task_instance_is_404_and_extends_nothing(db: Db) {
    let Some(harness) = harness(db).await else {
        return;
    };
    let task = running(&harness).await;
    let id = task.task_instance_id;
    let (_, lease_before) = state_of(&harness, &task).await;
    let (status, body) = exec(
        &harness,
        "heartbeat",
        json!({ "worker_id": "w", "running": [lease(id, task.fence), lease(UNKNOWN, 1)] }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error(&body), format!("task instance {UNKNOWN} not found"));
    assert_eq!(state_of(&harness, &task).await.1, lease_before);

    // A lease that moved on is the answer's `stop`, not an error.
    let (status, body) = exec(
        &harness,
        "heartbeat",
        json!({ "worker_id": "w", "running": [lease(id, task.fence + 1)] }),
    )
    .await;
    assert_eq!((status, &body["stop"]), (StatusCode::OK, &json!([id])));
    let (status, body) = exec(
        &harness,
        "heartbeat",
        json!({ "worker_id": "w", "running": [lease(id, task.fence)] }),
    )
    .await;
    assert_eq!((status, &body["stop"]), (StatusCode::OK, &json!([])));
    harness.cleanup().await;
}

async fn release_naming_an_unknown_task_instance_is_404_and_releases_nothing(db: Db) {
    let Some(harness) = harness(db).await else {
        return;
    };
    let task = running(&harness).await;
    let id = task.task_instance_id;
    let (status, body) = exec(
        &harness,
        "release",
        json!({ "worker_id": "w", "running": [lease(id, task.fence), lease(UNKNOWN, 1)] }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error(&body), format!("task instance {UNKNOWN} not found"));
    assert_eq!(state_of(&harness, &task).await.0, "running");

    // A lease that moved on has nothing to give back.
    let (status, body) = exec(
        &harness,
        "release",
        json!({ "worker_id": "w", "running": [lease(id, task.fence + 1)] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(state_of(&harness, &task).await.0, "running");
    let (status, body) = exec(
        &harness,
        "release",
        json!({ "worker_id": "w", "running": [lease(id, task.fence)] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(state_of(&harness, &task).await.0, "queued");
    harness.cleanup().await;
}

async fn unclaim_naming_an_unknown_task_instance_is_404_and_undoes_nothing(db: Db) {
    let Some(harness) = harness(db).await else {
        return;
    };
    let task = running(&harness).await;
    let (status, body) = exec(
        &harness,
        "unclaim",
        json!({ "worker_id": "w", "running": [lease(task.task_instance_id, task.fence), lease(UNKNOWN, 0)] }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(error(&body).contains(&UNKNOWN.to_string()), "{body}");
    assert_eq!(state_of(&harness, &task).await.0, "running");
    harness.cleanup().await;
}

async fn claims_that_cannot_be_served_are_422_at_once(db: Db) {
    let Some(harness) = harness(db).await else {
        return;
    };
    // A long poll of more than the longest wait, for no tasks, or for nobody: each is refused
    // before it waits, naming the field.
    for (body, field) in [
        (
            json!({ "worker_id": "w", "queues": ["default"], "limit": 0, "wait_ms": 0 }),
            "limit",
        ),
        (
            json!({ "worker_id": "", "queues": ["default"], "limit": 1, "wait_ms": 0 }),
            "worker_id",
        ),
        (
            json!({ "worker_id": "w", "queues": ["default"], "limit": 1, "wait_ms": 30_001 }),
            "wait_ms",
        ),
        (
            json!({ "worker_id": "w", "queues": [], "limit": 1, "wait_ms": 0 }),
            "queues",
        ),
    ] {
        let (status, answer) = exec(&harness, "claim", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert!(error(&answer).contains(field), "{body}: {answer}");
    }
    harness.cleanup().await;
}

on_both_backends!(
    unclaim_naming_an_unknown_task_instance_is_404_and_undoes_nothing,
    claims_that_cannot_be_served_are_422_at_once,
    logs_for_an_unknown_task_instance_are_404_and_store_nothing,
    logs_for_an_ended_attempt_are_409,
    complete_naming_an_unknown_task_instance_is_404_and_applies_nothing,
    a_stale_completion_is_refused_in_its_result_and_its_logs_dropped,
    heartbeat_naming_an_unknown_task_instance_is_404_and_extends_nothing,
    release_naming_an_unknown_task_instance_is_404_and_releases_nothing,
);
