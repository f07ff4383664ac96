//! What the web tests share: an `AppState` over a real store (SQLite, or a fresh PostgreSQL
//! database with `start_on`) and a real local artifact store in a fresh folder, with a no-op
//! plugin and the test's DAG files; one-shot requests to `kiln_web::app`; and a cookie-keeping
//! browser for the console.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use kiln_engine::artifacts::{ArtifactStoreConfig, BlobRef, BlobStore};
use kiln_engine::execution::ExecutionService;
use kiln_engine::mlflow::MlflowLinks;
use kiln_engine::plugin::{PluginRegistry, TaskContext, TaskError, TaskOutput, TaskPlugin};
use kiln_engine::scheduler::Scheduler;
use kiln_engine::store::{
    AttemptResult, ClaimParams, ClaimedTask, Completion, ProducedOutput, RunCreateParams,
    RunRecord, Store, TriggerKind,
};
use kiln_web::{AppState, ConsoleConfig, app};
use tower::ServiceExt;

/// A DAG of two no-op tasks, `second` after `first`, with one integer param.
pub const TWO_TASK_DAG: &str = r#"
id = "demo"
[params.count]
type = "integer"
default = 1
[[tasks]]
id = "first"
kind = "noop"
[[tasks]]
id = "second"
kind = "noop"
depends_on = ["first"]
"#;

/// A task that does nothing: the tests drive attempts through the store themselves.
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

/// A `deploy` that does nothing, so a test DAG can hold a task of a kind MLflow tracks.
pub struct NoopDeploy;

impl TaskPlugin for NoopDeploy {
    const KIND: &'static str = "deploy";
    type Params = NoopParams;

    async fn run(&self, _ctx: &TaskContext, _params: NoopParams) -> Result<TaskOutput, TaskError> {
        Ok(TaskOutput::default())
    }
}

/// How a test's server is set up.
pub struct Setup<'a> {
    /// DAG files, as (file name, text).
    pub dags: &'a [(&'a str, &'a str)],
    /// The API token callers must present, if any.
    pub api_token: Option<&'a str>,
    /// The console's settings.
    pub console: ConsoleConfig,
    /// Whether the execution service has the artifact store (the harness always has one).
    pub artifacts: bool,
    /// MLflow links, as a server with a tracking URI has.
    pub mlflow: Option<MlflowLinks>,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            dags: &[],
            api_token: None,
            console: ConsoleConfig::default(),
            artifacts: true,
            mlflow: None,
        }
    }
}

/// A server's state and what the tests reach behind it.
pub struct Harness {
    pub state: AppState,
    pub store: Arc<dyn Store>,
    pub execution: Arc<ExecutionService>,
    pub blobs: Arc<BlobStore>,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database to drop, as (admin URL, name).
    postgres: Option<(String, String)>,
}

/// Which database a test's store is on.
#[derive(Debug, Clone, Copy)]
pub enum Db {
    Sqlite,
    /// A fresh PostgreSQL database under `KILN_TEST_DATABASE_URL`; the name is the test's, for
    /// the SKIPPED line when the variable is unset.
    Postgres(&'static str),
}

/// A server state as `setup` says, its DAG files loaded, on SQLite.
pub async fn start(setup: Setup<'_>) -> Harness {
    start_on(setup, Db::Sqlite)
        .await
        .expect("SQLite is always there")
}

/// A server state as `setup` says on `db`, or `None` (after saying SKIPPED) when PostgreSQL is
/// asked for and not configured. Call `cleanup` at the end to drop a PostgreSQL database.
pub async fn start_on(setup: Setup<'_>, db: Db) -> Option<Harness> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    for (name, text) in setup.dags {
        std::fs::write(dir.path().join("dags").join(name), text).unwrap();
    }
    let (url, postgres) = match db {
        Db::Sqlite => (
            format!("sqlite://{}", dir.path().join("kiln.db").display()),
            None,
        ),
        Db::Postgres(test) => {
            let (url, admin, name) = postgres_database(test).await?;
            (url, Some((admin, name)))
        }
    };
    let store = kiln_engine::store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let mut registry = PluginRegistry::new();
    registry.register(Noop).unwrap();
    registry.register(NoopDeploy).unwrap();
    let scheduler = Arc::new(Scheduler::new(
        Arc::clone(&store),
        registry,
        dir.path().join("dags"),
        "test".to_owned(),
    ));
    scheduler.sync_dags().await.unwrap();
    let blobs =
        Arc::new(BlobStore::from_config(&ArtifactStoreConfig::local_under(dir.path())).unwrap());
    let mut execution = ExecutionService::new(scheduler, Duration::from_secs(30));
    if setup.artifacts {
        execution = execution.with_artifacts(Arc::clone(&blobs));
    }
    let execution = Arc::new(execution);
    let state = AppState {
        execution: Arc::clone(&execution),
        worker_token: "worker-secret".into(),
        api_token: setup.api_token.map(Into::into),
        console: setup.console,
        models: Default::default(),
        mlflow: setup.mlflow.map(Arc::new),
    };
    Some(Harness {
        state,
        store,
        execution,
        blobs,
        dir,
        postgres,
    })
}

