//! The wine-quality demo mirrored to a real MLflow (`KILN_TEST_MLFLOW_URI`, started by
//! `.ci/run`), as a user runs it: `kiln standalone --mlflow-tracking-uri` while MLflow is
//! unreachable, so the run succeeds with everything waiting in the outbox (`kiln mlflow status`
//! says why); then MLflow comes back and everything arrives once: the experiment, the run and
//! its nested runs with their params and metrics (compared with kiln's metrics artifact), the
//! registered model version and its `production` alias. The console, the REST API and
//! `kiln runs show` link to what arrived.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    copy_dir, free_port, get_json, get_text, kiln, post_json, repo, run_to_success, skip,
    start_standalone,
};

/// Forwards every connection on `listener` to `upstream`, byte for byte, in both directions:
/// MLflow "coming back" on the address kiln was given.
fn forward(listener: TcpListener, upstream: String) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let mut buffer = [0_u8; 16 * 1024];
                    loop {
                        match from.read(&mut buffer) {
                            Ok(0) | Err(_) => break,
                            Ok(read) => {
                                if to.write_all(&buffer[..read]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

/// Waits until `kiln mlflow status` says everything reached MLflow.
fn drained(dir: &Path, standalone: &support::Process) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = kiln_in(dir, &["mlflow", "status"]);
        if status.contains("outbox is empty") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox did not drain:\n{status}\n{}",
            standalone.output()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `kiln ARGS` in `dir` (the standalone's data directory is the default one there).
fn kiln_in(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(kiln())
        .current_dir(dir)
        .args(args)
        .env_remove("KILN_DATABASE_URL")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "kiln {args:?}: {text}");
    text
}

fn mlflow_get(uri: &str, endpoint: &str, query: &[(&str, &str)]) -> serde_json::Value {
    let url = reqwest::Url::parse_with_params(&format!("{uri}/api/2.0/mlflow/{endpoint}"), query)
        .unwrap();
    get_json(url.as_str())
}

fn tag<'a>(run: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    pairs(&run["data"]["tags"], key)
}

fn param<'a>(run: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    pairs(&run["data"]["params"], key)
}

fn pairs<'a>(list: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    list.as_array()?
        .iter()
        .find(|pair| pair["key"] == key)
        .and_then(|pair| pair["value"].as_str())
}

fn metric(run: &serde_json::Value, key: &str) -> Option<f64> {
    run["data"]["metrics"]
        .as_array()?
        .iter()
        .find(|metric| metric["key"] == key)
        .and_then(|metric| metric["value"].as_f64())
}

#[test]
fn the_demo_reaches_mlflow_once_after_an_outage_and_everything_links_to_it() {
    let test = "the_demo_reaches_mlflow_once_after_an_outage_and_everything_links_to_it";
    let Some(mlflow) = std::env::var("KILN_TEST_MLFLOW_URI")
        .ok()
        .filter(|uri| !uri.is_empty())
        .map(|uri| uri.trim_end_matches('/').to_owned())
    else {
        skip(test, "MLflow", "KILN_TEST_MLFLOW_URI");
        return;
    };
    let upstream = reqwest::Url::parse(&mlflow).unwrap();
    let upstream = format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port_or_known_default().unwrap()
    );
    // A DAG and model name of this test's own: an MLflow kept between test runs already holds
    // earlier ones.
    let suffix = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let dag_id = format!("wine_mlflow_{suffix}");
    let model = format!("wine_model_{suffix}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    let demo = std::fs::read_to_string(repo().join("dags/wine_quality.toml")).unwrap();
    assert!(
        demo.contains("\nid = \"wine_quality\"\n")
            && demo.contains("publish_as = \"wine_quality\"")
            && demo.contains("\nschedule = \"@daily\"\n")
    );
    // Unscheduled: the test's triggers are the only runs.
    std::fs::write(
        dir.path().join("dags/wine_mlflow.toml"),
        demo.replace(
            "\nid = \"wine_quality\"\n",
            &format!("\nid = \"{dag_id}\"\n"),
        )
        .replace("\nschedule = \"@daily\"\n", "\n")
        .replace(
            "publish_as = \"wine_quality\"",
            &format!("publish_as = \"{model}\""),
        ),
    )
    .unwrap();
    copy_dir(&repo().join("data"), &dir.path().join("data"));

    // MLflow is down: nothing listens where kiln is told it is.
    let proxy_port = free_port();
    let tracking = format!("http://127.0.0.1:{proxy_port}");
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let standalone = start_standalone(dir.path(), &listen, &["--mlflow-tracking-uri", &tracking]);
    assert!(
        standalone
            .output()
            .contains(&format!("mirrored to {tracking}")),
        "{}",
        standalone.output()
    );
    let detail = run_to_success(&base, &dag_id, &standalone);
    let run_id = detail["run"]["id"].as_i64().unwrap();
    assert!(detail.get("mlflow").is_none(), "nothing reached MLflow yet");

    // The outbox holds it all, and says why.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = kiln_in(dir.path(), &["mlflow", "status"]);
        if status.contains("cannot reach MLflow") {
            break status;
        }
        assert!(Instant::now() < deadline, "no failed send shown:\n{status}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(status.contains("event(s) waiting"), "{status}");
    assert!(
        status.contains(&format!("{dag_id} run {run_id} started")),
        "{status}"
    );
    let (code, page) = get_text(&format!("{base}/mlflow"));
    assert_eq!(code, 200);
    assert!(page.contains("cannot reach MLflow"), "{page}");
    let (code, page) = get_text(&format!("{base}/runs/{run_id}"));
    assert_eq!(code, 200);
    assert!(page.contains("MLflow: not mirrored yet"), "{page}");

    // MLflow comes back on that address; the sender's backoff is at most a few seconds here.
    forward(
        TcpListener::bind(("127.0.0.1", proxy_port)).unwrap(),
        upstream,
    );
    drained(dir.path(), &standalone);

    // What MLflow holds, asked of MLflow itself.
    let experiment = mlflow_get(
        &mlflow,
        "experiments/get-by-name",
        &[("experiment_name", &dag_id)],
    )["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, found) = post_json(
        &format!("{mlflow}/api/2.0/mlflow/runs/search"),
        serde_json::json!({ "experiment_ids": [experiment], "max_results": 1000 }),
    );
    assert_eq!(status, 200, "{found}");
    let runs = found["runs"].as_array().unwrap();
    let parents: Vec<&serde_json::Value> = runs
        .iter()
        .filter(|run| tag(run, "mlflow.parentRunId").is_none())
        .collect();
    assert_eq!(parents.len(), 1, "one MLflow run per kiln run: {found:#}");
    let nested_count = runs.len() - 1;
    let parent = parents[0];
    let parent_id = parent["info"]["run_id"].as_str().unwrap();
    assert_eq!(parent["info"]["status"], "FINISHED");
    assert_eq!(
        tag(parent, "kiln.run_id"),
        Some(run_id.to_string().as_str())
    );
    let nested: Vec<&serde_json::Value> = runs
        .iter()
        .filter(|run| tag(run, "mlflow.parentRunId") == Some(parent_id))
        .collect();
    let mut tasks: Vec<&str> = nested
        .iter()
        .filter_map(|run| tag(run, "kiln.task_id"))
        .collect();
    tasks.sort_unstable();
    assert_eq!(
        tasks,
        ["deploy", "evaluate", "train_logreg", "train_tree"],
        "one nested run per tracked task, none twice"
    );
    let nested_run = |task: &str| {
        *nested
            .iter()
            .find(|run| tag(run, "kiln.task_id") == Some(task))
            .unwrap()
    };
    for run in &nested {
        assert_eq!(run["info"]["status"], "FINISHED", "{run:#}");
    }

    // Params: the resolved hyperparameters and the exact input versions.
    let logreg = nested_run("train_logreg");
    assert_eq!(param(logreg, "algorithm"), Some("logistic_regression"));
    assert_eq!(param(nested_run("train_tree"), "max_depth"), Some("8"));
    let train_name = format!("{dag_id}.process.train");
    assert_eq!(
        param(logreg, "input.train"),
        Some(format!("{train_name}@1").as_str())
    );
    let train_version = get_json(&format!("{base}/api/v1/artifacts/{train_name}/versions/1"));
    assert_eq!(
        param(logreg, "input.train.sha256"),
        train_version["sha256"].as_str(),
        "{train_version:#}"
    );

    // Metrics: the same figures as kiln's metrics artifact.
    let metrics = get_json(&format!(
        "{base}/api/v1/artifacts/{dag_id}.evaluate.metrics/versions/latest/content"
    ));
    let evaluate = nested_run("evaluate");
    let mut best: f64 = 0.0;
    for candidate in ["logreg", "tree"] {
        let accuracy = metrics["candidates"][candidate]["metrics"]["accuracy"]
            .as_f64()
            .unwrap();
        best = best.max(accuracy);
        assert_eq!(
            metric(evaluate, &format!("{candidate}.accuracy")),
            Some(accuracy),
            "{evaluate:#}"
        );
    }
    assert_eq!(
        metric(parent, "accuracy"),
        Some(best),
        "the best, on the run"
    );

    // The registry: one version, kiln's artifact as its source, `production` on it.
    let versions = mlflow_get(
        &mlflow,
        "model-versions/search",
        &[("filter", &format!("name = '{model}'"))],
    );
    let versions = versions["model_versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{versions:#?}");
    assert_eq!(versions[0]["source"], format!("kiln-artifact:///{model}@1"));
    let alias = mlflow_get(
        &mlflow,
        "registered-models/alias",
        &[("name", &model), ("alias", "production")],
    );
    assert_eq!(
        alias["model_version"]["version"], versions[0]["version"],
        "{alias:#}"
    );

    // Links: REST, CLI, console.
    let run_url = format!("{tracking}/#/experiments/{experiment}/runs/{parent_id}");
    let detail = get_json(&format!("{base}/api/v1/runs/{run_id}"));
    assert_eq!(detail["mlflow"]["url"], run_url, "{detail:#}");
    let evaluate_link = detail["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|task| task["task_id"] == "evaluate")
        .map(|task| task["mlflow"]["run_id"].clone());
    assert_eq!(evaluate_link, Some(evaluate["info"]["run_id"].clone()));
    let shown = kiln_in(
        dir.path(),
        &["--server", &base, "runs", "show", &run_id.to_string()],
    );
    assert!(shown.contains(&format!("MLflow: {run_url}")), "{shown}");
    let (_, page) = get_text(&format!("{base}/runs/{run_id}"));
    assert!(page.contains(&run_url), "{page}");
    let (_, page) = get_text(&format!("{base}/models/{model}"));
    let version_url = format!(
        "{tracking}/#/models/{model}/versions/{}",
        versions[0]["version"].as_str().unwrap()
    );
    assert!(page.contains(&version_url), "{page}");
    let (_, page) = get_text(&format!("{base}/mlflow"));
    assert!(page.contains("The outbox is empty"), "{page}");

    // A second run with unchanged data is all cache hits; its nested runs still carry the
    // figures of the attempts whose outputs they reused, and nothing is registered twice.
    let second = run_to_success(&base, &dag_id, &standalone);
    let second_id = second["run"]["id"].as_i64().unwrap().to_string();
    drained(dir.path(), &standalone);
    let (_, found) = post_json(
        &format!("{mlflow}/api/2.0/mlflow/runs/search"),
        serde_json::json!({ "experiment_ids": [experiment], "max_results": 1000 }),
    );
    let runs = found["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2 * (nested_count + 1), "{found:#}");
    let parent = runs
        .iter()
        .find(|run| {
            tag(run, "mlflow.parentRunId").is_none()
                && tag(run, "kiln.run_id") == Some(second_id.as_str())
        })
        .unwrap();
    let parent_id = parent["info"]["run_id"].as_str().unwrap();
    let evaluate = runs
        .iter()
        .find(|run| {
            tag(run, "mlflow.parentRunId") == Some(parent_id)
                && tag(run, "kiln.task_id") == Some("evaluate")
        })
        .unwrap();
    assert_eq!(
        metric(evaluate, "logreg.accuracy"),
        metric(nested_run("evaluate"), "logreg.accuracy")
    );
    assert_eq!(metric(parent, "accuracy"), Some(best));
    let versions = mlflow_get(
        &mlflow,
        "model-versions/search",
        &[("filter", &format!("name = '{model}'"))],
    );
    assert_eq!(versions["model_versions"].as_array().unwrap().len(), 1);
}
