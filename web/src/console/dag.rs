//! A DAG's page: its header (schedule, pause, trigger) and three views: the graph coloured by
//! the latest run, the grid of the last runs by tasks, and the stored versions of its file with
//! the source of each.

use std::collections::{HashMap, HashSet};

use axum::Extension;
use axum::extract::State;
use kiln_engine::dag::MAX_DAG_FILE_BYTES;
use kiln_engine::state::TaskState;
use kiln_engine::store::{
    DagPlan, DagRecord, DagVersionRecord, RunFilter, RunRecord, TaskInstanceRecord,
};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ConsoleState;
use super::auth::Viewer;
use super::dags::{pause_toggle, query_value, run_squares, schedule_cell, trigger_form};
use super::error::ConsoleError;
use super::extract::{HtmlPath, HtmlQuery};
use super::graph;
use super::layout::{self, Section, state_class, time};

/// Runs in the grid, like Airflow's default.
const GRID_RUNS: u32 = 25;
/// Runs counted per DAG version on the source view.
const VERSION_RUNS: u32 = 100;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum View {
    #[default]
    Graph,
    Grid,
    Source,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DagPageQuery {
    #[serde(default)]
    view: View,
    /// On the source view, the version to show (its number); the active one by default.
    version: Option<i64>,
}

/// The DAG page; each view loads only what it shows.
pub(crate) async fn page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
    HtmlPath(dag_id): HtmlPath<String>,
    HtmlQuery(query): HtmlQuery<DagPageQuery>,
) -> Result<Markup, ConsoleError> {
    let store = &state.store;
    let record = store
        .dag_get(&dag_id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("DAG `{dag_id}` not found")))?;
    let plan = store.dag_version_get(record.current_version_id).await?;
    let limit = match query.view {
        View::Graph => 10,
        View::Grid => GRID_RUNS,
        View::Source => VERSION_RUNS,
    };
    let runs = store
        .run_list(&RunFilter {
            dag_id: Some(dag_id.clone()),
            state: None,
            limit: Some(limit),
        })
        .await?;
    let content = match query.view {
        View::Graph => graph_view(&state, &plan, runs.first()).await?,
        View::Grid => grid_view(&state, &plan, &runs).await?,
        View::Source => source_view(&state, &record, &runs, query.version).await?,
    };
    let dag = &plan.dag;
    let tab = |view: View, label: &str, href: String| {
        html! { a href=(href) aria-current=[(query.view == view).then_some("page")] { (label) } }
    };
    let here = format!("/dags/{dag_id}");
    let body = html! {
        p.crumbs { a href="/dags" { "DAGs" } " / " (dag.id) }
        div.title-row {
            h1 { (dag.id) }
            (pause_toggle(&viewer, &dag.id, record.paused, &here))
            (trigger_form(&viewer, dag, None, false))
        }
        @if !dag.description.is_empty() { p { (dag.description) } }
        dl.facts {
            dt { "Schedule" } dd { (schedule_cell(dag, record.paused)) }
            dt { "Tags" } dd {
                @for tag in &dag.tags { a.tag href={ "/dags?tag=" (query_value(tag)) } { (tag) } " " }
                @if dag.tags.is_empty() { span.muted { "none" } }
            }
            dt { "Tasks" } dd { (dag.tasks.len()) }
            dt { "Version" } dd { (record.current_version) }
            dt { "Latest runs" } dd { (run_squares(&runs[..runs.len().min(10)])) }
        }
        nav.tabs {
            (tab(View::Graph, "Graph", here.clone()))
            (tab(View::Grid, "Grid", format!("{here}?view=grid")))
            (tab(View::Source, "Source", format!("{here}?view=source")))
        }
        (content)
    };
    Ok(layout::page(&dag.id, &viewer, Section::Dags, body))
}

async fn graph_view(
    state: &ConsoleState,
    plan: &DagPlan,
    latest: Option<&RunRecord>,
) -> Result<Markup, ConsoleError> {
    let instances = match latest {
        Some(run) => state.store.task_instance_list(run.id).await?,
        None => Vec::new(),
    };
    let states: HashMap<&str, TaskState> = instances
        .iter()
        .map(|instance| (instance.task_id.as_str(), instance.state))
        .collect();
    Ok(html! {
        section.view {
            @match latest {
                Some(run) => p.muted {
                    "Coloured by the latest run, "
                    a href={ "/runs/" (run.id) } { "run " (run.id) }
                    " (" (run.state) "); a task opens its attempt in that run."
                },
                None => p.muted { "No run yet." },
            }
            div.scroll { (graph::svg(&plan.dag, &states, latest.map(|run| run.id))) }
        }
    })
}

