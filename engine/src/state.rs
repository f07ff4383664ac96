//! The run and task-instance state machines, in one place: the states, which transitions are
//! legal, how trigger rules turn upstream outcomes into readiness, and how long a retry waits.
//!
//! Everything here is pure; the store applies these decisions inside its transactions, each
//! guarded by a compare-and-set on the previous state.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dag::TriggerRule;

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created, waiting for a slot under the DAG's `max_active_runs`.
    Queued,
    /// Its task instances exist and are being worked on.
    Running,
    /// Every leaf task succeeded or was skipped.
    Success,
    /// A leaf task failed or could not run because an upstream failed.
    Failed,
    /// Stopped on request.
    Cancelled,
}

/// The state of one task instance (a task within a run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its upstream tasks.
    Scheduled,
    /// Ready; a worker may claim it.
    Queued,
    /// Claimed by a worker holding a lease.
    Running,
    /// Finished successfully.
    Success,
    /// Failed with no tries left.
    Failed,
    /// Failed, and will be queued again at its retry time.
    UpForRetry,
    /// Will not run because upstream tasks failed.
    UpstreamFailed,
    /// Will not run because its trigger rule can no longer be met.
    Skipped,
    /// Stopped on request.
    Cancelled,
}

macro_rules! string_enum {
    ($type:ident, $label:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $type {
            /// The name used in the database, the API and the CLI.
            pub fn as_str(self) -> &'static str {
                match self { $($type::$variant => $text),+ }
            }

            /// Every value, in declaration order.
            pub const ALL: &'static [$type] = &[$($type::$variant),+];
        }

        impl fmt::Display for $type {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl FromStr for $type {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($type::$variant),)+
                    other => Err(format!(
                        "unknown {} `{other}`; expected one of {}",
                        $label,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(RunState, "run state" {
    Queued => "queued",
    Running => "running",
    Success => "success",
    Failed => "failed",
    Cancelled => "cancelled",
});

string_enum!(TaskState, "task state" {
    Scheduled => "scheduled",
    Queued => "queued",
    Running => "running",
    Success => "success",
    Failed => "failed",
    UpForRetry => "up_for_retry",
    UpstreamFailed => "upstream_failed",
    Skipped => "skipped",
    Cancelled => "cancelled",
});

impl RunState {
    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Success | RunState::Failed | RunState::Cancelled
        )
    }
}

impl TaskState {
    /// Whether the task instance is over (until someone clears it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Success
                | TaskState::Failed
                | TaskState::UpstreamFailed
                | TaskState::Skipped
                | TaskState::Cancelled
        )
    }

    /// Whether the state machine allows moving from `self` to `next`.
    ///
    /// Clearing (any state back to `Scheduled`, then re-derived) and marking (any state to
    /// `Success` or `Failed`) are operator actions and are allowed here, as is a worker handing a
    /// running task back (`Running` to `Queued`); everything else follows the normal life of an
    /// attempt.
    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        match (self, next) {
            (_, Scheduled | Success | Failed) => true,
            (Scheduled, Queued | UpstreamFailed | Skipped | Cancelled) => true,
            (Queued, Running | Cancelled) => true,
            (Running, Queued | UpForRetry | Cancelled) => true,
            (UpForRetry, Queued | Cancelled) => true,
            (from, Queued) if from.is_final() => true,
            _ => false,
        }
    }
}

/// How one upstream task ended, as the trigger rules count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// Succeeded.
    Success,
    /// Failed, was marked upstream-failed, or was cancelled.
    Failed,
    /// Was skipped.
    Skipped,
}

impl UpstreamOutcome {
    /// How a final task state counts for its downstream tasks.
    pub fn of(state: TaskState) -> Option<UpstreamOutcome> {
        match state {
            TaskState::Success => Some(UpstreamOutcome::Success),
            TaskState::Failed | TaskState::UpstreamFailed | TaskState::Cancelled => {
                Some(UpstreamOutcome::Failed)
            }
            TaskState::Skipped => Some(UpstreamOutcome::Skipped),
            _ => None,
        }
    }
}

