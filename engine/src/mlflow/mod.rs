//! The MLflow mirror: kiln's runs, training and evaluation attempts and model registry, told to
//! an MLflow tracking server.
//!
//! kiln stays the source of truth; MLflow mirrors it. The store writes what MLflow should hear
//! into an outbox (`mlflow_outbox`) in the same transaction as the change itself, and the
//! [`Sender`] drains it in order, with retries and backoff, recording every id MLflow hands out
//! (`mlflow_ids`) so that a retry never creates a second run or model version. A task never waits
//! for MLflow and never fails because of it.
//!
//! What goes where:
//!
//! - A DAG with a `train`, `evaluate` or `deploy` task is an experiment, named after the DAG
//!   unless the run's params set `mlflow_experiment`.
//! - A run of it is an MLflow run (its params as params; tags `kiln.dag_id`, `kiln.run_id`, the
//!   DAG file's git commit when the DAG folder is a git checkout), `FINISHED`, `FAILED` or
//!   `KILLED` when it ends.
//! - Each ended attempt of such a task is a nested run (`mlflow.parentRunId`) with params
//!   (hyperparameters, the task's params, the input versions and their SHA-256), metrics
//!   (training info, per step where the value is a series; every candidate's figures for
//!   `evaluate`, whose best figures also go to the parent run), tags (DAG, run, task, attempt,
//!   worker) and links to the artifacts it read and wrote.
//! - A `deploy` registers its model version: a registered model per kiln model name, and a
//!   version whose source is [`artifact_uri`], `kiln-artifact:///NAME@VERSION`. Alias moves
//!   (deploy, promote, rollback) move the MLflow alias of the same name.

mod client;
mod links;
mod sender;

use std::path::Path;

pub use client::{
    CreateRun, Experiment, KeyValue, Metric, MlflowAuth, MlflowClient, MlflowConfig, MlflowError,
    ModelVersion, RunInfo,
};
pub use links::{MlflowLinks, MlflowRunLink};
pub use sender::{DrainReport, MLFLOW_OUTBOX_DUTY, Sender, SenderConfig};

use crate::store::{OutboxAttempt, OutboxEvent, OutboxRun, OutboxTracking};

/// The most characters MLflow keeps in a param value (its limit since 2.x is 6,000).
const PARAM_VALUE_LIMIT: usize = 6000;
/// The most characters kiln puts in a tag value (MLflow keeps 8,000; errors are cut shorter).
const TAG_VALUE_LIMIT: usize = 5000;

// Here rather than beside the type: it is the mirror's wording, not the store's.
impl OutboxEvent {
    /// What it tells MLflow, in a few words, for operators (the console, `kiln mlflow status`).
    pub fn describe(&self) -> String {
        match self {
            OutboxEvent::RunStart(run) => format!("{} run {} started", run.dag_id, run.run_id),
            OutboxEvent::TaskAttempt(attempt) => format!(
                "{} run {}: {} try {} ended ({})",
                attempt.run.dag_id,
                attempt.run.run_id,
                attempt.task_id,
                attempt.try_number,
                attempt.state
            ),
            OutboxEvent::RunEnd(end) => format!(
                "{} run {} ended ({})",
                end.run.dag_id, end.run.run_id, end.state
            ),
            OutboxEvent::ModelVersion(version) => format!(
                "model {} version {} registered",
                version.name, version.version
            ),
            OutboxEvent::AliasSet(alias) => format!(
                "model {}: alias {} moved to version {}",
                alias.name, alias.alias, alias.version
            ),
        }
    }
}

/// The URI by which MLflow refers to a kiln artifact version: `kiln-artifact:///NAME@VERSION`.
/// It names a version in kiln's artifact store (`kiln artifacts get NAME@VERSION` reads it);
/// MLflow never holds the bytes. The empty authority (three slashes, as in `file:///`) means
/// "the kiln that registered it", and keeps the path absolute, which MLflow requires of a model
/// version's source.
pub fn artifact_uri(name: &str, version: i64) -> String {
    format!("kiln-artifact:///{name}@{version}")
}

/// The plugin kinds whose attempts the MLflow mirror records: their summaries have a documented
/// shape (`train`: algorithm and training info; `evaluate`: candidates and their metrics;
/// `deploy`: the model it registers) that this module maps to params and metrics. The engine
/// reads only these names, never the plugins themselves.
pub const MLFLOW_TRACKED_KINDS: [&str; 3] = ["train", "evaluate", "deploy"];

