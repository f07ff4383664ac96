//! The probes judge the scheduler's timed loop, not the socket: `/healthz` fails once the loop
//! has not completed a tick for the stall limit, `/readyz` as soon as the loop cannot reach its
//! store, both with the reason; neither needs a token.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Harness, Setup};
use kiln_engine::duties::LEADER_DUTY;

async fn get(harness: &Harness, uri: &str) -> (StatusCode, String) {
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let (status, _, bytes) = harness.send(request).await;
    (status, String::from_utf8(bytes).unwrap())
}

#[tokio::test]
async fn the_probes_follow_the_timed_loop() {
    let harness = common::start(Setup {
        dags: &[("demo.toml", common::TWO_TASK_DAG)],
        api_token: Some("api-secret"),
        ..Setup::default()
    })
    .await;
    let health = harness.state.scheduler().health().clone();

    // A new server is live at once, and ready once its loop has reached the store.
    assert_eq!(
        get(&harness, "/healthz").await,
        (StatusCode::OK, "ok".to_owned())
    );
    let (status, body) = get(&harness, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    health.succeeded(LEADER_DUTY);
    health.tick_completed();
    let (status, body) = get(&harness, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["duties"][0]["name"], LEADER_DUTY);
    assert_eq!(ready["duties"][0]["ok"], true);

    // The store fails: not ready at once, with the error; still live.
    health.failed(
        LEADER_DUTY,
        "could not renew or elect the leader",
        &"connection reset",
    );
    let (status, body) = get(&harness, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    assert!(
        ready["reason"]
            .as_str()
            .unwrap()
            .contains("connection reset"),
        "{ready}"
    );
    assert_eq!(ready["duties"][0]["consecutive_failures"], 1);
    assert_eq!(get(&harness, "/healthz").await.0, StatusCode::OK);

    // No tick for longer than the stall limit: not live, and the reason says why.
    health.set_stall_limit(Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = get(&harness, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("has not completed a tick"), "{body}");
    assert!(body.contains("connection reset"), "{body}");

    // A tick that reaches the store brings both back.
    health.succeeded(LEADER_DUTY);
    health.tick_completed();
    assert_eq!(get(&harness, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&harness, "/readyz").await.0, StatusCode::OK);
}