/// Upstream outcomes counted so far for one task instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamCounts {
    /// How many upstream tasks there are.
    pub total: i64,
    /// How many succeeded.
    pub success: i64,
    /// How many failed (including upstream-failed and cancelled).
    pub failed: i64,
    /// How many were skipped.
    pub skipped: i64,
}

impl UpstreamCounts {
    fn done(&self) -> i64 {
        self.success + self.failed + self.skipped
    }
}

/// What a trigger rule makes of the upstream outcomes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Not decided yet: more upstream tasks must finish.
    Wait,
    /// Runnable now.
    Ready,
    /// Can never run; becomes skipped.
    Skip,
    /// Can never run because of failures; becomes upstream-failed.
    UpstreamFailed,
}

impl Readiness {
    /// The task state a decided readiness leads to.
    pub fn state(self) -> Option<TaskState> {
        match self {
            Readiness::Wait => None,
            Readiness::Ready => Some(TaskState::Queued),
            Readiness::Skip => Some(TaskState::Skipped),
            Readiness::UpstreamFailed => Some(TaskState::UpstreamFailed),
        }
    }
}

/// Applies a trigger rule to the counts so far, deciding as early as the rule allows (Airflow's
/// semantics: `all_success` with a failed upstream is upstream-failed at once, and with a skipped
/// upstream is skipped).
pub fn evaluate(rule: TriggerRule, counts: UpstreamCounts) -> Readiness {
    let all_done = counts.done() >= counts.total;
    match rule {
        TriggerRule::AllSuccess => {
            if counts.failed > 0 {
                Readiness::UpstreamFailed
            } else if counts.skipped > 0 {
                Readiness::Skip
            } else if all_done {
                Readiness::Ready
            } else {
                Readiness::Wait
            }
        }
        TriggerRule::AllFailed => {
            if counts.success > 0 || counts.skipped > 0 {
                Readiness::Skip
            } else if all_done {
                Readiness::Ready
            } else {
                Readiness::Wait
            }
        }
        TriggerRule::AllDone => {
            if all_done {
                Readiness::Ready
            } else {
                Readiness::Wait
            }
        }
        TriggerRule::OneSuccess => {
            if counts.success > 0 || counts.total == 0 {
                Readiness::Ready
            } else if all_done && counts.failed > 0 {
                Readiness::UpstreamFailed
            } else if all_done {
                Readiness::Skip
            } else {
                Readiness::Wait
            }
        }
        TriggerRule::OneFailed => {
            if counts.failed > 0 || counts.total == 0 {
                Readiness::Ready
            } else if all_done {
                Readiness::Skip
            } else {
                Readiness::Wait
            }
        }
        TriggerRule::NoneFailed => {
            if counts.failed > 0 {
                Readiness::UpstreamFailed
            } else if all_done {
                Readiness::Ready
            } else {
                Readiness::Wait
            }
        }
    }
}

/// How long to wait before retry number `retry` (1 for the first retry).
///
/// With backoff, the delay doubles per retry up to `max_delay`; `jitter` (a number in `[0, 1)`)
/// then spreads it by ±10% so that tasks failing together do not retry in lockstep, never
/// exceeding `max_delay`.
pub fn retry_delay(
    base: Duration,
    max_delay: Duration,
    backoff: bool,
    retry: u32,
    jitter: f64,
) -> Duration {
    let factor = if backoff {
        2f64.powi(retry.saturating_sub(1).min(62) as i32)
    } else {
        1.0
    };
    let ceiling = if backoff { max_delay.max(base) } else { base };
    let exponential = base.as_secs_f64() * factor;
    let capped = exponential.min(ceiling.as_secs_f64());
    let spread = 0.9 + 0.2 * jitter.clamp(0.0, 1.0);
    Duration::from_secs_f64((capped * spread).min(ceiling.as_secs_f64()))
}

