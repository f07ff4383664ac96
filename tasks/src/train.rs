//! `train`: fits a model on a dataset version and writes it as a versioned model envelope.
//!
//! Inputs: the training table (`train`, or the one `input` names; Parquet from `process`, or
//! CSV) and, optionally, `scaler`: what `process` learnt, embedded in the model so that serving
//! applies the same transformation to raw values. Output: `model`.

use kiln_engine::plugin::{LogStream, OutputFile};
use kiln_engine::{TaskContext, TaskError, TaskOutput, TaskPlugin};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::ml::fit::{Algorithm, Training, fit};
use crate::ml::model::{
    MODEL_FORMAT, MODEL_FORMAT_VERSION, MODEL_MEDIA_TYPE, ModelEnvelope, ModelTask, TrainingData,
};
use crate::ml::preprocess::Preprocessing;
use crate::ml::table::{self, TargetColumn};

/// Params of `train`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// The algorithm and its hyperparameters, e.g. `{ name = "decision_tree", max_depth = 8 }`.
    pub algorithm: Algorithm,
    /// The column to predict (not needed for k-means).
    #[serde(default)]
    pub target: Option<String>,
    /// The feature columns; every other column when left out.
    #[serde(default)]
    pub features: Option<Vec<String>>,
    /// The seed for everything random.
    #[serde(default)]
    pub seed: u64,
    /// Which input is the training table (default `train`).
    #[serde(default)]
    pub input: Option<String>,
}

/// The `train` plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Train;

impl TaskPlugin for Train {
    const KIND: &'static str = "train";
    type Params = TrainParams;

    async fn run(&self, ctx: &TaskContext, params: TrainParams) -> Result<TaskOutput, TaskError> {
        let input = ctx
            .input(params.input.as_deref().unwrap_or("train"))?
            .clone();
        let preprocessing = match ctx.inputs().get("scaler") {
            Some(scaler) => {
                let bytes = std::fs::read(&scaler.path).map_err(|error| {
                    TaskError::Retryable(format!("reading {}: {error}", scaler.version.label()))
                })?;
                Some(
                    serde_json::from_slice::<Preprocessing>(&bytes).map_err(|error| {
                        TaskError::Permanent(format!(
                            "{} is not what `process` writes to `scaler`: {error}",
                            scaler.version.label()
                        ))
                    })?,
                )
            }
            None => None,
        };
        let output = ctx.output_path("model")?.to_owned();
        let cancel = ctx.cancellation().clone();
        let started = std::time::Instant::now();
        let work = crate::ml::off_runtime("train", move || train(&input, &params, preprocessing));
        let envelope = tokio::select! {
            result = work => result?,
            () = cancel.cancelled() => return Err(TaskError::Cancelled("training stopped".to_owned())),
        };
        let seconds = started.elapsed().as_secs_f64();
        std::fs::write(&output, envelope.to_json()).map_err(|error| {
            TaskError::Retryable(format!("writing {}: {error}", output.display()))
        })?;
        ctx.log_line(
            LogStream::Stdout,
            &format!(
                "trained {} on {} rows × {} features in {seconds:.3} s",
                envelope.algorithm["name"].as_str().unwrap_or("a model"),
                envelope.training_data.rows,
                envelope.features.len()
            ),
        );
        let mut result = TaskOutput {
            summary: serde_json::json!({
                "algorithm": envelope.algorithm,
                "rows": envelope.training_data.rows,
                "features": envelope.features.len(),
                "seconds": seconds,
                "info": envelope.training_info,
            }),
            ..TaskOutput::default()
        };
        result.outputs.insert(
            "model".to_owned(),
            OutputFile {
                path: output,
                media_type: Some(MODEL_MEDIA_TYPE.to_owned()),
                dataset: None,
                metadata: None,
            },
        );
        Ok(result)
    }
}

fn train(
    input: &kiln_engine::plugin::InputFile,
    params: &TrainParams,
    preprocessing: Option<Preprocessing>,
) -> Result<ModelEnvelope, TaskError> {
    let label = input.version.label();
    let frame = table::scan(&input.path, &label)?;
    let table = table::load(
        frame,
        &label,
        params.features.as_deref(),
        params.target.as_deref(),
    )?;
    let numeric_target = table.target.as_ref().map(|target| match target {
        TargetColumn::Numbers(_) => true,
        TargetColumn::Labels(_) => false,
    });
    let task = params.algorithm.task(numeric_target)?;
    let (classes, labels, values) = match (&table.target, task) {
        (Some(TargetColumn::Labels(raw)), ModelTask::Classification) => {
            let (classes, labels) = table::classes(raw);
            (classes, Some(labels), None)
        }
        (Some(TargetColumn::Numbers(numbers)), ModelTask::Classification) => {
            let raw: Vec<serde_json::Value> = numbers
                .iter()
                .map(|value| serde_json::json!(value))
                .collect();
            let (classes, labels) = table::classes(&raw);
            (classes, Some(labels), None)
        }
        (Some(TargetColumn::Numbers(numbers)), ModelTask::Regression) => {
            (Vec::new(), None, Some(numbers.clone()))
        }
        (Some(TargetColumn::Labels(raw)), ModelTask::Regression) => {
            let numbers: Option<Vec<f64>> = raw.iter().map(serde_json::Value::as_f64).collect();
            let numbers = numbers.ok_or_else(|| {
                TaskError::Permanent("a regression target must be numbers".to_owned())
            })?;
            (Vec::new(), None, Some(numbers))
        }
        _ => (Vec::new(), None, None),
    };
    if task == ModelTask::Classification && classes.len() < 2 {
        return Err(TaskError::Permanent(format!(
            "the target of {label} has {} class(es); classification needs at least two",
            classes.len()
        )));
    }
    let training = Training {
        x: &table.x,
        rows: table.rows,
        features: table.features.len(),
        labels: labels.as_deref(),
        classes: classes.len(),
        values: values.as_deref(),
        seed: params.seed,
    };
    let (fitted, mut info) = fit(&params.algorithm, task, &training)?;
    let mut envelope = ModelEnvelope {
        format: MODEL_FORMAT.to_owned(),
        format_version: MODEL_FORMAT_VERSION,
        kiln_version: env!("CARGO_PKG_VERSION").to_owned(),
        algorithm: serde_json::to_value(&params.algorithm).unwrap_or_default(),
        task,
        features: table.features.clone(),
        target: params.target.clone(),
        classes,
        preprocessing,
        training_data: TrainingData {
            name: input.version.name.clone(),
            version: input.version.version,
            sha256: input.version.blob.sha256.to_hex(),
            rows: table.rows as u64,
        },
        trained_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        training_info: Default::default(),
        fitted,
    };
    if let Some(labels) = &labels {
        let correct = (0..table.rows)
            .filter(|row| envelope.predict_row(table.row(*row)).value as usize == labels[*row])
            .count();
        info.insert(
            "training_accuracy".to_owned(),
            serde_json::json!(correct as f64 / table.rows as f64),
        );
    }
    envelope.training_info = info;
    Ok(envelope)
}
