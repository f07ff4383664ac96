//! Links into MLflow's web UI for what kiln has mirrored there: a run, an attempt's nested run,
//! a model version.
//!
//! A link exists only once the sender has recorded the MLflow id (`mlflow_ids`); until then (or
//! while MLflow is down) there is nothing to link to, and callers show none.

use super::MlflowIdKind;
use crate::store::{Store, StoreError};

use super::experiment_name_for;

/// Builds MLflow UI addresses from the ids kiln recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlflowLinks {
    base: String,
}

/// An MLflow run that mirrors a kiln run or attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlflowRunLink {
    /// MLflow's experiment id.
    pub experiment_id: String,
    /// MLflow's run id.
    pub run_id: String,
    /// The run's page in MLflow's UI.
    pub url: String,
}

impl MlflowLinks {
    /// Links under `ui_base`, MLflow's address as a browser reaches it (usually the tracking
    /// URI).
    pub fn new(ui_base: &str) -> MlflowLinks {
        MlflowLinks {
            base: ui_base.trim_end_matches('/').to_owned(),
        }
    }

    /// MLflow's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn run_url(&self, experiment_id: &str, run_id: &str) -> String {
        format!("{}/#/experiments/{experiment_id}/runs/{run_id}", self.base)
    }

    /// The MLflow run of kiln run `run_id` (of `dag_id`, with `params`), once it exists.
    pub async fn run(
        &self,
        store: &dyn Store,
        dag_id: &str,
        run_id: i64,
        params: &serde_json::Value,
    ) -> Result<Option<MlflowRunLink>, StoreError> {
        self.lookup(
            store,
            dag_id,
            params,
            MlflowIdKind::Run,
            &run_id.to_string(),
        )
        .await
    }

    /// The nested MLflow run of one attempt (`try_number` of a task instance), once it exists.
    pub async fn attempt(
        &self,
        store: &dyn Store,
        dag_id: &str,
        params: &serde_json::Value,
        task_instance_id: i64,
        try_number: i64,
    ) -> Result<Option<MlflowRunLink>, StoreError> {
        self.lookup(
            store,
            dag_id,
            params,
            MlflowIdKind::Attempt,
            &format!("{task_instance_id}:{try_number}"),
        )
        .await
    }

    async fn lookup(
        &self,
        store: &dyn Store,
        dag_id: &str,
        params: &serde_json::Value,
        kind: MlflowIdKind,
        key: &str,
    ) -> Result<Option<MlflowRunLink>, StoreError> {
        let Some(run_id) = store.mirror_id_get(kind.as_str(), key).await? else {
            return Ok(None);
        };
        let experiment = experiment_name_for(dag_id, params);
        let Some(experiment_id) = store
            .mirror_id_get(MlflowIdKind::Experiment.as_str(), &experiment)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(MlflowRunLink {
            url: self.run_url(&experiment_id, &run_id),
            experiment_id,
            run_id,
        }))
    }

    /// The page of the MLflow model version mirroring kiln's `name` version `version`, once it
    /// is registered. kiln's model names need no escaping (letters, digits, `_`, `-`, `.`).
    pub async fn model_version(
        &self,
        store: &dyn Store,
        name: &str,
        version: i64,
    ) -> Result<Option<String>, StoreError> {
        let key = format!("{name}@{version}");
        Ok(store
            .mirror_id_get(MlflowIdKind::ModelVersion.as_str(), &key)
            .await?
            .map(|mlflow_version| {
                format!("{}/#/models/{name}/versions/{mlflow_version}", self.base)
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn links_appear_once_the_ids_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::connect(&format!(
            "sqlite://{}",
            dir.path().join("kiln.db").display()
        ))
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let links = MlflowLinks::new("http://mlflow.example:5000/");
        let params = serde_json::json!({});
        assert_eq!(
            links.run(store.as_ref(), "wine", 7, &params).await.unwrap(),
            None
        );
        store
            .mirror_id_record(MlflowIdKind::Run.as_str(), "7", "abc123", 1)
            .await
            .unwrap();
        // The run alone is not enough: its page lives under its experiment.
        assert_eq!(
            links.run(store.as_ref(), "wine", 7, &params).await.unwrap(),
            None
        );
        store
            .mirror_id_record(MlflowIdKind::Experiment.as_str(), "wine", "4", 1)
            .await
            .unwrap();
        let link = links
            .run(store.as_ref(), "wine", 7, &params)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            link.url,
            "http://mlflow.example:5000/#/experiments/4/runs/abc123"
        );
        // A run whose params name another experiment is looked up there.
        let elsewhere = serde_json::json!({ "mlflow_experiment": "other" });
        assert_eq!(
            links
                .run(store.as_ref(), "wine", 7, &elsewhere)
                .await
                .unwrap(),
            None
        );
        store
            .mirror_id_record(MlflowIdKind::Attempt.as_str(), "12:2", "def456", 1)
            .await
            .unwrap();
        let nested = links
            .attempt(store.as_ref(), "wine", &params, 12, 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(nested.run_id, "def456");
        assert_eq!(
            links
                .model_version(store.as_ref(), "wine_quality", 3)
                .await
                .unwrap(),
            None
        );
        store
            .mirror_id_record(
                MlflowIdKind::ModelVersion.as_str(),
                "wine_quality@3",
                "2",
                1,
            )
            .await
            .unwrap();
        assert_eq!(
            links
                .model_version(store.as_ref(), "wine_quality", 3)
                .await
                .unwrap()
                .as_deref(),
            Some("http://mlflow.example:5000/#/models/wine_quality/versions/2")
        );
    }
}
