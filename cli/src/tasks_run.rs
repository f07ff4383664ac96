//! `kiln tasks run`: one task plugin, once, in this process, on local files, outside any
//! scheduler and database (like Airflow's `airflow tasks test`).
//!
//! The plugin comes from the same registry a worker uses, and its params are checked exactly as
//! a DAG load checks them. Inputs are local files standing in for artifact versions (named after
//! the file, version 1, with their real SHA-256); outputs are written where `--output` says. One
//! JSON line goes to stdout: the plugin's wall time, its summary and what it wrote. Logs go to
//! stderr.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use kiln_engine::TaskContext;
use kiln_engine::artifacts::{BlobRef, Sha256Digest};
use kiln_engine::dag::ArtifactKind;
use kiln_engine::plugin::{InputFile, LogSink, LogStream, OutputFile, OutputSlot};
use kiln_engine::state::TaskState;
use kiln_engine::store::ArtifactVersionRecord;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

/// `kiln tasks …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// Run one task plugin once on local files and print one JSON line: its kind, the plugin's
    /// wall time in seconds, its summary and its outputs (path, size, SHA-256, rows).
    Run {
        /// The plugin kind: `process`, `train`, `evaluate`, `command`, …
        kind: String,
        /// The params as JSON, or `@FILE` to read them from a file (TOML when it ends in
        /// `.toml`, as in a DAG's `[tasks.params]`).
        #[arg(long, default_value = "{}")]
        params: String,
        /// An input, as `SLOT=PATH[:KIND[:MEDIA_TYPE]]` (repeatable). KIND is dataset, model or
        /// file: dataset for .csv, .parquet and .jsonl files, file otherwise (models need
        /// `:model`). The media type follows from the kind and extension unless given. PATH may
        /// not contain `:`.
        #[arg(long = "input", value_name = "SLOT=PATH[:KIND[:MEDIA_TYPE]]")]
        inputs: Vec<String>,
        /// An output the plugin writes, as `SLOT=PATH[:KIND]` (repeatable); missing folders are
        /// created.
        #[arg(long = "output", value_name = "SLOT=PATH[:KIND]")]
        outputs: Vec<String>,
        /// The scratch folder the plugin may use (default: a temporary one, removed afterwards).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Clear a task of a run on the server, so it runs again (with `--downstream`, everything
    /// after it too); its tries start afresh.
    Clear {
        /// The run id.
        run: String,
        /// The task id.
        task: String,
        /// Also clear every task downstream of it.
        #[arg(long)]
        downstream: bool,
    },
    /// Mark a task of a run on the server as succeeded or failed by hand; its downstream tasks
    /// react as if it had ended so.
    Mark {
        /// The run id.
        run: String,
        /// The task id.
        task: String,
        /// The state to give it.
        #[arg(long, value_enum)]
        state: MarkState,
    },
}

/// The states a task can be marked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MarkState {
    /// As if it had succeeded.
    Success,
    /// As if it had failed.
    Failed,
}

/// Runs a `kiln tasks` command.
pub(crate) fn run(
    command: TasksCommand,
    dags_dir: &Path,
    server: &crate::remote::ServerAddress,
) -> anyhow::Result<()> {
    match command {
        TasksCommand::Clear {
            run,
            task,
            downstream,
        } => {
            let run = crate::remote::check_run_id(&run)?;
            crate::block_on(crate::remote::clear(server, run, &task, downstream)).map(drop)
        }
        TasksCommand::Mark { run, task, state } => {
            let run = crate::remote::check_run_id(&run)?;
            let state = match state {
                MarkState::Success => TaskState::Success,
                MarkState::Failed => TaskState::Failed,
            };
            crate::block_on(crate::remote::mark(server, run, &task, state)).map(drop)
        }
        TasksCommand::Run {
            kind,
            params,
            inputs,
            outputs,
            work_dir,
        } => {
            let request = RunRequest {
                kind,
                params: read_params(&params)?,
                inputs: inputs
                    .iter()
                    .map(|spec| parse_slot(spec, "--input", true))
                    .collect::<anyhow::Result<_>>()?,
                outputs: outputs
                    .iter()
                    .map(|spec| parse_slot(spec, "--output", false))
                    .collect::<anyhow::Result<_>>()?,
                work_dir,
                dags_dir: dags_dir.to_owned(),
            };
            let report = run_once(request)?;
            println!("{report}");
            Ok(())
        }
    }
}

