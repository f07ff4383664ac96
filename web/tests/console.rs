//! Console handler tests: `web::app(state)` called with `tower::ServiceExt::oneshot`, on a real
//! SQLite store and scheduler, through a small "browser" that keeps the session cookie and
//! reads each page's CSRF token the way a form would send it.

mod common;

use std::time::Duration;

use axum::http::{StatusCode, header};
use common::{Browser, Harness, Page, Setup};
use kiln_engine::execution::{ExecutionApi, Registration};
use kiln_engine::state::TaskState;
use kiln_engine::store::{LogUpload, RunFilter, now_micros};
use kiln_web::ConsoleConfig;

const DEMO: &str = r#"
id = "demo"
description = "A demo with every param type"
schedule = "0 0 * * *"
tags = ["example", "ml"]

[params.name]
type = "string"
default = "world"
choices = ["world", "kiln"]
[params.count]
type = "integer"
default = 1
[params.ratio]
type = "number"
default = 0.5
[params.loud]
type = "boolean"
default = false
[params.items]
type = "array"
default = [1, 2]
[params.extra]
type = "object"
default = { a = 1 }

[[tasks]]
id = "first"
kind = "noop"
[[tasks]]
id = "second"
kind = "noop"
depends_on = ["first"]
[[tasks]]
id = "third"
kind = "noop"
depends_on = ["first"]
[[tasks]]
id = "join"
kind = "noop"
depends_on = ["second", "third"]
"#;

const PLAIN: &str = r#"
id = "plain"
description = "No params, manual only"
[[tasks]]
id = "only"
kind = "noop"
"#;

async fn harness_with(console: ConsoleConfig, dags: &[(&str, &str)]) -> Harness {
    common::start(Setup {
        dags,
        console,
        artifacts: false,
        ..Setup::default()
    })
    .await
}

async fn harness(console: ConsoleConfig) -> Harness {
    harness_with(
        console,
        &[
            ("demo.toml", DEMO),
            ("plain.toml", PLAIN),
            (
                "broken.toml",
                "id = \"broken\"\n[[tasks]]\nid = \"x\"\nkind = \"nope\"\n",
            ),
        ],
    )
    .await
}

async fn trigger_plain(harness: &Harness) -> i64 {
    harness
        .state
        .scheduler()
        .trigger(
            "plain",
            &serde_json::Map::new(),
            kiln_engine::store::TriggerKind::Manual,
        )
        .await
        .unwrap()
        .id
}

async fn register(harness: &Harness, worker_id: &str) {
    harness
        .execution
        .register(&Registration {
            worker_id: worker_id.to_owned(),
            queues: vec!["default".to_owned()],
            concurrency: 4,
            hostname: "test-host".to_owned(),
            pid: 42,
            version: "0.0.0".to_owned(),
        })
        .await
        .unwrap();
}

