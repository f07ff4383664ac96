//! The DAGs page (every DAG with its schedule, latest runs, pause toggle and trigger form, and
//! the files that failed to load), and the trigger and pause actions.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use kiln_engine::dag::Dag;
use kiln_engine::scheduler::SchedulerError;
use kiln_engine::store::{DagPlan, DagRecord, RunRecord, TriggerKind};
use maud::{Markup, html};
use serde::Deserialize;

use super::ConsoleState;
use super::auth::{Viewer, local_path};
use super::error::ConsoleError;
use super::extract::{HtmlForm, HtmlPath, HtmlQuery};
use super::layout::{self, Section, csrf_field, state_class, time};
use super::{params, schedule_words};

/// Runs shown per DAG on the DAGs page.
const RECENT_RUNS: u32 = 10;

/// The schedule in words and the next run time, or "manual only".
pub(crate) fn schedule_cell(dag: &Dag, paused: bool) -> Markup {
    let Some(schedule) = &dag.schedule else {
        return html! { span.muted { "manual only" } };
    };
    let words = schedule_words::describe(schedule.expression(), &dag.timezone.to_string());
    let next = schedule
        .next_after(Utc::now(), dag.timezone)
        .map(|next| next.with_timezone(&Utc))
        .filter(|next| dag.end_date.is_none_or(|end| *next <= end));
    html! {
        span.schedule title=(schedule.expression()) { (words) }
        br;
        @match next {
            Some(_) if paused => span.muted { "paused" },
            Some(next) => span.muted { "next " (time(next.timestamp_micros())) },
            None => span.muted { "no further runs" },
        }
    }
}

