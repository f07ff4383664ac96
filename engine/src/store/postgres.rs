//! The PostgreSQL backend, for production and for several schedulers on one database. Claims use
//! `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on or take the same row; a
//! transaction-scoped advisory lock per DAG keeps `max_active_runs` exact across schedulers.

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};

use super::shared::PlanCache;

static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// A [`Store`](super::Store) on a PostgreSQL database.
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    plans: PlanCache,
    /// Whether the MLflow mirror writes outbox events (see `Store::mlflow_set_enabled`).
    mlflow_enabled: std::sync::atomic::AtomicBool,
}

impl PostgresStore {
    const BACKEND: super::Backend = super::Backend::Postgres;
    const MIGRATOR: &'static Migrator = &POSTGRES_MIGRATOR;

    /// How many connections the pool opens at once, in the background, after the first.
    /// A burst of work needs several at the same moment (every waiting worker's claim, a
    /// completion, log uploads: six in the benchmarks), and opening one on demand costs tens of
    /// milliseconds on this machine (the TLS handshake's small writes meet delayed
    /// acknowledgements), which whatever needed it would wait for: a 100 ms step in a chain.
    const WARM_CONNECTIONS: usize = 8;

    /// The pool's settings. Every connection handed back is checked to be outside any
    /// transaction: a caller dropped while its `BEGIN` was on the wire (an HTTP client hanging
    /// up, a timeout) leaves the server in a transaction that sqlx does not know it opened, and
    /// the connection's next user would write inside it, where nothing commits its writes (or
    /// its `BEGIN` meets "there is already a transaction in progress"). Such a connection is
    /// closed, which rolls the transaction back, instead of going back to the pool.
    pub fn pool_options() -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(16)
            .after_release(|conn, _meta| {
                Box::pin(async move {
                    // `now()` is when the transaction began: the statement's own start only
                    // when the statement is a transaction of its own. A connection in a
                    // failed transaction errors here, and is closed too; as `Ok(false)`, not
                    // as an error, because sqlx's hard close after an error sometimes left
                    // the next `acquire` of a full pool waiting until it timed out.
                    // The simple protocol: one message, so inside no transaction of its own
                    // both times are the same instant (a prepared statement's Parse, Bind and
                    // Execute are not, and every connection would look stray).
                    let outside: bool = match sqlx::raw_sql("SELECT now() = statement_timestamp()")
                        .fetch_one(&mut *conn)
                        .await
                    {
                        Ok(row) => sqlx::Row::try_get(&row, 0).unwrap_or(false),
                        Err(_) => false,
                    };
                    if !outside {
                        tracing::warn!(
                            message = "A connection came back to the pool inside a transaction; closing it, which rolls the transaction back."
                        );
                    }
                    Ok(outside)
                })
            })
    }

    /// Connects to a `postgres://` URL.
    pub async fn connect(url: &str) -> Result<PostgresStore, super::StoreError> {
        let pool = Self::pool_options().connect(url).await?;
        // Opened concurrently (one handshake's time, not eight) and handed back to the pool at
        // once; a failure here only means the pool opens that connection later, on demand.
        let warm = pool.clone();
        tokio::spawn(async move {
            let opened =
                futures_util::future::join_all((0..Self::WARM_CONNECTIONS).map(|_| warm.acquire()))
                    .await;
            drop(opened);
        });
        Ok(PostgresStore {
            pool,
            plans: PlanCache::default(),
            mlflow_enabled: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    /// Serializes decisions about one DAG's runs (admission under `max_active_runs`, new
    /// versions) across every scheduler on this database, until the transaction ends.
    async fn lock_dag(conn: &mut PgConnection, dag_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(dag_id)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Locks runs' rows until the transaction ends, in ascending id order (the caller sorts).
    /// Every transaction that finishes tasks locks the runs involved first, so two of them
    /// touching the same runs serialize instead of deadlocking on the task rows in between.
    /// `NO KEY UPDATE` is enough to exclude each other and does not block the foreign-key
    /// checks of rows inserted for the run (attempts, logs).
    async fn lock_runs(conn: &mut PgConnection, run_ids: &[i64]) -> Result<(), sqlx::Error> {
        if run_ids.is_empty() {
            return Ok(());
        }
        sqlx::query("SELECT id FROM runs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
            .bind(run_ids)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn migrations_table_exists(&self) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations')",
        )
        .fetch_one(&self.pool)
        .await
    }

    async fn claim_rows(
        conn: &mut PgConnection,
        params: &super::ClaimParams,
        lease_expires_at: super::Micros,
    ) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
        sqlx::query(
            "WITH picked AS ( \
               SELECT id FROM task_instances WHERE state = 'queued' AND queue = ANY($4) \
               ORDER BY priority DESC, id LIMIT $5 FOR UPDATE SKIP LOCKED) \
             UPDATE task_instances t SET state = 'running', try_number = t.try_number + 1, fence = t.fence + 1, \
               worker_id = $1, lease_expires_at = $2, started_at = $3, \
               timeout_at = CASE WHEN t.timeout_micros IS NULL THEN NULL ELSE $3 + t.timeout_micros END, \
               ended_at = NULL, error = NULL \
             FROM picked WHERE t.id = picked.id \
             RETURNING t.id, t.run_id, t.task_id, t.try_number, t.fence, t.timeout_at",
        )
        .bind(&params.worker_id)
        .bind(lease_expires_at)
        .bind(params.now)
        .bind(&params.queues)
        .bind(i64::from(params.limit))
        .fetch_all(conn)
        .await
    }
}

shared_store!(PostgresStore, sqlx::Postgres);
