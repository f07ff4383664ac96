//! Lineage (`attempt_artifacts`): what each attempt read and wrote, walked up or down.

use super::artifacts::version_columns;
use super::artifacts::version_from;
use super::artifacts::version_from_row;
use super::claims::StoredInputs;
use super::db::{Conn, QueryBuilder, Row, query, query_scalar};
use super::{ArtifactVersionRecord, SqlStore, StoreError};
use serde::{Deserialize, Serialize};

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

pub(super) fn attempt_ref_from_row(row: &Row) -> Result<AttemptRef, StoreError> {
    Ok(AttemptRef {
        task_instance_id: row.try_get("task_instance_id")?,
        try_number: row.try_get("try_number")?,
        run_id: row.try_get("run_id")?,
        dag_id: row.try_get("dag_id")?,
        task_id: row.try_get("task_id")?,
    })
}

impl SqlStore {
    /// Records what an attempt read (from its attempt row) and wrote, in the caller's
    /// transaction: the completion's.
    pub(super) async fn record_lineage_in(
        &self,
        conn: &mut Conn<'_>,
        task_instance_id: i64,
        try_number: i64,
        outputs: &[(String, i64, bool)],
    ) -> Result<(), StoreError> {
        let inputs: Option<String> = query_scalar(
            "SELECT inputs FROM task_attempts WHERE task_instance_id = $1 AND try_number = $2",
        )
        .bind(task_instance_id)
        .bind(try_number)
        .fetch_optional(&mut *conn)
        .await?
        .flatten();
        let inputs: StoredInputs = match inputs {
            Some(text) => serde_json::from_str(&text)
                .map_err(|error| StoreError::Corrupt(format!("stored attempt inputs: {error}")))?,
            None => StoredInputs::new(),
        };
        let rows = inputs
            .iter()
            .map(|(slot, id)| ("input", slot.as_str(), *id, false))
            .chain(
                outputs
                    .iter()
                    .map(|(slot, id, reused)| ("output", slot.as_str(), *id, *reused)),
            );
        for (direction, slot, version_id, reused) in rows {
            query(
                "INSERT INTO attempt_artifacts (task_instance_id, try_number, direction, slot, artifact_version_id, reused) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (task_instance_id, try_number, direction, slot) DO NOTHING",
            )
            .bind(task_instance_id)
            .bind(try_number)
            .bind(direction)
            .bind(slot)
            .bind(version_id)
            .bind(reused)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// The versions with these ids, the edges among them (restricted to one run when
    /// given), and the attempts that wrote one of them from no input at all.
    pub(super) async fn lineage_graph_in(
        &self,
        conn: &mut Conn<'_>,
        ids: &[i64],
        only_run: Option<i64>,
    ) -> Result<LineageGraph, StoreError> {
        let mut graph = LineageGraph::default();
        if ids.is_empty() {
            return Ok(graph);
        }
        for chunk in ids.chunks(500) {
            let mut query = QueryBuilder::new(concat!(
                "SELECT ",
                version_columns!(),
                version_from!(),
                "WHERE av.id IN ("
            ));
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            query.push(") ORDER BY av.id");
            for row in query.build().fetch_all(&mut *conn).await? {
                graph.versions.push(version_from_row(&row)?);
            }
        }
        let id_set: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
        // Every output row of the versions, with its attempt's inputs (if any).
        for chunk in ids.chunks(500) {
            let mut query = QueryBuilder::new(
                "SELECT o.artifact_version_id AS output, i.artifact_version_id AS input, o.task_instance_id, o.try_number, \
                 ti.run_id, ti.task_id, r.dag_id \
                 FROM attempt_artifacts o \
                 JOIN task_instances ti ON ti.id = o.task_instance_id JOIN runs r ON r.id = ti.run_id \
                 LEFT JOIN attempt_artifacts i ON i.task_instance_id = o.task_instance_id AND i.try_number = o.try_number \
                 AND i.direction = 'input' \
                 WHERE o.direction = 'output' AND o.artifact_version_id IN (",
            );
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            query.push(")");
            if let Some(run_id) = only_run {
                query.push(" AND ti.run_id = ").push_bind(run_id);
            }
            query.push(" ORDER BY o.task_instance_id, o.try_number, o.artifact_version_id, i.artifact_version_id");
            for row in query.build().fetch_all(&mut *conn).await? {
                let output: i64 = row.try_get("output")?;
                let input: Option<i64> = row.try_get("input")?;
                let attempt = attempt_ref_from_row(&row)?;
                match input {
                    Some(input) if id_set.contains(&input) => graph.edges.push(LineageEdge {
                        input,
                        output,
                        attempt,
                    }),
                    Some(_) => {}
                    None => graph.sources.push((output, attempt)),
                }
            }
        }
        Ok(graph)
    }
}

pub(super) async fn lineage_get_by_version(
    store: &SqlStore,
    version_id: i64,
    direction: LineageDirection,
) -> Result<LineageGraph, StoreError> {
    // Walk attempts: from a version to the attempts that wrote it and on to what they
    // read (upstream), or to the attempts that read it and on to what they wrote
    // (downstream). UNION, not UNION ALL, so shared ancestors are visited once.
    let sql = match direction {
        LineageDirection::Upstream => {
            "WITH RECURSIVE lineage(id) AS (SELECT id FROM artifact_versions WHERE id = $1 UNION \
             SELECT i.artifact_version_id FROM lineage l \
             JOIN attempt_artifacts o ON o.artifact_version_id = l.id AND o.direction = 'output' \
             JOIN attempt_artifacts i ON i.task_instance_id = o.task_instance_id AND i.try_number = o.try_number \
             AND i.direction = 'input') SELECT id FROM lineage ORDER BY id"
        }
        LineageDirection::Downstream => {
            "WITH RECURSIVE lineage(id) AS (SELECT id FROM artifact_versions WHERE id = $1 UNION \
             SELECT o.artifact_version_id FROM lineage l \
             JOIN attempt_artifacts i ON i.artifact_version_id = l.id AND i.direction = 'input' \
             JOIN attempt_artifacts o ON o.task_instance_id = i.task_instance_id AND o.try_number = i.try_number \
             AND o.direction = 'output') SELECT id FROM lineage ORDER BY id"
        }
    };
    let mut conn = store.pool.acquire().await?;
    let ids: Vec<i64> = query_scalar(sql)
        .bind(version_id)
        .fetch_all(&mut conn)
        .await?;
    if ids.is_empty() {
        return Err(StoreError::NotFound(format!(
            "artifact version {version_id}"
        )));
    }
    store.lineage_graph_in(&mut conn, &ids, None).await
}

pub(super) async fn lineage_get_by_run(
    store: &SqlStore,
    run_id: i64,
) -> Result<LineageGraph, StoreError> {
    let mut conn = store.pool.acquire().await?;
    let ids: Vec<i64> = query_scalar(
        "SELECT DISTINCT aa.artifact_version_id FROM attempt_artifacts aa \
         JOIN task_instances ti ON ti.id = aa.task_instance_id WHERE ti.run_id = $1 ORDER BY aa.artifact_version_id",
    )
    .bind(run_id)
    .fetch_all(&mut conn)
    .await?;
    store.lineage_graph_in(&mut conn, &ids, Some(run_id)).await
}

pub(super) async fn attempt_artifact_list(
    store: &SqlStore,
    task_instance_id: i64,
) -> Result<Vec<AttemptArtifact>, StoreError> {
    let rows = query(concat!(
        "SELECT aa.try_number AS slot_try, aa.direction, aa.slot, aa.reused, ",
        version_columns!(),
        " FROM attempt_artifacts aa JOIN artifact_versions av ON av.id = aa.artifact_version_id \
         JOIN artifacts a ON a.name = av.name \
         LEFT JOIN task_instances pti ON pti.id = av.task_instance_id LEFT JOIN runs pr ON pr.id = pti.run_id \
         WHERE aa.task_instance_id = $1 ORDER BY aa.try_number, aa.direction, aa.slot"
    ))
    .bind(task_instance_id)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AttemptArtifact {
                try_number: row.try_get("slot_try")?,
                direction: row.try_get("direction")?,
                slot: row.try_get("slot")?,
                reused: row.try_get("reused")?,
                version: version_from_row(row)?,
            })
        })
        .collect()
}
