//! The `kiln` command: DAG tooling now; the server, workers and operations as they land.

// A command-line tool's job is to print; the workspace lint is for the libraries.
#![allow(clippy::print_stdout)]

mod dags;

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
    let result = match cli.command {
        Command::Dags { command } => dags::run(command, &cli.dags),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
