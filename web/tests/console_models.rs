//! The console's model pages, called with `oneshot` on a real SQLite store and a real local
//! artifact store: the models list, a model's versions with their metrics and chart, promotion
//! and rollback (CSRF-checked, refused to read-only logins), and the prediction form.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use kiln_engine::artifacts::{ArtifactStoreConfig, BlobRef, BlobStore};
use kiln_engine::dag::{ArtifactKind, ModelAlias};
use kiln_engine::execution::ExecutionService;
use kiln_engine::plugin::{PluginRegistry, TaskContext, TaskError, TaskOutput, TaskPlugin};
use kiln_engine::scheduler::Scheduler;
use kiln_engine::store::{
    AttemptResult, ClaimParams, Completion, OutputContent, ProducedOutput, PublishParams,
    RunCreateParams, RunRecord, Store, TriggerKind,
};
use kiln_web::{AppState, ConsoleConfig, app};
use tower::ServiceExt;

const SAVED: &[u8] = include_bytes!("../../tasks/tests/fixtures/logistic-v1.kiln-model.json");

struct Noop;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoopParams {}

impl TaskPlugin for Noop {
    const KIND: &'static str = "noop";
    type Params = NoopParams;

    async fn run(&self, _ctx: &TaskContext, _params: NoopParams) -> Result<TaskOutput, TaskError> {
        Ok(TaskOutput::default())
    }
}

/// A DAG whose one task deploys a model to production, as a real deploy task does.
const TRAIN: &str = r#"
id = "train"
[[tasks]]
id = "deploy"
kind = "noop"
outputs = { model = { kind = "model", publish_as = "wq", promote = "production" } }
"#;

const T0: i64 = 1_800_000_000_000_000;

struct Harness {
    state: AppState,
    store: Arc<dyn Store>,
    blobs: Arc<BlobStore>,
    dir: tempfile::TempDir,
}

async fn harness(console: ConsoleConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    std::fs::write(dir.path().join("dags/train.toml"), TRAIN).unwrap();
    let store = kiln_engine::store::connect(&format!(
        "sqlite://{}",
        dir.path().join("kiln.db").display()
    ))
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let mut registry = PluginRegistry::new();
    registry.register(Noop).unwrap();
    let scheduler = Arc::new(Scheduler::new(
        Arc::clone(&store),
        registry,
        dir.path().join("dags"),
        "test".to_owned(),
    ));
    scheduler.sync_dags().await.unwrap();
    let blobs =
        Arc::new(BlobStore::from_config(&ArtifactStoreConfig::local_under(dir.path())).unwrap());
    let execution = ExecutionService::new(scheduler, Duration::from_secs(30))
        .with_artifacts(Arc::clone(&blobs));
    let state = AppState {
        execution: Arc::new(execution),
        worker_token: "worker-secret".into(),
        api_token: None,
        console,
        models: Default::default(),
    };
    Harness {
        state,
        store,
        blobs,
        dir,
    }
}

/// The fixture with another intercept: a second, different model.
fn second_version() -> Vec<u8> {
    let mut model: serde_json::Value = serde_json::from_slice(SAVED).unwrap();
    model["fitted"]["intercepts"] = serde_json::json!([-10.0]);
    model.to_string().into_bytes()
}

impl Harness {
    async fn blob(&self, bytes: &[u8]) -> BlobRef {
        let path = self.dir.path().join("upload.json");
        std::fs::write(&path, bytes).unwrap();
        self.blobs.put_file(&path).await.unwrap().blob
    }

    /// Runs the `train` DAG through the store: its deploy writes the fixture as `wq` v1 with
    /// these metrics and moves production to it.
    async fn deploy_by_run(&self, metrics: serde_json::Value) -> RunRecord {
        let run = self
            .store
            .run_create(&RunCreateParams {
                dag_id: "train".to_owned(),
                dag_version_id: None,
                logical_date: T0,
                data_interval: None,
                trigger: TriggerKind::Manual,
                params: serde_json::json!({}),
                now: T0,
            })
            .await
            .unwrap()
            .unwrap();
        self.store.runs_start_queued(T0).await.unwrap();
        let task = self
            .store
            .task_claim(&ClaimParams {
                worker_id: "w".to_owned(),
                queues: vec!["default".to_owned()],
                limit: 1,
                lease: Duration::from_secs(30),
                now: T0,
            })
            .await
            .unwrap()
            .pop()
            .unwrap();
        let output = ProducedOutput {
            slot: "model".to_owned(),
            content: OutputContent::Blob {
                blob: self.blob(SAVED).await,
                media_type: "application/vnd.kiln.model+json".to_owned(),
                dataset: None,
                metadata: Some(serde_json::json!({ "metrics": metrics })),
            },
        };
        let completion = Completion {
            task_instance_id: task.task_instance_id,
            fence: task.fence,
            result: AttemptResult::Success {
                summary: serde_json::json!({}),
                outputs: vec![output],
                cache: None,
            },
        };
        self.store.task_complete(&[completion], T0).await.unwrap()[0]
            .clone()
            .unwrap();
        run
    }

