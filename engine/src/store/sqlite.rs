//! Opening SQLite, the embedded default. WAL mode with `synchronous = NORMAL` survives a killed
//! process without losing committed transactions; one writer at a time (`BEGIN IMMEDIATE`)
//! makes claims exclusive without row locks.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::db::Pool;
use super::{SqlStore, StoreError};

/// SQLite's schema, from `migrations/sqlite`.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

impl SqlStore {
    /// Opens (creating if needed) the database at a `sqlite://PATH` URL, without migrating.
    pub async fn connect_sqlite(url: &str) -> Result<SqlStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(SqlStore::new(Pool::Sqlite {
            pool,
            writer_turn: tokio::sync::Mutex::new(()),
        }))
    }
}
