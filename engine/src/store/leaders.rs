//! Leader election (`leaders`): one holder per name, renewed within a time to live.

use super::db::query_scalar;
use super::{Micros, SqlStore, StoreError, micros};

pub(super) async fn leader_attempt_elect(
    store: &SqlStore,
    name: &str,
    holder: &str,
    ttl: std::time::Duration,
    now: Micros,
) -> Result<bool, StoreError> {
    // Through the writer queue like every write, so a busy SQLite never leaves the
    // leader waiting out the busy handler's sleeps and losing its lease.
    let mut tx = store.pool.begin_write().await?;
    let leader: Option<String> = query_scalar(
        "INSERT INTO leaders (name, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leaders.holder = excluded.holder OR leaders.expires_at < $4 RETURNING holder",
    )
    .bind(name)
    .bind(holder)
    .bind(now + micros(ttl))
    .bind(now)
    .fetch_optional(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(leader.as_deref() == Some(holder))
}