/// What the store's outbox follows for the MLflow mirror: the tracked kinds' attempts, and the
/// model versions `deploy` (the registry step) writes.
pub const MLFLOW_TRACKING: OutboxTracking = OutboxTracking {
    task_kinds: &MLFLOW_TRACKED_KINDS,
    model_publisher_kinds: &["deploy"],
};

/// Whether runs of this DAG are mirrored: it has a task of a kind in [`MLFLOW_TRACKED_KINDS`].
pub fn tracks(dag: &crate::dag::Dag) -> bool {
    MLFLOW_TRACKING.tracks_dag(dag)
}

/// What a mirror id (an `mlflow_ids` row) maps; stored by its [`MlflowIdKind::as_str`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlflowIdKind {
    /// An experiment, by name.
    Experiment,
    /// A kiln run (by run id) to its MLflow run.
    Run,
    /// An attempt (`TASK_INSTANCE:TRY`) to its nested MLflow run.
    Attempt,
    /// A model version (`NAME@VERSION`) to MLflow's version number.
    ModelVersion,
}

impl MlflowIdKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            MlflowIdKind::Experiment => "experiment",
            MlflowIdKind::Run => "run",
            MlflowIdKind::Attempt => "attempt",
            MlflowIdKind::ModelVersion => "model_version",
        }
    }
}

/// The experiment a run is recorded in: the run's `mlflow_experiment` param, or the DAG id.
pub fn experiment_name(run: &OutboxRun) -> String {
    experiment_name_for(&run.dag_id, &run.params)
}

/// The experiment a run of `dag_id` with these params is recorded in (see [`experiment_name`]).
pub fn experiment_name_for(dag_id: &str, params: &serde_json::Value) -> String {
    params
        .get("mlflow_experiment")
        .and_then(serde_json::Value::as_str)
        .filter(|name| !name.trim().is_empty())
        .map_or_else(|| dag_id.to_owned(), str::to_owned)
}

/// A kiln run's name across databases: its DAG, id and creation time. The MLflow run carries it
/// as the tag `kiln.run_uid`, which is what a retry searches for before creating.
pub fn run_uid(run: &OutboxRun) -> String {
    format!("{}/{}/{}", run.dag_id, run.run_id, run.created_at)
}

/// An attempt's name across databases (tag `kiln.attempt_uid`).
pub fn attempt_uid(attempt: &OutboxAttempt) -> String {
    format!(
        "{}/{}/{}",
        run_uid(&attempt.run),
        attempt.task_id,
        attempt.try_number
    )
}

/// MLflow's status for a kiln run or attempt state.
pub fn run_status(state: &str) -> &'static str {
    match state {
        "success" => "FINISHED",
        "cancelled" => "KILLED",
        _ => "FAILED",
    }
}

/// What a nested run records for one attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptData {
    /// Hyperparameters, task params, input versions and hashes.
    pub params: Vec<KeyValue>,
    /// The attempt's figures.
    pub metrics: Vec<Metric>,
    /// kiln's ids and the artifact links.
    pub tags: Vec<KeyValue>,
    /// Figures for the parent run: an evaluation's best.
    pub parent_metrics: Vec<Metric>,
    /// Tags for the parent run.
    pub parent_tags: Vec<KeyValue>,
}

