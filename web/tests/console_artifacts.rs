//! The console's artifact pages, called with `oneshot` on a real SQLite store and a real local
//! artifact store: the artifacts list, a name's versions, a version with its CSV preview and
//! lineage graph, the artifacts on a task attempt's page and a run's lineage.

mod common;

use axum::http::StatusCode;
use common::{Browser, Harness, Page, Setup};
use kiln_engine::artifacts::{BlobRef, Sha256Digest};
use kiln_engine::dag::ArtifactKind;
use kiln_engine::store::{
    ColumnSchema, DatasetStats, OutputContent, ProducedOutput, PublishParams, RunRecord,
};
use sha2::{Digest, Sha256};

/// Three steps, each reading the one before: raw data, a cleaned copy, a model.
const PIPELINE: &str = r#"
id = "pipe"
[[tasks]]
id = "ingest"
kind = "noop"
outputs = { raw = { kind = "dataset", publish_as = "raw" } }
[[tasks]]
id = "clean"
kind = "noop"
inputs = { raw = { from = "ingest.raw" } }
outputs = { clean = { kind = "dataset" } }
[[tasks]]
id = "train"
kind = "noop"
inputs = { data = { from = "clean.clean" } }
outputs = { model = { kind = "model", publish_as = "m" } }
"#;

/// A DAG whose tasks read and write nothing.
const PLAIN: &str = r#"
id = "plain"
[[tasks]]
id = "only"
kind = "noop"
"#;

const T0: i64 = 1_800_000_000_000_000;
const SECOND: i64 = 1_000_000;

/// A server with the two DAGs and, when `with_blobs`, the artifact store.
async fn harness(with_blobs: bool) -> Harness {
    common::start(Setup {
        dags: &[("pipe.toml", PIPELINE), ("plain.toml", PLAIN)],
        artifacts: with_blobs,
        ..Setup::default()
    })
    .await
}

fn digest(bytes: &[u8]) -> Sha256Digest {
    Sha256Digest::from_bytes(Sha256::digest(bytes).into())
}

/// A CSV of `rows` rows after its header, with a quoted field holding a comma and a quote.
fn people(rows: usize, tag: &str) -> String {
    let mut text = String::from("id,name,note\n");
    for row in 1..=rows {
        text.push_str(&format!("{row},\"Smith, J{row}\",\"said \"\"{tag}\"\"\"\n"));
    }
    text
}

fn people_stats(rows: u64) -> DatasetStats {
    let column = |name: &str, dtype: &str| ColumnSchema {
        name: name.to_owned(),
        dtype: dtype.to_owned(),
    };
    DatasetStats {
        columns: vec![
            column("id", "Int64"),
            column("name", "String"),
            column("note", "String"),
        ],
        rows,
    }
}

impl Harness {
    /// Claims `task_id` and completes it with one output of these bytes.
    async fn step(
        &self,
        task_id: &str,
        slot: &str,
        bytes: &[u8],
        media_type: &str,
        dataset: Option<DatasetStats>,
        now: i64,
    ) {
        let task = self.claim(task_id, now).await;
        let output = ProducedOutput {
            slot: slot.to_owned(),
            content: OutputContent::Blob {
                blob: self.blob(bytes).await,
                media_type: media_type.to_owned(),
                dataset,
                metadata: None,
            },
        };
        self.complete(&task, vec![output], now).await;
    }

    /// Runs the pipeline once through the store, with `raw` as the ingested bytes.
    async fn run_pipeline(&self, raw: &str, rows: u64, now: i64) -> RunRecord {
        let run = self.start_run("pipe", now).await;
        self.step(
            "ingest",
            "raw",
            raw.as_bytes(),
            "text/csv",
            Some(people_stats(rows)),
            now,
        )
        .await;
        let cleaned = raw.replace("said", "wrote");
        self.step(
            "clean",
            "clean",
            cleaned.as_bytes(),
            "text/csv; charset=utf-8",
            None,
            now,
        )
        .await;
        self.step(
            "train",
            "model",
            format!("weights of {raw}").as_bytes(),
            "application/octet-stream",
            None,
            now,
        )
        .await;
        run
    }

