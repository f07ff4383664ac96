//! The `kiln` command: DAG tooling now; the server, workers and operations as they land.

// A command-line tool's job is to print; the workspace lint is for the libraries.
#![allow(clippy::print_stdout)]

mod artifacts;
mod dags;
mod mlflow;
mod models;
mod ops;
mod remote;
mod server;
mod standalone;
mod table;
mod tasks_run;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// kiln: a workflow orchestration engine for MLOps pipelines.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
struct Cli {
    /// The folder of DAG files.
    #[arg(long, global = true, default_value = "dags", env = "KILN_DAGS")]
    dags: PathBuf,

    /// The database: `postgres://…` or `sqlite://PATH`; by default SQLite in the data directory.
    #[arg(long, global = true, env = "KILN_DATABASE_URL")]
    database_url: Option<String>,

    /// Where kiln keeps its SQLite database and local artifacts.
    #[arg(long, global = true, default_value = ".kiln", env = "KILN_DATA_DIR")]
    data_dir: PathBuf,

    /// A TOML file describing the artifact store (`backend = "s3"`, `bucket`, `endpoint`, …);
    /// by default a local store in the data directory. Workers given none move artifact bytes
    /// through the server.
    #[arg(long, global = true, env = "KILN_ARTIFACTS_CONFIG")]
    artifacts_config: Option<PathBuf>,

    /// The server that `trigger`, `runs show` and `logs` talk to.
    #[arg(
        long,
        global = true,
        default_value = DEFAULT_SERVER,
        env = "KILN_SERVER"
    )]
    server: String,

    /// The API token, when the server requires one.
    #[arg(long, global = true, env = "KILN_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,

    /// How kiln's own log lines on stderr are written: `text` for people (coloured only on a
    /// terminal), `json` for log shippers (one object a line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "KILN_LOG_FORMAT"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// The server the client commands talk to unless `--server` (`KILN_SERVER`) says otherwise.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The log format this process was started with, for the few lines written for people.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Writes a line meant for a person at a terminal (a startup banner) to stderr, unless logs are
/// JSON: there every stderr line must be one object, and the log events carry the same facts.
pub(crate) fn banner(line: std::fmt::Arguments<'_>) {
    if LOG_FORMAT.get().copied().unwrap_or(LogFormat::Text) == LogFormat::Text {
        eprintln!("{line}");
    }
}

/// The shapes of kiln's log lines (`--log-format`, `KILN_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One line of text per event, with ANSI colours only when stderr is a terminal.
    Text,
    /// One JSON object per event: `timestamp`, `level`, `target`, the event's fields at the top
    /// level (`message` among them), and the span it happened in with the spans around it.
    Json,
}

/// The web console's settings, shared by `server` and `standalone`.
#[derive(clap::Args)]
struct ConsoleArgs {
    /// The console's admin password; without one the console is open, which is allowed only
    /// on a loopback address (prefer the environment variable: arguments show in `ps`).
    #[arg(long, env = "KILN_CONSOLE_PASSWORD", hide_env_values = true)]
    console_password: Option<String>,
    /// A second password, for a read-only console login.
    #[arg(long, env = "KILN_CONSOLE_READONLY_PASSWORD", hide_env_values = true)]
    console_readonly_password: Option<String>,
    /// Serve no console: the REST and execution APIs only.
    #[arg(long)]
    no_console: bool,
}

impl ConsoleArgs {
    fn config(self) -> kiln_web::ConsoleConfig {
        if self.no_console {
            kiln_web::ConsoleConfig::disabled()
        } else {
            kiln_web::ConsoleConfig::new(self.console_password, self.console_readonly_password)
        }
    }
}

/// How long and how many clients the HTTP server serves (`kiln server`).
#[derive(Debug, clap::Args)]
struct HttpArgs {
    /// How long a client may take to send a request's headers; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long, env = "KILN_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    http_header_timeout: std::time::Duration,
    /// How long a client may take to send a request body (for a streamed blob upload: the
    /// longest pause between two pieces).
    #[arg(long, env = "KILN_HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    http_body_timeout: std::time::Duration,
    /// The most connections served at once; further ones wait until one closes.
    #[arg(long, env = "KILN_HTTP_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    http_max_connections: u32,
}