/// One `SLOT=PATH[:KIND[:MEDIA_TYPE]]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotSpec {
    slot: String,
    path: PathBuf,
    kind: ArtifactKind,
    media_type: Option<String>,
}

/// What to run.
struct RunRequest {
    kind: String,
    params: serde_json::Value,
    inputs: Vec<SlotSpec>,
    outputs: Vec<SlotSpec>,
    work_dir: Option<PathBuf>,
    dags_dir: PathBuf,
}

/// Reads `--params`: JSON, or `@FILE` (JSON, or TOML for a `.toml` file).
fn read_params(text: &str) -> anyhow::Result<serde_json::Value> {
    let params: serde_json::Value = match text.strip_prefix('@') {
        Some(file) => {
            let content = std::fs::read_to_string(file)
                .with_context(|| format!("failed to read the params file {file}"))?;
            if file.ends_with(".toml") {
                let table: toml::Table = toml::from_str(&content)
                    .with_context(|| format!("the params file {file} is not valid TOML"))?;
                serde_json::to_value(table)
                    .with_context(|| format!("the params file {file} has no JSON equivalent"))?
            } else {
                serde_json::from_str(&content)
                    .with_context(|| format!("the params file {file} is not valid JSON"))?
            }
        }
        None => serde_json::from_str(text)
            .context("--params is not valid JSON (or `@FILE` to read a file)")?,
    };
    if !params.is_object() {
        bail!("--params must be a JSON object, not {params}");
    }
    Ok(params)
}

/// Parses `SLOT=PATH[:KIND[:MEDIA_TYPE]]` (outputs take no media type).
fn parse_slot(spec: &str, flag: &str, media_type_allowed: bool) -> anyhow::Result<SlotSpec> {
    let form = if media_type_allowed {
        "SLOT=PATH[:KIND[:MEDIA_TYPE]]"
    } else {
        "SLOT=PATH[:KIND]"
    };
    let (slot, rest) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("{flag} `{spec}` is not {form}: it has no `=`"))?;
    let slot_ok = !slot.is_empty()
        && slot.len() <= 100
        && slot
            .chars()
            .all(|char| char.is_ascii_alphanumeric() || char == '_' || char == '-');
    if !slot_ok {
        bail!("{flag} `{spec}`: the slot `{slot}` is not an id ([A-Za-z0-9_-], at most 100)");
    }
    let mut parts = rest.split(':');
    let path = parts.next().unwrap_or_default();
    if path.is_empty() {
        bail!("{flag} `{spec}` is not {form}: the path is empty");
    }
    let kind = parts
        .next()
        .map(|kind| {
            kind.parse::<ArtifactKind>()
                .map_err(|error| anyhow!("{flag} `{spec}`: {error}"))
        })
        .transpose()?;
    let media_type = parts.next().map(str::to_owned);
    if parts.next().is_some() || (media_type.is_some() && !media_type_allowed) {
        bail!("{flag} `{spec}` is not {form}: too many `:` (a path may not contain `:`)");
    }
    if media_type
        .as_deref()
        .is_some_and(|media_type| !media_type.contains('/'))
    {
        bail!("{flag} `{spec}`: the media type must look like `type/subtype`");
    }
    let path = PathBuf::from(path);
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let kind = kind.unwrap_or(match extension.as_str() {
        "csv" | "parquet" | "jsonl" | "ndjson" => ArtifactKind::Dataset,
        _ => ArtifactKind::File,
    });
    Ok(SlotSpec {
        slot: slot.to_owned(),
        path,
        kind,
        media_type,
    })
}

