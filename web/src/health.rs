//! The probes: `/healthz` for liveness and `/readyz` for readiness, judged by the scheduler's
//! timed loop rather than by the socket answering (a server whose loop has stopped must be
//! restarted, though its HTTP port still works).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_engine::scheduler::Scheduler;
use serde::Serialize;

/// `200 ok` while the timed loop completes ticks; `503` with the reason once it has not for
/// the stall limit (a hung loop, or a store unreachable that long).
pub(crate) async fn live(State(scheduler): State<Arc<Scheduler>>) -> Response {
    match scheduler.health().live() {
        Ok(()) => "ok".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

/// Every duty of the timed loop, and whether the server is ready for traffic.
#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    duties: Vec<DutyView>,
}

/// One duty's record.
#[derive(Debug, Serialize)]
struct DutyView {
    name: &'static str,
    ok: bool,
    consecutive_failures: u32,
    failures_total: u64,
    /// RFC 3339.
    last_success: Option<String>,
    seconds_since_success: Option<f64>,
    last_error: Option<String>,
}

/// `200` with every duty's record when the loop is live and its store reachable; `503` with
/// the same record and the reason otherwise.
pub(crate) async fn ready(State(scheduler): State<Arc<Scheduler>>) -> Response {
    let health = scheduler.health();
    let verdict = health.ready();
    let duties = health
        .duties()
        .into_iter()
        .map(|(name, status)| DutyView {
            name,
            ok: status.consecutive_failures == 0,
            consecutive_failures: status.consecutive_failures,
            failures_total: status.failures_total,
            last_success: status.last_success.map(|at| at.to_rfc3339()),
            seconds_since_success: status.since_success().map(|since| since.as_secs_f64()),
            last_error: status.last_error,
        })
        .collect();
    let status = if verdict.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready: verdict.is_ok(),
        reason: verdict.err(),
        duties,
    };
    (status, Json(body)).into_response()
}
