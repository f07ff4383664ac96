//! Task logs (`task_logs`): numbered chunks per attempt, stored once however often they are sent.

use super::db::{Conn, QueryBuilder, query_as};
use super::{Micros, SqlStore, StoreError};
use crate::state::TaskState;
use serde::{Deserialize, Serialize};

/// A log chunk to store, numbered so that a resent chunk is stored once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogUpload {
    /// The task instance.
    pub task_instance_id: i64,
    /// The attempt.
    pub try_number: i64,
    /// The chunk's position in the attempt's log.
    pub seq: i64,
    /// The text.
    pub chunk: String,
}

/// A piece of a task attempt's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    /// Its position in the attempt's log (0, 1, …).
    pub seq: i64,
    /// The text.
    pub chunk: String,
    /// When it was stored.
    pub created_at: Micros,
}

/// Where a log chunk's attempt stands: only a running attempt takes chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogTarget {
    /// No such task instance.
    Unknown,
    /// The task instance exists but has no attempt with that number.
    NoAttempt,
    /// The attempt exists but has ended (it finished, was fenced off, or a later try began).
    Ended,
    /// The attempt is running.
    Open,
}

impl LogTarget {
    /// Classifies a chunk for `try_number` of a task instance that is `current` (its try and
    /// state), or unknown (`None`). Try numbers name attempts, so a try below the current one
    /// is an attempt that ended, whatever its worker believes.
    pub(crate) fn of(current: Option<(i64, TaskState)>, try_number: i64) -> LogTarget {
        match current {
            None => LogTarget::Unknown,
            Some((current, _)) if try_number < 1 || try_number > current => LogTarget::NoAttempt,
            Some((current, TaskState::Running)) if try_number == current => LogTarget::Open,
            Some(_) => LogTarget::Ended,
        }
    }
}

impl SqlStore {
    /// Stores the chunks whose attempt is running and drops the rest: the last chunks
    /// riding with a completion the batch refuses as stale, or naming no attempt, are
    /// not the attempt's to write (the execution API refuses unknown task instances
    /// before they get here; this keeps any other caller clear of the foreign key).
    pub(super) async fn log_append_open_in(
        &self,
        conn: &mut Conn<'_>,
        chunks: &[LogUpload],
        now: Micros,
    ) -> Result<(), StoreError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = chunks.iter().map(|chunk| chunk.task_instance_id).collect();
        let tries = self.tries_in(&mut *conn, &ids).await?;
        let open: Vec<&LogUpload> = chunks
            .iter()
            .filter(|chunk| {
                LogTarget::of(
                    tries.get(&chunk.task_instance_id).copied(),
                    chunk.try_number,
                ) == LogTarget::Open
            })
            .collect();
        self.log_append_in(&mut *conn, &open, now).await
    }

    /// Stores log chunks in one statement per 1,000 (5,000 bind variables: well under
    /// SQLite's limit), not one per chunk: every completion carries its attempt's last.
    pub(super) async fn log_append_in(
        &self,
        conn: &mut Conn<'_>,
        chunks: &[&LogUpload],
        now: Micros,
    ) -> Result<(), StoreError> {
        for chunk in chunks.chunks(1000) {
            let mut insert = QueryBuilder::new(
                "INSERT INTO task_logs (task_instance_id, try_number, seq, chunk, created_at) ",
            );
            insert.push_values(chunk, |mut values, upload| {
                values
                    .push_bind(upload.task_instance_id)
                    .push_bind(upload.try_number)
                    .push_bind(upload.seq)
                    .push_bind(upload.chunk.as_str())
                    .push_bind(now);
            });
            insert.push(" ON CONFLICT (task_instance_id, try_number, seq) DO NOTHING");
            insert.build().execute(&mut *conn).await?;
        }
        Ok(())
    }
}

pub(super) async fn log_append(
    store: &SqlStore,
    chunks: &[LogUpload],
    now: Micros,
) -> Result<(), StoreError> {
    if chunks.is_empty() {
        return Ok(());
    }
    let mut tx = store.pool.begin_write().await?;
    let ids: Vec<i64> = chunks.iter().map(|chunk| chunk.task_instance_id).collect();
    let tries = store.tries_in(&mut tx, &ids).await?;
    // All or nothing: a request naming an attempt that cannot take chunks stores none.
    for chunk in chunks {
        let (id, try_number) = (chunk.task_instance_id, chunk.try_number);
        let current = tries.get(&id).copied();
        match LogTarget::of(current, try_number) {
            LogTarget::Open => {}
            LogTarget::Unknown => return Err(StoreError::NotFound(format!("task instance {id}"))),
            LogTarget::NoAttempt => {
                return Err(StoreError::NotFound(format!(
                    "attempt {try_number} of task instance {id}"
                )));
            }
            LogTarget::Ended => {
                let (current_try, state) = current.unwrap_or((try_number, TaskState::Running));
                return Err(StoreError::Conflict(format!(
                    "attempt {try_number} of task instance {id} has ended (the task instance is {state}, on try {current_try}); it takes no more log chunks"
                )));
            }
        }
    }
    let chunks: Vec<&LogUpload> = chunks.iter().collect();
    store.log_append_in(&mut tx, &chunks, now).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn log_read(
    store: &SqlStore,
    task_instance_id: i64,
    try_number: i64,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<LogChunk>, StoreError> {
    let rows: Vec<(i64, String, i64)> = query_as(
        "SELECT seq, chunk, created_at FROM task_logs WHERE task_instance_id = $1 AND try_number = $2 AND seq > $3 \
         ORDER BY seq LIMIT $4",
    )
    .bind(task_instance_id)
    .bind(try_number)
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(seq, chunk, created_at)| LogChunk {
            seq,
            chunk,
            created_at,
        })
        .collect())
}