    /// Publishes a version of `name` by hand, with these metrics.
    async fn publish(&self, name: &str, bytes: &[u8], metrics: serde_json::Value) -> i64 {
        let (version, _) = self
            .store
            .artifact_publish(
                &PublishParams {
                    name: name.to_owned(),
                    kind: ArtifactKind::Model,
                    blob: self.blob(bytes).await,
                    media_type: "application/vnd.kiln.model+json".to_owned(),
                    dataset: None,
                    metadata: Some(serde_json::json!({ "metrics": metrics })),
                },
                T0 + 1_000_000,
            )
            .await
            .unwrap();
        version.version
    }

    /// `wq` v1 deployed by a run (production), v2 published by hand (staging), and `bare`, a
    /// model never promoted. Answers the run.
    async fn registry(&self) -> RunRecord {
        let run = self
            .deploy_by_run(serde_json::json!({ "accuracy": 0.76, "f1_macro": 0.74 }))
            .await;
        let second = self
            .publish(
                "wq",
                &second_version(),
                serde_json::json!({ "accuracy": 0.81, "roc_auc": 0.9 }),
            )
            .await;
        assert_eq!(second, 2);
        self.store
            .model_alias_set("wq", ModelAlias::Staging, 2, "trying it", T0 + 2_000_000)
            .await
            .unwrap();
        self.publish("bare", SAVED, serde_json::json!({})).await;
        run
    }

    async fn production(&self, name: &str) -> Option<i64> {
        self.store
            .model_alias(name, ModelAlias::Production)
            .await
            .unwrap()
            .map(|version| version.version)
    }
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn has(&self, text: &str) -> bool {
        self.body.contains(text)
    }

    /// Fails naming the first missing text, with the page.
    #[track_caller]
    fn assert_has(&self, expected: &[&str]) {
        for text in expected {
            assert!(self.has(text), "missing {text:?} in\n{}", self.body);
        }
    }

    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self.body.find(marker).expect("the page has a form") + marker.len();
        let end = start + self.body[start..].find('"').unwrap();
        self.body[start..end].to_owned()
    }
}

