//! The worker runtime: claims tasks through an [`ExecutionApi`], runs their plugins, heartbeats
//! their leases, ships their logs and reports how they ended.
//!
//! The runtime is transport-agnostic: `kiln worker` gives it an HTTP client, tests and benchmarks
//! may give it the server's [`ExecutionService`](crate::execution::ExecutionService) directly.
//! A task's logs are always shipped before its completion, so a finished run's logs are whole.

mod cache;
mod task_log;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::execution::{
    ApiError, ExecutionApi, LogUpload, NextClaim, Registration, RegistrationAck,
};

/// A finished attempt's report, the log chunks not yet stored, and the attempt's slot, which the
/// completion call may fill at once with the next task.
type Report = (Completion, Vec<LogUpload>, OwnedSemaphorePermit);

/// A task to run, with the slot it runs in.
type Assignment = (ClaimedTask, OwnedSemaphorePermit);
use crate::artifacts::{BlobError, BlobRef, BlobStore};
use crate::dag::template::{self, Bindings, TemplateError};
use crate::plugin::{
    InputFile, LogSink, LogStream, OutputSlot, PluginRegistry, TaskContext, TaskError,
};
use crate::store::{
    AttemptResult, CacheRecord, ClaimedTask, Completion, OutputContent, ProducedOutput, now_micros,
};

pub use cache::cache_key;
pub use task_log::TaskLogLayer;

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The worker's id, unique among live workers.
    pub worker_id: String,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// How many tasks it runs at once.
    pub concurrency: usize,
    /// Where attempts get their scratch directories.
    pub work_root: PathBuf,
    /// On shutdown, how long running tasks may take to finish before they are handed back.
    pub shutdown_grace: Duration,
    /// The most log bytes kept per attempt; the rest is dropped, and the log says so.
    pub max_log_bytes: u64,
    /// How long one claim waits for work.
    pub claim_wait: Duration,
    /// The artifact store, when the worker has credentials for it; without, artifact bytes go
    /// through the server.
    pub artifacts: Option<Arc<BlobStore>>,
    /// The DAG folder as this worker sees it, passed on to plugins.
    pub dags_dir: Option<PathBuf>,
}

impl WorkerConfig {
    /// Defaults for a worker with this id: the `default` queue, one task per core, 30 s grace,
    /// 16 MiB of log per attempt.
    pub fn new(worker_id: impl Into<String>, work_root: PathBuf) -> WorkerConfig {
        WorkerConfig {
            worker_id: worker_id.into(),
            queues: vec!["default".to_owned()],
            concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            work_root,
            shutdown_grace: Duration::from_secs(30),
            max_log_bytes: 16 * 1024 * 1024,
            claim_wait: crate::execution::MAX_CLAIM_WAIT,
            artifacts: None,
            dags_dir: None,
        }
    }
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The server refused the worker token.
    #[error("the server refused the worker token; check --token / KILN_WORKER_TOKEN")]
    Unauthorized,
    /// The server refused the worker's registration.
    #[error("the server refused to register this worker: {0}")]
    Rejected(String),
    /// The scratch directory could not be prepared.
    #[error("cannot use the work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Attempts run to an end (success or failure).
    pub attempts: u64,
    /// Attempts handed back at shutdown.
    pub handed_back: u64,
}

/// A running attempt, as the heartbeat and shutdown see it.
struct Running {
    fence: i64,
    cancel: CancellationToken,
    /// Set when the server said the task moved on, or it was handed back: its result is moot.
    abandoned: Arc<AtomicBool>,
}

type RunningMap = Arc<Mutex<HashMap<i64, Running>>>;

