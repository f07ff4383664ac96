//! kiln's benchmark harness, behind `kiln bench`: the workloads of `bench/WORKLOADS.md`
//! (W1–W5) against real server and worker processes over loopback, on SQLite and on
//! PostgreSQL, with the in-process `noop` plugin and with `command` running `true`; the idle
//! cost of a loaded server; artifact streaming; and the console's pages. Prints a Markdown
//! report and, unless `--quick`, appends it to `BENCHMARKS.md`.
//!
//! It reaches kiln only through its public interfaces: the `kiln` binary (`cluster`), the HTTP
//! API (`kiln_web::client`), `web::app` for the console (`console`), and the `Store` trait and
//! the store's PostgreSQL admin helpers to set databases up and read what was recorded.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! kiln_bench::run(kiln_bench::Options {
//!     kiln: "target/release/kiln".into(),
//!     quick: true,
//!     postgres_url: Some("postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
//!     output: None,
//!     repetitions: 1,
//!     only: vec!["W1".to_owned(), "W2".to_owned()],
//!     plugins: Vec::new(),
//! })
//! .await
//! # }
//! ```

mod artifacts;
mod cluster;
mod console;
mod measure;
mod report;
mod workloads;

use std::path::PathBuf;

use anyhow::Context;
use kiln_engine::store::{Backend, postgres_server_ping};

use crate::workloads::{Plugin, Sizes, Workload};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `kiln` binary whose `server` and `worker` processes are measured.
    pub kiln: PathBuf,
    /// Small sizes and one repetition, for CI; the report is printed only.
    pub quick: bool,
    /// A PostgreSQL server's administrative URL; a database is created and dropped per
    /// repetition. Without one, or when it does not answer, only SQLite is measured.
    pub postgres_url: Option<String>,
    /// Where to append the report (not with `quick`).
    pub output: Option<PathBuf>,
    /// Repetitions per workload, of which the median is reported (1 with `quick`).
    pub repetitions: usize,
    /// Workloads to run (`W1` … `W5`, `idle`, `artifacts`, `console`), matched
    /// case-insensitively against the start of their names; all when empty.
    pub only: Vec<String>,
    /// Plugins to run (`noop`, `command`); both when empty.
    pub plugins: Vec<String>,
}

impl Options {
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty()
            || self.only.iter().any(|wanted| {
                name.to_ascii_lowercase()
                    .starts_with(&wanted.to_ascii_lowercase())
            })
    }

    fn wants_plugin(&self, plugin: Plugin) -> bool {
        self.plugins.is_empty() || self.plugins.iter().any(|wanted| wanted == plugin.name())
    }
}

/// Runs the chosen workloads, writing each table line to stderr as it is measured, then prints
/// the whole report to stdout and, unless `quick`, appends it to `options.output`.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let sizes = Sizes::new(options.quick);
    let repetitions = if options.quick {
        1
    } else {
        options.repetitions.max(1)
    };
    let wants_workloads = Workload::ALL
        .into_iter()
        .any(|workload| options.wants(workload.name()));
    let wants_processes = wants_workloads || options.wants("idle");
    let mut backends = vec![Backend::Sqlite];
    // Only the workloads with server and worker processes have a PostgreSQL run.
    match &options.postgres_url {
        _ if !wants_processes => {}
        Some(url) => match postgres_server_ping(url).await {
            Ok(()) => backends.push(Backend::Postgres),
            Err(error) => eprintln!("PostgreSQL benchmarks skipped: {error}"),
        },
        None => {
            eprintln!("PostgreSQL benchmarks skipped: no --postgres-url / KILN_BENCH_DATABASE_URL")
        }
    }
    let mut report = report::heading(options.quick, &options.only, repetitions, wants_processes);
    if wants_workloads {
        report.push_str(report::WORKLOAD_TABLE_HEAD);
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
                    let measurement = measure::workload(
                        &options.kiln,
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
                let line = report::workload_line(*backend, plugin, workload, sizes, &mut results);
                eprint!("{line}");
                report.push_str(&line);
            }
        }
    }
    let idle_seconds = if options.quick { 3 } else { 60 };
    if options.wants("idle") {
        report.push_str(&report::idle_head(idle_seconds));
        for backend in &backends {
            let idle = measure::idle(
                &options.kiln,
                *backend,
                options.postgres_url.as_deref(),
                idle_seconds,
            )
            .await?;
            let line = report::idle_line(*backend, idle);
            eprint!("{line}");
            report.push_str(&line);
        }
    }
    if options.wants("artifacts") {
        let size: u64 = if options.quick { 64 << 20 } else { 1 << 30 };
        let trip = artifacts::blob_round_trip(size)
            .await
            .context("the artifact streaming benchmark failed")?;
        let line = report::artifacts_line(size, trip);
        eprint!("{line}");
        report.push_str(&line);
    }
    if options.wants("console") {
        let (runs, renders) = if options.quick { (100, 5) } else { (1000, 20) };
        let (timings, filled) = console::console_workload(runs, renders)
            .await
            .context("the console benchmark failed")?;
        let section = report::console_section(runs, renders, filled, &timings);
        eprint!("{section}");
        report.push_str(&section);
    }
    report::print(&report);
    if let Some(path) = options.output.filter(|_| !options.quick) {
        report::append(&path, &report)?;
        eprintln!("appended to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(only: &[&str], plugins: &[&str]) -> Options {
        Options {
            kiln: PathBuf::from("kiln"),
            quick: true,
            postgres_url: None,
            output: None,
            repetitions: 1,
            only: only.iter().map(|name| (*name).to_owned()).collect(),
            plugins: plugins.iter().map(|name| (*name).to_owned()).collect(),
        }
    }

    #[test]
    fn only_matches_the_start_of_a_name_in_any_case() {
        let chosen = options(&["w1", "Console"], &[]);
        assert!(chosen.wants(Workload::FanOut.name()));
        assert!(!chosen.wants(Workload::Chain.name()));
        assert!(chosen.wants("console"));
        assert!(!chosen.wants("idle"));
        let everything = options(&[], &[]);
        assert!(everything.wants("idle") && everything.wants(Workload::BigDag.name()));
    }

    #[test]
    fn plugins_are_chosen_by_their_exact_name() {
        let chosen = options(&[], &["command"]);
        assert!(chosen.wants_plugin(Plugin::Command));
        assert!(!chosen.wants_plugin(Plugin::Noop));
        assert!(options(&[], &[]).wants_plugin(Plugin::Noop));
    }
}
