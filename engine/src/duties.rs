//! The health of a server's timed duties (leader election, DAG refresh, cron, maintenance, the
//! MLflow outbox), shared between the loops that run them and the HTTP probes that report on
//! them, and [`run_ticks`], the runner that gives a duty of its own timer the same error policy.
//!
//! A duty that fails logs at ERROR at once, is counted, and is tried again after a backoff; it
//! never ends its loop. What a probe needs is whether the loop is still getting through its
//! ticks: a loop that hangs, or cannot reach its database for longer than a stated time, makes
//! the server unhealthy so that an orchestrator restarts it, instead of leaving a process whose
//! HTTP port answers while nothing is scheduled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

/// A duty whose failure means the loop cannot do anything at all (it reaches the store first,
/// every tick): it decides liveness and readiness.
pub const LEADER_DUTY: &str = "leader_election";

/// How long the loop may go without a tick that reached the store before `/healthz` fails.
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(60);

/// The longest a failing duty waits before its next try.
const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// The first wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The wait before the next try after `consecutive_failures` failures in a row: doubling from
/// 200 ms to at most 3 s (the leader's renewal period, so a recovered database is noticed
/// before leadership lapses), less up to a fifth at random so that several servers retrying
/// against one database spread out.
pub fn backoff(consecutive_failures: u32) -> Duration {
    if consecutive_failures == 0 {
        return Duration::ZERO;
    }
    let doublings = (consecutive_failures - 1).min(16);
    let full = FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF);
    let jitter: f64 = rand::random::<f64>() * 0.2;
    full.mul_f64(1.0 - jitter)
}

/// What one duty has done lately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DutyStatus {
    /// When it last succeeded, if ever.
    pub last_success: Option<DateTime<Utc>>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Failures since the process started.
    pub failures_total: u64,
    /// The last failure's message, cleared by a success.
    pub last_error: Option<String>,
    /// `last_success` on the monotonic clock, which judges staleness.
    last_success_instant: Option<Instant>,
}

/// The duties of one process and how they fare. Cloning shares the same record.
#[derive(Debug, Clone)]
pub struct DutyHealth {
    inner: Arc<Mutex<Record>>,
}

#[derive(Debug)]
struct Record {
    started: Instant,
    /// How long the loop may go without completing a tick before the process is not live.
    stall_limit: Duration,
    duties: BTreeMap<&'static str, DutyStatus>,
    /// When the loop last got through a whole tick whose store round trip succeeded.
    last_tick: Option<Instant>,
}

impl Default for DutyHealth {
    fn default() -> DutyHealth {
        DutyHealth {
            inner: Arc::new(Mutex::new(Record {
                started: Instant::now(),
                stall_limit: DEFAULT_STALL_LIMIT,
                duties: BTreeMap::new(),
                last_tick: None,
            })),
        }
    }
}

/// A duty's failure, already logged and counted; the caller backs off and goes on.
#[derive(Debug, Clone, Copy)]
pub struct Failed {
    /// Failures of this duty in a row, this one included.
    pub consecutive_failures: u32,
}

impl DutyHealth {
    fn lock(&self) -> MutexGuard<'_, Record> {
        // A panic elsewhere while holding the lock leaves plain counters behind: still valid.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets how long the loop may go without completing a tick before [`DutyHealth::live`]
    /// fails ([`DEFAULT_STALL_LIMIT`] unless set).
    pub fn set_stall_limit(&self, stall_limit: Duration) {
        self.lock().stall_limit = stall_limit;
    }

    /// Records that `duty` succeeded.
    pub fn succeeded(&self, duty: &'static str) {
        let now = Instant::now();
        let mut record = self.lock();
        let status = record.duties.entry(duty).or_insert_with(DutyStatus::new);
        if status.consecutive_failures > 0 {
            tracing::info!(
                message = "A duty recovered.",
                duty,
                failures = status.consecutive_failures
            );
        }
        status.last_success = Some(Utc::now());
        status.last_success_instant = Some(now);
        status.consecutive_failures = 0;
        status.last_error = None;
    }

    /// Records, and logs at ERROR with `context`, that `duty` failed with `error`.
    pub fn failed(
        &self,
        duty: &'static str,
        context: &str,
        error: &dyn std::fmt::Display,
    ) -> Failed {
        let message = format!("{context}: {error}");
        let mut record = self.lock();
        let status = record.duties.entry(duty).or_insert_with(DutyStatus::new);
        status.consecutive_failures = status.consecutive_failures.saturating_add(1);
        status.failures_total = status.failures_total.saturating_add(1);
        let consecutive_failures = status.consecutive_failures;
        tracing::error!(
            message = "A timed duty failed; it will be tried again.",
            duty,
            consecutive_failures,
            error = %message
        );
        status.last_error = Some(message);
        Failed {
            consecutive_failures,
        }
    }

