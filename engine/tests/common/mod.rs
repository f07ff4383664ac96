//! Test support: a fresh database per test on SQLite and on PostgreSQL, and a small plugin
//! registry for DAG files.

#![allow(dead_code, unreachable_pub)]

pub mod mlflow;
pub mod s3;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use kiln_engine::dag::{LoadedDag, parse_dag};
use kiln_engine::plugin::{PluginRegistry, TaskContext, TaskError, TaskOutput, TaskPlugin};
use kiln_engine::store::{Backend, Store, connect};
use sqlx::Connection;

/// A plugin that does nothing; tests drive task outcomes through the store.
pub struct Noop;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopParams {}

impl TaskPlugin for Noop {
    const KIND: &'static str = "noop";
    type Params = NoopParams;

    async fn run(&self, _ctx: &TaskContext, _params: NoopParams) -> Result<TaskOutput, TaskError> {
        Ok(TaskOutput::default())
    }
}

pub fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    registry.register(Noop).unwrap();
    registry
}

/// Parses a DAG from TOML text (tasks default to `kind = "noop"` when the text says so).
pub fn dag(text: &str) -> LoadedDag {
    parse_dag(Path::new("test.toml"), text.as_bytes(), &registry())
        .unwrap_or_else(|error| panic!("{error}"))
}

/// A database for one test; dropping it removes a PostgreSQL database it created.
pub struct TestDb {
    pub store: Arc<dyn Store>,
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    admin_url: Option<(String, String)>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("kiln.db").display());
        let store = connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        TestDb {
            store,
            url,
            backend: Backend::Sqlite,
            _dir: Some(dir),
            admin_url: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` (after saying SKIPPED) when no server is configured.
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let admin = postgres_admin_url(test)?;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kiln_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand_suffix()
        );
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|error| {
            panic!("KILN_TEST_DATABASE_URL is set but PostgreSQL at {admin} is unreachable: {error}")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        let url = replace_database(&admin, &name);
        let store = connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        Some(TestDb {
            store,
            url,
            backend: Backend::Postgres,
            _dir: None,
            admin_url: Some((admin, name)),
        })
    }

    /// Drops the PostgreSQL database (SQLite's goes with its temporary folder).
    pub async fn cleanup(self) {
        let TestDb {
            store, admin_url, ..
        } = self;
        drop(store);
        if let Some((admin, name)) = admin_url
            && let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|time| time.subsec_nanos() as u64)
        .unwrap_or(0)
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let prefix = base.rsplit_once('/').map_or(base, |(prefix, _)| prefix);
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

/// The admin URL for PostgreSQL tests, or `None` after a loud SKIPPED. Under CI
/// (`KILN_REQUIRE_SERVICES=1`) a missing server fails the test instead.
pub fn postgres_admin_url(test: &str) -> Option<String> {
    match std::env::var("KILN_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(test, "PostgreSQL", "KILN_TEST_DATABASE_URL");
            None
        }
    }
}

/// Says SKIPPED where the test runner does not capture it, or fails when services are required.
pub fn skip(test: &str, service: &str, variable: &str) {
    if std::env::var("KILN_REQUIRE_SERVICES").is_ok_and(|value| value == "1") {
        panic!("{test}: {service} is required (KILN_REQUIRE_SERVICES=1) but {variable} is not set");
    }
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stderr,
        "SKIPPED {test}: no {service} ({variable} is not set)"
    );
}

/// Defines each named conformance check as a test on SQLite and a test on PostgreSQL.
#[allow(unused_macros)]
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::common::TestDb::postgres(concat!("postgres::", stringify!($name))).await else {
                        return;
                    };
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )+
        }
    };
}
