//! `evaluate`: scores candidate models on a test set, picks the best, draws charts, and gates
//! promotion: the task fails (naming both figures) when the best candidate misses a threshold
//! or does not beat the model in production by the margin asked.
//!
//! Inputs: the test table (`test`, or the one `test` names), every model to score (any other
//! input whose version is a model), and optionally `production`, the model serving now, scored
//! on the same rows. Outputs (each optional): `metrics` (JSON), `best` (the winning model's
//! envelope, unchanged), `charts` (SVG).

use std::collections::BTreeMap;

use kiln_engine::dag::ArtifactKind;
use kiln_engine::plugin::{InputFile, LogStream, OutputFile};
use kiln_engine::{TaskContext, TaskError, TaskOutput, TaskPlugin};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::ml::charts;
use crate::ml::metrics::{self, figures};
use crate::ml::model::{MODEL_MEDIA_TYPE, ModelEnvelope, ModelTask};
use crate::ml::table::{self, TargetColumn};

/// Params of `evaluate`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// The input holding the test table (default `test`).
    #[serde(default)]
    pub test: Option<String>,
    /// The figure that picks the best candidate and that `must_beat_production_by` compares:
    /// `accuracy` for classifiers and `r2` for regressors unless set.
    #[serde(default)]
    pub metric: Option<String>,
    /// Thresholds the best candidate must meet.
    #[serde(default)]
    pub gate: Gate,
}

/// Thresholds; each left out is not checked.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// Lowest accuracy.
    #[serde(default)]
    pub min_accuracy: Option<f64>,
    /// Lowest macro F1.
    #[serde(default)]
    pub min_f1_macro: Option<f64>,
    /// Lowest ROC AUC.
    #[serde(default)]
    pub min_roc_auc: Option<f64>,
    /// Lowest R².
    #[serde(default)]
    pub min_r2: Option<f64>,
    /// Highest RMSE.
    #[serde(default)]
    pub max_rmse: Option<f64>,
    /// Highest MAE.
    #[serde(default)]
    pub max_mae: Option<f64>,
    /// Highest log loss.
    #[serde(default)]
    pub max_log_loss: Option<f64>,
    /// When a `production` model is given: the margin by which the best candidate's `metric`
    /// must beat it.
    #[serde(default)]
    pub must_beat_production_by: Option<f64>,
}

/// The `evaluate` plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Evaluate;

/// Figures where lower is better.
fn lower_is_better(metric: &str) -> bool {
    matches!(metric, "rmse" | "mae" | "log_loss")
}

/// One scored model.
struct Scored {
    name: String,
    input: InputFile,
    task: ModelTask,
    metrics: serde_json::Value,
    /// For charts: class labels and the confusion matrix, ROC points, or residual pairs.
    labels: Vec<String>,
    confusion: Vec<Vec<u64>>,
    roc: Option<Vec<(f64, f64)>>,
    residuals: Option<(Vec<f64>, Vec<f64>)>,
}

impl TaskPlugin for Evaluate {
    const KIND: &'static str = "evaluate";
    type Params = EvaluateParams;

