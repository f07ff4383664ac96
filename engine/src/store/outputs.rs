//! What a successful attempt wrote (`artifact_versions` it published or reused,
//! `attempt_artifacts`), recorded in its completion's transaction with the lineage and outbox
//! events that follow from it.

use super::completions::Prepared;
use super::db::{Conn, query_as, query_scalar};
use super::{
    AttemptResult, DatasetStats, Micros, OutboxEvent, OutboxModelVersion, PublishParams, SqlStore,
    StoreError, parse_json,
};
use crate::artifacts::BlobRef;
use crate::dag::ArtifactKind;
use serde::{Deserialize, Serialize};

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

impl SqlStore {
    /// Publishes an applied success's outputs (moving a `promote`d alias), records what
    /// the attempt read and wrote, and appends its outbox event, in the completion's
    /// transaction.
    pub(super) async fn record_outputs_in(
        &self,
        conn: &mut Conn<'_>,
        item: &Prepared<'_>,
        now: Micros,
    ) -> Result<(), StoreError> {
        let id = item.completion.task_instance_id;
        let (run_id, task_id, try_number) =
            (item.row.run_id, &item.row.task_id, item.row.try_number);
        let plan = &item.plan;
        let mut written = Vec::new();
        if let (AttemptResult::Success { outputs, .. }, Some(task)) =
            (item.result(), plan.task(task_id))
        {
            for output in outputs {
                let Some(spec) = task.outputs.iter().find(|spec| spec.name == output.slot) else {
                    continue;
                };
                let (version_id, reused) = match &output.content {
                    OutputContent::Blob {
                        blob,
                        media_type,
                        dataset,
                        metadata,
                    } => {
                        let publish = PublishParams {
                            name: spec.artifact_name(&plan.dag.id, task_id),
                            kind: spec.kind,
                            blob: *blob,
                            media_type: media_type.clone(),
                            dataset: dataset.clone(),
                            metadata: metadata.clone(),
                        };
                        self.publish_in(&mut *conn, &publish, Some((id, try_number)), now)
                            .await?
                    }
                    OutputContent::Reused {
                        artifact_version_id,
                    } => (*artifact_version_id, true),
                };
                written.push((output.slot.clone(), version_id, reused));
                // Only a publisher's model outputs (`deploy`'s, for MLflow) are registry
                // versions; a trained model is linked from its run instead.
                if spec.kind == ArtifactKind::Model
                    && self
                        .tracking()
                        .is_some_and(|tracking| tracking.publishes_models(&task.kind))
                {
                    let artifact = self
                        .outbox_artifact_in(&mut *conn, &output.slot, version_id)
                        .await?;
                    let metadata: Option<String> =
                        query_scalar("SELECT metadata FROM artifact_versions WHERE id = $1")
                            .bind(version_id)
                            .fetch_one(&mut *conn)
                            .await?;
                    let version = OutboxModelVersion {
                        name: artifact.name,
                        version: artifact.version,
                        sha256: artifact.sha256,
                        metadata: metadata.as_deref().map(parse_json).transpose()?,
                        run: self.outbox_run_in(&mut *conn, run_id).await?,
                        task_id: task_id.clone(),
                        try_number,
                    };
                    self.outbox_append_in(
                        &mut *conn,
                        &OutboxEvent::ModelVersion(Box::new(version)),
                        now,
                    )
                    .await?;
                }
                if let Some(alias) = spec.promote {
                    let version: (String, i64) =
                        query_as("SELECT name, version FROM artifact_versions WHERE id = $1")
                            .bind(version_id)
                            .fetch_one(&mut *conn)
                            .await?;
                    let reason =
                        format!("deployed by run {run_id} task `{task_id}` attempt {try_number}");
                    self.alias_set_in(&mut *conn, &version.0, alias, version.1, &reason, now)
                        .await?;
                }
            }
        }
        // Most tasks read and write no artifacts: skip the lookup of their inputs.
        if !written.is_empty()
            || plan
                .task(task_id)
                .is_some_and(|task| !task.inputs.is_empty())
        {
            self.record_lineage_in(&mut *conn, id, try_number, &written)
                .await?;
        }
        if let Some(tracking) = self.tracking()
            && let Some(task) = plan.task(task_id)
            && tracking.tracks_task(&task.kind)
        {
            self.outbox_attempt_in(
                &mut *conn,
                run_id,
                task,
                id,
                try_number,
                &item.verdict,
                &written,
                now,
            )
            .await?;
        }
        Ok(())
    }
}
