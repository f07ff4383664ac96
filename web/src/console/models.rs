//! The model registry pages: every model with its production and staging versions, and one
//! model with its versions and their metrics, a chart of one metric across versions, the alias
//! history, promote and roll back buttons, and a form to try a prediction on the served version.
//!
//! A model is an artifact of kind `model`; its versions are the artifact's versions, and the
//! metrics its deploy recorded live in each version's metadata under `metrics`.

use std::collections::{BTreeMap, BTreeSet};

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use kiln_engine::dag::ModelAlias;
use kiln_engine::store::{AliasEvent, ArtifactVersionRecord, ModelRecord, now_micros};
use maud::{Markup, html};
use serde::Deserialize;

use super::ConsoleState;
use super::artifacts::producer;
use super::auth::Viewer;
use super::error::ConsoleError;
use super::extract::{HtmlForm, HtmlPath, HtmlQuery};
use super::layout::{self, Section, csrf_field, time};
use super::lineage::{path_segment, version_href};
use super::metric_chart::{self, Point, figure};
use super::prediction::{Outcome, prediction_section};

/// Versions listed and charted on a model's page, newest first.
const VERSIONS_SHOWN: u32 = 100;
/// The metrics given a column of their own when some version recorded them, in this order; the
/// first one present is the one charted unless the viewer picks another.
const KEY_METRICS: [&str; 5] = ["accuracy", "f1_macro", "roc_auc", "r2", "rmse"];
/// Why an alias moved, as the history shows it.
const PROMOTED_REASON: &str = "promoted in the console";

/// The MLflow pages of these versions, where MLflow is configured and the version is mirrored.
async fn mlflow_version_urls(
    state: &ConsoleState,
    name: &str,
    versions: &[ArtifactVersionRecord],
) -> Result<Vec<Option<String>>, ConsoleError> {
    let mut urls = Vec::with_capacity(versions.len());
    if let Some(links) = &state.mlflow {
        let store = &state.store;
        for version in versions {
            urls.push(
                links
                    .model_version(store.as_ref(), name, version.version)
                    .await?,
            );
        }
    } else {
        urls.resize(versions.len(), None);
    }
    Ok(urls)
}

fn not_found(name: &str) -> ConsoleError {
    ConsoleError::NotFound(format!("model `{name}` not found"))
}

pub(super) fn model_href(name: &str) -> String {
    format!("/models/{}", path_segment(name))
}

/// The registry's record of a model, or a 404 naming it.
pub(super) async fn model_or_404(
    state: &ConsoleState,
    name: &str,
) -> Result<ModelRecord, ConsoleError> {
    state
        .store
        .model_list()
        .await?
        .into_iter()
        .find(|model| model.name == name)
        .ok_or_else(|| not_found(name))
}

/// A version's value of a metric, when its deploy recorded it as a number.
fn metric_of(version: &ArtifactVersionRecord, metric: &str) -> Option<f64> {
    version
        .metadata
        .as_ref()?
        .get("metrics")?
        .get(metric)?
        .as_f64()
        .filter(|value| value.is_finite())
}

/// Every numeric metric some version recorded: the key metrics first, in their order, then the
/// others by name.
fn metric_names(versions: &[ArtifactVersionRecord]) -> Vec<String> {
    let mut names = BTreeSet::new();
    for version in versions {
        let metrics = version
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.get("metrics"))
            .and_then(serde_json::Value::as_object);
        for (name, value) in metrics.into_iter().flatten() {
            if value.as_f64().is_some_and(f64::is_finite) {
                names.insert(name.clone());
            }
        }
    }
    let mut ordered: Vec<String> = KEY_METRICS
        .iter()
        .filter(|key| names.remove(**key))
        .map(|key| (*key).to_owned())
        .collect();
    ordered.extend(names);
    ordered
}

/// An alias as a badge.
fn alias_badge(alias: ModelAlias) -> Markup {
    html! { span class={ "alias alias-" (alias.as_str()) } { (alias.as_str()) } }
}

/// A version number linking to its artifact version page, or a dash.
fn version_link(name: &str, version: Option<i64>) -> Markup {
    html! {
        @match version {
            Some(version) => a href=(version_href(name, version)) { "v" (version) },
            None => span.muted { "—" },
        }
    }
}