    async fn run(
        &self,
        ctx: &TaskContext,
        params: EvaluateParams,
    ) -> Result<TaskOutput, TaskError> {
        let test_name = params.test.clone().unwrap_or_else(|| "test".to_owned());
        let test = ctx.input(&test_name)?.clone();
        let candidates: Vec<(String, InputFile)> = ctx
            .inputs()
            .iter()
            .filter(|(name, input)| {
                **name != test_name
                    && name.as_str() != "production"
                    && input.version.kind == ArtifactKind::Model
            })
            .map(|(name, input)| (name.clone(), input.clone()))
            .collect();
        if candidates.is_empty() {
            return Err(TaskError::Permanent(
                "`evaluate` needs at least one model among its inputs".to_owned(),
            ));
        }
        let production = ctx.inputs().get("production").cloned();
        let outputs: BTreeMap<String, std::path::PathBuf> = ["metrics", "best", "charts"]
            .into_iter()
            .filter_map(|name| {
                ctx.outputs()
                    .get(name)
                    .map(|slot| (name.to_owned(), slot.path.clone()))
            })
            .collect();
        let cancel = ctx.cancellation().clone();
        let work = crate::ml::off_runtime("evaluate", move || {
            evaluate(&test, &candidates, production.as_ref(), &params)
        });
        let report = tokio::select! {
            result = work => result?,
            () = cancel.cancelled() => return Err(TaskError::Cancelled("evaluation stopped".to_owned())),
        };
        for line in &report.lines {
            ctx.log_line(LogStream::Stdout, line);
        }
        if let Some(failure) = report.gate_failure {
            return Err(TaskError::Permanent(failure));
        }
        let mut result = TaskOutput {
            summary: report.summary.clone(),
            ..TaskOutput::default()
        };
        for (name, path) in outputs {
            let (bytes, media_type) = match name.as_str() {
                "metrics" => (
                    serde_json::to_vec_pretty(&report.summary).unwrap_or_default(),
                    "application/json",
                ),
                "best" => (
                    std::fs::read(&report.best_path).map_err(|error| {
                        TaskError::Retryable(format!(
                            "reading {}: {error}",
                            report.best_path.display()
                        ))
                    })?,
                    MODEL_MEDIA_TYPE,
                ),
                _ => (report.charts.clone().into_bytes(), "image/svg+xml"),
            };
            std::fs::write(&path, bytes).map_err(|error| {
                TaskError::Retryable(format!("writing {}: {error}", path.display()))
            })?;
            result.outputs.insert(
                name,
                OutputFile {
                    path,
                    media_type: Some(media_type.to_owned()),
                    dataset: None,
                    metadata: None,
                },
            );
        }
        Ok(result)
    }
}

struct Report {
    summary: serde_json::Value,
    lines: Vec<String>,
    gate_failure: Option<String>,
    best_path: std::path::PathBuf,
    charts: String,
}

fn read_model(input: &InputFile) -> Result<ModelEnvelope, TaskError> {
    let bytes = std::fs::read(&input.path).map_err(|error| {
        TaskError::Retryable(format!("reading {}: {error}", input.version.label()))
    })?;
    ModelEnvelope::from_json(&bytes)
        .map_err(|error| TaskError::Permanent(format!("{}: {error}", input.version.label())))
}

fn score(name: &str, input: &InputFile, test: &InputFile) -> Result<Scored, TaskError> {
    let model = read_model(input)?;
    let label = test.version.label();
    let frame = table::scan(&test.path, &label)?;
    let table = table::load(
        frame,
        &label,
        Some(&model.features),
        model.target.as_deref(),
    )?;
    let predictions: Vec<_> = (0..table.rows)
        .map(|row| model.predict_row(table.row(row)))
        .collect();
    let mut scored = Scored {
        name: name.to_owned(),
        input: input.clone(),
        task: model.task,
        metrics: serde_json::Value::Null,
        labels: model
            .classes
            .iter()
            .map(|class| class.to_string().trim_matches('"').to_owned())
            .collect(),
        confusion: Vec::new(),
        roc: None,
        residuals: None,
    };
    match (model.task, &table.target) {
        (ModelTask::Classification, Some(target)) => {
            let values: Vec<serde_json::Value> = match target {
                TargetColumn::Labels(labels) => labels.clone(),
                TargetColumn::Numbers(numbers) => numbers
                    .iter()
                    .map(|value| serde_json::json!(value))
                    .collect(),
            };
            // A label the model never saw can only be predicted wrong: it gets an index of its own.
            let unseen = model.classes.len();
            let truth: Vec<usize> = values
                .iter()
                .map(|value| {
                    model
                        .classes
                        .iter()
                        .position(|class| {
                            class == value
                                || class
                                    .as_f64()
                                    .zip(value.as_f64())
                                    .is_some_and(|(a, b)| a == b)
                        })
                        .unwrap_or(unseen)
                })
                .collect();
            let predicted: Vec<usize> = predictions
                .iter()
                .map(|prediction| prediction.value as usize)
                .collect();
            let probabilities: Option<Vec<Vec<f64>>> = predictions
                .iter()
                .map(|prediction| prediction.probabilities.clone())
                .collect();
            let classes = model.classes.len() + usize::from(truth.contains(&unseen));
            let result =
                metrics::classification(&truth, &predicted, probabilities.as_deref(), classes);
            if model.classes.len() == 2
                && let Some(probabilities) = &probabilities
            {
                let scores: Vec<f64> = probabilities.iter().map(|row| row[1]).collect();
                scored.roc = Some(metrics::roc_curve(&truth, &scores));
            }
            scored.confusion = result.confusion_matrix.clone();
            scored.metrics = serde_json::to_value(&result).unwrap_or_default();
        }
        (ModelTask::Regression, Some(TargetColumn::Numbers(truth))) => {
            let predicted: Vec<f64> = predictions
                .iter()
                .map(|prediction| prediction.value)
                .collect();
            scored.metrics =
                serde_json::to_value(metrics::regression(truth, &predicted)).unwrap_or_default();
            scored.residuals = Some((predicted, truth.clone()));
        }
        _ => {
            return Err(TaskError::Permanent(format!(
                "{}: `evaluate` scores classifiers and regressors with a target column in {label}",
                input.version.label()
            )));
        }
    }
    Ok(scored)
}

