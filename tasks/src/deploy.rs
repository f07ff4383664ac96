//! `deploy`: checks a model and hands it to the registry.
//!
//! The model (input `model`) is written unchanged to the output `model`; declare that output
//! with `publish_as = "NAME"` and `promote = "production"`, and the registry gives it a version
//! of NAME and moves the alias in the same transaction as this task's completion, so the
//! registry never points at a model whose deploy did not finish. The metrics of an optional
//! `metrics` input (what `evaluate` writes) are kept with the version.

use kiln_engine::plugin::{LogStream, OutputFile};
use kiln_engine::{TaskContext, TaskError, TaskOutput, TaskPlugin};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::ml::model::{MODEL_MEDIA_TYPE, ModelEnvelope};

/// Params of `deploy`: none, for now.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployParams {}

/// The `deploy` plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Deploy;

impl TaskPlugin for Deploy {
    const KIND: &'static str = "deploy";
    type Params = DeployParams;

    async fn run(&self, ctx: &TaskContext, _params: DeployParams) -> Result<TaskOutput, TaskError> {
        let input = ctx.input("model")?;
        let slot = ctx.outputs().get("model").ok_or_else(|| {
            TaskError::Permanent(
                "`deploy` writes the output `model`: declare it with `kind = \"model\"`, `publish_as` and `promote`".to_owned(),
            )
        })?;
        let bytes = tokio::fs::read(&input.path).await.map_err(|error| {
            TaskError::Retryable(format!("reading {}: {error}", input.version.label()))
        })?;
        // A model that would not load must never reach the registry.
        let envelope = ModelEnvelope::from_json(&bytes)
            .map_err(|error| TaskError::Permanent(format!("{}: {error}", input.version.label())))?;
        let metrics = match ctx.inputs().get("metrics") {
            Some(metrics) => {
                let text = tokio::fs::read(&metrics.path).await.map_err(|error| {
                    TaskError::Retryable(format!("reading {}: {error}", metrics.version.label()))
                })?;
                Some(
                    serde_json::from_slice::<serde_json::Value>(&text).map_err(|error| {
                        TaskError::Permanent(format!(
                            "{} is not JSON: {error}",
                            metrics.version.label()
                        ))
                    })?,
                )
            }
            None => None,
        };
        tokio::fs::write(&slot.path, &bytes)
            .await
            .map_err(|error| {
                TaskError::Retryable(format!("writing {}: {error}", slot.path.display()))
            })?;
        let figures: serde_json::Map<String, serde_json::Value> = metrics
            .as_ref()
            .and_then(serde_json::Value::as_object)
            .map(|object| {
                object
                    .iter()
                    .filter(|(_, value)| value.is_number())
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let metadata = serde_json::json!({
            "metrics": figures,
            "evaluation": metrics,
            "source_model": input.version.label(),
            "algorithm": envelope.algorithm,
            "training_data": envelope.training_data,
            "run_id": ctx.run_id,
        });
        ctx.log_line(
            LogStream::Stdout,
            &format!("handing {} to the registry", input.version.label()),
        );
        let mut output = TaskOutput {
            summary: serde_json::json!({ "model": input.version.label(), "metrics": figures }),
            ..TaskOutput::default()
        };
        output.outputs.insert(
            "model".to_owned(),
            OutputFile {
                path: slot.path.clone(),
                media_type: Some(MODEL_MEDIA_TYPE.to_owned()),
                dataset: None,
                metadata: Some(metadata),
            },
        );
        Ok(output)
    }
}
