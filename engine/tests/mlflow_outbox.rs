//! The MLflow outbox in the store, on SQLite and on PostgreSQL: nothing is written while the
//! mirror is off; run starts and ends, tracked attempts, deployed versions and alias moves are
//! written with the change they mirror, in order; the sender's view (the due head of each
//! stream), failures with backoff, parking, and the id map.

#[macro_use]
mod common;

use common::TestDb;
use common::mlflow::{
    SECOND, claim, complete, ml_dag, new_run, pipeline, publish_dataset, run_pipeline,
};
use kiln_engine::dag::ModelAlias;
use kiln_engine::mlflow::{MLFLOW_TRACKING, MlflowIdKind};
use kiln_engine::store::{
    AttemptResult, OutboxAliasSet, OutboxEntry, OutboxEvent, OutboxEventKind, Store,
};

const T0: i64 = 1_800_000_000 * SECOND;

async fn outbox(store: &dyn Store) -> Vec<OutboxEntry> {
    store.outbox_list(1000).await.unwrap()
}

fn kinds(events: &[OutboxEntry]) -> Vec<(OutboxEventKind, String)> {
    events
        .iter()
        .map(|event| (event.call.kind(), event.stream.clone()))
        .collect()
}

async fn nothing_is_written_while_the_mirror_is_off(db: &TestDb) {
    let store = &*db.store;
    assert!(store.outbox_tracking().is_none(), "off by default");
    store.dag_sync(&ml_dag(&pipeline("ml")), T0).await.unwrap();
    publish_dataset(store, "ml_data", "a,b\n1,2\n", T0).await;
    run_pipeline(store, "ml", T0, "weights", 0.8).await;
    store
        .model_alias_rollback("ml_model", ModelAlias::Production, T0)
        .await
        .ok();
    assert!(outbox(store).await.is_empty());
}

