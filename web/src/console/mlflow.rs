//! The MLflow mirror's page: where MLflow is, and what waits in the outbox to reach it — events
//! being retried with their last error, and events given up on (parked), which an admin puts
//! back in line once MLflow accepts them again.

use axum::Extension;
use axum::extract::State;
use axum::response::Redirect;
use kiln_engine::store::{OutboxEntry, now_micros};
use maud::{Markup, html};

use super::ConsoleState;
use super::auth::Viewer;
use super::error::ConsoleError;
use super::layout::{self, Section, csrf_field, state_class, time};

/// The most events the page lists.
const EVENTS_SHOWN: u32 = 200;

fn event_state(event: &OutboxEntry) -> Markup {
    html! {
        @if event.parked {
            span class={ "state " (state_class("failed")) } { "parked" }
        } @else if event.attempts > 0 {
            span class={ "state " (state_class("up_for_retry")) } { "retrying" }
            " at " (time(event.next_attempt_at))
        } @else {
            span class={ "state " (state_class("queued")) } { "pending" }
        }
    }
}

/// The outbox page.
pub(crate) async fn page(
    State(state): State<ConsoleState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Markup, ConsoleError> {
    let events = match &state.mlflow {
        Some(_) => state.store.outbox_list(EVENTS_SHOWN).await?,
        None => Vec::new(),
    };
    let parked = events.iter().filter(|event| event.parked).count();
    let body = html! {
        p.crumbs { a href="/models" { "Models" } " / MLflow" }
        h1 { "MLflow mirror" }
        @match &state.mlflow {
            None => p.muted {
                "MLflow is not configured: start the server with --mlflow-tracking-uri (or MLFLOW_TRACKING_URI) to mirror runs, training and evaluation attempts and the model registry to it."
            },
            Some(links) => {
                p { "Runs and models are mirrored to " a href=(links.base()) rel="noopener" { (links.base()) } "." }
                @if events.is_empty() {
                    p.muted { "The outbox is empty: everything has reached MLflow." }
                } @else {
                    p {
                        (events.len()) " event(s) waiting"
                        @if parked > 0 { ", " strong { (parked) " parked" } " (given up on after repeated failures; nothing is lost)" }
                        "."
                    }
                    @if parked > 0 && viewer.can_act() {
                        form.inline method="post" action="/mlflow/retry" {
                            (csrf_field(&viewer))
                            button type="submit" { "Retry parked events" }
                        }
                    }
                    table.outbox {
                        thead { tr { th { "Id" } th { "Event" } th { "State" } th { "Failures" } th { "Written" } th { "Last error" } } }
                        tbody {
                            @for event in &events {
                                tr {
                                    td { (event.id) }
                                    td { (event.call.describe()) }
                                    td { (event_state(event)) }
                                    td { (event.attempts) }
                                    td { (time(event.created_at)) }
                                    td.error { (event.last_error.as_deref().unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        "MLflow mirror",
        &viewer,
        Section::Models,
        body,
    ))
}

/// Puts every parked event back in line.
pub(crate) async fn retry(State(state): State<ConsoleState>) -> Result<Redirect, ConsoleError> {
    if state.mlflow.is_none() {
        return Err(ConsoleError::NotFound(
            "MLflow is not configured on this server".to_owned(),
        ));
    }
    let count = state.store.outbox_unpark(now_micros()).await?;
    tracing::info!(
        message = "Parked MLflow events retried from the console.",
        count
    );
    Ok(Redirect::to("/mlflow"))
}