/// Creates a fresh PostgreSQL database: its URL, the admin URL and its name.
async fn postgres_database(test: &str) -> Option<(String, String, String)> {
    use sqlx::Connection;
    use std::sync::atomic::{AtomicU32, Ordering};
    let admin = match std::env::var("KILN_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            if std::env::var("KILN_REQUIRE_SERVICES").is_ok_and(|value| value == "1") {
                panic!(
                    "{test}: PostgreSQL is required (KILN_REQUIRE_SERVICES=1) but KILN_TEST_DATABASE_URL is not set"
                );
            }
            eprintln!("SKIPPED {test}: no PostgreSQL (KILN_TEST_DATABASE_URL is not set)");
            return None;
        }
    };
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|time| time.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "kiln_test_web_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|error| panic!("PostgreSQL at {admin} is unreachable: {error}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    let (base, query) = admin
        .split_once('?')
        .map_or((admin.as_str(), None), |(base, query)| (base, Some(query)));
    let prefix = base.rsplit_once('/').map_or(base, |(prefix, _)| prefix);
    let url = match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    };
    Some((url, admin, name))
}

/// Defines each named check, an `async fn(Db)`, as a test on SQLite and one on PostgreSQL.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Postgres(concat!("postgres::", stringify!($name)))).await;
                }
            )+
        }
    };
}

impl Harness {
    /// Drops the PostgreSQL database (SQLite's goes with the folder).
    pub async fn cleanup(self) {
        use sqlx::Connection;
        let Harness {
            state,
            store,
            execution,
            postgres,
            ..
        } = self;
        drop((state, store, execution));
        if let Some((admin, name)) = postgres
            && let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }

    /// Stores bytes as a real blob.
    pub async fn blob(&self, bytes: &[u8]) -> BlobRef {
        let upload = tempfile::NamedTempFile::new_in(self.dir.path()).unwrap();
        std::fs::write(upload.path(), bytes).unwrap();
        self.blobs.put_file(upload.path()).await.unwrap().blob
    }

    /// Creates a manual run of `dag_id` at `now` and starts it.
    pub async fn start_run(&self, dag_id: &str, now: i64) -> RunRecord {
        let run = self
            .store
            .run_create(&RunCreateParams {
                dag_id: dag_id.to_owned(),
                dag_version_id: None,
                logical_date: now,
                data_interval: None,
                trigger: TriggerKind::Manual,
                params: serde_json::json!({}),
                now,
            })
            .await
            .unwrap()
            .unwrap();
        self.store.run_start_queued(now).await.unwrap();
        run
    }

    /// Claims the next task as worker `w`, which must be `task_id`.
    pub async fn claim(&self, task_id: &str, now: i64) -> ClaimedTask {
        let task = self
            .store
            .task_instance_claim(&ClaimParams {
                worker_id: "w".to_owned(),
                queues: vec!["default".to_owned()],
                limit: 1,
                lease: Duration::from_secs(30),
                now,
            })
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(task.task_id, task_id);
        task
    }

