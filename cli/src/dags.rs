//! `kiln dags …`: validate, list and show DAG files without a server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use kiln_engine::dag::{DagSet, LoadedDag, load_dir, parse_dag};

#[derive(Debug, Subcommand)]
pub(crate) enum DagsCommand {
    /// Check DAG files: exit 1 listing every problem, or 0 with a line per DAG.
    Validate {
        /// A folder of DAG files or a single file; defaults to `--dags`.
        path: Option<PathBuf>,
    },
    /// List the DAGs that load, with their schedules and next run.
    List {
        /// A folder of DAG files; defaults to `--dags`.
        path: Option<PathBuf>,
    },
    /// Show one DAG: its tasks in order and its next scheduled times.
    Show {
        /// The DAG id.
        id: String,
        /// Print the task graph as Graphviz DOT instead.
        #[arg(long)]
        dot: bool,
        /// Compute the next scheduled times from this instant (RFC 3339) instead of now.
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
    },
    /// Stop scheduling a DAG; its queued runs wait.
    Pause {
        /// The DAG id.
        id: String,
    },
    /// Resume scheduling a DAG.
    Unpause {
        /// The DAG id.
        id: String,
    },
}

pub(crate) fn run(
    command: DagsCommand,
    dags_dir: &Path,
    database: &crate::ops::DatabaseConfig,
) -> anyhow::Result<ExitCode> {
    match command {
        DagsCommand::Pause { id } => {
            crate::block_on(crate::ops::set_paused(database, dags_dir, &id, true))
        }
        DagsCommand::Unpause { id } => {
            crate::block_on(crate::ops::set_paused(database, dags_dir, &id, false))
        }
        DagsCommand::Validate { path } => validate(path.as_deref().unwrap_or(dags_dir)),
        DagsCommand::List { path } => list(path.as_deref().unwrap_or(dags_dir)),
        DagsCommand::Show { id, dot, from } => show(dags_dir, &id, dot, from.as_deref()),
    }
}

fn load(path: &Path) -> anyhow::Result<DagSet> {
    let registry = kiln_tasks::builtin_registry();
    if path.is_file() {
        let bytes =
            std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        let mut set = DagSet::default();
        match parse_dag(path, &bytes, &registry) {
            Ok(loaded) => set.dags.push(loaded),
            Err(error) => set.errors.push(error),
        }
        return Ok(set);
    }
    load_dir(path, &registry)
        .with_context(|| format!("failed to read the DAG folder {}", path.display()))
}

fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    let set = load(path)?;
    for loaded in &set.dags {
        println!("ok    {}", summary(loaded));
        for warning in &loaded.warnings {
            println!("      {}", warning.display_in(&loaded.path));
        }
    }
    for error in &set.errors {
        println!("{error}");
    }
    let problems: usize = set.errors.iter().map(|error| error.problems.len()).sum();
    println!(
        "{} DAG(s) valid, {} file(s) with errors ({} problem(s))",
        set.dags.len(),
        set.errors.len(),
        problems
    );
    Ok(if set.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn summary(loaded: &LoadedDag) -> String {
    let dag = &loaded.dag;
    let schedule = match &dag.schedule {
        Some(schedule) => format!("{} ({})", schedule.expression(), dag.timezone),
        None => "manual".to_owned(),
    };
    format!(
        "{}  {} task(s), schedule {}  [{}]",
        dag.id,
        dag.tasks.len(),
        schedule,
        loaded.path.display()
    )
}

fn list(path: &Path) -> anyhow::Result<ExitCode> {
    let set = load(path)?;
    let now = Utc::now();
    println!(
        "{:<24} {:>5}  {:<28} {:<26} DESCRIPTION",
        "ID", "TASKS", "SCHEDULE", "NEXT RUN"
    );
    for loaded in &set.dags {
        let dag = &loaded.dag;
        let (schedule, next) = match &dag.schedule {
            Some(schedule) => (
                format!("{} {}", schedule.expression(), dag.timezone),
                schedule
                    .next_after(now, dag.timezone)
                    .map(|time| time.to_rfc3339())
                    .unwrap_or_else(|| "never".to_owned()),
            ),
            None => ("manual".to_owned(), "-".to_owned()),
        };
        println!(
            "{:<24} {:>5}  {:<28} {:<26} {}",
            dag.id,
            dag.tasks.len(),
            schedule,
            next,
            dag.description
        );
    }
    if !set.errors.is_empty() {
        println!(
            "{} file(s) did not load; run `kiln dags validate` for details",
            set.errors.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(dags_dir: &Path, id: &str, dot: bool, from: Option<&str>) -> anyhow::Result<ExitCode> {
    let set = load(dags_dir)?;
    let Some(loaded) = set.get(id) else {
        let known: Vec<&str> = set
            .dags
            .iter()
            .map(|loaded| loaded.dag.id.as_str())
            .collect();
        bail!(
            "no DAG `{id}` in {} (loaded: {})",
            dags_dir.display(),
            known.join(", ")
        );
    };
    let dag = &loaded.dag;
    if dot {
        println!("{}", to_dot(loaded));
        return Ok(ExitCode::SUCCESS);
    }
    let from: DateTime<Utc> = match from {
        Some(text) => DateTime::parse_from_rfc3339(text)
            .with_context(|| {
                format!("--from `{text}` is not an RFC 3339 time such as 2026-01-01T00:00:00Z")
            })?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    println!("{}: {}", dag.id, dag.description);
    println!("file: {}", loaded.path.display());
    match &dag.schedule {
        Some(schedule) => {
            println!(
                "schedule: {} in {} ({})",
                schedule.expression(),
                dag.timezone,
                schedule.describe()
            );
            println!("next runs:");
            for time in schedule.upcoming(from, dag.timezone, 5) {
                println!("  {}", time.to_rfc3339());
            }
        }
        None => println!("schedule: manual (triggered by hand or through the API)"),
    }
    if !dag.tags.is_empty() {
        println!("tags: {}", dag.tags.join(", "));
    }
    for (name, param) in &dag.params {
        let default = param
            .default
            .as_ref()
            .map_or_else(|| "required".to_owned(), |value| format!("default {value}"));
        println!(
            "param {name}: {} ({default}) {}",
            param.param_type.as_str(),
            param.description
        );
    }
    println!("tasks (upstream before downstream):");
    for task in &dag.tasks {
        let upstream = if task.depends_on.is_empty() {
            "-".to_owned()
        } else {
            task.depends_on.join(", ")
        };
        println!("  {:<20} {:<10} after: {}", task.id, task.kind, upstream);
    }
    for warning in &loaded.warnings {
        println!("{}", warning.display_in(&loaded.path));
    }
    Ok(ExitCode::SUCCESS)
}

fn to_dot(loaded: &LoadedDag) -> String {
    let mut dot = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n",
        loaded.dag.id
    );
    for task in &loaded.dag.tasks {
        dot.push_str(&format!(
            "  \"{}\" [label=\"{}\\n({})\"];\n",
            task.id, task.id, task.kind
        ));
    }
    for task in &loaded.dag.tasks {
        for upstream in &task.depends_on {
            dot.push_str(&format!("  \"{upstream}\" -> \"{}\";\n", task.id));
        }
    }
    dot.push('}');
    dot
}
