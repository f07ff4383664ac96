//! The MLflow mirror against a real MLflow tracking server (`KILN_TEST_MLFLOW_URI`, started by
//! `.ci/run`): runs, nested runs, params, metrics, model versions and aliases arrive with the
//! values of the summaries, exactly once; MLflow being down fails nothing and loses nothing;
//! errors and garbage answers are retried, then parked with their error.

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::TestDb;
use common::mlflow::{
    MlflowReader, MlflowRunView, SECOND, ml_dag, mlflow_uri, pipeline, publish_dataset,
    run_pipeline, unique_dag_id,
};
use kiln_engine::dag::ModelAlias;
use kiln_engine::mlflow::{MLFLOW_TRACKING, MlflowClient, MlflowConfig, Sender, SenderConfig};
use kiln_engine::store::{OutboxEvent, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T0: i64 = 1_800_000_000 * SECOND;
/// A time after every event the tests write, so everything is due.
const LATER: i64 = T0 + 100 * 24 * 3600 * SECOND;

/// Fast pacing: no waits between tries, parked after four.
fn fast() -> SenderConfig {
    SenderConfig {
        max_attempts: 4,
        base_delay: std::time::Duration::ZERO,
        max_delay: std::time::Duration::ZERO,
        ..SenderConfig::default()
    }
}

fn sender(store: &Arc<dyn Store>, uri: &str) -> Sender {
    let client = MlflowClient::new(&MlflowConfig::new(uri, None, None, None).unwrap());
    Sender::new(store.clone(), client, "test".to_owned()).with_config(fast())
}

async fn calls(store: &dyn Store) -> Vec<OutboxEvent> {
    store
        .outbox_list(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.call)
        .collect()
}

/// A DAG with its pipeline synced and its dataset published, the mirror on.
async fn prepared(db: &TestDb, prefix: &str) -> String {
    let store = &*db.store;
    store.outbox_set_tracking(Some(MLFLOW_TRACKING));
    let dag_id = unique_dag_id(prefix);
    store
        .dag_sync(&ml_dag(&pipeline(&dag_id)), T0)
        .await
        .unwrap();
    publish_dataset(store, &format!("{dag_id}_data"), "a,b\n1,2\n", T0).await;
    dag_id
}

fn parents(runs: &[MlflowRunView]) -> Vec<&MlflowRunView> {
    runs.iter()
        .filter(|run| run.tag("mlflow.parentRunId").is_none())
        .collect()
}

fn children<'a>(runs: &'a [MlflowRunView], parent: &str) -> Vec<&'a MlflowRunView> {
    let mut found: Vec<&MlflowRunView> = runs
        .iter()
        .filter(|run| run.tag("mlflow.parentRunId") == Some(parent))
        .collect();
    found.sort_by_key(|run| {
        (
            run.tag("kiln.task_instance_id")
                .unwrap_or_default()
                .parse::<i64>()
                .unwrap_or(0),
            run.tag("kiln.try_number")
                .unwrap_or_default()
                .parse::<i64>()
                .unwrap_or(0),
        )
    });
    found
}