/// Keeps the session cookie between requests, as a browser does.
struct Browser<'a> {
    harness: &'a Harness,
    cookie: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(harness: &'a Harness) -> Browser<'a> {
        Browser {
            harness,
            cookie: None,
        }
    }

    async fn send(&mut self, request: axum::http::request::Builder, body: String) -> Page {
        let mut request = request;
        if let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let response = app(self.harness.state.clone())
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        if let Some(set) = headers.get(header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = Some(pair).filter(|pair| !pair.ends_with('='));
        }
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap();
        Page {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn get(&mut self, uri: &str) -> Page {
        self.send(Request::builder().method("GET").uri(uri), String::new())
            .await
    }

    /// Posts a form; `csrf` is added as a browser would send the hidden field, and `htmx` adds
    /// the header htmx sends.
    async fn post_as(
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

    async fn post(&mut self, uri: &str, csrf: Option<&str>, fields: &[(&str, &str)]) -> Page {
        self.post_as(uri, csrf, fields, false).await
    }
}

#[tokio::test]
async fn the_models_page_lists_every_model_with_its_aliases() {
    let harness = harness(ConsoleConfig::default()).await;
    let mut browser = Browser::new(&harness);
    let empty = browser.get("/models").await;
    assert_eq!(empty.status, StatusCode::OK);
    empty.assert_has(&[
        "No model has been published yet.",
        r#"<a href="/models" aria-current="page">Models</a>"#,
    ]);
    let dags = browser.get("/dags").await;
    dags.assert_has(&[r#"<a href="/models">Models</a>"#]);

    harness.registry().await;
    let page = browser.get("/models").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_has(&[
        r#"<a class="model-name" href="/models/wq">wq</a>"#,
        r#"<a class="model-name" href="/models/bare">bare</a>"#,
        // Latest v2, production v1, staging v2.
        r#"<td><a href="/artifacts/wq/2">v2</a></td><td><a href="/artifacts/wq/1">v1</a></td><td><a href="/artifacts/wq/2">v2</a></td>"#,
        // `bare` has neither alias.
        r#"<td><a href="/artifacts/bare/1">v1</a></td><td><span class="muted">—</span></td><td><span class="muted">—</span></td>"#,
        "<time datetime=",
    ]);
}

#[tokio::test]
async fn a_model_page_shows_versions_metrics_chart_and_history() {
    let harness = harness(ConsoleConfig::default()).await;
    let run = harness.registry().await;
    let mut browser = Browser::new(&harness);
    let page = browser.get("/models/wq").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_has(&[
        "<h1>wq</h1>",
        r#"<a class="button" href="/artifacts/wq">"#,
        // Versions, newest first, with their aliases as badges.
        r#"<td><a href="/artifacts/wq/2">v2</a></td><td><span class="alias alias-staging">staging</span></td>"#,
        r#"<tr aria-current="true"><td><a href="/artifacts/wq/1">v1</a></td><td><span class="alias alias-production">production</span>"#,
        // The key metrics recorded, and no column for those none recorded.
        r#"<th class="number">accuracy</th><th class="number">f1_macro</th><th class="number">roc_auc</th>"#,
        r#"<td class="number">0.81</td><td class="number"><span class="muted">—</span></td><td class="number">0.9</td>"#,
        r#"<td class="number">0.76</td><td class="number">0.74</td>"#,
        // Who made each version.
        &format!(r#"href="/runs/{}/tasks/deploy?try=1">train/deploy</a>"#, run.id),
        &format!(r#"href="/runs/{}">run {}</a>"#, run.id, run.id),
        "published by hand",
        // The chart: accuracy by default, both versions, production marked.
        "<svg",
        r#"aria-label="accuracy of wq by version""#,
        ">v1</text>",
        ">v2</text>",
        r#"<a href="/artifacts/wq/1"><g class="point production"><title>v1: accuracy 0.76 (production)</title>"#,
        ">production</text>",
        r#"<a href="/models/wq?metric=accuracy" aria-current="page">accuracy</a>"#,
        r#"href="/models/wq?metric=roc_auc""#,
        // The buttons.
        r#"action="/models/wq/promote""#,
        r#"<input type="hidden" name="version" value="2">"#,
        "Promote to production",
        "No earlier production version to roll back to.",
        // The alias history, newest first.
        "<td>trying it</td>",
        &format!(
            "<td>deployed by run {} task `deploy` attempt 1</td>",
            run.id
        ),
    ]);
    assert!(
        page.body.find("trying it").unwrap() < page.body.find("deployed by run").unwrap(),
        "newest first"
    );
    assert!(
        !page.has("MLflow"),
        "no MLflow link without MLflow: {}",
        page.body
    );
    assert_eq!(page.body.matches("Promote to production").count(), 1);

    let chosen = browser.get("/models/wq?metric=roc_auc").await;
    assert_eq!(chosen.status, StatusCode::OK);
    chosen.assert_has(&[
        r#"aria-label="roc_auc of wq by version""#,
        "<title>v2: roc_auc 0.9</title>",
        r#"<a href="/models/wq?metric=roc_auc" aria-current="page">roc_auc</a>"#,
    ]);
    assert!(
        !chosen.has(">v1</text>"),
        "v1 recorded no roc_auc: {}",
        chosen.body
    );

    let unknown = browser.get("/models/wq?metric=bleu").await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    unknown.assert_has(&[
        "no version of model `wq` recorded the metric `bleu` (accuracy, f1_macro, roc_auc)",
    ]);
    let bare = browser.get("/models/bare").await;
    assert_eq!(bare.status, StatusCode::OK);
    bare.assert_has(&[
        "No version recorded metrics.",
        "No alias has pointed at a version of bare yet.",
    ]);
    assert!(!bare.has("<svg"), "{}", bare.body);

    let missing = browser.get("/models/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    missing.assert_has(&["model `nope` not found"]);
    // An artifact that is not a model is not a model.
    harness
        .store
        .artifact_publish(
            &PublishParams {
                name: "notes".to_owned(),
                kind: ArtifactKind::File,
                blob: harness.blob(b"hello").await,
                media_type: "text/plain".to_owned(),
                dataset: None,
                metadata: None,
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        browser.get("/models/notes").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn promote_and_roll_back_are_csrf_checked_and_move_production() {
    let harness = harness(ConsoleConfig::default()).await;
    harness.registry().await;
    let mut browser = Browser::new(&harness);
    let page = browser.get("/models/wq").await;
    let csrf = page.csrf();

    // Without the token, or with a wrong one: 403, and production stays.
    for token in [None, Some("forged")] {
        let refused = browser
            .post("/models/wq/promote", token, &[("version", "2")])
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{token:?}");
        refused.assert_has(&["CSRF token"]);
        let refused = browser.post("/models/wq/rollback", token, &[]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{token:?}");
    }
    assert_eq!(harness.production("wq").await, Some(1));

    let promoted = browser
        .post("/models/wq/promote", Some(&csrf), &[("version", "2")])
        .await;
    assert_eq!(
        (promoted.status, promoted.location()),
        (
            StatusCode::SEE_OTHER,
            "/models/wq?done=promoted&version=2&previous=1"
        )
    );
    assert_eq!(harness.production("wq").await, Some(2));
    let after = browser.get(promoted.location()).await;
    assert_eq!(after.status, StatusCode::OK);
    after.assert_has(&[
        "Promoted version 2 to production (it was version 1); it is served within a second.",
        r#"<tr aria-current="true"><td><a href="/artifacts/wq/2">v2</a></td>"#,
        r#"<a href="/artifacts/wq/2"><g class="point production">"#,
        "<td>promoted in the console</td>",
        r#"action="/models/wq/rollback""#,
        "to version 1",
    ]);

    let rolled = browser.post("/models/wq/rollback", Some(&csrf), &[]).await;
    assert_eq!(
        (rolled.status, rolled.location()),
        (
            StatusCode::SEE_OTHER,
            "/models/wq?done=rolled_back&version=1&previous=2"
        )
    );
    assert_eq!(harness.production("wq").await, Some(1));
    browser.get(rolled.location()).await.assert_has(&[
        "Rolled production back to version 1 (it was version 2); it is served within a second.",
        "<td>rolled back from version 2</td>",
    ]);

    // Refusals come back on the model's page, naming the problem.
    let again = browser.post("/models/wq/rollback", Some(&csrf), &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    again.assert_has(&[
        r#"<p class="problem" role="alert">model `wq` has had no other production version to roll back to</p>"#,
        "<h1>wq</h1>",
    ]);
    let unknown = browser
        .post("/models/wq/promote", Some(&csrf), &[("version", "7")])
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    unknown.assert_has(&["model `wq` version 7 not found", "<h1>wq</h1>"]);
    let never = browser
        .post("/models/bare/rollback", Some(&csrf), &[])
        .await;
    assert_eq!(never.status, StatusCode::NOT_FOUND);
    never.assert_has(&["<h1>bare</h1>", "production version"]);
    let nonsense = browser
        .post("/models/wq/promote", Some(&csrf), &[("version", "two")])
        .await;
    assert_eq!(nonsense.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(harness.production("wq").await, Some(1));
    let missing = browser
        .post("/models/nope/promote", Some(&csrf), &[("version", "1")])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    missing.assert_has(&["model `nope` not found"]);
}

const ADMIN: &str = "admin-password";
const READER: &str = "reader-password";

#[tokio::test]
async fn a_read_only_login_sees_models_and_moves_nothing() {
    let harness = harness(ConsoleConfig::new(
        Some(ADMIN.to_owned()),
        Some(READER.to_owned()),
    ))
    .await;
    harness.registry().await;
    let mut browser = Browser::new(&harness);
    let form = browser.get("/login").await;
    let csrf = form.csrf();
    let logged_in = browser
        .post("/login", Some(&csrf), &[("password", READER)])
        .await;
    assert_eq!(logged_in.status, StatusCode::SEE_OTHER);

    assert_eq!(browser.get("/models").await.status, StatusCode::OK);
    let page = browser.get("/models/wq").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_has(&["read-only", "<svg", r#"name="feature.alcohol""#]);
    assert!(
        !page.has("Promote to production") && !page.has("/rollback"),
        "no actions shown: {}",
        page.body
    );
    let csrf = page.csrf();
    let promote = browser
        .post("/models/wq/promote", Some(&csrf), &[("version", "2")])
        .await;
    assert_eq!(promote.status, StatusCode::FORBIDDEN);
    promote.assert_has(&["this login is read-only"]);
    let rollback = browser.post("/models/wq/rollback", Some(&csrf), &[]).await;
    assert_eq!(rollback.status, StatusCode::FORBIDDEN);
    assert_eq!(harness.production("wq").await, Some(1));
    assert_eq!(
        harness.store.model_alias_events("wq").await.unwrap().len(),
        2
    );

    // A prediction changes nothing, so a reader may try one.
    let answer = browser
        .post(
            "/models/wq/predict",
            Some(&csrf),
            &[("feature.alcohol", "13"), ("feature.colour", "white")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn the_prediction_form_answers_with_the_served_model() {
    let harness = harness(ConsoleConfig::default()).await;
    harness.registry().await;
    let mut browser = Browser::new(&harness);
    let page = browser.get("/models/wq").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_has(&[
        r##"action="/models/wq/predict" hx-post="/models/wq/predict" hx-target="#prediction-result""##,
        r#"<input type="number" step="any" name="feature.alcohol" value="" required>"#,
        r#"<input type="text" name="feature.colour" value="" list="categories-1" required>"#,
        r#"<option value="red"></option><option value="white"></option>"#,
        r#"href="/artifacts/wq/1">version 1</a>, the version served in production."#,
        r#"<div id="prediction-result" aria-live="polite"></div>"#,
    ]);
    let csrf = page.csrf();
    // Alcohol 13 standardizes to 1.5: score 2·1.5 + 0.5 + 0.25 = 3.75 for class 1.
    let positive = 1.0 / (1.0 + (-3.75f64).exp());
    let known = [("feature.alcohol", "13"), ("feature.colour", "white")];

    // Without JavaScript: the whole page, the form keeping the values.
    let full = browser
        .post("/models/wq/predict", Some(&csrf), &known)
        .await;
    assert_eq!(full.status, StatusCode::OK, "{}", full.body);
    full.assert_has(&[
        "<h1>wq</h1>",
        r#"<dt>Prediction</dt><dd><strong class="predicted">1</strong></dd>"#,
        r#"href="/artifacts/wq/1">version 1</a></dd>"#,
        &format!(r#"<tr aria-current="true"><td>1</td><td class="number">{positive:.4}</td>"#),
        &format!(r#"<td>0</td><td class="number">{:.4}</td>"#, 1.0 - positive),
        r#"name="feature.alcohol" value="13""#,
        r#"name="feature.colour" value="white""#,
    ]);
    assert_eq!(format!("{positive:.4}"), "0.9770");

    // With htmx: the result fragment only.
    let fragment = browser
        .post_as("/models/wq/predict", Some(&csrf), &known, true)
        .await;
    assert_eq!(fragment.status, StatusCode::OK);
    assert!(
        fragment
            .body
            .starts_with(r#"<div id="prediction-result" aria-live="polite">"#),
        "{}",
        fragment.body
    );
    assert!(!fragment.has("<html"), "{}", fragment.body);
    fragment.assert_has(&[r#"<strong class="predicted">1</strong>"#, "0.9770"]);
    let red = browser
        .post_as(
            "/models/wq/predict",
            Some(&csrf),
            &[("feature.alcohol", "4"), ("feature.colour", "red")],
            true,
        )
        .await;
    red.assert_has(&[r#"<strong class="predicted">0</strong>"#]);

    // Bad input: a 422 naming the feature, as a page and as a fragment.
    let bad = browser
        .post(
            "/models/wq/predict",
            Some(&csrf),
            &[("feature.alcohol", "high"), ("feature.colour", "white")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    bad.assert_has(&[
        "feature `alcohol` must be a number, not &quot;high&quot;",
        r#"name="feature.alcohol" value="high""#,
    ]);
    let missing = browser
        .post_as(
            "/models/wq/predict",
            Some(&csrf),
            &[("feature.alcohol", "13"), ("feature.colour", "")],
            true,
        )
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    missing.assert_has(&[r#"<p class="problem" role="alert">missing feature `colour`</p>"#]);
    let extra = browser
        .post_as(
            "/models/wq/predict",
            Some(&csrf),
            &[
                ("feature.alcohol", "13"),
                ("feature.colour", "red"),
                ("feature.sugar", "2"),
            ],
            true,
        )
        .await;
    assert_eq!(extra.status, StatusCode::UNPROCESSABLE_ENTITY);
    extra.assert_has(&["unknown feature `sugar`"]);
    let forged = browser
        .post("/models/wq/predict", Some("forged"), &known)
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // A model without a production version says so instead of showing the form.
    let bare = browser.get("/models/bare").await;
    bare.assert_has(&["No version of bare is in production"]);
    assert!(!bare.has("feature."), "{}", bare.body);
    let refused = browser
        .post("/models/bare/predict", Some(&csrf), &known)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    refused.assert_has(&["model `bare` has no production version"]);
    let unknown = browser
        .post("/models/nope/predict", Some(&csrf), &known)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    unknown.assert_has(&["model `nope` not found"]);
}
