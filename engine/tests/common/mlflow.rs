//! The MLflow mirror's test support: stand-ins for the ML plugin kinds, a train → evaluate →
//! deploy pipeline driven through the store, and a reader for MLflow's own REST API (the server
//! named by `KILN_TEST_MLFLOW_URI`, started by `.ci/run`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kiln_engine::artifacts::{BlobRef, Sha256Digest};
use kiln_engine::dag::{ArtifactKind, LoadedDag, parse_dag};
use kiln_engine::plugin::{PluginRegistry, TaskContext, TaskError, TaskOutput, TaskPlugin};
use kiln_engine::store::{
    AttemptResult, ClaimParams, ClaimedTask, Completion, CompletionOutcome, OutputContent,
    ProducedOutput, PublishParams, RunCreateParams, RunRecord, Store, TriggerKind,
};
use sha2::{Digest, Sha256};

pub const SECOND: i64 = 1_000_000;

/// Any params: the stand-ins take whatever the real plugins would.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct AnyParams {
    #[serde(flatten)]
    pub rest: BTreeMap<String, serde_json::Value>,
}

macro_rules! stand_in {
    ($name:ident, $kind:literal) => {
        /// A stand-in for the plugin of this kind; tests drive its outcomes through the store.
        pub struct $name;

        impl TaskPlugin for $name {
            const KIND: &'static str = $kind;
            type Params = AnyParams;

            async fn run(
                &self,
                _ctx: &TaskContext,
                _params: AnyParams,
            ) -> Result<TaskOutput, TaskError> {
                Ok(TaskOutput::default())
            }
        }
    };
}

stand_in!(Train, "train");
stand_in!(Evaluate, "evaluate");
stand_in!(Deploy, "deploy");
stand_in!(Command, "command");

pub fn ml_registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    registry.register(Train).unwrap();
    registry.register(Evaluate).unwrap();
    registry.register(Deploy).unwrap();
    registry.register(Command).unwrap();
    registry
}

pub fn ml_dag(text: &str) -> LoadedDag {
    parse_dag(Path::new("ml.toml"), text.as_bytes(), &ml_registry())
        .unwrap_or_else(|error| panic!("{error}"))
}