/// The media type a file of this kind and extension has when none is given.
fn default_media_type(kind: ArtifactKind, path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match (kind, extension.as_str()) {
        (ArtifactKind::Model, _) => kiln_tasks::ml::model::MODEL_MEDIA_TYPE,
        (_, "csv") => "text/csv",
        (_, "parquet") => "application/vnd.apache.parquet",
        (_, "jsonl" | "ndjson") => "application/x-ndjson",
        (_, "json") => "application/json",
        (_, "svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The SHA-256 and size of a file, read in chunks.
fn digest_file(path: &Path) -> anyhow::Result<BlobRef> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("failed to read {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok(BlobRef {
        sha256: Sha256Digest::from_bytes(hasher.finalize().into()),
        size,
    })
}

/// Stands a local file in for an artifact version.
fn input_file(spec: &SlotSpec) -> anyhow::Result<InputFile> {
    match std::fs::metadata(&spec.path) {
        Ok(metadata) if metadata.is_file() => {}
        Ok(_) => bail!(
            "input `{}`: {} is not a file",
            spec.slot,
            spec.path.display()
        ),
        Err(error) => bail!(
            "input `{}`: cannot read {}: {error}",
            spec.slot,
            spec.path.display()
        ),
    }
    let blob = digest_file(&spec.path).with_context(|| format!("input `{}`", spec.slot))?;
    let name = spec.path.file_name().map_or_else(
        || spec.slot.clone(),
        |name| name.to_string_lossy().into_owned(),
    );
    Ok(InputFile {
        path: spec.path.clone(),
        version: ArtifactVersionRecord {
            id: 0,
            name,
            kind: spec.kind,
            version: 1,
            blob,
            media_type: spec
                .media_type
                .clone()
                .unwrap_or_else(|| default_media_type(spec.kind, &spec.path).to_owned()),
            producer: None,
            dataset: None,
            metadata: None,
            created_at: 0,
        },
    })
}

/// Plugin log lines, on stderr.
struct StderrLog;

impl LogSink for StderrLog {
    fn line(&self, stream: LogStream, text: &str) {
        let stream = match stream {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::System => "system",
            LogStream::Event => "event",
        };
        eprintln!("[{stream}] {text}");
    }
}

fn unique_slots(specs: &[SlotSpec], flag: &str) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for spec in specs {
        if !seen.insert(spec.slot.as_str()) {
            bail!("{flag} `{}` is given twice", spec.slot);
        }
    }
    Ok(())
}

/// Checks everything, runs the plugin once and answers the JSON report.
fn run_once(request: RunRequest) -> anyhow::Result<serde_json::Value> {
    let registry = kiln_tasks::builtin_registry();
    let plugin = match registry.get(&request.kind) {
        Some(plugin) => plugin.clone(),
        None => match registry.planned_note(&request.kind) {
            Some(note) => bail!("task kind `{}` is not available: {note}", request.kind),
            None => bail!(
                "unknown task kind `{}` (the kinds: {})",
                request.kind,
                registry.kinds().collect::<Vec<_>>().join(", ")
            ),
        },
    };
    plugin
        .check_params(&request.params)
        .map_err(|error| anyhow!("invalid params for `{}`: {error}", request.kind))?;
    unique_slots(&request.inputs, "--input")?;
    unique_slots(&request.outputs, "--output")?;
    let mut inputs = BTreeMap::new();
    for spec in &request.inputs {
        inputs.insert(spec.slot.clone(), input_file(spec)?);
    }
    let mut slots = BTreeMap::new();
    for spec in &request.outputs {
        if let Some(parent) = spec
            .path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!(
                    "output `{}`: failed to create {}",
                    spec.slot,
                    parent.display()
                )
            })?;
        }
        slots.insert(
            spec.slot.clone(),
            OutputSlot {
                path: spec.path.clone(),
                kind: spec.kind,
                media_type: spec.media_type.clone(),
            },
        );
    }
    let scratch;
    let work_dir = match &request.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create the work dir {}", dir.display()))?;
            dir.clone()
        }
        None => {
            scratch = tempfile::Builder::new()
                .prefix("kiln-task-")
                .tempdir()
                .context("failed to create a scratch folder")?;
            scratch.path().to_owned()
        }
    };
    let cancel = CancellationToken::new();
    let ctx = TaskContext::new(
        "local",
        0,
        request.kind.clone(),
        1,
        work_dir,
        Arc::new(StderrLog),
        cancel.clone(),
    )
    .with_inputs(inputs)
    .with_outputs(slots.clone())
    .with_dags_dir(Some(request.dags_dir.clone()));

    // As the worker does: a multi-threaded runtime, the plugin in a task of its own (so a panic
    // is an error, not a crash); the plugins keep polars off the runtime's threads themselves.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let params = request.params.clone();
    let (outcome, seconds) = runtime.block_on(async move {
        let started = Instant::now();
        let mut handle = tokio::spawn(async move { plugin.run(&ctx, params).await });
        let joined = tokio::select! {
            joined = &mut handle => joined,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: cancelling the task");
                cancel.cancel();
                handle.await
            }
        };
        (joined, started.elapsed().as_secs_f64())
    });
    let output = match outcome {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => {
            let nature = if error.is_retryable() {
                "retryable"
            } else {
                "permanent"
            };
            bail!("task `{}` failed ({nature}): {error}", request.kind);
        }
        Err(join_error) if join_error.is_panic() => {
            let message = kiln_engine::plugin::panic_message(&*join_error.into_panic());
            bail!("task `{}` panicked: {message}", request.kind);
        }
        Err(join_error) => bail!("task `{}` was aborted: {join_error}", request.kind),
    };
    let outputs = describe_outputs(&slots, output.outputs)?;
    Ok(serde_json::json!({
        "kind": request.kind,
        "seconds": seconds,
        "summary": output.summary,
        "outputs": outputs,
    }))
}

