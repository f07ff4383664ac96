//! DAGs, their versions and their files' load errors (`dags`, `dag_versions`, `dag_file_errors`),
//! and the cache of parsed versions.

use super::db::{Conn, Row, query, query_as, query_scalar};
use super::{Backend, DagPlan, Micros, SqlStore, StoreError};
use crate::dag::Dag;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A DAG as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagRecord {
    /// The DAG id.
    pub id: String,
    /// The id of the active DAG version.
    pub current_version_id: i64,
    /// The active version's number (1, 2, …).
    pub current_version: i64,
    /// Paused DAGs get no scheduled runs, and their queued runs wait.
    pub paused: bool,
    /// SHA-256 of the active version's file.
    pub source_hash: String,
    /// Where the file was read from.
    pub file_path: String,
    /// The logical date of the newest scheduled run.
    pub last_scheduled_at: Option<Micros>,
    /// When the DAG was last changed.
    pub updated_at: Micros,
}

/// A DAG file whose newest content did not load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagFileErrorRecord {
    /// The file.
    pub file_path: String,
    /// The DAG it declares, when that much could be read.
    pub dag_id: Option<String>,
    /// Every problem, one per line.
    pub errors: String,
    /// When it was recorded.
    pub updated_at: Micros,
}

/// One stored version of a DAG file, as the console lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DagVersionRecord {
    /// The version's id (what runs refer to).
    pub id: i64,
    /// Its number within the DAG (1, 2, …).
    pub version: i64,
    /// SHA-256 of the file it was loaded from.
    pub source_hash: String,
    /// When it was loaded.
    pub created_at: Micros,
}

/// Serializes decisions about one DAG's runs (admission under `max_active_runs`, new versions)
/// across every scheduler on this database, until the transaction ends. SQLite has one writer at
/// a time, so a write transaction already excludes every other.
pub(super) async fn lock_dag(conn: &mut Conn<'_>, dag_id: &str) -> Result<(), sqlx::Error> {
    if conn.backend() == Backend::Postgres {
        query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(dag_id)
            .execute(conn)
            .await?;
    }
    Ok(())
}

macro_rules! dag_columns {
    () => {
        "d.id, d.current_version_id, v.version, d.paused, d.source_hash, d.file_path, d.last_scheduled_at, d.updated_at"
    };
}

/// Parsed DAG versions by id. Versions are immutable, so entries never go stale.
#[derive(Debug, Default)]
pub(crate) struct PlanCache(Mutex<HashMap<i64, Arc<DagPlan>>>);

impl PlanCache {
    pub(crate) fn get(&self, version_id: i64) -> Option<Arc<DagPlan>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&version_id)
            .cloned()
    }

    pub(crate) fn insert(&self, plan: DagPlan) -> Arc<DagPlan> {
        let plan = Arc::new(plan);
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(plan.version_id, plan.clone());
        plan
    }
}

