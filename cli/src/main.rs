//! The `kiln` command: DAG tooling now; the server, workers and operations as they land.

// A command-line tool's job is to print; the workspace lint is for the libraries.
#![allow(clippy::print_stdout)]

mod dags;
mod ops;

use std::path::PathBuf;
use std::process::ExitCode;

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

    #[command(subcommand)]
    command: Command,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let database = ops::DatabaseConfig {
        url: cli.database_url.clone(),
        data_dir: cli.data_dir.clone(),
    };
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
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