    /// Reports a claimed task successful with these outputs.
    pub async fn complete(&self, task: &ClaimedTask, outputs: Vec<ProducedOutput>, now: i64) {
        let completion = Completion {
            task_instance_id: task.task_instance_id,
            fence: task.fence,
            result: AttemptResult::Success {
                summary: serde_json::json!({}),
                outputs,
                cache: None,
            },
        };
        self.store
            .task_instance_complete(&[completion], now)
            .await
            .unwrap()[0]
            .clone()
            .unwrap();
    }

    /// Calls the app once; answers the status, the headers and the raw body.
    pub async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        (status, headers, bytes.to_vec())
    }

    /// Calls the JSON API; `body` is sent unless it is null. Answers the status and the JSON
    /// body (null when there is none or it is not JSON).
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let (status, _, bytes) = self.send(request.body(body).unwrap()).await;
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }
}

/// A console page as a test reads it.
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn has(&self, text: &str) -> bool {
        self.body.contains(text)
    }

    /// Fails naming the first missing text, with the page.
    #[track_caller]
    pub fn assert_has(&self, expected: &[&str]) {
        for text in expected {
            assert!(self.has(text), "missing {text:?} in\n{}", self.body);
        }
    }

    pub fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    /// The page's CSRF token, as its forms carry it.
    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self.body.find(marker).expect("the page has a form") + marker.len();
        let end = start + self.body[start..].find('"').unwrap();
        self.body[start..end].to_owned()
    }
}

/// Keeps the session cookie between requests, as a browser does.
pub struct Browser<'a> {
    harness: &'a Harness,
    /// The session cookie (`name=value`) the server set last.
    pub cookie: Option<String>,
    /// The client address its requests come from, as `serve` would tell the app.
    pub address: Option<std::net::SocketAddr>,
}

impl<'a> Browser<'a> {
    pub fn new(harness: &'a Harness) -> Browser<'a> {
        Browser {
            harness,
            cookie: None,
            address: None,
        }
    }

    /// A browser whose requests come from `address`.
    pub fn at(harness: &'a Harness, address: &str) -> Browser<'a> {
        Browser {
            address: Some(address.parse().unwrap()),
            ..Browser::new(harness)
        }
    }

    pub async fn send(&mut self, request: axum::http::request::Builder, body: String) -> Page {
        let mut request = request;
        if let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let mut request = request.body(Body::from(body)).unwrap();
        if let Some(address) = self.address {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(address));
        }
        let (status, headers, bytes) = self.harness.send(request).await;
        if let Some(set) = headers.get(header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = Some(pair).filter(|pair| !pair.ends_with('='));
        }
        Page {
            status,
            headers,
            body: String::from_utf8(bytes).unwrap(),
        }
    }

    pub async fn get(&mut self, uri: &str) -> Page {
        self.send(Request::builder().method("GET").uri(uri), String::new())
            .await
    }

    /// A GET as htmx sends it.
    pub async fn htmx_get(&mut self, uri: &str) -> Page {
        let request = Request::builder()
            .method("GET")
            .uri(uri)
            .header("hx-request", "true");
        self.send(request, String::new()).await
    }

    /// Posts a form; `csrf` is added as a browser would send the hidden field, and `htmx` adds
    /// the header htmx sends.
    pub async fn post_as(
        &mut self,
        uri: &str,
        csrf: Option<&str>,
        fields: &[(&str, &str)],
        htmx: bool,
    ) -> Page {
        let mut form = form_urlencoded::Serializer::new(String::new());
        if let Some(csrf) = csrf {
            form.append_pair("csrf", csrf);
        }
        for (name, value) in fields {
            form.append_pair(name, value);
        }
        let mut request = Request::builder()
            .method("POST")
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if htmx {
            request = request.header("hx-request", "true");
        }
        self.send(request, form.finish()).await
    }

    /// Posts a form as a plain browser does.
    pub async fn post(&mut self, uri: &str, csrf: Option<&str>, fields: &[(&str, &str)]) -> Page {
        self.post_as(uri, csrf, fields, false).await
    }
}