/// The outcome of a run whose tasks are all final, decided by its leaf tasks (those nothing
/// depends on), as Airflow does: a failed or upstream-failed leaf fails the run, so a
/// clean-up task with `trigger_rule = "all_done"` does not hide a failure before it.
pub fn run_outcome(leaf_states: impl IntoIterator<Item = TaskState>) -> RunState {
    let failed = leaf_states.into_iter().any(|state| {
        matches!(
            state,
            TaskState::Failed | TaskState::UpstreamFailed | TaskState::Cancelled
        )
    });
    if failed {
        RunState::Failed
    } else {
        RunState::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rule: TriggerRule, cases: &[(i64, i64, i64, i64)]) -> String {
        cases
            .iter()
            .map(|&(total, success, failed, skipped)| {
                let counts = UpstreamCounts {
                    total,
                    success,
                    failed,
                    skipped,
                };
                format!(
                    "{total} up, {success} ok, {failed} failed, {skipped} skipped => {:?}",
                    evaluate(rule, counts)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    const CASES: &[(i64, i64, i64, i64)] = &[
        (0, 0, 0, 0),
        (2, 1, 0, 0),
        (2, 2, 0, 0),
        (2, 1, 1, 0),
        (2, 0, 1, 0),
        (2, 1, 0, 1),
        (2, 0, 0, 2),
        (2, 0, 2, 0),
    ];

    #[test]
    fn trigger_rules() {
        expect_test::expect![[r#"
            0 up, 0 ok, 0 failed, 0 skipped => Ready
            2 up, 1 ok, 0 failed, 0 skipped => Wait
            2 up, 2 ok, 0 failed, 0 skipped => Ready
            2 up, 1 ok, 1 failed, 0 skipped => UpstreamFailed
            2 up, 0 ok, 1 failed, 0 skipped => UpstreamFailed
            2 up, 1 ok, 0 failed, 1 skipped => Skip
            2 up, 0 ok, 0 failed, 2 skipped => Skip
            2 up, 0 ok, 2 failed, 0 skipped => UpstreamFailed"#]]
        .assert_eq(&check(TriggerRule::AllSuccess, CASES));
        expect_test::expect![[r#"
            0 up, 0 ok, 0 failed, 0 skipped => Ready
            2 up, 1 ok, 0 failed, 0 skipped => Skip
            2 up, 2 ok, 0 failed, 0 skipped => Skip
            2 up, 1 ok, 1 failed, 0 skipped => Skip
            2 up, 0 ok, 1 failed, 0 skipped => Wait
            2 up, 1 ok, 0 failed, 1 skipped => Skip
            2 up, 0 ok, 0 failed, 2 skipped => Skip
            2 up, 0 ok, 2 failed, 0 skipped => Ready"#]]
        .assert_eq(&check(TriggerRule::AllFailed, CASES));
        expect_test::expect![[r#"
            0 up, 0 ok, 0 failed, 0 skipped => Ready
            2 up, 1 ok, 0 failed, 0 skipped => Wait
            2 up, 2 ok, 0 failed, 0 skipped => Ready
            2 up, 1 ok, 1 failed, 0 skipped => Ready
            2 up, 0 ok, 1 failed, 0 skipped => Wait
            2 up, 1 ok, 0 failed, 1 skipped => Ready
            2 up, 0 ok, 0 failed, 2 skipped => Ready
            2 up, 0 ok, 2 failed, 0 skipped => Ready"#]]
        .assert_eq(&check(TriggerRule::AllDone, CASES));
        expect_test::expect![[r#"
            0 up, 0 ok, 0 failed, 0 skipped => Ready
            2 up, 1 ok, 0 failed, 0 skipped => Ready
            2 up, 2 ok, 0 failed, 0 skipped => Ready
            2 up, 1 ok, 1 failed, 0 skipped => Ready
            2 up, 0 ok, 1 failed, 0 skipped => Wait
            2 up, 1 ok, 0 failed, 1 skipped => Ready
            2 up, 0 ok, 0 failed, 2 skipped => Skip
            2 up, 0 ok, 2 failed, 0 skipped => UpstreamFailed"#]]
        .assert_eq(&check(TriggerRule::OneSuccess, CASES));
        expect_test::expect![[r#"
            0 up, 0 ok, 0 failed, 0 skipped => Ready
            2 up, 1 ok, 0 failed, 0 skipped => Wait
            2 up, 2 ok, 0 failed, 0 skipped => Skip
            2 up, 1 ok, 1 failed, 0 skipped => Ready
            2 up, 0 ok, 1 failed, 0 skipped => Ready
            2 up, 1 ok, 0 failed, 1 skipped => Skip
            2 up, 0 ok, 0 failed, 2 skipped => Skip
            2 up, 0 ok, 2 failed, 0 skipped => Ready"#]]
        .assert_eq(&check(TriggerRule::OneFailed, CASES));
        expect_test::expect![[r#"
            0 up, 0 ok, 0 failed, 0 skipped => Ready
            2 up, 1 ok, 0 failed, 0 skipped => Wait
            2 up, 2 ok, 0 failed, 0 skipped => Ready
            2 up, 1 ok, 1 failed, 0 skipped => UpstreamFailed
            2 up, 0 ok, 1 failed, 0 skipped => UpstreamFailed
            2 up, 1 ok, 0 failed, 1 skipped => Ready
            2 up, 0 ok, 0 failed, 2 skipped => Ready
            2 up, 0 ok, 2 failed, 0 skipped => UpstreamFailed"#]]
        .assert_eq(&check(TriggerRule::NoneFailed, CASES));
    }

    #[test]
    fn retry_delays_double_and_cap_with_bounded_jitter() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(60);
        let at = |retry, jitter| retry_delay(base, max, true, retry, jitter).as_secs_f64();
        assert_eq!(at(1, 0.5), 10.0);
        assert_eq!(at(2, 0.5), 20.0);
        assert_eq!(at(3, 0.5), 40.0);
        assert_eq!(at(4, 0.5), 60.0);
        assert_eq!(at(40, 0.5), 60.0);
        assert!((at(1, 0.0) - 9.0).abs() < 1e-9);
        assert!((at(1, 0.999_999) - 11.0).abs() < 1e-3);
        assert_eq!(at(4, 0.999), 60.0, "jitter never exceeds the cap");
        assert_eq!(retry_delay(base, max, false, 5, 0.5), base);
    }

    #[test]
    fn states_round_trip_through_text() {
        for state in TaskState::ALL {
            assert_eq!(state.as_str().parse::<TaskState>(), Ok(*state));
        }
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>(), Ok(*state));
        }
        assert!(
            "done"
                .parse::<TaskState>()
                .unwrap_err()
                .contains("expected one of scheduled, queued")
        );
    }

    #[test]
    fn final_states_cannot_go_back_to_running() {
        for state in TaskState::ALL.iter().filter(|state| state.is_final()) {
            assert!(!state.can_become(TaskState::Running), "{state}");
            assert!(!state.can_become(TaskState::UpForRetry), "{state}");
        }
        assert!(!TaskState::Scheduled.can_become(TaskState::Running));
        assert!(TaskState::Queued.can_become(TaskState::Running));
    }

    #[test]
    fn run_outcome_follows_the_leaves() {
        assert_eq!(
            run_outcome([TaskState::Success, TaskState::Skipped]),
            RunState::Success
        );
        assert_eq!(
            run_outcome([TaskState::Success, TaskState::UpstreamFailed]),
            RunState::Failed
        );
        assert_eq!(run_outcome([]), RunState::Success);
    }
}