fn lock(running: &RunningMap) -> std::sync::MutexGuard<'_, HashMap<i64, Running>> {
    running
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What flows to the log shipper: lines, and the end of an attempt (whose completion is sent
/// only after its last lines are stored).
enum LogEvent {
    Line {
        task_instance_id: i64,
        try_number: i64,
        text: String,
    },
    Finished {
        task_instance_id: i64,
        try_number: i64,
        completion: Option<Completion>,
        slot: OwnedSemaphorePermit,
    },
}

/// The log sink of one attempt: forwards lines, enforcing the per-attempt byte cap.
struct AttemptLog {
    task_instance_id: i64,
    try_number: i64,
    sender: mpsc::UnboundedSender<LogEvent>,
    written: AtomicU64,
    dropped: AtomicU64,
    cap: u64,
}

impl AttemptLog {
    fn send(&self, text: String) {
        let _ = self.sender.send(LogEvent::Line {
            task_instance_id: self.task_instance_id,
            try_number: self.try_number,
            text,
        });
    }
}

impl LogSink for AttemptLog {
    fn line(&self, stream: LogStream, text: &str) {
        let line = match stream {
            LogStream::System => format!("[kiln] {text}\n"),
            LogStream::Stdout | LogStream::Stderr | LogStream::Event => format!("{text}\n"),
        };
        let size = line.len() as u64;
        let before = self.written.fetch_add(size, Ordering::Relaxed);
        if before + size <= self.cap {
            self.send(line);
        } else {
            if before <= self.cap {
                self.send(format!(
                    "[kiln] the log reached its cap of {} bytes; further output is dropped\n",
                    self.cap
                ));
            }
            self.dropped.fetch_add(size, Ordering::Relaxed);
        }
    }
}

/// Runs a worker until `shutdown` fires (then drains within the grace period) or the server
/// refuses its token.
pub async fn run_worker(
    api: Arc<dyn ExecutionApi>,
    registry: PluginRegistry,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<WorkerSummary, WorkerError> {
    let mut config = config;
    std::fs::create_dir_all(&config.work_root).map_err(|source| WorkerError::WorkDir {
        path: config.work_root.clone(),
        source,
    })?;
    // Plugins run programs in other directories (a `command` task's own work directory), so
    // every path handed to them must not depend on where the worker was started.
    config.work_root =
        std::path::absolute(&config.work_root).map_err(|source| WorkerError::WorkDir {
            path: config.work_root.clone(),
            source,
        })?;
    let Some(ack) = register(&*api, &config, &shutdown).await? else {
        return Ok(WorkerSummary::default());
    };
    tracing::info!(message = "Worker started.", worker_id = %config.worker_id, concurrency = config.concurrency);

    let running: RunningMap = Arc::new(Mutex::new(HashMap::new()));
    let stop_background = CancellationToken::new();
    let (completion_sender, completion_receiver) = mpsc::unbounded_channel::<Report>();
    let (log_sender, log_receiver) = mpsc::unbounded_channel::<LogEvent>();
    let logs = tokio::spawn(ship_logs(
        api.clone(),
        config.worker_id.clone(),
        log_receiver,
        completion_sender,
    ));
    let heartbeats = tokio::spawn(heartbeat(
        api.clone(),
        config.worker_id.clone(),
        running.clone(),
        Duration::from_millis(ack.heartbeat_ms),
        stop_background.clone(),
    ));

    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let attempts_done = Arc::new(AtomicU64::new(0));
    let (assign, mut assigned) = mpsc::unbounded_channel::<Assignment>();
    let stop_claiming = shutdown.child_token();
    let claimer = tokio::spawn(claim_loop(
        api.clone(),
        config.clone(),
        slots.clone(),
        assign.clone(),
        stop_claiming.clone(),
    ));
    let completions = tokio::spawn(send_completions(
        api.clone(),
        config.clone(),
        completion_receiver,
        assign,
        stop_claiming.clone(),
    ));
    let new_attempt = || Attempt {
        api: api.clone(),
        artifacts: config.artifacts.clone(),
        dags_dir: config.dags_dir.clone(),
        registry: registry.clone(),
        running: running.clone(),
        logs: log_sender.clone(),
        work_root: config.work_root.clone(),
        max_log_bytes: config.max_log_bytes,
        done: attempts_done.clone(),
    };
    let mut attempt_tasks = tokio::task::JoinSet::new();
    let mut claimer = Some(claimer);
    let mut fatal = None;
    loop {
        tokio::select! {
            next = assigned.recv() => {
                let Some((task, slot)) = next else { break };
                attempt_tasks.spawn(new_attempt().run(task, slot));
            }
            ended = async { claimer.as_mut().expect("awaited only while present").await }, if claimer.is_some() => {
                claimer = None;
                if let Ok(Err(error)) = ended {
                    fatal = Some(error);
                    break;
                }
            }
            () = shutdown.cancelled() => break,
        }
        while attempt_tasks.try_join_next().is_some() {}
    }
    stop_claiming.cancel();
    if let Some(claimer) = claimer {
        let _ = claimer.await;
    }
    // Tasks handed over while stopping still run: the server already counts them as claimed.
    while let Ok((task, slot)) = assigned.try_recv() {
        attempt_tasks.spawn(new_attempt().run(task, slot));
    }

    // Shutdown: let running attempts finish within the grace period, then hand back the rest.
    let grace = tokio::time::sleep(config.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = attempt_tasks.join_next() => if next.is_none() { break },
            () = &mut grace => break,
        }
    }
    let leftover: Vec<(i64, i64)> = {
        let running = lock(&running);
        running
            .iter()
            .map(|(id, attempt)| {
                attempt.abandoned.store(true, Ordering::Relaxed);
                attempt.cancel.cancel();
                (*id, attempt.fence)
            })
            .collect()
    };
    let mut summary = WorkerSummary::default();
    if !leftover.is_empty() {
        match api.release(&config.worker_id, &leftover).await {
            Ok(()) => summary.handed_back = leftover.len() as u64,
            Err(error) => {
                tracing::warn!(message = "Could not hand tasks back; their leases will expire.", %error)
            }
        }
    }
    while attempt_tasks.join_next().await.is_some() {}
    stop_background.cancel();
    drop(log_sender);
    let _ = heartbeats.await;
    let _ = logs.await;
    let _ = completions.await;
    // Completion calls still in flight at shutdown may have claimed tasks nobody will run now.
    let mut late = Vec::new();
    while let Ok((task, _slot)) = assigned.try_recv() {
        late.push((task.task_instance_id, task.fence));
    }
    if !late.is_empty() {
        // Never started: their claims are undone rather than counted as lost attempts.
        match api.unclaim(&config.worker_id, &late).await {
            Ok(()) => summary.handed_back += late.len() as u64,
            Err(error) => {
                tracing::warn!(message = "Could not hand tasks back; their leases will expire.", %error)
            }
        }
    }
    summary.attempts = attempts_done.load(Ordering::Relaxed);
    tracing::info!(
        message = "Worker stopped.",
        attempts = summary.attempts,
        handed_back = summary.handed_back
    );
    match fatal {
        Some(error) => Err(error),
        None => Ok(summary),
    }
}

/// Long-polls for work while slots are free and hands each claimed task, with its slot, to the
/// main loop. Stops when `stop` fires; fails only when the server refuses the token.
async fn claim_loop(
    api: Arc<dyn ExecutionApi>,
    config: WorkerConfig,
    slots: Arc<Semaphore>,
    assign: mpsc::UnboundedSender<Assignment>,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let mut backoff = Backoff::new();
    loop {
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return Ok(()),
            },
            () = stop.cancelled() => return Ok(()),
        };
        let free = u32::try_from(slots.available_permits() + 1).unwrap_or(u32::MAX);
        let claimed = tokio::select! {
            claimed = api.claim(&config.worker_id, &config.queues, free, config.claim_wait) => claimed,
            () = stop.cancelled() => return Ok(()),
        };
        let tasks = match claimed {
            Ok(tasks) => {
                backoff.reset();
                tasks
            }
            Err(ApiError::Unauthorized) => return Err(WorkerError::Unauthorized),
            Err(error) => {
                tracing::warn!(message = "Claim failed; retrying.", %error);
                drop(first);
                backoff.wait(&stop).await;
                continue;
            }
        };
        let mut first = Some(first);
        let mut surplus = Vec::new();
        for task in tasks {
            // Only this loop takes new slots, so the ones counted free before the claim are
            // still free; a surplus task would mean a server handing out more than asked for.
            match first
                .take()
                .map_or_else(|| slots.clone().try_acquire_owned().ok(), Some)
            {
                Some(slot) => {
                    let _ = assign.send((task, slot));
                }
                None => surplus.push((task.task_instance_id, task.fence)),
            }
        }
        if !surplus.is_empty() {
            tracing::warn!(
                message = "The server handed out more tasks than asked for; handing them back.",
                count = surplus.len()
            );
            if let Err(error) = api.unclaim(&config.worker_id, &surplus).await {
                tracing::warn!(message = "Could not hand tasks back; their leases will expire.", %error);
            }
        }
    }
}