/// The grid: tasks down, runs across (oldest left), from one query for all their task
/// instances.
async fn grid_view(
    state: &ConsoleState,
    plan: &DagPlan,
    runs: &[RunRecord],
) -> Result<Markup, ConsoleError> {
    let run_ids: Vec<i64> = runs.iter().map(|run| run.id).collect();
    let mut by_run: HashMap<i64, HashMap<String, TaskInstanceRecord>> = HashMap::new();
    for instance in state.store.task_instance_list_for_runs(&run_ids).await? {
        by_run
            .entry(instance.run_id)
            .or_default()
            .insert(instance.task_id.clone(), instance);
    }
    let columns: Vec<(&RunRecord, HashMap<String, TaskInstanceRecord>)> = runs
        .iter()
        .rev()
        .map(|run| (run, by_run.remove(&run.id).unwrap_or_default()))
        .collect();
    // The current version's tasks in order, then tasks only older runs had.
    let mut rows: Vec<String> = plan.dag.tasks.iter().map(|task| task.id.clone()).collect();
    let known: HashSet<String> = rows.iter().cloned().collect();
    let mut older: Vec<String> = columns
        .iter()
        .flat_map(|(_, instances)| instances.keys())
        .filter(|task_id| !known.contains(*task_id))
        .cloned()
        .collect::<HashSet<String>>()
        .into_iter()
        .collect();
    older.sort();
    rows.extend(older);
    Ok(html! {
        section.view {
            @if columns.is_empty() {
                p.muted { "No run yet." }
            } @else {
                div.scroll {
                    table.grid {
                        thead {
                            tr {
                                th { "Task \\ run" }
                                @for (run, _) in &columns {
                                    th {
                                        a class={ "sq " (state_class(run.state.as_str())) } href={ "/runs/" (run.id) }
                                            title={ "run " (run.id) ": " (run.state) } {}
                                    }
                                }
                            }
                        }
                        tbody {
                            @for task_id in &rows {
                                tr {
                                    th { (task_id) }
                                    @for (run, instances) in &columns {
                                        td {
                                            @match instances.get(task_id) {
                                                Some(instance) => a class={ "sq " (state_class(instance.state.as_str())) }
                                                    href={ "/runs/" (run.id) "/tasks/" (task_id) }
                                                    title={ (task_id) " in run " (run.id) ": " (instance.state) } {},
                                                None => span.sq.st-none title="not in this run" {},
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// The stored versions of the DAG's file (number, hash, load time, and how many of the latest
/// runs ran each), the source of one of them as stored, and its definition. The file on disk is
/// read only to say when it has changed since the active version was loaded.
async fn source_view(
    state: &ConsoleState,
    record: &DagRecord,
    runs: &[RunRecord],
    wanted: Option<i64>,
) -> Result<Markup, ConsoleError> {
    let store = &state.store;
    let versions = store.dag_version_list(&record.id).await?;
    let number = wanted.unwrap_or(record.current_version);
    let shown: &DagVersionRecord = versions
        .iter()
        .find(|version| version.version == number)
        .ok_or_else(|| {
            ConsoleError::NotFound(format!("DAG `{}` has no version {number}", record.id))
        })?;
    let source = store.dag_version_get_source(shown.id).await?;
    let plan = store.dag_version_get(shown.id).await?;
    let mut by_version: HashMap<i64, usize> = HashMap::new();
    for run in runs {
        *by_version.entry(run.dag_version_id).or_default() += 1;
    }
    let disk = read_source(&record.file_path).await;
    let changed_on_disk = matches!(&disk, Ok(text) if hex::encode(Sha256::digest(text.as_bytes())) != record.source_hash);
    let definition = serde_json::to_string_pretty(&plan.dag)
        .unwrap_or_else(|error| format!("(the definition does not serialize: {error})"));
    let here = format!("/dags/{}?view=source", record.id);
    Ok(html! {
        section.view {
            dl.facts {
                dt { "Active version" } dd { (record.current_version) " (id " (record.current_version_id) ")" }
                dt { "File" } dd { code { (record.file_path) } }
                dt { "SHA-256" } dd { code { (record.source_hash) } }
                dt { "Loaded" } dd { (time(record.updated_at)) }
            }
            @match &disk {
                Ok(text) if changed_on_disk => {
                    p.problem { "The file has changed since version " (record.current_version)
                        " was loaded: the change is picked up at the next sync, or, if it does not load, "
                        "it is listed on the DAGs page with its errors." }
                    details {
                        summary { "Source on disk now" }
                        pre.source { code { (text) } }
                    }
                }
                Ok(_) => {}
                Err(problem) => p.muted { "The file cannot be read now: " (problem) },
            }
            h2 { "Versions" }
            table.versions {
                thead { tr { th { "Version" } th { "SHA-256" } th { "Loaded" } th { "Runs" } } }
                tbody {
                    @for version in &versions {
                        tr aria-current=[(version.id == shown.id).then_some("true")] {
                            td {
                                a href={ (here) "&version=" (version.version) } { (version.version) }
                                @if version.id == record.current_version_id { " (active)" }
                            }
                            td { code title=(version.source_hash) { (version.source_hash.get(..12).unwrap_or(&version.source_hash)) } }
                            td { (time(version.created_at)) }
                            td {
                                @match by_version.get(&version.id) {
                                    Some(count) => { (count) " of the last " (runs.len()) }
                                    None => span.muted { "none of the last " (runs.len()) },
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Source of version " (shown.version) }
            @match source {
                Some(text) => pre.source { code { (text) } },
                None => p.problem { "The source of this version is not stored." },
            }
            details {
                summary { "Definition as stored (version " (shown.version) ", JSON)" }
                pre.source { code { (definition) } }
            }
        }
    })
}

async fn read_source(path: &str) -> Result<String, String> {
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(|error| format!("{path}: {error}"))?;
    if metadata.len() > MAX_DAG_FILE_BYTES as u64 {
        return Err(format!("{path} is larger than a DAG file may be"));
    }
    tokio::fs::read_to_string(path)
        .await
        .map_err(|error| format!("{path}: {error}"))
}