/// Maps an attempt's summary, params and artifacts to what its nested run records.
pub fn attempt_data(attempt: &OutboxAttempt) -> AttemptData {
    let mut data = AttemptData::default();
    let timestamp = attempt.ended_at / 1000;
    let metric = |key: &str, value: f64, step: i64| Metric {
        key: clean_key(key),
        value,
        timestamp,
        step,
    };
    let tag = |key: &str, value: &str| KeyValue::new(clean_key(key), cut(value, TAG_VALUE_LIMIT));
    data.tags.extend([
        tag("kiln.dag_id", &attempt.run.dag_id),
        tag("kiln.run_id", &attempt.run.run_id.to_string()),
        tag("kiln.task_id", &attempt.task_id),
        tag("kiln.task_kind", &attempt.kind),
        tag(
            "kiln.task_instance_id",
            &attempt.task_instance_id.to_string(),
        ),
        tag("kiln.try_number", &attempt.try_number.to_string()),
        tag("kiln.worker", &attempt.worker_id),
        tag("kiln.state", &attempt.state),
    ]);
    if let Some(error) = &attempt.error {
        data.tags.push(tag("kiln.error", error));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    for input in &attempt.inputs {
        params.push((
            format!("input.{}", input.slot),
            format!("{}@{}", input.name, input.version),
        ));
        params.push((format!("input.{}.sha256", input.slot), input.sha256.clone()));
        data.tags.push(tag(
            &format!("kiln.input.{}", input.slot),
            &artifact_uri(&input.name, input.version),
        ));
    }
    for output in &attempt.outputs {
        data.tags.push(tag(
            &format!("kiln.output.{}", output.slot),
            &artifact_uri(&output.name, output.version),
        ));
        data.tags.push(tag(
            &format!("kiln.output.{}.sha256", output.slot),
            &output.sha256,
        ));
    }
    let summary = attempt
        .summary
        .as_ref()
        .and_then(serde_json::Value::as_object);
    match (attempt.kind.as_str(), summary) {
        ("train", Some(summary)) => {
            // The resolved hyperparameters (defaults applied) rather than the file's.
            if let Some(algorithm) = summary
                .get("algorithm")
                .and_then(serde_json::Value::as_object)
            {
                for (key, value) in algorithm {
                    let key = if key == "name" {
                        "algorithm"
                    } else {
                        key.as_str()
                    };
                    params.push((key.to_owned(), param_text(value)));
                }
            }
            for (key, name) in [
                ("rows", "rows"),
                ("features", "features"),
                ("seconds", "training_seconds"),
            ] {
                if let Some(value) = summary.get(key).and_then(serde_json::Value::as_f64) {
                    data.metrics.push(metric(name, value, 0));
                }
            }
            if let Some(info) = summary.get("info").and_then(serde_json::Value::as_object) {
                for (key, value) in info {
                    numbers(key, value, &mut |key, value, step| {
                        data.metrics.push(metric(key, value, step));
                    });
                }
            }
        }
        ("evaluate", Some(summary)) => {
            for key in ["metric", "best", "best_model", "test_data"] {
                if let Some(value) = summary.get(key).filter(|value| !value.is_null()) {
                    params.push((key.to_owned(), param_text(value)));
                }
            }
            // The best candidate's figures sit at the top level of the summary.
            for (key, value) in summary {
                if let Some(value) = value.as_f64() {
                    data.metrics.push(metric(key, value, 0));
                    data.parent_metrics.push(metric(key, value, 0));
                }
            }
            if let Some(candidates) = summary
                .get("candidates")
                .and_then(serde_json::Value::as_object)
            {
                for (candidate, entry) in candidates {
                    if let Some(figures) =
                        entry.get("metrics").and_then(serde_json::Value::as_object)
                    {
                        for (key, value) in figures {
                            if let Some(value) = value.as_f64() {
                                data.metrics
                                    .push(metric(&format!("{candidate}.{key}"), value, 0));
                            }
                        }
                    }
                }
            }
            if let Some(figures) = summary
                .get("production")
                .and_then(serde_json::Value::as_object)
            {
                for (key, value) in figures {
                    if let Some(value) = value.as_f64() {
                        data.metrics
                            .push(metric(&format!("production.{key}"), value, 0));
                    }
                }
            }
            if let Some(gate) = summary.get("gate") {
                let passed = gate.get("passed").and_then(serde_json::Value::as_bool);
                if let Some(passed) = passed {
                    data.tags
                        .push(tag("kiln.gate", if passed { "passed" } else { "failed" }));
                }
            }
            if let Some(best) = summary
                .get("best_model")
                .and_then(serde_json::Value::as_str)
            {
                data.parent_tags.push(tag("kiln.best_model", best));
            }
        }
        _ => {}
    }
    // The task's own params, unless the summary already gave a key a resolved value.
    if let Some(task_params) = attempt.task_params.as_object() {
        for (key, value) in task_params {
            if attempt.kind == "train" && key == "algorithm" {
                continue;
            }
            flatten(key, value, &mut |key, value| {
                if !params.iter().any(|(existing, _)| existing == &key) {
                    params.push((key, value));
                }
            });
        }
    }
    data.params = params
        .into_iter()
        .map(|(key, value)| KeyValue::new(clean_key(&key), cut(&value, PARAM_VALUE_LIMIT)))
        .collect();
    data
}

/// What a parent run records for its kiln run: the run's params and kiln's ids.
pub fn run_data(run: &OutboxRun, git_commit: Option<&str>) -> (Vec<KeyValue>, Vec<KeyValue>) {
    let mut params = Vec::new();
    if let Some(object) = run.params.as_object() {
        for (key, value) in object {
            flatten(key, value, &mut |key, value| {
                params.push(KeyValue::new(
                    clean_key(&key),
                    cut(&value, PARAM_VALUE_LIMIT),
                ));
            });
        }
    }
    let mut tags = vec![
        KeyValue::new("kiln.dag_id", run.dag_id.clone()),
        KeyValue::new("kiln.run_id", run.run_id.to_string()),
        KeyValue::new("kiln.trigger", run.trigger.clone()),
        KeyValue::new("kiln.dag_version", run.dag_version.to_string()),
        KeyValue::new("kiln.dag_source_sha256", run.dag_source_sha256.clone()),
        KeyValue::new("mlflow.source.name", cut(&run.dag_file, TAG_VALUE_LIMIT)),
    ];
    if let Some(commit) = git_commit {
        tags.push(KeyValue::new("mlflow.source.git.commit", commit));
    }
    (params, tags)
}

/// Calls `found` for every number in a value: a number at step 0, a list of numbers step by
/// step (a loss per iteration, say).
fn numbers(key: &str, value: &serde_json::Value, found: &mut impl FnMut(&str, f64, i64)) {
    match value {
        serde_json::Value::Number(number) => {
            if let Some(value) = number.as_f64() {
                found(key, value, 0);
            }
        }
        serde_json::Value::Array(items) => {
            for (step, item) in items.iter().enumerate() {
                if let Some(value) = item.as_f64() {
                    found(key, value, i64::try_from(step).unwrap_or(i64::MAX));
                }
            }
        }
        _ => {}
    }
}

/// Flattens params: a table's entries become `table.key`; everything else its text.
fn flatten(key: &str, value: &serde_json::Value, found: &mut impl FnMut(String, String)) {
    match value {
        serde_json::Value::Object(object) if !object.is_empty() => {
            for (inner, value) in object {
                flatten(&format!("{key}.{inner}"), value, found);
            }
        }
        other => found(key.to_owned(), param_text(other)),
    }
}

/// A param value as text: strings as they are, anything else as JSON.
fn param_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A key MLflow accepts: letters, digits, `_ - . / :` and spaces; anything else becomes `_`.
fn clean_key(key: &str) -> String {
    let cleaned: String = key
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || "_-./: ".contains(character) {
                character
            } else {
                '_'
            }
        })
        .take(250)
        .collect();
    if cleaned.is_empty() {
        "_".to_owned()
    } else {
        cleaned
    }
}

