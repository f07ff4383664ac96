//! A property test of the task state machine against the real store (SQLite): random claims,
//! completions, stale replays, heartbeats, maintenance at an advancing clock, cancels, clears
//! and marks, with the store's invariants checked after every step.

// The conformance macro is for the two-backend suites; this test runs on SQLite alone.
#[allow(unused_macros)]
mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kiln_engine::Dag;
use kiln_engine::state::{RunState, TaskState, evaluate, run_outcome};
use kiln_engine::store::{
    AttemptRecord, AttemptResult, ClaimParams, ClaimedTask, Completion, CompletionOutcome,
    MaintenanceReport, Rejection, RunCreateParams, RunRecord, Store, StoreError,
    TaskInstanceRecord, TriggerKind, micros,
};
use proptest::prelude::*;

use common::{TestDb, dag};

const SECOND: i64 = 1_000_000;
const T0: i64 = 1_800_000_000 * SECOND;
const LEASE: Duration = Duration::from_secs(30);
const WORKERS: [&str; 3] = ["w0", "w1", "w2"];
const RUNS: usize = 2;

/// A fan-out and a join with mixed trigger rules; `extract` has a timeout and two retries.
/// With `max_active_runs = 1`, the second run waits until the first is over.
const FANOUT: &str = r#"
id = "fanout"
max_active_runs = 1
[defaults]
retries = 1
retry_delay = "10s"
retry_backoff = false
[[tasks]]
id = "extract"
kind = "noop"
retries = 2
timeout = "20s"
[[tasks]]
id = "left"
kind = "noop"
depends_on = ["extract"]
[[tasks]]
id = "right"
kind = "noop"
depends_on = ["extract"]
retries = 2
[[tasks]]
id = "join"
kind = "noop"
depends_on = ["left", "right"]
trigger_rule = "none_failed"
[[tasks]]
id = "alert"
kind = "noop"
depends_on = ["left", "right"]
trigger_rule = "one_failed"
"#;

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    Retryable,
    Permanent,
}

/// One step. Indices are resolved against the state at the time the step runs (modulo the number
/// of candidates), so every generated sequence is meaningful and shrinks well.
#[derive(Debug, Clone)]
enum Event {
    Claim {
        worker: usize,
        limit: u32,
    },
    Complete {
        pick: usize,
        outcome: Outcome,
    },
    /// A completion carrying a fence that is already used or stale.
    Replay {
        pick: usize,
        outcome: Outcome,
    },
    Heartbeat {
        worker: usize,
        mask: u8,
        stale: Option<usize>,
    },
    Maintain {
        advance_secs: i64,
    },
    Cancel {
        run: usize,
    },
    Clear {
        run: usize,
        task: usize,
        downstream: bool,
    },
    Mark {
        run: usize,
        task: usize,
        success: bool,
    },
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Success),
        2 => Just(Outcome::Retryable),
        1 => Just(Outcome::Permanent),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        12 => (0..WORKERS.len(), 1..=3u32).prop_map(|(worker, limit)| Event::Claim { worker, limit }),
        16 => (any::<usize>(), outcome()).prop_map(|(pick, outcome)| Event::Complete { pick, outcome }),
        3 => (any::<usize>(), outcome()).prop_map(|(pick, outcome)| Event::Replay { pick, outcome }),
        4 => (0..WORKERS.len(), any::<u8>(), proptest::option::of(any::<usize>()))
            .prop_map(|(worker, mask, stale)| Event::Heartbeat { worker, mask, stale }),
        // Multiples of 5 s often land exactly on a lease end (30 s) or timeout (20 s).
        8 => prop_oneof![0..=25i64, (0..=6i64).prop_map(|fives| fives * 5)]
            .prop_map(|advance_secs| Event::Maintain { advance_secs }),
        1 => (0..RUNS).prop_map(|run| Event::Cancel { run }),
        3 => (0..RUNS, 0..5usize, any::<bool>())
            .prop_map(|(run, task, downstream)| Event::Clear { run, task, downstream }),
        3 => (0..RUNS, 0..5usize, any::<bool>())
            .prop_map(|(run, task, success)| Event::Mark { run, task, success }),
    ]
}

/// Everything the store says about the test's runs.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    runs: Vec<RunView>,
}

#[derive(Debug, Clone, PartialEq)]
struct RunView {
    run: RunRecord,
    tasks: Vec<(TaskInstanceRecord, Vec<AttemptRecord>)>,
}

