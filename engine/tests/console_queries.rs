//! The store queries the console reads its pages with, on SQLite and on PostgreSQL: task
//! instances of many runs at once, the latest runs of every DAG, running task instances, one
//! task instance, and a DAG's stored versions with their source.

#[macro_use]
mod common;

use std::time::Duration;

use common::{TestDb, dag};
use kiln_engine::state::TaskState;
use kiln_engine::store::{
    AttemptResult, ClaimParams, ClaimedTask, Completion, RunCreateParams, RunRecord, Store,
    TriggerKind,
};

const SECOND: i64 = 1_000_000;
const T0: i64 = 1_800_000_000 * SECOND;

const CHAIN: &str = r#"
id = "chain"
max_active_runs = 1000
[[tasks]]
id = "a"
kind = "noop"
[[tasks]]
id = "b"
kind = "noop"
depends_on = ["a"]
"#;

const SINGLE: &str = r#"
id = "single"
max_active_runs = 1000
[[tasks]]
id = "only"
kind = "noop"
"#;

/// Creates a run at `logical_date` and starts every queued run.
async fn started_run(store: &dyn Store, dag_id: &str, logical_date: i64) -> RunRecord {
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
        .expect("the run is new");
    store.run_start_queued(logical_date).await.unwrap();
    run
}

async fn claim(store: &dyn Store, worker: &str, limit: u32, now: i64) -> Vec<ClaimedTask> {
    store
        .task_instance_claim(&ClaimParams {
            worker_id: worker.to_owned(),
            queues: vec!["default".to_owned()],
            limit,
            lease: Duration::from_secs(30),
            now,
        })
        .await
        .unwrap()
}

/// `(run id, task id)` of each record, in the order given.
fn keys(records: &[kiln_engine::store::TaskInstanceRecord]) -> Vec<(i64, String)> {
    records
        .iter()
        .map(|record| (record.run_id, record.task_id.clone()))
        .collect()
}

async fn task_instances_of_many_runs_come_in_one_answer(db: &TestDb) {
    let store = &*db.store;
    store.dag_sync(&dag(CHAIN), T0).await.unwrap();
    store.dag_sync(&dag(SINGLE), T0).await.unwrap();
    let first = started_run(store, "chain", T0).await;
    let second = started_run(store, "single", T0).await;
    let third = started_run(store, "chain", T0 + SECOND).await;

    assert!(
        store
            .task_instance_list_for_runs(&[])
            .await
            .unwrap()
            .is_empty()
    );
    // Asked out of order, with a repeat and an unknown id: by run, then in creation order.
    let records = store
        .task_instance_list_for_runs(&[third.id, first.id, 999_999, first.id])
        .await
        .unwrap();
    assert_eq!(
        keys(&records),
        vec![
            (first.id, "a".to_owned()),
            (first.id, "b".to_owned()),
            (third.id, "a".to_owned()),
            (third.id, "b".to_owned()),
        ]
    );
    assert_eq!(records[0].state, TaskState::Queued);
    assert_eq!(records[1].state, TaskState::Scheduled);
    // The records are the ones `task_instances` answers, field for field.
    assert_eq!(
        records[..2],
        store.task_instance_list(first.id).await.unwrap()[..]
    );
    let single = store
        .task_instance_list_for_runs(&[second.id])
        .await
        .unwrap();
    assert_eq!(keys(&single), vec![(second.id, "only".to_owned())]);
}

async fn more_runs_than_one_statement_takes_are_read_in_chunks(db: &TestDb) {
    let store = &*db.store;
    store.dag_sync(&dag(SINGLE), T0).await.unwrap();
    let mut run_ids = Vec::new();
    for index in 0..520 {
        let run = store
            .run_create(&RunCreateParams {
                dag_id: "single".to_owned(),
                dag_version_id: None,
                logical_date: T0 + index * SECOND,
                data_interval: None,
                trigger: TriggerKind::Manual,
                params: serde_json::json!({}),
                now: T0,
            })
            .await
            .unwrap()
            .unwrap();
        run_ids.push(run.id);
    }
    store.run_start_queued(T0).await.unwrap();
    // Newest first, as the console asks: the answer still comes in run order.
    run_ids.reverse();
    let records = store.task_instance_list_for_runs(&run_ids).await.unwrap();
    let answered: Vec<i64> = records.iter().map(|record| record.run_id).collect();
    run_ids.sort_unstable();
    assert_eq!(
        answered, run_ids,
        "one task instance per run, across chunks"
    );
}

async fn the_latest_runs_of_every_dag_come_in_one_answer(db: &TestDb) {
    let store = &*db.store;
    assert!(store.run_list_latest_per_dag(3).await.unwrap().is_empty());
    store.dag_sync(&dag(CHAIN), T0).await.unwrap();
    store.dag_sync(&dag(SINGLE), T0).await.unwrap();
    let mut chain = Vec::new();
    let mut single = Vec::new();
    for index in 0..5 {
        chain.push(started_run(store, "chain", T0 + index * SECOND).await.id);
        if index < 2 {
            single.push(started_run(store, "single", T0 + index * SECOND).await.id);
        }
    }
    let latest: Vec<(String, i64)> = store
        .run_list_latest_per_dag(3)
        .await
        .unwrap()
        .into_iter()
        .map(|run| (run.dag_id, run.id))
        .collect();
    assert_eq!(
        latest,
        vec![
            ("chain".to_owned(), chain[4]),
            ("chain".to_owned(), chain[3]),
            ("chain".to_owned(), chain[2]),
            ("single".to_owned(), single[1]),
            ("single".to_owned(), single[0]),
        ]
    );
    let newest = store.run_list_latest_per_dag(1).await.unwrap();
    assert_eq!(newest.len(), 2);
    assert_eq!(newest[0], store.run_get(chain[4]).await.unwrap().unwrap());
    assert!(store.run_list_latest_per_dag(0).await.unwrap().is_empty());
}