/// Text made safe for a query string.
pub(crate) fn query_value(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Runs as coloured squares, oldest first, each a link to its run.
pub(crate) fn run_squares(runs: &[RunRecord]) -> Markup {
    html! {
        span.squares {
            @for run in runs.iter().rev() {
                a class={ "sq " (state_class(run.state.as_str())) } href={ "/runs/" (run.id) }
                    title={ "run " (run.id) ": " (run.state) ", " (kiln_engine::scheduler::to_datetime(run.logical_date).format("%Y-%m-%d %H:%M UTC")) } {}
            }
        }
    }
}

/// The pause toggle: a button for admins, the state for everyone else.
pub(crate) fn pause_toggle(viewer: &Viewer, dag_id: &str, paused: bool, return_to: &str) -> Markup {
    html! {
        @if viewer.can_act() {
            form.inline method="post" action={ "/dags/" (dag_id) "/pause" } {
                (csrf_field(viewer))
                input type="hidden" name="paused" value=(!paused);
                input type="hidden" name="return_to" value=(return_to);
                button type="submit" class=(if paused { "toggle off" } else { "toggle on" })
                    title=(if paused { "Paused: click to resume scheduling" } else { "Active: click to pause" }) {
                    (if paused { "paused" } else { "active" })
                }
            }
        } @else {
            span class=(if paused { "toggle off" } else { "toggle on" }) { (if paused { "paused" } else { "active" }) }
        }
    }
}

/// The trigger button; with params, a form generated from their types, folded away until opened.
pub(crate) fn trigger_form(
    viewer: &Viewer,
    dag: &Dag,
    values: Option<&HashMap<String, String>>,
    open: bool,
) -> Markup {
    if !viewer.can_act() {
        return html! {};
    }
    let action = format!("/dags/{}/trigger", dag.id);
    html! {
        @if dag.params.is_empty() {
            form.inline method="post" action=(action) {
                (csrf_field(viewer))
                button.primary type="submit" { "Trigger" }
            }
        } @else {
            details.trigger open[open] {
                summary { "Trigger…" }
                form.params method="post" action=(action) {
                    (csrf_field(viewer))
                    (params::fields(&dag.params, values))
                    button.primary type="submit" { "Trigger" }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DagQuery {
    q: Option<String>,
    tag: Option<String>,
}

fn matches(dag: &Dag, query: &DagQuery) -> bool {
    let text = query
        .q
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_lowercase);
    let text_ok = text.is_none_or(|text| {
        dag.id.to_lowercase().contains(&text)
            || dag.description.to_lowercase().contains(&text)
            || dag
                .tags
                .iter()
                .any(|tag| tag.to_lowercase().contains(&text))
    });
    let tag_ok = query
        .tag
        .as_deref()
        .filter(|tag| !tag.is_empty())
        .is_none_or(|tag| dag.tags.iter().any(|candidate| candidate == tag));
    text_ok && tag_ok
}

struct Row {
    record: DagRecord,
    plan: Arc<DagPlan>,
    runs: Vec<RunRecord>,
}

/// The DAGs page. One query for the DAGs, one for the latest runs of all of them, and per DAG
/// its definition (cached: versions never change).
pub(crate) async fn list(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlQuery(query): HtmlQuery<DagQuery>,
) -> Result<Markup, ConsoleError> {
    let store = &state.store;
    let mut all_tags = BTreeSet::new();
    let mut rows = Vec::new();
    let records = store.dag_list().await?;
    let total = records.len();
    let mut latest: HashMap<String, Vec<RunRecord>> = HashMap::new();
    for run in store.run_list_latest_per_dag(RECENT_RUNS).await? {
        latest.entry(run.dag_id.clone()).or_default().push(run);
    }
    for record in records {
        let plan = store.dag_version_get(record.current_version_id).await?;
        all_tags.extend(plan.dag.tags.iter().cloned());
        if !matches(&plan.dag, &query) {
            continue;
        }
        let runs = latest.remove(&record.id).unwrap_or_default();
        rows.push(Row { record, plan, runs });
    }
    let file_errors = store.dag_file_error_list().await?;
    let q = query.q.clone().unwrap_or_default();
    let selected_tag = query.tag.clone().unwrap_or_default();
    let return_to = "/dags";
    let body = html! {
        h1 { "DAGs" }
        form.filters method="get" action="/dags" role="search" {
            input type="search" name="q" value=(q) placeholder="Search id, description, tags" aria-label="Search DAGs";
            select name="tag" aria-label="Tag" {
                option value="" { "All tags" }
                @for tag in &all_tags {
                    option value=(tag) selected[*tag == selected_tag] { (tag) }
                }
            }
            button type="submit" { "Filter" }
            @if !q.is_empty() || !selected_tag.is_empty() {
                a href="/dags" { "Clear" }
            }
            span.muted { (rows.len()) " of " (total) " DAGs" }
        }
        @if rows.is_empty() {
            p.muted { "No DAG matches." }
        } @else {
            table.dags {
                thead { tr { th { "DAG" } th { "Tags" } th { "Schedule" } th { "Last runs" } th { "State" } th { "Actions" } } }
                tbody {
                    @for row in &rows {
                        @let dag = &row.plan.dag;
                        tr {
                            td {
                                a.dag-id href={ "/dags/" (dag.id) } { (dag.id) }
                                @if !dag.description.is_empty() { div.muted { (dag.description) } }
                            }
                            td {
                                @for tag in &dag.tags {
                                    a.tag href={ "/dags?tag=" (query_value(tag)) } { (tag) } " "
                                }
                            }
                            td { (schedule_cell(dag, row.record.paused)) }
                            td { (run_squares(&row.runs)) }
                            td { (pause_toggle(&viewer, &dag.id, row.record.paused, return_to)) }
                            td { (trigger_form(&viewer, dag, None, false)) }
                        }
                    }
                }
            }
        }
        @if !file_errors.is_empty() {
            section.import-errors {
                h2 { "DAG files that failed to load" }
                p.muted { "Their DAGs keep running their last good version." }
                @for error in &file_errors {
                    details open {
                        summary { code { (error.file_path) } " " span.muted { "(" (time(error.updated_at)) ")" } }
                        pre.errors { (error.errors) }
                    }
                }
            }
        }
    };
    Ok(layout::page("DAGs", &viewer, Section::Dags, body))
}

async fn dag_plan(state: &ConsoleState, dag_id: &str) -> Result<Arc<DagPlan>, ConsoleError> {
    let store = &state.store;
    let record = store
        .dag_get(dag_id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("DAG `{dag_id}` not found")))?;
    Ok(store.dag_version_get(record.current_version_id).await?)
}

fn trigger_page_body(
    viewer: &Viewer,
    dag: &Dag,
    values: Option<&HashMap<String, String>>,
    problem: Option<&str>,
) -> Markup {
    let body = html! {
        p.crumbs { a href="/dags" { "DAGs" } " / " a href={ "/dags/" (dag.id) } { (dag.id) } }
        h1 { "Trigger " (dag.id) }
        @if let Some(problem) = problem {
            p.problem role="alert" { (problem) }
        }
        @if viewer.can_act() {
            (trigger_form(viewer, dag, values, true))
        } @else {
            p.muted { "This login is read-only." }
        }
    };
    layout::page(&format!("Trigger {}", dag.id), viewer, Section::Dags, body)
}

/// The trigger form on a page of its own: where a refused trigger comes back to, with the
/// values as submitted and the reason.
pub(crate) async fn trigger_page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath(dag_id): HtmlPath<String>,
) -> Result<Markup, ConsoleError> {
    let plan = dag_plan(&state, &dag_id).await?;
    Ok(trigger_page_body(&viewer, &plan.dag, None, None))
}

/// Triggers a run with the submitted params and shows it.
pub(crate) async fn trigger(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath(dag_id): HtmlPath<String>,
    HtmlForm(form): HtmlForm<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let plan = dag_plan(&state, &dag_id).await?;
    let refused = |problem: String| {
        let values = params::submitted(&form);
        let page = trigger_page_body(&viewer, &plan.dag, Some(&values), Some(&problem));
        Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
    };
    let values = match params::parse(&plan.dag.params, &form) {
        Ok(values) => values,
        Err(problem) => return refused(problem),
    };
    match state
        .scheduler
        .trigger(&dag_id, &values, TriggerKind::Manual)
        .await
    {
        Ok(run) => {
            tracing::info!(
                message = "Run triggered from the console.",
                dag_id,
                run_id = run.id
            );
            Ok(Redirect::to(&format!("/runs/{}", run.id)).into_response())
        }
        Err(SchedulerError::InvalidParams { problems, .. }) => refused(problems),
        Err(SchedulerError::Invalid(problem)) => refused(problem),
        Err(error) => Err(error.into()),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PauseForm {
    paused: bool,
    return_to: Option<String>,
}

/// Pauses or resumes a DAG, then goes back to where the button was.
pub(crate) async fn set_paused(
    State(state): State<ConsoleState>,
    HtmlPath(dag_id): HtmlPath<String>,
    HtmlForm(form): HtmlForm<PauseForm>,
) -> Result<Redirect, ConsoleError> {
    state.scheduler.set_paused(&dag_id, form.paused).await?;
    let fallback = format!("/dags/{dag_id}");
    Ok(Redirect::to(
        local_path(form.return_to.as_deref()).unwrap_or(&fallback),
    ))
}
