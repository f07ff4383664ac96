//! Periodic maintenance of task instances: due retries, timeouts, expired leases, dead workers.

use super::completions::Ending;
use super::db::{Conn, query, query_as, query_scalar};
use super::{AttemptResult, Completion, Micros, SqlStore, StoreError};

/// What periodic maintenance did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Up-for-retry tasks queued again.
    pub retried: usize,
    /// Running tasks whose lease expired (their worker is presumed dead): queued again, or
    /// failed when they had lost attempts to spare no more.
    pub rescued: usize,
    /// Running tasks past their timeout.
    pub timed_out: usize,
}

pub(super) async fn task_instance_rescue_worker(
    store: &SqlStore,
    worker_id: &str,
    now: Micros,
) -> Result<usize, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let running: Vec<(i64, i64)> =
        query_as("SELECT id, fence FROM task_instances WHERE state = 'running' AND worker_id = $1 ORDER BY id")
            .bind(worker_id)
            .fetch_all(&mut tx)
            .await?;
    let ids: Vec<i64> = running.iter().map(|(id, _)| *id).collect();
    store.lock_runs_of(&mut tx, &ids).await?;
    let error = format!("worker `{worker_id}` died while running the attempt");
    let ended = running
        .into_iter()
        .map(|(task_instance_id, fence)| (task_instance_id, fence, error.clone()));
    let rescued = end_attempts_in(store, &mut tx, ended, Ending::Lost, now).await?;
    tx.commit().await?;
    Ok(rescued)
}

pub(super) async fn task_instance_maintain(
    store: &SqlStore,
    now: Micros,
) -> Result<MaintenanceReport, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let mut report = MaintenanceReport::default();
    let retried = query(
        "UPDATE task_instances SET state = 'queued', next_retry_at = NULL, queued_at = $1 \
         WHERE state = 'up_for_retry' AND next_retry_at <= $1",
    )
    .bind(now)
    .execute(&mut tx)
    .await?;
    report.retried = usize::try_from(retried).unwrap_or(usize::MAX);

    let expired: Vec<(i64, i64, Option<String>)> = query_as(
        "SELECT id, fence, worker_id FROM task_instances WHERE state = 'running' AND lease_expires_at < $1 ORDER BY id LIMIT 1000",
    )
    .bind(now)
    .fetch_all(&mut tx)
    .await?;
    let timed_out: Vec<(i64, i64, Option<i64>, Option<i64>)> = query_as(
        "SELECT id, fence, started_at, timeout_micros FROM task_instances \
         WHERE state = 'running' AND timeout_at IS NOT NULL AND timeout_at <= $1 ORDER BY id LIMIT 1000",
    )
    .bind(now)
    .fetch_all(&mut tx)
    .await?;
    let involved: Vec<i64> = expired
        .iter()
        .map(|(id, ..)| *id)
        .chain(timed_out.iter().map(|(id, ..)| *id))
        .collect();
    store.lock_runs_of(&mut tx, &involved).await?;
    let lost = expired
        .into_iter()
        .map(|(task_instance_id, fence, worker_id)| {
            let error = format!(
                "worker `{}` stopped heartbeating: its lease expired",
                worker_id.unwrap_or_default()
            );
            (task_instance_id, fence, error)
        });
    report.rescued = end_attempts_in(store, &mut tx, lost, Ending::Lost, now).await?;
    let late =
        timed_out
            .into_iter()
            .map(|(task_instance_id, fence, _started_at, timeout_micros)| {
                let limit = std::time::Duration::from_micros(
                    u64::try_from(timeout_micros.unwrap_or(0)).unwrap_or(0),
                );
                let error = format!("timed out after {}", crate::duration::format(limit));
                (task_instance_id, fence, error)
            });
    report.timed_out = end_attempts_in(store, &mut tx, late, Ending::TimedOut, now).await?;
    tx.commit().await?;
    Ok(report)
}

/// Ends attempts the server decided are over (their worker died, their lease expired, they ran
/// too long) as retryable failures of `ending`, each through the same compare-and-set as a
/// worker's report. Answers how many ended; one whose fence moved on meanwhile is left alone.
async fn end_attempts_in(
    store: &SqlStore,
    conn: &mut Conn<'_>,
    attempts: impl Iterator<Item = (i64, i64, String)>,
    ending: Ending,
    now: Micros,
) -> Result<usize, StoreError> {
    let mut ended = 0;
    for (task_instance_id, fence, error) in attempts {
        let completion = Completion {
            task_instance_id,
            fence,
            result: AttemptResult::Failure {
                error,
                retryable: true,
            },
        };
        if store
            .complete_in(&mut *conn, &completion, ending, now)
            .await?
            .is_ok()
        {
            ended += 1;
        }
    }
    Ok(ended)
}

pub(super) async fn task_instance_next_due(store: &SqlStore) -> Result<Option<Micros>, StoreError> {
    let due: Option<i64> = query_scalar(
        "SELECT MIN(due) FROM ( \
           SELECT MIN(next_retry_at) AS due FROM task_instances WHERE state = 'up_for_retry' \
           UNION ALL SELECT MIN(lease_expires_at) AS due FROM task_instances WHERE state = 'running' \
           UNION ALL SELECT MIN(timeout_at) AS due FROM task_instances WHERE state = 'running' \
         ) AS pending",
    )
    .fetch_one(&store.pool)
    .await?;
    Ok(due)
}
