//! The console's model pages, called with `oneshot` on a real SQLite store and a real local
//! artifact store: the models list, a model's versions with their metrics and chart, promotion
//! and rollback (CSRF-checked, refused to read-only logins), the prediction form, and the links
//! to MLflow and its outbox page where MLflow is configured.

mod common;

use axum::http::StatusCode;
use common::{Browser, Harness, Setup};
use kiln_engine::dag::{ArtifactKind, ModelAlias};
use kiln_engine::mlflow::MlflowLinks;
use kiln_engine::mlflow::{MLFLOW_TRACKING, MlflowIdKind};
use kiln_engine::store::{OutputContent, ProducedOutput, PublishParams, RunRecord, TriggerKind};
use kiln_web::ConsoleConfig;

const SAVED: &[u8] = include_bytes!("../../tasks/tests/fixtures/logistic-v1.kiln-model.json");

/// A DAG whose one task deploys a model to production, as a real deploy task does.
const TRAIN: &str = r#"
id = "train"
[[tasks]]
id = "deploy"
kind = "deploy"
outputs = { model = { kind = "model", publish_as = "wq", promote = "production" } }
"#;

/// A DAG with no task MLflow tracks.
const PLAIN: &str = r#"
id = "plain"
[[tasks]]
id = "only"
kind = "noop"
"#;

const T0: i64 = 1_800_000_000_000_000;

async fn harness(console: ConsoleConfig) -> Harness {
    harness_with(console, None).await
}

async fn harness_with(console: ConsoleConfig, mlflow: Option<MlflowLinks>) -> Harness {
    common::start(Setup {
        dags: &[("train.toml", TRAIN), ("plain.toml", PLAIN)],
        console,
        mlflow,
        ..Setup::default()
    })
    .await
}

/// The fixture with another intercept: a second, different model.
fn second_version() -> Vec<u8> {
    let mut model: serde_json::Value = serde_json::from_slice(SAVED).unwrap();
    model["fitted"]["intercepts"] = serde_json::json!([-10.0]);
    model.to_string().into_bytes()
}

