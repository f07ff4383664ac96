//! `/api/v1/artifacts`: artifact names, versions, their bytes and their lineage, and a run's
//! lineage under `/api/v1/runs`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use kiln_engine::dag::ArtifactKind;
use kiln_engine::store::{ArtifactVersionRecord, LineageDirection, Store};

use super::runs::run_or_404;
use crate::error::AppError;
use crate::state::Blobs;
use crate::wire::{
    ArtifactDetail, ArtifactList, ArtifactView, DetailQuery, LineageQuery, LineageView, ListQuery,
    VersionView,
};

/// How many versions `GET /artifacts/{name}` lists unless asked otherwise, and at most.
const DEFAULT_VERSIONS: u32 = 100;
const MAX_VERSIONS: u32 = 1000;

/// `GET /api/v1/artifacts?kind=`: artifact names, by name.
pub(crate) async fn list_artifacts(
    State(store): State<Arc<dyn Store>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ArtifactList>, AppError> {
    let kind = query
        .kind
        .map(|text| text.parse::<ArtifactKind>())
        .transpose()
        .map_err(AppError::unprocessable)?;
    let artifacts = store.artifact_list(kind).await?;
    Ok(Json(ArtifactList {
        artifacts: artifacts.iter().map(ArtifactView::from).collect(),
    }))
}

/// `GET /api/v1/artifacts/{name}?limit=`: an artifact and its versions, newest first.
pub(crate) async fn get_artifact(
    State(store): State<Arc<dyn Store>>,
    Path(name): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Result<Json<ArtifactDetail>, AppError> {
    let artifact = store
        .artifact_get(&name)
        .await?
        .ok_or_else(|| unknown_artifact(&name))?;
    let limit = query.limit.unwrap_or(DEFAULT_VERSIONS).min(MAX_VERSIONS);
    let versions = store.artifact_version_list(&name, limit).await?;
    Ok(Json(ArtifactDetail {
        artifact: ArtifactView::from(&artifact),
        versions: versions.iter().map(VersionView::from).collect(),
    }))
}

/// `GET /api/v1/artifacts/{name}/versions/{version}`: one version; `latest` is the newest.
pub(crate) async fn get_version(
    State(store): State<Arc<dyn Store>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<VersionView>, AppError> {
    let record = resolve_version(&*store, &name, &version).await?;
    Ok(Json(VersionView::from(&record)))
}

/// `GET /api/v1/artifacts/{name}/versions/{version}/content`: the version's bytes, streamed,
/// as a download named `NAME@VERSION`.
pub(crate) async fn get_content(
    State(store): State<Arc<dyn Store>>,
    State(blobs): State<Blobs>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let record = resolve_version(&*store, &name, &version).await?;
    let mut response = blobs
        .response(&record.blob.sha256, &record.media_type)
        .await?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        download_name(&record.label())
    );
    // Only the sanitised characters below reach the header, so this cannot fail; a failure
    // would merely leave the header out.
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `GET /api/v1/artifacts/{name}/versions/{version}/lineage?direction=upstream|downstream`.
pub(crate) async fn version_lineage(
    State(store): State<Arc<dyn Store>>,
    Path((name, version)): Path<(String, String)>,
    Query(query): Query<LineageQuery>,
) -> Result<Json<LineageView>, AppError> {
    let direction = match query.direction.as_deref() {
        None | Some("upstream") => LineageDirection::Upstream,
        Some("downstream") => LineageDirection::Downstream,
        Some(other) => {
            return Err(AppError::unprocessable(format!(
                "unknown lineage direction `{other}` (upstream or downstream)"
            )));
        }
    };
    let record = resolve_version(&*store, &name, &version).await?;
    let graph = store.lineage_get_by_version(record.id, direction).await?;
    Ok(Json(LineageView::from(&graph)))
}

/// `GET /api/v1/runs/{run_id}/lineage`: everything the run's attempts read and wrote.
pub(crate) async fn run_lineage(
    State(store): State<Arc<dyn Store>>,
    Path(run_id): Path<i64>,
) -> Result<Json<LineageView>, AppError> {
    run_or_404(&*store, run_id).await?;
    let graph = store.lineage_get_by_run(run_id).await?;
    Ok(Json(LineageView::from(&graph)))
}

fn unknown_artifact(name: &str) -> AppError {
    AppError::NotFound(format!("artifact `{name}` not found"))
}

/// Reads a version as the URL gives it: a positive integer, or `latest` (`None`).
fn parse_version(text: &str) -> Result<Option<i64>, AppError> {
    if text == "latest" {
        return Ok(None);
    }
    match text.parse::<i64>() {
        Ok(number) if number >= 1 => Ok(Some(number)),
        _ => Err(AppError::unprocessable(format!(
            "version `{text}` is not a positive integer or `latest`"
        ))),
    }
}

/// The version a URL names, or a 422 or 404 saying what is wrong with it.
async fn resolve_version(
    store: &dyn Store,
    name: &str,
    version: &str,
) -> Result<ArtifactVersionRecord, AppError> {
    let number = parse_version(version)?;
    if let Some(record) = store.artifact_version_get(name, number).await? {
        return Ok(record);
    }
    // Missing: say whether the name or only the version is unknown.
    let artifact = store
        .artifact_get(name)
        .await?
        .ok_or_else(|| unknown_artifact(name))?;
    Err(AppError::NotFound(format!(
        "artifact `{name}` has no version {version} (latest is {})",
        artifact.latest_version
    )))
}

/// A file name for a download: the label with anything but letters, digits and `._@-` made
/// `_`, so that no name can break out of the header's quoted string.
fn download_name(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_positive_integers_or_latest() {
        assert_eq!(parse_version("latest").ok(), Some(None));
        assert_eq!(parse_version("3").ok(), Some(Some(3)));
        for bad in ["0", "-1", "1.5", "", "Latest", "99999999999999999999"] {
            let error = parse_version(bad).err().map(|error| error.to_string());
            assert_eq!(
                error,
                Some(format!(
                    "version `{bad}` is not a positive integer or `latest`"
                )),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn download_names_keep_only_safe_characters() {
        assert_eq!(download_name("pipe.clean.out@3"), "pipe.clean.out@3");
        assert_eq!(download_name("a\"b\r\n/c@1"), "a_b___c@1");
    }
}
