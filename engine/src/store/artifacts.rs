//! Artifacts and their versions (`artifacts`, `artifact_versions`): publishing, reading, the cache
//! lookup and the blobs in use.

use super::db::{Conn, Row, query, query_as, query_scalar};
use super::lineage::attempt_ref_from_row;
use super::{
    AttemptRef, Micros, OutputContent, ProducedOutput, ResolvedInput, SqlStore, StoreError,
    parse_json, parse_state,
};
use crate::artifacts::BlobRef;
use crate::dag::{ArtifactKind, OutputSpec};
use serde::{Deserialize, Serialize};

/// A published artifact name and its newest version number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// The name versions are published under (`wine_raw`, `wine_quality`, `dag.task.output`).
    pub name: String,
    /// What the artifact is; a name keeps one kind for life.
    pub kind: ArtifactKind,
    /// The newest version number (versions count from 1).
    pub latest_version: i64,
    /// When the first version was published.
    pub created_at: Micros,
    /// When the newest version was published or reused.
    pub updated_at: Micros,
}

/// One column of a dataset version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// The column's name.
    pub name: String,
    /// Its type, in the writer's words (`Float64`, `String`, …).
    pub dtype: String,
}

/// The shape of a dataset version, when its writer knew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetStats {
    /// The columns, in order.
    pub columns: Vec<ColumnSchema>,
    /// The number of rows.
    pub rows: u64,
}

/// An immutable version of an artifact: a blob, with what kiln knows about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactVersionRecord {
    /// The version's id in the store (unique across all names).
    pub id: i64,
    /// The artifact's name.
    pub name: String,
    /// The artifact's kind.
    pub kind: ArtifactKind,
    /// The version number within the name, from 1.
    pub version: i64,
    /// The bytes: their digest (where they are stored) and size.
    pub blob: BlobRef,
    /// The bytes' media type (`text/csv`, `application/vnd.apache.parquet`, …).
    pub media_type: String,
    /// The attempt that first wrote these bytes under this name; `None` when put by hand.
    pub producer: Option<AttemptRef>,
    /// For datasets, their columns and row count when the writer reported them.
    pub dataset: Option<DatasetStats>,
    /// What the writer said about the version (a model's metrics, say).
    pub metadata: Option<serde_json::Value>,
    /// When the version was published.
    pub created_at: Micros,
}

impl ArtifactVersionRecord {
    /// `name@version`, the way the CLI and the console name a version.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// A successful attempt's cache entry: its key, and for a cache hit the attempt reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The digest of the task's plugin kind and version, params and exact input versions.
    pub key: String,
    /// For a cache hit, the attempt (its store id) whose outputs were reused.
    pub hit_of: Option<i64>,
}

/// An earlier successful attempt whose outputs a cacheable task may reuse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheHit {
    /// The attempt's store id.
    pub attempt_id: i64,
    /// Which attempt it was.
    pub attempt: AttemptRef,
    /// Its outputs, by slot.
    pub outputs: Vec<ResolvedInput>,
    /// Its summary: the figures it reported (a model's metrics, say) hold for the attempt that
    /// reuses its outputs too.
    pub summary: Option<serde_json::Value>,
}

/// A version to publish: by hand (`kiln artifacts put`), or for an attempt's output.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishParams {
    /// The name to publish under.
    pub name: String,
    /// The artifact's kind.
    pub kind: ArtifactKind,
    /// The stored blob.
    pub blob: BlobRef,
    /// Its media type.
    pub media_type: String,
    /// For datasets, their shape when known.
    pub dataset: Option<DatasetStats>,
    /// What the writer said about the version.
    pub metadata: Option<serde_json::Value>,
}

/// A version with its kind and producer: select these `FROM` [`version_from!`].
macro_rules! version_columns {
    () => {
        "av.id, av.name, a.kind, av.version, av.sha256, av.size, av.media_type, av.task_instance_id, av.try_number, \
         av.dataset_schema, av.row_count, av.metadata, av.created_at, pti.run_id AS producer_run_id, pti.task_id AS producer_task_id, \
         pr.dag_id AS producer_dag_id"
    };
}