/// Each declared output: the file the plugin named, or the one at its slot's path, with its
/// size, digest and, for datasets, shape. As with a worker, a declared output left unwritten or
/// an undeclared one is an error.
fn describe_outputs(
    slots: &BTreeMap<String, OutputSlot>,
    mut reported: BTreeMap<String, OutputFile>,
) -> anyhow::Result<serde_json::Value> {
    if let Some(unknown) = reported.keys().find(|name| !slots.contains_key(*name)) {
        bail!("the plugin wrote output `{unknown}`, which no --output declares");
    }
    let mut described = serde_json::Map::new();
    for (name, slot) in slots {
        let file = reported.remove(name);
        let path = file.as_ref().map_or(&slot.path, |file| &file.path);
        if !path.is_file() {
            bail!(
                "the task did not write its declared output `{name}` (expected a file at {})",
                path.display()
            );
        }
        let blob = digest_file(path).with_context(|| format!("output `{name}`"))?;
        let media_type = file
            .as_ref()
            .and_then(|file| file.media_type.clone())
            .or_else(|| slot.media_type.clone())
            .unwrap_or_else(|| default_media_type(slot.kind, path).to_owned());
        let mut entry = serde_json::json!({
            "path": path,
            "kind": slot.kind.as_str(),
            "media_type": media_type,
            "bytes": blob.size,
            "sha256": blob.sha256.to_hex(),
        });
        if let Some(dataset) = file.as_ref().and_then(|file| file.dataset.as_ref()) {
            entry["rows"] = serde_json::json!(dataset.rows);
            entry["columns"] = serde_json::json!(
                dataset
                    .columns
                    .iter()
                    .map(|column| serde_json::json!({ "name": column.name, "dtype": column.dtype }))
                    .collect::<Vec<_>>()
            );
        }
        described.insert(name.clone(), entry);
    }
    Ok(serde_json::Value::Object(described))
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn check(spec: &str, input: bool, expected: Expect) {
        let flag = if input { "--input" } else { "--output" };
        let actual = match parse_slot(spec, flag, input) {
            Ok(slot) => format!(
                "{} {} {} {:?}",
                slot.slot,
                slot.path.display(),
                slot.kind.as_str(),
                slot.media_type
            ),
            Err(error) => format!("error: {error:#}"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn slot_specs() {
        check(
            "raw=data/wine.csv",
            true,
            expect!["raw data/wine.csv dataset None"],
        );
        check(
            "logreg=out/model.json:model",
            true,
            expect!["logreg out/model.json model None"],
        );
        check(
            "raw=wine.txt:dataset:text/csv",
            true,
            expect![[r#"raw wine.txt dataset Some("text/csv")"#]],
        );
        check("scaler=s.json", false, expect!["scaler s.json file None"]);
        check(
            "raw",
            true,
            expect!["error: --input `raw` is not SLOT=PATH[:KIND[:MEDIA_TYPE]]: it has no `=`"],
        );
        check(
            "=x.csv",
            true,
            expect![
                "error: --input `=x.csv`: the slot `` is not an id ([A-Za-z0-9_-], at most 100)"
            ],
        );
        check(
            "raw=",
            true,
            expect![
                "error: --input `raw=` is not SLOT=PATH[:KIND[:MEDIA_TYPE]]: the path is empty"
            ],
        );
        check(
            "model=m.json:modle",
            false,
            expect![
                "error: --output `model=m.json:modle`: unknown artifact kind `modle` (dataset, model or file)"
            ],
        );
        check(
            "model=m.json:model:application/json",
            false,
            expect![
                "error: --output `model=m.json:model:application/json` is not SLOT=PATH[:KIND]: too many `:` (a path may not contain `:`)"
            ],
        );
        check(
            "raw=a.csv:dataset:csv",
            true,
            expect![
                "error: --input `raw=a.csv:dataset:csv`: the media type must look like `type/subtype`"
            ],
        );
    }
}
