//! `kiln bench`: the workloads of `shared/bench/workloads.md` against real server and worker
//! processes over loopback, on SQLite and on PostgreSQL, with the in-process `noop` plugin and
//! with `command` running `true`. Prints a Markdown report and, unless `--quick`, appends it to
//! `BENCHMARKS.md`.
//!
//! Times come from the database: from just before the trigger call to the last task's recorded
//! end, so the client's polling does not blur them.
//!
//! The `console` workload instead renders every console page in process, on a SQLite store
//! filled with finished runs of a 100-task DAG, and reports each page's median and worst time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_engine::state::RunState;
use kiln_engine::store::{connect, now_micros};
use kiln_web::client::ApiClient;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct BenchOptions {
    pub(crate) quick: bool,
    pub(crate) postgres_url: Option<String>,
    pub(crate) output: Option<PathBuf>,
    pub(crate) repetitions: usize,
    /// Workloads to run (`W1` … `W5`, `idle`, `artifacts`, `console`); all when empty.
    pub(crate) only: Vec<String>,
    /// Plugins to run (`noop`, `command`); both when empty.
    pub(crate) plugins: Vec<String>,
}

impl BenchOptions {
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty()
            || self.only.iter().any(|wanted| {
                name.to_ascii_lowercase()
                    .starts_with(&wanted.to_ascii_lowercase())
            })
    }

    fn wants_plugin(&self, plugin: Plugin) -> bool {
        let name = match plugin {
            Plugin::Noop => "noop",
            Plugin::Command => "command",
        };
        self.plugins.is_empty() || self.plugins.iter().any(|wanted| wanted == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plugin {
    Noop,
    Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    FanOut,
    Chain,
    ManyRuns,
    Sleepers,
    BigDag,
}

impl Workload {
    const ALL: [Workload; 5] = [
        Workload::FanOut,
        Workload::Chain,
        Workload::ManyRuns,
        Workload::Sleepers,
        Workload::BigDag,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::FanOut => "W1 fan-out",
            Workload::Chain => "W2 chain",
            Workload::ManyRuns => "W3 many runs",
            Workload::Sleepers => "W4 sleepers",
            Workload::BigDag => "W5 big DAG",
        }
    }
}

/// The sizes of the workloads: the documented ones, or small ones for `--quick`.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    fan_out: usize,
    chain: usize,
    runs: usize,
    sleepers: usize,
    layers: usize,
    width: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                fan_out: 50,
                chain: 20,
                runs: 10,
                sleepers: 16,
                layers: 10,
                width: 10,
            }
        } else {
            Sizes {
                fan_out: 500,
                chain: 100,
                runs: 50,
                sleepers: 200,
                layers: 100,
                width: 100,
            }
        }
    }
}

fn task(id: &str, plugin: Plugin, sleep: bool, depends_on: &[String]) -> String {
    let body = match (plugin, sleep) {
        (Plugin::Noop, false) => "kind = \"noop\"\n".to_owned(),
        (Plugin::Noop, true) => "kind = \"noop\"\nparams = { sleep = \"100ms\" }\n".to_owned(),
        (Plugin::Command, false) => {
            "kind = \"command\"\nparams = { program = \"true\" }\n".to_owned()
        }
        (Plugin::Command, true) => {
            "kind = \"command\"\nparams = { program = \"sleep\", args = [\"0.1\"] }\n".to_owned()
        }
    };
    let mut text = format!("[[tasks]]\nid = \"{id}\"\n{body}");
    if !depends_on.is_empty() {
        let quoted: Vec<String> = depends_on.iter().map(|up| format!("\"{up}\"")).collect();
        let _ = writeln!(text, "depends_on = [{}]", quoted.join(", "));
    }
    text
}