async fn register(
    api: &dyn ExecutionApi,
    config: &WorkerConfig,
    shutdown: &CancellationToken,
) -> Result<Option<RegistrationAck>, WorkerError> {
    let registration = Registration {
        worker_id: config.worker_id.clone(),
        queues: config.queues.clone(),
        concurrency: u32::try_from(config.concurrency).unwrap_or(u32::MAX),
        hostname: hostname(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let mut backoff = Backoff::new();
    loop {
        match api.register(&registration).await {
            Ok(ack) => return Ok(Some(ack)),
            Err(ApiError::Unauthorized) => return Err(WorkerError::Unauthorized),
            Err(ApiError::Rejected(message)) => return Err(WorkerError::Rejected(message)),
            Err(error) => {
                tracing::warn!(message = "Server not reachable yet; retrying.", %error);
                if !backoff.wait(shutdown).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// This host's name, for worker ids and registration.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Everything one attempt needs besides its task.
struct Attempt {
    api: Arc<dyn ExecutionApi>,
    artifacts: Option<Arc<BlobStore>>,
    dags_dir: Option<PathBuf>,
    registry: PluginRegistry,
    running: RunningMap,
    logs: mpsc::UnboundedSender<LogEvent>,
    work_root: PathBuf,
    max_log_bytes: u64,
    done: Arc<AtomicU64>,
}

impl Attempt {
    async fn run(self, task: ClaimedTask, slot: OwnedSemaphorePermit) {
        let cancel = CancellationToken::new();
        let abandoned = Arc::new(AtomicBool::new(false));
        lock(&self.running).insert(
            task.task_instance_id,
            Running {
                fence: task.fence,
                cancel: cancel.clone(),
                abandoned: abandoned.clone(),
            },
        );
        let log = Arc::new(AttemptLog {
            task_instance_id: task.task_instance_id,
            try_number: task.try_number,
            sender: self.logs.clone(),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            cap: self.max_log_bytes,
        });
        let result = self.execute(&task, log.clone(), cancel).await;
        let dropped = log.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            log.send(format!(
                "[kiln] {dropped} bytes of output were dropped after the cap\n"
            ));
        }
        lock(&self.running).remove(&task.task_instance_id);
        self.done.fetch_add(1, Ordering::Relaxed);
        let completion = (!abandoned.load(Ordering::Relaxed)).then_some(Completion {
            task_instance_id: task.task_instance_id,
            fence: task.fence,
            result,
        });
        let _ = self.logs.send(LogEvent::Finished {
            task_instance_id: task.task_instance_id,
            try_number: task.try_number,
            completion,
            slot,
        });
    }

    async fn execute(
        &self,
        task: &ClaimedTask,
        log: Arc<AttemptLog>,
        cancel: CancellationToken,
    ) -> AttemptResult {
        let Some(plugin) = self.registry.get(&task.kind).cloned() else {
            let error = format!("this worker has no `{}` plugin", task.kind);
            log.line(LogStream::System, &error);
            return AttemptResult::Failure {
                error,
                retryable: false,
            };
        };
        // The params as this attempt sees them: what the cache key covers and the plugin gets.
        let substituted;
        let task = match substitute_params(task) {
            Ok(None) => task,
            Ok(Some(owned)) => {
                substituted = owned;
                &substituted
            }
            Err(error) => {
                let error = format!("params: {error}");
                log.line(LogStream::System, &error);
                return AttemptResult::Failure {
                    error,
                    retryable: false,
                };
            }
        };
        let cache_key = task.cache.then(|| cache_key(task, plugin.version()));
        if let Some(key) = &cache_key
            && let Some(hit) = self.cache_hit(key, &log).await
        {
            return hit;
        }
        let work_dir = self
            .work_root
            .join(format!("{}-{}", task.task_instance_id, task.try_number));
        // A plain call, not `tokio::fs`: creating one directory under an existing root takes
        // microseconds, less than a hop through the blocking thread pool and back.
        if let Err(error) = std::fs::create_dir_all(&work_dir) {
            let error = format!(
                "cannot create the work directory {}: {error}",
                work_dir.display()
            );
            return AttemptResult::Failure {
                error,
                retryable: true,
            };
        }
        log.line(
            LogStream::System,
            &format!(
                "attempt {} of task `{}` (run {}) starting",
                task.try_number, task.task_id, task.run_id
            ),
        );
        let result = match self.fetch_inputs(task, &work_dir, &log).await {
            Ok(inputs) => {
                self.run_plugin(
                    task,
                    plugin,
                    inputs,
                    &work_dir,
                    log.clone(),
                    cancel,
                    cache_key,
                )
                .await
            }
            Err(failure) => failure,
        };
        // Most attempts leave their directory empty, and removing an empty directory is one
        // quick system call; only a filled one goes through the blocking pool.
        if std::fs::remove_dir(&work_dir).is_err() {
            let _ = tokio::fs::remove_dir_all(&work_dir).await;
        }
        match &result {
            AttemptResult::Success { .. } => log.line(LogStream::System, "attempt succeeded"),
            AttemptResult::Failure { error, .. } => {
                log.line(LogStream::System, &format!("attempt failed: {error}"))
            }
        }
        result
    }

    /// Answers the reused outputs of an earlier attempt with the same cache key, if any. A
    /// failed lookup is logged and the task runs: the cache only ever saves work.
    async fn cache_hit(&self, key: &str, log: &AttemptLog) -> Option<AttemptResult> {
        match self.api.cache_lookup(key).await {
            Ok(Some(hit)) => {
                let from = &hit.attempt;
                log.line(
                    LogStream::System,
                    &format!(
                        "cache hit: reusing the outputs of run {} task `{}` attempt {} (cache key {key})",
                        from.run_id, from.task_id, from.try_number
                    ),
                );
                // The reused attempt's figures hold for these outputs too (an evaluation's
                // metrics, say), so they are kept, marked as reused.
                let mut summary = match hit.summary {
                    Some(serde_json::Value::Object(reused)) => reused,
                    _ => serde_json::Map::new(),
                };
                summary.insert("cache_hit".to_owned(), serde_json::Value::Bool(true));
                summary.insert(
                    "reused".to_owned(),
                    serde_json::json!({ "run_id": from.run_id, "task_id": from.task_id, "try_number": from.try_number }),
                );
                Some(AttemptResult::Success {
                    summary: serde_json::Value::Object(summary),
                    outputs: hit
                        .outputs
                        .iter()
                        .map(|output| ProducedOutput {
                            slot: output.slot.clone(),
                            content: OutputContent::Reused {
                                artifact_version_id: output.version.id,
                            },
                        })
                        .collect(),
                    cache: Some(CacheRecord {
                        key: key.to_owned(),
                        hit_of: Some(hit.attempt_id),
                    }),
                })
            }
            Ok(None) => {
                log.line(LogStream::System, &format!("cache miss (cache key {key})"));
                None
            }
            Err(error) => {
                log.line(
                    LogStream::System,
                    &format!("cache lookup failed, running the task: {error}"),
                );
                None
            }
        }
    }

    /// Downloads every input into `work_dir/inputs`, checked against its digest. A corrupt or
    /// missing blob fails the attempt for good, naming the artifact and version.
    async fn fetch_inputs(
        &self,
        task: &ClaimedTask,
        work_dir: &std::path::Path,
        log: &AttemptLog,
    ) -> Result<std::collections::BTreeMap<String, InputFile>, AttemptResult> {
        let mut inputs = std::collections::BTreeMap::new();
        if task.inputs.is_empty() {
            return Ok(inputs);
        }
        let dir = work_dir.join("inputs");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|error| AttemptResult::Failure {
                error: format!("cannot create {}: {error}", dir.display()),
                retryable: true,
            })?;
        for input in &task.inputs {
            let version = &input.version;
            let path = dir.join(file_name(&input.slot, Some(&version.media_type)));
            if let Err(error) = self.download(&version.blob, &path).await {
                let retryable = !matches!(
                    error,
                    BlobError::Corrupt { .. } | BlobError::NotFound { .. }
                );
                return Err(AttemptResult::Failure {
                    error: format!(
                        "input `{}` ({} {}): {error}",
                        input.slot,
                        version.kind.as_str(),
                        version.label()
                    ),
                    retryable,
                });
            }
            log.line(
                LogStream::System,
                &format!(
                    "input `{}`: {} {} ({} bytes, sha256:{})",
                    input.slot,
                    version.kind.as_str(),
                    version.label(),
                    version.blob.size,
                    version.blob.sha256
                ),
            );
            inputs.insert(
                input.slot.clone(),
                InputFile {
                    path,
                    version: version.clone(),
                },
            );
        }
        Ok(inputs)
    }

    async fn download(&self, blob: &BlobRef, dest: &std::path::Path) -> Result<(), BlobError> {
        match &self.artifacts {
            Some(store) => store.get_to_file(&blob.sha256, dest).await.map(drop),
            None => self.api.blob_download(blob, dest).await,
        }
    }

    async fn upload(&self, path: &std::path::Path) -> Result<BlobRef, BlobError> {
        match &self.artifacts {
            Some(store) => Ok(store.put_file(path).await?.blob),
            None => self.api.blob_upload(path).await,
        }
    }

    /// Runs the plugin under the task's timeout and stores its outputs.
    #[allow(clippy::too_many_arguments)]
    async fn run_plugin(
        &self,
        task: &ClaimedTask,
        plugin: Arc<dyn crate::plugin::ErasedPlugin>,
        inputs: std::collections::BTreeMap<String, InputFile>,
        work_dir: &std::path::Path,
        log: Arc<AttemptLog>,
        cancel: CancellationToken,
        cache_key: Option<String>,
    ) -> AttemptResult {
        let mut slots = std::collections::BTreeMap::new();
        if !task.outputs.is_empty() {
            let dir = work_dir.join("outputs");
            if let Err(error) = tokio::fs::create_dir_all(&dir).await {
                return AttemptResult::Failure {
                    error: format!("cannot create {}: {error}", dir.display()),
                    retryable: true,
                };
            }
            for output in &task.outputs {
                slots.insert(
                    output.name.clone(),
                    OutputSlot {
                        path: dir.join(file_name(&output.name, output.media_type.as_deref())),
                        kind: output.kind,
                        media_type: output.media_type.clone(),
                    },
                );
            }
        }
        let ctx = TaskContext::new(
            task.dag_id.clone(),
            task.run_id,
            task.task_id.clone(),
            u32::try_from(task.try_number).unwrap_or(u32::MAX),
            work_dir.to_owned(),
            log.clone(),
            cancel.clone(),
        )
        .with_inputs(inputs)
        .with_outputs(slots.clone())
        .with_dags_dir(self.dags_dir.clone())
        .with_run_params(task.run_params.as_object().cloned().unwrap_or_default());
        let params = task.params.clone();
        let span = tracing::info_span!(
            "task_attempt",
            task_instance_id = task.task_instance_id,
            try_number = task.try_number,
            task_id = %task.task_id
        );
        task_log::attach(&span, log.clone());
        let mut handle =
            tokio::spawn(async move { plugin.run(&ctx, params).await }.instrument(span));
        let remaining = task
            .timeout_at
            .map(|at| Duration::from_micros(u64::try_from(at - now_micros()).unwrap_or(0)));
        let timeout = async {
            match remaining {
                Some(remaining) => tokio::time::sleep(remaining).await,
                None => std::future::pending().await,
            }
        };
        let mut timed_out = false;
        let joined = tokio::select! {
            joined = &mut handle => joined,
            () = timeout => {
                timed_out = true;
                cancel.cancel();
                finish_or_abort(handle).await
            }
        };
        match joined {
            _ if timed_out => AttemptResult::Failure {
                error: "timed out".to_owned(),
                retryable: true,
            },
            Ok(Ok(output)) => match self.store_outputs(task, &slots, output.outputs, &log).await {
                Ok(outputs) => AttemptResult::Success {
                    summary: output.summary,
                    outputs,
                    cache: cache_key.map(|key| CacheRecord { key, hit_of: None }),
                },
                Err(failure) => failure,
            },
            Ok(Err(error)) => {
                let retryable = error.is_retryable() || matches!(error, TaskError::Cancelled(_));
                AttemptResult::Failure {
                    error: error.to_string(),
                    retryable,
                }
            }
            Err(join_error) if join_error.is_panic() => {
                let message = crate::plugin::panic_message(&*join_error.into_panic());
                AttemptResult::Failure {
                    error: format!("the plugin panicked: {message}"),
                    retryable: true,
                }
            }
            Err(join_error) => AttemptResult::Failure {
                error: format!("the attempt was aborted: {join_error}"),
                retryable: true,
            },
        }
    }

    /// Uploads every declared output: the file the plugin named, or the one at its slot's
    /// path. A declared output left unwritten, or an undeclared one, fails the attempt for good.
    async fn store_outputs(
        &self,
        task: &ClaimedTask,
        slots: &std::collections::BTreeMap<String, OutputSlot>,
        mut reported: std::collections::BTreeMap<String, crate::plugin::OutputFile>,
        log: &AttemptLog,
    ) -> Result<Vec<ProducedOutput>, AttemptResult> {
        let permanent = |error: String| AttemptResult::Failure {
            error,
            retryable: false,
        };
        if let Some(unknown) = reported.keys().find(|name| !slots.contains_key(*name)) {
            return Err(permanent(format!(
                "the plugin reported output `{unknown}`, which task `{}` does not declare",
                task.task_id
            )));
        }
        let mut produced = Vec::with_capacity(slots.len());
        for (name, slot) in slots {
            let file = reported.remove(name);
            let path = file.as_ref().map_or(&slot.path, |file| &file.path);
            match tokio::fs::metadata(path).await {
                Ok(metadata) if metadata.is_file() => {}
                _ => {
                    return Err(permanent(format!(
                        "the task did not write its declared output `{name}` (expected a file at {})",
                        path.display()
                    )));
                }
            }
            let blob = self
                .upload(path)
                .await
                .map_err(|error| AttemptResult::Failure {
                    error: format!("storing output `{name}`: {error}"),
                    retryable: true,
                })?;
            let media_type = file
                .as_ref()
                .and_then(|file| file.media_type.clone())
                .or_else(|| slot.media_type.clone())
                .unwrap_or_else(|| guess_media_type(path).to_owned());
            log.line(
                LogStream::System,
                &format!(
                    "output `{name}`: stored {} bytes as sha256:{}",
                    blob.size, blob.sha256
                ),
            );
            produced.push(ProducedOutput {
                slot: name.clone(),
                content: OutputContent::Blob {
                    blob,
                    media_type,
                    metadata: file.as_ref().and_then(|file| file.metadata.clone()),
                    dataset: file.and_then(|file| file.dataset),
                },
            });
        }
        Ok(produced)
    }
}

/// A local file name for an input or output: its name, with the extension its media type
/// suggests, so that programs which look at extensions see what they expect.
fn file_name(name: &str, media_type: Option<&str>) -> String {
    let extension = match media_type {
        Some("text/csv") => ".csv",
        Some("application/vnd.apache.parquet") => ".parquet",
        Some("application/json") => ".json",
        Some("application/x-ndjson") => ".jsonl",
        Some("image/svg+xml") => ".svg",
        _ => "",
    };
    format!("{name}{extension}")
}

/// The media type a file's extension suggests.
fn guess_media_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|extension| extension.to_str()) {
        Some("csv") => "text/csv",
        Some("parquet") => "application/vnd.apache.parquet",
        Some("json") => "application/json",
        Some("jsonl" | "ndjson") => "application/x-ndjson",
        Some("svg") => "image/svg+xml",
        Some("txt" | "log") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// Gives a cancelled plugin a moment to stop on its own, then aborts it.
async fn finish_or_abort(
    mut handle: tokio::task::JoinHandle<Result<crate::plugin::TaskOutput, TaskError>>,
) -> Result<Result<crate::plugin::TaskOutput, TaskError>, tokio::task::JoinError> {
    match tokio::time::timeout(Duration::from_secs(10), &mut handle).await {
        Ok(joined) => joined,
        Err(_) => {
            handle.abort();
            handle.await
        }
    }
}

async fn heartbeat(
    api: Arc<dyn ExecutionApi>,
    worker_id: String,
    running: RunningMap,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let snapshot: Vec<(i64, i64)> = lock(&running)
            .iter()
            .map(|(id, attempt)| (*id, attempt.fence))
            .collect();
        match api.heartbeat(&worker_id, &snapshot).await {
            Ok(stop_these) => {
                let running = lock(&running);
                for id in stop_these {
                    if let Some(attempt) = running.get(&id) {
                        tracing::info!(
                            message = "The server moved a task on; stopping it.",
                            task_instance_id = id
                        );
                        attempt.abandoned.store(true, Ordering::Relaxed);
                        attempt.cancel.cancel();
                    }
                }
            }
            Err(error) => tracing::warn!(message = "Heartbeat failed.", %error),
        }
    }
}

/// Batches log lines into numbered chunks and ships them every 100 ms; when an attempt ends, its
/// unshipped chunks travel with its completion, so they are stored in the same transaction.
async fn ship_logs(
    api: Arc<dyn ExecutionApi>,
    worker_id: String,
    mut events: mpsc::UnboundedReceiver<LogEvent>,
    completions: mpsc::UnboundedSender<Report>,
) {
    const CHUNK_BYTES: usize = 32 * 1024;
    let mut buffers: HashMap<(i64, i64), (i64, String)> = HashMap::new();
    let mut ready: Vec<LogUpload> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut open = true;
    while open || !ready.is_empty() {
        tokio::select! {
            event = events.recv(), if open => match event {
                Some(LogEvent::Line { task_instance_id, try_number, text }) => {
                    let (seq, buffer) = buffers.entry((task_instance_id, try_number)).or_insert((0, String::new()));
                    buffer.push_str(&text);
                    if buffer.len() >= CHUNK_BYTES {
                        ready.push(LogUpload { task_instance_id, try_number, seq: *seq, chunk: std::mem::take(buffer) });
                        *seq += 1;
                    }
                    continue;
                }
                Some(LogEvent::Finished { task_instance_id, try_number, completion, slot }) => {
                    let mut last = Vec::new();
                    ready.retain(|chunk| {
                        let mine = chunk.task_instance_id == task_instance_id && chunk.try_number == try_number;
                        if mine {
                            last.push(chunk.clone());
                        }
                        !mine
                    });
                    if let Some((seq, buffer)) = buffers.remove(&(task_instance_id, try_number))
                        && !buffer.is_empty()
                    {
                        last.push(LogUpload { task_instance_id, try_number, seq, chunk: buffer });
                    }
                    match completion {
                        Some(completion) => {
                            let _ = completions.send((completion, last, slot));
                        }
                        None => ready.extend(last),
                    }
                    continue;
                }
                None => open = false,
            },
            _ = tick.tick() => {}
        }
        for ((task_instance_id, try_number), (seq, buffer)) in &mut buffers {
            if !buffer.is_empty() {
                ready.push(LogUpload {
                    task_instance_id: *task_instance_id,
                    try_number: *try_number,
                    seq: *seq,
                    chunk: std::mem::take(buffer),
                });
                *seq += 1;
            }
        }
        upload(&*api, &worker_id, &mut ready, open).await;
    }
}

/// Uploads pending chunks in requests of at most about 1 MiB. Returns false when a transient
/// failure left chunks to retry on the next tick (only while more events may come).
async fn upload(
    api: &dyn ExecutionApi,
    worker_id: &str,
    ready: &mut Vec<LogUpload>,
    retry_later: bool,
) -> bool {
    const REQUEST_BYTES: usize = 1024 * 1024;
    while !ready.is_empty() {
        let mut size = 0;
        let count = ready
            .iter()
            .take_while(|chunk| {
                size += chunk.chunk.len();
                size <= REQUEST_BYTES
            })
            .count()
            .max(1);
        match api.logs(worker_id, &ready[..count]).await {
            Ok(()) => {
                ready.drain(..count);
            }
            Err(error) if error.is_transient() && retry_later => {
                tracing::warn!(message = "Log upload failed; will retry.", %error);
                return false;
            }
            Err(error) => {
                tracing::warn!(message = "Log upload failed; dropping these chunks.", %error, chunks = count);
                ready.drain(..count);
            }
        }
    }
    true
}

/// How many times the completion sender yields to let attempts ending together join a batch.
const GATHER_YIELDS: usize = 4;

/// Sends completions in batches, retrying with backoff while the server is away, so results
/// finished during an outage still arrive. Each batch claims as many next tasks as it frees
/// slots (unless the worker is stopping), and those go straight to the main loop in the freed
/// slots.
async fn send_completions(
    api: Arc<dyn ExecutionApi>,
    config: WorkerConfig,
    mut receiver: mpsc::UnboundedReceiver<Report>,
    assign: mpsc::UnboundedSender<Assignment>,
    stopping: CancellationToken,
) {
    let never = CancellationToken::new();
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        // Attempts that ended on the same timer tick (a wave of equal sleeps) finish their
        // bookkeeping a few microseconds apart: yielding lets them join this batch, so they
        // share one call and start their successors together, instead of the later ones waiting
        // a whole round trip. No timer is involved; with nothing else ready this returns at once.
        for round in 0..GATHER_YIELDS {
            tokio::task::yield_now().await;
            let before = batch.len();
            while let Ok(next) = receiver.try_recv() {
                batch.push(next);
            }
            if batch.len() == before && round > 0 {
                break;
            }
        }
        let mut completions = Vec::with_capacity(batch.len());
        let mut logs = Vec::new();
        let mut slots = Vec::with_capacity(batch.len());
        for (completion, chunks, slot) in batch {
            completions.push(completion);
            logs.extend(chunks);
            slots.push(slot);
        }
        let mut backoff = Backoff::new();
        loop {
            let next = (!stopping.is_cancelled()).then(|| NextClaim {
                queues: config.queues.clone(),
                limit: u32::try_from(slots.len()).unwrap_or(u32::MAX),
            });
            match api
                .complete(&config.worker_id, &completions, &logs, next.as_ref())
                .await
            {
                Ok(reply) => {
                    for (completion, outcome) in completions.iter().zip(&reply.outcomes) {
                        if let Err(rejection) = outcome {
                            tracing::info!(message = "Completion refused.", task_instance_id = completion.task_instance_id, %rejection);
                        }
                    }
                    for task in reply.claimed {
                        match slots.pop() {
                            Some(slot) => {
                                let _ = assign.send((task, slot));
                            }
                            None => {
                                tracing::warn!(
                                    message = "The server handed out more tasks than asked for; handing one back."
                                );
                                let _ = api
                                    .unclaim(
                                        &config.worker_id,
                                        &[(task.task_instance_id, task.fence)],
                                    )
                                    .await;
                            }
                        }
                    }
                    break;
                }
                Err(error) if error.is_transient() => {
                    tracing::warn!(message = "Could not report completions; retrying.", %error, pending = completions.len());
                    backoff.wait(&never).await;
                }
                Err(error) => {
                    tracing::error!(message = "Completions refused; dropping them.", %error, pending = completions.len());
                    break;
                }
            }
        }
    }
}

/// Exponential backoff from 100 ms to 5 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
        }
    }

    fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }

    /// Sleeps for the next delay; false if `cancel` fired first.
    async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = cancel.cancelled() => false,
        }
    }
}

/// The task with the `${…}` references of its params replaced (see `dag::template`), or `None`
/// when it has none, which costs no copy.
fn substitute_params(task: &ClaimedTask) -> Result<Option<ClaimedTask>, TemplateError> {
    if template::references(&task.params)?.is_empty() {
        return Ok(None);
    }
    let bindings = Bindings {
        params: task.run_params.as_object().cloned().unwrap_or_default(),
        run_id: task.run_id,
        logical_date: chrono::DateTime::from_timestamp_micros(task.logical_date)
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default(),
        dag_id: task.dag_id.clone(),
        task_id: task.task_id.clone(),
        try_number: task.try_number,
    };
    Ok(Some(ClaimedTask {
        params: template::substitute(&task.params, &bindings)?,
        ..task.clone()
    }))
}
