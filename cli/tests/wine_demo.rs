//! The wine-quality demo end to end, as a user runs it: `kiln standalone` on the shipped DAG and
//! data, one run that ingests, processes, trains two models, evaluates and deploys the better;
//! then a served prediction, the deployed model's lineage back to the raw CSV, and a second run
//! that reuses every cached step.

mod support;

use std::time::Instant;

use support::{
    copy_dir, free_port, get_json as get, post_json as post, repo, run_to_success, start_standalone,
};

#[test]
fn the_wine_demo_deploys_a_model_that_answers_and_traces_back_to_the_csv() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    // Unscheduled, so the test's triggers are the only runs: the first one computes everything
    // and the second reuses it (the shipped schedule would add a run of its own at start).
    let demo = std::fs::read_to_string(repo().join("dags/wine_quality.toml")).unwrap();
    assert!(demo.contains("\nschedule = \"@daily\"\n"));
    std::fs::write(
        dir.path().join("dags/wine_quality.toml"),
        demo.replace("\nschedule = \"@daily\"\n", "\n"),
    )
    .unwrap();
    copy_dir(&repo().join("data"), &dir.path().join("data"));
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let standalone = start_standalone(dir.path(), &listen, &[]);

    let started = Instant::now();
    let first = run_to_success(&base, "wine_quality", &standalone);
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
    let second = run_to_success(&base, "wine_quality", &standalone);
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
    let metrics = get(&format!(
        "{base}/api/v1/artifacts/wine_quality.evaluate.metrics/versions/latest/content"
    ));
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