impl Snapshot {
    fn instance(&self, task_instance_id: i64) -> Option<&(TaskInstanceRecord, Vec<AttemptRecord>)> {
        self.runs
            .iter()
            .flat_map(|view| &view.tasks)
            .find(|(instance, _)| instance.id == task_instance_id)
    }

    fn instances(&self) -> impl Iterator<Item = &TaskInstanceRecord> {
        self.runs
            .iter()
            .flat_map(|view| view.tasks.iter().map(|(instance, _)| instance))
    }

    fn is_current(&self, task_instance_id: i64, fence: i64) -> bool {
        self.instance(task_instance_id)
            .is_some_and(|(instance, _)| {
                instance.state == TaskState::Running && instance.fence == fence
            })
    }
}

/// The test's model of the world outside the store: the claims workers hold, the fences already
/// reported, and the fake clock.
struct Harness {
    store: Arc<dyn Store>,
    dag: Dag,
    runs: Vec<i64>,
    now: i64,
    /// Claims not yet reported, with the index of the worker holding them.
    held: Vec<(usize, ClaimedTask)>,
    /// `(task instance, fence)` pairs already reported once.
    used: Vec<(i64, i64)>,
    /// Cancelled runs and their task instances at the moment of cancelling.
    cancelled: HashMap<i64, Vec<TaskInstanceRecord>>,
    /// The try number of each task instance when it was last cleared: attempts up to it belong
    /// to an earlier life of the instance, which may have succeeded once too.
    cleared_at_try: HashMap<i64, i64>,
    /// Whether an operator has cleared or marked anything (which may restart a finished run
    /// beyond `max_active_runs`).
    operator_acted: bool,
    last: Snapshot,
}

impl Harness {
    async fn new(db: &TestDb) -> Harness {
        let loaded = dag(FANOUT);
        let store = db.store.clone();
        store.dag_sync(&loaded, T0).await.unwrap();
        let mut runs = Vec::new();
        for index in 0..RUNS {
            let logical_date = T0 + i64::try_from(index).unwrap();
            let run = store
                .run_create(&RunCreateParams {
                    dag_id: "fanout".to_owned(),
                    dag_version_id: None,
                    logical_date,
                    data_interval: None,
                    trigger: TriggerKind::Manual,
                    params: serde_json::json!({}),
                    now: T0,
                })
                .await
                .unwrap()
                .expect("a new logical date");
            runs.push(run.id);
        }
        let started = store.run_start_queued(T0).await.unwrap();
        assert_eq!(started, runs[..1], "max_active_runs = 1 admits one run");
        let mut harness = Harness {
            store,
            dag: loaded.dag,
            runs,
            now: T0,
            held: Vec::new(),
            used: Vec::new(),
            cancelled: HashMap::new(),
            cleared_at_try: HashMap::new(),
            operator_acted: false,
            last: Snapshot { runs: Vec::new() },
        };
        harness.last = harness.snapshot().await;
        harness.check_invariants(None, false);
        harness
    }

    async fn snapshot(&self) -> Snapshot {
        let mut runs = Vec::new();
        for &run_id in &self.runs {
            // Reading parses every state, so a value outside `RunState`/`TaskState` fails here.
            let run = self.store.run_get(run_id).await.unwrap().expect("the run");
            let mut tasks = Vec::new();
            for instance in self.store.task_instance_list(run_id).await.unwrap() {
                let attempts = self.store.attempt_list(instance.id).await.unwrap();
                tasks.push((instance, attempts));
            }
            runs.push(RunView { run, tasks });
        }
        Snapshot { runs }
    }

    fn task_ids(&self) -> Vec<&str> {
        self.dag.tasks.iter().map(|task| task.id.as_str()).collect()
    }

    /// `task_id` and everything downstream of it, in DAG order, computed from the definition.
    fn with_descendants(&self, task_id: &str) -> Vec<String> {
        let mut reached = BTreeSet::from([task_id.to_owned()]);
        // Tasks are in topological order, so one pass reaches every descendant.
        for task in &self.dag.tasks {
            if task.depends_on.iter().any(|up| reached.contains(up)) {
                reached.insert(task.id.clone());
            }
        }
        self.dag
            .tasks
            .iter()
            .filter(|task| reached.contains(&task.id))
            .map(|task| task.id.clone())
            .collect()
    }

    fn timeout_of(&self, task_id: &str) -> Option<i64> {
        self.dag
            .task(task_id)
            .and_then(|task| task.timeout)
            .map(micros)
    }

