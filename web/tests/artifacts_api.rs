//! The REST API's artifact endpoints, called with `oneshot` on a real SQLite store and a real
//! local artifact store: listing, versions, streamed content and lineage.

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use common::{Harness, Setup};
use kiln_engine::dag::ArtifactKind;
use kiln_engine::store::{
    ColumnSchema, DatasetStats, OutputContent, ProducedOutput, PublishParams, RunRecord,
};
use kiln_web::app;
use tower::ServiceExt;

/// An ingest task that reads nothing, and a train task reading its output and a dataset put
/// by hand.
const PIPELINE: &str = r#"
id = "pipe"
[[tasks]]
id = "ingest"
kind = "noop"
outputs = { raw = { kind = "dataset", publish_as = "raw" } }
[[tasks]]
id = "train"
kind = "noop"
inputs = { data = { from = "ingest.raw" }, extra = { dataset = "reference" } }
outputs = { model = { kind = "model", publish_as = "m" } }
"#;

const T0: i64 = 1_800_000_000_000_000;

/// A server state with the pipeline DAG and, when `with_blobs`, the artifact store.
async fn harness(api_token: Option<&str>, with_blobs: bool) -> Harness {
    common::start(Setup {
        dags: &[("pipe.toml", PIPELINE)],
        api_token,
        artifacts: with_blobs,
        ..Setup::default()
    })
    .await
}

impl Harness {
    /// Publishes bytes by hand; answers the version number and whether it was reused.
    async fn put(&self, name: &str, kind: ArtifactKind, bytes: &[u8], at: i64) -> (i64, bool) {
        let blob = self.blob(bytes).await;
        let (version, reused) = self
            .store
            .artifact_publish(
                &PublishParams {
                    name: name.to_owned(),
                    kind,
                    blob,
                    media_type: "text/csv".to_owned(),
                    dataset: None,
                    metadata: None,
                },
                at,
            )
            .await
            .unwrap();
        (version.version, reused)
    }

    /// Publishes `reference` by hand and runs the pipeline once through the store.
    async fn run_pipeline(&self) -> RunRecord {
        self.put("reference", ArtifactKind::Dataset, b"ref\n1\n", T0)
            .await;
        let run = self.start_run("pipe", T0).await;
        let ingest = self.claim("ingest", T0).await;
        let raw = ProducedOutput {
            slot: "raw".to_owned(),
            content: OutputContent::Blob {
                blob: self.blob(b"a,b\n1,2\n").await,
                media_type: "text/csv".to_owned(),
                dataset: Some(DatasetStats {
                    columns: vec![
                        ColumnSchema {
                            name: "a".to_owned(),
                            dtype: "Int64".to_owned(),
                        },
                        ColumnSchema {
                            name: "b".to_owned(),
                            dtype: "Int64".to_owned(),
                        },
                    ],
                    rows: 1,
                }),
                metadata: None,
            },
        };
        self.complete(&ingest, vec![raw], T0).await;
        let train = self.claim("train", T0).await;
        let model = ProducedOutput {
            slot: "model".to_owned(),
            content: OutputContent::Blob {
                blob: self.blob(b"weights").await,
                media_type: "application/octet-stream".to_owned(),
                dataset: None,
                metadata: None,
            },
        };
        self.complete(&train, vec![model], T0).await;
        run
    }

