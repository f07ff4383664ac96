//! The wine-quality demo end to end, as a user runs it: `kiln standalone` on the shipped DAG and
//! data, one run that ingests, processes, trains two models, evaluates and deploys the better;
//! then a served prediction, the deployed model's lineage back to the raw CSV, and a second run
//! that reuses every cached step.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_engine::state::RunState;
use support::{Process, free_port, kiln};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn get(url: &str) -> serde_json::Value {
    support::Cluster::runtime().block_on(async {
        let response = http().get(url).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        response.json().await.unwrap()
    })
}

fn post(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    support::Cluster::runtime().block_on(async {
        let response = http().post(url).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    })
}

/// Triggers the demo and waits for it to end; answers the run's detail.
fn run_demo(base: &str, standalone: &Process) -> serde_json::Value {
    let (status, run) = post(
        &format!("{base}/api/v1/dags/wine_quality/runs"),
        serde_json::json!({}),
    );
    assert!(status < 300, "trigger: {status} {run}");
    let run_id = run["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let detail = get(&format!("{base}/api/v1/runs/{run_id}"));
        let state: RunState = serde_json::from_value(detail["run"]["state"].clone()).unwrap();
        if state.is_final() {
            assert_eq!(
                state,
                RunState::Success,
                "{detail:#}\n{}",
                standalone.output()
            );
            return detail;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not finish: {detail:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_wine_demo_deploys_a_model_that_answers_and_traces_back_to_the_csv() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    std::fs::copy(
        repo().join("dags/wine_quality.toml"),
        dir.path().join("dags/wine_quality.toml"),
    )
    .unwrap();
    copy_dir(&repo().join("data"), &dir.path().join("data"));
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let mut command = std::process::Command::new(kiln());
    command
        .current_dir(dir.path())
        .args(["standalone", "--listen", &listen, "--workers", "2"])
        .env_remove("KILN_API_TOKEN");
    let standalone = Process::spawn(command);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !standalone.output().contains("Worker registered") {
        assert!(
            Instant::now() < deadline,
            "standalone did not start:\n{}",
            standalone.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let started = Instant::now();
    let first = run_demo(&base, &standalone);
    let first_seconds = started.elapsed().as_secs_f64();
    let tasks = first["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 6);

    let model = get(&format!("{base}/api/v1/models/wine_quality"));
    assert_eq!(model["version"], 1, "{model:#}");
    let accuracy = model["metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.7, "the gate lets only 70% through: {model:#}");
    let evaluation = get(&format!(
        "{base}/api/v1/artifacts/wine_quality.evaluate.metrics/versions/latest"
    ));
    assert_eq!(evaluation["name"], "wine_quality.evaluate.metrics");

    // The first row of the CSV (quality 5).
    let row = serde_json::json!({ "rows": [{
        "fixed acidity": 7.4, "volatile acidity": 0.7, "citric acid": 0.0, "residual sugar": 1.9,
        "chlorides": 0.076, "free sulfur dioxide": 11.0, "total sulfur dioxide": 34.0,
        "density": 0.9978, "pH": 3.51, "sulphates": 0.56, "alcohol": 9.4,
    }] });
    let (status, prediction) = post(&format!("{base}/api/v1/models/wine_quality/predict"), row);
    assert_eq!(status, 200, "{prediction:#}");
    assert_eq!(
        prediction["predictions"],
        serde_json::json!([0]),
        "a quality-5 wine is not good: {prediction:#}"
    );

    // Lineage: the deployed model, back to the raw CSV.
    let lineage = get(&format!(
        "{base}/api/v1/artifacts/wine_quality/versions/1/lineage?direction=upstream"
    ));
    let names: Vec<&str> = lineage["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|version| version["name"].as_str())
        .collect();
    for expected in [
        "wine_quality",
        "wine_quality.evaluate.best",
        "wine_quality.process.train",
        "wine_raw",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} is not in the lineage: {names:?}"
        );
    }

    // Unchanged data and params: every cacheable step is a cache hit.
    let started = Instant::now();
    let second = run_demo(&base, &standalone);
    let second_seconds = started.elapsed().as_secs_f64();
    for task in second["tasks"].as_array().unwrap() {
        let task_id = task["task_id"].as_str().unwrap();
        if task_id == "ingest" {
            continue;
        }
        let detail = get(&format!(
            "{base}/api/v1/runs/{}/tasks/{task_id}/logs",
            second["run"]["id"]
        ));
        let log: String = detail["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|chunk| chunk["text"].as_str())
            .collect();
        assert!(
            log.contains("cache hit"),
            "{task_id} was not a cache hit:\n{log}"
        );
    }
    let model = get(&format!("{base}/api/v1/models/wine_quality"));
    assert_eq!(model["version"], 1, "a cache hit deploys the same version");
    let metrics = support::Cluster::runtime().block_on(async {
        http()
            .get(format!(
                "{base}/api/v1/artifacts/wine_quality.evaluate.metrics/versions/latest/content"
            ))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    let candidate = |name: &str| {
        metrics["candidates"][name]["metrics"]["accuracy"]
            .as_f64()
            .unwrap()
    };
    let (logreg, tree) = (candidate("logreg"), candidate("tree"));
    assert_eq!(
        accuracy,
        logreg.max(tree),
        "the better candidate was deployed"
    );
    let mut stderr = std::io::stderr().lock();
    let _ = std::io::Write::write_fmt(
        &mut stderr,
        format_args!(
            "wine demo: first run {first_seconds:.2} s, cached run {second_seconds:.2} s; test accuracy: logistic regression {logreg:.4}, decision tree {tree:.4}\n"
        ),
    );
}
