//! What the store knows about artifacts: names, immutable versions, the attempts that read and
//! wrote them (lineage), and what a worker reports about the outputs it wrote.

use serde::{Deserialize, Serialize};

use super::Micros;
use crate::artifacts::BlobRef;
use crate::dag::{ArtifactKind, ModelAlias};

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

/// The task attempt behind a lineage record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRef {
    /// The task instance.
    pub task_instance_id: i64,
    /// The attempt's number.
    pub try_number: i64,
    /// The run the task instance belongs to.
    pub run_id: i64,
    /// The run's DAG.
    pub dag_id: String,
    /// The task's id in the DAG.
    pub task_id: String,
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

/// An input a claimed task will read: the version it resolved to when the task was claimed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedInput {
    /// The name the task knows the input by (the key in its `inputs` table).
    pub slot: String,
    /// The version it reads.
    pub version: ArtifactVersionRecord,
}

/// What an attempt wrote for one of its declared outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProducedOutput {
    /// The output's name in the task's `outputs`.
    pub slot: String,
    /// New bytes, or an existing version reused.
    pub content: OutputContent,
}

/// The content of a produced output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum OutputContent {
    /// Bytes the worker stored in the artifact store.
    Blob {
        /// The stored blob.
        blob: BlobRef,
        /// Its media type.
        media_type: String,
        /// For datasets, their shape when the plugin knew it.
        dataset: Option<DatasetStats>,
        /// What the plugin said about the output (a model's metrics, say).
        metadata: Option<serde_json::Value>,
    },
    /// An existing version, reused by a cache hit.
    Reused {
        /// The version's id.
        artifact_version_id: i64,
    },
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

/// One step of lineage: an attempt that read `input` and wrote `output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageEdge {
    /// The version read (its store id).
    pub input: i64,
    /// The version written (its store id).
    pub output: i64,
    /// The attempt in between.
    pub attempt: AttemptRef,
}

/// A lineage graph: versions, and the attempts that turned some into others.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LineageGraph {
    /// Every version in the graph, by id.
    pub versions: Vec<ArtifactVersionRecord>,
    /// Edges from input version to output version.
    pub edges: Vec<LineageEdge>,
    /// Attempts that wrote a version in the graph without reading any artifact (sources such
    /// as an ingest task), as `(version id, attempt)`.
    pub sources: Vec<(i64, AttemptRef)>,
}

/// Which way to follow lineage from a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineageDirection {
    /// Towards the raw inputs the version was made from.
    Upstream,
    /// Towards everything made from the version.
    Downstream,
}

/// What an attempt read and wrote, for the console's task page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptArtifact {
    /// The attempt's number.
    pub try_number: i64,
    /// `input` or `output`.
    pub direction: String,
    /// The input or output name.
    pub slot: String,
    /// The version.
    pub version: ArtifactVersionRecord,
    /// Whether an output reused an existing version rather than publishing a new one.
    pub reused: bool,
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
