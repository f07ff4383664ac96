//! The contract between the engine and task plugins, and the registry that erases their types.
//!
//! A plugin is a Rust type with a stable `KIND` and a typed `Params` struct. The registry keeps
//! each plugin behind a `dyn` adapter so the engine can check a DAG's params when it loads and
//! run a task later from the JSON params stored with the run.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::dag::{ArtifactKind, KindCheck, TaskKinds};
use crate::store::{ArtifactVersionRecord, DatasetStats};

/// A task plugin: what a `kind = "..."` in a DAG file runs.
///
/// ```
/// use kiln_engine::plugin::{TaskContext, TaskError, TaskOutput, TaskPlugin};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// #[serde(deny_unknown_fields)]
/// struct GreetParams {
///     name: String,
/// }
///
/// struct Greet;
///
/// impl TaskPlugin for Greet {
///     const KIND: &'static str = "greet";
///     type Params = GreetParams;
///
///     async fn run(&self, ctx: &TaskContext, params: GreetParams) -> Result<TaskOutput, TaskError> {
///         ctx.log_line(kiln_engine::plugin::LogStream::Stdout, &format!("hello {}", params.name));
///         Ok(TaskOutput::default())
///     }
/// }
/// ```
pub trait TaskPlugin: Send + Sync + 'static {
    /// The stable, snake_case name DAG files use in `kind`.
    const KIND: &'static str;
    /// Bumped whenever the same params and inputs would now give different outputs, so that cached
    /// results of the old version are not reused.
    const VERSION: u32 = 1;
    /// The plugin's parameters; use `#[serde(deny_unknown_fields)]` so typos are caught on load.
    type Params: DeserializeOwned + JsonSchema + Send + 'static;

    /// Runs one attempt of the task. Implementations must return promptly once
    /// `ctx.cancellation()` fires.
    fn run(
        &self,
        ctx: &TaskContext,
        params: Self::Params,
    ) -> impl Future<Output = Result<TaskOutput, TaskError>> + Send;
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// The task's standard output.
    Stdout,
    /// The task's standard error.
    Stderr,
    /// Messages from kiln itself about the attempt.
    System,
    /// `tracing` events the plugin emitted during the attempt.
    Event,
}

/// Where a running task's log lines go; the worker supplies one that ships them to the server.
pub trait LogSink: Send + Sync {
    /// Records one line (without its trailing newline).
    fn line(&self, stream: LogStream, text: &str);
}

/// A sink that drops everything, for callers that do not keep logs.
#[derive(Debug, Default)]
pub struct DiscardLogs;

impl LogSink for DiscardLogs {
    fn line(&self, _stream: LogStream, _text: &str) {}
}

/// The text of a plugin's panic (its payload is a `&str` or a `String` when it panicked with a
/// message), for the attempt's error.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned())
}

/// An input artifact of a running task: a local copy of the exact version it reads, whose bytes
/// were checked against the version's digest before the task started.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFile {
    /// The local copy.
    pub path: PathBuf,
    /// The version it is a copy of.
    pub version: ArtifactVersionRecord,
}

/// Where a running task writes one of its declared outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSlot {
    /// Write the output here; the worker stores it as a new version once the task succeeds.
    pub path: PathBuf,
    /// What the output is.
    pub kind: ArtifactKind,
    /// The media type the DAG declared for it, if any.
    pub media_type: Option<String>,
}

/// Everything a running task may reach: its identity, its log, its cancellation signal, its
/// scratch directory and its input and output artifacts. Plugins get nothing else from the
/// engine.
#[derive(Clone)]
pub struct TaskContext {
    /// The DAG the task belongs to.
    pub dag_id: String,
    /// The run, as the store numbers it.
    pub run_id: i64,
    /// The task's id within the DAG.
    pub task_id: String,
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub try_number: u32,
    /// A directory the attempt may use freely; the worker removes it afterwards.
    pub work_dir: PathBuf,
    /// The DAG folder as this worker sees it, when it has one (the `command` plugin passes it
    /// on as `KILN_DAGS_DIR`).
    pub dags_dir: Option<PathBuf>,
    /// The run's params, defaults applied (the `command` plugin passes each on as
    /// `KILN_PARAM_<NAME>`).
    pub run_params: serde_json::Map<String, serde_json::Value>,
    inputs: BTreeMap<String, InputFile>,
    outputs: BTreeMap<String, OutputSlot>,
    log: Arc<dyn LogSink>,
    cancellation: CancellationToken,
}