    /// Publishes a version by hand; `stored` says whether its bytes reach the artifact store.
    async fn put(&self, name: &str, bytes: &[u8], media_type: &str, stored: bool) {
        let blob = if stored {
            self.blob(bytes).await
        } else {
            BlobRef {
                sha256: digest(bytes),
                size: bytes.len() as u64,
            }
        };
        self.store
            .artifact_publish(
                &PublishParams {
                    name: name.to_owned(),
                    kind: ArtifactKind::File,
                    blob,
                    media_type: media_type.to_owned(),
                    dataset: None,
                    metadata: None,
                },
                T0,
            )
            .await
            .unwrap();
    }
}

impl Page {
    /// The x coordinate of the node labelled `label` in a drawn graph.
    #[track_caller]
    fn node_x(&self, label: &str) -> f64 {
        let end = self
            .body
            .find(&format!(">{label}</text>"))
            .unwrap_or_else(|| panic!("no node {label:?} in\n{}", self.body));
        let before = &self.body[..end];
        let rect = before.rfind("<rect x=\"").unwrap() + "<rect x=\"".len();
        let value = &before[rect..];
        value[..value.find('"').unwrap()].parse().unwrap()
    }
}

async fn get(harness: &Harness, uri: &str) -> Page {
    Browser::new(harness).get(uri).await
}

/// Asserts an error page's status and the message it names.
async fn assert_error(harness: &Harness, uri: &str, status: StatusCode, message: &str) {
    let page = get(harness, uri).await;
    assert_eq!(page.status, status, "{uri}: {}", page.body);
    assert!(
        page.has(message),
        "{uri}: missing {message:?} in\n{}",
        page.body
    );
}