pub(super) fn dag_from_row(row: &Row) -> Result<DagRecord, StoreError> {
    Ok(DagRecord {
        id: row.try_get("id")?,
        current_version_id: row.try_get("current_version_id")?,
        current_version: row.try_get("version")?,
        paused: row.try_get("paused")?,
        source_hash: row.try_get("source_hash")?,
        file_path: row.try_get("file_path")?,
        last_scheduled_at: row.try_get("last_scheduled_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl SqlStore {
    pub(super) async fn plan_in(
        &self,
        conn: &mut Conn<'_>,
        version_id: i64,
    ) -> Result<Arc<DagPlan>, StoreError> {
        if let Some(plan) = self.plans.get(version_id) {
            return Ok(plan);
        }
        let definition: Option<String> =
            query_scalar("SELECT definition FROM dag_versions WHERE id = $1")
                .bind(version_id)
                .fetch_optional(&mut *conn)
                .await?;
        let definition =
            definition.ok_or_else(|| StoreError::NotFound(format!("DAG version {version_id}")))?;
        let dag: Dag = serde_json::from_str(&definition)
            .map_err(|source| StoreError::CorruptDefinition { version_id, source })?;
        Ok(self.plans.insert(DagPlan::new(version_id, dag)))
    }

    pub(super) async fn dag_in(
        &self,
        conn: &mut Conn<'_>,
        dag_id: &str,
    ) -> Result<Option<DagRecord>, StoreError> {
        let row = query(concat!(
            "SELECT ",
            dag_columns!(),
            " FROM dags d JOIN dag_versions v ON v.id = d.current_version_id WHERE d.id = $1"
        ))
        .bind(dag_id)
        .fetch_optional(&mut *conn)
        .await?;
        row.as_ref().map(dag_from_row).transpose()
    }
}

pub(super) async fn dag_sync(
    store: &SqlStore,
    loaded: &crate::dag::LoadedDag,
    now: Micros,
) -> Result<DagRecord, StoreError> {
    let dag_id = loaded.dag.id.as_str();
    let file_path = loaded.path.display().to_string();
    let mut tx = store.pool.begin_write().await?;
    query(
        "INSERT INTO dags (id, paused, source_hash, file_path, created_at, updated_at) \
         VALUES ($1, FALSE, '', $2, $3, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(dag_id)
    .bind(&file_path)
    .bind(now)
    .execute(&mut tx)
    .await?;
    lock_dag(&mut tx, dag_id).await?;
    let current: Option<(Option<i64>, String, String)> =
        query_as("SELECT current_version_id, source_hash, file_path FROM dags WHERE id = $1")
            .bind(dag_id)
            .fetch_optional(&mut tx)
            .await?;
    let unchanged = matches!(&current, Some((Some(_), hash, _)) if *hash == loaded.source_hash);
    if !unchanged {
        let next_version: i64 = query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM dag_versions WHERE dag_id = $1",
        )
        .bind(dag_id)
        .fetch_one(&mut tx)
        .await?;
        let definition = serde_json::to_string(&loaded.dag).map_err(|error| {
            StoreError::Corrupt(format!("DAG `{dag_id}` does not serialize: {error}"))
        })?;
        let version_id: i64 = query_scalar(
            "INSERT INTO dag_versions (dag_id, version, source_hash, source, definition, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(dag_id)
        .bind(next_version)
        .bind(&loaded.source_hash)
        .bind(&loaded.source)
        .bind(definition)
        .bind(now)
        .fetch_one(&mut tx)
        .await?;
        query("UPDATE dags SET current_version_id = $1, source_hash = $2, file_path = $3, updated_at = $4 WHERE id = $5")
            .bind(version_id)
            .bind(&loaded.source_hash)
            .bind(&file_path)
            .bind(now)
            .bind(dag_id)
            .execute(&mut tx)
            .await?;
    } else if current
        .as_ref()
        .is_some_and(|(_, _, path)| *path != file_path)
    {
        query("UPDATE dags SET file_path = $1, updated_at = $2 WHERE id = $3")
            .bind(&file_path)
            .bind(now)
            .bind(dag_id)
            .execute(&mut tx)
            .await?;
    }
    query("DELETE FROM dag_file_errors WHERE file_path = $1")
        .bind(&file_path)
        .execute(&mut tx)
        .await?;
    let record = store.dag_in(&mut tx, dag_id).await?;
    tx.commit().await?;
    record.ok_or_else(|| StoreError::NotFound(format!("DAG `{dag_id}`")))
}

pub(super) async fn dag_file_error_set(
    store: &SqlStore,
    file_path: &str,
    dag_id: Option<&str>,
    errors: &str,
    now: Micros,
) -> Result<(), StoreError> {
    let mut tx = store.pool.begin_write().await?;
    query(
        "INSERT INTO dag_file_errors (file_path, dag_id, errors, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (file_path) DO UPDATE SET dag_id = excluded.dag_id, errors = excluded.errors, updated_at = excluded.updated_at",
    )
    .bind(file_path)
    .bind(dag_id)
    .bind(errors)
    .bind(now)
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn dag_file_error_list(
    store: &SqlStore,
) -> Result<Vec<DagFileErrorRecord>, StoreError> {
    let rows: Vec<(String, Option<String>, String, i64)> = query_as(
        "SELECT file_path, dag_id, errors, updated_at FROM dag_file_errors ORDER BY file_path",
    )
    .fetch_all(&store.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(file_path, dag_id, errors, updated_at)| DagFileErrorRecord {
                file_path,
                dag_id,
                errors,
                updated_at,
            },
        )
        .collect())
}

pub(super) async fn dag_list(store: &SqlStore) -> Result<Vec<DagRecord>, StoreError> {
    let rows = query(concat!(
        "SELECT ",
        dag_columns!(),
        " FROM dags d JOIN dag_versions v ON v.id = d.current_version_id ORDER BY d.id"
    ))
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(dag_from_row).collect()
}

pub(super) async fn dag_get(
    store: &SqlStore,
    dag_id: &str,
) -> Result<Option<DagRecord>, StoreError> {
    let mut conn = store.pool.acquire().await?;
    store.dag_in(&mut conn, dag_id).await
}

pub(super) async fn dag_set_paused(
    store: &SqlStore,
    dag_id: &str,
    paused: bool,
    now: Micros,
) -> Result<(), StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let updated = query("UPDATE dags SET paused = $1, updated_at = $2 WHERE id = $3")
        .bind(paused)
        .bind(now)
        .bind(dag_id)
        .execute(&mut tx)
        .await?;
    if updated == 0 {
        return Err(StoreError::NotFound(format!("DAG `{dag_id}`")));
    }
    if !paused {
        store.start_queued_in(&mut tx, Some(dag_id), now).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn dag_version_get(
    store: &SqlStore,
    version_id: i64,
) -> Result<Arc<DagPlan>, StoreError> {
    if let Some(plan) = store.plans.get(version_id) {
        return Ok(plan);
    }
    let mut conn = store.pool.acquire().await?;
    store.plan_in(&mut conn, version_id).await
}

pub(super) async fn dag_set_last_scheduled(
    store: &SqlStore,
    dag_id: &str,
    logical_date: Micros,
) -> Result<(), StoreError> {
    let mut tx = store.pool.begin_write().await?;
    query(
        "UPDATE dags SET last_scheduled_at = $1 WHERE id = $2 AND (last_scheduled_at IS NULL OR last_scheduled_at < $1)",
    )
    .bind(logical_date)
    .bind(dag_id)
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn dag_version_list(
    store: &SqlStore,
    dag_id: &str,
) -> Result<Vec<DagVersionRecord>, StoreError> {
    let rows: Vec<(i64, i64, String, i64)> = query_as(
        "SELECT id, version, source_hash, created_at FROM dag_versions WHERE dag_id = $1 ORDER BY version DESC",
    )
    .bind(dag_id)
    .fetch_all(&store.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, version, source_hash, created_at)| DagVersionRecord {
            id,
            version,
            source_hash,
            created_at,
        })
        .collect())
}

pub(super) async fn dag_version_get_source(
    store: &SqlStore,
    version_id: i64,
) -> Result<Option<String>, StoreError> {
    Ok(
        query_scalar("SELECT source FROM dag_versions WHERE id = $1")
            .bind(version_id)
            .fetch_optional(&store.pool)
            .await?,
    )
}
