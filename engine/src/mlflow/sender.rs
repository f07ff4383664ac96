//! The sender: drains the MLflow outbox in order, with retries and backoff, exactly once.
//!
//! Events of one stream (a kiln run, a model) go one after another, so a nested run always finds
//! its parent and an alias never moves back before it moved forward. Every create first looks in
//! `mlflow_ids`, then searches MLflow for what an earlier try may have created before its answer
//! was lost (runs carry kiln's ids as tags, model versions kiln's artifact URI as their source),
//! and records the id the moment it has one. Everything else the sender does (logging params and
//! metric points with fixed timestamps, setting tags, statuses and aliases) changes nothing when
//! repeated, so a retried event never duplicates anything.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::MlflowIdKind;
use super::client::{CreateRun, KeyValue, MlflowClient, MlflowError};
use super::{
    artifact_uri, attempt_data, attempt_uid, experiment_name, git_commit, run_data, run_status,
    run_uid,
};
use crate::duties::{DutyHealth, run_ticks};
use crate::store::{
    Micros, OutboxAliasSet, OutboxAttempt, OutboxEntry, OutboxEvent, OutboxModelVersion, OutboxRun,
    OutboxRunEnd, Store, StoreError, micros, now_micros,
};

/// The sender's name among the server's duties (in `/readyz`).
pub const MLFLOW_OUTBOX_DUTY: &str = "mlflow_outbox";

/// The leadership the sender holds, so that one server of several sends.
const LEADERSHIP: &str = "mlflow-sender";
/// How long the sender's leadership lasts without renewal.
const LEADER_TTL: Duration = Duration::from_secs(10);

/// How the sender paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// Failed sends after which an event is parked.
    pub max_attempts: i64,
    /// The wait after the first failure; it doubles with each failure after that.
    pub base_delay: Duration,
    /// The longest wait between two tries.
    pub max_delay: Duration,
    /// How often an idle sender looks at the outbox.
    pub poll: Duration,
    /// The most events taken per pass.
    pub batch: u32,
}

impl Default for SenderConfig {
    /// 20 tries over about an hour (1 s, 2 s, 4 s, … capped at 5 minutes).
    fn default() -> SenderConfig {
        SenderConfig {
            max_attempts: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            poll: Duration::from_secs(2),
            batch: 100,
        }
    }
}

impl SenderConfig {
    /// The wait after the `failures`th failed send of an event.
    pub fn backoff(&self, failures: i64) -> Duration {
        let doublings = u32::try_from(failures.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.base_delay
            .saturating_mul(2_u32.saturating_pow(doublings))
            .min(self.max_delay)
    }
}

/// What a drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Events MLflow now has.
    pub sent: usize,
    /// Failed sends that will be tried again.
    pub retried: usize,
    /// Events given up on (kept in the outbox with their error).
    pub parked: usize,
}

impl DrainReport {
    fn add(&mut self, other: DrainReport) {
        self.sent += other.sent;
        self.retried += other.retried;
        self.parked += other.parked;
    }

    fn handled(self) -> usize {
        self.sent + self.retried + self.parked
    }
}

