//! Artifact versions and lineage in the store, on SQLite and on PostgreSQL: publishing, reuse of
//! identical bytes, inputs resolved at claim, outputs checked and recorded with the completion,
//! lineage queries and cache lookups. Blobs are not stored here (the store only names them).

#[macro_use]
mod common;

use std::time::Duration;

use common::{TestDb, dag};
use kiln_engine::artifacts::{BlobRef, Sha256Digest};
use kiln_engine::dag::{ArtifactKind, ModelAlias};
use kiln_engine::state::{RunState, TaskState};
use kiln_engine::store::{
    AttemptResult, CacheRecord, ClaimParams, ClaimedTask, Completion, CompletionOutcome,
    LineageDirection, OutputContent, ProducedOutput, PublishParams, RunCreateParams, RunRecord,
    Store, TriggerKind,
};
use sha2::{Digest, Sha256};

const SECOND: i64 = 1_000_000;
const T0: i64 = 1_800_000_000 * SECOND;

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
cache = true
inputs = { data = { from = "clean.clean" }, extra = { dataset = "reference" } }
outputs = { model = { kind = "model", publish_as = "m" } }
"#;

fn blob(text: &str) -> BlobRef {
    BlobRef {
        sha256: Sha256Digest::from_bytes(Sha256::digest(text.as_bytes()).into()),
        size: text.len() as u64,
    }
}

fn wrote(slot: &str, text: &str) -> ProducedOutput {
    ProducedOutput {
        slot: slot.to_owned(),
        content: OutputContent::Blob {
            blob: blob(text),
            media_type: "text/plain".to_owned(),
            dataset: None,
            metadata: None,
        },
    }
}

fn succeeded(task: &ClaimedTask, outputs: Vec<ProducedOutput>, cache: Option<&str>) -> Completion {
    Completion {
        task_instance_id: task.task_instance_id,
        fence: task.fence,
        result: AttemptResult::Success {
            summary: serde_json::json!({ "accuracy": 0.75 }),
            outputs,
            cache: cache.map(|key| CacheRecord {
                key: key.to_owned(),
                hit_of: None,
            }),
        },
    }
}

async fn claim_one(store: &dyn Store, now: i64) -> Option<ClaimedTask> {
    store
        .task_instance_claim(&ClaimParams {
            worker_id: "w".to_owned(),
            queues: vec!["default".to_owned()],
            limit: 1,
            lease: Duration::from_secs(30),
            now,
        })
        .await
        .unwrap()
        .pop()
}

async fn complete(store: &dyn Store, completion: Completion, now: i64) -> CompletionOutcome {
    store
        .task_instance_complete(&[completion], now)
        .await
        .unwrap()[0]
        .clone()
        .unwrap()
}

async fn new_run(store: &dyn Store, dag_id: &str, logical_date: i64) -> RunRecord {
    let run = store
        .run_create(&RunCreateParams {
            dag_id: dag_id.to_owned(),
            dag_version_id: None,
            logical_date,
            data_interval: None,
            trigger: TriggerKind::Manual,
            params: serde_json::json!({}),
            now: logical_date,
        })
        .await
        .unwrap()
        .unwrap();
    store.run_start_queued(logical_date).await.unwrap();
    run
}