    /// Records that the loop got through a tick whose store round trip succeeded.
    pub fn tick_completed(&self) {
        self.lock().last_tick = Some(Instant::now());
    }

    /// Every duty's status, by name.
    pub fn duties(&self) -> BTreeMap<&'static str, DutyStatus> {
        self.lock().duties.clone()
    }

    /// Whether the process is alive in the sense a liveness probe asks: the loop completed a
    /// tick within the stall limit (or the process is younger than that). `Err` says why not.
    pub fn live(&self) -> Result<(), String> {
        let record = self.lock();
        let stall_limit = record.stall_limit;
        let since = record.last_tick.unwrap_or(record.started).elapsed();
        if since <= stall_limit {
            return Ok(());
        }
        let last_error = record
            .duties
            .get(LEADER_DUTY)
            .and_then(|status| status.last_error.clone());
        let what = if record.last_tick.is_some() {
            "has not completed a tick"
        } else {
            "has not completed its first tick"
        };
        Err(match last_error {
            Some(error) => format!(
                "the scheduler's timed loop {what} for {} s; last error: {error}",
                since.as_secs()
            ),
            None => format!(
                "the scheduler's timed loop {what} for {} s",
                since.as_secs()
            ),
        })
    }

    /// Whether the process should receive traffic: it is live, and its last attempt to reach
    /// the store succeeded. `Err` says why not.
    pub fn ready(&self) -> Result<(), String> {
        self.live()?;
        let record = self.lock();
        match record.duties.get(LEADER_DUTY) {
            Some(status) if status.consecutive_failures > 0 => Err(format!(
                "the scheduler cannot reach its store ({} failures in a row): {}",
                status.consecutive_failures,
                status.last_error.as_deref().unwrap_or("unknown error")
            )),
            Some(_) => Ok(()),
            None => Err("the scheduler has not reached its store yet".to_owned()),
        }
    }
}

impl DutyStatus {
    fn new() -> DutyStatus {
        DutyStatus {
            last_success: None,
            consecutive_failures: 0,
            failures_total: 0,
            last_error: None,
            last_success_instant: None,
        }
    }

    /// How long ago the duty last succeeded, if it ever did.
    pub fn since_success(&self) -> Option<Duration> {
        self.last_success_instant.map(|at| at.elapsed())
    }
}

