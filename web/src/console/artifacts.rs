//! The artifact pages: every artifact name by kind, one name's versions, and one version with
//! its details, a preview of its first rows (CSV), its download link and its lineage graph.

use axum::Extension;
use axum::extract::State;
use futures_util::StreamExt;
use kiln_engine::artifacts::{BlobError, BlobStore};
use kiln_engine::dag::ArtifactKind;
use kiln_engine::store::{ArtifactVersionRecord, DatasetStats, LineageDirection};
use maud::{Markup, html};
use serde::Deserialize;

use super::ConsoleState;
use super::auth::Viewer;
use super::csv;
use super::error::ConsoleError;
use super::extract::{HtmlPath, HtmlQuery};
use super::layout::{self, Section, bytes, shorten, time};
use super::lineage::{self, attempt_href, path_segment, version_href};

/// Versions listed on a name's page, newest first.
const VERSIONS_SHOWN: u32 = 100;
/// How much of a blob a preview reads at most.
const PREVIEW_BYTES: usize = 64 * 1024;
/// Rows a preview shows.
const PREVIEW_ROWS: usize = 20;
/// Cells longer than this are cut in the preview.
const CELL_CHARS: usize = 200;
/// Hex digits of a digest shown in tables (the whole digest is in the tooltip).
const SHORT_SHA: usize = 12;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    // A string rather than the enum, so that a wrong kind gets a message naming the choices.
    kind: Option<String>,
    q: Option<String>,
}

fn not_found(name: &str) -> ConsoleError {
    ConsoleError::NotFound(format!("artifact `{name}` not found"))
}

fn short_sha(version: &ArtifactVersionRecord) -> Markup {
    let hex = version.blob.sha256.to_hex();
    html! { code title=(hex) { (hex[..SHORT_SHA.min(hex.len())]) } }
}

/// Who wrote a version: links to the run and to the attempt, or "by hand".
pub(crate) fn producer(version: &ArtifactVersionRecord) -> Markup {
    html! {
        @match &version.producer {
            Some(attempt) => {
                a href=(attempt_href(attempt)) { (attempt.dag_id) "/" (attempt.task_id) }
                " in "
                a href={ "/runs/" (attempt.run_id) } { "run " (attempt.run_id) }
                @if attempt.try_number > 1 { ", try " (attempt.try_number) }
            },
            None => span.muted { "published by hand" },
        }
    }
}

fn dataset_cell(dataset: Option<&DatasetStats>) -> Markup {
    html! {
        @match dataset {
            Some(stats) => {
                (stats.rows) " rows"
                div.muted {
                    @for (index, column) in stats.columns.iter().enumerate() {
                        @if index > 0 { ", " }
                        (column.name) " (" (column.dtype) ")"
                    }
                }
            },
            None => span.muted { "—" },
        }
    }
}