    async fn step(&mut self, event: &Event) {
        let before = self.last.clone();
        let mut operator = false;
        match *event {
            Event::Claim { worker, limit } => self.claim(&before, worker, limit).await,
            Event::Complete { pick, outcome } => {
                if self.held.is_empty() {
                    return;
                }
                let (_, claim) = self.held.remove(pick % self.held.len());
                self.complete(&before, claim.task_instance_id, claim.fence, outcome)
                    .await;
            }
            Event::Replay { pick, outcome } => {
                // Used fences, and for every task instance the fence before its current one.
                let mut candidates = self.used.clone();
                candidates.extend(
                    before
                        .instances()
                        .map(|instance| (instance.id, instance.fence - 1)),
                );
                let (task_instance_id, fence) = candidates[pick % candidates.len()];
                assert!(!before.is_current(task_instance_id, fence));
                self.complete(&before, task_instance_id, fence, outcome)
                    .await;
            }
            Event::Heartbeat {
                worker,
                mask,
                stale,
            } => self.heartbeat(&before, worker, mask, stale).await,
            Event::Maintain { advance_secs } => self.maintain(&before, advance_secs).await,
            Event::Cancel { run } => self.cancel(&before, run).await,
            Event::Clear {
                run,
                task,
                downstream,
            } => {
                operator = true;
                self.clear(&before, run, task, downstream).await;
            }
            Event::Mark { run, task, success } => {
                operator = true;
                self.mark(&before, run, task, success).await;
            }
        }
        self.last = self.snapshot().await;
        self.check_invariants(Some(&before), operator);
    }

    async fn claim(&mut self, before: &Snapshot, worker: usize, limit: u32) {
        let claimed = self
            .store
            .task_instance_claim(&ClaimParams {
                worker_id: WORKERS[worker].to_owned(),
                queues: vec!["default".to_owned()],
                limit,
                lease: LEASE,
                now: self.now,
            })
            .await
            .unwrap();
        let queued: Vec<&TaskInstanceRecord> = before
            .instances()
            .filter(|instance| instance.state == TaskState::Queued)
            .collect();
        assert_eq!(
            claimed.len(),
            queued.len().min(usize::try_from(limit).unwrap()),
            "a claim takes as many queued tasks as it may"
        );
        let mut seen = BTreeSet::new();
        for task in &claimed {
            assert!(seen.insert(task.task_instance_id), "claimed twice at once");
            assert!(
                !self.cancelled.contains_key(&task.run_id),
                "a task of cancelled run {} was claimed",
                task.run_id
            );
            let previous = queued
                .iter()
                .find(|instance| instance.id == task.task_instance_id)
                .unwrap_or_else(|| panic!("claimed {task:?}, which was not queued"));
            assert_eq!(task.try_number, previous.try_number + 1);
            assert_eq!(task.fence, previous.fence + 1);
            assert_eq!(
                task.timeout_at,
                self.timeout_of(&task.task_id)
                    .map(|timeout| self.now + timeout)
            );
            self.held.push((worker, task.clone()));
        }
    }

    async fn complete(
        &mut self,
        before: &Snapshot,
        task_instance_id: i64,
        fence: i64,
        outcome: Outcome,
    ) {
        let result = match outcome {
            Outcome::Success => AttemptResult::success(serde_json::json!({ "fence": fence })),
            Outcome::Retryable | Outcome::Permanent => AttemptResult::Failure {
                error: "boom".to_owned(),
                retryable: matches!(outcome, Outcome::Retryable),
            },
        };
        let completion = Completion {
            task_instance_id,
            fence,
            result,
        };
        let outcomes = self
            .store
            .task_instance_complete(std::slice::from_ref(&completion), self.now)
            .await
            .unwrap();
        self.used.push((task_instance_id, fence));
        let (instance, _) = before.instance(task_instance_id).expect("a known instance");
        if !before.is_current(task_instance_id, fence) {
            assert_eq!(
                outcomes,
                vec![Err(Rejection::Stale {
                    task_instance_id,
                    state: instance.state,
                    current: instance.fence,
                    reported: fence,
                })],
                "a report with a stale fence is refused"
            );
            assert_eq!(
                self.snapshot().await,
                *before,
                "a refused report changes nothing"
            );
            return;
        }
        let after = self
            .store
            .task_instance_list(instance.run_id)
            .await
            .unwrap();
        let after = after
            .iter()
            .find(|record| record.id == task_instance_id)
            .unwrap();
        match outcome {
            Outcome::Success => {
                assert_eq!(outcomes, vec![Ok(CompletionOutcome::Succeeded)]);
                assert_eq!(after.state, TaskState::Success);
            }
            Outcome::Retryable if instance.try_number < instance.max_tries => {
                let Ok(CompletionOutcome::WillRetry { at }) = outcomes[0] else {
                    panic!("expected a retry, got {outcomes:?}");
                };
                assert!(
                    (self.now + 9 * SECOND..=self.now + 11 * SECOND).contains(&at),
                    "10 s ±10%, got {} µs",
                    at - self.now
                );
                assert_eq!(
                    (after.state, after.next_retry_at),
                    (TaskState::UpForRetry, Some(at))
                );
            }
            Outcome::Retryable | Outcome::Permanent => {
                assert_eq!(outcomes, vec![Ok(CompletionOutcome::Failed)]);
                assert_eq!(after.state, TaskState::Failed);
            }
        }
    }