impl TaskContext {
    /// Builds a context; `work_dir` must exist.
    pub fn new(
        dag_id: impl Into<String>,
        run_id: i64,
        task_id: impl Into<String>,
        try_number: u32,
        work_dir: PathBuf,
        log: Arc<dyn LogSink>,
        cancellation: CancellationToken,
    ) -> TaskContext {
        TaskContext {
            dag_id: dag_id.into(),
            run_id,
            task_id: task_id.into(),
            try_number,
            work_dir,
            dags_dir: None,
            run_params: serde_json::Map::new(),
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
            log,
            cancellation,
        }
    }

    /// The same context with these input artifacts, by input name.
    pub fn with_inputs(mut self, inputs: BTreeMap<String, InputFile>) -> TaskContext {
        self.inputs = inputs;
        self
    }

    /// The same context with these output slots, by output name.
    pub fn with_outputs(mut self, outputs: BTreeMap<String, OutputSlot>) -> TaskContext {
        self.outputs = outputs;
        self
    }

    /// The same context with the run's params.
    pub fn with_run_params(
        mut self,
        run_params: serde_json::Map<String, serde_json::Value>,
    ) -> TaskContext {
        self.run_params = run_params;
        self
    }

    /// The same context with a DAG folder.
    pub fn with_dags_dir(mut self, dags_dir: Option<PathBuf>) -> TaskContext {
        self.dags_dir = dags_dir;
        self
    }

    /// An input artifact by its name in the task's `inputs`; an undeclared name is a permanent
    /// error naming the inputs there are.
    pub fn input(&self, name: &str) -> Result<&InputFile, TaskError> {
        self.inputs.get(name).ok_or_else(|| {
            TaskError::Permanent(format!(
                "the task has no input `{name}` (its inputs: {})",
                names_or_none(self.inputs.keys())
            ))
        })
    }

    /// Every input artifact, by name.
    pub fn inputs(&self) -> &BTreeMap<String, InputFile> {
        &self.inputs
    }

    /// Where to write a declared output; an undeclared name is a permanent error naming the
    /// outputs there are.
    pub fn output_path(&self, name: &str) -> Result<&Path, TaskError> {
        self.outputs
            .get(name)
            .map(|slot| slot.path.as_path())
            .ok_or_else(|| {
                TaskError::Permanent(format!(
                    "the task declares no output `{name}` (its outputs: {})",
                    names_or_none(self.outputs.keys())
                ))
            })
    }

    /// Every declared output, by name.
    pub fn outputs(&self) -> &BTreeMap<String, OutputSlot> {
        &self.outputs
    }

    /// Records a line in the attempt's log.
    pub fn log_line(&self, stream: LogStream, text: &str) {
        self.log.line(stream, text);
    }

    /// Fires when the attempt must stop: the run was cancelled, the task timed out or the worker
    /// is shutting down.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancellation
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TaskContext")
            .field("dag_id", &self.dag_id)
            .field("run_id", &self.run_id)
            .field("task_id", &self.task_id)
            .field("try_number", &self.try_number)
            .finish_non_exhaustive()
    }
}

fn names_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// What a successful attempt reports back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskOutput {
    /// A small JSON summary shown in the console (exit code, row counts, metrics).
    pub summary: serde_json::Value,
    /// What the plugin says about its outputs, by output name. An output written to its
    /// [`TaskContext::output_path`] needs no entry; an entry adds a media type or a dataset's
    /// shape, or points at a file written elsewhere.
    pub outputs: BTreeMap<String, OutputFile>,
}

