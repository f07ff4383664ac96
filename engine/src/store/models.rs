//! The model registry's aliases (`model_aliases`, `model_alias_events`).

use super::artifacts::version_columns;
use super::artifacts::version_from;
use super::artifacts::version_from_row;
use super::db::{Conn, query, query_scalar};
use super::{
    ArtifactVersionRecord, Micros, OutboxAliasSet, OutboxEvent, SqlStore, StoreError, parse_state,
};
use crate::dag::ModelAlias;
use serde::{Deserialize, Serialize};

/// A model in the registry: a model artifact and where its aliases point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The model's name.
    pub name: String,
    /// Its newest version.
    pub latest_version: i64,
    /// The version served, if any.
    pub production: Option<i64>,
    /// The version being tried, if any.
    pub staging: Option<i64>,
    /// When a version was last published or an alias moved.
    pub updated_at: Micros,
}

/// One move of a registry alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasEvent {
    /// The model.
    pub name: String,
    /// The alias moved.
    pub alias: ModelAlias,
    /// The version it points at since.
    pub version: i64,
    /// The version it pointed at before, if any.
    pub previous: Option<i64>,
    /// Why: the deploying run and task, a promotion by hand, a rollback.
    pub reason: String,
    /// When.
    pub created_at: Micros,
}

impl SqlStore {
    /// Points an alias at a version of a model and records the move; answers the
    /// version it pointed at before.
    pub(super) async fn alias_set_in(
        &self,
        conn: &mut Conn<'_>,
        name: &str,
        alias: crate::dag::ModelAlias,
        version: i64,
        reason: &str,
        now: Micros,
    ) -> Result<Option<i64>, StoreError> {
        let kind: Option<String> = query_scalar(
            "SELECT a.kind FROM artifacts a JOIN artifact_versions av ON av.name = a.name WHERE a.name = $1 AND av.version = $2",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *conn)
        .await?;
        match kind.as_deref() {
            None => {
                return Err(StoreError::NotFound(format!(
                    "model `{name}` version {version}"
                )));
            }
            Some("model") => {}
            Some(other) => {
                return Err(StoreError::Conflict(format!(
                    "artifact `{name}` is a {other}, not a model"
                )));
            }
        }
        let previous: Option<i64> =
            query_scalar("SELECT version FROM model_aliases WHERE name = $1 AND alias = $2")
                .bind(name)
                .bind(alias.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        if previous == Some(version) {
            return Ok(previous);
        }
        query(
            "INSERT INTO model_aliases (name, alias, version, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(alias.as_str())
        .bind(version)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        query(
            "INSERT INTO model_alias_events (name, alias, version, previous, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(name)
        .bind(alias.as_str())
        .bind(version)
        .bind(previous)
        .bind(reason)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        query("UPDATE artifacts SET updated_at = $2 WHERE name = $1")
            .bind(name)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        if self.tracking().is_some() {
            let moved = OutboxAliasSet {
                name: name.to_owned(),
                alias: alias.as_str().to_owned(),
                version,
                previous,
                reason: reason.to_owned(),
            };
            self.outbox_append_in(&mut *conn, &OutboxEvent::AliasSet(moved), now)
                .await?;
        }
        Ok(previous)
    }
}

pub(super) async fn model_list(store: &SqlStore) -> Result<Vec<ModelRecord>, StoreError> {
    let rows = query(
        "SELECT a.name, a.latest_version, a.updated_at, \
         (SELECT version FROM model_aliases m WHERE m.name = a.name AND m.alias = 'production') AS production, \
         (SELECT version FROM model_aliases m WHERE m.name = a.name AND m.alias = 'staging') AS staging \
         FROM artifacts a WHERE a.kind = 'model' AND a.latest_version > 0 ORDER BY a.name",
    )
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ModelRecord {
                name: row.try_get("name")?,
                latest_version: row.try_get("latest_version")?,
                production: row.try_get("production")?,
                staging: row.try_get("staging")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .collect()
}

pub(super) async fn model_alias_get(
    store: &SqlStore,
    name: &str,
    alias: crate::dag::ModelAlias,
) -> Result<Option<ArtifactVersionRecord>, StoreError> {
    let row = query(concat!(
        "SELECT ",
        version_columns!(),
        version_from!(),
        "JOIN model_aliases m ON m.name = av.name AND m.version = av.version WHERE m.name = $1 AND m.alias = $2"
    ))
    .bind(name)
    .bind(alias.as_str())
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(version_from_row).transpose()
}

pub(super) async fn model_alias_set(
    store: &SqlStore,
    name: &str,
    alias: crate::dag::ModelAlias,
    version: i64,
    reason: &str,
    now: Micros,
) -> Result<Option<i64>, StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let previous = store
        .alias_set_in(&mut tx, name, alias, version, reason, now)
        .await?;
    tx.commit().await?;
    Ok(previous)
}

pub(super) async fn model_alias_rollback(
    store: &SqlStore,
    name: &str,
    alias: crate::dag::ModelAlias,
    now: Micros,
) -> Result<(i64, i64), StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let current: Option<i64> =
        query_scalar("SELECT version FROM model_aliases WHERE name = $1 AND alias = $2")
            .bind(name)
            .bind(alias.as_str())
            .fetch_optional(&mut tx)
            .await?;
    let Some(current) = current else {
        return Err(StoreError::NotFound(format!(
            "model `{name}` with a {} version",
            alias.as_str()
        )));
    };
    // The newest version older than the current one that ever held the alias: a
    // history v1 → v2 → v3 rolls back to v2, then to v1.
    let previous: Option<i64> = query_scalar(
        "SELECT MAX(version) FROM model_alias_events WHERE name = $1 AND alias = $2 AND version < $3",
    )
    .bind(name)
    .bind(alias.as_str())
    .bind(current)
    .fetch_one(&mut tx)
    .await?;
    let Some(target) = previous else {
        return Err(StoreError::Conflict(format!(
            "model `{name}` has had no other {} version to roll back to",
            alias.as_str()
        )));
    };
    let reason = format!("rolled back from version {current}");
    store
        .alias_set_in(&mut tx, name, alias, target, &reason, now)
        .await?;
    tx.commit().await?;
    Ok((current, target))
}

pub(super) async fn model_alias_event_list(
    store: &SqlStore,
    name: &str,
) -> Result<Vec<AliasEvent>, StoreError> {
    let rows = query(
        "SELECT name, alias, version, previous, reason, created_at FROM model_alias_events WHERE name = $1 ORDER BY id",
    )
    .bind(name)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AliasEvent {
                name: row.try_get("name")?,
                alias: parse_state(&row.try_get::<String>("alias")?)?,
                version: row.try_get("version")?,
                previous: row.try_get("previous")?,
                reason: row.try_get("reason")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect()
}