async fn a_run_writes_its_events_in_order_with_its_changes(db: &TestDb) {
    let store = &*db.store;
    store.outbox_set_tracking(Some(MLFLOW_TRACKING));
    assert_eq!(store.outbox_tracking(), Some(MLFLOW_TRACKING));
    store.dag_sync(&ml_dag(&pipeline("ml")), T0).await.unwrap();
    publish_dataset(store, "ml_data", "a,b\n1,2\n", T0).await;
    let run = run_pipeline(store, "ml", T0, "weights", 0.8).await;
    let events = outbox(store).await;
    let stream = format!("run:{}", run.id);
    let model = "model:ml_model".to_owned();
    assert_eq!(
        kinds(&events),
        vec![
            (OutboxEventKind::RunStart, stream.clone()),
            (OutboxEventKind::TaskAttempt, stream.clone()),
            (OutboxEventKind::TaskAttempt, stream.clone()),
            (OutboxEventKind::TaskAttempt, stream.clone()),
            (OutboxEventKind::ModelVersion, model.clone()),
            (OutboxEventKind::AliasSet, model.clone()),
            (OutboxEventKind::TaskAttempt, stream.clone()),
            (OutboxEventKind::RunEnd, stream.clone()),
        ]
    );
    assert!(
        events
            .iter()
            .all(|event| event.attempts == 0 && !event.parked && event.last_error.is_none())
    );

    let OutboxEvent::RunStart(started) = &events[0].call else {
        panic!("{:?}", events[0])
    };
    assert_eq!((started.dag_id.as_str(), started.run_id), ("ml", run.id));
    assert_eq!(started.created_at, run.created_at);
    assert_eq!(started.dag_file, "ml.toml");
    assert_eq!(started.dag_version, 1);

    // The failed first try, then the success with its summary, inputs and outputs.
    let OutboxEvent::TaskAttempt(failed) = &events[1].call else {
        panic!("{:?}", events[1])
    };
    assert_eq!(
        (
            failed.task_id.as_str(),
            failed.try_number,
            failed.state.as_str()
        ),
        ("train", 1, "failed")
    );
    assert_eq!(failed.error.as_deref(), Some("out of memory"));
    assert_eq!(failed.summary, None);
    let OutboxEvent::TaskAttempt(trained) = &events[2].call else {
        panic!("{:?}", events[2])
    };
    assert_eq!(
        (
            trained.kind.as_str(),
            trained.try_number,
            trained.state.as_str(),
            trained.worker_id.as_str()
        ),
        ("train", 2, "success", "worker-1")
    );
    assert_eq!(trained.summary, Some(common::mlflow::train_summary(0.8)));
    assert_eq!(
        trained.task_params["algorithm"]["max_depth"],
        serde_json::json!(4)
    );
    assert_eq!(trained.started_at, T0 + 3600 * SECOND);
    assert_eq!(trained.ended_at, T0 + 3601 * SECOND);
    let data = store
        .artifact_version_get("ml_data", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(trained.inputs.len(), 1);
    assert_eq!(
        (
            trained.inputs[0].slot.as_str(),
            trained.inputs[0].name.as_str(),
            trained.inputs[0].version
        ),
        ("train", "ml_data", 1)
    );
    assert_eq!(trained.inputs[0].sha256, data.blob.sha256.to_hex());
    assert_eq!(
        (trained.outputs[0].name.as_str(), trained.outputs[0].version),
        ("ml.train.model", 1)
    );

    let OutboxEvent::ModelVersion(deployed) = &events[4].call else {
        panic!("{:?}", events[4])
    };
    assert_eq!(
        (
            deployed.name.as_str(),
            deployed.version,
            deployed.task_id.as_str()
        ),
        ("ml_model", 1, "deploy")
    );
    assert_eq!(
        deployed.metadata,
        Some(serde_json::json!({ "metrics": { "accuracy": 0.8 } }))
    );
    let OutboxEvent::AliasSet(alias) = &events[5].call else {
        panic!("{:?}", events[5])
    };
    assert_eq!(
        (alias.alias.as_str(), alias.version, alias.previous),
        ("production", 1, None)
    );
    let OutboxEvent::RunEnd(end) = &events[7].call else {
        panic!("{:?}", events[7])
    };
    assert_eq!(end.state, "success");
}

async fn alias_moves_by_hand_and_rollbacks_are_written(db: &TestDb) {
    let store = &*db.store;
    store.outbox_set_tracking(Some(MLFLOW_TRACKING));
    store.dag_sync(&ml_dag(&pipeline("ml")), T0).await.unwrap();
    publish_dataset(store, "ml_data", "a,b\n1,2\n", T0).await;
    run_pipeline(store, "ml", T0, "weights one", 0.8).await;
    run_pipeline(store, "ml", T0 + 7200 * SECOND, "weights two", 0.9).await;
    let before = outbox(store).await.len();
    assert_eq!(
        store
            .model_alias_rollback("ml_model", ModelAlias::Production, T0)
            .await
            .unwrap(),
        (2, 1)
    );
    // Pointing an alias where it already points moves nothing, and says nothing.
    store
        .model_alias_set("ml_model", ModelAlias::Production, 1, "again", T0)
        .await
        .unwrap();
    store
        .model_alias_set("ml_model", ModelAlias::Staging, 2, "try it", T0)
        .await
        .unwrap();
    let events = outbox(store).await;
    let moves: Vec<(String, i64, Option<i64>)> = events[before..]
        .iter()
        .map(|event| match &event.call {
            OutboxEvent::AliasSet(alias) => (alias.alias.clone(), alias.version, alias.previous),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            ("production".to_owned(), 1, Some(2)),
            ("staging".to_owned(), 2, None)
        ]
    );
}

async fn untracked_dags_and_cancelled_runs(db: &TestDb) {
    let store = &*db.store;
    store.outbox_set_tracking(Some(MLFLOW_TRACKING));
    let plain = r#"
id = "plain"
[[tasks]]
id = "shout"
kind = "command"
"#;
    store.dag_sync(&ml_dag(plain), T0).await.unwrap();
    let run = new_run(store, "plain", T0).await;
    let task = claim(store, "shout", T0).await;
    complete(
        store,
        &task,
        AttemptResult::success(serde_json::json!({})),
        T0,
    )
    .await;
    assert_eq!(
        store.run_get(run.id).await.unwrap().unwrap().state,
        kiln_engine::state::RunState::Success
    );
    assert!(
        outbox(store).await.is_empty(),
        "a DAG without a tracked task stays out of MLflow"
    );

    store.dag_sync(&ml_dag(&pipeline("ml")), T0).await.unwrap();
    publish_dataset(store, "ml_data", "a,b\n1,2\n", T0).await;
    let run = new_run(store, "ml", T0).await;
    claim(store, "train", T0).await;
    assert!(store.run_cancel(run.id, T0 + SECOND).await.unwrap());
    let events = outbox(store).await;
    assert_eq!(
        kinds(&events),
        vec![
            (OutboxEventKind::RunStart, format!("run:{}", run.id)),
            (OutboxEventKind::RunEnd, format!("run:{}", run.id)),
        ]
    );
    let OutboxEvent::RunEnd(end) = &events[1].call else {
        panic!()
    };
    assert_eq!(
        (end.state.as_str(), end.ended_at),
        ("cancelled", T0 + SECOND)
    );
}

fn alias(name: &str, version: i64) -> OutboxEvent {
    OutboxEvent::AliasSet(OutboxAliasSet {
        name: name.to_owned(),
        alias: "production".to_owned(),
        version,
        previous: None,
        reason: "test".to_owned(),
    })
}

fn ids(events: &[OutboxEntry]) -> Vec<i64> {
    events.iter().map(|event| event.id).collect()
}

async fn the_sender_sees_the_due_head_of_each_stream(db: &TestDb) {
    let store = &*db.store;
    // Appending works whatever the switch says: the caller asked for it.
    store
        .outbox_append(&[alias("a", 1), alias("a", 2), alias("b", 1)], T0)
        .await
        .unwrap();
    store
        .outbox_append(&[alias("c", 1)], T0 + SECOND)
        .await
        .unwrap();
    let all = ids(&outbox(store).await);
    let [a1, a2, b1, c1] = all[..] else {
        panic!("{all:?}")
    };
    assert_eq!(ids(&store.outbox_due(T0, 100).await.unwrap()), vec![a1, b1]);
    assert_eq!(
        ids(&store.outbox_due(T0 + SECOND, 100).await.unwrap()),
        vec![a1, b1, c1]
    );
    assert_eq!(
        ids(&store.outbox_due(T0 + SECOND, 2).await.unwrap()),
        vec![a1, b1]
    );

    // A failure holds its stream back until its retry time; other streams go on.
    assert!(
        store
            .outbox_fail(a1, "attempt 1: HTTP 500", Some(T0 + 10 * SECOND))
            .await
            .unwrap()
    );
    assert_eq!(
        ids(&store.outbox_due(T0 + SECOND, 100).await.unwrap()),
        vec![b1, c1]
    );
    assert_eq!(
        ids(&store.outbox_due(T0 + 10 * SECOND, 100).await.unwrap()),
        vec![a1, b1, c1]
    );
    let failed = &outbox(store).await[0];
    assert_eq!(
        (
            failed.attempts,
            failed.next_attempt_at,
            failed.last_error.as_deref(),
            failed.parked
        ),
        (1, T0 + 10 * SECOND, Some("attempt 1: HTTP 500"), false)
    );

    // A sent event leaves; the next of its stream is the head.
    assert!(store.outbox_done(a1).await.unwrap());
    assert!(!store.outbox_done(a1).await.unwrap());
    assert_eq!(
        ids(&store.outbox_due(T0 + SECOND, 100).await.unwrap()),
        vec![a2, b1, c1]
    );

    // A parked event stays, with its error, but no longer holds its stream back.
    assert!(
        store
            .outbox_fail(a2, "attempt 2: garbage", None)
            .await
            .unwrap()
    );
    assert_eq!(
        ids(&store.outbox_due(T0 + SECOND, 100).await.unwrap()),
        vec![b1, c1]
    );
    store.outbox_append(&[alias("a", 3)], T0).await.unwrap();
    let a3 = outbox(store).await.last().unwrap().id;
    assert_eq!(
        ids(&store.outbox_due(T0 + SECOND, 100).await.unwrap()),
        vec![b1, c1, a3]
    );
    let parked = outbox(store)
        .await
        .into_iter()
        .find(|event| event.id == a2)
        .unwrap();
    assert_eq!(
        (parked.attempts, parked.parked, parked.last_error.as_deref()),
        (1, true, Some("attempt 2: garbage"))
    );
    assert_eq!(parked.call, alias("a", 2), "nothing of the call is lost");

    // An operator puts parked events back in line.
    assert_eq!(store.outbox_unpark(T0 + 20 * SECOND).await.unwrap(), 1);
    assert_eq!(
        ids(&store.outbox_due(T0 + 20 * SECOND, 100).await.unwrap()),
        vec![a2, b1, c1]
    );
    let back = outbox(store)
        .await
        .into_iter()
        .find(|event| event.id == a2)
        .unwrap();
    assert_eq!((back.attempts, back.parked), (0, false));
    assert!(!store.outbox_fail(9999, "x", None).await.unwrap());
}

async fn the_first_recorded_id_wins(db: &TestDb) {
    let store = &*db.store;
    assert_eq!(
        store
            .mirror_id_get(MlflowIdKind::Run.as_str(), "1")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .mirror_id_record(MlflowIdKind::Run.as_str(), "1", "abc", T0)
            .await
            .unwrap(),
        "abc"
    );
    assert_eq!(
        store
            .mirror_id_record(MlflowIdKind::Run.as_str(), "1", "def", T0)
            .await
            .unwrap(),
        "abc"
    );
    assert_eq!(
        store
            .mirror_id_get(MlflowIdKind::Run.as_str(), "1")
            .await
            .unwrap()
            .as_deref(),
        Some("abc")
    );
    // Kinds are separate namespaces.
    assert_eq!(
        store
            .mirror_id_get(MlflowIdKind::Attempt.as_str(), "1")
            .await
            .unwrap(),
        None
    );
    store
        .mirror_id_record(MlflowIdKind::Experiment.as_str(), "wine", "7", T0)
        .await
        .unwrap();
    store
        .mirror_id_record(MlflowIdKind::ModelVersion.as_str(), "wq@1", "1", T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .mirror_id_get(MlflowIdKind::Experiment.as_str(), "wine")
            .await
            .unwrap()
            .as_deref(),
        Some("7")
    );
}

conformance!(
    nothing_is_written_while_the_mirror_is_off,
    a_run_writes_its_events_in_order_with_its_changes,
    alias_moves_by_hand_and_rollbacks_are_written,
    untracked_dags_and_cancelled_runs,
    the_sender_sees_the_due_head_of_each_stream,
    the_first_recorded_id_wins,
);