    /// The id of the latest version of `name`.
    async fn version_id(&self, name: &str) -> i64 {
        self.store
            .artifact_version_get(name, None)
            .await
            .unwrap()
            .unwrap()
            .id
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Calls the app; answers the status, the headers and the raw body.
async fn send(
    harness: &Harness,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = Request::builder().method("GET").uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    harness.send(request.body(Body::empty()).unwrap()).await
}

/// Calls the app; answers the status and the JSON body.
async fn get(harness: &Harness, uri: &str) -> (StatusCode, serde_json::Value) {
    let (status, _, bytes) = send(harness, uri, None).await;
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("{uri}: not JSON ({error}): {bytes:?}"));
    (status, json)
}

/// Asserts an error status and its message.
async fn assert_error(harness: &Harness, uri: &str, status: StatusCode, message: &str) {
    let (actual, body) = get(harness, uri).await;
    assert_eq!(
        (actual, body["error"].as_str().unwrap_or_default()),
        (status, message),
        "{uri}: {body}"
    );
}

#[tokio::test]
async fn artifacts_are_listed_by_name_and_filtered_by_kind() {
    let harness = harness(None, true).await;
    harness.run_pipeline().await;
    let (status, body) = get(&harness, "/api/v1/artifacts").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<(&str, &str, i64)> = body["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|artifact| {
            (
                artifact["name"].as_str().unwrap(),
                artifact["kind"].as_str().unwrap(),
                artifact["latest_version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("m", "model", 1),
            ("raw", "dataset", 1),
            ("reference", "dataset", 1)
        ]
    );
    assert_eq!(
        body["artifacts"][0]["created_at"],
        "2027-01-15T08:00:00.000000Z"
    );
    assert_eq!(
        body["artifacts"][0]["updated_at"],
        body["artifacts"][0]["created_at"]
    );

    let (status, body) = get(&harness, "/api/v1/artifacts?kind=model").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["artifacts"].as_array().unwrap().len(), 1);
    assert_eq!(body["artifacts"][0]["name"], "m");
    let (_, body) = get(&harness, "/api/v1/artifacts?kind=file").await;
    assert_eq!(body["artifacts"], serde_json::json!([]));
    assert_error(
        &harness,
        "/api/v1/artifacts?kind=table",
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown artifact kind `table` (dataset, model or file)",
    )
    .await;
}

#[tokio::test]
async fn an_artifact_lists_its_versions_newest_first() {
    let harness = harness(None, true).await;
    assert_eq!(
        harness.put("data", ArtifactKind::File, b"one", T0).await,
        (1, false)
    );
    assert_eq!(
        harness
            .put("data", ArtifactKind::File, b"two", T0 + 1)
            .await,
        (2, false)
    );
    assert_eq!(
        harness
            .put("data", ArtifactKind::File, b"two", T0 + 2)
            .await,
        (2, true),
        "identical bytes reuse the newest version"
    );
    assert_eq!(
        harness
            .put("data", ArtifactKind::File, b"three", T0 + 3)
            .await,
        (3, false)
    );

    let (status, body) = get(&harness, "/api/v1/artifacts/data").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "data");
    assert_eq!(body["kind"], "file");
    assert_eq!(body["latest_version"], 3);
    let versions: Vec<i64> = body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|version| version["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [3, 2, 1]);
    assert_eq!(body["versions"][2]["size"], 3);
    assert_eq!(body["versions"][2]["producer"], serde_json::Value::Null);

    let (_, body) = get(&harness, "/api/v1/artifacts/data?limit=2").await;
    assert_eq!(body["versions"].as_array().unwrap().len(), 2);
    assert_error(
        &harness,
        "/api/v1/artifacts/nope",
        StatusCode::NOT_FOUND,
        "artifact `nope` not found",
    )
    .await;
}

#[tokio::test]
async fn one_version_by_number_or_latest() {
    let harness = harness(None, true).await;
    harness.run_pipeline().await;
    harness
        .put("reference", ArtifactKind::Dataset, b"ref\n2\n", T0 + 1)
        .await;

    let (status, latest) = get(&harness, "/api/v1/artifacts/reference/versions/latest").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(latest["version"], 2);
    let (status, first) = get(&harness, "/api/v1/artifacts/reference/versions/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["version"], 1);
    assert_eq!(first["name"], "reference");
    assert_eq!(first["sha256"], sha256_hex(b"ref\n1\n"));
    assert_eq!(first["size"], 6);
    assert_eq!(first["media_type"], "text/csv");

    let (_, raw) = get(&harness, "/api/v1/artifacts/raw/versions/1").await;
    assert_eq!(raw["producer"]["dag_id"], "pipe");
    assert_eq!(raw["producer"]["task_id"], "ingest");
    assert_eq!(raw["producer"]["try_number"], 1);
    assert_eq!(
        raw["dataset"],
        serde_json::json!({
            "columns": [{"name": "a", "dtype": "Int64"}, {"name": "b", "dtype": "Int64"}],
            "rows": 1
        })
    );

    for bad in ["0", "-2", "two", "1.0"] {
        assert_error(
            &harness,
            &format!("/api/v1/artifacts/reference/versions/{bad}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("version `{bad}` is not a positive integer or `latest`"),
        )
        .await;
    }
    assert_error(
        &harness,
        "/api/v1/artifacts/reference/versions/9",
        StatusCode::NOT_FOUND,
        "artifact `reference` has no version 9 (latest is 2)",
    )
    .await;
    assert_error(
        &harness,
        "/api/v1/artifacts/nope/versions/latest",
        StatusCode::NOT_FOUND,
        "artifact `nope` not found",
    )
    .await;
}

#[tokio::test]
async fn content_streams_the_exact_bytes_as_a_download() {
    let harness = harness(None, true).await;
    // Large enough to arrive in many chunks.
    let bytes: Vec<u8> = (0..700_000u32).map(|index| (index % 251) as u8).collect();
    harness
        .put("big.file", ArtifactKind::File, &bytes, T0)
        .await;
    harness
        .put("big.file", ArtifactKind::File, b"small", T0 + 1)
        .await;

    let (status, headers, body) = send(
        &harness,
        "/api/v1/artifacts/big.file/versions/1/content",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == bytes, "the bytes differ ({} bytes)", body.len());
    assert_eq!(headers[header::CONTENT_TYPE], "text/csv");
    assert_eq!(headers[header::CONTENT_LENGTH], "700000");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"big.file@1\""
    );

    let (status, headers, body) = send(
        &harness,
        "/api/v1/artifacts/big.file/versions/latest/content",
        None,
    )
    .await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"small"[..]));
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"big.file@2\""
    );

    assert_error(
        &harness,
        "/api/v1/artifacts/big.file/versions/3/content",
        StatusCode::NOT_FOUND,
        "artifact `big.file` has no version 3 (latest is 2)",
    )
    .await;
    assert_error(
        &harness,
        "/api/v1/artifacts/big.file/versions/x/content",
        StatusCode::UNPROCESSABLE_ENTITY,
        "version `x` is not a positive integer or `latest`",
    )
    .await;

    // A version whose blob has gone from the store is a 404 naming the blob.
    let gone = harness.put("gone", ArtifactKind::File, b"gone", T0).await;
    assert_eq!(gone, (1, false));
    harness
        .blobs
        .delete(&harness.blob(b"gone").await.sha256)
        .await
        .unwrap();
    let (status, body) = get(&harness, "/api/v1/artifacts/gone/versions/1/content").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["error"],
        format!(
            "blob sha256:{} is not in the artifact store",
            sha256_hex(b"gone")
        )
    );
}