/// The models page: every model with its newest, production and staging versions.
pub(crate) async fn list(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Markup, ConsoleError> {
    let models = state.store.model_list().await?;
    let body = html! {
        h1 { "Models" }
        @if state.mlflow.is_some() {
            p { a href="/mlflow" { "MLflow mirror" } span.muted { ": what waits to reach MLflow" } }
        }
        @if models.is_empty() {
            p.muted { "No model has been published yet. A DAG's deploy task publishes one." }
        } @else {
            table.models {
                thead { tr { th { "Model" } th { "Latest version" } th { "Production" } th { "Staging" } th { "Updated" } } }
                tbody {
                    @for model in &models {
                        tr {
                            td { a.model-name href=(model_href(&model.name)) { (model.name) } }
                            td { (version_link(&model.name, Some(model.latest_version))) }
                            td { (version_link(&model.name, model.production)) }
                            td { (version_link(&model.name, model.staging)) }
                            td { (time(model.updated_at)) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Models", &viewer, Section::Models, body))
}

/// A model page's query: the metric charted, and what an action that redirected here did.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ModelQuery {
    /// The metric charted.
    metric: Option<String>,
    /// What the action redirecting here did: `promoted` or `rolled_back`.
    done: Option<String>,
    /// The version the action moved production to.
    version: Option<i64>,
    /// The version production pointed at before.
    previous: Option<i64>,
}

/// What an action that redirected here did, in words. Built from numbers rather than carried as
/// text in the URL, so a crafted link cannot put words of its own on the page.
fn notice(query: &ModelQuery) -> Option<String> {
    let version = query.version?;
    let before = match query.previous {
        Some(previous) if previous != version => format!(" (it was version {previous})"),
        _ => String::new(),
    };
    match query.done.as_deref()? {
        "promoted" => Some(format!(
            "Promoted version {version} to production{before}; it is served within a second."
        )),
        "rolled_back" => Some(format!(
            "Rolled production back to version {version}{before}; it is served within a second."
        )),
        _ => None,
    }
}

/// How a model's page is shown besides the model itself.
#[derive(Default)]
pub(super) struct DetailView {
    /// The metric charted (`None`: the first there is).
    pub(super) metric: Option<String>,
    /// What an action did.
    pub(super) notice: Option<String>,
    /// Why an action was refused.
    pub(super) problem: Option<String>,
    /// The values the prediction form was submitted with, and what they gave.
    pub(super) prediction: Option<(BTreeMap<String, String>, Outcome)>,
}

/// The version production would roll back to: the newest older version that held it.
fn rollback_target(events: &[AliasEvent], production: Option<i64>) -> Option<i64> {
    let current = production?;
    events
        .iter()
        .filter(|event| event.alias == ModelAlias::Production && event.version < current)
        .map(|event| event.version)
        .max()
}

/// A model's page, with whatever an action or the prediction form has to add to it.
pub(super) async fn detail_page(
    state: &ConsoleState,
    viewer: &Viewer,
    name: &str,
    view: DetailView,
) -> Result<Markup, ConsoleError> {
    let record = model_or_404(state, name).await?;
    let store = &state.store;
    let versions = store.artifact_version_list(name, VERSIONS_SHOWN).await?;
    let events = store.model_alias_event_list(name).await?;
    let metrics = metric_names(&versions);
    let chosen = match view.metric.as_deref().filter(|metric| !metric.is_empty()) {
        Some(metric) if metrics.iter().any(|known| known == metric) => Some(metric.to_owned()),
        Some(metric) => {
            let choices = if metrics.is_empty() {
                "it has no metrics".to_owned()
            } else {
                metrics.join(", ")
            };
            return Err(ConsoleError::BadRequest(format!(
                "no version of model `{name}` recorded the metric `{metric}` ({choices})"
            )));
        }
        None => metrics.first().cloned(),
    };
    let chart = chosen.as_deref().and_then(|metric| {
        let points: Vec<Point> = versions
            .iter()
            .rev()
            .filter_map(|version| {
                metric_of(version, metric).map(|value| Point {
                    version: version.version,
                    value,
                })
            })
            .collect();
        metric_chart::svg(name, metric, &points, record.production)
    });
    let columns: Vec<&str> = KEY_METRICS
        .into_iter()
        .filter(|key| metrics.iter().any(|metric| metric == key))
        .collect();
    let mlflow = mlflow_version_urls(state, name, &versions).await?;
    let any_mlflow = mlflow.iter().any(Option::is_some);
    let rollback_to = rollback_target(&events, record.production);
    let here = model_href(name);
    let prediction = prediction_section(state, viewer, &record, view.prediction.as_ref()).await;
    let body = html! {
        p.crumbs { a href="/models" { "Models" } " / " (name) }
        div.title-row {
            h1 { (name) }
            span class="kind kind-model" { "model" }
            a.button href={ "/artifacts/" (path_segment(name)) } { "As an artifact" }
        }
        @if let Some(notice) = &view.notice {
            p.notice role="status" { (notice) }
        }
        @if let Some(problem) = &view.problem {
            p.problem role="alert" { (problem) }
        }
        dl.facts {
            dt { "Production" } dd { (version_link(name, record.production)) }
            dt { "Staging" } dd { (version_link(name, record.staging)) }
            dt { "Latest version" } dd { (version_link(name, Some(record.latest_version))) }
            dt { "Updated" } dd { (time(record.updated_at)) }
        }
        @if viewer.can_act() && record.production.is_some() {
            @match rollback_to {
                Some(target) => form.actions method="post" action={ (here) "/rollback" } {
                    (csrf_field(viewer))
                    button.danger type="submit" title={ "Serve version " (target) " again" } { "Roll back production" }
                    span.muted { "to version " (target) }
                },
                None => p.muted { "No earlier production version to roll back to." },
            }
        }
        h2 { "Metrics" }
        @match &chosen {
            None => p.muted { "No version recorded metrics. A deploy records those of its evaluation." },
            Some(metric) => {
                nav.tabs {
                    @for candidate in &metrics {
                        a href={ (here) "?metric=" (super::dags::query_value(candidate)) }
                            aria-current=[(candidate == metric).then_some("page")] { (candidate) }
                    }
                }
                section.view {
                    @match &chart {
                        Some(svg) => div.scroll { (svg) },
                        None => p.muted { "No version shown recorded " (metric) "." },
                    }
                }
            },
        }
        h2 { "Versions" }
        @if i64::from(VERSIONS_SHOWN) < record.latest_version {
            p.muted { "The newest " (VERSIONS_SHOWN) " of " (record.latest_version) " versions." }
        }
        div.scroll {
            table.versions {
                thead {
                    tr {
                        th { "Version" } th { "Aliases" }
                        @for column in &columns { th.number { (column) } }
                        th { "Produced by" } th { "Created" }
                        @if any_mlflow { th { "MLflow" } }
                        @if viewer.can_act() { th { "Actions" } }
                    }
                }
                tbody {
                    @for (version, mlflow) in versions.iter().zip(&mlflow) {
                        @let in_production = record.production == Some(version.version);
                        tr aria-current=[in_production.then_some("true")] {
                            td { a href=(version_href(name, version.version)) { "v" (version.version) } }
                            td {
                                @if in_production { (alias_badge(ModelAlias::Production)) " " }
                                @if record.staging == Some(version.version) { (alias_badge(ModelAlias::Staging)) }
                            }
                            @for column in &columns {
                                td.number {
                                    @match metric_of(version, column) {
                                        Some(value) => (figure(value)),
                                        None => span.muted { "—" },
                                    }
                                }
                            }
                            td { (producer(version)) }
                            td { (time(version.created_at)) }
                            @if any_mlflow {
                                td {
                                    @if let Some(url) = mlflow { a href=(url) rel="noopener" { "MLflow" } }
                                }
                            }
                            @if viewer.can_act() {
                                td {
                                    @if in_production {
                                        span.muted { "in production" }
                                    } @else {
                                        form.inline method="post" action={ (here) "/promote" } {
                                            (csrf_field(viewer))
                                            input type="hidden" name="version" value=(version.version);
                                            button type="submit" { "Promote to production" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Try a prediction" }
        (prediction)
        h2 { "Alias history" }
        @if events.is_empty() {
            p.muted { "No alias has pointed at a version of " (name) " yet." }
        } @else {
            table.history {
                thead { tr { th { "When" } th { "Alias" } th { "Version" } th { "Before" } th { "Why" } } }
                tbody {
                    // Newest first, like the versions.
                    @for event in events.iter().rev() {
                        tr {
                            td { (time(event.created_at)) }
                            td { (alias_badge(event.alias)) }
                            td { (version_link(name, Some(event.version))) }
                            td { (version_link(name, event.previous)) }
                            td { (event.reason) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(name, viewer, Section::Models, body))
}

/// A model's page.
pub(crate) async fn page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath(name): HtmlPath<String>,
    HtmlQuery(query): HtmlQuery<ModelQuery>,
) -> Result<Markup, ConsoleError> {
    let view = DetailView {
        notice: notice(&query),
        metric: query.metric,
        ..DetailView::default()
    };
    detail_page(&state, &viewer, &name, view).await
}

/// An action the registry refused: the model's page again, naming the problem, with the
/// refusal's status. Failures that are not the viewer's to fix stay error pages.
async fn refused(
    state: &ConsoleState,
    viewer: &Viewer,
    name: &str,
    error: ConsoleError,
) -> Result<Response, ConsoleError> {
    let status = match &error {
        ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
        ConsoleError::BadRequest(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ConsoleError::Conflict(_) => StatusCode::CONFLICT,
        _ => return Err(error),
    };
    let view = DetailView {
        problem: Some(error.to_string()),
        ..DetailView::default()
    };
    let page = detail_page(state, viewer, name, view).await?;
    Ok((status, page).into_response())
}

/// Where an action that moved production redirects: the model's page, saying what moved.
fn moved_href(name: &str, done: &str, version: i64, previous: Option<i64>) -> String {
    let mut href = format!("{}?done={done}&version={version}", model_href(name));
    if let Some(previous) = previous {
        href.push_str(&format!("&previous={previous}"));
    }
    href
}

/// The promote button's form.
#[derive(Debug, Deserialize)]
pub(crate) struct PromoteForm {
    /// The version to serve.
    version: i64,
}

/// Points production at a version, then shows the model saying so.
pub(crate) async fn promote(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath(name): HtmlPath<String>,
    HtmlForm(form): HtmlForm<PromoteForm>,
) -> Result<Response, ConsoleError> {
    let moved = state
        .store
        .model_alias_set(
            &name,
            ModelAlias::Production,
            form.version,
            PROMOTED_REASON,
            now_micros(),
        )
        .await;
    match moved {
        Ok(previous) => {
            tracing::info!(
                message = "Model promoted from the console.",
                model = name,
                version = form.version,
                previous
            );
            let href = moved_href(&name, "promoted", form.version, previous);
            Ok(Redirect::to(&href).into_response())
        }
        Err(error) => refused(&state, &viewer, &name, error.into()).await,
    }
}

/// Moves production back to the version before, then shows the model saying so.
pub(crate) async fn rollback(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath(name): HtmlPath<String>,
) -> Result<Response, ConsoleError> {
    let moved = state
        .store
        .model_alias_rollback(&name, ModelAlias::Production, now_micros())
        .await;
    match moved {
        Ok((from, to)) => {
            tracing::info!(
                message = "Model rolled back from the console.",
                model = name,
                from,
                to
            );
            let href = moved_href(&name, "rolled_back", to, Some(from));
            Ok(Redirect::to(&href).into_response())
        }
        Err(error) => refused(&state, &viewer, &name, error.into()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(number: i64, metrics: serde_json::Value) -> ArtifactVersionRecord {
        ArtifactVersionRecord {
            id: number,
            name: "wq".to_owned(),
            kind: kiln_engine::dag::ArtifactKind::Model,
            version: number,
            blob: kiln_engine::artifacts::BlobRef {
                sha256: kiln_engine::artifacts::Sha256Digest::from_bytes([0; 32]),
                size: 1,
            },
            media_type: "application/json".to_owned(),
            producer: None,
            dataset: None,
            metadata: Some(serde_json::json!({ "metrics": metrics })),
            created_at: 0,
        }
    }

    #[test]
    fn key_metrics_come_first_then_the_others_by_name() {
        let versions = [
            version(
                2,
                serde_json::json!({ "zeta": 1, "rmse": 0.3, "note": "text" }),
            ),
            version(
                1,
                serde_json::json!({ "alpha": 2, "accuracy": 0.7, "matrix": [[1]] }),
            ),
        ];
        assert_eq!(
            metric_names(&versions),
            ["accuracy", "rmse", "alpha", "zeta"]
        );
        assert_eq!(metric_of(&versions[0], "rmse"), Some(0.3));
        assert_eq!(metric_of(&versions[0], "note"), None);
        assert_eq!(metric_of(&versions[1], "rmse"), None);
    }

    #[test]
    fn the_notice_is_built_from_numbers_only() {
        let query = |done: &str, version, previous| ModelQuery {
            done: Some(done.to_owned()),
            version,
            previous,
            metric: None,
        };
        assert_eq!(
            notice(&query("promoted", Some(3), Some(2))).as_deref(),
            Some(
                "Promoted version 3 to production (it was version 2); it is served within a second."
            )
        );
        assert_eq!(
            notice(&query("rolled_back", Some(1), Some(2))).as_deref(),
            Some(
                "Rolled production back to version 1 (it was version 2); it is served within a second."
            )
        );
        assert_eq!(notice(&query("hacked", Some(1), None)), None);
        assert_eq!(notice(&query("promoted", None, None)), None);
    }
}