/// Runs one duty on its own timer until `cancel` fires, with the error policy every timed duty
/// shares: a tick that succeeds is recorded and the next comes after the wait it answers; a
/// tick that fails is logged at ERROR with `context`, counted in `health`, and tried again after
/// [`backoff`]. Nothing but `cancel` ends it.
///
/// The scheduler's own loop applies the same policy to its duties inside one tick (they share
/// the leader election); a duty that runs apart from it, such as the MLflow outbox's sender,
/// runs here.
///
/// ```
/// # async fn demo() {
/// use std::time::Duration;
/// use kiln_engine::duties::{DutyHealth, run_ticks};
/// let health = DutyHealth::default();
/// let cancel = tokio_util::sync::CancellationToken::new();
/// cancel.cancel();
/// run_ticks(&health, "example", "could not do the example", &cancel, || async {
///     Ok::<_, std::io::Error>(Duration::from_secs(5))
/// })
/// .await;
/// # }
/// ```
pub async fn run_ticks<F, Fut, E>(
    health: &DutyHealth,
    duty: &'static str,
    context: &str,
    cancel: &CancellationToken,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Duration, E>>,
    E: std::fmt::Display,
{
    while !cancel.is_cancelled() {
        let wait = tokio::select! {
            // A tick that has finished is recorded, even if cancellation came meanwhile.
            biased;
            result = tick() => match result {
                Ok(wait) => {
                    health.succeeded(duty);
                    wait
                }
                Err(error) => backoff(health.failed(duty, context, &error).consecutive_failures),
            },
            () = cancel.cancelled() => return,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Runs the loop `start` makes until `cancel` fires, starting it again (after a second) if it
/// panics: a bug in one tick must not leave the process answering HTTP with nothing scheduled.
/// The loop itself returns only when cancelled.
pub async fn supervise<F, Fut>(name: &'static str, cancel: CancellationToken, start: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    supervise_restarting_after(name, cancel, start, Duration::from_secs(1)).await;
}

async fn supervise_restarting_after<F, Fut>(
    name: &'static str,
    cancel: CancellationToken,
    start: F,
    restart_delay: Duration,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::spawn(start()).await {
            Ok(()) => return,
            Err(error) => {
                tracing::error!(
                    message = "A timed loop panicked; starting it again.",
                    duty = name,
                    %error
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(restart_delay) => {}
            () = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loop_that_panics_is_started_again_until_cancelled() {
        let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let counted = starts.clone();
        let stopper = cancel.clone();
        let start = move || {
            let starts = counted.clone();
            let stopper = stopper.clone();
            async move {
                let start = starts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                if start < 3 {
                    panic!("tick {start} failed");
                }
                // The third start runs until cancelled, as a real loop does.
                stopper.cancel();
                stopper.cancelled().await;
            }
        };
        supervise_restarting_after("test", cancel, start, Duration::from_millis(5)).await;
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failing_duty_is_counted_backed_off_and_tried_again_until_cancelled() {
        let health = DutyHealth::default();
        let cancel = CancellationToken::new();
        let mut ticks = 0_u32;
        let stopper = cancel.clone();
        let started = Instant::now();
        run_ticks(&health, "outbox", "could not send", &cancel, || {
            ticks += 1;
            let tick = ticks;
            let stopper = stopper.clone();
            async move {
                match tick {
                    1 | 2 => Err("connection refused"),
                    3 => Ok(Duration::from_millis(20)),
                    _ => {
                        stopper.cancel();
                        Ok(Duration::ZERO)
                    }
                }
            }
        })
        .await;
        assert_eq!(ticks, 4);
        let status = &health.duties()["outbox"];
        assert_eq!((status.consecutive_failures, status.failures_total), (0, 2));
        // Two backoffs (200 ms and 400 ms, less up to a fifth) came before the third tick.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(480), "{elapsed:?}");

        // A failure is recorded with its context, and a cancelled runner does not tick.
        let health = DutyHealth::default();
        let cancel = CancellationToken::new();
        let stopper = cancel.clone();
        run_ticks(&health, "outbox", "could not send", &cancel, || {
            stopper.cancel();
            async { Err::<Duration, _>("timed out") }
        })
        .await;
        let status = &health.duties()["outbox"];
        assert_eq!(
            status.last_error.as_deref(),
            Some("could not send: timed out")
        );
        run_ticks::<_, _, &str>(&health, "outbox", "could not send", &cancel, || async {
            panic!("a cancelled runner ticks no more")
        })
        .await;
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_never_waits_longer() {
        assert_eq!(backoff(0), Duration::ZERO);
        for failures in 1..40 {
            let wait = backoff(failures);
            let full = FIRST_BACKOFF
                .saturating_mul(1 << (failures - 1).min(16))
                .min(MAX_BACKOFF);
            assert!(
                wait <= full && wait >= full.mul_f64(0.8),
                "{failures}: {wait:?}"
            );
        }
        assert!(backoff(30) <= MAX_BACKOFF);
    }

    #[test]
    fn failures_count_until_a_success_clears_them() {
        let health = DutyHealth::default();
        let error = "connection refused";
        assert_eq!(
            health
                .failed("dag_sync", "reading", &error)
                .consecutive_failures,
            1
        );
        assert_eq!(
            health
                .failed("dag_sync", "reading", &error)
                .consecutive_failures,
            2
        );
        let status = &health.duties()["dag_sync"];
        assert_eq!(status.failures_total, 2);
        assert_eq!(
            status.last_error.as_deref(),
            Some("reading: connection refused")
        );
        assert_eq!(status.last_success, None);

        health.succeeded("dag_sync");
        let status = &health.duties()["dag_sync"];
        assert_eq!((status.consecutive_failures, status.failures_total), (0, 2));
        assert_eq!(status.last_error, None);
        assert!(status.since_success().is_some());
    }

    #[test]
    fn liveness_follows_ticks_and_readiness_the_store() {
        let health = DutyHealth::default();
        // A new process is live for the stall limit, but not ready until it reaches its store.
        assert!(health.live().is_ok());
        assert!(health.ready().is_err());

        health.succeeded(LEADER_DUTY);
        health.tick_completed();
        assert!(health.ready().is_ok());

        health.failed(LEADER_DUTY, "electing", &"connection reset");
        let not_ready = health.ready().unwrap_err();
        assert!(not_ready.contains("connection reset"), "{not_ready}");
        assert!(health.live().is_ok());

        // No tick within the limit: neither live nor ready, and the reason names the error.
        health.set_stall_limit(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(health.ready().is_err());
        let stalled = health.live().unwrap_err();
        assert!(stalled.contains("has not completed a tick"), "{stalled}");
        assert!(stalled.contains("connection reset"), "{stalled}");
    }
}
