//! The console in a real browser: `kiln standalone` serves it, and `browser/console.mjs` drives
//! Debian's Chromium through it (headless, with playwright-core), clicking as a person would and
//! saving a screenshot of each page under `target/screenshots/`. Besides two small DAGs of its
//! own it serves the ML demo (`dags/wine_quality.toml` on `data/winequality-red.csv`), whose
//! model the script then tries in the console.
//!
//! It needs `/usr/bin/chromium`, `node` and the script's node modules, which `.ci/run` installs
//! and names in `KILN_BROWSER_NODE_MODULES`. Without them the test says SKIPPED, or fails under
//! `KILN_REQUIRE_SERVICES=1`.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Cluster, Process, free_port, kiln};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Three `command` tasks that hand files to each other through the artifact store: `produce`
/// writes a table (published under a name of its own), `shout` upper-cases it, and `count`
/// reads that and writes a one-row summary. `produce` takes a moment, so the run is seen
/// moving.
const HANDOFF: &str = r#"
id = "handoff"
description = "Three tasks hand a table to each other"
tags = ["browser-test"]
[defaults]
retries = 0
[[tasks]]
id = "produce"
kind = "command"
params = { program = "sh", args = ["-c", "sleep 1 && printf 'fruit,count\napple,3\npear,5\n' > \"$KILN_OUTPUT_TABLE\" && echo produced"] }
outputs = { table = { kind = "dataset", publish_as = "handoff_table", media_type = "text/csv" } }
[[tasks]]
id = "shout"
kind = "command"
params = { program = "sh", args = ["-c", "tr a-z A-Z < \"$KILN_INPUT_TABLE\" > \"$KILN_OUTPUT_UPPER\" && cat \"$KILN_OUTPUT_UPPER\""] }
inputs = { table = { from = "produce.table" } }
outputs = { upper = { kind = "dataset", media_type = "text/csv" } }
[[tasks]]
id = "count"
kind = "command"
params = { program = "sh", args = ["-c", "rows=$(($(wc -l < \"$KILN_INPUT_UPPER\") - 1)) && printf 'rows\n%s\n' \"$rows\" > \"$KILN_OUTPUT_SUMMARY\" && echo \"counted $rows rows\""] }
inputs = { upper = { from = "shout.upper" } }
outputs = { summary = { kind = "dataset", media_type = "text/csv" } }
"#;

/// A DAG with typed params, triggered through the form the console builds from them.
const GREET: &str = r#"
id = "greet"
description = "Greets whoever the trigger form names"
tags = ["browser-test"]
[params.name]
type = "string"
default = "world"
description = "Who to greet"
[params.times]
type = "integer"
default = 1
[params.loud]
type = "boolean"
default = false
[defaults]
retries = 0
[[tasks]]
id = "greet"
kind = "command"
params = { program = "sh", args = ["-c", "sleep 2 && echo hello"] }
"#;

