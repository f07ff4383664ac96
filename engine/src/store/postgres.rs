//! Connecting to PostgreSQL, for production and for several schedulers on one database.

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use super::db::Pool;
use super::{SqlStore, StoreError};

/// PostgreSQL's schema, from `migrations/postgres`.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// How many connections the pool opens at once, in the background, after the first. A burst
/// of work needs several at the same moment (every waiting worker's claim, a completion, log
/// uploads: six in the benchmarks), and opening one on demand costs tens of milliseconds on this
/// machine (the TLS handshake's small writes meet delayed acknowledgements), which whatever
/// needed it would wait for: a 100 ms step in a chain.
const WARM_CONNECTIONS: usize = 8;

/// The pool's settings. Every connection handed back is checked to be outside any
/// transaction: a caller dropped while its `BEGIN` was on the wire (an HTTP client hanging up,
/// a timeout) leaves the server in a transaction that sqlx does not know it opened, and the
/// connection's next user would write inside it, where nothing commits its writes (or its
/// `BEGIN` meets "there is already a transaction in progress"). Such a connection is closed,
/// which rolls the transaction back, instead of going back to the pool.
pub fn postgres_pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(16)
        .after_release(|conn, _meta| {
            Box::pin(async move {
                // `now()` is when the transaction began: the statement's own start only when
                // the statement is a transaction of its own. A connection in a failed
                // transaction errors here, and is closed too; as `Ok(false)`, not as an error,
                // because sqlx's hard close after an error sometimes left the next `acquire` of
                // a full pool waiting until it timed out. The simple protocol: one message, so
                // inside no transaction of its own both times are the same instant (a prepared
                // statement's Parse, Bind and Execute are not, and every connection would look
                // stray).
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

impl SqlStore {
    /// Connects to a `postgres://` URL, without migrating.
    pub async fn connect_postgres(url: &str) -> Result<SqlStore, StoreError> {
        let pool = postgres_pool_options().connect(url).await?;
        // Opened concurrently (one handshake's time, not eight) and handed back to the pool at
        // once; a failure here only means the pool opens that connection later, on demand.
        let warm = pool.clone();
        tokio::spawn(async move {
            let opened =
                futures_util::future::join_all((0..WARM_CONNECTIONS).map(|_| warm.acquire())).await;
            drop(opened);
        });
        Ok(SqlStore::new(Pool::Postgres(pool)))
    }
}
