//! The REST API's artifact endpoints: names, versions, their bytes and their lineage.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use kiln_engine::dag::ArtifactKind;
use kiln_engine::store::{ArtifactVersionRecord, LineageDirection};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::exec::blob_response;
use crate::openapi::schema;
use crate::wire::{ArtifactDetail, ArtifactList, ArtifactView, LineageView, VersionView};
use crate::{AppError, AppState};

/// How many versions `GET /artifacts/{name}` lists unless asked otherwise, and at most.
const DEFAULT_VERSIONS: u32 = 100;
const MAX_VERSIONS: u32 = 1000;

/// The filter of `GET /api/v1/artifacts`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only artifacts of this kind.
    // A string rather than the enum, so that a wrong kind gets a 422 naming the choices.
    #[schemars(with = "Option<schema::ArtifactKind>")]
    kind: Option<String>,
}

/// `GET /api/v1/artifacts?kind=`: artifact names, by name.
pub(crate) async fn list_artifacts(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ArtifactList>, AppError> {
    let kind = query
        .kind
        .map(|text| text.parse::<ArtifactKind>())
        .transpose()
        .map_err(AppError::unprocessable)?;
    let artifacts = state.scheduler().store().artifact_list(kind).await?;
    Ok(Json(ArtifactList {
        artifacts: artifacts.iter().map(ArtifactView::from).collect(),
    }))
}

/// How many versions `GET /api/v1/artifacts/{name}` lists.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DetailQuery {
    /// The most versions to list: 100 unless given, at most 1000.
    limit: Option<u32>,
}

/// `GET /api/v1/artifacts/{name}?limit=`: an artifact and its versions, newest first.
pub(crate) async fn get_artifact(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Result<Json<ArtifactDetail>, AppError> {
    let store = state.scheduler().store();
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
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<VersionView>, AppError> {
    let record = resolve_version(&state, &name, &version).await?;
    Ok(Json(VersionView::from(&record)))
}

/// `GET /api/v1/artifacts/{name}/versions/{version}/content`: the version's bytes, streamed,
/// as a download named `NAME@VERSION`.
pub(crate) async fn get_content(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let record = resolve_version(&state, &name, &version).await?;
    let blobs = state
        .execution
        .artifacts()
        .ok_or_else(|| AppError::Unavailable("this server has no artifact store".to_owned()))?;
    let mut response = blob_response(blobs, &record.blob.sha256, &record.media_type).await?;
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

/// Which way `GET …/lineage` walks.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LineageQuery {
    /// `upstream`, what the version was made from (the default), or `downstream`.
    // A string rather than the enum, so that a wrong direction gets a 422 naming the choices.
    #[schemars(extend("enum" = ["upstream", "downstream", null]))]
    direction: Option<String>,
}

/// `GET /api/v1/artifacts/{name}/versions/{version}/lineage?direction=upstream|downstream`.
pub(crate) async fn version_lineage(
    State(state): State<AppState>,
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
    let record = resolve_version(&state, &name, &version).await?;
    let graph = state
        .scheduler()
        .store()
        .lineage_get_by_version(record.id, direction)
        .await?;
    Ok(Json(LineageView::from(&graph)))
}

/// `GET /api/v1/runs/{run_id}/lineage`: everything the run's attempts read and wrote.
pub(crate) async fn run_lineage(
    State(state): State<AppState>,
    Path(run_id): Path<i64>,
) -> Result<Json<LineageView>, AppError> {
    let store = state.scheduler().store();
    store
        .run_get(run_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("run {run_id} not found")))?;
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
    state: &AppState,
    name: &str,
    version: &str,
) -> Result<ArtifactVersionRecord, AppError> {
    let number = parse_version(version)?;
    let store = state.scheduler().store();
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
