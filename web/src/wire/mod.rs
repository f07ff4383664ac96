//! The JSON shapes of the REST and execution APIs: this crate's own types, so that the wire
//! format is a decision of its own and not a side effect of engine refactors.

mod artifacts;
mod completions;
mod dags;
mod exec;
mod models;
mod runs;
pub(crate) mod schema;
mod workers;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use artifacts::{
    ArtifactDetail, ArtifactList, ArtifactView, AttemptView, DatasetView, LineageEdgeView,
    LineageSourceView, LineageView, VersionView,
};
pub(crate) use artifacts::{DetailQuery, LineageQuery, ListQuery};
pub use completions::{
    CacheReport, ClaimNext, CompleteRequest, CompleteResponse, CompletionReport, CompletionResult,
    OutputReport,
};
pub use dags::{
    DagDetail, DagList, DagSummary, ImportError, ParamView, TaskDefinitionView, TriggerRequest,
};
pub use exec::{
    Assignment, BlobView, CacheHitView, CacheLookupRequest, CacheLookupResponse, ClaimRequest,
    ClaimResponse, HeartbeatResponse, InputAssignment, Lease, LeasesRequest, LogChunkUpload,
    LogsRequest, LogsResponse, OutputAssignment, RegisterRequest, RegisterResponse,
    ReleaseResponse,
};
pub use models::{
    AliasEventView, AliasMove, ModelDetail, ModelList, ModelSummary, ModelVersionView,
    PredictRequest, PredictResponse, PromoteRequest, RollbackRequest, ServedView,
};
pub use runs::{
    CancelResponse, ClearRequest, ClearResponse, LogChunkView, LogPage, MarkRequest, MlflowRunView,
    RunDetail, RunList, RunView, TaskInstanceView,
};
pub(crate) use runs::{LogQuery, RunQuery};
pub use workers::{WorkerList, WorkerView};

/// Times on the wire are RFC 3339 strings (UTC).
pub fn time(micros: i64) -> String {
    kiln_engine::scheduler::to_datetime(micros).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Reads a time written by [`time`]; anything else is the epoch.
pub(crate) fn micros_of(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).map_or(0, |time| time.timestamp_micros())
}

/// The body of every error response (`AppError`): a message the caller can act on.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong; for a server failure, only that it happened.
    pub error: String,
}
