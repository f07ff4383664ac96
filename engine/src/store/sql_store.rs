//! The [`Store`] implementation for both backends: one [`SqlStore`] over a pool of either
//! database. Each method's SQL is in the module of its table (`runs`, `task_instances`,
//! `claims` …), written once for both backends; this file only routes the trait's methods there.

use sqlx::migrate::Migrator;

use super::dags::PlanCache;
use super::db::{Pool, query_scalar};
use super::*;

/// A [`Store`] on PostgreSQL or SQLite.
#[derive(Debug)]
pub struct SqlStore {
    pub(super) pool: Pool,
    pub(super) plans: PlanCache,
    /// What the outbox follows, if anything (see `Store::outbox_set_tracking`).
    pub(super) outbox_tracking: std::sync::RwLock<Option<OutboxTracking>>,
}

impl SqlStore {
    pub(super) fn new(pool: Pool) -> SqlStore {
        SqlStore {
            pool,
            plans: PlanCache::default(),
            outbox_tracking: std::sync::RwLock::new(None),
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self.pool.backend() {
            Backend::Postgres => &super::postgres::MIGRATOR,
            Backend::Sqlite => &super::sqlite::MIGRATOR,
        }
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Postgres(pool) => super::postgres::MIGRATOR.run(pool).await?,
            Pool::Sqlite { pool, .. } => super::sqlite::MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    async fn migrations_table_exists(&self) -> Result<bool, StoreError> {
        let sql = match self.pool.backend() {
            Backend::Postgres => {
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations')"
            }
            Backend::Sqlite => {
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
        };
        Ok(query_scalar(sql).fetch_one(&self.pool).await?)
    }
}

#[async_trait::async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.pool.backend()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let known = self
            .migrator()
            .iter()
            .map(|migration| migration.version)
            .max()
            .unwrap_or(0);
        let table_exists = self.migrations_table_exists().await?;
        if table_exists {
            let found: Option<i64> =
                query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                    .fetch_one(&self.pool)
                    .await?;
            if let Some(found) = found
                && found > known
            {
                return Err(StoreError::SchemaTooNew { found, known });
            }
        }
        self.run_migrations().await?;
        Ok(())
    }

    async fn dag_sync(
        &self,
        loaded: &crate::dag::LoadedDag,
        now: Micros,
    ) -> Result<DagRecord, StoreError> {
        dags::dag_sync(self, loaded, now).await
    }

    async fn dag_file_error_set(
        &self,
        file_path: &str,
        dag_id: Option<&str>,
        errors: &str,
        now: Micros,
    ) -> Result<(), StoreError> {
        dags::dag_file_error_set(self, file_path, dag_id, errors, now).await
    }

    async fn dag_file_error_list(&self) -> Result<Vec<DagFileErrorRecord>, StoreError> {
        dags::dag_file_error_list(self).await
    }

    async fn dag_list(&self) -> Result<Vec<DagRecord>, StoreError> {
        dags::dag_list(self).await
    }

    async fn dag_get(&self, dag_id: &str) -> Result<Option<DagRecord>, StoreError> {
        dags::dag_get(self, dag_id).await
    }

    async fn dag_set_paused(
        &self,
        dag_id: &str,
        paused: bool,
        now: Micros,
    ) -> Result<(), StoreError> {
        dags::dag_set_paused(self, dag_id, paused, now).await
    }

    async fn dag_version_get(&self, version_id: i64) -> Result<Arc<DagPlan>, StoreError> {
        dags::dag_version_get(self, version_id).await
    }

    async fn dag_set_last_scheduled(
        &self,
        dag_id: &str,
        logical_date: Micros,
    ) -> Result<(), StoreError> {
        dags::dag_set_last_scheduled(self, dag_id, logical_date).await
    }

    async fn run_create(&self, params: &RunCreateParams) -> Result<Option<RunRecord>, StoreError> {
        runs::run_create(self, params).await
    }

    async fn run_trigger(
        &self,
        params: &RunCreateParams,
        claims: &[ClaimParams],
    ) -> Result<Option<(RunRecord, Vec<Vec<ClaimedTask>>)>, StoreError> {
        runs::run_trigger(self, params, claims).await
    }

    async fn run_get(&self, run_id: i64) -> Result<Option<RunRecord>, StoreError> {
        runs::run_get(self, run_id).await
    }

    async fn run_list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        runs::run_list(self, filter).await
    }

    async fn run_start_queued(&self, now: Micros) -> Result<Vec<i64>, StoreError> {
        runs::run_start_queued(self, now).await
    }

