//! Workers on the wire, as `GET /api/v1/workers` lists them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `GET /api/v1/workers`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WorkerList {
    /// Workers the server has heard from.
    pub workers: Vec<WorkerView>,
}

/// A worker, as it registered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WorkerView {
    /// Unique among live workers.
    pub worker_id: String,
    /// Queues served.
    pub queues: Vec<String>,
    /// Tasks run at once.
    pub concurrency: u32,
    /// The worker's host.
    pub hostname: String,
    /// The worker's process id.
    pub pid: u32,
    /// kiln's version on the worker.
    pub version: String,
    /// When the server last heard from it, RFC 3339.
    pub last_seen: String,
}