    async fn heartbeat(
        &mut self,
        before: &Snapshot,
        worker: usize,
        mask: u8,
        stale: Option<usize>,
    ) {
        let mut tasks: Vec<(i64, i64)> = self
            .held
            .iter()
            .filter(|(holder, _)| *holder == worker)
            .enumerate()
            .filter(|(position, _)| mask & (1 << (position % 8)) != 0)
            .map(|(_, (_, claim))| (claim.task_instance_id, claim.fence))
            .collect();
        if let Some(pick) = stale {
            let mut candidates = self.used.clone();
            candidates.extend(
                before
                    .instances()
                    .map(|instance| (instance.id, instance.fence - 1)),
            );
            if !candidates.is_empty() {
                tasks.push(candidates[pick % candidates.len()]);
            }
        }
        let lease_expires_at = self.now + micros(LEASE);
        let mut lost = self
            .store
            .task_instance_heartbeat(WORKERS[worker], &tasks, lease_expires_at)
            .await
            .unwrap();
        // Which tasks are lost is the contract; the order they are listed in is not.
        lost.sort_unstable();
        let mut expected: Vec<i64> = tasks
            .iter()
            .filter(|&&(task_instance_id, fence)| {
                !before.is_current(task_instance_id, fence)
                    || before
                        .instance(task_instance_id)
                        .is_some_and(|(instance, _)| {
                            instance.worker_id.as_deref() != Some(WORKERS[worker])
                        })
            })
            .map(|&(task_instance_id, _)| task_instance_id)
            .collect();
        expected.sort_unstable();
        assert_eq!(
            lost, expected,
            "exactly the moved-on tasks are reported lost"
        );
        let after = self.snapshot().await;
        for &(task_instance_id, _) in &tasks {
            if !lost.contains(&task_instance_id) {
                let (instance, _) = after.instance(task_instance_id).unwrap();
                assert_eq!(instance.lease_expires_at, Some(lease_expires_at));
            }
        }
    }

    async fn maintain(&mut self, before: &Snapshot, advance_secs: i64) {
        self.now += advance_secs * SECOND;
        let now = self.now;
        // Maintenance first queues due retries, then rescues expired leases, then times out
        // what is still running.
        let mut expected = MaintenanceReport::default();
        for instance in before.instances() {
            match instance.state {
                TaskState::UpForRetry if instance.next_retry_at.is_some_and(|at| at <= now) => {
                    expected.retried += 1;
                }
                TaskState::Running if instance.lease_expires_at.is_some_and(|at| at < now) => {
                    expected.rescued += 1;
                }
                TaskState::Running => {
                    let timeout_at = self
                        .timeout_of(&instance.task_id)
                        .map(|timeout| instance.started_at.unwrap() + timeout);
                    if timeout_at.is_some_and(|at| at <= now) {
                        expected.timed_out += 1;
                    }
                }
                _ => {}
            }
        }
        let report = self.store.task_instance_maintain(now).await.unwrap();
        assert_eq!(report, expected);
    }

    async fn cancel(&mut self, before: &Snapshot, run: usize) {
        let run_id = self.runs[run];
        let was_active = matches!(
            before.runs[run].run.state,
            RunState::Queued | RunState::Running
        );
        let cancelled = self.store.run_cancel(run_id, self.now).await.unwrap();
        assert_eq!(cancelled, was_active, "only an active run can be cancelled");
        let run_state = self.store.run_get(run_id).await.unwrap().unwrap().state;
        if was_active {
            assert_eq!(run_state, RunState::Cancelled);
            let instances = self.store.task_instance_list(run_id).await.unwrap();
            self.cancelled.insert(run_id, instances);
        } else {
            assert_eq!(run_state, before.runs[run].run.state);
        }
    }

