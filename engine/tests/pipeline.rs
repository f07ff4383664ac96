//! Artifacts end to end: real workers run plugins that read and write artifacts through their
//! task context, against the real execution service on SQLite, with the blobs on local disk or
//! on a real S3-compatible server. Lineage of a three-step pipeline, cache hits and misses,
//! corruption, and workers without store credentials moving bytes through the server.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kiln_engine::artifacts::{ArtifactStoreConfig, BlobStore, LocalConfig, blob_key};
use kiln_engine::execution::ExecutionService;
use kiln_engine::plugin::{
    OutputFile, PluginRegistry, TaskContext, TaskError, TaskOutput, TaskPlugin,
};
use kiln_engine::scheduler::Scheduler;
use kiln_engine::state::{RunState, TaskState};
use kiln_engine::store::{ColumnSchema, DatasetStats, LineageDirection, Store, TriggerKind};
use kiln_engine::worker::{WorkerConfig, run_worker};
use tokio_util::sync::CancellationToken;

/// How often each plugin really ran (cache hits do not run the plugin), by test, so that tests
/// running at the same time do not see each other's counts.
#[derive(Default)]
struct Counts {
    upper: AtomicUsize,
    join: AtomicUsize,
}

fn counts(test: &str) -> Arc<Counts> {
    static ALL: std::sync::Mutex<Vec<(String, Arc<Counts>)>> = std::sync::Mutex::new(Vec::new());
    let mut all = ALL.lock().unwrap();
    if let Some((_, counts)) = all.iter().find(|(name, _)| name == test) {
        return counts.clone();
    }
    let counts = Arc::new(Counts::default());
    all.push((test.to_owned(), counts.clone()));
    counts
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct EmitParams {
    /// Copy this file to the task's only output.
    file: PathBuf,
}

/// Writes a file's bytes to the task's only output, as an ingest step would.
struct Emit;

impl TaskPlugin for Emit {
    const KIND: &'static str = "emit";
    type Params = EmitParams;

    async fn run(&self, ctx: &TaskContext, params: EmitParams) -> Result<TaskOutput, TaskError> {
        let (name, _) = ctx
            .outputs()
            .iter()
            .next()
            .expect("emit declares an output");
        let path = ctx.output_path(name)?;
        std::fs::copy(&params.file, path)
            .map_err(|error| TaskError::Permanent(format!("copy: {error}")))?;
        Ok(TaskOutput::default())
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpperParams {
    test: String,
    #[serde(default)]
    suffix: String,
}

/// Upper-cases its input `in` into its output `out`, and says what it wrote is a dataset.
struct Upper<const VERSION: u32>;

impl<const V: u32> TaskPlugin for Upper<V> {
    const KIND: &'static str = "upper";
    const VERSION: u32 = V;
    type Params = UpperParams;

    async fn run(&self, ctx: &TaskContext, params: UpperParams) -> Result<TaskOutput, TaskError> {
        counts(&params.test).upper.fetch_add(1, Ordering::SeqCst);
        let input = std::fs::read_to_string(&ctx.input("in")?.path)
            .map_err(|error| TaskError::Permanent(error.to_string()))?;
        let path = ctx.output_path("out")?.to_owned();
        std::fs::write(&path, format!("{}{}", input.to_uppercase(), params.suffix))
            .map_err(|error| TaskError::Permanent(error.to_string()))?;
        let mut output = TaskOutput::default();
        output.outputs.insert(
            "out".to_owned(),
            OutputFile {
                path,
                media_type: Some("text/csv".to_owned()),
                dataset: Some(DatasetStats {
                    columns: vec![ColumnSchema {
                        name: "line".to_owned(),
                        dtype: "String".to_owned(),
                    }],
                    rows: input.lines().count() as u64,
                }),
                metadata: None,
            },
        );
        Ok(output)
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct JoinParams {
    test: String,
}

/// Concatenates its inputs, in name order, into its output `model`.
struct Join;

impl TaskPlugin for Join {
    const KIND: &'static str = "join";
    type Params = JoinParams;

    async fn run(&self, ctx: &TaskContext, params: JoinParams) -> Result<TaskOutput, TaskError> {
        counts(&params.test).join.fetch_add(1, Ordering::SeqCst);
        let mut joined = String::new();
        for input in ctx.inputs().values() {
            joined.push_str(
                &std::fs::read_to_string(&input.path)
                    .map_err(|error| TaskError::Permanent(error.to_string()))?,
            );
        }
        std::fs::write(ctx.output_path("model")?, format!("model[{joined}]"))
            .map_err(|error| TaskError::Permanent(error.to_string()))?;
        Ok(TaskOutput::default())
    }
}

/// Declares an output and writes nothing.
struct Forgetful;

impl TaskPlugin for Forgetful {
    const KIND: &'static str = "forgetful";
    type Params = JoinParams;

    async fn run(&self, _ctx: &TaskContext, _params: JoinParams) -> Result<TaskOutput, TaskError> {
        Ok(TaskOutput::default())
    }
}

fn registry<const UPPER_VERSION: u32>() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    registry.register(Emit).unwrap();
    registry.register(Upper::<UPPER_VERSION>).unwrap();
    registry.register(Join).unwrap();
    registry.register(Forgetful).unwrap();
    registry
}

fn pipeline_dag(test: &str, raw_file: &Path, cache: bool, suffix: &str) -> String {
    format!(
        r#"
id = "pipe"
[defaults]
cache = {cache}
[[tasks]]
id = "ingest"
kind = "emit"
cache = false
params = {{ file = "{raw}" }}
outputs = {{ raw = {{ kind = "dataset", publish_as = "raw", media_type = "text/csv" }} }}
[[tasks]]
id = "clean"
kind = "upper"
params = {{ test = "{test}", suffix = "{suffix}" }}
inputs = {{ in = {{ from = "ingest.raw" }} }}
outputs = {{ out = {{ kind = "dataset" }} }}
[[tasks]]
id = "train"
kind = "join"
params = {{ test = "{test}" }}
inputs = {{ data = {{ from = "clean.out" }} }}
outputs = {{ model = {{ kind = "model", publish_as = "demo_model" }} }}
"#,
        raw = raw_file.display()
    )
}

/// Where blobs live for a test, and how to damage one.
enum StoreKind {
    Local,
    S3,
}

struct Setup {
    db: common::TestDb,
    execution: Arc<ExecutionService>,
    blobs: Arc<BlobStore>,
    /// The local store's root, for damaging blobs.
    blob_root: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl Setup {
    /// `None` after a loud SKIPPED when the S3 server is not configured.
    async fn new(test: &str, kind: StoreKind) -> Option<Setup> {
        let db = common::TestDb::sqlite().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("dags")).unwrap();
        let (config, blob_root) = match kind {
            StoreKind::Local => {
                let root = dir.path().join("artifacts");
                (
                    ArtifactStoreConfig::Local(LocalConfig { root: root.clone() }),
                    Some(root),
                )
            }
            StoreKind::S3 => {
                let server = common::s3::S3Server::from_env(test)?;
                let bucket = server.create_bucket().await;
                (ArtifactStoreConfig::S3(server.config(&bucket)), None)
            }
        };
        let blobs = Arc::new(BlobStore::from_config(&config).unwrap());
        let scheduler = Arc::new(Scheduler::new(
            db.store.clone(),
            registry::<1>(),
            dir.path().join("dags"),
            "test".to_owned(),
        ));
        let execution = Arc::new(
            ExecutionService::new(scheduler, Duration::from_secs(5)).with_artifacts(blobs.clone()),
        );
        Some(Setup {
            db,
            execution,
            blobs,
            blob_root,
            dir,
        })
    }

    fn store(&self) -> &dyn Store {
        &*self.db.store
    }

    async fn write_dag(&self, text: &str) {
        std::fs::write(self.dir.path().join("dags/pipe.toml"), text).unwrap();
        let report = self.execution.scheduler().sync_dags().await.unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
    }

    fn raw_file(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("raw.csv");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A worker; `direct` gives it the store, otherwise its bytes go through the server.
    fn worker(
        &self,
        id: &str,
        registry: PluginRegistry,
        direct: bool,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let mut config = WorkerConfig::new(id, self.dir.path().join("work").join(id));
        config.concurrency = 2;
        config.claim_wait = Duration::from_millis(200);
        config.shutdown_grace = Duration::from_secs(1);
        if direct {
            config.artifacts = Some(self.blobs.clone());
        }
        let shutdown = CancellationToken::new();
        let api = self.execution.clone();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            run_worker(api, registry, config, token).await.unwrap();
        });
        (shutdown, handle)
    }

    /// Triggers a run and waits for it to end with `state`.
    async fn run_to(&self, state: RunState) -> i64 {
        let run_id = self
            .execution
            .scheduler()
            .trigger("pipe", &serde_json::Map::new(), TriggerKind::Manual)
            .await
            .unwrap()
            .id;
        self.wait_run(run_id, state).await;
        run_id
    }

    async fn wait_run(&self, run_id: i64, state: RunState) {
        let started = Instant::now();
        loop {
            let run = self.store().run_get(run_id).await.unwrap().unwrap();
            if run.state == state {
                return;
            }
            assert!(
                !run.state.is_final(),
                "run {run_id} ended {}, expected {state}: {:?}",
                run.state,
                self.store().task_instance_list(run_id).await.unwrap()
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "run {run_id} is {}, waiting for {state}",
                run.state
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn content(&self, name: &str) -> String {
        let version = self
            .store()
            .artifact_version_get(name, None)
            .await
            .unwrap()
            .unwrap();
        let path = self.dir.path().join("read-back");
        self.blobs
            .get_to_file(&version.blob.sha256, &path)
            .await
            .unwrap();
        std::fs::read_to_string(path).unwrap()
    }

    async fn task(&self, run_id: i64, task_id: &str) -> kiln_engine::store::TaskInstanceRecord {
        self.store()
            .task_instance_list(run_id)
            .await
            .unwrap()
            .into_iter()
            .find(|instance| instance.task_id == task_id)
            .unwrap()
    }
}

async fn three_steps_are_traced_from_the_model_to_the_raw_file(
    test: &str,
    kind: StoreKind,
    direct: bool,
) {
    let Some(setup) = Setup::new(test, kind).await else {
        return;
    };
    let raw = setup.raw_file("a,b\n1,2\n");
    setup.write_dag(&pipeline_dag(test, &raw, false, "")).await;
    let (shutdown, worker) = setup.worker("w", registry::<1>(), direct);
    let run_id = setup.run_to(RunState::Success).await;
    shutdown.cancel();
    worker.await.unwrap();

    assert_eq!(setup.content("raw").await, "a,b\n1,2\n");
    assert_eq!(setup.content("pipe.clean.out").await, "A,B\n1,2\n");
    assert_eq!(setup.content("demo_model").await, "model[A,B\n1,2\n]");
    let clean = setup
        .store()
        .artifact_version_get("pipe.clean.out", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(clean.media_type, "text/csv");
    assert_eq!(clean.dataset.as_ref().map(|stats| stats.rows), Some(2));
    let raw_version = setup
        .store()
        .artifact_version_get("raw", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw_version.media_type, "text/csv", "declared in the DAG");

    let model = setup
        .store()
        .artifact_version_get("demo_model", None)
        .await
        .unwrap()
        .unwrap();
    let upstream = setup
        .store()
        .lineage_get_by_version(model.id, LineageDirection::Upstream)
        .await
        .unwrap();
    let mut chain: Vec<(String, String, String)> = upstream
        .edges
        .iter()
        .map(|edge| {
            let label = |id: i64| {
                upstream
                    .versions
                    .iter()
                    .find(|version| version.id == id)
                    .unwrap()
                    .label()
            };
            (
                label(edge.input),
                edge.attempt.task_id.clone(),
                label(edge.output),
            )
        })
        .collect();
    chain.sort();
    assert_eq!(
        chain,
        vec![
            (
                "pipe.clean.out@1".to_owned(),
                "train".to_owned(),
                "demo_model@1".to_owned()
            ),
            (
                "raw@1".to_owned(),
                "clean".to_owned(),
                "pipe.clean.out@1".to_owned()
            ),
        ]
    );
    assert_eq!(upstream.sources.len(), 1);
    assert_eq!(upstream.sources[0].1.task_id, "ingest");
    assert_eq!(upstream.sources[0].1.run_id, run_id);

    let downstream = setup
        .store()
        .lineage_get_by_version(raw_version.id, LineageDirection::Downstream)
        .await
        .unwrap();
    let mut reached: Vec<String> = downstream
        .versions
        .iter()
        .map(|version| version.label())
        .collect();
    reached.sort();
    assert_eq!(reached, ["demo_model@1", "pipe.clean.out@1", "raw@1"]);
    let train = setup.task(run_id, "train").await;
    let log: String = setup
        .store()
        .log_read(train.id, 1, -1, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|chunk| chunk.chunk)
        .collect();
    assert!(
        log.contains("input `data`: dataset pipe.clean.out@1"),
        "{log}"
    );
    assert!(log.contains("output `model`: stored"), "{log}");
}

async fn cache_hits_reuse_outputs_and_changes_miss(test: &str, kind: StoreKind) {
    let Some(setup) = Setup::new(test, kind).await else {
        return;
    };
    let counts = counts(test);
    let raw = setup.raw_file("x\n");
    setup.write_dag(&pipeline_dag(test, &raw, true, "")).await;
    let (shutdown, worker) = setup.worker("w1", registry::<1>(), true);
    let runs_of = |expected: (usize, usize)| {
        let counts = counts.clone();
        move || {
            assert_eq!(
                (
                    counts.upper.load(Ordering::SeqCst),
                    counts.join.load(Ordering::SeqCst)
                ),
                expected,
                "(upper, join) runs"
            )
        }
    };
    setup.run_to(RunState::Success).await;
    runs_of((1, 1))();

    // Unchanged data and params: both cacheable tasks are hits, and reuse the same versions.
    let second = setup.run_to(RunState::Success).await;
    runs_of((1, 1))();
    for task_id in ["clean", "train"] {
        let instance = setup.task(second, task_id).await;
        assert_eq!(instance.summary.as_ref().unwrap()["cache_hit"], true);
        let attempts = setup.store().attempt_list(instance.id).await.unwrap();
        assert!(attempts[0].cache_hit_of.is_some());
    }
    assert_eq!(
        setup
            .store()
            .artifact_version_list("demo_model", 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        setup
            .store()
            .artifact_version_list("raw", 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // Changed input bytes: a new raw version, and both steps run again.
    setup.raw_file("y\n");
    setup.run_to(RunState::Success).await;
    runs_of((2, 2))();
    assert_eq!(setup.content("demo_model").await, "model[Y\n]");

    // A new plugin version runs `clean` again; its output bytes are the same, so `train`,
    // whose key covers its input's bytes, is still a hit.
    shutdown.cancel();
    worker.await.unwrap();
    let (shutdown, worker) = setup.worker("w2", registry::<2>(), true);
    setup.run_to(RunState::Success).await;
    runs_of((3, 2))();

    // Changed params miss too.
    setup.write_dag(&pipeline_dag(test, &raw, true, "!")).await;
    setup.run_to(RunState::Success).await;
    runs_of((4, 3))();
    assert_eq!(setup.content("demo_model").await, "model[Y\n!]");
    shutdown.cancel();
    worker.await.unwrap();
}

async fn a_corrupt_input_fails_its_reader_and_nothing_downstream_runs(direct: bool) {
    let test = if direct {
        "corrupt_direct"
    } else {
        "corrupt_server"
    };
    let setup = Setup::new(test, StoreKind::Local).await.unwrap();
    let counts = counts(test);
    let raw = setup.raw_file("clean data\n");
    setup.write_dag(&pipeline_dag(test, &raw, false, "")).await;
    let (shutdown, worker) = setup.worker("w", registry::<1>(), direct);
    let run_id = setup.run_to(RunState::Success).await;
    assert_eq!(counts.join.load(Ordering::SeqCst), 1);

    // Flip one byte of the stored raw blob, then run `clean` and everything after it again.
    let raw_version = setup
        .store()
        .artifact_version_get("raw", None)
        .await
        .unwrap()
        .unwrap();
    let stored = setup
        .blob_root
        .as_ref()
        .unwrap()
        .join(blob_key(&raw_version.blob.sha256));
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&stored, bytes).unwrap();
    setup
        .execution
        .scheduler()
        .clear(run_id, "clean", true)
        .await
        .unwrap();
    setup.wait_run(run_id, RunState::Failed).await;

    let clean = setup.task(run_id, "clean").await;
    assert_eq!(clean.state, TaskState::Failed);
    let error = clean.error.unwrap();
    assert!(
        error.starts_with("input `in` (dataset raw@1): blob sha256:")
            && error.contains("is corrupt"),
        "{error}"
    );
    assert_eq!(clean.try_number, 2, "a corrupt input is not retried");
    assert_eq!(
        setup.task(run_id, "train").await.state,
        TaskState::UpstreamFailed
    );
    assert_eq!(
        counts.join.load(Ordering::SeqCst),
        1,
        "train never ran on it"
    );
    shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritten_output_fails_the_task_naming_it() {
    let setup = Setup::new("forgetful", StoreKind::Local).await.unwrap();
    setup
        .write_dag(
            r#"
id = "pipe"
[[tasks]]
id = "lazy"
kind = "forgetful"
params = { test = "forgetful" }
outputs = ["report"]
"#,
        )
        .await;
    let (shutdown, worker) = setup.worker("w", registry::<1>(), true);
    let run_id = setup.run_to(RunState::Failed).await;
    let lazy = setup.task(run_id, "lazy").await;
    let error = lazy.error.unwrap();
    assert!(
        error.starts_with(
            "the task did not write its declared output `report` (expected a file at "
        ),
        "{error}"
    );
    assert!(setup.store().artifact_list(None).await.unwrap().is_empty());
    shutdown.cancel();
    worker.await.unwrap();
}

mod local {
    use super::StoreKind;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_steps_are_traced_from_the_model_to_the_raw_file() {
        super::three_steps_are_traced_from_the_model_to_the_raw_file(
            "steps_local",
            StoreKind::Local,
            true,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_steps_through_the_server_without_store_credentials() {
        super::three_steps_are_traced_from_the_model_to_the_raw_file(
            "steps_server",
            StoreKind::Local,
            false,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cache_hits_reuse_outputs_and_changes_miss() {
        super::cache_hits_reuse_outputs_and_changes_miss("cache_local", StoreKind::Local).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupt_input_fails_its_reader_and_nothing_downstream_runs() {
        super::a_corrupt_input_fails_its_reader_and_nothing_downstream_runs(true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupt_input_read_through_the_server_fails_the_same_way() {
        super::a_corrupt_input_fails_its_reader_and_nothing_downstream_runs(false).await;
    }
}

mod s3 {
    use super::StoreKind;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_steps_are_traced_from_the_model_to_the_raw_file() {
        super::three_steps_are_traced_from_the_model_to_the_raw_file(
            "s3::three_steps_are_traced_from_the_model_to_the_raw_file",
            StoreKind::S3,
            true,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_steps_through_the_server_without_store_credentials() {
        super::three_steps_are_traced_from_the_model_to_the_raw_file(
            "s3::three_steps_through_the_server_without_store_credentials",
            StoreKind::S3,
            false,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cache_hits_reuse_outputs_and_changes_miss() {
        super::cache_hits_reuse_outputs_and_changes_miss(
            "s3::cache_hits_reuse_outputs_and_changes_miss",
            StoreKind::S3,
        )
        .await;
    }
}
