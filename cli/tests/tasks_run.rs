//! `kiln tasks run` as a user runs it: the real binary runs `process`, then `train` and
//! `evaluate` on what `process` wrote, each printing one JSON line; bad input fails with a
//! message naming what is wrong and where.

use std::path::Path;
use std::process::Command;

/// Twelve wines, one repeated; quality 6 and above exactly when alcohol is above 10.5.
const WINES: &str = "\
alcohol,acidity,quality
9.0,1.0,5
9.5,1.5,5
10.0,2.0,4
10.2,1.2,5
9.0,1.0,5
11.0,3.0,6
11.5,2.5,7
12.0,2.2,6
12.5,3.1,8
13.0,2.8,7
9.8,1.9,5
11.8,2.6,6
";

/// Runs `kiln tasks run ARGS`; answers (success, stdout, stderr).
fn kiln_tasks_run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(dir)
        .args(["tasks", "run"])
        .args(args)
        .env_remove("KILN_LOG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Runs a task that must succeed; answers its JSON report.
fn report(dir: &Path, args: &[&str]) -> serde_json::Value {
    let (ok, stdout, stderr) = kiln_tasks_run(dir, args);
    assert!(ok, "kiln tasks run {args:?} failed:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line on stdout: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn process_then_train_then_evaluate_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wines.csv"), WINES).unwrap();
    let process = report(
        dir.path(),
        &[
            "process",
            "--params",
            r#"{"split": {"test_fraction": 0.25, "seed": 42}, "steps": [
                {"op": "dedupe"},
                {"op": "derive", "column": "good", "expr": "int(quality >= 6)"},
                {"op": "drop", "columns": ["quality"]},
                {"op": "standardize", "columns": ["alcohol", "acidity"]}]}"#,
            "--input",
            "raw=wines.csv",
            "--output",
            "train=out/train.parquet",
            "--output",
            "test=out/test.parquet",
            "--output",
            "scaler=out/scaler.json",
        ],
    );
    assert_eq!(process["kind"], "process");
    assert!(process["seconds"].as_f64().unwrap() > 0.0, "{process:#}");
    // Twelve rows, one duplicate: eleven; a quarter (3) goes to test.
    assert_eq!(process["summary"]["train"]["rows"], 8, "{process:#}");
    assert_eq!(process["summary"]["test"]["rows"], 3, "{process:#}");
    let train = &process["outputs"]["train"];
    assert_eq!(train["rows"], 8);
    assert_eq!(train["media_type"], "application/vnd.apache.parquet");
    assert_eq!(train["sha256"].as_str().unwrap().len(), 64);
    let on_disk = std::fs::metadata(dir.path().join("out/train.parquet")).unwrap();
    assert_eq!(train["bytes"], on_disk.len());
    assert!(dir.path().join("out/scaler.json").is_file());

    let trained = report(
        dir.path(),
        &[
            "train",
            "--params",
            r#"{"algorithm": {"name": "decision_tree", "max_depth": 3}, "target": "good", "seed": 42}"#,
            "--input",
            "train=out/train.parquet",
            "--input",
            "scaler=out/scaler.json",
            "--output",
            "model=out/model.json:model",
        ],
    );
    let summary = &trained["summary"];
    assert_eq!(summary["rows"], 8, "{trained:#}");
    assert_eq!(summary["features"], 2);
    assert_eq!(summary["algorithm"]["name"], "decision_tree");
    assert_eq!(summary["info"]["training_accuracy"], 1.0);
    assert_eq!(trained["outputs"]["model"]["kind"], "model");
    let model: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/model.json")).unwrap()).unwrap();
    // The model records the real digest of the file it was trained on.
    assert_eq!(model["training_data"]["sha256"], train["sha256"]);

    let evaluated = report(
        dir.path(),
        &[
            "evaluate",
            "--input",
            "test=out/test.parquet",
            "--input",
            "tree=out/model.json:model",
            "--output",
            "metrics=out/metrics.json",
        ],
    );
    assert_eq!(evaluated["summary"]["best"], "tree", "{evaluated:#}");
    assert_eq!(evaluated["summary"]["accuracy"], 1.0, "{evaluated:#}");
}

#[test]
fn bad_input_names_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wines.csv"), WINES).unwrap();
    let failure = |args: &[&str]| {
        let (ok, stdout, stderr) = kiln_tasks_run(dir.path(), args);
        assert!(!ok && stdout.is_empty(), "{args:?} succeeded: {stdout}");
        // The error is the last line; logs may come before it.
        stderr.trim().lines().last().unwrap_or_default().to_owned()
    };
    assert_eq!(
        failure(&[
            "train",
            "--params",
            r#"{"algorithm": {"name": "decision_tree", "max_depth": "deep"}, "target": "good"}"#,
            "--input",
            "train=wines.csv",
        ]),
        "error: invalid params for `train`: `algorithm`: invalid type: string \"deep\", expected usize"
    );
    assert_eq!(
        failure(&["trian", "--input", "train=wines.csv"]),
        "error: unknown task kind `trian` (the kinds: command, deploy, evaluate, noop, process, train)"
    );
    let missing = failure(&[
        "process",
        "--input",
        "raw=nowhere.csv",
        "--output",
        "data=out.parquet",
    ]);
    assert!(
        missing.starts_with("error: input `raw`: cannot read nowhere.csv: "),
        "{missing}"
    );
    assert_eq!(
        failure(&["process", "--input", "wines.csv"]),
        "error: --input `wines.csv` is not SLOT=PATH[:KIND[:MEDIA_TYPE]]: it has no `=`"
    );
    // What the plugin itself refuses comes back with its own words.
    assert_eq!(
        failure(&[
            "process",
            "--params",
            r#"{"steps": [{"op": "drop", "columns": ["colour"]}]}"#,
            "--input",
            "raw=wines.csv",
            "--output",
            "data=out.parquet",
        ]),
        "error: task `process` failed (permanent): step `drop`: no column `colour` (the columns: alcohol, acidity, quality)"
    );
}
