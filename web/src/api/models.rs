//! `/api/v1/models`: the model registry and serving. List models, describe one (the version
//! served and its metrics), predict, promote and roll back.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use kiln_engine::dag::ModelAlias;
use kiln_engine::store::{Store, now_micros};

use crate::error::{AppError, JsonBody, JsonOrEmpty};
use crate::serving::{ModelServer, ServeError, predict_rows};
use crate::state::Blobs;
use crate::wire::{
    AliasEventView, AliasMove, AttemptView, ModelDetail, ModelList, ModelSummary, ModelVersionView,
    PredictRequest, PredictResponse, PromoteRequest, RollbackRequest, ServedView, time,
};

/// The most rows one prediction request may carry.
const MAX_ROWS: usize = 10_000;

pub(crate) async fn list_models(
    State(store): State<Arc<dyn Store>>,
) -> Result<Json<ModelList>, AppError> {
    let models = store
        .model_list()
        .await?
        .into_iter()
        .map(|model| ModelSummary {
            name: model.name,
            latest_version: model.latest_version,
            production: model.production,
            staging: model.staging,
            updated_at: time(model.updated_at),
        })
        .collect();
    Ok(Json(ModelList { models }))
}

fn metrics_of(metadata: Option<&serde_json::Value>) -> serde_json::Value {
    metadata
        .and_then(|metadata| metadata.get("metrics"))
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}))
}

pub(crate) async fn get_model(
    State(store): State<Arc<dyn Store>>,
    State(models): State<Arc<ModelServer>>,
    State(blobs): State<Blobs>,
    Path(name): Path<String>,
) -> Result<Json<ModelDetail>, AppError> {
    let record = store
        .model_list()
        .await?
        .into_iter()
        .find(|model| model.name == name)
        .ok_or_else(|| AppError::NotFound(format!("model `{name}` not found")))?;
    let versions = store
        .artifact_version_list(&name, 1000)
        .await?
        .into_iter()
        .map(|version| ModelVersionView {
            version: version.version,
            aliases: [
                (record.production, "production"),
                (record.staging, "staging"),
            ]
            .into_iter()
            .filter(|(aliased, _)| *aliased == Some(version.version))
            .map(|(_, alias)| alias.to_owned())
            .collect(),
            metrics: metrics_of(version.metadata.as_ref()),
            producer: version.producer.as_ref().map(AttemptView::from),
            created_at: time(version.created_at),
        })
        .collect();
    let history = store
        .model_alias_event_list(&name)
        .await?
        .into_iter()
        .map(|event| AliasEventView {
            alias: event.alias.as_str().to_owned(),
            version: event.version,
            previous: event.previous,
            reason: event.reason,
            at: time(event.created_at),
        })
        .collect();
    let served = match record.production {
        Some(_) => Some(
            models
                .production(&*store, blobs.get(), &name)
                .await
                .map_err(serve_error)?,
        ),
        None => None,
    };
    Ok(Json(ModelDetail {
        name: name.clone(),
        version: served.as_ref().map(|model| model.version.version),
        metrics: metrics_of(
            served
                .as_ref()
                .and_then(|model| model.version.metadata.as_ref()),
        ),
        served: served.as_ref().map(|model| {
            let envelope = &model.envelope;
            let preprocessing = envelope.preprocessing.clone().unwrap_or_default();
            ServedView {
                algorithm: envelope.algorithm.clone(),
                task: serde_json::to_value(envelope.task)
                    .ok()
                    .and_then(|task| task.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                features: preprocessing
                    .raw_features(&envelope.features)
                    .into_iter()
                    .map(
                        |feature| serde_json::json!({ "name": feature.name, "kind": feature.kind }),
                    )
                    .collect(),
                classes: envelope.classes.clone(),
                trained_at: envelope.trained_at.clone(),
                training_data: serde_json::to_value(&envelope.training_data).unwrap_or_default(),
                sha256: model.version.blob.sha256.to_hex(),
            }
        }),
        versions,
        history,
    }))
}

fn serve_error(error: ServeError) -> AppError {
    match error {
        ServeError::NotFound(message) => AppError::NotFound(message),
        ServeError::Unavailable(message) => AppError::Unavailable(message),
    }
}

/// The request's rows as objects, whichever shape it came in.
fn request_rows(
    request: PredictRequest,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, AppError> {
    let rows = match (request.rows, request.columns) {
        (Some(rows), None) => rows,
        (None, Some(columns)) => {
            let mut length = None;
            let mut arrays = Vec::with_capacity(columns.len());
            for (name, values) in columns {
                let serde_json::Value::Array(values) = values else {
                    return Err(AppError::unprocessable(format!(
                        "column `{name}` must be an array"
                    )));
                };
                match length {
                    None => length = Some(values.len()),
                    Some(expected) if expected != values.len() => {
                        return Err(AppError::unprocessable(format!(
                            "column `{name}` has {} values where the others have {expected}",
                            values.len()
                        )));
                    }
                    Some(_) => {}
                }
                arrays.push((name, values));
            }
            let length = length.unwrap_or(0);
            if length > MAX_ROWS {
                return Err(too_many(length));
            }
            (0..length)
                .map(|row| {
                    arrays
                        .iter()
                        .map(|(name, values)| (name.clone(), values[row].clone()))
                        .collect()
                })
                .collect()
        }
        _ => {
            return Err(AppError::unprocessable(
                "give either `rows` (one object per row) or `columns` (one array per feature)",
            ));
        }
    };
    if rows.len() > MAX_ROWS {
        return Err(too_many(rows.len()));
    }
    if rows.is_empty() {
        return Err(AppError::unprocessable("the request has no rows"));
    }
    Ok(rows)
}

fn too_many(rows: usize) -> AppError {
    AppError::unprocessable(format!(
        "{rows} rows is more than the {MAX_ROWS} one request may carry"
    ))
}

pub(crate) async fn predict(
    State(store): State<Arc<dyn Store>>,
    State(models): State<Arc<ModelServer>>,
    State(blobs): State<Blobs>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<PredictRequest>,
) -> Result<Json<PredictResponse>, AppError> {
    let rows = request_rows(request)?;
    let model = models
        .production(&*store, blobs.get(), &name)
        .await
        .map_err(serve_error)?;
    let answer =
        predict_rows(&model, &rows).map_err(|error| AppError::unprocessable(error.to_string()))?;
    Ok(Json(answer))
}

pub(crate) async fn promote(
    State(store): State<Arc<dyn Store>>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<PromoteRequest>,
) -> Result<Json<AliasMove>, AppError> {
    let alias = request.alias.unwrap_or(ModelAlias::Production);
    let previous = store
        .model_alias_set(
            &name,
            alias,
            request.version,
            "promoted through the API",
            now_micros(),
        )
        .await?;
    Ok(Json(AliasMove {
        alias,
        version: request.version,
        previous,
    }))
}

pub(crate) async fn rollback(
    State(store): State<Arc<dyn Store>>,
    Path(name): Path<String>,
    JsonOrEmpty(request): JsonOrEmpty<RollbackRequest>,
) -> Result<Json<AliasMove>, AppError> {
    let alias = request.alias.unwrap_or(ModelAlias::Production);
    let (from, to) = store
        .model_alias_rollback(&name, alias, now_micros())
        .await?;
    Ok(Json(AliasMove {
        alias,
        version: to,
        previous: Some(from),
    }))
}