/// The DAG file of a workload, and how many runs to trigger.
fn dag_file(workload: Workload, plugin: Plugin, sizes: Sizes) -> (String, usize) {
    let mut text = String::from("id = \"bench\"\nmax_active_runs = 1000\n");
    match workload {
        Workload::FanOut => {
            text.push_str(&task("root", plugin, false, &[]));
            let middle: Vec<String> = (0..sizes.fan_out)
                .map(|index| format!("m{index}"))
                .collect();
            for id in &middle {
                text.push_str(&task(id, plugin, false, &["root".to_owned()]));
            }
            text.push_str(&task("join", plugin, false, &middle));
            (text, 1)
        }
        Workload::Chain => {
            for index in 0..sizes.chain {
                let up = if index == 0 {
                    Vec::new()
                } else {
                    vec![format!("c{}", index - 1)]
                };
                text.push_str(&task(&format!("c{index}"), plugin, false, &up));
            }
            (text, 1)
        }
        Workload::ManyRuns => {
            for index in 0..5 {
                let up = if index == 0 {
                    Vec::new()
                } else {
                    vec![format!("c{}", index - 1)]
                };
                text.push_str(&task(&format!("c{index}"), plugin, false, &up));
            }
            (text, sizes.runs)
        }
        Workload::Sleepers => {
            for index in 0..sizes.sleepers {
                text.push_str(&task(&format!("s{index}"), plugin, true, &[]));
            }
            (text, 1)
        }
        Workload::BigDag => {
            for layer in 0..sizes.layers {
                for index in 0..sizes.width {
                    let up: Vec<String> = if layer == 0 {
                        Vec::new()
                    } else {
                        let mut ups: Vec<String> = (0..3)
                            .map(|k| format!("t{}_{}", layer - 1, (index + k * 7) % sizes.width))
                            .collect();
                        ups.sort();
                        ups.dedup();
                        ups
                    };
                    text.push_str(&task(&format!("t{layer}_{index}"), plugin, false, &up));
                }
            }
            (text, 1)
        }
    }
}

/// One measured repetition.
#[derive(Debug, Clone, Default)]
struct Measurement {
    wall: f64,
    tasks: usize,
    cpu_seconds: f64,
    server_peak_kb: u64,
    worker_peak_kb: u64,
    latencies_ms: Vec<f64>,
    first_start_ms: f64,
}

/// Server and worker processes for one repetition.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
    database_url: String,
    postgres: Option<(String, String)>,
    server: Child,
    workers: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_processes();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    async fn start(
        dags: &[(String, String)],
        backend: Backend,
        postgres_url: Option<&str>,
        workers: usize,
        concurrency: usize,
    ) -> anyhow::Result<Cluster> {
        let executable = std::env::current_exe().context("failed to find the kiln executable")?;
        let dir = tempfile::tempdir().context("failed to create a temporary directory")?;
        std::fs::create_dir(dir.path().join("dags"))?;
        for (name, text) in dags {
            std::fs::write(dir.path().join("dags").join(name), text)?;
        }
        let (database_url, postgres) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("kiln.db").display()),
                None,
            ),
            Backend::Postgres => {
                let admin = postgres_url.context("no PostgreSQL URL")?;
                let name = format!(
                    "kiln_bench_{}_{}",
                    std::process::id(),
                    rand::random::<u32>()
                );
                admin_sql(admin, &format!("CREATE DATABASE {name}")).await?;
                let url = replace_database(admin, &name);
                (url, Some((admin.to_owned(), name)))
            }
        };
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let server = Command::new(&executable)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--dags")
            .arg(dir.path().join("dags"))
            .args([
                "--database-url",
                &database_url,
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--lease",
                "20s",
            ])
            .env("KILN_WORKER_TOKEN", "bench")
            .env("KILN_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("failed to start the server")?;
        let mut cluster = Cluster {
            dir,
            url,
            database_url,
            postgres,
            server,
            workers: Vec::new(),
        };
        let client = reqwest_ready(&cluster.url).await;
        if !client {
            bail!("the benchmark server did not come up");
        }
        for index in 0..workers {
            let worker = Command::new(&executable)
                .args([
                    "--server",
                    &cluster.url,
                    "worker",
                    "--concurrency",
                    &concurrency.to_string(),
                    "--id",
                    &format!("bench-{index}"),
                ])
                .arg("--work-dir")
                .arg(cluster.dir.path().join(format!("work-{index}")))
                .env("KILN_WORKER_TOKEN", "bench")
                .env("KILN_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .context("failed to start a worker")?;
            cluster.workers.push(worker);
        }
        // Workers register and start long-polling; give them a moment so the first claim is warm.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(cluster)
    }

    fn pids(&self) -> Vec<u32> {
        std::iter::once(self.server.id())
            .chain(self.workers.iter().map(Child::id))
            .collect()
    }

    fn stop_processes(&mut self) {
        for child in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.server))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn finish(mut self) {
        self.stop_processes();
        if let Some((admin, name)) = self.postgres.take() {
            let _ = admin_sql(
                &admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await;
        }
    }
}

