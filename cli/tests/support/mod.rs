//! Real kiln processes for end-to-end tests: a server and workers as child processes, each test
//! in its own temporary data directory and DAG folder.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_web::client::ApiClient;
use kiln_web::wire::RunDetail;

pub const TOKEN: &str = "test-worker-token";

/// A DAG of `len` `command` tasks in one chain, each depending on the one before.
pub fn command_chain(id: &str, len: usize) -> String {
    let mut text = format!("id = \"{id}\"\n");
    for index in 0..len {
        text.push_str(&format!(
            "[[tasks]]\nid = \"t{index}\"\nkind = \"command\"\nparams = {{ program = \"true\" }}\n"
        ));
        if index > 0 {
            text.push_str(&format!("depends_on = [\"t{}\"]\n", index - 1));
        }
    }
    text
}

pub fn kiln() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

/// A child process whose output is collected, and which is killed when dropped.
pub struct Process {
    pub child: Child,
    pub output: Arc<Mutex<String>>,
}

impl Process {
    pub fn spawn(mut command: Command) -> Process {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        if !command.get_envs().any(|(key, _)| key == "KILN_LOG") {
            command.env("KILN_LOG", "info,sqlx=warn");
        }
        let mut child = command.spawn().expect("kiln starts");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|out| Box::new(out) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|err| Box::new(err) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut output = output.lock().unwrap();
                    output.push_str(&line);
                    output.push('\n');
                }
            });
        }
        Process { child, output }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output holds `needle`, or fails after `limit` saying `what` did not
    /// happen, with the output.
    pub fn wait_for_output(&self, needle: &str, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        while !self.output().contains(needle) {
            assert!(Instant::now() < deadline, "{what}:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal (SIGKILL, SIGTERM).
    pub fn signal(&self, signal: i32) {
        // SAFETY: signals our own child.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's folders and its server.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub server: Option<Process>,
    pub workers: Vec<Process>,
    /// Extra global arguments for the server (before the subcommand).
    pub server_args: Vec<String>,
    /// Extra global arguments for workers started from now on.
    pub worker_args: Vec<String>,
    /// Extra environment for every process started from now on.
    pub env: Vec<(String, String)>,
}

/// A free loopback port (bound and released; the small race is acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Writes the DAG files and starts a server with a short lease.
    pub fn start(dags: &[(&str, &str)], lease: &str) -> Cluster {
        let mut cluster = Cluster::prepare(dags);
        cluster.start_server(lease);
        cluster
    }

    /// Writes the DAG files; the caller sets arguments and starts the server.
    pub fn prepare(dags: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dags")).unwrap();
        for (name, text) in dags {
            std::fs::write(dir.path().join("dags").join(name), text).unwrap();
        }
        Cluster {
            dir,
            port: free_port(),
            server: None,
            workers: Vec::new(),
            server_args: Vec::new(),
            worker_args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn database_url(&self) -> String {
        format!("sqlite://{}", self.path().join("data/kiln.db").display())
    }

    pub fn start_server(&mut self, lease: &str) {
        let mut command = Command::new(kiln());
        command
            .current_dir(self.path())
            .args(&self.server_args)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .args(["--data-dir", "data", "--dags", "dags", "server", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--lease", lease])
            .env("KILN_WORKER_TOKEN", TOKEN)
            .env_remove("KILN_API_TOKEN")
            .env_remove("KILN_DATABASE_URL");
        let server = Process::spawn(command);
        server.wait_for_output(
            "kiln server listening",
            Duration::from_secs(30),
            "the server did not start",
        );
        self.server = Some(server);
    }

    pub fn start_worker(&mut self, id: &str, concurrency: usize) -> usize {
        let mut command = Command::new(kiln());
        command
            .current_dir(self.path())
            .args(&self.worker_args)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .args([
                "--server",
                &self.url(),
                "worker",
                "--id",
                id,
                "--concurrency",
                &concurrency.to_string(),
                "--grace",
                "2s",
            ])
            .arg("--work-dir")
            .arg(self.path().join("work").join(id))
            .env("KILN_WORKER_TOKEN", TOKEN);
        self.workers.push(Process::spawn(command));
        self.workers.len() - 1
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::new(&self.url(), None)
    }

    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    pub fn trigger(&self, dag_id: &str) -> i64 {
        Cluster::runtime()
            .block_on(self.client().trigger(dag_id, serde_json::Map::new()))
            .unwrap()
            .id
    }

    pub fn run(&self, run_id: i64) -> RunDetail {
        Cluster::runtime()
            .block_on(self.client().run(run_id))
            .unwrap()
    }

    /// Polls the run until `done` says so, or fails the test after `limit`.
    pub fn wait_for(
        &self,
        run_id: i64,
        limit: Duration,
        done: impl Fn(&RunDetail) -> bool,
    ) -> RunDetail {
        let runtime = Cluster::runtime();
        let client = self.client();
        let started = Instant::now();
        loop {
            if let Ok(detail) = runtime.block_on(client.run(run_id))
                && done(&detail)
            {
                return detail;
            }
            if started.elapsed() > limit {
                let detail = runtime.block_on(client.run(run_id));
                panic!(
                    "run {run_id} did not get there in {limit:?}: {detail:?}\nserver:\n{}\nworkers:\n{}",
                    self.server
                        .as_ref()
                        .map(Process::output)
                        .unwrap_or_default(),
                    self.workers
                        .iter()
                        .map(Process::output)
                        .collect::<Vec<_>>()
                        .join("\n---\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_finished(&self, run_id: i64, limit: Duration) -> RunDetail {
        self.wait_for(run_id, limit, |detail| detail.run.state.is_final())
    }

    /// Attempts per task instance, straight from the database: (task id, attempt states).
    pub fn attempts(&self, run_id: i64) -> Vec<(String, Vec<String>)> {
        let url = self.database_url();
        Cluster::runtime().block_on(async move {
            let store = kiln_engine::store::connect(&url).await.unwrap();
            let mut result = Vec::new();
            for instance in store.task_instance_list(run_id).await.unwrap() {
                let attempts = store.attempt_list(instance.id).await.unwrap();
                result.push((
                    instance.task_id.clone(),
                    attempts.into_iter().map(|attempt| attempt.state).collect(),
                ));
            }
            result
        })
    }
}

pub fn dags_path(path: &Path) -> PathBuf {
    path.join("dags")
}

/// Says SKIPPED where the test runner does not capture it, or fails when services are required
/// (`KILN_REQUIRE_SERVICES=1`, as in CI).
pub fn skip(test: &str, service: &str, variable: &str) {
    if std::env::var("KILN_REQUIRE_SERVICES").is_ok_and(|value| value == "1") {
        panic!("{test}: {service} is required (KILN_REQUIRE_SERVICES=1) but {variable} is not set");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!`.
    let mut stderr = std::io::stderr().lock();
    let _ = std::io::Write::write_fmt(
        &mut stderr,
        format_args!("SKIPPED {test}: no {service} ({variable} is not set)\n"),
    );
}

/// The repository's root (the shipped `dags/` and `data/` live there).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Copies the files (not the folders) of `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
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

/// GETs JSON; fails the test on an error status.
pub fn get_json(url: &str) -> serde_json::Value {
    Cluster::runtime().block_on(async {
        let response = http().get(url).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        response.json().await.unwrap()
    })
}

/// GETs text (a console page); answers the status too.
pub fn get_text(url: &str) -> (u16, String) {
    Cluster::runtime().block_on(async {
        let response = http().get(url).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    })
}

/// POSTs JSON; answers the status and the JSON body (null when there is none).
pub fn post_json(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    Cluster::runtime().block_on(async {
        let response = http().post(url).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    })
}

/// Triggers a DAG through the REST API at `base` and waits for the run to succeed; answers the
/// run's detail (JSON). `process` is the standalone whose output a failure shows.
pub fn run_to_success(base: &str, dag_id: &str, process: &Process) -> serde_json::Value {
    let (status, run) = post_json(
        &format!("{base}/api/v1/dags/{dag_id}/runs"),
        serde_json::json!({}),
    );
    assert!(status < 300, "trigger: {status} {run}");
    let run_id = run["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let detail = get_json(&format!("{base}/api/v1/runs/{run_id}"));
        let state: kiln_engine::state::RunState =
            serde_json::from_value(detail["run"]["state"].clone()).unwrap();
        if state.is_final() {
            assert_eq!(
                state,
                kiln_engine::state::RunState::Success,
                "{detail:#}\n{}",
                process.output()
            );
            return detail;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish: {detail:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts `kiln standalone` in `dir` (which holds `dags/`) on `listen` with these extra
/// arguments, and waits for a worker to register.
pub fn start_standalone(dir: &Path, listen: &str, extra: &[&str]) -> Process {
    let mut command = Command::new(kiln());
    command
        .current_dir(dir)
        .args(["standalone", "--listen", listen, "--workers", "2"])
        .args(extra)
        .env_remove("KILN_API_TOKEN")
        .env_remove("MLFLOW_TRACKING_URI");
    let standalone = Process::spawn(command);
    standalone.wait_for_output(
        "Worker registered",
        Duration::from_secs(60),
        "standalone did not start",
    );
    standalone
}