impl Harness {
    /// Runs the `train` DAG through the store: its deploy writes the fixture as `wq` v1 with
    /// these metrics and moves production to it.
    async fn deploy_by_run(&self, metrics: serde_json::Value) -> RunRecord {
        let run = self.start_run("train", T0).await;
        let task = self.claim("deploy", T0).await;
        let output = ProducedOutput {
            slot: "model".to_owned(),
            content: OutputContent::Blob {
                blob: self.blob(SAVED).await,
                media_type: "application/vnd.kiln.model+json".to_owned(),
                dataset: None,
                metadata: Some(serde_json::json!({ "metrics": metrics })),
            },
        };
        self.complete(&task, vec![output], T0).await;
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
            .model_alias_get(name, ModelAlias::Production)
            .await
            .unwrap()
            .map(|version| version.version)
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
        harness
            .store
            .model_alias_event_list("wq")
            .await
            .unwrap()
            .len(),
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

const MLFLOW: &str = "http://mlflow.test:5000";

#[tokio::test]
async fn runs_and_model_versions_link_to_mlflow_once_mirrored() {
    let harness = harness_with(ConsoleConfig::default(), Some(MlflowLinks::new(MLFLOW))).await;
    let run = harness.registry().await;
    let mut browser = Browser::new(&harness);
    // Configured, but nothing has reached MLflow yet.
    let page = browser.get(&format!("/runs/{}", run.id)).await;
    page.assert_has(&["MLflow: not mirrored yet", r#"href="/mlflow""#]);
    let page = browser.get("/models/wq").await;
    assert!(!page.has("#/models/"), "{}", page.body);
    browser.get("/models").await.assert_has(&["MLflow mirror"]);

    for (kind, key, id) in [
        (MlflowIdKind::Experiment, "train", "3"),
        (MlflowIdKind::Run, &*run.id.to_string(), "abc123"),
        (MlflowIdKind::ModelVersion, "wq@1", "7"),
    ] {
        harness
            .store
            .mirror_id_record(kind.as_str(), key, id, T0)
            .await
            .unwrap();
    }
    let page = browser.get(&format!("/runs/{}", run.id)).await;
    page.assert_has(&[&format!(r#"href="{MLFLOW}/#/experiments/3/runs/abc123""#)]);
    let page = browser.get("/models/wq").await;
    page.assert_has(&[
        "<th>MLflow</th>",
        &format!(r#"href="{MLFLOW}/#/models/wq/versions/7""#),
    ]);
    // Version 2 was published by hand and never mirrored: no link for it.
    assert!(!page.has("#/models/wq/versions/2"), "{}", page.body);
    // A DAG without a tracked task never reaches MLflow: its runs say nothing about it.
    let plain = harness
        .state
        .scheduler()
        .trigger("plain", &serde_json::Map::new(), TriggerKind::Manual)
        .await
        .unwrap();
    let page = browser.get(&format!("/runs/{}", plain.id)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.has("MLflow"), "{}", page.body);
}

#[tokio::test]
async fn without_mlflow_no_link_and_the_mirror_page_says_how_to_configure_it() {
    let harness = harness(ConsoleConfig::default()).await;
    let run = harness.registry().await;
    let mut browser = Browser::new(&harness);
    let page = browser.get(&format!("/runs/{}", run.id)).await;
    assert!(!page.has("MLflow"), "{}", page.body);
    let page = browser.get("/models/wq").await;
    assert!(!page.has("<th>MLflow</th>"), "{}", page.body);
    assert!(!browser.get("/models").await.has("MLflow mirror"));
    browser
        .get("/mlflow")
        .await
        .assert_has(&["MLflow is not configured", "--mlflow-tracking-uri"]);
    let csrf = browser.get("/models/wq").await.csrf();
    let retry = browser.post("/mlflow/retry", Some(&csrf), &[]).await;
    assert_eq!(retry.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_mirror_page_shows_waiting_and_parked_events_and_retries_them() {
    let harness = harness_with(
        ConsoleConfig::new(Some(ADMIN.to_owned()), Some(READER.to_owned())),
        Some(MlflowLinks::new(MLFLOW)),
    )
    .await;
    harness.store.outbox_set_tracking(Some(MLFLOW_TRACKING));
    harness.registry().await;
    // The run of a tracked DAG (start, its deploy's attempt and model version, end) and the
    // alias moves.
    let events = harness.store.outbox_list(100).await.unwrap();
    assert!(events.len() >= 3, "{events:#?}");
    // The first given up on, the second failing and waiting for its next try.
    harness
        .store
        .outbox_fail(events[0].id, "attempt 20: MLflow answered 500: boom", None)
        .await
        .unwrap();
    harness
        .store
        .outbox_fail(
            events[1].id,
            "attempt 1: cannot reach MLflow",
            Some(T0 + 5_000_000),
        )
        .await
        .unwrap();

    let mut reader = Browser::new(&harness);
    let csrf = reader.get("/login").await.csrf();
    reader
        .post("/login", Some(&csrf), &[("password", READER)])
        .await;
    let page = reader.get("/mlflow").await;
    assert_eq!(page.status, StatusCode::OK);
    page.assert_has(&[
        MLFLOW,
        "1 parked",
        "parked",
        "retrying",
        "pending",
        "attempt 20: MLflow answered 500: boom",
        "cannot reach MLflow",
        &events[0].call.describe(),
    ]);
    assert!(!page.has("Retry parked events"), "{}", page.body);
    let refused = reader.post("/mlflow/retry", Some(&page.csrf()), &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let mut admin = Browser::new(&harness);
    let csrf = admin.get("/login").await.csrf();
    admin
        .post("/login", Some(&csrf), &[("password", ADMIN)])
        .await;
    let page = admin.get("/mlflow").await;
    page.assert_has(&["Retry parked events"]);
    let forged = admin
        .post("/mlflow/retry", Some("not-the-token"), &[])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(harness.store.outbox_list(100).await.unwrap()[0].parked);
    let retried = admin.post("/mlflow/retry", Some(&page.csrf()), &[]).await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER);
    assert_eq!(retried.location(), "/mlflow");
    let after = harness.store.outbox_list(100).await.unwrap();
    assert_eq!(after.len(), events.len(), "nothing is lost");
    assert!(after.iter().all(|event| !event.parked));
    assert!(!admin.get("/mlflow").await.has("Retry parked events"));
}