async fn publish_reference(store: &dyn Store) {
    let (version, reused) = store
        .artifact_publish(
            &PublishParams {
                name: "reference".to_owned(),
                kind: ArtifactKind::Dataset,
                blob: blob("reference rows"),
                media_type: "text/csv".to_owned(),
                dataset: None,
                metadata: None,
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!((version.version, reused), (1, false));
}

/// Runs the pipeline once with these bytes for each step; answers the run.
async fn run_pipeline(store: &dyn Store, at: i64, raw: &str) -> RunRecord {
    let run = new_run(store, "pipe", at).await;
    let ingest = claim_one(store, at).await.unwrap();
    assert_eq!(ingest.task_id, "ingest");
    assert!(ingest.inputs.is_empty());
    assert_eq!(ingest.outputs[0].name, "raw");
    complete(store, succeeded(&ingest, vec![wrote("raw", raw)], None), at).await;

    let clean = claim_one(store, at).await.unwrap();
    assert_eq!(clean.task_id, "clean");
    assert_eq!(clean.inputs.len(), 1);
    assert_eq!(clean.inputs[0].version.name, "raw");
    assert_eq!(clean.inputs[0].version.blob, blob(raw));
    let cleaned = format!("clean {raw}");
    complete(
        store,
        succeeded(&clean, vec![wrote("clean", &cleaned)], None),
        at,
    )
    .await;

    let train = claim_one(store, at).await.unwrap();
    assert!(train.cache);
    let slots: Vec<(&str, &str)> = train
        .inputs
        .iter()
        .map(|input| (input.slot.as_str(), input.version.name.as_str()))
        .collect();
    assert_eq!(
        slots,
        vec![("data", "pipe.clean.clean"), ("extra", "reference")]
    );
    let model = format!("model of {cleaned}");
    complete(
        store,
        succeeded(
            &train,
            vec![wrote("model", &model)],
            Some(&format!("key {raw}")),
        ),
        at,
    )
    .await;
    assert_eq!(
        store.run_get(run.id).await.unwrap().unwrap().state,
        RunState::Success
    );
    run
}

async fn outputs_become_versions_with_their_producer(db: &TestDb) {
    let store = &*db.store;
    store.dag_sync(&dag(PIPELINE), T0).await.unwrap();
    publish_reference(store).await;
    let run = run_pipeline(store, T0, "a,b\n1,2\n").await;

    let names: Vec<(String, ArtifactKind, i64)> = store
        .artifact_list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|artifact| (artifact.name, artifact.kind, artifact.latest_version))
        .collect();
    assert_eq!(
        names,
        vec![
            ("m".to_owned(), ArtifactKind::Model, 1),
            ("pipe.clean.clean".to_owned(), ArtifactKind::Dataset, 1),
            ("raw".to_owned(), ArtifactKind::Dataset, 1),
            ("reference".to_owned(), ArtifactKind::Dataset, 1),
        ]
    );
    let models = store
        .artifact_list(Some(ArtifactKind::Model))
        .await
        .unwrap();
    assert_eq!(models.len(), 1);

    let model = store
        .artifact_version_get("m", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(model.label(), "m@1");
    assert_eq!(model.blob, blob("model of clean a,b\n1,2\n"));
    let producer = model.producer.clone().unwrap();
    assert_eq!(
        (
            producer.run_id,
            producer.dag_id.as_str(),
            producer.task_id.as_str(),
            producer.try_number
        ),
        (run.id, "pipe", "train", 1)
    );
    assert_eq!(
        store.artifact_version_get("m", Some(1)).await.unwrap(),
        Some(model.clone())
    );
    assert_eq!(
        store.artifact_version_get("m", Some(2)).await.unwrap(),
        None
    );
    assert_eq!(
        store.artifact_version_get_by_id(model.id).await.unwrap(),
        Some(model.clone())
    );
    let reference = store
        .artifact_version_get("reference", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reference.producer, None, "put by hand");

    // The train task's attempt read two versions and wrote one.
    let train = store
        .task_instance_list(run.id)
        .await
        .unwrap()
        .into_iter()
        .find(|instance| instance.task_id == "train")
        .unwrap();
    let recorded: Vec<(String, String, String, bool)> = store
        .attempt_artifact_list(train.id)
        .await
        .unwrap()
        .into_iter()
        .map(|artifact| {
            (
                artifact.direction,
                artifact.slot,
                artifact.version.label(),
                artifact.reused,
            )
        })
        .collect();
    assert_eq!(
        recorded,
        vec![
            (
                "input".to_owned(),
                "data".to_owned(),
                "pipe.clean.clean@1".to_owned(),
                false
            ),
            (
                "input".to_owned(),
                "extra".to_owned(),
                "reference@1".to_owned(),
                false
            ),
            (
                "output".to_owned(),
                "model".to_owned(),
                "m@1".to_owned(),
                false
            ),
        ]
    );
    let blobs = store.artifact_blob_list_in_use().await.unwrap();
    assert_eq!(blobs.len(), 4);
    assert!(blobs.contains(&model.blob.sha256.to_hex()));
}

async fn lineage_goes_up_to_the_raw_input_and_down_to_the_model(db: &TestDb) {
    let store = &*db.store;
    store.dag_sync(&dag(PIPELINE), T0).await.unwrap();
    publish_reference(store).await;
    let run = run_pipeline(store, T0, "raw bytes").await;
    let model = store
        .artifact_version_get("m", None)
        .await
        .unwrap()
        .unwrap();
    let raw = store
        .artifact_version_get("raw", None)
        .await
        .unwrap()
        .unwrap();
    let clean = store
        .artifact_version_get("pipe.clean.clean", None)
        .await
        .unwrap()
        .unwrap();
    let reference = store
        .artifact_version_get("reference", None)
        .await
        .unwrap()
        .unwrap();

    let upstream = store
        .lineage_get_by_version(model.id, LineageDirection::Upstream)
        .await
        .unwrap();
    let mut versions: Vec<String> = upstream
        .versions
        .iter()
        .map(|version| version.label())
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        ["m@1", "pipe.clean.clean@1", "raw@1", "reference@1"]
    );
    let mut edges: Vec<(i64, i64, String)> = upstream
        .edges
        .iter()
        .map(|edge| (edge.input, edge.output, edge.attempt.task_id.clone()))
        .collect();
    edges.sort();
    let mut expected = vec![
        (raw.id, clean.id, "clean".to_owned()),
        (clean.id, model.id, "train".to_owned()),
        (reference.id, model.id, "train".to_owned()),
    ];
    expected.sort();
    assert_eq!(edges, expected);
    let sources: Vec<(i64, String)> = upstream
        .sources
        .iter()
        .map(|(version, attempt)| (*version, attempt.task_id.clone()))
        .collect();
    assert_eq!(sources, vec![(raw.id, "ingest".to_owned())]);

    let downstream = store
        .lineage_get_by_version(raw.id, LineageDirection::Downstream)
        .await
        .unwrap();
    let mut versions: Vec<String> = downstream
        .versions
        .iter()
        .map(|version| version.label())
        .collect();
    versions.sort();
    assert_eq!(versions, ["m@1", "pipe.clean.clean@1", "raw@1"]);
    assert_eq!(downstream.edges.len(), 2);

    let of_run = store.lineage_get_by_run(run.id).await.unwrap();
    assert_eq!(of_run.versions.len(), 4);
    assert_eq!(of_run.edges.len(), 3);
    assert!(
        store
            .lineage_get_by_version(9_999_999, LineageDirection::Upstream)
            .await
            .is_err()
    );
}

async fn identical_bytes_reuse_the_newest_version_and_changed_bytes_add_one(db: &TestDb) {
    let store = &*db.store;
    store.dag_sync(&dag(PIPELINE), T0).await.unwrap();
    publish_reference(store).await;
    run_pipeline(store, T0, "same").await;
    let second = run_pipeline(store, T0 + SECOND, "same").await;
    let raw_versions = store.artifact_version_list("raw", 10).await.unwrap();
    assert_eq!(raw_versions.len(), 1, "identical bytes add no version");
    // The second run's ingest still records that it wrote raw@1, as a reuse.
    let ingest = store.task_instance_list(second.id).await.unwrap().remove(0);
    let recorded = store.attempt_artifact_list(ingest.id).await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].reused);
    assert_eq!(recorded[0].version.label(), "raw@1");

    run_pipeline(store, T0 + 2 * SECOND, "different").await;
    let raw_versions: Vec<i64> = store
        .artifact_version_list("raw", 10)
        .await
        .unwrap()
        .iter()
        .map(|version| version.version)
        .collect();
    assert_eq!(raw_versions, vec![2, 1], "newest first");
    assert_eq!(
        store.artifact_version_list("raw", 1).await.unwrap().len(),
        1
    );
    // By hand, identical bytes are reused the same way.
    let (again, reused) = store
        .artifact_publish(
            &PublishParams {
                name: "reference".to_owned(),
                kind: ArtifactKind::Dataset,
                blob: blob("reference rows"),
                media_type: "text/csv".to_owned(),
                dataset: None,
                metadata: None,
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!((again.version, reused), (1, true));
}

async fn a_name_keeps_its_kind(db: &TestDb) {
    let store = &*db.store;
    publish_reference(store).await;
    let error = store
        .artifact_publish(
            &PublishParams {
                name: "reference".to_owned(),
                kind: ArtifactKind::Model,
                blob: blob("weights"),
                media_type: "application/octet-stream".to_owned(),
                dataset: None,
                metadata: None,
            },
            T0,
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "artifact `reference` is a dataset; a model cannot be published under the same name"
    );
    // A task publishing a model under a dataset's name fails, and nothing is published.
    let clash = r#"
id = "clash"
[[tasks]]
id = "train"
kind = "noop"
outputs = { model = { kind = "model", publish_as = "reference" } }
"#;
    store.dag_sync(&dag(clash), T0).await.unwrap();
    let run = new_run(store, "clash", T0).await;
    let task = claim_one(store, T0).await.unwrap();
    let outcome = complete(store, succeeded(&task, vec![wrote("model", "w")], None), T0).await;
    assert_eq!(outcome, CompletionOutcome::Failed);
    let instance = store.task_instance_list(run.id).await.unwrap().remove(0);
    assert_eq!(
        instance.error.as_deref(),
        Some(
            "output `model`: artifact `reference` is a dataset; a model cannot be published under the same name"
        )
    );
    assert_eq!(
        store
            .artifact_version_list("reference", 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn outputs_must_match_the_declaration(db: &TestDb) {
    let store = &*db.store;
    store.dag_sync(&dag(PIPELINE), T0).await.unwrap();
    let run = new_run(store, "pipe", T0).await;
    let ingest = claim_one(store, T0).await.unwrap();
    // Nothing written for a declared output: a permanent failure, downstream never runs.
    let outcome = complete(store, succeeded(&ingest, Vec::new(), None), T0).await;
    assert_eq!(outcome, CompletionOutcome::Failed);
    let instances = store.task_instance_list(run.id).await.unwrap();
    assert_eq!(
        instances[0].error.as_deref(),
        Some("the task did not write its declared output `raw`")
    );
    assert_eq!(instances[1].state, TaskState::UpstreamFailed);
    assert!(store.artifact_list(None).await.unwrap().is_empty());

    let run = new_run(store, "pipe", T0 + SECOND).await;
    let ingest = claim_one(store, T0 + SECOND).await.unwrap();
    let outcome = complete(
        store,
        succeeded(&ingest, vec![wrote("raw", "x"), wrote("extra", "y")], None),
        T0,
    )
    .await;
    assert_eq!(outcome, CompletionOutcome::Failed);
    let instances = store.task_instance_list(run.id).await.unwrap();
    assert_eq!(
        instances[0].error.as_deref(),
        Some("the task reported output `extra`, which it does not declare")
    );
}

async fn an_input_without_a_version_fails_its_task_at_claim(db: &TestDb) {
    let store = &*db.store;
    store.dag_sync(&dag(PIPELINE), T0).await.unwrap();
    // `reference` was never published: train cannot start.
    let run = new_run(store, "pipe", T0).await;
    let ingest = claim_one(store, T0).await.unwrap();
    complete(store, succeeded(&ingest, vec![wrote("raw", "r")], None), T0).await;
    let clean = claim_one(store, T0).await.unwrap();
    complete(
        store,
        succeeded(&clean, vec![wrote("clean", "c")], None),
        T0,
    )
    .await;
    assert!(
        claim_one(store, T0).await.is_none(),
        "train is not handed out"
    );
    let instances = store.task_instance_list(run.id).await.unwrap();
    assert_eq!(instances[2].state, TaskState::Failed);
    assert_eq!(
        instances[2].error.as_deref(),
        Some("input `extra`: dataset `reference` has no versions yet")
    );
    assert_eq!(
        store.run_get(run.id).await.unwrap().unwrap().state,
        RunState::Failed
    );
    // A pinned version that does not exist names the version.
    let pinned = r#"
id = "pinned"
[[tasks]]
id = "read"
kind = "noop"
inputs = { data = { dataset = "raw", version = 7 } }
"#;
    store.dag_sync(&dag(pinned), T0).await.unwrap();
    let run = new_run(store, "pinned", T0).await;
    assert!(claim_one(store, T0).await.is_none());
    let instance = store.task_instance_list(run.id).await.unwrap().remove(0);
    assert_eq!(
        instance.error.as_deref(),
        Some("input `data`: dataset `raw` has no version 7")
    );
}

async fn a_cache_key_finds_the_newest_successful_attempt(db: &TestDb) {
    let store = &*db.store;
    store.dag_sync(&dag(PIPELINE), T0).await.unwrap();
    publish_reference(store).await;
    assert!(store.cache_lookup("key x").await.unwrap().is_none());
    let run = run_pipeline(store, T0, "x").await;
    let hit = store.cache_lookup("key x").await.unwrap().unwrap();
    assert_eq!(hit.attempt.run_id, run.id);
    assert_eq!(hit.attempt.task_id, "train");
    assert_eq!(hit.outputs.len(), 1);
    assert_eq!(hit.outputs[0].slot, "model");
    assert_eq!(hit.outputs[0].version.label(), "m@1");
    assert_eq!(
        hit.summary,
        Some(serde_json::json!({ "accuracy": 0.75 })),
        "the reused attempt's figures come with it"
    );

    // A hit reuses the version: no new version, and the attempt records what it reused.
    let second = new_run(store, "pipe", T0 + SECOND).await;
    for task_id in ["ingest", "clean"] {
        let task = claim_one(store, T0 + SECOND).await.unwrap();
        assert_eq!(task.task_id, task_id);
        let slot = task.outputs[0].name.clone();
        let text = if task_id == "ingest" { "x" } else { "clean x" };
        complete(store, succeeded(&task, vec![wrote(&slot, text)], None), T0).await;
    }
    let train = claim_one(store, T0 + SECOND).await.unwrap();
    let reuse = Completion {
        task_instance_id: train.task_instance_id,
        fence: train.fence,
        result: AttemptResult::Success {
            summary: serde_json::json!({ "cache_hit": true }),
            outputs: vec![ProducedOutput {
                slot: "model".to_owned(),
                content: OutputContent::Reused {
                    artifact_version_id: hit.outputs[0].version.id,
                },
            }],
            cache: Some(CacheRecord {
                key: "key x".to_owned(),
                hit_of: Some(hit.attempt_id),
            }),
        },
    };
    assert_eq!(
        complete(store, reuse, T0).await,
        CompletionOutcome::Succeeded
    );
    assert_eq!(store.artifact_version_list("m", 10).await.unwrap().len(), 1);
    let instance = store
        .task_instance_list(second.id)
        .await
        .unwrap()
        .into_iter()
        .find(|instance| instance.task_id == "train")
        .unwrap();
    let attempts = store.attempt_list(instance.id).await.unwrap();
    assert_eq!(attempts[0].cache_hit_of, Some(hit.attempt_id));
    let recorded = store.attempt_artifact_list(instance.id).await.unwrap();
    let output = recorded
        .iter()
        .find(|artifact| artifact.direction == "output")
        .unwrap();
    assert!(output.reused);
    // The newest success with the key is now the hit itself, with the same outputs.
    let newest = store.cache_lookup("key x").await.unwrap().unwrap();
    assert_eq!(newest.attempt.run_id, second.id);
    assert_eq!(newest.outputs[0].version.id, hit.outputs[0].version.id);
}

/// A name is got with its kind and newest version; an unknown name is `None`, not an error.
async fn an_artifact_is_got_by_name_with_its_newest_version(db: &TestDb) {
    let store = &*db.store;
    assert!(store.artifact_get("reference").await.unwrap().is_none());
    publish_reference(store).await;
    let (second, reused) = store
        .artifact_publish(
            &PublishParams {
                name: "reference".to_owned(),
                kind: ArtifactKind::Dataset,
                blob: blob("more reference rows"),
                media_type: "text/csv".to_owned(),
                dataset: None,
                metadata: None,
            },
            T0 + 5,
        )
        .await
        .unwrap();
    assert_eq!((second.version, reused), (2, false));
    let artifact = store.artifact_get("reference").await.unwrap().unwrap();
    assert_eq!(
        (
            artifact.name.as_str(),
            artifact.kind,
            artifact.latest_version,
            artifact.created_at,
            artifact.updated_at
        ),
        ("reference", ArtifactKind::Dataset, 2, T0, T0 + 5)
    );
    assert!(store.artifact_get("Reference").await.unwrap().is_none());
}

conformance!(
    outputs_become_versions_with_their_producer,
    lineage_goes_up_to_the_raw_input_and_down_to_the_model,
    identical_bytes_reuse_the_newest_version_and_changed_bytes_add_one,
    a_name_keeps_its_kind,
    an_artifact_is_got_by_name_with_its_newest_version,
    outputs_must_match_the_declaration,
    an_input_without_a_version_fails_its_task_at_claim,
    a_cache_key_finds_the_newest_successful_attempt,
    a_promoting_output_moves_the_alias_with_the_completion,
);

const DEPLOY: &str = r#"
id = "ship"
[[tasks]]
id = "deploy"
kind = "noop"
outputs = { model = { kind = "model", publish_as = "wq", promote = "production" } }
"#;

/// Runs the deploy DAG once, writing these model bytes with these metrics.
async fn deploy(store: &dyn Store, at: i64, bytes: &str, accuracy: f64) {
    new_run(store, "ship", at).await;
    let task = claim_one(store, at).await.unwrap();
    let output = ProducedOutput {
        slot: "model".to_owned(),
        content: OutputContent::Blob {
            blob: blob(bytes),
            media_type: "application/vnd.kiln.model+json".to_owned(),
            dataset: None,
            metadata: Some(serde_json::json!({ "accuracy": accuracy })),
        },
    };
    assert_eq!(
        complete(store, succeeded(&task, vec![output], None), at).await,
        CompletionOutcome::Succeeded
    );
}

async fn a_promoting_output_moves_the_alias_with_the_completion(db: &TestDb) {
    let store = &*db.store;
    store.dag_sync(&dag(DEPLOY), T0).await.unwrap();
    assert!(store.model_list().await.unwrap().is_empty());
    deploy(store, T0, "weights one", 0.71).await;
    let served = store
        .model_alias_get("wq", ModelAlias::Production)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(served.label(), "wq@1");
    assert_eq!(
        served.metadata,
        Some(serde_json::json!({ "accuracy": 0.71 }))
    );
    deploy(store, T0 + SECOND, "weights two", 0.74).await;
    deploy(store, T0 + 2 * SECOND, "weights three", 0.76).await;
    let models = store.model_list().await.unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(
        (
            models[0].latest_version,
            models[0].production,
            models[0].staging
        ),
        (3, Some(3), None)
    );
    assert_eq!(
        store
            .model_alias_get("wq", ModelAlias::Staging)
            .await
            .unwrap(),
        None
    );

    // Rollback walks back through the versions that were served: 3 → 2 → 1, then no further.
    assert_eq!(
        store
            .model_alias_rollback("wq", ModelAlias::Production, T0 + 3 * SECOND)
            .await
            .unwrap(),
        (3, 2)
    );
    assert_eq!(
        store
            .model_alias_rollback("wq", ModelAlias::Production, T0 + 4 * SECOND)
            .await
            .unwrap(),
        (2, 1)
    );
    let error = store
        .model_alias_rollback("wq", ModelAlias::Production, T0 + 5 * SECOND)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "model `wq` has had no other production version to roll back to"
    );

    // By hand: any existing version; the answer is the one it replaced.
    assert_eq!(
        store
            .model_alias_set("wq", ModelAlias::Staging, 3, "tried by hand", T0)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .model_alias_set("wq", ModelAlias::Production, 3, "promoted by hand", T0)
            .await
            .unwrap(),
        Some(1)
    );
    let events: Vec<(String, i64, Option<i64>)> = store
        .model_alias_event_list("wq")
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.alias == ModelAlias::Production)
        .map(|event| (event.reason, event.version, event.previous))
        .collect();
    assert_eq!(events.len(), 6, "{events:?}");
    assert!(events[0].0.starts_with("deployed by run "), "{events:?}");
    assert_eq!((events[0].1, events[0].2), (1, None));
    assert_eq!(
        events[3],
        ("rolled back from version 3".to_owned(), 2, Some(3))
    );
    assert_eq!(events[5], ("promoted by hand".to_owned(), 3, Some(1)));

    let error = store
        .model_alias_set("wq", ModelAlias::Production, 9, "typo", T0)
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "model `wq` version 9 not found");
    publish_reference(store).await;
    let error = store
        .model_alias_set("reference", ModelAlias::Production, 1, "wrong kind", T0)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "artifact `reference` is a dataset, not a model"
    );
}
