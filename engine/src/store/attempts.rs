//! Attempts (`task_attempts`): one row per try of a task instance.

use super::db::query;
use super::{Micros, SqlStore, StoreError};
use serde::{Deserialize, Serialize};

/// One attempt of a task instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt's id in the store.
    pub id: i64,
    /// 1 for the first attempt.
    pub try_number: i64,
    /// The worker that ran it.
    pub worker_id: String,
    /// The fencing token it ran under.
    pub fence: i64,
    /// `running`, `success`, `failed`, `cancelled`, `timed_out` or `lost` (lost to the
    /// infrastructure: its worker died, its lease expired or it was handed back; `error` says
    /// which).
    pub state: String,
    /// When it started.
    pub started_at: Micros,
    /// When it ended.
    pub ended_at: Option<Micros>,
    /// Why it failed.
    pub error: Option<String>,
    /// For a cache hit, the attempt whose outputs it reused.
    pub cache_hit_of: Option<i64>,
}

pub(super) async fn attempt_list(
    store: &SqlStore,
    task_instance_id: i64,
) -> Result<Vec<AttemptRecord>, StoreError> {
    let rows = query(
        "SELECT id, try_number, worker_id, fence, state, started_at, ended_at, error, cache_hit_of FROM task_attempts \
         WHERE task_instance_id = $1 ORDER BY try_number",
    )
    .bind(task_instance_id)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AttemptRecord {
                id: row.try_get("id")?,
                try_number: row.try_get("try_number")?,
                worker_id: row.try_get("worker_id")?,
                fence: row.try_get("fence")?,
                state: row.try_get("state")?,
                started_at: row.try_get("started_at")?,
                ended_at: row.try_get("ended_at")?,
                error: row.try_get("error")?,
                cache_hit_of: row.try_get("cache_hit_of")?,
            })
        })
        .collect()
}
