//! Model serving and the registry over HTTP: list and describe models, predictions for known
//! rows, a 422 naming every kind of bad request, promotion and rollback, and a promotion in the
//! middle of a stream of predictions that never fails a request.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Harness, Setup};
use kiln_engine::dag::{ArtifactKind, ModelAlias};
use kiln_engine::store::PublishParams;

const SAVED: &[u8] = include_bytes!("../../tasks/tests/fixtures/logistic-v1.kiln-model.json");

async fn harness() -> Harness {
    common::start(Setup::default()).await
}

impl Harness {
    /// Publishes an envelope as the next version of `wq`, with metrics, and serves it.
    async fn deploy(&self, envelope: &[u8], accuracy: f64) -> i64 {
        let blob = self.blob(envelope).await;
        let (version, _) = self
            .store
            .artifact_publish(
                &PublishParams {
                    name: "wq".to_owned(),
                    kind: ArtifactKind::Model,
                    blob,
                    media_type: "application/vnd.kiln.model+json".to_owned(),
                    dataset: None,
                    metadata: Some(serde_json::json!({ "metrics": { "accuracy": accuracy } })),
                },
                kiln_engine::store::now_micros(),
            )
            .await
            .unwrap();
        self.store
            .model_alias_set(
                "wq",
                ModelAlias::Production,
                version.version,
                "test",
                kiln_engine::store::now_micros(),
            )
            .await
            .unwrap();
        version.version
    }

    async fn predict(&self, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
        self.call("POST", "/api/v1/models/wq/predict", body).await
    }
}

/// The fixture with another intercept: a second, different version.
fn second_version() -> Vec<u8> {
    let mut model: serde_json::Value = serde_json::from_slice(SAVED).unwrap();
    model["fitted"]["intercepts"] = serde_json::json!([-10.0]);
    model.to_string().into_bytes()
}