async fn running_task_instances_come_with_their_dag(db: &TestDb) {
    let store = &*db.store;
    store.dag_sync(&dag(CHAIN), T0).await.unwrap();
    store.dag_sync(&dag(SINGLE), T0).await.unwrap();
    let chain = started_run(store, "chain", T0).await;
    let single = started_run(store, "single", T0).await;
    assert!(store.task_instance_list_running().await.unwrap().is_empty());

    let claimed = claim(store, "w1", 10, T0).await;
    assert_eq!(claimed.len(), 2, "chain.a and single.only are queued");
    let running: Vec<(String, i64, String, Option<String>, TaskState)> = store
        .task_instance_list_running()
        .await
        .unwrap()
        .into_iter()
        .map(|(dag_id, instance)| {
            (
                dag_id,
                instance.run_id,
                instance.task_id,
                instance.worker_id,
                instance.state,
            )
        })
        .collect();
    let worker = Some("w1".to_owned());
    assert_eq!(
        running,
        vec![
            (
                "chain".to_owned(),
                chain.id,
                "a".to_owned(),
                worker.clone(),
                TaskState::Running
            ),
            (
                "single".to_owned(),
                single.id,
                "only".to_owned(),
                worker,
                TaskState::Running
            ),
        ]
    );

    let done = claimed.iter().find(|task| task.task_id == "only").unwrap();
    let completion = Completion {
        task_instance_id: done.task_instance_id,
        fence: done.fence,
        result: AttemptResult::success(serde_json::json!({})),
    };
    store
        .task_instance_complete(&[completion], T0)
        .await
        .unwrap()[0]
        .clone()
        .unwrap();
    let left: Vec<String> = store
        .task_instance_list_running()
        .await
        .unwrap()
        .into_iter()
        .map(|(dag_id, instance)| format!("{dag_id}.{}", instance.task_id))
        .collect();
    assert_eq!(left, vec!["chain.a".to_owned()], "a finished task is gone");
}

async fn one_task_instance_by_run_and_task(db: &TestDb) {
    let store = &*db.store;
    store.dag_sync(&dag(CHAIN), T0).await.unwrap();
    let first = started_run(store, "chain", T0).await;
    let second = started_run(store, "chain", T0 + SECOND).await;
    let found = store
        .task_instance_get(second.id, "b")
        .await
        .unwrap()
        .unwrap();
    let expected = store
        .task_instance_list(second.id)
        .await
        .unwrap()
        .into_iter()
        .find(|instance| instance.task_id == "b")
        .unwrap();
    assert_eq!(found, expected);
    assert_ne!(
        found.id,
        store
            .task_instance_get(first.id, "b")
            .await
            .unwrap()
            .unwrap()
            .id,
        "the same task in another run is another instance"
    );
    assert_eq!(
        store.task_instance_get(second.id, "nope").await.unwrap(),
        None
    );
    assert_eq!(store.task_instance_get(999_999, "a").await.unwrap(), None);
}

async fn a_dags_versions_keep_their_source(db: &TestDb) {
    let store = &*db.store;
    assert!(store.dag_version_list("chain").await.unwrap().is_empty());
    let original = dag(CHAIN);
    let first = store.dag_sync(&original, T0).await.unwrap();
    store.dag_sync(&original, T0 + SECOND).await.unwrap();
    let changed_text = CHAIN.replace("max_active_runs = 1000", "max_active_runs = 7");
    let changed = dag(&changed_text);
    let second = store.dag_sync(&changed, T0 + 2 * SECOND).await.unwrap();
    store.dag_sync(&dag(SINGLE), T0).await.unwrap();

    let versions: Vec<(i64, i64, String, i64)> = store
        .dag_version_list("chain")
        .await
        .unwrap()
        .into_iter()
        .map(|version| {
            (
                version.id,
                version.version,
                version.source_hash,
                version.created_at,
            )
        })
        .collect();
    assert_eq!(
        versions,
        vec![
            (
                second.current_version_id,
                2,
                changed.source_hash.clone(),
                T0 + 2 * SECOND
            ),
            (
                first.current_version_id,
                1,
                original.source_hash.clone(),
                T0
            ),
        ],
        "newest first; an unchanged file adds no version; other DAGs' versions are not listed"
    );
    assert_eq!(
        store
            .dag_version_get_source(first.current_version_id)
            .await
            .unwrap()
            .as_deref(),
        Some(CHAIN)
    );
    assert_eq!(
        store
            .dag_version_get_source(second.current_version_id)
            .await
            .unwrap(),
        Some(changed_text)
    );
    assert_eq!(store.dag_version_get_source(999_999).await.unwrap(), None);
}

conformance!(
    task_instances_of_many_runs_come_in_one_answer,
    more_runs_than_one_statement_takes_are_read_in_chunks,
    the_latest_runs_of_every_dag_come_in_one_answer,
    running_task_instances_come_with_their_dag,
    one_task_instance_by_run_and_task,
    a_dags_versions_keep_their_source,
);