fn figure(scored: &Scored, metric: &str) -> Result<f64, TaskError> {
    figures(&scored.metrics)
        .get(metric)
        .copied()
        .ok_or_else(|| {
            TaskError::Permanent(format!(
                "metric `{metric}` is not among the figures of {} ({})",
                scored.input.version.label(),
                figures(&scored.metrics)
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

fn evaluate(
    test: &InputFile,
    candidates: &[(String, InputFile)],
    production: Option<&InputFile>,
    params: &EvaluateParams,
) -> Result<Report, TaskError> {
    let scored: Vec<Scored> = candidates
        .iter()
        .map(|(name, input)| score(name, input, test))
        .collect::<Result<_, _>>()?;
    let metric = params
        .metric
        .clone()
        .unwrap_or_else(|| match scored[0].task {
            ModelTask::Regression => "r2".to_owned(),
            _ => "accuracy".to_owned(),
        });
    let lower = lower_is_better(&metric);
    let mut best = 0;
    for (index, candidate) in scored.iter().enumerate() {
        let (value, current) = (figure(candidate, &metric)?, figure(&scored[best], &metric)?);
        if (lower && value < current) || (!lower && value > current) {
            best = index;
        }
    }
    let winner = &scored[best];
    let winning = figure(winner, &metric)?;
    let mut lines: Vec<String> = scored
        .iter()
        .map(|candidate| {
            format!(
                "{} ({}): {metric} {:.4}",
                candidate.name,
                candidate.input.version.label(),
                figure(candidate, &metric).unwrap_or(f64::NAN)
            )
        })
        .collect();
    lines.push(format!("best: {} with {metric} {winning:.4}", winner.name));

    let mut failures = Vec::new();
    let gate = &params.gate;
    let checks = [
        ("accuracy", gate.min_accuracy, false),
        ("f1_macro", gate.min_f1_macro, false),
        ("roc_auc", gate.min_roc_auc, false),
        ("r2", gate.min_r2, false),
        ("rmse", gate.max_rmse, true),
        ("mae", gate.max_mae, true),
        ("log_loss", gate.max_log_loss, true),
    ];
    for (name, threshold, is_maximum) in checks {
        let Some(threshold) = threshold else { continue };
        let value = figure(winner, name)?;
        let fails = if is_maximum {
            value > threshold
        } else {
            value < threshold
        };
        if fails {
            failures.push(format!(
                "{name} {value:.4} is {} the gate's {}_{name} {threshold:.4}",
                if is_maximum { "above" } else { "below" },
                if is_maximum { "max" } else { "min" }
            ));
        }
    }
    let mut production_metrics = serde_json::Value::Null;
    if let Some(production) = production {
        let current = score("production", production, test)?;
        let current_figure = figure(&current, &metric)?;
        lines.push(format!(
            "production ({}): {metric} {current_figure:.4}",
            production.version.label()
        ));
        if let Some(margin) = gate.must_beat_production_by {
            let needed = if lower {
                current_figure - margin
            } else {
                current_figure + margin
            };
            let beats = if lower {
                winning <= needed
            } else {
                winning >= needed
            };
            if !beats {
                failures.push(format!(
                    "{metric} {winning:.4} does not beat production's {current_figure:.4} by {margin} (needs {needed:.4})"
                ));
            }
        }
        production_metrics = current.metrics;
    }
    let charts = draw(&scored)?;
    let candidates_json: serde_json::Map<String, serde_json::Value> = scored
        .iter()
        .map(|candidate| {
            (
                candidate.name.clone(),
                serde_json::json!({ "model": candidate.input.version.label(), "metrics": candidate.metrics }),
            )
        })
        .collect();
    let mut summary = serde_json::json!({
        "metric": metric,
        "best": winner.name,
        "best_model": winner.input.version.label(),
        "test_data": test.version.label(),
        "candidates": candidates_json,
        "production": production_metrics,
        "gate": { "passed": failures.is_empty(), "failures": failures },
    });
    // The winner's figures at the top level, so `metrics.accuracy` reads as people expect.
    if let (Some(object), Some(figures)) = (summary.as_object_mut(), winner.metrics.as_object()) {
        for (name, value) in figures {
            object.entry(name.clone()).or_insert(value.clone());
        }
    }
    let gate_failure = (!failures.is_empty()).then(|| {
        format!(
            "gate failed for {} ({}): {}",
            winner.name,
            winner.input.version.label(),
            failures.join("; ")
        )
    });
    Ok(Report {
        summary,
        lines,
        gate_failure,
        best_path: winner.input.path.clone(),
        charts,
    })
}

/// One SVG holding every chart side by side.
fn draw(scored: &[Scored]) -> Result<String, TaskError> {
    let mut parts = Vec::new();
    for candidate in scored {
        let part = match candidate.task {
            ModelTask::Regression => candidate.residuals.as_ref().map(|(predicted, truth)| {
                charts::residuals(&format!("{}: residuals", candidate.name), predicted, truth)
            }),
            _ => Some(charts::confusion_matrix(
                &format!("{}: confusion matrix", candidate.name),
                &candidate.confusion,
                &candidate.labels,
            )),
        };
        if let Some(part) = part {
            parts.push(part.map_err(TaskError::Permanent)?);
        }
    }
    let curves: Vec<(String, Vec<(f64, f64)>)> = scored
        .iter()
        .filter_map(|candidate| {
            candidate
                .roc
                .clone()
                .map(|points| (candidate.name.clone(), points))
        })
        .collect();
    if !curves.is_empty() {
        parts.push(charts::roc_curves("ROC curves", &curves).map_err(TaskError::Permanent)?);
    }
    let mut x = 0;
    let mut body = String::new();
    for part in &parts {
        let width = attribute(part, "width").unwrap_or(480);
        let inner = part.trim_start_matches(|c| c != '<');
        let inner = inner.strip_prefix("<?xml").map_or(inner, |rest| {
            rest.split_once("?>").map_or(rest, |(_, after)| after)
        });
        body.push_str(&format!(
            "<g transform=\"translate({x},0)\">{}</g>",
            inner.trim()
        ));
        x += width;
    }
    let height = parts
        .iter()
        .filter_map(|part| attribute(part, "height"))
        .max()
        .unwrap_or(480);
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{x}\" height=\"{height}\" viewBox=\"0 0 {x} {height}\">{body}</svg>"
    ))
}

/// A numeric attribute of an SVG document's root element.
fn attribute(svg: &str, name: &str) -> Option<usize> {
    let start = svg.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = svg[start..].find('"')? + start;
    svg[start..end].trim_end_matches("px").parse().ok()
}
