//! Artifacts between real processes: `command` tasks hand files to each other through the
//! artifact store, with workers that move the bytes through the server or straight to S3, and
//! S3 credentials never show in any log or error.

mod support;

#[path = "../../engine/tests/common/s3.rs"]
#[allow(dead_code, unreachable_pub)]
mod s3;

use std::time::Duration;

use kiln_engine::state::RunState;
use kiln_engine::store::LineageDirection;
// The S3 helper shared with the engine's tests calls `super::skip`.
use support::{Cluster, skip};

/// `produce` writes a small table; `consume` upper-cases it into its own output and prints it.
const PIPELINE: &str = r#"
id = "files"
[defaults]
retries = 0
[[tasks]]
id = "produce"
kind = "command"
params = { program = "sh", args = ["-c", "printf 'a,b\n1,2\n' > \"$KILN_OUTPUT_TABLE\""] }
outputs = { table = { kind = "dataset", publish_as = "small_table", media_type = "text/csv" } }
[[tasks]]
id = "consume"
kind = "command"
params = { program = "sh", args = ["-c", "tr a-z A-Z < \"$KILN_INPUT_TABLE\" > \"$KILN_OUTPUT_UPPER\" && cat \"$KILN_OUTPUT_UPPER\""] }
inputs = { table = { from = "produce.table" } }
outputs = { upper = { kind = "dataset" } }
"#;

fn consume_log(cluster: &Cluster, run_id: i64) -> String {
    let runtime = Cluster::runtime();
    let page = runtime
        .block_on(cluster.client().logs(run_id, "consume", None, -1))
        .unwrap();
    page.chunks.into_iter().map(|chunk| chunk.text).collect()
}

/// Upstream lineage of the consumer's output, as `input -> output` labels, from the database.
fn lineage(cluster: &Cluster) -> Vec<String> {
    let url = cluster.database_url();
    Cluster::runtime().block_on(async move {
        let store = kiln_engine::store::connect(&url).await.unwrap();
        let upper = store
            .artifact_version_get("files.consume.upper", None)
            .await
            .unwrap()
            .expect("the consumer's output is a version");
        let graph = store
            .lineage_get_by_version(upper.id, LineageDirection::Upstream)
            .await
            .unwrap();
        let label = |id: i64| {
            graph
                .versions
                .iter()
                .find(|version| version.id == id)
                .map(|version| version.label())
                .unwrap_or_default()
        };
        graph
            .edges
            .iter()
            .map(|edge| format!("{} -> {}", label(edge.input), label(edge.output)))
            .collect()
    })
}

#[test]
fn command_tasks_hand_files_to_each_other_through_the_server() {
    let mut cluster = Cluster::start(&[("files.toml", PIPELINE)], "6s");
    cluster.start_worker("w", 2);
    let run_id = cluster.trigger("files");
    let detail = cluster.wait_finished(run_id, Duration::from_secs(60));
    assert_eq!(detail.run.state, RunState::Success, "{detail:?}");
    assert!(consume_log(&cluster, run_id).contains("A,B\n1,2"));
    assert_eq!(
        lineage(&cluster),
        ["small_table@1 -> files.consume.upper@1"]
    );
    // The bytes are in the server's local store, under their digest.
    let blobs = cluster.path().join("data/artifacts/blobs/sha256");
    assert_eq!(std::fs::read_dir(blobs).unwrap().count(), 2);
}

/// A cluster whose server and worker both use a fresh S3 bucket, with logs at debug level so
/// that anything a library might print is there to be searched.
fn s3_cluster(test: &str, worker_secret: Option<&str>) -> Option<(Cluster, s3::S3Server)> {
    let server = s3::S3Server::from_env(test)?;
    let bucket = Cluster::runtime().block_on(server.create_bucket());
    let mut cluster = Cluster::prepare(&[("files.toml", PIPELINE)]);
    let config = |secret: &str| {
        format!(
            "backend = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\nallow_http = true\naccess_key_id = \"{}\"\nsecret_access_key = \"{secret}\"\n",
            server.endpoint, server.access_key
        )
    };
    let server_config = cluster.path().join("s3-server.toml");
    std::fs::write(&server_config, config(&server.secret_key)).unwrap();
    let worker_config = cluster.path().join("s3-worker.toml");
    std::fs::write(
        &worker_config,
        config(worker_secret.unwrap_or(&server.secret_key)),
    )
    .unwrap();
    cluster.server_args = vec![
        "--artifacts-config".to_owned(),
        server_config.display().to_string(),
    ];
    cluster.worker_args = vec![
        "--artifacts-config".to_owned(),
        worker_config.display().to_string(),
    ];
    cluster.env = vec![("KILN_LOG".to_owned(), "debug".to_owned())];
    cluster.start_server("6s");
    Some((cluster, server))
}

/// Everything a person could read: both processes' output and every task log of the run.
fn everything_logged(cluster: &Cluster, run_id: i64) -> String {
    let mut text = String::new();
    text.push_str(&cluster.server.as_ref().unwrap().output());
    for worker in &cluster.workers {
        text.push_str(&worker.output());
    }
    let runtime = Cluster::runtime();
    for task in ["produce", "consume"] {
        if let Ok(page) = runtime.block_on(cluster.client().logs(run_id, task, None, -1)) {
            for chunk in page.chunks {
                text.push_str(&chunk.text);
            }
        }
    }
    text.push_str(&format!("{:?}", cluster.run(run_id)));
    text
}

#[test]
fn workers_with_s3_credentials_store_artifacts_there_and_never_show_them() {
    let Some((mut cluster, server)) = s3_cluster(
        "workers_with_s3_credentials_store_artifacts_there_and_never_show_them",
        None,
    ) else {
        return;
    };
    cluster.start_worker("w", 2);
    let run_id = cluster.trigger("files");
    let detail = cluster.wait_finished(run_id, Duration::from_secs(60));
    assert_eq!(detail.run.state, RunState::Success, "{detail:?}");
    assert!(consume_log(&cluster, run_id).contains("A,B\n1,2"));
    assert_eq!(
        lineage(&cluster),
        ["small_table@1 -> files.consume.upper@1"]
    );
    assert!(
        !cluster.path().join("data/artifacts").exists(),
        "nothing went to the local store"
    );
    let logged = everything_logged(&cluster, run_id);
    assert!(logged.contains("DEBUG"), "debug logging is on");
    assert!(
        !logged.contains(&server.secret_key),
        "the secret key was logged"
    );
}

#[test]
fn a_wrong_s3_secret_fails_the_task_clearly_and_never_shows_it() {
    let wrong = format!("wrong-{:016x}", rand::random::<u64>());
    let Some((mut cluster, server)) = s3_cluster(
        "a_wrong_s3_secret_fails_the_task_clearly_and_never_shows_it",
        Some(&wrong),
    ) else {
        return;
    };
    cluster.start_worker("w", 2);
    let run_id = cluster.trigger("files");
    let detail = cluster.wait_finished(run_id, Duration::from_secs(60));
    assert_eq!(detail.run.state, RunState::Failed);
    let produce = detail
        .tasks
        .iter()
        .find(|task| task.task_id == "produce")
        .unwrap();
    let error = produce.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("storing output `table`: the artifact store refused access"),
        "{error}"
    );
    let logged = everything_logged(&cluster, run_id);
    assert!(!logged.contains(&wrong), "the wrong secret was logged");
    assert!(
        !logged.contains(&server.secret_key),
        "the secret key was logged"
    );
}