pub(super) use version_columns;

macro_rules! version_from {
    () => {
        " FROM artifact_versions av JOIN artifacts a ON a.name = av.name \
         LEFT JOIN task_instances pti ON pti.id = av.task_instance_id LEFT JOIN runs pr ON pr.id = pti.run_id "
    };
}

pub(super) use version_from;

pub(super) fn version_from_row(row: &Row) -> Result<ArtifactVersionRecord, StoreError> {
    let sha256: String = row.try_get("sha256")?;
    let size: i64 = row.try_get("size")?;
    let task_instance_id: Option<i64> = row.try_get("task_instance_id")?;
    let producer = match task_instance_id {
        Some(task_instance_id) => Some(AttemptRef {
            task_instance_id,
            try_number: row.try_get::<Option<i64>>("try_number")?.unwrap_or(0),
            run_id: row.try_get::<Option<i64>>("producer_run_id")?.unwrap_or(0),
            dag_id: row
                .try_get::<Option<String>>("producer_dag_id")?
                .unwrap_or_default(),
            task_id: row
                .try_get::<Option<String>>("producer_task_id")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    let schema: Option<String> = row.try_get("dataset_schema")?;
    let row_count: Option<i64> = row.try_get("row_count")?;
    let dataset = match (schema, row_count) {
        (Some(schema), Some(rows)) => Some(DatasetStats {
            columns: serde_json::from_str(&schema)
                .map_err(|error| StoreError::Corrupt(format!("stored dataset schema: {error}")))?,
            rows: u64::try_from(rows).unwrap_or(0),
        }),
        _ => None,
    };
    Ok(ArtifactVersionRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: parse_state(&row.try_get::<String>("kind")?)?,
        version: row.try_get("version")?,
        blob: crate::artifacts::BlobRef {
            sha256: sha256
                .parse()
                .map_err(|error| StoreError::Corrupt(format!("stored digest: {error}")))?,
            size: u64::try_from(size)
                .map_err(|_| StoreError::Corrupt(format!("stored size {size}")))?,
        },
        media_type: row.try_get("media_type")?,
        producer,
        dataset,
        metadata: row
            .try_get::<Option<String>>("metadata")?
            .as_deref()
            .map(parse_json)
            .transpose()?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn artifact_from_row(row: &Row) -> Result<ArtifactRecord, StoreError> {
    Ok(ArtifactRecord {
        name: row.try_get("name")?,
        kind: parse_state(&row.try_get::<String>("kind")?)?,
        latest_version: row.try_get("latest_version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl SqlStore {
    pub(super) async fn version_by_id_in(
        &self,
        conn: &mut Conn<'_>,
        id: i64,
    ) -> Result<Option<ArtifactVersionRecord>, StoreError> {
        let row = query(concat!(
            "SELECT ",
            version_columns!(),
            version_from!(),
            "WHERE av.id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// Publishes bytes under a name: a new version, or the newest one again when its
    /// bytes are identical. Answers the version id and whether it was reused. The
    /// artifact row is updated first, which serializes publishers of one name.
    pub(super) async fn publish_in(
        &self,
        conn: &mut Conn<'_>,
        publish: &PublishParams,
        producer: Option<(i64, i64)>,
        now: Micros,
    ) -> Result<(i64, bool), StoreError> {
        let PublishParams {
            name,
            kind,
            blob,
            media_type,
            dataset,
            metadata,
        } = publish;
        let kind = *kind;
        let dataset = dataset.as_ref();
        query(
            "INSERT INTO artifacts (name, kind, latest_version, created_at, updated_at) VALUES ($1, $2, 0, $3, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(kind.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await?;
        let (stored_kind, latest): (String, i64) = query_as(
            "UPDATE artifacts SET updated_at = $2 WHERE name = $1 RETURNING kind, latest_version",
        )
        .bind(name)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
        if stored_kind != kind.as_str() {
            return Err(StoreError::Conflict(format!(
                "artifact `{name}` is a {stored_kind}; a {} cannot be published under the same name",
                kind.as_str()
            )));
        }
        let digest = blob.sha256.to_hex();
        if latest > 0 {
            let newest: Option<(i64, String)> = query_as(
                "SELECT id, sha256 FROM artifact_versions WHERE name = $1 AND version = $2",
            )
            .bind(name)
            .bind(latest)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some((id, sha256)) = newest
                && sha256 == digest
            {
                return Ok((id, true));
            }
        }
        let schema = match dataset {
            Some(stats) => Some(
                serde_json::to_string(&stats.columns)
                    .map_err(|error| StoreError::Corrupt(format!("dataset schema: {error}")))?,
            ),
            None => None,
        };
        let id: i64 = query_scalar(
            "INSERT INTO artifact_versions (name, version, sha256, size, media_type, task_instance_id, try_number, \
             dataset_schema, row_count, created_at, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(name)
        .bind(latest + 1)
        .bind(&digest)
        .bind(i64::try_from(blob.size).unwrap_or(i64::MAX))
        .bind(media_type)
        .bind(producer.map(|(task_instance_id, _)| task_instance_id))
        .bind(producer.map(|(_, try_number)| try_number))
        .bind(schema)
        .bind(dataset.map(|stats| i64::try_from(stats.rows).unwrap_or(i64::MAX)))
        .bind(now)
        .bind(metadata.as_ref().map(|value| value.to_string()))
        .fetch_one(&mut *conn)
        .await?;
        query("UPDATE artifacts SET latest_version = $2 WHERE name = $1")
            .bind(name)
            .bind(latest + 1)
            .execute(&mut *conn)
            .await?;
        Ok((id, false))
    }

    /// Checks a successful attempt's outputs against the task's declaration before
    /// anything is written: every declared output reported once, nothing else, no name
    /// already taken by another kind, every reused version present.
    pub(super) async fn check_outputs_in(
        &self,
        conn: &mut Conn<'_>,
        dag_id: &str,
        task_id: &str,
        declared: &[OutputSpec],
        outputs: &[ProducedOutput],
    ) -> Result<Result<(), String>, StoreError> {
        for output in outputs {
            if !declared.iter().any(|spec| spec.name == output.slot) {
                return Ok(Err(format!(
                    "the task reported output `{}`, which it does not declare",
                    output.slot
                )));
            }
            if outputs
                .iter()
                .filter(|other| other.slot == output.slot)
                .count()
                > 1
            {
                return Ok(Err(format!(
                    "the task reported output `{}` twice",
                    output.slot
                )));
            }
        }
        for spec in declared {
            let Some(output) = outputs.iter().find(|output| output.slot == spec.name) else {
                return Ok(Err(format!(
                    "the task did not write its declared output `{}`",
                    spec.name
                )));
            };
            let name = spec.artifact_name(dag_id, task_id);
            let kind: Option<String> = query_scalar("SELECT kind FROM artifacts WHERE name = $1")
                .bind(&name)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(kind) = kind
                && kind != spec.kind.as_str()
            {
                return Ok(Err(format!(
                    "output `{}`: artifact `{name}` is a {kind}; a {} cannot be published under the same name",
                    spec.name,
                    spec.kind.as_str()
                )));
            }
            if let OutputContent::Reused {
                artifact_version_id,
            } = &output.content
            {
                let exists: Option<i64> =
                    query_scalar("SELECT id FROM artifact_versions WHERE id = $1")
                        .bind(*artifact_version_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                if exists.is_none() {
                    return Ok(Err(format!(
                        "output `{}` reuses artifact version {artifact_version_id}, which does not exist",
                        spec.name
                    )));
                }
            }
        }
        Ok(Ok(()))
    }
}

pub(super) async fn artifact_list(
    store: &SqlStore,
    kind: Option<ArtifactKind>,
) -> Result<Vec<ArtifactRecord>, StoreError> {
    let rows = query(
        "SELECT name, kind, latest_version, created_at, updated_at FROM artifacts \
         WHERE latest_version > 0 AND ($1 IS NULL OR kind = $1) ORDER BY name",
    )
    .bind(kind.map(ArtifactKind::as_str))
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(artifact_from_row).collect()
}

pub(super) async fn artifact_get(
    store: &SqlStore,
    name: &str,
) -> Result<Option<ArtifactRecord>, StoreError> {
    let row = query(
        "SELECT name, kind, latest_version, created_at, updated_at FROM artifacts WHERE name = $1 AND latest_version > 0",
    )
    .bind(name)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(artifact_from_row).transpose()
}

pub(super) async fn artifact_version_list(
    store: &SqlStore,
    name: &str,
    limit: u32,
) -> Result<Vec<ArtifactVersionRecord>, StoreError> {
    let rows = query(concat!(
        "SELECT ",
        version_columns!(),
        version_from!(),
        "WHERE av.name = $1 ORDER BY av.version DESC LIMIT $2"
    ))
    .bind(name)
    .bind(i64::from(limit))
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(version_from_row).collect()
}

pub(super) async fn artifact_version_get(
    store: &SqlStore,
    name: &str,
    version: Option<i64>,
) -> Result<Option<ArtifactVersionRecord>, StoreError> {
    let row = query(concat!(
        "SELECT ",
        version_columns!(),
        version_from!(),
        "WHERE av.name = $1 AND av.version = COALESCE($2, a.latest_version)"
    ))
    .bind(name)
    .bind(version)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(version_from_row).transpose()
}

pub(super) async fn artifact_version_get_by_id(
    store: &SqlStore,
    id: i64,
) -> Result<Option<ArtifactVersionRecord>, StoreError> {
    let mut conn = store.pool.acquire().await?;
    store.version_by_id_in(&mut conn, id).await
}

pub(super) async fn artifact_publish(
    store: &SqlStore,
    publish: &PublishParams,
    now: Micros,
) -> Result<(ArtifactVersionRecord, bool), StoreError> {
    let mut tx = store.pool.begin_write().await?;
    let (id, reused) = store.publish_in(&mut tx, publish, None, now).await?;
    let version = store
        .version_by_id_in(&mut tx, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("artifact version {id}")))?;
    tx.commit().await?;
    Ok((version, reused))
}

pub(super) async fn cache_lookup(
    store: &SqlStore,
    key: &str,
) -> Result<Option<CacheHit>, StoreError> {
    let mut conn = store.pool.acquire().await?;
    let row = query(
        "SELECT ta.id AS attempt_id, ta.task_instance_id, ta.try_number, ta.summary, ti.run_id, ti.task_id, r.dag_id \
         FROM task_attempts ta JOIN task_instances ti ON ti.id = ta.task_instance_id JOIN runs r ON r.id = ti.run_id \
         WHERE ta.cache_key = $1 AND ta.state = 'success' ORDER BY ta.id DESC LIMIT 1",
    )
    .bind(key)
    .fetch_optional(&mut conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let attempt = attempt_ref_from_row(&row)?;
    let outputs: Vec<(String, i64)> = query_as(
        "SELECT slot, artifact_version_id FROM attempt_artifacts \
         WHERE task_instance_id = $1 AND try_number = $2 AND direction = 'output' ORDER BY slot",
    )
    .bind(attempt.task_instance_id)
    .bind(attempt.try_number)
    .fetch_all(&mut conn)
    .await?;
    let mut resolved = Vec::with_capacity(outputs.len());
    for (slot, version_id) in outputs {
        let Some(version) = store.version_by_id_in(&mut conn, version_id).await? else {
            return Ok(None);
        };
        resolved.push(ResolvedInput { slot, version });
    }
    let summary = row
        .try_get::<Option<String>>("summary")?
        .as_deref()
        .map(parse_json)
        .transpose()?;
    Ok(Some(CacheHit {
        attempt_id: row.try_get("attempt_id")?,
        attempt,
        outputs: resolved,
        summary,
    }))
}

pub(super) async fn artifact_blob_list_in_use(store: &SqlStore) -> Result<Vec<String>, StoreError> {
    Ok(
        query_scalar("SELECT DISTINCT sha256 FROM artifact_versions ORDER BY sha256")
            .fetch_all(&store.pool)
            .await?,
    )
}