/// Drains the MLflow outbox of one store into one tracking server.
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn kiln_engine::store::Store>) -> Result<(), kiln_engine::mlflow::MlflowError> {
/// use kiln_engine::mlflow::{MLFLOW_TRACKING, MlflowClient, MlflowConfig, Sender};
/// let client = MlflowClient::new(&MlflowConfig::from_env("http://127.0.0.1:5000")?);
/// store.outbox_set_tracking(Some(MLFLOW_TRACKING));
/// let sender = Sender::new(store, client, "server-1".to_owned());
/// sender.run(tokio_util::sync::CancellationToken::new()).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sender {
    store: Arc<dyn Store>,
    client: MlflowClient,
    config: SenderConfig,
    holder: String,
    health: DutyHealth,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sender")
            .field("backend", &self.store.backend())
            .field("client", &self.client)
            .field("config", &self.config)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender with the default pacing; `holder` names this process in the leader election.
    pub fn new(store: Arc<dyn Store>, client: MlflowClient, holder: String) -> Sender {
        Sender {
            store,
            client,
            config: SenderConfig::default(),
            holder,
            health: DutyHealth::default(),
        }
    }

    /// The same sender, recording how its duty fares in `health` (the server passes the
    /// scheduler's, so that the probes report the outbox with the other duties).
    pub fn with_health(mut self, health: DutyHealth) -> Sender {
        self.health = health;
        self
    }

    /// The same sender with other pacing.
    pub fn with_config(mut self, config: SenderConfig) -> Sender {
        self.config = config;
        self
    }

    /// Sends until `cancel` fires: while this process holds the sender's leadership, every due
    /// event, then a pause of `poll`. A round that cannot reach the store is logged, counted in
    /// the sender's [`DutyHealth`] and tried again after a backoff (the shared policy of
    /// [`run_ticks`]); failed sends are retried per event, never returned.
    pub async fn run(&self, cancel: CancellationToken) {
        tracing::info!(
            message = "MLflow sender started.",
            tracking_uri = self.client.tracking_uri()
        );
        run_ticks(
            &self.health,
            MLFLOW_OUTBOX_DUTY,
            "the MLflow sender could not read or update its outbox",
            &cancel,
            || async {
                let report = self.lead_and_send().await?;
                if report.handled() > 0 {
                    tracing::info!(
                        message = "MLflow outbox drained.",
                        sent = report.sent,
                        retried = report.retried,
                        parked = report.parked
                    );
                }
                Ok::<_, StoreError>(self.config.poll)
            },
        )
        .await;
    }

    /// One round of `run`: pass after pass while this process leads (renewed each pass).
    async fn lead_and_send(&self) -> Result<DrainReport, StoreError> {
        let mut report = DrainReport::default();
        loop {
            let now = now_micros();
            if !self
                .store
                .leader_attempt_elect(LEADERSHIP, &self.holder, LEADER_TTL, now)
                .await?
            {
                return Ok(report);
            }
            let pass = self.send_due(now).await?;
            report.add(pass);
            // A pass that only failed means MLflow is in trouble: wait for the next round.
            if pass.handled() == 0 || (pass.retried > 0 && pass.sent == 0) {
                return Ok(report);
            }
        }
    }

    /// Sends everything due at `now`, pass after pass, until nothing is due (an event that fails
    /// waits for its backoff, so it is not due again unless the backoff is zero).
    pub async fn drain(&self, now: Micros) -> Result<DrainReport, StoreError> {
        let mut report = DrainReport::default();
        loop {
            let pass = self.send_due(now).await?;
            report.add(pass);
            if pass.handled() == 0 {
                return Ok(report);
            }
        }
    }

    /// One pass: the head of every stream that is due. When MLflow cannot be reached at all,
    /// the pass stops after that failure rather than knocking once per stream.
    pub async fn send_due(&self, now: Micros) -> Result<DrainReport, StoreError> {
        let mut report = DrainReport::default();
        for event in self.store.outbox_due(now, self.config.batch).await? {
            match self.send(&event.call).await {
                Ok(()) => {
                    self.store.outbox_done(event.id).await?;
                    report.sent += 1;
                }
                Err(MlflowError::Store(error)) => return Err(error),
                Err(error) => {
                    let unreachable = error.is_unreachable();
                    self.failed(&event, &error, now, &mut report).await?;
                    if unreachable {
                        break;
                    }
                }
            }
        }
        Ok(report)
    }

    async fn failed(
        &self,
        event: &OutboxEntry,
        error: &MlflowError,
        now: Micros,
        report: &mut DrainReport,
    ) -> Result<(), StoreError> {
        let failures = event.attempts + 1;
        let message = format!("attempt {failures}: {error}");
        if failures >= self.config.max_attempts {
            tracing::warn!(
                message = "MLflow event parked after repeated failures; `Store::outbox_unpark` puts it back in line.",
                event_id = event.id,
                kind = event.call.kind().as_str(),
                stream = %event.stream,
                failures,
                %error
            );
            self.store.outbox_fail(event.id, &message, None).await?;
            report.parked += 1;
        } else {
            let retry_at = now + micros(self.config.backoff(failures));
            tracing::debug!(
                message = "MLflow event failed; it will be retried.",
                event_id = event.id,
                failures,
                retry_at,
                %error
            );
            self.store
                .outbox_fail(event.id, &message, Some(retry_at))
                .await?;
            report.retried += 1;
        }
        Ok(())
    }

    /// Makes MLflow reflect one event.
    async fn send(&self, call: &OutboxEvent) -> Result<(), MlflowError> {
        match call {
            OutboxEvent::RunStart(run) => {
                self.parent_run(run).await?;
                Ok(())
            }
            OutboxEvent::TaskAttempt(attempt) => self.attempt(attempt).await,
            OutboxEvent::RunEnd(end) => self.run_end(end).await,
            OutboxEvent::ModelVersion(version) => self.deployed_version(version).await,
            OutboxEvent::AliasSet(alias) => self.alias(alias).await,
        }
    }

    /// The experiment with this name, created when missing.
    async fn experiment(&self, name: &str) -> Result<String, MlflowError> {
        if let Some(id) = self
            .store
            .mirror_id_get(MlflowIdKind::Experiment.as_str(), name)
            .await?
        {
            return Ok(id);
        }
        let existing = match self.client.experiment_by_name(name).await? {
            Some(experiment) => Some(experiment),
            None => {
                let tags = [KeyValue::new("kiln.created_by", "kiln")];
                match self.client.experiment_create(name, &tags).await {
                    Ok(id) => {
                        return Ok(self
                            .store
                            .mirror_id_record(
                                MlflowIdKind::Experiment.as_str(),
                                name,
                                &id,
                                now_micros(),
                            )
                            .await?);
                    }
                    // Created by an earlier try whose answer was lost, or by someone else.
                    Err(error) if error.code() == Some("RESOURCE_ALREADY_EXISTS") => {
                        self.client.experiment_by_name(name).await?
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        let experiment = existing.ok_or_else(|| {
            MlflowError::Refused(format!(
                "MLflow says experiment `{name}` exists but does not return it"
            ))
        })?;
        if experiment.lifecycle_stage == "deleted" {
            return Err(MlflowError::Refused(format!(
                "experiment `{name}` (id {}) is deleted in MLflow; restore it there or set the run param `mlflow_experiment` to another name",
                experiment.experiment_id
            )));
        }
        Ok(self
            .store
            .mirror_id_record(
                MlflowIdKind::Experiment.as_str(),
                name,
                &experiment.experiment_id,
                now_micros(),
            )
            .await?)
    }

    /// The MLflow run of a kiln run, created (with its params and tags) when missing.
    async fn parent_run(&self, run: &OutboxRun) -> Result<String, MlflowError> {
        let key = run.run_id.to_string();
        if let Some(id) = self
            .store
            .mirror_id_get(MlflowIdKind::Run.as_str(), &key)
            .await?
        {
            return Ok(id);
        }
        let experiment = self.experiment(&experiment_name(run)).await?;
        let uid = run_uid(run);
        let id = self
            .find_or_create(
                &experiment,
                "kiln.run_uid",
                &uid,
                CreateRun {
                    experiment_id: experiment.clone(),
                    run_name: format!("{} run {}", run.dag_id, run.run_id),
                    start_time: run.started_at.unwrap_or(run.created_at) / 1000,
                    tags: vec![
                        KeyValue::new("kiln.run_uid", uid.clone()),
                        KeyValue::new("kiln.dag_id", run.dag_id.clone()),
                        KeyValue::new("kiln.run_id", key.clone()),
                    ],
                },
            )
            .await?;
        // The commit of the DAG folder when this is sent; the DAG version's SHA-256 (a tag too)
        // pins the exact file that ran.
        let commit = git_commit(std::path::Path::new(&run.dag_file));
        let (params, tags) = run_data(run, commit.as_deref());
        // Before the id is recorded: once it is, the params are known to be there.
        self.client.run_log_batch(&id, &[], &params, &tags).await?;
        Ok(self
            .store
            .mirror_id_record(MlflowIdKind::Run.as_str(), &key, &id, now_micros())
            .await?)
    }

    /// Answers the run tagged `tag = value` in an experiment, or creates it.
    async fn find_or_create(
        &self,
        experiment: &str,
        tag: &str,
        value: &str,
        create: CreateRun,
    ) -> Result<String, MlflowError> {
        // kiln's ids are letters, digits, `_`, `-` and `/`: nothing to escape in the filter.
        let filter = format!("tags.`{tag}` = '{value}'");
        let found = self.client.run_search(experiment, &filter, 2).await?;
        if let Some(run) = found.first() {
            return Ok(run.run_id.clone());
        }
        self.client.run_create(&create).await
    }

    async fn attempt(&self, attempt: &OutboxAttempt) -> Result<(), MlflowError> {
        let parent = self.parent_run(&attempt.run).await?;
        let key = format!("{}:{}", attempt.task_instance_id, attempt.try_number);
        let nested = match self
            .store
            .mirror_id_get(MlflowIdKind::Attempt.as_str(), &key)
            .await?
        {
            Some(id) => id,
            None => {
                let experiment = self.experiment(&experiment_name(&attempt.run)).await?;
                let uid = attempt_uid(attempt);
                let id = self
                    .find_or_create(
                        &experiment,
                        "kiln.attempt_uid",
                        &uid,
                        CreateRun {
                            experiment_id: experiment.clone(),
                            run_name: format!("{} (try {})", attempt.task_id, attempt.try_number),
                            start_time: attempt.started_at / 1000,
                            tags: vec![
                                KeyValue::new("kiln.attempt_uid", uid.clone()),
                                KeyValue::new("mlflow.parentRunId", parent.clone()),
                            ],
                        },
                    )
                    .await?;
                self.store
                    .mirror_id_record(MlflowIdKind::Attempt.as_str(), &key, &id, now_micros())
                    .await?
            }
        };
        let data = attempt_data(attempt);
        self.client
            .run_log_batch(&nested, &data.metrics, &data.params, &data.tags)
            .await?;
        if !data.parent_metrics.is_empty() || !data.parent_tags.is_empty() {
            self.client
                .run_log_batch(&parent, &data.parent_metrics, &[], &data.parent_tags)
                .await?;
        }
        self.client
            .run_update(
                &nested,
                run_status(&attempt.state),
                Some(attempt.ended_at / 1000),
            )
            .await
    }

    async fn run_end(&self, end: &OutboxRunEnd) -> Result<(), MlflowError> {
        let parent = self.parent_run(&end.run).await?;
        self.client
            .run_update(&parent, run_status(&end.state), Some(end.ended_at / 1000))
            .await
    }

    /// The MLflow version of a kiln model version, registered when missing.
    async fn model_version(
        &self,
        name: &str,
        version: i64,
        run_id: Option<&str>,
        tags: &[KeyValue],
    ) -> Result<String, MlflowError> {
        let key = format!("{name}@{version}");
        if let Some(id) = self
            .store
            .mirror_id_get(MlflowIdKind::ModelVersion.as_str(), &key)
            .await?
        {
            return Ok(id);
        }
        self.client
            .registered_model_ensure(
                name,
                &format!("Mirrored from kiln's model registry (`kiln models show {name}`)."),
            )
            .await?;
        let source = artifact_uri(name, version);
        let existing = self.client.model_versions(name).await?;
        let id = match existing.into_iter().find(|found| found.source == source) {
            Some(found) => found.version,
            None => {
                self.client
                    .model_version_create(name, &source, run_id, tags, &format!("kiln {key}"))
                    .await?
            }
        };
        Ok(self
            .store
            .mirror_id_record(MlflowIdKind::ModelVersion.as_str(), &key, &id, now_micros())
            .await?)
    }

    async fn deployed_version(&self, version: &OutboxModelVersion) -> Result<(), MlflowError> {
        let parent = self.parent_run(&version.run).await?;
        let mut tags = vec![
            KeyValue::new("kiln.version", version.version.to_string()),
            KeyValue::new("kiln.sha256", version.sha256.clone()),
            KeyValue::new("kiln.dag_id", version.run.dag_id.clone()),
            KeyValue::new("kiln.run_id", version.run.run_id.to_string()),
            KeyValue::new("kiln.task_id", version.task_id.clone()),
            KeyValue::new("kiln.try_number", version.try_number.to_string()),
        ];
        if let Some(metrics) = version
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.get("metrics"))
            .and_then(serde_json::Value::as_object)
        {
            for (key, value) in metrics {
                if value.is_number() {
                    tags.push(KeyValue::new(format!("metric.{key}"), value.to_string()));
                }
            }
        }
        self.model_version(&version.name, version.version, Some(&parent), &tags)
            .await?;
        self.client
            .run_set_tag(
                &parent,
                "kiln.deployed_model",
                &format!("{}@{}", version.name, version.version),
            )
            .await
    }

    async fn alias(&self, alias: &OutboxAliasSet) -> Result<(), MlflowError> {
        // A version promoted by hand may never have been deployed: register it first.
        let tags = [KeyValue::new("kiln.version", alias.version.to_string())];
        let version = self
            .model_version(&alias.name, alias.version, None, &tags)
            .await?;
        self.client
            .alias_set(&alias.name, &alias.alias, &version)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = SenderConfig::default();
        let waits: Vec<u64> = [1, 2, 3, 4, 8, 9, 20, 1000]
            .into_iter()
            .map(|failures| config.backoff(failures).as_secs())
            .collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 128, 256, 300, 300]);
        let total: u64 = (1..config.max_attempts)
            .map(|failures| config.backoff(failures).as_secs())
            .sum();
        assert!((3000..4000).contains(&total), "{total} s of retries");
    }
}
