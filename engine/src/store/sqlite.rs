//! The SQLite backend: the embedded default. WAL mode with `synchronous = NORMAL` survives a
//! killed process without losing committed transactions; one writer at a time (`BEGIN
//! IMMEDIATE`) makes claims exclusive without row locks.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::time::Duration as StdDuration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};

use super::shared::PlanCache;

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// A [`Store`](super::Store) on a SQLite database file.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    plans: PlanCache,
    /// Whether the MLflow mirror writes outbox events (see `Store::mlflow_set_enabled`).
    mlflow_enabled: std::sync::atomic::AtomicBool,
    /// Write transactions of this process take turns here before `BEGIN IMMEDIATE`. SQLite's own
    /// busy handler makes a waiting writer sleep for 1 to 100 ms between tries; queueing
    /// in-process hands the lock over the moment it is free.
    writer_turn: tokio::sync::Mutex<()>,
}

/// A write transaction holding this process's writer turn until it commits or drops.
pub(crate) struct WriteTransaction<'a> {
    // Declared first so the transaction ends (rolls back, if not committed) before the turn is
    // handed on.
    transaction: sqlx::Transaction<'static, sqlx::Sqlite>,
    _turn: tokio::sync::MutexGuard<'a, ()>,
}

impl WriteTransaction<'_> {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.transaction.commit().await
    }
}

impl Deref for WriteTransaction<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.transaction
    }
}

impl DerefMut for WriteTransaction<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.transaction
    }
}

impl SqliteStore {
    const BACKEND: super::Backend = super::Backend::Sqlite;
    const MIGRATOR: &'static Migrator = &SQLITE_MIGRATOR;

    /// Opens (creating if needed) the database at a `sqlite://PATH` URL.
    pub async fn connect(url: &str) -> Result<SqliteStore, super::StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(StdDuration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(SqliteStore {
            pool,
            plans: PlanCache::default(),
            mlflow_enabled: std::sync::atomic::AtomicBool::new(false),
            writer_turn: tokio::sync::Mutex::new(()),
        })
    }

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Takes the write lock up front: a deferred transaction that later upgrades to a writer can
    /// fail with `SQLITE_BUSY` without waiting, while `BEGIN IMMEDIATE` waits its turn (other
    /// processes on the same file still meet SQLite's busy timeout).
    async fn begin_write(&self) -> Result<WriteTransaction<'_>, sqlx::Error> {
        let turn = self.writer_turn.lock().await;
        let transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTransaction {
            transaction,
            _turn: turn,
        })
    }

    /// SQLite has one writer at a time, so a write transaction already excludes every other.
    async fn lock_dag(_conn: &mut SqliteConnection, _dag_id: &str) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// Nothing to lock: the write transaction already excludes every other.
    async fn lock_runs(_conn: &mut SqliteConnection, _run_ids: &[i64]) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn migrations_table_exists(&self) -> Result<bool, sqlx::Error> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(count > 0)
    }

    async fn claim_rows(
        conn: &mut SqliteConnection,
        params: &super::ClaimParams,
        lease_expires_at: super::Micros,
    ) -> Result<Vec<sqlx::sqlite::SqliteRow>, sqlx::Error> {
        let queues = serde_json::Value::from(params.queues.clone()).to_string();
        sqlx::query(
            "UPDATE task_instances SET state = 'running', try_number = try_number + 1, fence = fence + 1, \
             worker_id = $1, lease_expires_at = $2, started_at = $3, \
             timeout_at = CASE WHEN timeout_micros IS NULL THEN NULL ELSE $3 + timeout_micros END, \
             ended_at = NULL, error = NULL \
             WHERE id IN (SELECT id FROM task_instances WHERE state = 'queued' \
                          AND queue IN (SELECT value FROM json_each($4)) ORDER BY priority DESC, id LIMIT $5) \
             RETURNING id, run_id, task_id, try_number, fence, timeout_at",
        )
        .bind(&params.worker_id)
        .bind(lease_expires_at)
        .bind(params.now)
        .bind(queues)
        .bind(i64::from(params.limit))
        .fetch_all(conn)
        .await
    }
}

shared_store!(SqliteStore, sqlx::Sqlite);