/// Says SKIPPED where the test runner does not capture it, or fails when services are required.
fn skip(test: &str, reason: &str) {
    if std::env::var("KILN_REQUIRE_SERVICES").is_ok_and(|value| value == "1") {
        panic!("{test}: the browser test is required (KILN_REQUIRE_SERVICES=1) but {reason}");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!`.
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "SKIPPED {test}: {reason}");
}

/// The installed node modules holding playwright-core, or why the test cannot run.
fn browser_prerequisites() -> Result<PathBuf, String> {
    if !Path::new(CHROMIUM).exists() {
        return Err(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    match Command::new("node").arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            return Err(format!(
                "`node --version` failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Err(error) => return Err(format!("node cannot be started: {error}")),
    }
    let modules = std::env::var_os("KILN_BROWSER_NODE_MODULES").ok_or_else(|| {
        "KILN_BROWSER_NODE_MODULES is not set (`npm ci` of cli/tests/browser, as .ci/run does)"
            .to_owned()
    })?;
    let modules = PathBuf::from(modules);
    if !modules.join("playwright-core/package.json").exists() {
        return Err(format!(
            "{} holds no playwright-core (KILN_BROWSER_NODE_MODULES)",
            modules.display()
        ));
    }
    Ok(modules)
}

/// `<workspace>/target/screenshots`, or `screenshots` in `CARGO_TARGET_DIR` when that is set.
fn screenshot_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the kiln crate sits in the workspace");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                workspace.join(dir)
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    target.join("screenshots")
}

/// `kiln standalone` in a temporary folder; stopped with Ctrl-C when dropped, so its workers
/// stop with it.
struct Standalone {
    _dir: tempfile::TempDir,
    url: String,
    process: Process,
}

impl Standalone {
    /// Writes `dags` into `dags/` and copies the `data` files into `data/` beside it, where DAGs
    /// find them as `$KILN_DAGS_DIR/../data/`; kiln keeps its own state in `kiln/`.
    fn start(dags: &[(&str, &str)], data: &[&Path]) -> Standalone {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let dags_dir = dir.path().join("dags");
        std::fs::create_dir(&dags_dir).expect("the DAG folder is created");
        for (name, text) in dags {
            std::fs::write(dags_dir.join(name), text).expect("a DAG file is written");
        }
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).expect("the data folder is created");
        for file in data {
            let name = file.file_name().expect("a data file has a name");
            std::fs::copy(file, data_dir.join(name))
                .unwrap_or_else(|error| panic!("cannot copy {}: {error}", file.display()));
        }
        let listen = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(kiln());
        command
            .current_dir(dir.path())
            // Absolute: with a relative data directory, `command` tasks get output paths that do
            // not resolve from their own working directory.
            .arg("--data-dir")
            .arg(dir.path().join("kiln"))
            .arg("--dags")
            .arg(&dags_dir)
            .arg("standalone")
            .args(["--listen", &listen, "--workers", "1"])
            // An open console on loopback: no login in the way.
            .env_remove("KILN_CONSOLE_PASSWORD")
            .env_remove("KILN_CONSOLE_READONLY_PASSWORD")
            .env_remove("KILN_API_TOKEN")
            .env_remove("KILN_DATABASE_URL")
            .env_remove("KILN_ARTIFACTS_CONFIG");
        let standalone = Standalone {
            _dir: dir,
            url: format!("http://{listen}"),
            process: Process::spawn(command),
        };
        standalone.wait_healthy(Duration::from_secs(30));
        standalone
    }

    /// Waits until `/healthz` answers `ok`.
    fn wait_healthy(&self, limit: Duration) {
        let health = format!("{}/healthz", self.url);
        let client = reqwest::Client::new();
        let runtime = Cluster::runtime();
        let deadline = Instant::now() + limit;
        loop {
            let answer = runtime.block_on(async {
                let response = client.get(&health).send().await.ok()?;
                response.text().await.ok()
            });
            if answer.as_deref() == Some("ok") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kiln standalone did not answer {health} within {limit:?}:\n{}",
                self.process.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.process.signal(libc::SIGINT);
        // If it does not stop in time, dropping the process kills it.
        let _ = self.process.wait_exit(Duration::from_secs(30));
    }
}

#[test]
fn the_console_works_in_a_real_browser() {
    let test = "the_console_works_in_a_real_browser";
    let modules = match browser_prerequisites() {
        Ok(modules) => modules,
        Err(reason) => return skip(test, &reason),
    };
    let screenshots = screenshot_dir();
    std::fs::create_dir_all(&screenshots).unwrap_or_else(|error| {
        panic!("cannot create {}: {error}", screenshots.display());
    });
    // The ML demo as shipped: its DAG file, and the CSV it ingests.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the kiln crate sits in the workspace");
    let wine = std::fs::read_to_string(repo.join("dags/wine_quality.toml"))
        .expect("dags/wine_quality.toml is readable");
    let standalone = Standalone::start(
        &[
            ("handoff.toml", HANDOFF),
            ("greet.toml", GREET),
            ("wine_quality.toml", &wine),
        ],
        &[&repo.join("data/winequality-red.csv")],
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.mjs");
    let started = Instant::now();
    let output = Command::new("node")
        .arg(&script)
        .arg(&standalone.url)
        .arg(&screenshots)
        .env("KILN_BROWSER_NODE_MODULES", &modules)
        .output()
        .unwrap_or_else(|error| panic!("node cannot run {}: {error}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}) after {:?}:\n{stdout}\n{stderr}\nkiln standalone:\n{}",
        script.display(),
        output.status,
        started.elapsed(),
        standalone.process.output()
    );
    // Shown with `--nocapture`: the steps, their timings and the screenshots.
    eprintln!("{stdout}{stderr}");
}