/// Claims every queued task for `worker_id`; answers `(task id, task instance id, fence)`.
async fn claim(harness: &Harness, worker_id: &str) -> Vec<(String, i64, i64)> {
    harness
        .execution
        .claim(worker_id, &["default".to_owned()], 10, Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .map(|task| (task.task_id, task.task_instance_id, task.fence))
        .collect()
}

/// Finishes a claimed task as a success. Through `mark`, which ends the attempt as a completion
/// would, so the tests do not depend on the shape of a worker's report.
async fn succeed(harness: &Harness, run_id: i64, task_id: &str) {
    harness
        .state
        .scheduler()
        .mark(run_id, task_id, TaskState::Success)
        .await
        .unwrap();
}

async fn run_params(harness: &Harness, run_id: i64) -> serde_json::Value {
    let store = harness.state.scheduler().store();
    store.run_get(run_id).await.unwrap().unwrap().params
}

async fn task_states(harness: &Harness, run_id: i64) -> Vec<(String, String)> {
    let store = harness.state.scheduler().store();
    store
        .task_instance_list(run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|task| (task.task_id, task.state.to_string()))
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn the_dags_page_lists_schedules_runs_and_broken_files() {
    let harness = harness(ConsoleConfig::default()).await;
    let run_id = trigger_plain(&harness).await;
    let mut browser = Browser::new(&harness);
    let root = browser.get("/").await;
    assert_eq!(
        (root.status, root.location()),
        (StatusCode::SEE_OTHER, "/dags")
    );
    let page = browser.get("/dags").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    for expected in [
        r#"href="/dags/demo""#,
        "A demo with every param type",
        r#"href="/dags?tag=ml""#,
        "every day at 00:00 UTC",
        "next <time datetime=",
        "manual only",
        &format!(r#"class="sq st-running" href="/runs/{run_id}""#),
        r#"action="/dags/demo/pause""#,
        r#"action="/dags/plain/trigger""#,
        r#"name="param.count" value="1""#,
        r#"<option value="world" selected>world</option>"#,
        "DAG files that failed to load",
        "broken.toml",
        "unknown plugin kind `nope`",
        r#"class="legend""#,
        "/static/htmx-2.0.11.min.js",
    ] {
        assert!(page.has(expected), "missing {expected:?} in\n{}", page.body);
    }
    let searched = browser.get("/dags?q=MANUAL").await;
    assert!(searched.has(r#"href="/dags/plain""#) && !searched.has(r#"href="/dags/demo""#));
    let tagged = browser.get("/dags?tag=ml").await;
    assert!(tagged.has(r#"href="/dags/demo""#) && !tagged.has(r#"href="/dags/plain""#));
    assert!(tagged.has("1 of 2 DAGs"), "{}", tagged.body);
}

#[tokio::test]
async fn pausing_and_triggering_are_csrf_checked_posts() {
    let harness = harness(ConsoleConfig::default()).await;
    let mut browser = Browser::new(&harness);
    let page = browser.get("/dags").await;
    let csrf = page.csrf();
    assert!(
        browser.cookie.is_some(),
        "an open console hands out a session"
    );

    // Without the token, with a wrong one, or without the session: 403, and nothing happens.
    let refused = browser
        .post("/dags/demo/pause", None, &[("paused", "true")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = browser
        .post("/dags/demo/pause", Some("0123"), &[("paused", "true")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let mut stranger = Browser::new(&harness);
    let refused = stranger
        .post("/dags/demo/pause", Some(&csrf), &[("paused", "true")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let store = harness.state.scheduler().store();
    assert!(!store.dag_get("demo").await.unwrap().unwrap().paused);

    let paused = browser
        .post(
            "/dags/demo/pause",
            Some(&csrf),
            &[("paused", "true"), ("return_to", "/dags")],
        )
        .await;
    assert_eq!(
        (paused.status, paused.location()),
        (StatusCode::SEE_OTHER, "/dags")
    );
    assert!(store.dag_get("demo").await.unwrap().unwrap().paused);
    let offsite = browser
        .post(
            "/dags/demo/pause",
            Some(&csrf),
            &[("paused", "false"), ("return_to", "//evil.example/")],
        )
        .await;
    assert_eq!(offsite.location(), "/dags/demo", "no open redirect");
    assert!(!store.dag_get("demo").await.unwrap().unwrap().paused);

    let refused = browser.post("/dags/plain/trigger", None, &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let triggered = browser
        .post(
            "/dags/demo/trigger",
            Some(&csrf),
            &[
                ("param.name", "kiln"),
                ("param.count", "3"),
                ("param.ratio", "0.25"),
                ("param.loud", "true"),
                ("param.items", "[\"a\"]"),
                ("param.extra", ""),
            ],
        )
        .await;
    assert_eq!(
        triggered.status,
        StatusCode::SEE_OTHER,
        "{}",
        triggered.body
    );
    let run_id: i64 = triggered
        .location()
        .strip_prefix("/runs/")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        run_params(&harness, run_id).await,
        serde_json::json!({
            "name": "kiln", "count": 3, "ratio": 0.25, "loud": true,
            "items": ["a"], "extra": { "a": 1 }
        })
    );

    let bad = browser
        .post(
            "/dags/demo/trigger",
            Some(&csrf),
            &[("param.count", "three")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.has("param `count`: `three` is not an integer"),
        "{}",
        bad.body
    );
    assert!(bad.has(r#"value="three""#), "the form keeps what was typed");
    let refused_choice = browser
        .post(
            "/dags/demo/trigger",
            Some(&csrf),
            &[("param.name", "nobody")],
        )
        .await;
    assert_eq!(refused_choice.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused_choice.has("is not one of"),
        "{}",
        refused_choice.body
    );

    let missing = browser.post("/dags/nope/trigger", Some(&csrf), &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let form_page = browser.get("/dags/demo/trigger").await;
    assert_eq!(form_page.status, StatusCode::OK);
    assert!(
        form_page.has(r#"<textarea name="param.items""#),
        "{}",
        form_page.body
    );
}

#[tokio::test]
async fn the_dag_page_draws_graph_grid_and_source() {
    let harness = harness(ConsoleConfig::default()).await;
    let mut browser = Browser::new(&harness);
    let empty = browser.get("/dags/demo").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(
        empty.has("<svg") && empty.has("No run yet."),
        "{}",
        empty.body
    );

    let run_id = harness
        .state
        .scheduler()
        .trigger(
            "demo",
            &serde_json::Map::new(),
            kiln_engine::store::TriggerKind::Manual,
        )
        .await
        .unwrap()
        .id;
    register(&harness, "w1").await;
    let claimed = claim(&harness, "w1").await;
    assert_eq!(claimed[0].0, "first");
    succeed(&harness, run_id, "first").await;

    let graph = browser.get("/dags/demo").await;
    for expected in [
        "<svg",
        &format!(r#"href="/runs/{run_id}/tasks/first""#),
        r#"class="node st-success""#,
        r#"class="node st-queued""#,
        r#"class="node st-scheduled""#,
        "every day at 00:00 UTC",
    ] {
        assert!(
            graph.has(expected),
            "missing {expected:?} in\n{}",
            graph.body
        );
    }
    // The layout: first in column 0; second and third in column 1; join in column 2.
    let x_of = |task: &str| -> String {
        let link = format!(r#"href="/runs/{run_id}/tasks/{task}""#);
        let after = &graph.body[graph.body.find(&link).unwrap()..];
        let rect = &after[after.find("<rect x=\"").unwrap() + 9..];
        rect[..rect.find('"').unwrap()].to_owned()
    };
    assert_eq!(x_of("second"), x_of("third"));
    assert_ne!(x_of("first"), x_of("second"));
    assert_ne!(x_of("second"), x_of("join"));

    let grid = browser.get("/dags/demo?view=grid").await;
    assert_eq!(grid.status, StatusCode::OK);
    assert!(grid.has(r#"class="grid""#), "{}", grid.body);
    assert!(grid.has(&format!(
        r#"class="sq st-success" href="/runs/{run_id}/tasks/first""#
    )));

    let source = browser.get("/dags/demo?view=source").await;
    assert_eq!(source.status, StatusCode::OK);
    assert!(source.has("Source of version 1"), "{}", source.body);
    assert!(source.has("id = &quot;demo&quot;") || source.has("id = \"demo\""));
    std::fs::write(
        harness.dir.path().join("dags/demo.toml"),
        DEMO.replace("A demo", "A changed demo"),
    )
    .unwrap();
    let changed = browser.get("/dags/demo?view=source").await;
    assert!(
        changed.has("The file has changed since version 1"),
        "{}",
        changed.body
    );
    // Once synced, the change is version 2; version 1 stays stored, source and all.
    harness.state.scheduler().sync_dags().await.unwrap();
    let versions = browser.get("/dags/demo?view=source").await;
    for expected in [
        "Source of version 2",
        "description = &quot;A changed demo",
        r#"href="/dags/demo?view=source&amp;version=1""#,
        r#"href="/dags/demo?view=source&amp;version=2""#,
        "2</a> (active)",
    ] {
        assert!(
            versions.has(expected),
            "missing {expected:?} in\n{}",
            versions.body
        );
    }
    assert!(!versions.has("The file has changed"), "{}", versions.body);
    let first = browser.get("/dags/demo?view=source&version=1").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.has("Source of version 1"), "{}", first.body);
    assert!(
        first.has("description = &quot;A demo with every param type"),
        "{}",
        first.body
    );
    assert!(
        !first.has("description = &quot;A changed demo"),
        "{}",
        first.body
    );
    let unknown = browser.get("/dags/demo?view=source&version=9").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(
        unknown.has("DAG `demo` has no version 9"),
        "{}",
        unknown.body
    );

    assert_eq!(
        browser.get("/dags/nope").await.status,
        StatusCode::NOT_FOUND
    );
    let bad_view = browser.get("/dags/demo?view=nope").await;
    assert_eq!(bad_view.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_run_page_polls_until_the_run_is_final() {
    let harness = harness(ConsoleConfig::default()).await;
    let run_id = trigger_plain(&harness).await;
    register(&harness, "w1").await;
    let claimed = claim(&harness, "w1").await;
    assert_eq!(claimed.len(), 1);
    let mut browser = Browser::new(&harness);
    let page = browser.get(&format!("/runs/{run_id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    for expected in [
        &format!(r#"hx-get="/runs/{run_id}/live""#),
        r#"hx-trigger="every 2s""#,
        r#"class="gantt""#,
        r#"<span class="state st-running">running</span>"#,
        &format!(r#"action="/runs/{run_id}/cancel""#),
        &format!(r#"action="/runs/{run_id}/task-action""#),
        "w1",
    ] {
        assert!(page.has(expected), "missing {expected:?} in\n{}", page.body);
    }
    let fragment = browser.htmx_get(&format!("/runs/{run_id}/live")).await;
    assert_eq!(fragment.status, StatusCode::OK);
    assert!(
        fragment.body.starts_with(r#"<div id="run-live""#),
        "{}",
        fragment.body
    );
    assert!(!fragment.has("<html"), "a fragment, not a page");

    let csrf = page.csrf();
    let cancelled = browser
        .post(&format!("/runs/{run_id}/cancel"), Some(&csrf), &[])
        .await;
    assert_eq!(
        (cancelled.status, cancelled.location()),
        (StatusCode::SEE_OTHER, format!("/runs/{run_id}").as_str())
    );
    let fragment = browser.htmx_get(&format!("/runs/{run_id}/live")).await;
    assert!(fragment.has("st-cancelled"), "{}", fragment.body);
    assert!(
        !fragment.has("hx-trigger"),
        "a final run stops polling: {}",
        fragment.body
    );
    assert_eq!(browser.get("/runs/999").await.status, StatusCode::NOT_FOUND);
    assert_eq!(browser.get("/runs/abc").await.status, StatusCode::NOT_FOUND);
    let missing = browser.post("/runs/999/cancel", Some(&csrf), &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tasks_are_cleared_and_marked_from_the_console() {
    let harness = harness(ConsoleConfig::default()).await;
    let run_id = harness
        .state
        .scheduler()
        .trigger(
            "demo",
            &serde_json::Map::new(),
            kiln_engine::store::TriggerKind::Manual,
        )
        .await
        .unwrap()
        .id;
    let mut browser = Browser::new(&harness);
    let csrf = browser.get(&format!("/runs/{run_id}")).await.csrf();
    let action = format!("/runs/{run_id}/task-action");

    let refused = browser
        .post(
            &action,
            None,
            &[("task_id", "first"), ("action", "mark_success")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let marked = browser
        .post(
            &action,
            Some(&csrf),
            &[("task_id", "first"), ("action", "mark_success")],
        )
        .await;
    assert_eq!(marked.status, StatusCode::SEE_OTHER, "{}", marked.body);
    assert_eq!(
        task_states(&harness, run_id).await,
        owned(&[
            ("first", "success"),
            ("second", "queued"),
            ("third", "queued"),
            ("join", "scheduled"),
        ])
    );
    let failed = browser
        .post(
            &action,
            Some(&csrf),
            &[("task_id", "second"), ("action", "mark_failed")],
        )
        .await;
    assert_eq!(failed.status, StatusCode::SEE_OTHER);
    assert_eq!(
        task_states(&harness, run_id).await[1],
        ("second".to_owned(), "failed".to_owned())
    );
    let cleared = browser
        .post(
            &action,
            Some(&csrf),
            &[
                ("task_id", "first"),
                ("action", "clear"),
                ("downstream", "true"),
                ("return_to", &format!("/runs/{run_id}/tasks/first")),
            ],
        )
        .await;
    assert_eq!(
        (cleared.status, cleared.location()),
        (
            StatusCode::SEE_OTHER,
            format!("/runs/{run_id}/tasks/first").as_str()
        )
    );
    assert_eq!(
        task_states(&harness, run_id).await,
        owned(&[
            ("first", "queued"),
            ("second", "scheduled"),
            ("third", "scheduled"),
            ("join", "scheduled"),
        ])
    );
    let unknown = browser
        .post(
            &action,
            Some(&csrf),
            &[("task_id", "nope"), ("action", "mark_failed")],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    let bad = browser
        .post(
            &action,
            Some(&csrf),
            &[("task_id", "first"), ("action", "explode")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn lost_attempts_are_shown_apart_from_the_tasks_own_tries() {
    let harness = harness(ConsoleConfig::default()).await;
    let run_id = trigger_plain(&harness).await;
    register(&harness, "doomed").await;
    assert_eq!(claim(&harness, "doomed").await.len(), 1);
    assert_eq!(harness.execution.worker_died("doomed").await.unwrap(), 1);
    register(&harness, "w2").await;
    assert_eq!(claim(&harness, "w2").await.len(), 1);
    succeed(&harness, run_id, "only").await;

    let mut browser = Browser::new(&harness);
    let run = browser.get(&format!("/runs/{run_id}")).await;
    assert!(
        run.has("<td>1 / 1, 1 lost</td>"),
        "the task's one try, and the loss beside it:\n{}",
        run.body
    );
    let task = browser.get(&format!("/runs/{run_id}/tasks/only")).await;
    for expected in [
        " try 1 of 1, 1 lost to the infrastructure",
        r#"<span class="state st-lost">lost</span>"#,
        "worker `doomed` died while running the attempt",
        r#"?try=2">2</a>"#,
    ] {
        assert!(task.has(expected), "missing {expected:?} in\n{}", task.body);
    }
}

#[tokio::test]
async fn the_task_page_streams_its_log() {
    let harness = harness(ConsoleConfig::default()).await;
    let run_id = trigger_plain(&harness).await;
    let mut browser = Browser::new(&harness);
    let waiting = browser.get(&format!("/runs/{run_id}/tasks/only")).await;
    assert_eq!(waiting.status, StatusCode::OK);
    assert!(waiting.has("No attempt yet."), "{}", waiting.body);
    assert!(
        waiting.has(r#"id="log-tail""#),
        "a queued task's log is awaited"
    );

    register(&harness, "w1").await;
    let claimed = claim(&harness, "w1").await;
    let (_, task_instance_id, _) = claimed[0].clone();
    let chunk = |seq: i64, text: &str| LogUpload {
        task_instance_id,
        try_number: 1,
        seq,
        chunk: text.to_owned(),
    };
    let store = harness.state.scheduler().store().clone();
    store
        .log_append(
            &[chunk(0, "hello <b>\n"), chunk(1, "second line\n")],
            now_micros(),
        )
        .await
        .unwrap();
    let page = browser.get(&format!("/runs/{run_id}/tasks/only")).await;
    for expected in [
        "hello &lt;b&gt;\nsecond line\n",
        &format!(r#"hx-get="/runs/{run_id}/tasks/only/log?try=1&amp;after=1""#),
        r#"<span class="state st-running">running</span>"#,
        "w1",
        r#"?try=1">1</a>"#,
        "Params",
    ] {
        assert!(page.has(expected), "missing {expected:?} in\n{}", page.body);
    }

    let tail_url = format!("/runs/{run_id}/tasks/only/log?try=1&after=1");
    let nothing_new = browser.htmx_get(&tail_url).await;
    assert_eq!(nothing_new.status, StatusCode::OK);
    assert!(
        nothing_new.body.starts_with("<span id=\"log-tail\""),
        "{}",
        nothing_new.body
    );
    store
        .log_append(&[chunk(2, "third line\n")], now_micros())
        .await
        .unwrap();
    let more = browser.htmx_get(&tail_url).await;
    assert!(more.body.starts_with("third line\n"), "{}", more.body);
    assert!(more.has("after=2"), "{}", more.body);
    assert!(more.has(r#"hx-swap-oob="true""#));

    succeed(&harness, run_id, "only").await;
    let done = browser
        .htmx_get(&format!("/runs/{run_id}/tasks/only/log?try=1&after=2"))
        .await;
    assert!(
        !done.has("log-tail"),
        "a finished log stops polling: {}",
        done.body
    );
    assert!(done.has("st-success"), "{}", done.body);

    assert_eq!(
        browser
            .get(&format!("/runs/{run_id}/tasks/only?try=5"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        browser
            .get(&format!("/runs/{run_id}/tasks/nope"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_workers_page_shows_workers_and_their_tasks() {
    let harness = harness(ConsoleConfig::default()).await;
    let mut browser = Browser::new(&harness);
    let none = browser.get("/workers").await;
    assert_eq!(none.status, StatusCode::OK);
    assert!(none.has("No worker has registered"), "{}", none.body);
    let run_id = trigger_plain(&harness).await;
    register(&harness, "w1").await;
    claim(&harness, "w1").await;
    let page = browser.get("/workers").await;
    for expected in [
        "w1",
        "test-host (pid 42)",
        "1 / 4",
        &format!(r#"href="/runs/{run_id}/tasks/only""#),
        r#"hx-get="/workers/live""#,
    ] {
        assert!(page.has(expected), "missing {expected:?} in\n{}", page.body);
    }
    let fragment = browser.htmx_get("/workers/live").await;
    assert!(fragment.body.starts_with(r#"<div id="workers-live""#));
}

const ADMIN: &str = "admin-password";
const READER: &str = "reader-password";

fn guarded() -> ConsoleConfig {
    ConsoleConfig::new(Some(ADMIN.to_owned()), Some(READER.to_owned()))
}

async fn log_in(browser: &mut Browser<'_>, password: &str) -> Page {
    let form = browser.get("/login?next=/dags/demo").await;
    assert_eq!(form.status, StatusCode::OK);
    let csrf = form.csrf();
    browser
        .post(
            "/login",
            Some(&csrf),
            &[("password", password), ("next", "/dags/demo")],
        )
        .await
}

#[tokio::test]
async fn a_password_requires_a_login() {
    let harness = harness(guarded()).await;
    let mut browser = Browser::new(&harness);
    let page = browser.get("/dags").await;
    assert_eq!(
        (page.status, page.location()),
        (StatusCode::SEE_OTHER, "/login?next=%2Fdags")
    );
    let poll = browser.htmx_get("/runs/1/live").await;
    assert_eq!(poll.status, StatusCode::UNAUTHORIZED);
    assert!(
        poll.headers["hx-redirect"]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
    assert_eq!(
        browser.post("/dags/demo/pause", None, &[]).await.status,
        StatusCode::FORBIDDEN
    );

    let form = browser.get("/login").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.has(r#"type="password""#));
    let cookie = form.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let id = cookie.split(';').next().unwrap().split('=').nth(1).unwrap();
    assert_eq!(id.len(), 64, "32 random bytes, hex");
    let csrf = form.csrf();
    assert_eq!(
        browser
            .post("/login", None, &[("password", ADMIN)])
            .await
            .status,
        StatusCode::FORBIDDEN,
        "the login form is CSRF-checked too"
    );
    let wrong = browser
        .post("/login", Some(&csrf), &[("password", "guess")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.has("Wrong password."));
    assert_eq!(browser.get("/dags").await.status, StatusCode::SEE_OTHER);

    let anonymous_cookie = browser.cookie.clone();
    let right = log_in(&mut browser, ADMIN).await;
    assert_eq!(
        (right.status, right.location()),
        (StatusCode::SEE_OTHER, "/dags/demo")
    );
    assert_ne!(
        browser.cookie, anonymous_cookie,
        "a login gets a fresh session id"
    );
    let page = browser.get("/dags/demo").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.has("Log out") && page.has(r#"action="/dags/demo/trigger""#));
    let csrf = page.csrf();
    let paused = browser
        .post("/dags/demo/pause", Some(&csrf), &[("paused", "true")])
        .await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER);

    let out = browser.post("/logout", Some(&csrf), &[]).await;
    assert_eq!(
        (out.status, out.location()),
        (StatusCode::SEE_OTHER, "/login")
    );
    assert_eq!(browser.get("/dags").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_flood_of_anonymous_login_pages_does_not_log_anyone_out() {
    use tower::ServiceExt;
    let harness = harness(guarded()).await;
    let mut admin = Browser::new(&harness);
    let logged_in = log_in(&mut admin, ADMIN).await;
    assert_eq!(logged_in.status, StatusCode::SEE_OTHER);
    // More than the session table holds (10,000), each from a client without cookies.
    let app = kiln_web::app(harness.state.clone());
    for _ in 0..10_050 {
        let request = axum::http::Request::get("/login")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let page = admin.get("/dags/demo").await;
    assert_eq!(page.status, StatusCode::OK, "the admin was logged out");
    assert!(page.has("Log out"));
}

/// Posts the login form `browser` loaded with `password`.
async fn try_password(browser: &mut Browser<'_>, password: &str) -> Page {
    let form = browser.get("/login").await;
    let csrf = form.csrf();
    browser
        .post("/login", Some(&csrf), &[("password", password)])
        .await
}

fn retry_after(page: &Page) -> u64 {
    page.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Tries `password` until the throttle lets it be checked; answers that answer.
async fn try_when_allowed(browser: &mut Browser<'_>, password: &str) -> Page {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = try_password(browser, password).await;
        if page.status != StatusCode::TOO_MANY_REQUESTS {
            return page;
        }
        assert!(std::time::Instant::now() < deadline, "still throttled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn wrong_passwords_are_throttled_then_the_right_one_is_accepted_after_the_wait() {
    let harness = harness(guarded()).await;
    let mut attacker = Browser::at(&harness, "192.0.2.10:40000");
    for _ in 0..5 {
        assert_eq!(
            try_password(&mut attacker, "guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let throttled = try_password(&mut attacker, "guess").await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&throttled), 1);
    throttled.assert_has(&["Too many wrong passwords; try again in 1 s."]);
    // While it waits, the right password is not even checked.
    let right_too_soon = try_password(&mut attacker, ADMIN).await;
    assert_eq!(right_too_soon.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(attacker.get("/dags").await.status, StatusCode::SEE_OTHER);

    let right = try_when_allowed(&mut attacker, ADMIN).await;
    assert_eq!(right.status, StatusCode::SEE_OTHER, "{}", right.body);
    assert_eq!(attacker.get("/dags").await.status, StatusCode::OK);
    // The success cleared the count: the next wrong password is checked, not throttled.
    let mut again = Browser::at(&harness, "192.0.2.10:40001");
    assert_eq!(
        try_password(&mut again, "guess").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_login_is_throttled_across_addresses_and_each_address_on_its_own() {
    let harness = harness(guarded()).await;
    // One wrong password from each of five addresses: the login itself now waits.
    for host in 1..=5 {
        let mut browser = Browser::at(&harness, &format!("192.0.2.{host}:5000"));
        assert_eq!(
            try_password(&mut browser, "guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let mut admin = Browser::at(&harness, "198.51.100.1:5000");
    let throttled = try_password(&mut admin, ADMIN).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&throttled), 1);
    // The wait is bounded: the admin gets in after it.
    assert_eq!(
        try_when_allowed(&mut admin, ADMIN).await.status,
        StatusCode::SEE_OTHER
    );

    // An address keeps its own count when a login elsewhere clears the login's.
    let mut guesser = Browser::at(&harness, "203.0.113.9:5000");
    for _ in 0..5 {
        assert_eq!(
            try_when_allowed(&mut guesser, "guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let mut reader = Browser::at(&harness, "198.51.100.2:5000");
    assert_eq!(
        try_when_allowed(&mut reader, READER).await.status,
        StatusCode::SEE_OTHER
    );
    // The guesser's wait ended with the login's, but its count stands: one more wrong password
    // and it waits 2 s, while others, the login's count being 1, are still checked.
    assert_eq!(
        try_password(&mut guesser, "guess").await.status,
        StatusCode::UNAUTHORIZED
    );
    let guessed = try_password(&mut guesser, "guess").await;
    assert_eq!(guessed.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&guessed), 2);
    let mut other = Browser::at(&harness, "198.51.100.3:5000");
    assert_eq!(
        try_password(&mut other, "guess").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_read_only_password_sees_everything_and_changes_nothing() {
    let harness = harness(guarded()).await;
    let run_id = trigger_plain(&harness).await;
    let mut browser = Browser::new(&harness);
    let logged_in = log_in(&mut browser, READER).await;
    assert_eq!(logged_in.status, StatusCode::SEE_OTHER);
    let page = browser.get("/dags").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.has("read-only") && page.has(r#"href="/dags/demo""#));
    assert!(
        !page.has(r#"action="/dags/demo/trigger""#),
        "no actions shown"
    );
    for uri in [
        format!("/runs/{run_id}"),
        format!("/runs/{run_id}/tasks/only"),
        "/dags/demo?view=grid".to_owned(),
        "/workers".to_owned(),
    ] {
        assert_eq!(browser.get(&uri).await.status, StatusCode::OK, "{uri}");
    }
    let csrf = page.csrf();
    for (uri, fields) in [
        ("/dags/plain/trigger".to_owned(), vec![]),
        ("/dags/demo/pause".to_owned(), vec![("paused", "true")]),
        (format!("/runs/{run_id}/cancel"), vec![]),
        (
            format!("/runs/{run_id}/task-action"),
            vec![("task_id", "only"), ("action", "mark_success")],
        ),
    ] {
        let refused = browser.post(&uri, Some(&csrf), &fields).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{uri}");
    }
    let store = harness.state.scheduler().store();
    assert!(!store.dag_get("demo").await.unwrap().unwrap().paused);
    assert_eq!(
        store.run_list(&RunFilter::default()).await.unwrap().len(),
        1
    );
    let out = browser.post("/logout", Some(&csrf), &[]).await;
    assert_eq!(
        out.status,
        StatusCode::SEE_OTHER,
        "a reader may still log out"
    );
}

#[tokio::test]
async fn assets_are_embedded_and_cached_for_long() {
    let harness = harness(guarded()).await;
    let mut browser = Browser::new(&harness);
    let htmx = browser.get("/static/htmx-2.0.11.min.js").await;
    assert_eq!(htmx.status, StatusCode::OK, "assets need no login");
    assert!(htmx.body.starts_with("var htmx="));
    assert!(
        htmx.headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
    assert!(
        htmx.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let css = browser.get("/static/console.css").await;
    assert!(css.has(".st-up_for_retry"), "{}", css.body);
    let js = browser.get("/static/console.js").await;
    assert!(js.has("time[datetime]"));
    assert_eq!(
        browser.get("/static/nope.js").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_disabled_console_leaves_only_the_apis() {
    let harness = harness(ConsoleConfig::disabled()).await;
    let mut browser = Browser::new(&harness);
    assert_eq!(browser.get("/dags").await.status, StatusCode::NOT_FOUND);
    assert_eq!(browser.get("/api/v1/dags").await.status, StatusCode::OK);
    let open = ConsoleConfig::default();
    assert!(open.check_listen("0.0.0.0:8080".parse().unwrap()).is_err());
    assert!(
        guarded()
            .check_listen("0.0.0.0:8080".parse().unwrap())
            .is_ok()
    );
}

/// A DAG of 100 tasks in ten layers, each task depending on two of the layer before.
fn wide_dag() -> String {
    let mut text = String::from("id = \"big\"\nmax_active_runs = 1000\n");
    for layer in 0..10 {
        for index in 0..10 {
            text.push_str(&format!(
                "[[tasks]]\nid = \"t{layer}_{index}\"\nkind = \"noop\"\n"
            ));
            if layer > 0 {
                text.push_str(&format!(
                    "depends_on = [\"t{}_{index}\", \"t{}_{}\"]\n",
                    layer - 1,
                    layer - 1,
                    (index + 3) % 10
                ));
            }
        }
    }
    text
}

#[tokio::test]
async fn every_page_renders_with_a_thousand_runs_of_a_hundred_tasks() {
    let harness = harness_with(ConsoleConfig::default(), &[("big.toml", &wide_dag())]).await;
    let scheduler = harness.state.scheduler();
    let mut last_run = 0;
    for _ in 0..1000 {
        last_run = scheduler
            .trigger(
                "big",
                &serde_json::Map::new(),
                kiln_engine::store::TriggerKind::Manual,
            )
            .await
            .unwrap()
            .id;
    }
    let mut browser = Browser::new(&harness);
    for uri in [
        "/dags".to_owned(),
        "/dags/big".to_owned(),
        "/dags/big?view=grid".to_owned(),
        "/dags/big?view=source".to_owned(),
        format!("/runs/{last_run}"),
        format!("/runs/{last_run}/live"),
        format!("/runs/{last_run}/tasks/t9_9"),
        "/workers".to_owned(),
    ] {
        // How fast is for `kiln bench`, not for a test: here every page must simply render.
        let page = browser.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
    }
    let grid = browser.get("/dags/big?view=grid").await;
    assert_eq!(
        grid.body
            .matches(r#"<th><a class="sq st-running" href="/runs/"#)
            .count(),
        25,
        "the grid shows the last 25 runs"
    );
}