    async fn clear(&mut self, before: &Snapshot, run: usize, task: usize, downstream: bool) {
        let run_id = self.runs[run];
        let task_id = self.task_ids()[task].to_owned();
        let result = self
            .store
            .task_instance_clear(run_id, &task_id, downstream, self.now)
            .await;
        match before.runs[run].run.state {
            RunState::Queued | RunState::Cancelled => {
                assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
            }
            _ => {
                let cleared = result.unwrap();
                let expected = if downstream {
                    self.with_descendants(&task_id)
                } else {
                    vec![task_id]
                };
                assert_eq!(cleared, expected);
                self.operator_acted = true;
                for (instance, _) in &before.runs[run].tasks {
                    if cleared.contains(&instance.task_id) {
                        self.cleared_at_try.insert(instance.id, instance.try_number);
                    }
                }
            }
        }
    }

    async fn mark(&mut self, before: &Snapshot, run: usize, task: usize, success: bool) {
        let run_id = self.runs[run];
        let task_id = self.task_ids()[task].to_owned();
        let state = if success {
            TaskState::Success
        } else {
            TaskState::Failed
        };
        let result = self
            .store
            .task_instance_mark(run_id, &task_id, state, self.now)
            .await;
        match before.runs[run].run.state {
            RunState::Queued | RunState::Cancelled => {
                assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
            }
            _ => {
                result.unwrap();
                self.operator_acted = true;
                let instances = self.store.task_instance_list(run_id).await.unwrap();
                let marked = instances
                    .iter()
                    .find(|instance| instance.task_id == task_id)
                    .unwrap();
                assert_eq!(marked.state, state);
            }
        }
    }

    /// The invariants, on `self.last`; `before` is the previous snapshot (none at the start) and
    /// `operator` says whether the step was a clear or a mark.
    fn check_invariants(&self, before: Option<&Snapshot>, operator: bool) {
        let now = &self.last;
        let max_active = i64::from(self.dag.max_active_runs);
        let running_runs = now
            .runs
            .iter()
            .filter(|view| view.run.state == RunState::Running)
            .count();
        let queued_runs = now
            .runs
            .iter()
            .filter(|view| view.run.state == RunState::Queued)
            .count();
        if queued_runs > 0 {
            assert!(
                i64::try_from(running_runs).unwrap() >= max_active,
                "a run waits while a slot is free: {now:#?}"
            );
        }
        if !self.operator_acted {
            assert!(
                i64::try_from(running_runs).unwrap() <= max_active,
                "max_active_runs exceeded"
            );
        }
        for view in &now.runs {
            self.check_run(view);
        }
        if let Some(before) = before {
            self.check_transitions(before, operator);
        }
    }