async fn reqwest_ready(url: &str) -> bool {
    let client = ApiClient::new(url, None);
    for _ in 0..300 {
        if client.dags().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn admin_sql(admin: &str, sql: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {}", crate::ops::redact(admin)))?;
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await?;
    Ok(())
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let prefix = base.rsplit_once('/').map_or(base, |(prefix, _)| prefix);
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(after) = stat.rfind(')').map(|index| &stat[index + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second.max(1.0)
}

/// Peak resident memory of a process, in KiB.
fn peak_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn measure(
    workload: Workload,
    plugin: Plugin,
    backend: Backend,
    sizes: Sizes,
    postgres_url: Option<&str>,
) -> anyhow::Result<Measurement> {
    let (dag, runs) = dag_file(workload, plugin, sizes);
    let (workers, concurrency) = if workload == Workload::Sleepers {
        (2, 4)
    } else {
        (2, 32)
    };
    let cluster = Cluster::start(
        &[("bench.toml".to_owned(), dag)],
        backend,
        postgres_url,
        workers,
        concurrency,
    )
    .await?;
    let client = ApiClient::new(&cluster.url, None);
    let pids = cluster.pids();
    let cpu_before: f64 = pids.iter().map(|pid| cpu_seconds(*pid)).sum();

    let triggered_at = now_micros();
    let mut run_ids = Vec::with_capacity(runs);
    for _ in 0..runs {
        run_ids.push(
            client
                .trigger("bench", serde_json::Map::new())
                .await
                .context("failed to trigger")?
                .id,
        );
    }
    let store = connect(&cluster.database_url).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let finished = store
            .run_list(&kiln_engine::store::RunFilter {
                dag_id: Some("bench".to_owned()),
                state: None,
                limit: Some(10_000),
            })
            .await?
            .iter()
            .filter(|run| run.state.is_final())
            .count();
        if finished >= runs {
            break;
        }
        if Instant::now() > deadline {
            bail!("{} did not finish within 10 minutes", workload.name());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_after: f64 = pids.iter().map(|pid| cpu_seconds(*pid)).sum();
    let mut measurement = Measurement {
        cpu_seconds: cpu_after - cpu_before,
        server_peak_kb: peak_kb(pids[0]),
        worker_peak_kb: pids[1..].iter().map(|pid| peak_kb(*pid)).max().unwrap_or(0),
        ..Measurement::default()
    };
    let mut last_end = triggered_at;
    for run_id in &run_ids {
        let run = store.run_get(*run_id).await?.context("a run vanished")?;
        if run.state != RunState::Success {
            bail!("{} run {run_id} ended {}", workload.name(), run.state);
        }
        let instances = store.task_instance_list(*run_id).await?;
        measurement.tasks += instances.len();
        for instance in &instances {
            last_end = last_end.max(instance.ended_at.unwrap_or(triggered_at));
        }
        if workload == Workload::Chain {
            // The worker's completion of one step claims the next in the same transaction, so
            // a step's recorded start equals the previous step's end; the time between
            // consecutive ends is what each dependent step really costs.
            if let Some(first) = instances.first().and_then(|instance| instance.started_at) {
                measurement.first_start_ms = (first - triggered_at) as f64 / 1000.0;
            }
            let mut previous_end = triggered_at;
            for instance in &instances {
                let end = instance.ended_at.unwrap_or(previous_end);
                measurement
                    .latencies_ms
                    .push((end - previous_end) as f64 / 1000.0);
                previous_end = end;
            }
        }
    }
    measurement.wall = (last_end - triggered_at) as f64 / 1e6;
    drop(store);
    cluster.finish().await;
    Ok(measurement)
}

fn percentile(values: &[f64], fraction: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn idle(
    backend: Backend,
    postgres_url: Option<&str>,
    seconds: u64,
) -> anyhow::Result<(f64, u64, u64)> {
    let dags: Vec<(String, String)> = (0..100)
        .map(|index| {
            let text = format!(
                "id = \"idle{index}\"\nschedule = \"@daily\"\nstart_date = \"2099-01-01\"\n[[tasks]]\nid = \"t\"\nkind = \"noop\"\n"
            );
            (format!("idle{index}.toml"), text)
        })
        .collect();
    let cluster = Cluster::start(&dags, backend, postgres_url, 2, 4).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids = cluster.pids();
    let before: f64 = pids.iter().map(|pid| cpu_seconds(*pid)).sum();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after: f64 = pids.iter().map(|pid| cpu_seconds(*pid)).sum();
    let server_kb = peak_kb(pids[0]);
    let worker_kb = pids[1..].iter().map(|pid| peak_kb(*pid)).max().unwrap_or(0);
    cluster.finish().await;
    Ok((
        (after - before) / seconds as f64 * 100.0,
        server_kb,
        worker_kb,
    ))
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .next()
                .map(|line| line.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or_else(
            || "?".to_owned(),
            |kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_owned())
        .unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "{cores} cores, {memory}, Linux {kernel}, kiln {} at commit {commit}",
        env!("CARGO_PKG_VERSION")
    )
}

pub(crate) async fn bench(options: BenchOptions) -> anyhow::Result<()> {
    let sizes = Sizes::new(options.quick);
    let repetitions = if options.quick {
        1
    } else {
        options.repetitions.max(1)
    };
    let wants_processes = Workload::ALL
        .into_iter()
        .any(|workload| options.wants(workload.name()))
        || options.wants("idle");
    let mut backends = vec![Backend::Sqlite];
    // Only the workloads with server and worker processes have a PostgreSQL run.
    match &options.postgres_url {
        _ if !wants_processes => {}
        Some(url) => match admin_sql(url, "SELECT 1").await {
            Ok(()) => backends.push(Backend::Postgres),
            Err(error) => eprintln!("PostgreSQL benchmarks skipped: {error:#}"),
        },
        None => {
            eprintln!("PostgreSQL benchmarks skipped: no --postgres-url / KILN_BENCH_DATABASE_URL")
        }
    }
    let build = if cfg!(debug_assertions) {
        "debug build (numbers are not representative; use --release)"
    } else {
        "release build"
    };
    let only: String = options
        .only
        .iter()
        .map(|workload| format!(" --only {workload}"))
        .collect();
    let mut report = format!(
        "## {} — {}{only}\n\nMachine: {}. {build}.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        if options.quick {
            "kiln bench --quick"
        } else {
            "kiln bench"
        },
        machine(),
    );
    if wants_processes {
        let _ = writeln!(
            report,
            "SQLite: WAL, synchronous=NORMAL. PostgreSQL: server defaults (fsync on). 2 workers × 32 slots (W4: 2 × 4), lease 20 s. {repetitions} repetition(s); median (min–max).\n"
        );
    }
    if Workload::ALL
        .into_iter()
        .any(|workload| options.wants(workload.name()))
    {
        report.push_str("| backend | plugin | workload | tasks | wall s | tasks/s | overhead/task ms | CPU/task ms | trigger→first start ms; step p50/p99 ms | server MB | worker MB |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    }
    for backend in &backends {
        for plugin in [Plugin::Noop, Plugin::Command]
            .into_iter()
            .filter(|plugin| options.wants_plugin(*plugin))
        {
            for workload in Workload::ALL
                .into_iter()
                .filter(|workload| options.wants(workload.name()))
            {
                let mut results = Vec::new();
                for _ in 0..repetitions {
                    let measurement = measure(
                        workload,
                        plugin,
                        *backend,
                        sizes,
                        options.postgres_url.as_deref(),
                    )
                    .await
                    .with_context(|| {
                        format!("{} on {backend:?} with {plugin:?}", workload.name())
                    })?;
                    results.push(measurement);
                }
                results.sort_by(|a, b| a.wall.total_cmp(&b.wall));
                let median = &results[results.len() / 2];
                let (min, max) = (results[0].wall, results[results.len() - 1].wall);
                let ideal = if workload == Workload::Sleepers {
                    sizes.sleepers as f64 * 0.1 / 8.0
                } else {
                    0.0
                };
                let overhead = if workload == Workload::Sleepers {
                    format!("{:.0} ms over ideal", (median.wall - ideal) * 1000.0)
                } else {
                    format!("{:.3}", median.wall * 1000.0 / median.tasks as f64)
                };
                let latency = if median.latencies_ms.is_empty() {
                    "-".to_owned()
                } else {
                    format!(
                        "{:.2}; {:.2} / {:.2}",
                        median.first_start_ms,
                        percentile(&median.latencies_ms, 0.5),
                        percentile(&median.latencies_ms, 0.99)
                    )
                };
                let line = format!(
                    "| {} | {} | {} | {} | {:.3} ({:.3}–{:.3}) | {:.0} | {overhead} | {:.3} | {latency} | {:.1} | {:.1} |\n",
                    match backend {
                        Backend::Sqlite => "SQLite",
                        Backend::Postgres => "PostgreSQL",
                    },
                    match plugin {
                        Plugin::Noop => "noop",
                        Plugin::Command => "command `true`",
                    },
                    workload.name(),
                    median.tasks,
                    median.wall,
                    min,
                    max,
                    median.tasks as f64 / median.wall,
                    median.cpu_seconds * 1000.0 / median.tasks as f64,
                    median.server_peak_kb as f64 / 1024.0,
                    median.worker_peak_kb as f64 / 1024.0,
                );
                eprint!("{line}");
                report.push_str(&line);
            }
        }
    }
    let idle_seconds = if options.quick { 3 } else { 60 };
    if options.wants("idle") {
        report.push_str(&format!("\nIdle ({idle_seconds} s, 100 DAGs loaded, nothing due, server + 2 workers):\n\n| backend | CPU % of one core | server MB | worker MB |\n|---|---|---|---|\n"));
    }
    for backend in backends.iter().filter(|_| options.wants("idle")) {
        let (cpu, server_kb, worker_kb) =
            idle(*backend, options.postgres_url.as_deref(), idle_seconds).await?;
        let line = format!(
            "| {} | {cpu:.2} | {:.1} | {:.1} |\n",
            if *backend == Backend::Sqlite {
                "SQLite"
            } else {
                "PostgreSQL"
            },
            server_kb as f64 / 1024.0,
            worker_kb as f64 / 1024.0
        );
        eprint!("{line}");
        report.push_str(&line);
    }
    if options.wants("artifacts") {
        let size: u64 = if options.quick { 64 << 20 } else { 1 << 30 };
        let (put, get, peak_kb) = blob_round_trip(size)
            .await
            .context("the artifact streaming benchmark failed")?;
        let line = format!(
            "\nArtifact streaming (local store, this process): {} MiB written in {put:.2} s ({:.0} MiB/s) and read back hash-checked in {get:.2} s ({:.0} MiB/s); peak resident memory {:.1} MB.\n",
            size >> 20,
            (size >> 20) as f64 / put,
            (size >> 20) as f64 / get,
            peak_kb as f64 / 1024.0
        );
        eprint!("{line}");
        report.push_str(&line);
    }
    if options.wants("console") {
        let (runs, renders) = if options.quick { (100, 5) } else { (1000, 20) };
        let (timings, filled) = console_workload(runs, renders)
            .await
            .context("the console benchmark failed")?;
        let mut section = format!(
            "\nConsole pages (SQLite; {runs} finished runs of a 100-task DAG, 10 layers of 10, filled in {:.1} s; each page rendered {renders} times in this process through the router with `oneshot`, after one warm-up; time to the whole body):\n\n| page | path | median ms | max ms | KiB |\n|---|---|---|---|---|\n",
            filled.as_secs_f64()
        );
        for timing in &timings {
            let _ = writeln!(
                section,
                "| {} | `{}` | {:.2} | {:.2} | {:.1} |",
                timing.name,
                timing.path,
                percentile(&timing.times_ms, 0.5),
                percentile(&timing.times_ms, 1.0),
                timing.bytes as f64 / 1024.0
            );
        }
        if let Some(slowest) = timings
            .iter()
            .max_by(|a, b| percentile(&a.times_ms, 1.0).total_cmp(&percentile(&b.times_ms, 1.0)))
        {
            let _ = writeln!(
                section,
                "\nSlowest: {}, {:.2} ms at worst.",
                slowest.name,
                percentile(&slowest.times_ms, 1.0)
            );
        }
        eprint!("{section}");
        report.push_str(&section);
    }
    println!("{report}");
    if let Some(path) = options.output.filter(|_| !options.quick) {
        append(&path, &report)?;
        eprintln!("appended to {}", path.display());
    }
    Ok(())
}

fn append(path: &Path, report: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let exists = path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    if !exists {
        writeln!(
            file,
            "# Benchmarks\n\nProduced by `kiln bench` (see `shared/bench/workloads.md` for the workloads). Newest last.\n"
        )?;
    }
    writeln!(file, "{report}")?;
    Ok(())
}

/// Streams a generated file of `size` bytes into a local artifact store and back out, and
/// answers the seconds each way and this process's peak resident memory meanwhile (the peak is
/// reset first, so the figure is the round trip's own).
async fn blob_round_trip(size: u64) -> anyhow::Result<(f64, f64, u64)> {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().context("failed to create a scratch directory")?;
    let source = dir.path().join("source.bin");
    {
        let mut file = tokio::fs::File::create(&source)
            .await
            .context("failed to create the source file")?;
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut buffer = vec![0u8; 1 << 20];
        let mut written = 0;
        while written < size {
            for chunk in buffer.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            let take =
                usize::try_from((size - written).min(buffer.len() as u64)).unwrap_or(buffer.len());
            file.write_all(&buffer[..take])
                .await
                .context("failed to write the source file")?;
            written += take as u64;
        }
        file.sync_all()
            .await
            .context("failed to write the source file")?;
    }
    let store = kiln_engine::artifacts::BlobStore::from_config(
        &kiln_engine::artifacts::ArtifactStoreConfig::local_under(dir.path()),
    )
    .context("failed to open a local artifact store")?;
    // Writing 5 to clear_refs resets the peak-RSS counter (Linux 4.0 and later).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = std::time::Instant::now();
    let stored = store
        .put_file(&source)
        .await
        .context("failed to store the blob")?;
    let put = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    store
        .get_to_file(&stored.blob.sha256, &dir.path().join("copy.bin"))
        .await
        .context("failed to read the blob back")?;
    let get = started.elapsed().as_secs_f64();
    Ok((put, get, peak_kb(std::process::id())))
}

/// The console pages the `console` workload renders, by name and path, for a DAG `dag_id`, its
/// run `run_id` and the task `task_id` of that run.
fn console_pages(dag_id: &str, run_id: i64, task_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DAGs list", "/dags".to_owned()),
        ("DAG graph", format!("/dags/{dag_id}")),
        ("DAG grid", format!("/dags/{dag_id}?view=grid")),
        ("DAG source", format!("/dags/{dag_id}?view=source")),
        ("run", format!("/runs/{run_id}")),
        ("run live fragment", format!("/runs/{run_id}/live")),
        ("task", format!("/runs/{run_id}/tasks/{task_id}")),
        ("workers", "/workers".to_owned()),
        ("artifacts", "/artifacts".to_owned()),
        ("models", "/models".to_owned()),
    ]
}

/// One console page's render times.
#[derive(Debug, Clone)]
struct PageTiming {
    name: &'static str,
    path: String,
    times_ms: Vec<f64>,
    bytes: usize,
}

/// The `console` workload's DAG: `layers` layers of `width` `noop` tasks, each task after up to
/// three of the layer before, so the graph view lays out real crossings.
fn layered_dag(dag_id: &str, layers: usize, width: usize, max_active_runs: usize) -> String {
    let mut text = format!("id = \"{dag_id}\"\nmax_active_runs = {max_active_runs}\n");
    for layer in 0..layers {
        for index in 0..width {
            let up: Vec<String> = if layer == 0 {
                Vec::new()
            } else {
                let mut ups: Vec<String> = (0..3)
                    .map(|k| format!("t{}_{}", layer - 1, (index + k * 3) % width))
                    .collect();
                ups.sort();
                ups.dedup();
                ups
            };
            text.push_str(&task(
                &format!("t{layer}_{index}"),
                Plugin::Noop,
                false,
                &up,
            ));
        }
    }
    text
}

/// Fills a fresh SQLite store with `runs` finished runs of a 100-task layered DAG, then renders
/// every console page `renders` times through the router, in process (after one warm-up each,
/// so the first render's one-off costs are not counted). Answers the timings and how long
/// filling the store took.
///
/// The runs are real: triggered through the scheduler, their tasks claimed and completed
/// through the store as a worker would (one log line each), a batch of runs at a time.
async fn console_workload(
    runs: usize,
    renders: usize,
) -> anyhow::Result<(Vec<PageTiming>, Duration)> {
    use kiln_engine::execution::{ExecutionApi as _, ExecutionService, Registration};
    use kiln_engine::scheduler::Scheduler;
    use kiln_engine::store::{
        AttemptResult, ClaimParams, Completion, CompletionOutcome, LogUpload, RunFilter,
        TriggerKind,
    };
    use tower::ServiceExt as _;

    const DAG_ID: &str = "console";
    const LAYERS: usize = 10;
    const WIDTH: usize = 10;
    const WORKER: &str = "bench-console";
    // Runs triggered before their tasks are driven to the end: a few runs in flight at once, as
    // on a busy server, without one claim scanning every run's tasks.
    const BATCH: usize = 50;

    let filling = Instant::now();
    let dir = tempfile::tempdir().context("failed to create a temporary directory")?;
    let dags_dir = dir.path().join("dags");
    std::fs::create_dir(&dags_dir).context("failed to create the DAG folder")?;
    std::fs::write(
        dags_dir.join("console.toml"),
        layered_dag(DAG_ID, LAYERS, WIDTH, BATCH),
    )
    .context("failed to write the DAG file")?;
    let store = connect(&format!(
        "sqlite://{}",
        dir.path().join("kiln.db").display()
    ))
    .await
    .context("failed to open the SQLite store")?;
    store
        .migrate()
        .await
        .context("failed to migrate the SQLite store")?;
    let scheduler = std::sync::Arc::new(Scheduler::new(
        store.clone(),
        kiln_tasks::builtin_registry(),
        dags_dir,
        "bench".to_owned(),
    ));
    let report = scheduler
        .sync_dags()
        .await
        .context("failed to load the benchmark DAG")?;
    if let Some((path, problem)) = report.failed.first() {
        bail!("the benchmark DAG {path} did not load: {problem}");
    }
    let execution = std::sync::Arc::new(ExecutionService::new(
        scheduler.clone(),
        Duration::from_secs(60),
    ));
    // One live worker, so the workers page lists something.
    execution
        .register(&Registration {
            worker_id: WORKER.to_owned(),
            queues: vec!["default".to_owned()],
            concurrency: 32,
            hostname: "bench".to_owned(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .await
        .context("failed to register the benchmark worker")?;

    let claim = |now| ClaimParams {
        worker_id: WORKER.to_owned(),
        queues: vec!["default".to_owned()],
        limit: 1000,
        lease: Duration::from_secs(60),
        now,
    };
    let mut triggered = 0;
    let mut last_run = 0;
    while triggered < runs {
        let batch = BATCH.min(runs - triggered);
        for _ in 0..batch {
            last_run = scheduler
                .trigger(DAG_ID, &serde_json::Map::new(), TriggerKind::Manual)
                .await
                .context("failed to trigger a run")?
                .id;
        }
        triggered += batch;
        let mut claimed = store
            .task_instance_claim(&claim(now_micros()))
            .await
            .context("failed to claim tasks")?;
        while !claimed.is_empty() {
            let completions: Vec<Completion> = claimed
                .iter()
                .map(|task| Completion {
                    task_instance_id: task.task_instance_id,
                    fence: task.fence,
                    result: AttemptResult::success(serde_json::json!({})),
                })
                .collect();
            let logs: Vec<LogUpload> = claimed
                .iter()
                .map(|task| LogUpload {
                    task_instance_id: task.task_instance_id,
                    try_number: task.try_number,
                    seq: 0,
                    chunk: format!("{} ran\n", task.task_id),
                })
                .collect();
            let now = now_micros();
            let (outcomes, next) = store
                .task_instance_complete_and_claim(&completions, &logs, Some(&claim(now)), now)
                .await
                .context("failed to complete tasks")?;
            if let Some(refused) = outcomes
                .iter()
                .find(|outcome| !matches!(outcome, Ok(CompletionOutcome::Succeeded)))
            {
                bail!("a benchmark task did not succeed: {refused:?}");
            }
            claimed = next;
        }
    }
    let finished = store
        .run_list(&RunFilter {
            dag_id: Some(DAG_ID.to_owned()),
            state: Some(RunState::Success),
            limit: Some(u32::try_from(runs).unwrap_or(u32::MAX)),
        })
        .await
        .context("failed to list the runs")?
        .len();
    if finished != runs {
        bail!("{finished} of {runs} benchmark runs succeeded");
    }
    let filled = filling.elapsed();

    let state = kiln_web::AppState {
        execution,
        worker_token: "bench".into(),
        api_token: None,
        console: kiln_web::ConsoleConfig::default(),
        models: Default::default(),
        mlflow: None,
    };
    let app = kiln_web::app(state);
    let last_task = format!("t{}_{}", LAYERS - 1, WIDTH - 1);
    let mut timings = Vec::new();
    for (name, path) in console_pages(DAG_ID, last_run, &last_task) {
        let mut timing = PageTiming {
            name,
            path,
            times_ms: Vec::with_capacity(renders),
            bytes: 0,
        };
        for render in 0..=renders {
            let request = axum::http::Request::get(&timing.path)
                .body(axum::body::Body::empty())
                .context("failed to build a console request")?;
            let started = Instant::now();
            let response = app
                .clone()
                .oneshot(request)
                .await
                .with_context(|| format!("GET {} failed", timing.path))?;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 64 << 20)
                .await
                .with_context(|| format!("failed to read the body of {}", timing.path))?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            if !status.is_success() {
                bail!(
                    "GET {} answered {status}: {}",
                    timing.path,
                    String::from_utf8_lossy(&body[..body.len().min(500)])
                );
            }
            // The first render warms caches (the DAG's plan, SQLite's pages) and is not counted.
            if render > 0 {
                timing.times_ms.push(elapsed);
            }
            timing.bytes = body.len();
        }
        timings.push(timing);
    }
    drop(app);
    Ok((timings, filled))
}