/// The first `limit` characters of a text.
fn cut(text: &str, limit: usize) -> String {
    text.chars().take(limit).collect()
}

/// The commit checked out in the git repository that holds `path`, read from `.git` without
/// running git; `None` when the path is not in a checkout.
pub fn git_commit(path: &Path) -> Option<String> {
    let start = std::fs::canonicalize(path).ok()?;
    let top = start.ancestors().find(|dir| dir.join(".git").exists())?;
    let mut git_dir = top.join(".git");
    // A worktree or submodule has a `.git` file that points at the real directory.
    if git_dir.is_file() {
        let text = std::fs::read_to_string(&git_dir).ok()?;
        let target = text.trim().strip_prefix("gitdir:")?.trim();
        git_dir = top.join(target);
    }
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref:").map(str::trim) else {
        return is_commit(head).then(|| head.to_owned());
    };
    // Refs of a worktree live in the main repository's directory (`commondir`).
    let common = match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(relative) => git_dir.join(relative.trim()),
        Err(_) => git_dir.clone(),
    };
    for dir in [&git_dir, &common] {
        if let Ok(text) = std::fs::read_to_string(dir.join(reference)) {
            let commit = text.trim();
            if is_commit(commit) {
                return Some(commit.to_owned());
            }
        }
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (commit, name) = line.split_once(' ')?;
        (name == reference && is_commit(commit)).then(|| commit.to_owned())
    })
}