/// A DAG id no other test (or earlier run against the same MLflow) uses.
pub fn unique_dag_id(prefix: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|time| time.as_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// train → evaluate → deploy, reading the dataset `<id>_data` and deploying `<id>_model` to
/// production.
pub fn pipeline(dag_id: &str) -> String {
    format!(
        r#"
id = "{dag_id}"
[[tasks]]
id = "train"
kind = "train"
retries = 1
params = {{ algorithm = {{ name = "decision_tree", max_depth = 4 }}, target = "quality", seed = 7 }}
inputs = {{ train = {{ dataset = "{dag_id}_data" }} }}
outputs = {{ model = {{ kind = "model" }} }}
[[tasks]]
id = "evaluate"
kind = "evaluate"
params = {{ metric = "accuracy" }}
inputs = {{ candidate = {{ from = "train.model" }}, test = {{ dataset = "{dag_id}_data" }} }}
outputs = {{ metrics = {{ kind = "file" }} }}
[[tasks]]
id = "deploy"
kind = "deploy"
inputs = {{ model = {{ from = "train.model" }}, metrics = {{ from = "evaluate.metrics" }} }}
outputs = {{ model = {{ kind = "model", publish_as = "{dag_id}_model", promote = "production" }} }}
"#
    )
}

pub fn blob(text: &str) -> BlobRef {
    BlobRef {
        sha256: Sha256Digest::from_bytes(Sha256::digest(text.as_bytes()).into()),
        size: text.len() as u64,
    }
}

pub fn wrote(slot: &str, text: &str, metadata: Option<serde_json::Value>) -> ProducedOutput {
    ProducedOutput {
        slot: slot.to_owned(),
        content: OutputContent::Blob {
            blob: blob(text),
            media_type: "application/octet-stream".to_owned(),
            dataset: None,
            metadata,
        },
    }
}

pub async fn publish_dataset(store: &dyn Store, name: &str, text: &str, at: i64) {
    store
        .artifact_publish(
            &PublishParams {
                name: name.to_owned(),
                kind: ArtifactKind::Dataset,
                blob: blob(text),
                media_type: "text/csv".to_owned(),
                dataset: None,
                metadata: None,
            },
            at,
        )
        .await
        .unwrap();
}

pub async fn new_run(store: &dyn Store, dag_id: &str, at: i64) -> RunRecord {
    let run = store
        .run_create(&RunCreateParams {
            dag_id: dag_id.to_owned(),
            dag_version_id: None,
            logical_date: at,
            data_interval: None,
            trigger: TriggerKind::Manual,
            params: serde_json::json!({}),
            now: at,
        })
        .await
        .unwrap()
        .unwrap();
    store.run_start_queued(at).await.unwrap();
    run
}

pub async fn claim(store: &dyn Store, task_id: &str, at: i64) -> ClaimedTask {
    let task = store
        .task_instance_claim(&ClaimParams {
            worker_id: "worker-1".to_owned(),
            queues: vec!["default".to_owned()],
            limit: 1,
            lease: Duration::from_secs(30),
            now: at,
        })
        .await
        .unwrap()
        .pop()
        .unwrap_or_else(|| panic!("nothing to claim; expected `{task_id}`"));
    assert_eq!(task.task_id, task_id);
    task
}

pub async fn complete(
    store: &dyn Store,
    task: &ClaimedTask,
    result: AttemptResult,
    at: i64,
) -> CompletionOutcome {
    let completion = Completion {
        task_instance_id: task.task_instance_id,
        fence: task.fence,
        result,
    };
    store
        .task_instance_complete(&[completion], at)
        .await
        .unwrap()[0]
        .clone()
        .unwrap()
}

pub fn train_summary(accuracy: f64) -> serde_json::Value {
    serde_json::json!({
        "algorithm": { "name": "decision_tree", "max_depth": 4, "min_samples_split": 2 },
        "rows": 120,
        "features": 3,
        "seconds": 0.5,
        "info": { "training_accuracy": accuracy, "depth": 4, "loss": [0.9, 0.6, 0.4] },
    })
}

pub fn evaluate_summary(accuracy: f64) -> serde_json::Value {
    serde_json::json!({
        "metric": "accuracy",
        "best": "candidate",
        "best_model": "m@1",
        "test_data": "data@1",
        "candidates": { "candidate": { "model": "m@1", "metrics": { "accuracy": accuracy, "f1": accuracy - 0.1 } } },
        "production": null,
        "gate": { "passed": true, "failures": [] },
        "accuracy": accuracy,
        "f1": accuracy - 0.1,
    })
}

/// Runs the pipeline once: train fails once (retryable) and then succeeds, evaluate and deploy
/// succeed. Model bytes differ per `model` text, so each new text is a new version.
pub async fn run_pipeline(
    store: &dyn Store,
    dag_id: &str,
    at: i64,
    model: &str,
    accuracy: f64,
) -> RunRecord {
    let run = new_run(store, dag_id, at).await;
    let train = claim(store, "train", at).await;
    let failure = AttemptResult::Failure {
        error: "out of memory".to_owned(),
        retryable: true,
    };
    assert!(matches!(
        complete(store, &train, failure, at).await,
        CompletionOutcome::WillRetry { .. }
    ));
    store
        .task_instance_maintain(at + 3600 * SECOND)
        .await
        .unwrap();
    let train = claim(store, "train", at + 3600 * SECOND).await;
    let success = AttemptResult::Success {
        summary: train_summary(accuracy),
        outputs: vec![wrote("model", model, None)],
        cache: None,
    };
    complete(store, &train, success, at + 3601 * SECOND).await;
    let evaluate = claim(store, "evaluate", at + 3602 * SECOND).await;
    let success = AttemptResult::Success {
        summary: evaluate_summary(accuracy),
        outputs: vec![wrote("metrics", &format!("metrics of {model}"), None)],
        cache: None,
    };
    complete(store, &evaluate, success, at + 3603 * SECOND).await;
    let deploy = claim(store, "deploy", at + 3604 * SECOND).await;
    let metadata = serde_json::json!({ "metrics": { "accuracy": accuracy } });
    let success = AttemptResult::Success {
        summary: serde_json::json!({ "model": "m@1", "metrics": { "accuracy": accuracy } }),
        outputs: vec![wrote("model", model, Some(metadata))],
        cache: None,
    };
    complete(store, &deploy, success, at + 3605 * SECOND).await;
    run
}

/// The MLflow server the tests run against, or `None` after a loud SKIPPED.
pub fn mlflow_uri(test: &str) -> Option<String> {
    match std::env::var("KILN_TEST_MLFLOW_URI") {
        Ok(uri) if !uri.is_empty() => Some(uri.trim_end_matches('/').to_owned()),
        _ => {
            super::skip(test, "MLflow", "KILN_TEST_MLFLOW_URI");
            None
        }
    }
}

/// Reads MLflow's REST API directly, around kiln's client.
pub struct MlflowReader {
    pub uri: String,
    http: reqwest::Client,
}

impl MlflowReader {
    pub fn new(uri: &str) -> MlflowReader {
        MlflowReader {
            uri: uri.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let response = self
            .http
            .get(format!("{}/api/2.0/mlflow/{endpoint}", self.uri))
            .query(query)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(status.is_success(), "{endpoint}: {status} {body}");
        body
    }

    async fn post(&self, endpoint: &str, body: serde_json::Value) -> serde_json::Value {
        let response = self
            .http
            .post(format!("{}/api/2.0/mlflow/{endpoint}", self.uri))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(status.is_success(), "{endpoint}: {status} {body}");
        body
    }

    pub async fn experiment_id(&self, name: &str) -> String {
        let body = self
            .get("experiments/get-by-name", &[("experiment_name", name)])
            .await;
        body["experiment"]["experiment_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Every run of an experiment (at most 1,000).
    pub async fn runs(&self, experiment_id: &str) -> Vec<MlflowRunView> {
        let body = self
            .post(
                "runs/search",
                serde_json::json!({ "experiment_ids": [experiment_id], "max_results": 1000 }),
            )
            .await;
        body["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(MlflowRunView::from_json)
            .collect()
    }

    pub async fn metric_history(&self, run_id: &str, key: &str) -> Vec<(i64, f64)> {
        let body = self
            .get(
                "metrics/get-history",
                &[("run_id", run_id), ("metric_key", key)],
            )
            .await;
        body["metrics"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|metric| {
                (
                    metric["step"].as_i64().unwrap_or(0),
                    metric["value"].as_f64().unwrap(),
                )
            })
            .collect()
    }

    /// The versions of a registered model: (version, source, run id).
    pub async fn model_versions(&self, name: &str) -> Vec<(String, String, String)> {
        let filter = format!("name = '{name}'");
        let body = self
            .get("model-versions/search", &[("filter", &filter)])
            .await;
        let mut versions: Vec<(String, String, String)> = body["model_versions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|version| {
                (
                    version["version"].as_str().unwrap_or_default().to_owned(),
                    version["source"].as_str().unwrap_or_default().to_owned(),
                    version["run_id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        versions.sort();
        versions
    }

    /// The MLflow version an alias points at.
    pub async fn alias(&self, name: &str, alias: &str) -> String {
        let body = self
            .get(
                "registered-models/alias",
                &[("name", name), ("alias", alias)],
            )
            .await;
        body["model_version"]["version"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// A run as the tests look at it.
#[derive(Debug, Clone)]
pub struct MlflowRunView {
    pub run_id: String,
    pub status: String,
    pub params: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
    pub tags: BTreeMap<String, String>,
}

impl MlflowRunView {
    fn from_json(run: &serde_json::Value) -> MlflowRunView {
        let pairs = |list: &serde_json::Value| -> BTreeMap<String, String> {
            list.as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|pair| {
                    (
                        pair["key"].as_str().unwrap_or_default().to_owned(),
                        pair["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        };
        MlflowRunView {
            run_id: run["info"]["run_id"].as_str().unwrap().to_owned(),
            status: run["info"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            params: pairs(&run["data"]["params"]),
            tags: pairs(&run["data"]["tags"]),
            metrics: run["data"]["metrics"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|metric| {
                    (
                        metric["key"].as_str().unwrap().to_owned(),
                        metric["value"].as_f64().unwrap(),
                    )
                })
                .collect(),
        }
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}