/// A file written for a declared output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputFile {
    /// The file.
    pub path: PathBuf,
    /// Its media type, when the plugin knows it.
    pub media_type: Option<String>,
    /// For a dataset, its columns and row count.
    pub dataset: Option<DatasetStats>,
    /// Anything else worth keeping with the version (a model's metrics, say), as JSON.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// Why an attempt failed, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum TaskError {
    /// A failure that may go away on its own (a flaky network, a non-zero exit): retried while
    /// the task has tries left.
    #[error("{0}")]
    Retryable(String),
    /// A failure that will repeat (bad params, missing input): never retried.
    #[error("{0}")]
    Permanent(String),
    /// The attempt stopped because it was cancelled or timed out.
    #[error("cancelled: {0}")]
    Cancelled(String),
}

impl TaskError {
    /// Whether the scheduler may schedule another attempt.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TaskError::Retryable(_))
    }
}

/// A params check failure: where in the params the problem is, and what it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() || path == "." { String::new() } else { format!("`{path}`: ") })]
pub struct ParamsError {
    /// The path inside `params`, such as `args[1]`; empty for the params table itself.
    pub path: String,
    /// What is wrong, in serde's words (names the expected type or the unknown field).
    pub message: String,
}

/// The boxed future an erased plugin returns.
pub type BoxTaskFuture<'a> =
    Pin<Box<dyn Future<Output = Result<TaskOutput, TaskError>> + Send + 'a>>;

/// A plugin with its types erased, as the registry holds it.
pub trait ErasedPlugin: Send + Sync {
    /// The plugin's kind.
    fn kind(&self) -> &'static str;
    /// The plugin's version, part of every cache key.
    fn version(&self) -> u32;
    /// Checks that `params` deserialize into the plugin's params struct.
    fn check_params(&self, params: &serde_json::Value) -> Result<(), ParamsError>;
    /// The JSON Schema of the plugin's params, for the console and the API.
    fn params_schema(&self) -> serde_json::Value;
    /// Deserializes `params` and runs one attempt.
    fn run<'a>(&'a self, ctx: &'a TaskContext, params: serde_json::Value) -> BoxTaskFuture<'a>;
}

fn deserialize_params<P: DeserializeOwned>(params: &serde_json::Value) -> Result<P, ParamsError> {
    serde_path_to_error::deserialize(params).map_err(|error| ParamsError {
        path: error.path().to_string(),
        message: error.into_inner().to_string(),
    })
}

struct Erased<P>(P);

impl<P: TaskPlugin> ErasedPlugin for Erased<P> {
    fn kind(&self) -> &'static str {
        P::KIND
    }

    fn version(&self) -> u32 {
        P::VERSION
    }

    fn check_params(&self, params: &serde_json::Value) -> Result<(), ParamsError> {
        deserialize_params::<P::Params>(params).map(drop)
    }

    fn params_schema(&self) -> serde_json::Value {
        schemars::schema_for!(P::Params).to_value()
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext, params: serde_json::Value) -> BoxTaskFuture<'a> {
        Box::pin(async move {
            let params = deserialize_params::<P::Params>(&params)
                .map_err(|error| TaskError::Permanent(format!("invalid params: {error}")))?;
            self.0.run(ctx, params).await
        })
    }
}

/// Registering a plugin failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two plugins claimed the same kind.
    #[error("a task plugin of kind `{0}` is already registered")]
    DuplicateKind(String),
}

/// The plugins a process knows, by kind.
///
/// Kinds that a later release will provide can be registered as *planned*: DAGs using them load
/// with a warning instead of an error, and their tasks fail when run.
#[derive(Default, Clone)]
pub struct PluginRegistry {
    plugins: BTreeMap<&'static str, Arc<dyn ErasedPlugin>>,
    planned: BTreeMap<&'static str, &'static str>,
}

impl PluginRegistry {
    /// An empty registry.
    pub fn new() -> PluginRegistry {
        PluginRegistry::default()
    }

    /// Adds a plugin; a second plugin of the same kind is refused.
    pub fn register<P: TaskPlugin>(&mut self, plugin: P) -> Result<(), RegistryError> {
        if self.plugins.contains_key(P::KIND) {
            return Err(RegistryError::DuplicateKind(P::KIND.to_owned()));
        }
        self.planned.remove(P::KIND);
        self.plugins.insert(P::KIND, Arc::new(Erased(plugin)));
        Ok(())
    }