/// Checks what one pipeline run left in MLflow; answers its parent's MLflow run id.
async fn check_run(
    reader: &MlflowReader,
    runs: &[MlflowRunView],
    dag_id: &str,
    run_id: i64,
    accuracy: f64,
    model_version: i64,
) -> String {
    let parent: Vec<&MlflowRunView> = parents(runs)
        .into_iter()
        .filter(|run| run.tag("kiln.run_id") == Some(&run_id.to_string()))
        .collect();
    assert_eq!(parent.len(), 1, "one MLflow run per kiln run: {runs:#?}");
    let parent = parent[0];
    assert_eq!(parent.status, "FINISHED");
    assert_eq!(parent.tag("kiln.dag_id"), Some(dag_id));
    assert_eq!(
        parent.metrics.get("accuracy"),
        Some(&accuracy),
        "the best, on the parent"
    );
    assert_eq!(parent.tag("kiln.best_model"), Some("m@1"));
    assert_eq!(
        parent.tag("kiln.deployed_model"),
        Some(format!("{dag_id}_model@{model_version}").as_str())
    );

    let nested = children(runs, &parent.run_id);
    let described: Vec<(&str, &str, &str)> = nested
        .iter()
        .map(|run| {
            (
                run.tag("kiln.task_id").unwrap_or_default(),
                run.tag("kiln.try_number").unwrap_or_default(),
                run.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        described,
        vec![
            ("train", "1", "FAILED"),
            ("train", "2", "FINISHED"),
            ("evaluate", "1", "FINISHED"),
            ("deploy", "1", "FINISHED"),
        ]
    );
    assert_eq!(nested[0].tag("kiln.error"), Some("out of memory"));

    let train = nested[1];
    let expected_params = [
        ("algorithm", "decision_tree".to_owned()),
        ("max_depth", "4".to_owned()),
        ("min_samples_split", "2".to_owned()),
        ("seed", "7".to_owned()),
        ("target", "quality".to_owned()),
        ("input.train", format!("{dag_id}_data@1")),
    ];
    for (key, value) in expected_params {
        assert_eq!(
            train.params.get(key),
            Some(&value),
            "param {key}: {train:#?}"
        );
    }
    assert_eq!(train.params["input.train.sha256"].len(), 64);
    assert_eq!(train.metrics.get("training_accuracy"), Some(&accuracy));
    assert_eq!(train.metrics.get("depth"), Some(&4.0));
    assert_eq!(train.metrics.get("rows"), Some(&120.0));
    assert_eq!(train.tag("kiln.worker"), Some("worker-1"));
    assert_eq!(train.tag("kiln.dag_id"), Some(dag_id));
    assert_eq!(
        train.tag("kiln.output.model"),
        Some(format!("kiln-artifact:///{dag_id}.train.model@{model_version}").as_str())
    );
    assert_eq!(
        reader.metric_history(&train.run_id, "loss").await,
        vec![(0, 0.9), (1, 0.6), (2, 0.4)],
        "a series is logged step by step, once"
    );

    let evaluate = nested[2];
    assert_eq!(evaluate.metrics.get("candidate.accuracy"), Some(&accuracy));
    assert_eq!(evaluate.metrics.get("accuracy"), Some(&accuracy));
    assert_eq!(
        evaluate.params.get("metric").map(String::as_str),
        Some("accuracy")
    );
    assert_eq!(evaluate.tag("kiln.gate"), Some("passed"));
    assert_eq!(reader.metric_history(&evaluate.run_id, "f1").await.len(), 1);
    parent.run_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_reaches_mlflow_once() {
    let Some(uri) = mlflow_uri("everything_reaches_mlflow_once") else {
        return;
    };
    let db = TestDb::sqlite().await;
    let store = db.store.clone();
    let dag_id = prepared(&db, "mirror").await;
    let first = run_pipeline(&*store, &dag_id, T0, "weights one", 0.8).await;
    let second = run_pipeline(&*store, &dag_id, T0 + 7200 * SECOND, "weights two", 0.9).await;
    let model = format!("{dag_id}_model");
    assert_eq!(
        store
            .model_alias_rollback(&model, ModelAlias::Production, T0 + 9000 * SECOND)
            .await
            .unwrap(),
        (2, 1)
    );
    let owed = calls(&*store).await;
    assert_eq!(owed.len(), 2 * 8 + 1);

    let report = sender(&store, &uri).drain(LATER).await.unwrap();
    assert_eq!(
        (report.sent, report.retried, report.parked),
        (owed.len(), 0, 0)
    );
    assert!(calls(&*store).await.is_empty(), "the outbox is drained");

    let reader = MlflowReader::new(&uri);
    let experiment = reader.experiment_id(&dag_id).await;
    let runs = reader.runs(&experiment).await;
    assert_eq!(runs.len(), 2 * 5, "two runs, four attempts each: {runs:#?}");
    let first_parent = check_run(&reader, &runs, &dag_id, first.id, 0.8, 1).await;
    let second_parent = check_run(&reader, &runs, &dag_id, second.id, 0.9, 2).await;

    let versions = reader.model_versions(&model).await;
    assert_eq!(
        versions,
        vec![
            (
                "1".to_owned(),
                format!("kiln-artifact:///{model}@1"),
                first_parent
            ),
            (
                "2".to_owned(),
                format!("kiln-artifact:///{model}@2"),
                second_parent
            ),
        ]
    );
    assert_eq!(
        reader.alias(&model, "production").await,
        "1",
        "rolled back, as in kiln"
    );

    // Every answer lost: the same events again from a database that recorded no MLflow id.
    // The sender finds what exists instead of creating it twice.
    let replay = TestDb::sqlite().await;
    replay.store.outbox_append(&owed, T0).await.unwrap();
    let report = sender(&replay.store, &uri).drain(LATER).await.unwrap();
    assert_eq!((report.sent, report.parked), (owed.len(), 0));
    let again = reader.runs(&experiment).await;
    assert_eq!(again.len(), runs.len(), "no run created twice");
    check_run(&reader, &again, &dag_id, first.id, 0.8, 1).await;
    assert_eq!(
        reader.model_versions(&model).await.len(),
        2,
        "no version created twice"
    );
    assert_eq!(reader.alias(&model, "production").await, "1");
    replay.cleanup().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_down_fails_nothing_and_loses_nothing() {
    let Some(uri) = mlflow_uri("mlflow_down_fails_nothing_and_loses_nothing") else {
        return;
    };
    let db = TestDb::sqlite().await;
    let store = db.store.clone();
    let dag_id = prepared(&db, "outage").await;
    // A port nothing listens on: MLflow is down.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let run = run_pipeline(&*store, &dag_id, T0, "weights", 0.75).await;
    assert_eq!(
        store.run_get(run.id).await.unwrap().unwrap().state,
        kiln_engine::state::RunState::Success,
        "no task waits for or fails because of MLflow"
    );
    let owed = calls(&*store).await;
    assert_eq!(owed.len(), 8);

    // The default pacing: a failed event waits a second, so this drain tries once.
    let client = MlflowClient::new(
        &MlflowConfig::new(&format!("http://{closed}"), None, None, None).unwrap(),
    );
    let down = Sender::new(store.clone(), client, "test".to_owned());
    let report = down.drain(T0).await.unwrap();
    assert_eq!((report.sent, report.retried, report.parked), (0, 1, 0));
    let waiting = store.outbox_list(1000).await.unwrap();
    assert_eq!(
        waiting
            .iter()
            .map(|event| event.call.clone())
            .collect::<Vec<_>>(),
        owed
    );
    let error = waiting[0].last_error.clone().unwrap_or_default();
    assert!(
        error.starts_with("attempt 1: cannot reach MLflow at experiments/get-by-name"),
        "{error}"
    );
    assert_eq!(waiting[0].attempts, 1);
    assert!(waiting.iter().all(|event| !event.parked));

    // MLflow is back: everything arrives, once.
    let report = sender(&store, &uri).drain(LATER).await.unwrap();
    assert_eq!((report.sent, report.parked), (owed.len(), 0));
    assert!(calls(&*store).await.is_empty());
    let report = sender(&store, &uri).drain(LATER).await.unwrap();
    assert_eq!(report.sent, 0);

    let reader = MlflowReader::new(&uri);
    let runs = reader.runs(&reader.experiment_id(&dag_id).await).await;
    let tagged = runs
        .iter()
        .filter(|found| found.tag("kiln.run_id") == Some(&run.id.to_string()))
        .count();
    assert_eq!(tagged, 5, "the run and its four attempts, once each");
    check_run(&reader, &runs, &dag_id, run.id, 0.75, 1).await;
    let model = format!("{dag_id}_model");
    assert_eq!(reader.model_versions(&model).await.len(), 1);
    assert_eq!(reader.alias(&model, "production").await, "1");
    db.cleanup().await;
}

/// A stand-in for a broken MLflow: HTTP 500 for the first `errors` requests, then HTTP 200 with
/// a body that is not JSON. Answers how many requests it saw.
async fn broken_mlflow(errors: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let number = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Read the head and the body, so the client sees a whole exchange.
                let mut request = Vec::new();
                let mut buffer = [0_u8; 4096];
                loop {
                    let Ok(read) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|line| {
                                let (name, value) = line.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let (status, body) = if number < errors {
                    (
                        "500 Internal Server Error",
                        r#"{"error_code": "INTERNAL_ERROR", "message": "database is locked"}"#,
                    )
                } else {
                    ("200 OK", "<html>upstream proxy says hello</html>")
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{address}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_garbage_are_retried_then_parked_and_nothing_is_lost() {
    let Some(uri) = mlflow_uri("errors_and_garbage_are_retried_then_parked_and_nothing_is_lost")
    else {
        return;
    };
    let db = TestDb::sqlite().await;
    let store = db.store.clone();
    let dag_id = prepared(&db, "broken").await;
    let run = run_pipeline(&*store, &dag_id, T0, "weights", 0.7).await;
    let owed = calls(&*store).await;
    assert_eq!(owed.len(), 8);

    let (broken, seen) = broken_mlflow(2).await;
    let report = sender(&store, &broken).drain(LATER).await.unwrap();
    assert_eq!((report.sent, report.parked), (0, owed.len()), "{report:?}");
    assert_eq!(
        report.retried,
        owed.len() * 3,
        "three retries before each event is parked"
    );
    assert!(seen.load(Ordering::SeqCst) >= owed.len() * 4);
    let parked = store.outbox_list(1000).await.unwrap();
    assert_eq!(
        parked
            .iter()
            .map(|event| event.call.clone())
            .collect::<Vec<_>>(),
        owed,
        "nothing lost"
    );
    for event in &parked {
        assert!(event.parked);
        assert_eq!(event.attempts, 4);
        let error = event.last_error.as_deref().unwrap_or_default();
        assert!(error.starts_with("attempt 4: MLflow answered "), "{error}");
        assert!(
            error.contains("HTTP 200 and a body that is not the expected JSON")
                && error.contains("upstream proxy says hello"),
            "{error}"
        );
    }
    assert_eq!(
        store.outbox_due(LATER, 100).await.unwrap(),
        Vec::new(),
        "parked events wait for an operator"
    );

    // The operator puts them back; the real MLflow gets everything.
    assert_eq!(store.outbox_unpark(T0).await.unwrap(), owed.len());
    let report = sender(&store, &uri).drain(LATER).await.unwrap();
    assert_eq!((report.sent, report.parked), (owed.len(), 0));
    let reader = MlflowReader::new(&uri);
    let runs = reader.runs(&reader.experiment_id(&dag_id).await).await;
    check_run(&reader, &runs, &dag_id, run.id, 0.7, 1).await;
    assert_eq!(
        reader
            .model_versions(&format!("{dag_id}_model"))
            .await
            .len(),
        1
    );
    db.cleanup().await;
}