impl HttpArgs {
    fn options(&self) -> kiln_web::ServeOptions {
        kiln_web::ServeOptions {
            header_read_timeout: self.http_header_timeout,
            body_timeout: self.http_body_timeout,
            max_connections: usize::try_from(self.http_max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// Where runs are mirrored to MLflow (`kiln server` and `kiln standalone`).
#[derive(Debug, clap::Args)]
struct MlflowArgs {
    /// Mirror runs, training and evaluation attempts and the model registry to this MLflow
    /// tracking server (credentials: MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and
    /// MLFLOW_TRACKING_PASSWORD).
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    mlflow_tracking_uri: Option<String>,
    /// MLflow's address as a browser reaches it, for the console's links (default: the
    /// tracking URI; set it when the server reaches MLflow by another name, as in Docker).
    #[arg(long, env = "KILN_MLFLOW_UI_URL")]
    mlflow_ui_url: Option<String>,
}

impl MlflowArgs {
    fn options(self) -> server::MlflowOptions {
        server::MlflowOptions {
            tracking_uri: self
                .mlflow_tracking_uri
                .filter(|uri| !uri.trim().is_empty()),
            ui_url: self.mlflow_ui_url.filter(|url| !url.trim().is_empty()),
        }
    }
}

/// Written out so the passwords never reach a log or an error message.
impl std::fmt::Debug for ConsoleArgs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ConsoleArgs")
            .field("console_password_set", &self.console_password.is_some())
            .field(
                "console_readonly_password_set",
                &self.console_readonly_password.is_some(),
            )
            .field("no_console", &self.no_console)
            .finish()
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, list and inspect DAG files.
    Dags {
        #[command(subcommand)]
        command: dags::DagsCommand,
    },
    /// Manage the database.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Inspect runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Create runs for every schedule tick of a DAG in a date range.
    Backfill {
        /// The DAG id.
        id: String,
        /// The first date (2026-01-01) or time (RFC 3339), inclusive.
        #[arg(long)]
        from: String,
        /// The last date or time, inclusive.
        #[arg(long)]
        to: String,
    },
    /// Run the scheduler and the HTTP server (REST API and workers' execution API).
    Server {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The secret workers must present.
        #[arg(long, env = "KILN_WORKER_TOKEN", hide_env_values = true)]
        worker_token: String,
        /// How long a worker's lease lasts without a heartbeat.
        #[arg(long, default_value = "6s", value_parser = parse_duration)]
        lease: std::time::Duration,
        /// How long the scheduler's timed loop may go without completing a tick (reaching the
        /// database) before `/healthz` answers 503, so that a liveness probe restarts it.
        #[arg(long, env = "KILN_HEALTH_STALL_LIMIT", default_value = "60s", value_parser = parse_duration)]
        health_stall_limit: std::time::Duration,
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        console: ConsoleArgs,
        #[command(flatten)]
        mlflow: MlflowArgs,
    },
    /// Run a worker that claims tasks from a server and runs them.
    Worker {
        /// The worker token.
        #[arg(long, env = "KILN_WORKER_TOKEN", hide_env_values = true)]
        token: String,
        /// How many tasks to run at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// A queue to serve (repeat for several); `default` if none is given.
        #[arg(long = "queue")]
        queues: Vec<String>,
        /// This worker's id; `hostname-pid` by default.
        #[arg(long)]
        id: Option<String>,
        /// Where attempts get scratch directories.
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// On SIGTERM, how long running tasks may take before they are handed back.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        grace: std::time::Duration,
    },
    /// Everything on one machine: a server on SQLite and worker processes.
    Standalone {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// How many worker processes (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// How many tasks each worker runs at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// How long a worker's lease lasts without a heartbeat.
        #[arg(long, default_value = "6s", value_parser = parse_duration)]
        lease: std::time::Duration,
        #[command(flatten)]
        console: ConsoleArgs,
        #[command(flatten)]
        mlflow: MlflowArgs,
    },
    /// Trigger a run through the server.
    Trigger {
        /// The DAG id.
        id: String,
        /// A param, as name=value (the value is JSON when it parses as JSON).
        #[arg(long = "param")]
        params: Vec<String>,
        /// Follow the run with a progress bar; the exit code is the run's outcome.
        #[arg(long)]
        wait: bool,
    },
    /// Measure the benchmark workloads (W1–W5, idle, artifacts, console) against real server and worker processes.
    Bench {
        /// Small sizes and one repetition, for CI; prints only.
        #[arg(long)]
        quick: bool,
        /// PostgreSQL to benchmark against (a database is created and dropped per repetition).
        #[arg(
            long,
            env = "KILN_BENCH_DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        postgres_url: String,
        /// Where to append the report.
        #[arg(long, default_value = "BENCHMARKS.md")]
        output: PathBuf,
        /// Repetitions per workload (the median is reported).
        #[arg(long, default_value_t = 3)]
        repetitions: usize,
        /// Only these workloads: W1 … W5, idle, artifacts, console (repeatable; default all).
        #[arg(long)]
        only: Vec<String>,
        /// Only these plugins: noop, command (repeatable; default both).
        #[arg(long = "plugin")]
        plugins: Vec<String>,
    },
    /// List, inspect, fetch, publish and garbage-collect artifact versions.
    Artifacts {
        #[command(subcommand)]
        command: artifacts::ArtifactsCommand,
    },
    /// The model registry: list, show, promote, roll back.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// Print a version's lineage as a tree: what it was made from, or with `--downstream`,
    /// what was made from it.
    Lineage {
        /// NAME or NAME@VERSION (VERSION is a number or `latest`, the default).
        artifact: String,
        /// Follow lineage towards what was made from the version.
        #[arg(long)]
        downstream: bool,
    },
    /// The MLflow mirror's outbox: what is waiting to reach MLflow, and retrying what was
    /// given up on.
    Mlflow {
        #[command(subcommand)]
        command: mlflow::MlflowCommand,
    },
    /// Run a task plugin once on local files, outside the scheduler.
    Tasks {
        #[command(subcommand)]
        command: tasks_run::TasksCommand,
    },
    /// Print a task's log.
    Logs {
        /// The run id.
        run: String,
        /// The task id.
        task: String,
        /// The attempt (default: the latest).
        #[arg(long = "try")]
        try_number: Option<i64>,
        /// Keep printing until the attempt ends.
        #[arg(long)]
        follow: bool,
    },
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    kiln_engine::duration::parse(text)
}

fn parse_positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match parse_duration(text)? {
        duration if duration.is_zero() => Err("must be longer than zero".to_owned()),
        duration => Ok(duration),
    }
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Apply pending migrations.
    Migrate,
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only this DAG's runs.
        #[arg(long)]
        dag: Option<String>,
        /// Only runs in this state (queued, running, success, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show a run's tasks: state, tries, durations (through the server).
    Show {
        /// The run id.
        run: String,
    },
    /// Cancel a run on the server: its running tasks are stopped and the rest will not start.
    Cancel {
        /// The run id.
        run: String,
    },
}

/// Runs a future to completion on a fresh multi-threaded runtime, returning success.
fn block_on(
    future: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| anyhow::anyhow!("failed to start the async runtime: {error}"))?;
    runtime.block_on(future)?;
    Ok(ExitCode::SUCCESS)
}

/// Like [`block_on`], for commands whose exit code carries an outcome.
fn run_code(
    future: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| anyhow::anyhow!("failed to start the async runtime: {error}"))?;
    runtime.block_on(future)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        use tracing_subscriber::{EnvFilter, Layer as _};
        let filter = EnvFilter::try_from_env("KILN_LOG")
            .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn"));
        let _ = LOG_FORMAT.set(cli.log_format);
        let stderr_layer = match cli.log_format {
            // Colour codes are noise in a file or a log shipper: only a terminal gets them.
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .boxed(),
        };
        tracing_subscriber::registry()
            .with(stderr_layer)
            // Plugins' own events at INFO and above go into their task's log, whatever KILN_LOG says.
            .with(
                kiln_engine::worker::TaskLogLayer
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            )
            .init();
    }
    let address = remote::ServerAddress {
        url: cli.server.clone(),
        api_token: cli.api_token.clone(),
    };
    let database = ops::DatabaseConfig {
        url: cli.database_url.clone(),
        data_dir: cli.data_dir.clone(),
        artifacts_config: cli.artifacts_config.clone(),
    };
    // A command whose output is piped into `head` ends quietly when the reader goes away, as Unix
    // tools do, instead of panicking in `println!`. Processes that run work keep SIGPIPE
    // ignored: they write to sockets and to their tasks' pipes, where a reader gone is an error
    // to handle, not a reason to die.
    if !matches!(
        cli.command,
        Command::Server { .. }
            | Command::Worker { .. }
            | Command::Standalone { .. }
            | Command::Bench { .. }
            | Command::Tasks { .. }
    ) {
        // SAFETY: restores the default action of one signal before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Dags { command } => dags::run(command, &cli.dags, &database),
        Command::Db {
            command: DbCommand::Migrate,
        } => block_on(ops::migrate(&database)),
        Command::Runs {
            command: RunsCommand::List { dag, state, limit },
        } => block_on(ops::runs_list(&database, dag, state, limit)),
        Command::Backfill { id, from, to } => {
            block_on(ops::backfill(&database, &cli.dags, &id, &from, &to))
        }
        Command::Runs {
            command: RunsCommand::Show { run },
        } => remote::check_run_id(&run).and_then(|run| run_code(remote::show(&address, run))),
        Command::Runs {
            command: RunsCommand::Cancel { run },
        } => remote::check_run_id(&run).and_then(|run| run_code(remote::cancel(&address, run))),
        Command::Server {
            listen,
            worker_token,
            lease,
            health_stall_limit,
            http,
            console,
            mlflow,
        } => {
            let options = server::ServerOptions {
                listen,
                worker_token,
                api_token: cli.api_token.clone(),
                lease,
                health_stall_limit,
                http: http.options(),
                console: console.config(),
                mlflow: mlflow.options(),
            };
            block_on(server::server(&database, &cli.dags, options))
        }
        Command::Worker {
            token,
            concurrency,
            queues,
            id,
            work_dir,
            grace,
        } => {
            let options = server::WorkerOptions {
                server: cli.server.clone(),
                token,
                concurrency,
                queues,
                id,
                work_dir,
                shutdown_grace: grace,
                artifacts_config: cli.artifacts_config.clone(),
                dags_dir: cli.dags.clone(),
            };
            block_on(server::worker(options))
        }
        Command::Standalone {
            listen,
            workers,
            concurrency,
            lease,
            console,
            mlflow,
        } => {
            let workers = workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
            let options = standalone::StandaloneOptions {
                listen,
                workers,
                concurrency,
                lease,
                console: console.config(),
                mlflow: mlflow.options(),
            };
            block_on(standalone::standalone(&database, &cli.dags, options))
        }
        Command::Bench {
            quick,
            postgres_url,
            output,
            repetitions,
            only,
            plugins,
        } => {
            let postgres_url = Some(postgres_url).filter(|url| !url.is_empty());
            std::env::current_exe()
                .context("failed to find the kiln executable")
                .and_then(|kiln| {
                    block_on(kiln_bench::run(kiln_bench::Options {
                        kiln,
                        quick,
                        postgres_url,
                        output: Some(output),
                        repetitions,
                        only,
                        plugins,
                    }))
                })
        }
        Command::Trigger { id, params, wait } => {
            run_code(remote::trigger(&address, &id, &params, wait))
        }
        Command::Artifacts { command } => block_on(artifacts::run(command, &database)),
        Command::Models { command } => block_on(models::run(command, &database)),
        Command::Mlflow { command } => block_on(mlflow::run(command, &database)),
        Command::Lineage {
            artifact,
            downstream,
        } => block_on(artifacts::lineage(&database, &artifact, downstream)),
        Command::Tasks { command } => {
            tasks_run::run(command, &cli.dags, &address).map(|()| ExitCode::SUCCESS)
        }
        Command::Logs {
            run,
            task,
            try_number,
            follow,
        } => remote::check_run_id(&run)
            .and_then(|run| run_code(remote::logs(&address, run, &task, try_number, follow))),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
