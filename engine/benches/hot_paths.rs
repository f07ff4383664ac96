//! Microbenchmarks of the scheduler's hot paths (`cargo bench -p kiln-engine`):
//! parsing and validating a 10,000-task DAG file, reacting to one completion in a 10,000-task run
//! (the downstream readiness update), and claiming a batch of 32 tasks, on SQLite.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_engine::dag::{LoadedDag, parse_dag};
use kiln_engine::plugin::{PluginRegistry, TaskContext, TaskError, TaskOutput, TaskPlugin};
use kiln_engine::store::{
    AttemptResult, ClaimParams, Completion, RunCreateParams, Store, TriggerKind, connect,
    now_micros,
};

struct Noop;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct NoParams {}

impl TaskPlugin for Noop {
    const KIND: &'static str = "noop";
    type Params = NoParams;

    async fn run(&self, _ctx: &TaskContext, _params: NoParams) -> Result<TaskOutput, TaskError> {
        Ok(TaskOutput::default())
    }
}

fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    registry.register(Noop).expect("one plugin");
    registry
}

/// Workload W5: 100 layers of 100 tasks, each depending on 3 of the layer before.
fn big_dag(id: &str) -> String {
    let mut text = format!("id = \"{id}\"\nmax_active_runs = 100000\n");
    for layer in 0..100 {
        for index in 0..100 {
            text.push_str(&format!(
                "[[tasks]]\nid = \"t{layer}_{index}\"\nkind = \"noop\"\n"
            ));
            if layer > 0 {
                let mut ups: Vec<usize> = (0..3).map(|k| (index + k * 7) % 100).collect();
                ups.sort_unstable();
                let quoted: Vec<String> = ups
                    .iter()
                    .map(|up| format!("\"t{}_{up}\"", layer - 1))
                    .collect();
                text.push_str(&format!("depends_on = [{}]\n", quoted.join(", ")));
            }
        }
    }
    text
}

fn wide_dag(id: &str, width: usize) -> String {
    let mut text = format!("id = \"{id}\"\nmax_active_runs = 100000\n");
    for index in 0..width {
        text.push_str(&format!("[[tasks]]\nid = \"t{index}\"\nkind = \"noop\"\n"));
    }
    text
}

fn load(text: &str) -> LoadedDag {
    parse_dag(Path::new("bench.toml"), text.as_bytes(), &registry())
        .expect("the benchmark DAG is valid")
}

struct Bench {
    runtime: tokio::runtime::Runtime,
    store: std::sync::Arc<dyn Store>,
    _dir: tempfile::TempDir,
    next_date: i64,
}

impl Bench {
    fn new(dags: &[&LoadedDag]) -> Bench {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = runtime.block_on(async {
            let store = connect(&url).await.expect("SQLite opens");
            store.migrate().await.expect("migrations apply");
            for dag in dags {
                store
                    .dag_sync(dag, now_micros())
                    .await
                    .expect("the DAG is stored");
            }
            store
        });
        Bench {
            runtime,
            store,
            _dir: dir,
            next_date: 0,
        }
    }

    fn start_run(&mut self, dag_id: &str) {
        self.next_date += 1;
        let params = RunCreateParams {
            dag_id: dag_id.to_owned(),
            dag_version_id: None,
            logical_date: self.next_date,
            data_interval: None,
            trigger: TriggerKind::Manual,
            params: serde_json::json!({}),
            now: now_micros(),
        };
        self.runtime.block_on(async {
            self.store
                .run_create(&params)
                .await
                .expect("run created")
                .expect("new logical date");
            self.store
                .run_start_queued(now_micros())
                .await
                .expect("run started");
        });
    }

    fn claim(&self, limit: u32) -> Vec<kiln_engine::store::ClaimedTask> {
        let params = ClaimParams {
            worker_id: "bench".to_owned(),
            queues: vec!["default".to_owned()],
            limit,
            lease: Duration::from_secs(60),
            now: now_micros(),
        };
        self.runtime
            .block_on(self.store.task_instance_claim(&params))
            .expect("claim")
    }
}

fn parse_and_validate(c: &mut Criterion) {
    let text = big_dag("big");
    let registry = registry();
    c.bench_function("parse and validate a 10,000-task DAG file", |b| {
        b.iter(|| parse_dag(Path::new("big.toml"), text.as_bytes(), &registry).expect("valid"))
    });
}

fn completion_in_a_big_run(c: &mut Criterion) {
    let dag = load(&big_dag("big"));
    let mut bench = Bench::new(&[&dag]);
    bench.start_run("big");
    c.bench_function(
        "complete one task of a 10,000-task run (downstream readiness)",
        |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let mut claimed = bench.claim(1);
                    if claimed.is_empty() {
                        bench.start_run("big");
                        claimed = bench.claim(1);
                    }
                    let task = claimed.pop().expect("a task is claimable");
                    let completion = Completion {
                        task_instance_id: task.task_instance_id,
                        fence: task.fence,
                        result: AttemptResult::success(serde_json::Value::Null),
                    };
                    let started = Instant::now();
                    bench
                        .runtime
                        .block_on(
                            bench
                                .store
                                .task_instance_complete(&[completion], now_micros()),
                        )
                        .expect("completed");
                    total += started.elapsed();
                }
                total
            })
        },
    );
}

fn claim_batch(c: &mut Criterion) {
    let dag = load(&wide_dag("wide", 5_000));
    let mut bench = Bench::new(&[&dag]);
    bench.start_run("wide");
    c.bench_function("claim a batch of 32 tasks", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                let mut claimed = bench.claim(32);
                total += started.elapsed();
                if claimed.len() < 32 {
                    bench.start_run("wide");
                    let started = Instant::now();
                    claimed = bench.claim(32);
                    total += started.elapsed();
                }
                assert_eq!(claimed.len(), 32);
            }
            total
        })
    });
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = parse_and_validate, completion_in_a_big_run, claim_batch
}
criterion_main!(hot_paths);