    fn check_run(&self, view: &RunView) {
        let run = &view.run;
        let states: HashMap<&str, TaskState> = view
            .tasks
            .iter()
            .map(|(instance, _)| (instance.task_id.as_str(), instance.state))
            .collect();
        for (instance, attempts) in &view.tasks {
            assert!(TaskState::ALL.contains(&instance.state));
            assert_eq!(
                i64::try_from(attempts.len()).unwrap(),
                instance.try_number,
                "one attempt per try: {instance:?} {attempts:?}"
            );
            assert!(instance.try_number <= instance.max_tries);
            let baseline = self.cleared_at_try.get(&instance.id).copied().unwrap_or(0);
            let successes = attempts
                .iter()
                .filter(|attempt| attempt.try_number > baseline && attempt.state == "success")
                .count();
            assert!(
                successes <= 1,
                "more than one successful attempt since the last clear: {attempts:?}"
            );
            let running: Vec<&AttemptRecord> = attempts
                .iter()
                .filter(|attempt| attempt.state == "running")
                .collect();
            if instance.state == TaskState::Running {
                assert_eq!(running.len(), 1, "{instance:?} {attempts:?}");
                let attempt = running[0];
                assert_eq!(attempt.try_number, instance.try_number);
                assert_eq!(attempt.fence, instance.fence);
                assert_eq!(Some(&attempt.worker_id), instance.worker_id.as_ref());
            } else {
                assert!(running.is_empty(), "{instance:?} {attempts:?}");
            }
            // A task that has not started follows from its upstream tasks' final states (a task
            // queued again for a retry does not: it was ready when it first ran).
            let derived = match instance.state {
                TaskState::Scheduled | TaskState::Skipped | TaskState::UpstreamFailed => true,
                TaskState::Queued => instance.try_number == baseline,
                _ => false,
            };
            if derived && run.state != RunState::Cancelled {
                let task = self.dag.task(&instance.task_id).unwrap();
                let mut counts = kiln_engine::state::UpstreamCounts {
                    total: i64::try_from(task.depends_on.len()).unwrap(),
                    ..Default::default()
                };
                for upstream in &task.depends_on {
                    match states[upstream.as_str()] {
                        TaskState::Success => counts.success += 1,
                        TaskState::Failed | TaskState::UpstreamFailed | TaskState::Cancelled => {
                            counts.failed += 1;
                        }
                        TaskState::Skipped => counts.skipped += 1,
                        _ => {}
                    }
                }
                let expected = evaluate(task.trigger_rule, counts)
                    .state()
                    .unwrap_or(TaskState::Scheduled);
                assert_eq!(
                    instance.state, expected,
                    "{} in run {} does not follow from its upstream tasks: {states:?}",
                    instance.task_id, run.id
                );
            }
        }
        match run.state {
            RunState::Queued => assert!(view.tasks.is_empty(), "a queued run has no tasks yet"),
            RunState::Running => {
                assert_eq!(view.tasks.len(), self.dag.tasks.len());
                assert!(
                    view.tasks
                        .iter()
                        .any(|(instance, _)| !instance.state.is_final()),
                    "run {} is running with every task final: {states:?}",
                    run.id
                );
                assert_eq!(run.ended_at, None);
            }
            RunState::Success | RunState::Failed | RunState::Cancelled => {
                assert!(run.ended_at.is_some());
                for (instance, _) in &view.tasks {
                    assert!(
                        instance.state.is_final(),
                        "run {} is {} but {} is {}",
                        run.id,
                        run.state,
                        instance.task_id,
                        instance.state
                    );
                }
                if run.state != RunState::Cancelled {
                    let leaves = self
                        .dag
                        .tasks
                        .iter()
                        .filter(|task| {
                            !self
                                .dag
                                .tasks
                                .iter()
                                .any(|other| other.depends_on.contains(&task.id))
                        })
                        .map(|task| states[task.id.as_str()]);
                    assert_eq!(run.state, run_outcome(leaves), "{states:?}");
                }
            }
        }
        if let Some(frozen) = self.cancelled.get(&run.id) {
            assert_eq!(run.state, RunState::Cancelled);
            let instances: Vec<TaskInstanceRecord> = view
                .tasks
                .iter()
                .map(|(instance, _)| instance.clone())
                .collect();
            assert_eq!(
                instances, *frozen,
                "nothing of a cancelled run changes afterwards"
            );
        }
    }

    fn check_transitions(&self, before: &Snapshot, operator: bool) {
        for (old, new) in before.runs.iter().zip(&self.last.runs) {
            if old.run.state.is_final() && new.run.state != old.run.state {
                assert!(
                    (operator && new.run.state == RunState::Running) || new.run.state.is_final(),
                    "run {} went from {} to {} without an operator",
                    new.run.id,
                    old.run.state,
                    new.run.state
                );
            }
            for (instance, _) in &new.tasks {
                let Some((previous, _)) = old
                    .tasks
                    .iter()
                    .find(|(previous, _)| previous.id == instance.id)
                else {
                    assert!(
                        matches!(instance.state, TaskState::Scheduled | TaskState::Queued),
                        "a new task instance starts scheduled or queued: {instance:?}"
                    );
                    continue;
                };
                assert!(instance.fence >= previous.fence, "fences never go back");
                assert!(instance.try_number >= previous.try_number);
                if !operator && previous.state != instance.state {
                    assert!(
                        previous.state.can_become(instance.state),
                        "{} went from {} to {}",
                        instance.task_id,
                        previous.state,
                        instance.state
                    );
                }
            }
        }
    }
}

async fn run_events(events: Vec<Event>) {
    let db = TestDb::sqlite().await;
    let mut harness = Harness::new(&db).await;
    for event in &events {
        harness.step(event).await;
    }
    db.cleanup().await;
}

proptest! {
    // No failure persistence: proptest cannot locate an integration test's crate root, and the
    // minimal failing sequence is printed anyway.
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_task_state_machine_keeps_its_invariants(
        events in proptest::collection::vec(event(), 20..=40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run_events(events));
    }
}
