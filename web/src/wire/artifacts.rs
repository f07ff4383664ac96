//! Artifacts on the wire, in both APIs: versions and their producers, names, lineage, and the
//! REST API's artifact queries.

use kiln_engine::artifacts::BlobRef;
use kiln_engine::dag::ArtifactKind;
use kiln_engine::store::{ArtifactVersionRecord, AttemptRef, ColumnSchema, DatasetStats};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{micros_of, schema, time};

/// An artifact version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VersionView {
    /// Its id in the store.
    pub id: i64,
    /// The artifact's name.
    pub name: String,
    /// `dataset`, `model` or `file`.
    #[schemars(with = "schema::ArtifactKind")]
    pub kind: ArtifactKind,
    /// The version number, from 1.
    pub version: i64,
    /// The SHA-256 of its bytes, lowercase hex.
    #[schemars(with = "schema::Sha256")]
    pub sha256: kiln_engine::artifacts::Sha256Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// The attempt that wrote it; absent when it was put by hand.
    pub producer: Option<AttemptView>,
    /// For datasets: columns and row count, when known.
    pub dataset: Option<DatasetView>,
    /// What the writer said about the version (a model's metrics, say).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// RFC 3339.
    pub created_at: String,
}

/// A task attempt, as lineage names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptView {
    /// The task instance.
    pub task_instance_id: i64,
    /// The attempt number.
    pub try_number: i64,
    /// The run.
    pub run_id: i64,
    /// The DAG.
    pub dag_id: String,
    /// The task.
    pub task_id: String,
}

/// The shape of a dataset version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetView {
    /// Columns in order, as `{name, dtype}`.
    #[schemars(with = "Vec<schema::ColumnSchema>")]
    pub columns: Vec<ColumnSchema>,
    /// Rows.
    pub rows: u64,
}

impl From<&AttemptRef> for AttemptView {
    fn from(attempt: &AttemptRef) -> AttemptView {
        AttemptView {
            task_instance_id: attempt.task_instance_id,
            try_number: attempt.try_number,
            run_id: attempt.run_id,
            dag_id: attempt.dag_id.clone(),
            task_id: attempt.task_id.clone(),
        }
    }
}

impl From<AttemptView> for AttemptRef {
    fn from(attempt: AttemptView) -> AttemptRef {
        AttemptRef {
            task_instance_id: attempt.task_instance_id,
            try_number: attempt.try_number,
            run_id: attempt.run_id,
            dag_id: attempt.dag_id,
            task_id: attempt.task_id,
        }
    }
}

impl From<&ArtifactVersionRecord> for VersionView {
    fn from(version: &ArtifactVersionRecord) -> VersionView {
        VersionView {
            id: version.id,
            name: version.name.clone(),
            kind: version.kind,
            version: version.version,
            sha256: version.blob.sha256,
            size: version.blob.size,
            media_type: version.media_type.clone(),
            producer: version.producer.as_ref().map(AttemptView::from),
            dataset: version.dataset.as_ref().map(|stats| DatasetView {
                columns: stats.columns.clone(),
                rows: stats.rows,
            }),
            metadata: version.metadata.clone(),
            created_at: time(version.created_at),
        }
    }
}

impl From<VersionView> for ArtifactVersionRecord {
    fn from(version: VersionView) -> ArtifactVersionRecord {
        ArtifactVersionRecord {
            id: version.id,
            name: version.name,
            kind: version.kind,
            version: version.version,
            blob: BlobRef {
                sha256: version.sha256,
                size: version.size,
            },
            media_type: version.media_type,
            producer: version.producer.map(AttemptRef::from),
            dataset: version.dataset.map(|stats| DatasetStats {
                columns: stats.columns,
                rows: stats.rows,
            }),
            metadata: version.metadata,
            created_at: micros_of(&version.created_at),
        }
    }
}

/// An artifact name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactView {
    /// The name versions are published under.
    pub name: String,
    /// `dataset`, `model` or `file`.
    #[schemars(with = "schema::ArtifactKind")]
    pub kind: ArtifactKind,
    /// The newest version number.
    pub latest_version: i64,
    /// RFC 3339: when the first version was published.
    pub created_at: String,
    /// RFC 3339: when the newest version was published or reused.
    pub updated_at: String,
}

impl From<&kiln_engine::store::ArtifactRecord> for ArtifactView {
    fn from(artifact: &kiln_engine::store::ArtifactRecord) -> ArtifactView {
        ArtifactView {
            name: artifact.name.clone(),
            kind: artifact.kind,
            latest_version: artifact.latest_version,
            created_at: time(artifact.created_at),
            updated_at: time(artifact.updated_at),
        }
    }
}

/// `GET /api/v1/artifacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactList {
    /// By name.
    pub artifacts: Vec<ArtifactView>,
}

/// `GET /api/v1/artifacts/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactDetail {
    /// The artifact.
    #[serde(flatten)]
    pub artifact: ArtifactView,
    /// Its versions, newest first.
    pub versions: Vec<VersionView>,
}

/// One step of lineage: an attempt read `input` and wrote `output` (version ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LineageEdgeView {
    /// The version read.
    pub input: i64,
    /// The version written.
    pub output: i64,
    /// The attempt in between.
    pub attempt: AttemptView,
}

/// An attempt that wrote a version without reading any artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LineageSourceView {
    /// The version written (its id).
    pub version: i64,
    /// The attempt.
    pub attempt: AttemptView,
}

/// `GET …/lineage`: versions, and the attempts that turned some into others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LineageView {
    /// Every version in the graph.
    pub versions: Vec<VersionView>,
    /// Edges from input version to output version.
    pub edges: Vec<LineageEdgeView>,
    /// Versions written by attempts that read nothing.
    pub sources: Vec<LineageSourceView>,
}

impl From<&kiln_engine::store::LineageGraph> for LineageView {
    fn from(graph: &kiln_engine::store::LineageGraph) -> LineageView {
        LineageView {
            versions: graph.versions.iter().map(VersionView::from).collect(),
            edges: graph
                .edges
                .iter()
                .map(|edge| LineageEdgeView {
                    input: edge.input,
                    output: edge.output,
                    attempt: AttemptView::from(&edge.attempt),
                })
                .collect(),
            sources: graph
                .sources
                .iter()
                .map(|(version, attempt)| LineageSourceView {
                    version: *version,
                    attempt: AttemptView::from(attempt),
                })
                .collect(),
        }
    }
}

/// The filter of `GET /api/v1/artifacts`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only artifacts of this kind.
    // A string rather than the enum, so that a wrong kind gets a 422 naming the choices.
    #[schemars(with = "Option<schema::ArtifactKind>")]
    pub(crate) kind: Option<String>,
}

/// How many versions `GET /api/v1/artifacts/{name}` lists.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DetailQuery {
    /// The most versions to list: 100 unless given, at most 1000.
    pub(crate) limit: Option<u32>,
}

/// Which way `GET …/lineage` walks.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LineageQuery {
    /// `upstream`, what the version was made from (the default), or `downstream`.
    // A string rather than the enum, so that a wrong direction gets a 422 naming the choices.
    #[schemars(extend("enum" = ["upstream", "downstream", null]))]
    pub(crate) direction: Option<String>,
}