    /// Declares a kind that is not available in this build, with a note on when it arrives.
    pub fn register_planned(&mut self, kind: &'static str, note: &'static str) {
        if !self.plugins.contains_key(kind) {
            self.planned.insert(kind, note);
        }
    }

    /// The plugin of a kind, if one is registered.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn ErasedPlugin>> {
        self.plugins.get(kind)
    }

    /// The note of a planned kind, if `kind` is planned but not available.
    pub fn planned_note(&self, kind: &str) -> Option<&'static str> {
        self.planned.get(kind).copied()
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.plugins.keys().copied()
    }
}

impl TaskKinds for PluginRegistry {
    fn check_params(&self, kind: &str, params: &serde_json::Value) -> KindCheck {
        match self.get(kind) {
            Some(plugin) => match plugin.check_params(params) {
                Ok(()) => KindCheck::Fits,
                Err(error) => KindCheck::BadParams(error.to_string()),
            },
            None => match self.planned_note(kind) {
                Some(note) => KindCheck::Planned(note),
                None => KindCheck::Unknown(self.kinds().collect()),
            },
        }
    }
}

impl fmt::Debug for PluginRegistry {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PluginRegistry")
            .field("kinds", &self.plugins.keys().collect::<Vec<_>>())
            .field("planned", &self.planned.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct EchoParams {
        words: Vec<String>,
        loud: Option<bool>,
    }

    struct Echo;

    impl TaskPlugin for Echo {
        const KIND: &'static str = "echo";
        type Params = EchoParams;

        async fn run(
            &self,
            _ctx: &TaskContext,
            params: EchoParams,
        ) -> Result<TaskOutput, TaskError> {
            Ok(TaskOutput {
                summary: serde_json::json!({ "words": params.words.len() }),
                ..TaskOutput::default()
            })
        }
    }

    #[test]
    fn duplicate_kinds_are_refused() {
        let mut registry = PluginRegistry::new();
        registry.register(Echo).unwrap();
        assert_eq!(
            registry.register(Echo),
            Err(RegistryError::DuplicateKind("echo".to_owned()))
        );
    }

    #[test]
    fn params_errors_name_the_field_and_the_expected_type() {
        let mut registry = PluginRegistry::new();
        registry.register(Echo).unwrap();
        let echo = registry.get("echo").unwrap();
        let check = |params: serde_json::Value| echo.check_params(&params).unwrap_err().to_string();
        expect_test::expect!["`words[1]`: invalid type: integer `3`, expected a string"]
            .assert_eq(&check(serde_json::json!({ "words": ["a", 3] })));
        expect_test::expect!["missing field `words`"].assert_eq(&check(serde_json::json!({})));
        expect_test::expect!["`lowd`: unknown field `lowd`, expected `words` or `loud`"]
            .assert_eq(&check(serde_json::json!({ "words": [], "lowd": true })));
        assert!(
            echo.check_params(&serde_json::json!({ "words": ["a"] }))
                .is_ok()
        );
    }

    #[test]
    fn schema_describes_params() {
        let mut registry = PluginRegistry::new();
        registry.register(Echo).unwrap();
        let schema = registry.get("echo").unwrap().params_schema();
        assert_eq!(schema["required"], serde_json::json!(["words"]));
        assert_eq!(schema["properties"]["words"]["type"], "array");
    }

    #[tokio::test]
    async fn running_checks_params_first() {
        let mut registry = PluginRegistry::new();
        registry.register(Echo).unwrap();
        let ctx = TaskContext::new(
            "dag",
            1,
            "task",
            1,
            std::env::temp_dir(),
            Arc::new(DiscardLogs),
            CancellationToken::new(),
        );
        let echo = registry.get("echo").unwrap();
        let output = echo
            .run(&ctx, serde_json::json!({ "words": ["a", "b"] }))
            .await
            .unwrap();
        assert_eq!(output.summary, serde_json::json!({ "words": 2 }));
        let error = echo
            .run(&ctx, serde_json::json!({ "words": 1 }))
            .await
            .unwrap_err();
        assert!(!error.is_retryable());
        assert!(
            error.to_string().starts_with("invalid params: `words`"),
            "{error}"
        );
    }
}