/// The artifacts page: names by kind, filtered by a name search.
pub(crate) async fn list(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlQuery(query): HtmlQuery<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let kind = query
        .kind
        .as_deref()
        .filter(|text| !text.is_empty())
        .map(str::parse::<ArtifactKind>)
        .transpose()
        .map_err(ConsoleError::BadRequest)?;
    let all = state.store.artifact_list(kind).await?;
    let total = all.len();
    let search = query.q.as_deref().map(str::trim).unwrap_or_default();
    let needle = search.to_lowercase();
    let artifacts: Vec<_> = all
        .into_iter()
        .filter(|artifact| needle.is_empty() || artifact.name.to_lowercase().contains(&needle))
        .collect();
    let tab = |candidate: Option<ArtifactKind>, label: &str| {
        let href = match candidate {
            Some(kind) => format!("/artifacts?kind={}", kind.as_str()),
            None => "/artifacts".to_owned(),
        };
        html! { a href=(href) aria-current=[(candidate == kind).then_some("page")] { (label) } }
    };
    let body = html! {
        h1 { "Artifacts" }
        nav.tabs {
            (tab(None, "All"))
            (tab(Some(ArtifactKind::Dataset), "Datasets"))
            (tab(Some(ArtifactKind::Model), "Models"))
            (tab(Some(ArtifactKind::File), "Files"))
        }
        form.filters method="get" action="/artifacts" role="search" {
            @if let Some(kind) = kind { input type="hidden" name="kind" value=(kind.as_str()); }
            input type="search" name="q" value=(search) placeholder="Search names" aria-label="Search artifact names";
            button type="submit" { "Filter" }
            @if !search.is_empty() {
                a href={ "/artifacts" @if let Some(kind) = kind { "?kind=" (kind.as_str()) } } { "Clear" }
            }
            span.muted { (artifacts.len()) " of " (total) " artifacts" }
        }
        @if artifacts.is_empty() {
            p.muted {
                @match (total, kind) {
                    (0, None) => "No artifact has been published yet.",
                    (0, Some(kind)) => { "No artifact of kind " (kind.as_str()) " has been published yet." },
                    _ => "No artifact matches.",
                }
            }
        } @else {
            table.artifacts {
                thead { tr { th { "Name" } th { "Kind" } th { "Latest version" } th { "Updated" } } }
                tbody {
                    @for artifact in &artifacts {
                        tr {
                            td { a.artifact-name href={ "/artifacts/" (path_segment(&artifact.name)) } { (artifact.name) } }
                            td { span class={ "kind kind-" (artifact.kind.as_str()) } { (artifact.kind.as_str()) } }
                            td { a href=(version_href(&artifact.name, artifact.latest_version)) { "v" (artifact.latest_version) } }
                            td { (time(artifact.updated_at)) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Artifacts", &viewer, Section::Artifacts, body))
}

/// An artifact's page: its versions, newest first.
pub(crate) async fn artifact_page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath(name): HtmlPath<String>,
) -> Result<Markup, ConsoleError> {
    let store = &state.store;
    let artifact = store
        .artifact_get(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    let versions = store.artifact_version_list(&name, VERSIONS_SHOWN).await?;
    let kind = artifact.kind.as_str();
    let body = html! {
        p.crumbs { a href="/artifacts" { "Artifacts" } " / " (artifact.name) }
        div.title-row {
            h1 { (artifact.name) }
            span class={ "kind kind-" (kind) } { (kind) }
        }
        dl.facts {
            dt { "Latest version" } dd { a href=(version_href(&artifact.name, artifact.latest_version)) { "v" (artifact.latest_version) } }
            dt { "First published" } dd { (time(artifact.created_at)) }
            dt { "Updated" } dd { (time(artifact.updated_at)) }
        }
        h2 { "Versions" }
        @if i64::from(VERSIONS_SHOWN) < artifact.latest_version {
            p.muted { "The newest " (VERSIONS_SHOWN) " of " (artifact.latest_version) " versions." }
        }
        table.versions {
            thead { tr { th { "Version" } th { "Size" } th { "SHA-256" } th { "Media type" } th { "Produced by" } th { "Created" } th { "Dataset" } } }
            tbody {
                @for version in &versions {
                    tr {
                        td { a href=(version_href(&version.name, version.version)) { "v" (version.version) } }
                        td title={ (version.blob.size) " bytes" } { (bytes(version.blob.size)) }
                        td { (short_sha(version)) }
                        td { code { (version.media_type) } }
                        td { (producer(version)) }
                        td { (time(version.created_at)) }
                        td { (dataset_cell(version.dataset.as_ref())) }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        &artifact.name,
        &viewer,
        Section::Artifacts,
        body,
    ))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct VersionQuery {
    // A string rather than the enum, so that a wrong direction gets a message naming the
    // choices.
    direction: Option<String>,
}

/// The version a URL names (a number, or `latest`), or a 404 naming what is missing.
async fn resolve_version(
    state: &ConsoleState,
    name: &str,
    version: &str,
) -> Result<ArtifactVersionRecord, ConsoleError> {
    let store = &state.store;
    let number = match version {
        "latest" => None,
        text => match text.parse::<i64>() {
            Ok(number) if number >= 1 => Some(number),
            // Not a version number, so no such version: a 404 like any other.
            _ => {
                return Err(ConsoleError::NotFound(format!(
                    "artifact `{name}` has no version `{version}`"
                )));
            }
        },
    };
    if let Some(record) = store.artifact_version_get(name, number).await? {
        return Ok(record);
    }
    let artifact = store
        .artifact_get(name)
        .await?
        .ok_or_else(|| not_found(name))?;
    Err(ConsoleError::NotFound(format!(
        "artifact `{name}` has no version {version} (the latest is {})",
        artifact.latest_version
    )))
}

/// A version's page: details, preview, download and lineage.
pub(crate) async fn version_page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath((name, version)): HtmlPath<(String, String)>,
    HtmlQuery(query): HtmlQuery<VersionQuery>,
) -> Result<Markup, ConsoleError> {
    let direction = match query.direction.as_deref() {
        None | Some("" | "upstream") => LineageDirection::Upstream,
        Some("downstream") => LineageDirection::Downstream,
        Some(other) => {
            return Err(ConsoleError::BadRequest(format!(
                "unknown lineage direction `{other}` (upstream or downstream)"
            )));
        }
    };
    let record = resolve_version(&state, &name, &version).await?;
    let store = &state.store;
    let graph = store.lineage_get_by_version(record.id, direction).await?;
    let preview = preview(&state, &record).await;
    // A version alone, with no attempt recorded around it, is not worth a drawing.
    let drawing =
        if graph.versions.len() > 1 || !graph.edges.is_empty() || !graph.sources.is_empty() {
            lineage::svg(
                &graph,
                Some(record.id),
                &format!("Lineage of {}", record.label()),
            )
        } else {
            None
        };
    let here = version_href(&record.name, record.version);
    let download = format!(
        "/api/v1/artifacts/{}/versions/{}/content",
        path_segment(&record.name),
        record.version
    );
    let kind = record.kind.as_str();
    let label = record.label();
    let tab = |candidate: LineageDirection, text: &str, href: String| {
        html! { a href=(href) aria-current=[(candidate == direction).then_some("page")] { (text) } }
    };
    let body = html! {
        p.crumbs {
            a href="/artifacts" { "Artifacts" } " / "
            a href={ "/artifacts/" (path_segment(&record.name)) } { (record.name) } " / v" (record.version)
        }
        div.title-row {
            h1 { (label) }
            span class={ "kind kind-" (kind) } { (kind) }
            a.button href=(download) download=(label) { "Download" }
        }
        dl.facts {
            dt { "Size" } dd { (bytes(record.blob.size)) " (" (record.blob.size) " bytes)" }
            dt { "SHA-256" } dd { code { (record.blob.sha256.to_hex()) } }
            dt { "Media type" } dd { code { (record.media_type) } }
            dt { "Produced by" } dd { (producer(&record)) }
            dt { "Created" } dd { (time(record.created_at)) }
            @if let Some(stats) = &record.dataset {
                dt { "Rows" } dd { (stats.rows) }
                dt { "Columns" } dd {
                    @if stats.columns.is_empty() { span.muted { "none reported" } }
                    ul.plain {
                        @for column in &stats.columns {
                            li { code { (column.name) } " " span.muted { (column.dtype) } }
                        }
                    }
                }
            }
        }
        h2 { "Preview" }
        (preview)
        h2 { "Lineage" }
        nav.tabs {
            (tab(LineageDirection::Upstream, "Upstream: what it was made from", here.clone()))
            (tab(LineageDirection::Downstream, "Downstream: what was made from it", format!("{here}?direction=downstream")))
        }
        section.view {
            @match drawing {
                Some(svg) => {
                    div.scroll { (svg) }
                    (lineage::legend())
                },
                None => p.muted {
                    @match direction {
                        LineageDirection::Upstream => "Nothing is recorded upstream of this version.",
                        LineageDirection::Downstream => "Nothing has been made from this version yet.",
                    }
                },
            }
        }
    };
    Ok(layout::page(&label, &viewer, Section::Artifacts, body))
}

/// The preview section: the first rows of a CSV version, or why there are none.
async fn preview(state: &ConsoleState, record: &ArtifactVersionRecord) -> Markup {
    let essence = record
        .media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence != "text/csv" {
        // Writers of binary formats (Parquet from `process`) may keep a preview in the
        // version's metadata, so the console needs no Parquet reader.
        if let Some(stored) = stored_preview(record) {
            return stored;
        }
        return html! {
            p.muted { "No preview is available for " code { (record.media_type) } "; use the download link." }
        };
    }
    let Some(blobs) = state.blobs.as_ref() else {
        return html! { p.muted { "No preview: this server has no artifact store configured." } };
    };
    let (head, complete) = match read_head(blobs, record).await {
        Ok(read) => read,
        Err(error) => {
            tracing::warn!(message = "Artifact preview failed.", artifact = %record.label(), %error);
            let problem = match error {
                BlobError::NotFound { .. } => "its bytes are missing from the artifact store",
                BlobError::Corrupt { .. } => "its stored bytes no longer match their digest",
                _ => "the artifact store could not be read; see the server log",
            };
            return html! { p.problem { "No preview: " (problem) "." } };
        }
    };
    let text = String::from_utf8_lossy(&head);
    let table = csv::preview(&text, complete, PREVIEW_ROWS);
    html! {
        @if table.header.is_empty() {
            p.muted { "The file is empty." }
        } @else {
            div.scroll {
                table.preview {
                    thead { tr { @for cell in &table.header { th { (shorten(cell, CELL_CHARS)) } } } }
                    tbody {
                        @for row in &table.rows {
                            tr { @for cell in row { td { (shorten(cell, CELL_CHARS)) } } }
                        }
                    }
                }
            }
            p.muted {
                @if table.more {
                    "The first " (table.rows.len()) " rows"
                    @if !complete { ", from the first " (bytes(PREVIEW_BYTES as u64)) " of the file" }
                    "."
                } @else {
                    (table.rows.len()) @if table.rows.len() == 1 { " row" } @else { " rows" } ", the whole file."
                }
            }
        }
    }
}

/// The preview a writer stored in the version's metadata: `{"preview": {"columns": [...],
/// "rows": [[...]], "total_rows": N}}`, cells as text.
fn stored_preview(record: &ArtifactVersionRecord) -> Option<Markup> {
    let preview = record.metadata.as_ref()?.get("preview")?;
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let columns: Vec<String> = preview
        .get("columns")?
        .as_array()?
        .iter()
        .map(text)
        .collect();
    let rows: Vec<Vec<String>> = preview
        .get("rows")?
        .as_array()?
        .iter()
        .take(PREVIEW_ROWS)
        .filter_map(|row| row.as_array().map(|cells| cells.iter().map(text).collect()))
        .collect();
    let total = preview
        .get("total_rows")
        .and_then(serde_json::Value::as_u64);
    Some(html! {
        div.scroll {
            table.preview {
                thead { tr { @for cell in &columns { th { (shorten(cell, CELL_CHARS)) } } } }
                tbody {
                    @for row in &rows {
                        tr { @for cell in row { td { (shorten(cell, CELL_CHARS)) } } }
                    }
                }
            }
        }
        p.muted {
            "The first " (rows.len()) " rows"
            @if let Some(total) = total { " of " (total) }
            ", as the task that wrote this version recorded them."
        }
    })
}

/// The first [`PREVIEW_BYTES`] of a version's blob, and whether that is all of it. A blob that
/// fits is read to its end, so its digest is checked; of a larger one only the head is read,
/// which a preview may show unchecked: it is never used for anything but display.
async fn read_head(
    blobs: &BlobStore,
    record: &ArtifactVersionRecord,
) -> Result<(Vec<u8>, bool), BlobError> {
    let mut stream = blobs.open(&record.blob.sha256).await?;
    let mut head = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = PREVIEW_BYTES - head.len();
        if chunk.len() > room {
            head.extend_from_slice(&chunk[..room]);
            return Ok((head, false));
        }
        head.extend_from_slice(&chunk);
    }
    // The stream ended within the limit: this is the whole blob, its digest checked.
    Ok((head, true))
}