#[tokio::test]
async fn corrupt_content_ends_the_body_with_an_error() {
    let harness = harness(None, true).await;
    harness
        .put("data", ArtifactKind::File, b"precious", T0)
        .await;
    let sha256 = harness.blob(b"precious").await.sha256;
    let stored = harness
        .dir
        .path()
        .join("artifacts")
        .join(kiln_engine::artifacts::blob_key(&sha256));
    std::fs::write(&stored, b"PRECIOUS").unwrap();
    let response = app(harness.state.clone())
        .oneshot(
            Request::builder()
                .uri("/api/v1/artifacts/data/versions/1/content")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    // The status is sent before the bytes are checked; the verdict is the body's end.
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await;
    let error = body.expect_err("a corrupt body ended cleanly").to_string();
    assert!(error.contains("is corrupt"), "{error}");
}

#[tokio::test]
async fn content_is_503_without_an_artifact_store() {
    let harness = harness(None, false).await;
    harness.put("data", ArtifactKind::File, b"bytes", T0).await;
    assert_error(
        &harness,
        "/api/v1/artifacts/data/versions/1/content",
        StatusCode::SERVICE_UNAVAILABLE,
        "this server has no artifact store",
    )
    .await;
    // Metadata needs no artifact store.
    let (status, _) = get(&harness, "/api/v1/artifacts/data/versions/1").await;
    assert_eq!(status, StatusCode::OK);
}

/// Lineage as `(input name, output name, task)` edges and `(version name, task)` sources.
fn lineage_summary(body: &serde_json::Value) -> (Vec<String>, Vec<String>, Vec<String>) {
    let versions = body["versions"].as_array().unwrap();
    let label = |id: &serde_json::Value| {
        let version = versions
            .iter()
            .find(|version| &version["id"] == id)
            .unwrap_or_else(|| panic!("version {id} is not in the graph: {body}"));
        format!(
            "{}@{}",
            version["name"].as_str().unwrap(),
            version["version"]
        )
    };
    let mut labels: Vec<String> = versions
        .iter()
        .map(|version| label(&version["id"]))
        .collect();
    labels.sort();
    let mut edges: Vec<String> = body["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| {
            format!(
                "{} -> {} by {}/{} run {} try {}",
                label(&edge["input"]),
                label(&edge["output"]),
                edge["attempt"]["dag_id"].as_str().unwrap(),
                edge["attempt"]["task_id"].as_str().unwrap(),
                edge["attempt"]["run_id"],
                edge["attempt"]["try_number"],
            )
        })
        .collect();
    edges.sort();
    let sources = body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|source| {
            format!(
                "{} by {}",
                label(&source["version"]),
                source["attempt"]["task_id"].as_str().unwrap()
            )
        })
        .collect();
    (labels, edges, sources)
}