    async fn run_cancel(&self, run_id: i64, now: Micros) -> Result<bool, StoreError> {
        runs::run_cancel(self, run_id, now).await
    }

    async fn task_instance_list(&self, run_id: i64) -> Result<Vec<TaskInstanceRecord>, StoreError> {
        task_instances::task_instance_list(self, run_id).await
    }

    async fn attempt_list(&self, task_instance_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        attempts::attempt_list(self, task_instance_id).await
    }

    async fn task_instance_claim(
        &self,
        params: &ClaimParams,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        claims::task_instance_claim(self, params).await
    }

    async fn task_instance_complete_batches(
        &self,
        batches: &[CompletionBatch<'_>],
        now: Micros,
    ) -> Result<Vec<(Vec<Result<CompletionOutcome, Rejection>>, Vec<ClaimedTask>)>, StoreError>
    {
        completions::task_instance_complete_batches(self, batches, now).await
    }

    async fn task_instance_heartbeat(
        &self,
        worker_id: &str,
        tasks: &[(i64, i64)],
        lease_expires_at: Micros,
    ) -> Result<Vec<i64>, StoreError> {
        claims::task_instance_heartbeat(self, worker_id, tasks, lease_expires_at).await
    }

    async fn task_instance_release(
        &self,
        worker_id: &str,
        tasks: &[(i64, i64)],
        now: Micros,
    ) -> Result<usize, StoreError> {
        claims::task_instance_release(self, worker_id, tasks, now).await
    }

    async fn task_instance_unclaim(
        &self,
        worker_id: &str,
        tasks: &[(i64, i64)],
    ) -> Result<usize, StoreError> {
        claims::task_instance_unclaim(self, worker_id, tasks).await
    }

    async fn task_instance_rescue_worker(
        &self,
        worker_id: &str,
        now: Micros,
    ) -> Result<usize, StoreError> {
        maintenance::task_instance_rescue_worker(self, worker_id, now).await
    }

    async fn task_instance_maintain(&self, now: Micros) -> Result<MaintenanceReport, StoreError> {
        maintenance::task_instance_maintain(self, now).await
    }

    async fn task_instance_next_due(&self) -> Result<Option<Micros>, StoreError> {
        maintenance::task_instance_next_due(self).await
    }

    async fn task_instance_clear(
        &self,
        run_id: i64,
        task_id: &str,
        downstream: bool,
        now: Micros,
    ) -> Result<Vec<String>, StoreError> {
        task_instances::task_instance_clear(self, run_id, task_id, downstream, now).await
    }

    async fn task_instance_mark(
        &self,
        run_id: i64,
        task_id: &str,
        state: TaskState,
        now: Micros,
    ) -> Result<(), StoreError> {
        task_instances::task_instance_mark(self, run_id, task_id, state, now).await
    }

    async fn log_append(&self, chunks: &[LogUpload], now: Micros) -> Result<(), StoreError> {
        logs::log_append(self, chunks, now).await
    }

    async fn task_instance_list_missing(&self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        task_instances::task_instance_list_missing(self, ids).await
    }

    async fn log_read(
        &self,
        task_instance_id: i64,
        try_number: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<LogChunk>, StoreError> {
        logs::log_read(self, task_instance_id, try_number, after_seq, limit).await
    }

    async fn task_instance_list_for_runs(
        &self,
        run_ids: &[i64],
    ) -> Result<Vec<TaskInstanceRecord>, StoreError> {
        task_instances::task_instance_list_for_runs(self, run_ids).await
    }

    async fn run_list_latest_per_dag(&self, per_dag: u32) -> Result<Vec<RunRecord>, StoreError> {
        runs::run_list_latest_per_dag(self, per_dag).await
    }

    async fn task_instance_list_running(
        &self,
    ) -> Result<Vec<(String, TaskInstanceRecord)>, StoreError> {
        task_instances::task_instance_list_running(self).await
    }

    async fn task_instance_get(
        &self,
        run_id: i64,
        task_id: &str,
    ) -> Result<Option<TaskInstanceRecord>, StoreError> {
        task_instances::task_instance_get(self, run_id, task_id).await
    }

    async fn dag_version_list(&self, dag_id: &str) -> Result<Vec<DagVersionRecord>, StoreError> {
        dags::dag_version_list(self, dag_id).await
    }

    async fn dag_version_get_source(&self, version_id: i64) -> Result<Option<String>, StoreError> {
        dags::dag_version_get_source(self, version_id).await
    }

    async fn artifact_list(
        &self,
        kind: Option<ArtifactKind>,
    ) -> Result<Vec<ArtifactRecord>, StoreError> {
        artifacts::artifact_list(self, kind).await
    }

    async fn artifact_get(&self, name: &str) -> Result<Option<ArtifactRecord>, StoreError> {
        artifacts::artifact_get(self, name).await
    }

    async fn artifact_version_list(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<ArtifactVersionRecord>, StoreError> {
        artifacts::artifact_version_list(self, name, limit).await
    }

    async fn artifact_version_get(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<ArtifactVersionRecord>, StoreError> {
        artifacts::artifact_version_get(self, name, version).await
    }

    async fn artifact_version_get_by_id(
        &self,
        id: i64,
    ) -> Result<Option<ArtifactVersionRecord>, StoreError> {
        artifacts::artifact_version_get_by_id(self, id).await
    }

    async fn artifact_publish(
        &self,
        publish: &PublishParams,
        now: Micros,
    ) -> Result<(ArtifactVersionRecord, bool), StoreError> {
        artifacts::artifact_publish(self, publish, now).await
    }

    async fn lineage_get_by_version(
        &self,
        version_id: i64,
        direction: LineageDirection,
    ) -> Result<LineageGraph, StoreError> {
        lineage::lineage_get_by_version(self, version_id, direction).await
    }

    async fn lineage_get_by_run(&self, run_id: i64) -> Result<LineageGraph, StoreError> {
        lineage::lineage_get_by_run(self, run_id).await
    }

    async fn attempt_artifact_list(
        &self,
        task_instance_id: i64,
    ) -> Result<Vec<AttemptArtifact>, StoreError> {
        lineage::attempt_artifact_list(self, task_instance_id).await
    }

    async fn cache_lookup(&self, key: &str) -> Result<Option<CacheHit>, StoreError> {
        artifacts::cache_lookup(self, key).await
    }

    async fn artifact_blob_list_in_use(&self) -> Result<Vec<String>, StoreError> {
        artifacts::artifact_blob_list_in_use(self).await
    }

    async fn model_list(&self) -> Result<Vec<ModelRecord>, StoreError> {
        models::model_list(self).await
    }

    async fn model_alias_get(
        &self,
        name: &str,
        alias: crate::dag::ModelAlias,
    ) -> Result<Option<ArtifactVersionRecord>, StoreError> {
        models::model_alias_get(self, name, alias).await
    }

    async fn model_alias_set(
        &self,
        name: &str,
        alias: crate::dag::ModelAlias,
        version: i64,
        reason: &str,
        now: Micros,
    ) -> Result<Option<i64>, StoreError> {
        models::model_alias_set(self, name, alias, version, reason, now).await
    }

    async fn model_alias_rollback(
        &self,
        name: &str,
        alias: crate::dag::ModelAlias,
        now: Micros,
    ) -> Result<(i64, i64), StoreError> {
        models::model_alias_rollback(self, name, alias, now).await
    }

    async fn model_alias_event_list(&self, name: &str) -> Result<Vec<AliasEvent>, StoreError> {
        models::model_alias_event_list(self, name).await
    }

    fn outbox_set_tracking(&self, tracking: Option<OutboxTracking>) {
        outbox::outbox_set_tracking(self, tracking)
    }

    fn outbox_tracking(&self) -> Option<OutboxTracking> {
        self.tracking()
    }

    async fn outbox_append(&self, calls: &[OutboxEvent], now: Micros) -> Result<(), StoreError> {
        outbox::outbox_append(self, calls, now).await
    }

    async fn outbox_due(&self, now: Micros, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        outbox::outbox_due(self, now, limit).await
    }

    async fn outbox_list(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        outbox::outbox_list(self, limit).await
    }

    async fn outbox_done(&self, id: i64) -> Result<bool, StoreError> {
        outbox::outbox_done(self, id).await
    }

    async fn outbox_fail(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<Micros>,
    ) -> Result<bool, StoreError> {
        outbox::outbox_fail(self, id, error, retry_at).await
    }

    async fn outbox_unpark(&self, now: Micros) -> Result<usize, StoreError> {
        outbox::outbox_unpark(self, now).await
    }

    async fn mirror_id_get(&self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        outbox::mirror_id_get(self, kind, key).await
    }

    async fn mirror_id_record(
        &self,
        kind: &str,
        key: &str,
        mlflow_id: &str,
        now: Micros,
    ) -> Result<String, StoreError> {
        outbox::mirror_id_record(self, kind, key, mlflow_id, now).await
    }

    async fn leader_attempt_elect(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        now: Micros,
    ) -> Result<bool, StoreError> {
        leaders::leader_attempt_elect(self, name, holder, ttl, now).await
    }
}