#[tokio::test]
async fn a_deployed_model_is_listed_described_and_answers_predictions() {
    let harness = harness().await;
    let (status, body) = harness
        .call("GET", "/api/v1/models/wq", serde_json::Value::Null)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "model `wq` not found");
    harness.deploy(SAVED, 0.76).await;

    let (status, body) = harness
        .call("GET", "/api/v1/models", serde_json::Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["models"][0]["name"], "wq");
    assert_eq!(body["models"][0]["production"], 1);

    let (status, body) = harness
        .call("GET", "/api/v1/models/wq", serde_json::Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["metrics"]["accuracy"], 0.76);
    assert_eq!(
        body["served"]["features"],
        serde_json::json!([{ "name": "alcohol", "kind": "number" }, { "name": "colour", "kind": "category" }])
    );
    assert_eq!(
        body["versions"][0]["aliases"],
        serde_json::json!(["production"])
    );

    // Known rows: alcohol 13 standardizes to 1.5; score 2·1.5 ± 0.5 + 0.25.
    let (status, body) = harness
        .predict(serde_json::json!({ "rows": [
            { "alcohol": 13.0, "colour": "white" },
            { "alcohol": 4.0, "colour": "red" },
        ] }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["predictions"], serde_json::json!([1, 0]));
    assert_eq!(body["classes"], serde_json::json!([0, 1]));
    let positive = 1.0 / (1.0 + (-3.75f64).exp());
    let probability = body["probabilities"][0][1].as_f64().unwrap();
    assert!((probability - positive).abs() < 1e-12);

    let (status, by_columns) = harness
        .predict(serde_json::json!({ "columns": { "alcohol": [13.0, 4.0], "colour": ["white", "red"] } }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_columns["predictions"], body["predictions"]);
}

#[tokio::test]
async fn every_bad_prediction_request_gets_a_422_naming_the_problem() {
    let harness = harness().await;
    let (status, body) = harness
        .predict(serde_json::json!({ "rows": [{ "alcohol": 1 }] }))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::NOT_FOUND,
            Some("model `wq` has no production version")
        )
    );
    harness.deploy(SAVED, 0.76).await;
    let cases = [
        (
            serde_json::json!({ "rows": [{ "alcohol": 1, "colour": "red" }, { "alcohol": 1 }] }),
            "row 1: missing feature `colour`",
        ),
        (
            serde_json::json!({ "rows": [{ "alcohol": 1, "colour": "red", "sugar": 2 }] }),
            "row 0: unknown feature `sugar`",
        ),
        (
            serde_json::json!({ "rows": [{ "alcohol": "high", "colour": "red" }] }),
            "row 0: feature `alcohol` must be a number, not \"high\"",
        ),
        (
            serde_json::json!({ "rows": [{ "alcohol": 1, "colour": [1] }] }),
            "row 0: feature `colour` must be a category (text or number), not [1]",
        ),
        (
            serde_json::json!({ "columns": { "alcohol": [1, 2], "colour": ["red"] } }),
            "column `colour` has 1 values where the others have 2",
        ),
        (
            serde_json::json!({ "columns": { "alcohol": 1 } }),
            "column `alcohol` must be an array",
        ),
        (
            serde_json::json!({}),
            "give either `rows` (one object per row) or `columns` (one array per feature)",
        ),
        (serde_json::json!({ "rows": [] }), "the request has no rows"),
    ];
    for (request, expected) in cases {
        let (status, body) = harness.predict(request.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{request}");
        assert_eq!(body["error"], expected, "{request}");
    }
    let too_many: Vec<serde_json::Value> = (0..10_001)
        .map(|_| serde_json::json!({ "alcohol": 1, "colour": "red" }))
        .collect();
    let (status, body) = harness
        .predict(serde_json::json!({ "rows": too_many }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error"],
        "10001 rows is more than the 10000 one request may carry"
    );
    let (status, body) = harness
        .predict(serde_json::json!({ "rows": [], "extra": 1 }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `extra`"),
        "{body}"
    );
}

#[tokio::test]
async fn promotion_and_rollback_through_the_api() {
    let harness = harness().await;
    harness.deploy(SAVED, 0.76).await;
    harness.deploy(&second_version(), 0.70).await;
    let (status, body) = harness
        .call(
            "POST",
            "/api/v1/models/wq/rollback",
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["version"].as_i64(), body["previous"].as_i64()),
        (Some(1), Some(2))
    );
    let (status, body) = harness
        .call(
            "POST",
            "/api/v1/models/wq/promote",
            serde_json::json!({ "version": 2 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["previous"], 1);
    let (status, body) = harness
        .call(
            "POST",
            "/api/v1/models/wq/promote",
            serde_json::json!({ "version": 7 }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "model `wq` version 7 not found");
    let (_, body) = harness
        .call("GET", "/api/v1/models/wq", serde_json::Value::Null)
        .await;
    let moves: Vec<i64> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["version"].as_i64().unwrap())
        .collect();
    assert_eq!(moves, [1, 2, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_during_a_stream_of_predictions_never_fails_a_request() {
    let harness = Arc::new(harness().await);
    harness.deploy(SAVED, 0.76).await;
    let row = serde_json::json!({ "rows": [{ "alcohol": 13.0, "colour": "white" }] });
    // Each stream says when it has its first answer: the promotion waits for all of them, not
    // for a time that a loaded machine may overrun.
    let answered = Arc::new(tokio::sync::Semaphore::new(0));
    let streams: Vec<_> = (0..4)
        .map(|_| {
            let harness = Arc::clone(&harness);
            let row = row.clone();
            let answered = Arc::clone(&answered);
            tokio::spawn(async move {
                let mut versions = Vec::new();
                let started = Instant::now();
                // Until the new version has answered a while, or a generous deadline.
                while started.elapsed() < Duration::from_secs(60) {
                    let (status, body) = harness.predict(row.clone()).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                    versions.push(body["version"].as_i64().unwrap());
                    if versions.len() == 1 {
                        answered.add_permits(1);
                    }
                    if versions.iter().rev().take(50).all(|version| *version == 2)
                        && versions.len() > 50
                    {
                        break;
                    }
                }
                versions
            })
        })
        .collect();
    let all_answered = tokio::time::timeout(Duration::from_secs(60), answered.acquire_many(4))
        .await
        .expect("every stream got its first answer")
        .unwrap();
    all_answered.forget();
    harness.deploy(&second_version(), 0.70).await;
    for stream in streams {
        let versions = stream.await.unwrap();
        assert_eq!(
            versions.first(),
            Some(&1),
            "the stream started on version 1"
        );
        assert_eq!(versions.last(), Some(&2), "and ended on version 2");
        let switches = versions
            .windows(2)
            .filter(|pair| pair[0] != pair[1])
            .count();
        assert_eq!(switches, 1, "one swap, never back: {versions:?}");
    }
}