#[tokio::test]
async fn lineage_goes_upstream_downstream_and_by_run() {
    let harness = harness(None, true).await;
    let run = harness.run_pipeline().await;
    let run_id = run.id;

    let (status, upstream) = get(&harness, "/api/v1/artifacts/m/versions/1/lineage").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        lineage_summary(&upstream),
        (
            vec![
                "m@1".to_owned(),
                "raw@1".to_owned(),
                "reference@1".to_owned()
            ],
            vec![
                format!("raw@1 -> m@1 by pipe/train run {run_id} try 1"),
                format!("reference@1 -> m@1 by pipe/train run {run_id} try 1"),
            ],
            vec!["raw@1 by ingest".to_owned()],
        )
    );
    let (_, explicit) = get(
        &harness,
        "/api/v1/artifacts/m/versions/latest/lineage?direction=upstream",
    )
    .await;
    assert_eq!(explicit, upstream, "upstream is the default");
    let model_id = harness.version_id("m").await;
    assert!(
        upstream["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|version| version["id"] == model_id && version["producer"]["task_id"] == "train"),
        "{upstream}"
    );

    let (status, downstream) = get(
        &harness,
        "/api/v1/artifacts/reference/versions/1/lineage?direction=downstream",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        lineage_summary(&downstream),
        (
            vec!["m@1".to_owned(), "reference@1".to_owned()],
            vec![format!(
                "reference@1 -> m@1 by pipe/train run {run_id} try 1"
            )],
            vec![],
        )
    );

    let (status, of_run) = get(&harness, &format!("/api/v1/runs/{run_id}/lineage")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lineage_summary(&of_run), lineage_summary(&upstream));

    assert_error(
        &harness,
        "/api/v1/artifacts/m/versions/1/lineage?direction=sideways",
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown lineage direction `sideways` (upstream or downstream)",
    )
    .await;
    assert_error(
        &harness,
        "/api/v1/artifacts/m/versions/2/lineage",
        StatusCode::NOT_FOUND,
        "artifact `m` has no version 2 (latest is 1)",
    )
    .await;
    assert_error(
        &harness,
        "/api/v1/runs/999/lineage",
        StatusCode::NOT_FOUND,
        "run 999 not found",
    )
    .await;
}

#[tokio::test]
async fn the_api_token_guards_the_artifact_endpoints() {
    let harness = harness(Some("api-secret"), true).await;
    harness.put("data", ArtifactKind::File, b"bytes", T0).await;
    for uri in [
        "/api/v1/artifacts",
        "/api/v1/artifacts/data",
        "/api/v1/artifacts/data/versions/1",
        "/api/v1/artifacts/data/versions/1/content",
        "/api/v1/artifacts/data/versions/1/lineage",
        "/api/v1/runs/1/lineage",
    ] {
        let (status, _, _) = send(&harness, uri, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        let (status, _, _) = send(&harness, uri, Some("wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let (status, _, body) = send(
        &harness,
        "/api/v1/artifacts/data/versions/1/content",
        Some("api-secret"),
    )
    .await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"bytes"[..]));
}