fn is_commit(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.chars().all(|character| character.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;
    use crate::store::OutboxArtifact;

    fn run() -> OutboxRun {
        OutboxRun {
            dag_id: "wine".to_owned(),
            run_id: 7,
            created_at: 1_800_000_000_000_000,
            logical_date: 1_800_000_000_000_000,
            trigger: "manual".to_owned(),
            params: serde_json::json!({ "split": 0.2, "mlflow_experiment": "wine-quality" }),
            dag_file: "dags/wine.toml".to_owned(),
            dag_version: 3,
            dag_source_sha256: "ab".repeat(32),
            started_at: Some(1_800_000_000_000_000),
        }
    }

    fn attempt(
        kind: &str,
        summary: serde_json::Value,
        task_params: serde_json::Value,
    ) -> OutboxAttempt {
        OutboxAttempt {
            run: run(),
            task_id: kind.to_owned(),
            kind: kind.to_owned(),
            task_instance_id: 42,
            try_number: 2,
            worker_id: "w1".to_owned(),
            state: "success".to_owned(),
            error: None,
            task_params,
            summary: Some(summary),
            started_at: 1_800_000_001_000_000,
            ended_at: 1_800_000_002_000_000,
            inputs: vec![OutboxArtifact {
                slot: "train".to_owned(),
                name: "wine.process.train".to_owned(),
                version: 4,
                sha256: "cd".repeat(32),
            }],
            outputs: vec![OutboxArtifact {
                slot: "model".to_owned(),
                name: "wine.train.model".to_owned(),
                version: 5,
                sha256: "ef".repeat(32),
            }],
        }
    }

    fn check(attempt: &OutboxAttempt, expect: Expect) {
        let data = attempt_data(attempt);
        let mut text = String::new();
        for param in &data.params {
            text.push_str(&format!("param {} = {}\n", param.key, param.value));
        }
        for metric in &data.metrics {
            text.push_str(&format!(
                "metric {} = {} (step {}, at {})\n",
                metric.key, metric.value, metric.step, metric.timestamp
            ));
        }
        for tag in &data.tags {
            text.push_str(&format!("tag {} = {}\n", tag.key, tag.value));
        }
        for metric in &data.parent_metrics {
            text.push_str(&format!(
                "parent metric {} = {}\n",
                metric.key, metric.value
            ));
        }
        for tag in &data.parent_tags {
            text.push_str(&format!("parent tag {} = {}\n", tag.key, tag.value));
        }
        expect.assert_eq(&text);
    }

    #[test]
    fn a_training_summary_becomes_params_and_metrics() {
        let summary = serde_json::json!({
            "algorithm": { "name": "random_forest", "trees": 50, "max_depth": null, "bootstrap": true },
            "rows": 1000,
            "features": 11,
            "seconds": 0.25,
            "info": { "training_accuracy": 0.9, "loss": [0.7, 0.5, 0.4], "note": "text is not a metric" },
        });
        let params = serde_json::json!({
            "algorithm": { "name": "random_forest", "trees": 50 },
            "target": "quality",
            "seed": 7,
            "features": ["alcohol", "ph"],
        });
        check(
            &attempt("train", summary, params),
            expect![[r#"
                param input.train = wine.process.train@4
                param input.train.sha256 = cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd
                param bootstrap = true
                param max_depth = null
                param algorithm = random_forest
                param trees = 50
                param features = ["alcohol","ph"]
                param seed = 7
                param target = quality
                metric rows = 1000 (step 0, at 1800000002000)
                metric features = 11 (step 0, at 1800000002000)
                metric training_seconds = 0.25 (step 0, at 1800000002000)
                metric loss = 0.7 (step 0, at 1800000002000)
                metric loss = 0.5 (step 1, at 1800000002000)
                metric loss = 0.4 (step 2, at 1800000002000)
                metric training_accuracy = 0.9 (step 0, at 1800000002000)
                tag kiln.dag_id = wine
                tag kiln.run_id = 7
                tag kiln.task_id = train
                tag kiln.task_kind = train
                tag kiln.task_instance_id = 42
                tag kiln.try_number = 2
                tag kiln.worker = w1
                tag kiln.state = success
                tag kiln.input.train = kiln-artifact:///wine.process.train@4
                tag kiln.output.model = kiln-artifact:///wine.train.model@5
                tag kiln.output.model.sha256 = efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef
            "#]],
        );
    }

    #[test]
    fn an_evaluation_logs_every_candidate_and_the_best_on_the_parent() {
        let summary = serde_json::json!({
            "metric": "accuracy",
            "best": "forest",
            "best_model": "wine.train_forest.model@2",
            "test_data": "wine.process.test@4",
            "candidates": {
                "forest": { "model": "wine.train_forest.model@2", "metrics": { "accuracy": 0.8, "f1": 0.7, "confusion": [[1, 2], [3, 4]] } },
                "tree": { "model": "wine.train_tree.model@2", "metrics": { "accuracy": 0.6, "f1": 0.5 } },
            },
            "production": { "accuracy": 0.75 },
            "gate": { "passed": true, "failures": [] },
            "accuracy": 0.8,
            "f1": 0.7,
        });
        check(
            &attempt(
                "evaluate",
                summary,
                serde_json::json!({ "metric": "accuracy", "gate": { "min_accuracy": 0.7 } }),
            ),
            expect![[r#"
                param input.train = wine.process.train@4
                param input.train.sha256 = cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd
                param metric = accuracy
                param best = forest
                param best_model = wine.train_forest.model@2
                param test_data = wine.process.test@4
                param gate.min_accuracy = 0.7
                metric accuracy = 0.8 (step 0, at 1800000002000)
                metric f1 = 0.7 (step 0, at 1800000002000)
                metric forest.accuracy = 0.8 (step 0, at 1800000002000)
                metric forest.f1 = 0.7 (step 0, at 1800000002000)
                metric tree.accuracy = 0.6 (step 0, at 1800000002000)
                metric tree.f1 = 0.5 (step 0, at 1800000002000)
                metric production.accuracy = 0.75 (step 0, at 1800000002000)
                tag kiln.dag_id = wine
                tag kiln.run_id = 7
                tag kiln.task_id = evaluate
                tag kiln.task_kind = evaluate
                tag kiln.task_instance_id = 42
                tag kiln.try_number = 2
                tag kiln.worker = w1
                tag kiln.state = success
                tag kiln.input.train = kiln-artifact:///wine.process.train@4
                tag kiln.output.model = kiln-artifact:///wine.train.model@5
                tag kiln.output.model.sha256 = efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef
                tag kiln.gate = passed
                parent metric accuracy = 0.8
                parent metric f1 = 0.7
                parent tag kiln.best_model = wine.train_forest.model@2
            "#]],
        );
    }

    #[test]
    fn names_statuses_and_keys() {
        assert_eq!(artifact_uri("wq", 3), "kiln-artifact:///wq@3");
        assert_eq!(experiment_name(&run()), "wine-quality");
        let mut plain = run();
        plain.params = serde_json::json!({});
        assert_eq!(experiment_name(&plain), "wine");
        assert_eq!(run_uid(&plain), "wine/7/1800000000000000");
        assert_eq!(
            (
                run_status("success"),
                run_status("failed"),
                run_status("timed_out"),
                run_status("cancelled")
            ),
            ("FINISHED", "FAILED", "FAILED", "KILLED")
        );
        assert_eq!(clean_key("loss (train)*"), "loss _train__");
        let (params, tags) = run_data(&run(), Some(&"1".repeat(40)));
        assert_eq!(
            params,
            vec![
                KeyValue::new("mlflow_experiment", "wine-quality"),
                KeyValue::new("split", "0.2")
            ]
        );
        assert!(tags.contains(&KeyValue::new("mlflow.source.git.commit", "1".repeat(40))));
    }

    #[test]
    fn the_commit_of_a_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let dags = dir.path().join("dags");
        std::fs::create_dir_all(&dags).unwrap();
        std::fs::write(dags.join("wine.toml"), "id = \"wine\"").unwrap();
        assert_eq!(git_commit(&dags.join("wine.toml")), None);
        let git = dir.path().join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(
            git.join("packed-refs"),
            format!("# pack-refs\n{} refs/heads/main\n", "a".repeat(40)),
        )
        .unwrap();
        assert_eq!(git_commit(&dags.join("wine.toml")), Some("a".repeat(40)));
        std::fs::write(git.join("refs/heads/main"), format!("{}\n", "b".repeat(40))).unwrap();
        assert_eq!(git_commit(&dags.join("wine.toml")), Some("b".repeat(40)));
        std::fs::write(git.join("HEAD"), format!("{}\n", "c".repeat(40))).unwrap();
        assert_eq!(git_commit(&dags), Some("c".repeat(40)));
    }
}
