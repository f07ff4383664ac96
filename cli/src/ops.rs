//! Commands that work on the database directly: `kiln db migrate`, `kiln runs list`,
//! `kiln backfill`, `kiln dags pause|unpause`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use kiln_engine::artifacts::{ArtifactStoreConfig, BlobStore};
use kiln_engine::scheduler::{Scheduler, to_datetime};
use kiln_engine::state::RunState;
use kiln_engine::store::{RunFilter, Store, connect};

use crate::table::{Align, Table};

/// Where the database is: `--database-url`, or SQLite under the data directory.
#[derive(Debug, Clone)]
pub(crate) struct DatabaseConfig {
    pub(crate) url: Option<String>,
    pub(crate) data_dir: std::path::PathBuf,
    /// The artifact store's TOML description; a local store under `data_dir` when absent.
    pub(crate) artifacts_config: Option<std::path::PathBuf>,
}

/// Reads an artifact store description from a TOML file.
pub(crate) fn read_artifacts_config(path: &Path) -> anyhow::Result<ArtifactStoreConfig> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "failed to read the artifact store configuration {}",
            path.display()
        )
    })?;
    toml::from_str(&text).with_context(|| {
        format!(
            "the artifact store configuration {} is invalid",
            path.display()
        )
    })
}

impl DatabaseConfig {
    /// The artifact store: the configured one, or a local store under the data directory.
    pub(crate) fn artifact_store(&self) -> anyhow::Result<Arc<BlobStore>> {
        let config = match &self.artifacts_config {
            Some(path) => read_artifacts_config(path)?,
            None => ArtifactStoreConfig::local_under(&self.data_dir),
        };
        let store = BlobStore::from_config(&config)
            .with_context(|| format!("failed to open the artifact store {config:?}"))?;
        Ok(Arc::new(store))
    }

    pub(crate) fn url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        std::fs::create_dir_all(&self.data_dir).with_context(|| {
            format!(
                "failed to create the data directory {}",
                self.data_dir.display()
            )
        })?;
        Ok(format!(
            "sqlite://{}",
            self.data_dir.join("kiln.db").display()
        ))
    }

    /// Connects and applies migrations (an older kiln refuses a newer schema here).
    pub(crate) async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        let url = self.url()?;
        let store = connect(&url)
            .await
            .with_context(|| format!("failed to open the database {}", redact(&url)))?;
        store
            .migrate()
            .await
            .context("failed to migrate the database")?;
        Ok(store)
    }
}

/// Hides a password in a database URL, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub(crate) async fn migrate(database: &DatabaseConfig) -> anyhow::Result<()> {
    database.open().await?;
    println!("database {} is up to date", redact(&database.url()?));
    Ok(())
}

pub(crate) async fn runs_list(
    database: &DatabaseConfig,
    dag: Option<String>,
    state: Option<String>,
    limit: u32,
) -> anyhow::Result<()> {
    let store = database.open().await?;
    let state = state
        .map(|text| text.parse::<RunState>())
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let runs = store
        .run_list(&RunFilter {
            dag_id: dag,
            state,
            limit: Some(limit),
        })
        .await?;
    let mut table = Table::new(&[
        ("RUN", Align::Right),
        ("DAG", Align::Left),
        ("STATE", Align::Left),
        ("TRIGGER", Align::Left),
        ("LOGICAL DATE", Align::Left),
        ("ENDED", Align::Left),
    ]);
    // Whole seconds: a run ends at some microsecond, and RFC 3339 with all of them is noise.
    let at = |micros| to_datetime(micros).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for run in runs {
        table.row(vec![
            run.id.to_string(),
            run.dag_id,
            run.state.as_str().to_owned(),
            run.trigger.as_str().to_owned(),
            at(run.logical_date),
            run.ended_at.map_or_else(|| "-".to_owned(), at),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

/// A scheduler on the database with the DAG folder's current versions recorded.
async fn synced_scheduler(database: &DatabaseConfig, dags_dir: &Path) -> anyhow::Result<Scheduler> {
    let store = database.open().await?;
    let scheduler = Scheduler::new(
        store,
        kiln_tasks::builtin_registry(),
        dags_dir.to_owned(),
        format!("cli-{}", std::process::id()),
    );
    scheduler
        .sync_dags()
        .await
        .context("failed to load the DAG folder")?;
    Ok(scheduler)
}

/// Parses `2026-01-01` (midnight UTC) or an RFC 3339 time.
pub(crate) fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .with_context(|| format!("`{text}` is not a date (2026-01-01) or an RFC 3339 time"))?;
    Ok(date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
}

pub(crate) async fn backfill(
    database: &DatabaseConfig,
    dags_dir: &Path,
    dag_id: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<()> {
    let scheduler = synced_scheduler(database, dags_dir).await?;
    let runs = scheduler
        .backfill(dag_id, parse_time(from)?, parse_time(to)?)
        .await?;
    for run in &runs {
        println!(
            "created run {} for {}",
            run.id,
            to_datetime(run.logical_date).to_rfc3339()
        );
    }
    println!(
        "{} backfill run(s) created for `{dag_id}`; a running server executes them",
        runs.len()
    );
    Ok(())
}

pub(crate) async fn set_paused(
    database: &DatabaseConfig,
    dags_dir: &Path,
    dag_id: &str,
    paused: bool,
) -> anyhow::Result<()> {
    let scheduler = synced_scheduler(database, dags_dir).await?;
    scheduler.set_paused(dag_id, paused).await?;
    println!(
        "DAG `{dag_id}` is {}",
        if paused { "paused" } else { "unpaused" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://kiln:s3cret@db:5432/kiln"),
            "postgres://kiln:***@db:5432/kiln"
        );
        assert_eq!(
            super::redact("postgres://kiln@db/kiln"),
            "postgres://kiln@db/kiln"
        );
        assert_eq!(
            super::redact("sqlite://.kiln/kiln.db"),
            "sqlite://.kiln/kiln.db"
        );
    }
}