#[tokio::test]
async fn the_artifacts_page_lists_names_by_kind() {
    let harness = harness(true).await;
    let empty = get(&harness, "/artifacts").await;
    assert_eq!(empty.status, StatusCode::OK);
    empty.assert_has(&[
        "No artifact has been published yet.",
        r#"<a href="/artifacts" aria-current="page">Artifacts</a>"#,
    ]);
    let dags = get(&harness, "/dags").await;
    assert!(
        dags.has(r#"<a href="/artifacts">Artifacts</a>"#),
        "the navigation links the artifacts: {}",
        dags.body
    );

    harness.run_pipeline(&people(3, "a"), 3, T0).await;
    let all = get(&harness, "/artifacts").await;
    assert_eq!(all.status, StatusCode::OK);
    all.assert_has(&[
        r#"href="/artifacts/raw""#,
        r#"href="/artifacts/pipe.clean.clean""#,
        r#"href="/artifacts/m""#,
        r#"href="/artifacts/m/1">v1</a>"#,
        r#"<span class="kind kind-model">model</span>"#,
        "3 of 3 artifacts",
        "<time datetime=",
    ]);

    let models = get(&harness, "/artifacts?kind=model").await;
    models.assert_has(&[
        r#"href="/artifacts/m""#,
        r#"<a href="/artifacts?kind=model" aria-current="page">Models</a>"#,
    ]);
    assert!(!models.has(r#"href="/artifacts/raw""#), "{}", models.body);
    let datasets = get(&harness, "/artifacts?kind=dataset").await;
    datasets.assert_has(&[
        r#"href="/artifacts/raw""#,
        r#"href="/artifacts/pipe.clean.clean""#,
    ]);
    assert!(!datasets.has(r#"href="/artifacts/m""#), "{}", datasets.body);
    let files = get(&harness, "/artifacts?kind=file").await;
    files.assert_has(&[
        "No artifact of kind file has been published yet.",
        "0 of 0 artifacts",
    ]);

    let searched = get(&harness, "/artifacts?q=CLEAN").await;
    searched.assert_has(&[r#"href="/artifacts/pipe.clean.clean""#, "1 of 3 artifacts"]);
    assert!(
        !searched.has(r#"href="/artifacts/raw""#),
        "{}",
        searched.body
    );

    assert_error(
        &harness,
        "/artifacts?kind=table",
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown artifact kind `table` (dataset, model or file)",
    )
    .await;
}

#[tokio::test]
async fn an_artifact_page_lists_its_versions_with_their_producers() {
    let harness = harness(true).await;
    let first_raw = people(3, "a");
    let second_raw = people(5, "b");
    let first = harness.run_pipeline(&first_raw, 3, T0).await;
    let second = harness.run_pipeline(&second_raw, 5, T0 + SECOND).await;
    let page = get(&harness, "/artifacts/raw").await;
    assert_eq!(page.status, StatusCode::OK);
    let first_sha = digest(first_raw.as_bytes()).to_hex();
    let second_sha = digest(second_raw.as_bytes()).to_hex();
    page.assert_has(&[
        "<h1>raw</h1>",
        r#"href="/artifacts/raw/1">v1</a>"#,
        r#"href="/artifacts/raw/2">v2</a>"#,
        &format!("{} B", first_raw.len()),
        &format!(r#"<code title="{first_sha}">{}</code>"#, &first_sha[..12]),
        &format!(r#"<code title="{second_sha}">{}</code>"#, &second_sha[..12]),
        "<code>text/csv</code>",
        &format!(
            r#"href="/runs/{}/tasks/ingest?try=1">pipe/ingest</a>"#,
            first.id
        ),
        &format!(r#"href="/runs/{}">run {}</a>"#, first.id, first.id),
        &format!(r#"href="/runs/{}">run {}</a>"#, second.id, second.id),
        "3 rows",
        "5 rows",
        "id (Int64), name (String), note (String)",
    ]);
    // Newest first.
    assert!(
        page.body.find("/artifacts/raw/2").unwrap() < page.body.find("/artifacts/raw/1").unwrap()
    );

    harness.put("notes", b"hello", "text/plain", true).await;
    let by_hand = get(&harness, "/artifacts/notes").await;
    by_hand.assert_has(&["published by hand", "5 B"]);

    assert_error(
        &harness,
        "/artifacts/nope",
        StatusCode::NOT_FOUND,
        "artifact `nope` not found",
    )
    .await;
}

#[tokio::test]
async fn a_version_page_shows_details_a_csv_preview_and_a_download() {
    let harness = harness(true).await;
    let raw = people(25, "hi");
    let run = harness.run_pipeline(&raw, 25, T0).await;
    let page = get(&harness, "/artifacts/raw/1").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_has(&[
        "<h1>raw@1</h1>",
        &digest(raw.as_bytes()).to_hex(),
        &format!("({} bytes)", raw.len()),
        &format!(r#"href="/runs/{}/tasks/ingest?try=1""#, run.id),
        r#"href="/api/v1/artifacts/raw/versions/1/content""#,
        "<dt>Rows</dt><dd>25</dd>",
        "<code>note</code>",
        // The header and the first rows, quoted fields unquoted.
        "<th>id</th><th>name</th><th>note</th>",
        "<tr><td>1</td><td>Smith, J1</td><td>said &quot;hi&quot;</td></tr>",
        "<tr><td>20</td><td>Smith, J20</td>",
        "The first 20 rows.",
    ]);
    assert!(!page.has("<td>21</td>"), "20 rows at most: {}", page.body);

    // A version larger than the preview reads: its head only.
    let big = people(3_000, "big");
    assert!(big.len() > 64 * 1024);
    harness.put("big", big.as_bytes(), "text/csv", true).await;
    let preview = get(&harness, "/artifacts/big/1").await;
    preview.assert_has(&[
        "<tr><td>20</td><td>Smith, J20</td>",
        "The first 20 rows, from the first 64.0 KiB of the file.",
    ]);
    // Whatever its media type's parameters, a CSV is previewed.
    let cleaned = get(&harness, "/artifacts/pipe.clean.clean/1").await;
    cleaned.assert_has(&[
        "<tr><td>20</td><td>Smith, J20</td><td>wrote &quot;hi&quot;</td></tr>",
        "The first 20 rows.",
    ]);
    // A short one is shown whole.
    harness
        .put("small", b"a,b\n1,2\n3,4", "text/csv; charset=utf-8", true)
        .await;
    let small = get(&harness, "/artifacts/small/1").await;
    small.assert_has(&[
        "<tr><td>1</td><td>2</td></tr><tr><td>3</td><td>4</td></tr>",
        "2 rows, the whole file.",
    ]);
    let model = get(&harness, "/artifacts/m/latest").await;
    assert_eq!(model.status, StatusCode::OK);
    model.assert_has(&[
        "<h1>m@1</h1>",
        "No preview is available for <code>application/octet-stream</code>",
    ]);
    harness.put("lost", b"a,b\n1,2\n", "text/csv", false).await;
    let lost = get(&harness, "/artifacts/lost/1").await;
    assert_eq!(lost.status, StatusCode::OK);
    lost.assert_has(&["No preview: its bytes are missing from the artifact store."]);

    assert_error(
        &harness,
        "/artifacts/raw/9",
        StatusCode::NOT_FOUND,
        "artifact `raw` has no version 9 (the latest is 1)",
    )
    .await;
    assert_error(
        &harness,
        "/artifacts/raw/abc",
        StatusCode::NOT_FOUND,
        "artifact `raw` has no version `abc`",
    )
    .await;
    assert_error(
        &harness,
        "/artifacts/nope/1",
        StatusCode::NOT_FOUND,
        "artifact `nope` not found",
    )
    .await;
    assert_error(
        &harness,
        "/artifacts/raw/1?direction=sideways",
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown lineage direction `sideways` (upstream or downstream)",
    )
    .await;
}

#[tokio::test]
async fn without_an_artifact_store_a_version_has_no_preview() {
    let harness = harness(false).await;
    harness.run_pipeline(&people(2, "x"), 2, T0).await;
    let page = get(&harness, "/artifacts/raw/1").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_has(&["No preview: this server has no artifact store configured."]);
}

#[tokio::test]
async fn a_parquet_version_shows_the_preview_its_writer_stored() {
    let harness = harness(true).await;
    let blob = harness.blob(b"PAR1 not really parquet").await;
    harness
        .store
        .artifact_publish(
            &PublishParams {
                name: "table".to_owned(),
                kind: ArtifactKind::Dataset,
                blob,
                media_type: "application/vnd.apache.parquet".to_owned(),
                dataset: None,
                metadata: Some(serde_json::json!({ "preview": {
                    "columns": ["alcohol", "good"],
                    "rows": [["9.4", "0"], ["11.2", "1"]],
                    "total_rows": 1087,
                } })),
            },
            T0,
        )
        .await
        .unwrap();
    let page = get(&harness, "/artifacts/table/1").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_has(&[
        "<th>alcohol</th>",
        "<td>11.2</td>",
        "The first 2 rows of 1087, as the task that wrote this version recorded them.",
    ]);
}

#[tokio::test]
async fn a_version_page_draws_its_lineage_both_ways() {
    let harness = harness(true).await;
    let run = harness.run_pipeline(&people(2, "x"), 2, T0).await;
    let id = run.id;
    let ingest = format!("pipe/ingest run {id}");
    let clean = format!("pipe/clean run {id}");
    let train = format!("pipe/train run {id}");

    let upstream = get(&harness, "/artifacts/m/1").await;
    assert_eq!(upstream.status, StatusCode::OK);
    upstream.assert_has(&[
        "<svg",
        r#"aria-label="Lineage of m@1""#,
        ">raw@1</text>",
        ">pipe.clean.clean@1</text>",
        ">m@1</text>",
        &format!(">{ingest}</text>"),
        &format!(">{clean}</text>"),
        &format!(">{train}</text>"),
        r#"class="node kind-model focus""#,
        r#"class="node kind-dataset""#,
        r#"class="node attempt""#,
        // Versions link to their pages, attempts to their task pages.
        r#"<a href="/artifacts/pipe.clean.clean/1"><g"#,
        &format!(r#"<a href="/runs/{id}/tasks/clean?try=1"><g"#),
        r#"aria-current="page">Upstream"#,
    ]);
    // Left to right: each step one layer further.
    let order = [
        ingest.as_str(),
        "raw@1",
        clean.as_str(),
        "pipe.clean.clean@1",
        train.as_str(),
        "m@1",
    ];
    let xs: Vec<f64> = order.iter().map(|label| upstream.node_x(label)).collect();
    assert!(
        xs.windows(2).all(|pair| pair[0] < pair[1]),
        "{order:?} at {xs:?}"
    );

    let downstream = get(&harness, "/artifacts/raw/1?direction=downstream").await;
    assert_eq!(downstream.status, StatusCode::OK);
    downstream.assert_has(&[
        ">raw@1</text>",
        &format!(">{clean}</text>"),
        ">pipe.clean.clean@1</text>",
        &format!(">{train}</text>"),
        ">m@1</text>",
        r#"class="node kind-dataset focus""#,
        r#"aria-current="page">Downstream"#,
    ]);
    let from_model = get(&harness, "/artifacts/m/1?direction=downstream").await;
    from_model.assert_has(&["Nothing has been made from this version yet."]);
    assert!(!from_model.has("<svg"), "{}", from_model.body);
}

#[tokio::test]
async fn the_task_page_lists_what_its_attempt_read_and_wrote() {
    let harness = harness(true).await;
    let run = harness.run_pipeline(&people(2, "x"), 2, T0).await;
    let clean = get(&harness, &format!("/runs/{}/tasks/clean", run.id)).await;
    assert_eq!(clean.status, StatusCode::OK);
    clean.assert_has(&[
        "<td>read</td><td><code>raw</code></td>",
        r#"<a href="/artifacts/raw/1">raw@1</a>"#,
        "<td>wrote</td><td><code>clean</code></td>",
        r#"<a href="/artifacts/pipe.clean.clean/1">pipe.clean.clean@1</a>"#,
        &format!(r#"href="/runs/{}/lineage""#, run.id),
    ]);
    assert!(
        clean.body.find("<td>read</td>").unwrap() < clean.body.find("<td>wrote</td>").unwrap(),
        "inputs first"
    );
    let ingest = get(&harness, &format!("/runs/{}/tasks/ingest", run.id)).await;
    ingest.assert_has(&[r#"<a href="/artifacts/raw/1">raw@1</a>"#]);
    assert!(!ingest.has("<td>read</td>"), "{}", ingest.body);

    let plain = harness.start_run("plain", T0).await;
    let nothing = get(&harness, &format!("/runs/{}/tasks/only", plain.id)).await;
    assert_eq!(nothing.status, StatusCode::OK);
    nothing.assert_has(&["This attempt read and wrote no artifacts."]);
}

#[tokio::test]
async fn a_run_links_to_its_lineage() {
    let harness = harness(true).await;
    let run = harness.run_pipeline(&people(2, "x"), 2, T0).await;
    let id = run.id;
    let page = get(&harness, &format!("/runs/{id}")).await;
    page.assert_has(&[&format!(r#"href="/runs/{id}/lineage""#)]);
    let lineage = get(&harness, &format!("/runs/{id}/lineage")).await;
    assert_eq!(lineage.status, StatusCode::OK);
    lineage.assert_has(&[
        &format!("<h1>Lineage of run {id}</h1>"),
        "<svg",
        ">raw@1</text>",
        ">pipe.clean.clean@1</text>",
        ">m@1</text>",
        &format!(">pipe/ingest run {id}</text>"),
        &format!(">pipe/clean run {id}</text>"),
        &format!(">pipe/train run {id}</text>"),
    ]);

    let plain = harness.start_run("plain", T0).await;
    let empty = get(&harness, &format!("/runs/{}/lineage", plain.id)).await;
    assert_eq!(empty.status, StatusCode::OK);
    empty.assert_has(&["This run has read and written no artifacts."]);
    assert!(!empty.has("<svg"), "{}", empty.body);
    assert_error(
        &harness,
        "/runs/999/lineage",
        StatusCode::NOT_FOUND,
        "run 999 not found",
    )
    .await;
}
