//! Turns DAG files into validated [`Dag`]s, collecting every problem of a file at once.
//!
//! Each top-level key and each task is deserialized on its own, from TOML's spanned tree, so one
//! bad task does not hide the problems of the next, and every problem carries a line and column.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::error::{DagFileError, LineIndex, Problem, Severity};
use super::graph::{dependency_cycles, topological_order};
use super::spec::{DefaultsSpec, InputSpec, OutputsSpec, ParamSpecSpec, TaskSpec, toml_to_json};
use super::template::{self, Bindings, Reference};
use super::{
    ArtifactKind, DEFAULT_MAX_LOST_ATTEMPTS, Dag, InputRef, KindCheck, OutputSpec, ParamSpec,
    ParamType, Task, TaskKinds, TriggerRule,
};
use crate::duration;
use crate::schedule::{Schedule, parse_timezone};

/// DAG files larger than this are refused before parsing; 100,000 tasks of a few lines each fit
/// in about 10 MiB.
pub const MAX_DAG_FILE_BYTES: usize = 32 * 1024 * 1024;

/// The most tasks one DAG may have. Every run creates a row per task, and the console draws
/// them all, so past this a DAG belongs split into several DAGs (or, once it exists, mapped).
pub const MAX_DAG_TASKS: usize = 100_000;

/// At most this many problems are kept per file: a file that is wrong on every one of its
/// 100,000 tasks gets the first ones and a count, not a report nobody can read.
const MAX_PROBLEMS: usize = 200;

/// How deeply arrays and tables may nest; real DAG files need three or four levels.
const MAX_NESTING: usize = 64;

const TOP_LEVEL_KEYS: [&str; 14] = [
    "id",
    "description",
    "schedule",
    "timezone",
    "start_date",
    "end_date",
    "catchup",
    "max_catchup_runs",
    "max_active_runs",
    "tags",
    "queue",
    "params",
    "defaults",
    "tasks",
];

const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(30);
const DEFAULT_MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_ACTIVE_RUNS: u32 = 16;
const DEFAULT_MAX_CATCHUP_RUNS: u32 = 100;
const MAX_ID_LEN: usize = 100;

/// A DAG that loaded, with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedDag {
    /// The validated DAG.
    pub dag: Dag,
    /// The file it was read from.
    pub path: PathBuf,
    /// The file's text, kept so the console can show the exact version that ran.
    pub source: String,
    /// The file's SHA-256, hex; a change of hash is a new DAG version.
    pub source_hash: String,
    /// Problems that do not stop the DAG from loading.
    pub warnings: Vec<Problem>,
}

/// The result of loading a folder: what loaded, and what did not (one broken file never stops the
/// others).
#[derive(Debug, Default)]
pub struct DagSet {
    /// DAGs that loaded, sorted by id.
    pub dags: Vec<LoadedDag>,
    /// Files that did not, sorted by path.
    pub errors: Vec<DagFileError>,
}

impl DagSet {
    /// The loaded DAG with this id.
    pub fn get(&self, id: &str) -> Option<&LoadedDag> {
        self.dags.iter().find(|loaded| loaded.dag.id == id)
    }
}

/// Loads every `*.toml` file under `dir` (recursively, skipping hidden entries).
///
/// Only a folder that cannot be read is an error; problems inside files are reported per file in
/// [`DagSet::errors`]. Two files declaring the same DAG id are both refused.
pub fn load_dir(dir: &Path, registry: &dyn TaskKinds) -> std::io::Result<DagSet> {
    let mut files = Vec::new();
    collect_toml_files(dir, &mut files)?;
    files.sort();

    let mut set = DagSet::default();
    for path in files {
        let fail = |message: String| DagFileError {
            path: path.clone(),
            problems: vec![Problem::error(None, message)],
        };
        let loaded = match read_dag_file(&path) {
            // A panic would be a bug in the checks, but it is still this file's problem: it
            // must not stop the other files, nor the process that reads them.
            Ok(bytes) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                parse_dag(&path, &bytes, registry)
            }))
            .unwrap_or_else(|_| {
                Err(fail(
                    "kiln could not check this file (a bug: its checks panicked; please report it)"
                        .to_owned(),
                ))
            }),
            Err(message) => Err(fail(message)),
        };
        match loaded {
            Ok(loaded) => set.dags.push(loaded),
            Err(error) => set.errors.push(error),
        }
    }

    let mut by_id: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for loaded in &set.dags {
        by_id
            .entry(loaded.dag.id.clone())
            .or_default()
            .push(loaded.path.clone());
    }
    let duplicated: BTreeMap<String, Vec<PathBuf>> = by_id
        .into_iter()
        .filter(|(_, paths)| paths.len() > 1)
        .collect();
    if !duplicated.is_empty() {
        let (kept, refused): (Vec<LoadedDag>, Vec<LoadedDag>) = set
            .dags
            .into_iter()
            .partition(|loaded| !duplicated.contains_key(&loaded.dag.id));
        set.dags = kept;
        for loaded in refused {
            let others: Vec<String> = duplicated[&loaded.dag.id]
                .iter()
                .filter(|path| **path != loaded.path)
                .map(|path| path.display().to_string())
                .collect();
            set.errors.push(DagFileError {
                path: loaded.path,
                problems: vec![Problem::error(
                    Some("`id`".to_owned()),
                    format!(
                        "DAG id `{}` is also declared in {}",
                        loaded.dag.id,
                        others.join(", ")
                    ),
                )],
            });
        }
    }
    set.dags.sort_by(|a, b| a.dag.id.cmp(&b.dag.id));
    set.errors.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(set)
}

/// Reads a DAG file, refusing what is not a regular file (a FIFO would block the read for ever,
/// a link to `/dev/zero` would fill memory) and reading no more than one byte past the limit.
fn read_dag_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let cannot = |error: std::io::Error| format!("cannot read the file: {error}");
    let metadata = std::fs::metadata(path).map_err(cannot)?;
    if !metadata.is_file() {
        return Err("not a regular file (a DAG file must be plain text)".to_owned());
    }
    if metadata.len() > MAX_DAG_FILE_BYTES as u64 {
        return Err(format!(
            "file is {} bytes, more than the {MAX_DAG_FILE_BYTES} bytes a DAG file may have; split it into several DAGs",
            metadata.len()
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(MAX_DAG_FILE_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(cannot)?;
    Ok(bytes)
}

/// Every `*.toml` file under `dir`, walked with a stack of folders still to read (a recursive
/// walk would let a deep tree of folders decide how deep the stack goes). Links are not
/// followed into folders, so a link cycle cannot make the walk endless.
fn collect_toml_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type()?.is_dir() {
                folders.push(path);
            } else if path
                .extension()
                .is_some_and(|extension| extension == "toml")
            {
                files.push(path);
            }
        }
    }
    Ok(())
}

/// Parses and validates one DAG file's bytes; `path` is used only in messages and the result.
pub fn parse_dag(
    path: &Path,
    bytes: &[u8],
    registry: &dyn TaskKinds,
) -> Result<LoadedDag, DagFileError> {
    let fail = |message: String| DagFileError {
        path: path.to_owned(),
        problems: vec![Problem::error(None, message)],
    };
    if bytes.len() > MAX_DAG_FILE_BYTES {
        return Err(fail(format!(
            "file is {} bytes, more than the {} bytes a DAG file may have; split it into several DAGs",
            bytes.len(),
            MAX_DAG_FILE_BYTES
        )));
    }
    if let Some(offset) = bytes.iter().position(|&byte| byte == 0) {
        return Err(fail(format!(
            "not a text file: it contains a NUL byte at offset {offset}"
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|error| {
        fail(format!(
            "not UTF-8 text: invalid byte sequence at offset {}",
            error.valid_up_to()
        ))
    })?;
    if text.trim().is_empty() {
        return Err(fail(
            "empty file: a DAG needs at least an `id` and one `[[tasks]]` entry".to_owned(),
        ));
    }
    if let Some(offset) = nesting_overflow(text) {
        return Err(DagFileError {
            path: path.to_owned(),
            problems: vec![
                Problem::error(
                    None,
                    format!("arrays or tables nest more than {MAX_NESTING} levels deep"),
                )
                .at(text, Some(offset)),
            ],
        });
    }

    let mut checker = Checker {
        text,
        lines: LineIndex::new(text),
        problems: Vec::new(),
        errors: 0,
        dropped: 0,
        stand_ins: stand_in_bindings(&BTreeMap::new()),
    };
    let dag = checker.dag(registry);
    let (dropped, error_count) = (checker.dropped, checker.errors);
    let (errors, warnings): (Vec<Problem>, Vec<Problem>) = checker
        .problems
        .into_iter()
        .partition(|problem| problem.severity == Severity::Error);
    match dag {
        // Counted, not looked for among the kept problems: an error past the cap still counts.
        Some(dag) if error_count == 0 => Ok(LoadedDag {
            dag,
            path: path.to_owned(),
            source: text.to_owned(),
            source_hash: hex::encode(Sha256::digest(bytes)),
            warnings,
        }),
        _ => {
            let mut problems = errors;
            problems.extend(warnings);
            problems
                .sort_by_key(|problem| (problem.line.unwrap_or(0), problem.column.unwrap_or(0)));
            if problems.is_empty() {
                problems.push(Problem::error(None, "the DAG could not be built"));
            }
            if dropped > 0 {
                problems.push(Problem::error(
                    None,
                    format!(
                        "… and {dropped} more problems (only the first {MAX_PROBLEMS} are listed)"
                    ),
                ));
            }
            Err(DagFileError {
                path: path.to_owned(),
                problems,
            })
        }
    }
}

/// The offset of the first bracket or brace nested deeper than [`MAX_NESTING`], outside strings
/// and comments. The TOML parser recurses per level, so this guard keeps hostile files from
/// exhausting the stack.
fn nesting_overflow(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'#' => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                let triple = bytes[index..].starts_with(&[quote; 3]);
                index += if triple { 3 } else { 1 };
                while index < bytes.len() {
                    if quote == b'"' && bytes[index] == b'\\' {
                        index += 2;
                        continue;
                    }
                    if triple && bytes[index..].starts_with(&[quote; 3]) {
                        index += 2;
                        break;
                    }
                    if !triple && (bytes[index] == quote || bytes[index] == b'\n') {
                        break;
                    }
                    index += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(index);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        index += 1;
    }
    None
}

/// Accumulates problems while walking one file.
struct Checker<'t> {
    text: &'t str,
    lines: LineIndex,
    /// The first [`MAX_PROBLEMS`] problems.
    problems: Vec<Problem>,
    /// Every error, kept or not: whether a task added one is asked once per task.
    errors: usize,
    /// Problems past [`MAX_PROBLEMS`], counted only.
    dropped: usize,
    /// What `${…}` references in task params stand for while the file loads: one value per
    /// declared param (so a reference must name one of its keys), computed once per DAG.
    stand_ins: Bindings,
}

/// What references resolve to when a DAG loads: each param's default, or a value of its type
/// (so the plugin's check sees the shape an attempt will), and built-ins of their types.
fn stand_in_bindings(params: &BTreeMap<String, ParamSpec>) -> Bindings {
    let params = params
        .iter()
        .map(|(name, spec)| {
            let value = spec
                .default
                .clone()
                .unwrap_or_else(|| match spec.param_type {
                    ParamType::String => serde_json::Value::from(""),
                    ParamType::Integer => serde_json::Value::from(0),
                    ParamType::Number => serde_json::Value::from(0.0),
                    ParamType::Boolean => serde_json::Value::from(false),
                    ParamType::Array => serde_json::Value::Array(Vec::new()),
                    ParamType::Object => serde_json::Value::Object(serde_json::Map::new()),
                });
            (name.clone(), value)
        })
        .collect();
    Bindings {
        params,
        run_id: 1,
        logical_date: "1970-01-01T00:00:00Z".to_owned(),
        dag_id: String::new(),
        task_id: String::new(),
        try_number: 1,
    }
}

/// `[defaults]` with its durations parsed.
#[derive(Default)]
struct Defaults {
    spec: DefaultsSpec,
    retry_delay: Option<Duration>,
    max_retry_delay: Option<Duration>,
    timeout: Option<Duration>,
}

/// A task that deserialized, with the offsets of its keys for locating later problems.
struct ParsedTask {
    spec: TaskSpec,
    start: usize,
    /// Where each of the task's keys starts. A task has a dozen keys at most, so a scan of a
    /// short vector beats hashing, and 100,000 tasks make 100,000 of these.
    key_offsets: Vec<(String, usize)>,
}

impl ParsedTask {
    fn offset(&self, key: &str) -> usize {
        self.key_offsets
            .iter()
            .find(|(name, _)| name == key)
            .map_or(self.start, |&(_, offset)| offset)
    }

    fn item(&self) -> Option<String> {
        Some(format!("task `{}`", self.spec.id))
    }
}

impl<'t> Checker<'t> {
    fn error(&mut self, item: Option<String>, offset: Option<usize>, message: impl Into<String>) {
        self.errors += 1;
        self.keep(Problem::error(item, message), offset);
    }

    fn warning(&mut self, item: Option<String>, offset: Option<usize>, message: impl Into<String>) {
        self.keep(Problem::warning(item, message), offset);
    }

    fn keep(&mut self, problem: Problem, offset: Option<usize>) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems
                .push(problem.at_indexed(&self.lines, self.text, offset));
        } else {
            self.dropped += 1;
        }
    }

    /// Deserializes a spanned value, reporting a failure at the most precise span available.
    fn take<T: DeserializeOwned>(
        &mut self,
        item: Option<String>,
        value: Spanned<DeValue<'t>>,
    ) -> Option<T> {
        let fallback = value.span().start;
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                let offset = error.span().map_or(fallback, |span| span.start);
                self.error(item, Some(offset), error.message().trim_end().to_owned());
                None
            }
        }
    }

    fn dag(&mut self, registry: &dyn TaskKinds) -> Option<Dag> {
        let root = match DeTable::parse(self.text) {
            Ok(root) => root,
            Err(error) => {
                let offset = error.span().map(|span: Range<usize>| span.start);
                self.error(
                    None,
                    offset,
                    format!("invalid TOML: {}", error.message().trim_end()),
                );
                return None;
            }
        };

        let mut fields: HashMap<String, (usize, Spanned<DeValue<'t>>)> = HashMap::new();
        for (key, value) in root.into_inner() {
            let name = key.get_ref().to_string();
            if TOP_LEVEL_KEYS.contains(&name.as_str()) {
                fields.insert(name, (key.span().start, value));
            } else {
                self.error(
                    Some(format!("`{name}`")),
                    Some(key.span().start),
                    format!("unknown key; expected one of {}", TOP_LEVEL_KEYS.join(", ")),
                );
            }
        }

        let id_offset;
        let id = match fields.remove("id") {
            Some((offset, value)) => {
                id_offset = offset;
                self.take::<String>(Some("`id`".to_owned()), value)
            }
            None => {
                id_offset = 0;
                self.error(
                    None,
                    Some(0),
                    "missing required key `id` (the DAG's unique name)",
                );
                None
            }
        };
        if let Some(id) = &id
            && let Err(message) = check_id(id)
        {
            self.error(
                Some("`id`".to_owned()),
                Some(id_offset),
                format!("DAG id {message}"),
            );
        }

        let description = fields
            .remove("description")
            .and_then(|(_, value)| self.take::<String>(Some("`description`".to_owned()), value))
            .unwrap_or_default();

        let timezone = match fields.remove("timezone") {
            Some((offset, value)) => self
                .take::<String>(Some("`timezone`".to_owned()), value)
                .and_then(|name| {
                    parse_timezone(&name)
                        .map_err(|message| {
                            self.error(Some("`timezone`".to_owned()), Some(offset), message)
                        })
                        .ok()
                }),
            None => Some(Tz::UTC),
        };
        let schedule = fields.remove("schedule").and_then(|(_, value)| {
            let start = value.span().start;
            let text = self.take::<String>(Some("`schedule`".to_owned()), value)?;
            Schedule::parse(&text)
                .map_err(|message| self.error(Some("`schedule`".to_owned()), Some(start), message))
                .ok()
        });
        let start_date = fields
            .remove("start_date")
            .and_then(|value| self.date("start_date", value, timezone));
        let end_date = fields
            .remove("end_date")
            .and_then(|value| self.date("end_date", value, timezone));
        if let (Some(start), Some(end)) = (start_date, end_date)
            && end < start
        {
            self.error(
                Some("`end_date`".to_owned()),
                None,
                "end_date is before start_date",
            );
        }
        let catchup = fields
            .remove("catchup")
            .and_then(|(_, value)| self.take::<bool>(Some("`catchup`".to_owned()), value))
            .unwrap_or(false);
        let max_catchup_runs = self
            .positive(fields.remove("max_catchup_runs"), "max_catchup_runs")
            .unwrap_or(DEFAULT_MAX_CATCHUP_RUNS);
        let max_active_runs = self
            .positive(fields.remove("max_active_runs"), "max_active_runs")
            .unwrap_or(DEFAULT_MAX_ACTIVE_RUNS);
        let tags = fields
            .remove("tags")
            .and_then(|(_, value)| self.take::<Vec<String>>(Some("`tags`".to_owned()), value))
            .unwrap_or_default();
        let dag_queue = fields.remove("queue").and_then(|(offset, value)| {
            let queue = self.take::<String>(Some("`queue`".to_owned()), value)?;
            check_id(&queue)
                .map_err(|message| {
                    self.error(
                        Some("`queue`".to_owned()),
                        Some(offset),
                        format!("queue {message}"),
                    )
                })
                .ok()?;
            Some(queue)
        });
        let params = match fields.remove("params") {
            Some(value) => self.params(value, schedule.is_some()),
            None => BTreeMap::new(),
        };
        self.stand_ins = stand_in_bindings(&params);
        let defaults = match fields.remove("defaults") {
            Some((offset, value)) => {
                let spec = self
                    .take::<DefaultsSpec>(Some("`defaults`".to_owned()), value)
                    .unwrap_or_default();
                self.defaults(offset, spec)
            }
            None => Defaults::default(),
        };
        let tasks = match fields.remove("tasks") {
            Some((offset, value)) => {
                self.tasks(offset, value, registry, &defaults, dag_queue.as_deref())
            }
            None => {
                self.error(
                    None,
                    Some(self.text.len()),
                    "no tasks: add at least one `[[tasks]]` entry",
                );
                Vec::new()
            }
        };

        Some(Dag {
            id: id?,
            description,
            schedule,
            timezone: timezone?,
            start_date,
            end_date,
            catchup,
            max_catchup_runs,
            max_active_runs,
            tags,
            params,
            tasks,
        })
    }

    /// Parses the durations of `[defaults]` once, reporting problems at the table.
    fn defaults(&mut self, offset: usize, spec: DefaultsSpec) -> Defaults {
        let item = Some("`defaults`".to_owned());
        let parse = |checker: &mut Self, key: &str, text: &Option<String>| -> Option<Duration> {
            let text = text.as_ref()?;
            duration::parse(text)
                .map_err(|message| {
                    checker.error(item.clone(), Some(offset), format!("`{key}`: {message}"))
                })
                .ok()
        };
        let retry_delay = parse(self, "retry_delay", &spec.retry_delay);
        let max_retry_delay = parse(self, "max_retry_delay", &spec.max_retry_delay);
        let timeout = parse(self, "timeout", &spec.timeout);
        if timeout == Some(Duration::ZERO) {
            self.error(
                Some("`defaults`".to_owned()),
                Some(offset),
                "timeout must be longer than zero",
            );
        }
        if let Some(queue) = &spec.queue
            && let Err(message) = check_id(queue)
        {
            self.error(
                Some("`defaults`".to_owned()),
                Some(offset),
                format!("queue {message}"),
            );
        }
        Defaults {
            spec,
            retry_delay,
            max_retry_delay,
            timeout,
        }
    }

    fn positive(
        &mut self,
        value: Option<(usize, Spanned<DeValue<'t>>)>,
        name: &str,
    ) -> Option<u32> {
        let (offset, value) = value?;
        let number = self.take::<u32>(Some(format!("`{name}`")), value)?;
        if number == 0 {
            self.error(
                Some(format!("`{name}`")),
                Some(offset),
                "must be at least 1",
            );
            return None;
        }
        Some(number)
    }

    fn date(
        &mut self,
        name: &str,
        (offset, value): (usize, Spanned<DeValue<'t>>),
        timezone: Option<Tz>,
    ) -> Option<DateTime<Utc>> {
        let item = Some(format!("`{name}`"));
        let text = match self.take::<toml::Value>(item.clone(), value)? {
            toml::Value::String(text) => text,
            toml::Value::Datetime(datetime) => datetime.to_string(),
            other => {
                self.error(
                    item,
                    Some(offset),
                    format!(
                        "expected a date like \"2026-01-01\", got a {}",
                        other.type_str()
                    ),
                );
                return None;
            }
        };
        let timezone = timezone?;
        parse_date_in(&text, timezone)
            .map_err(|message| self.error(item, Some(offset), message))
            .ok()
    }

    /// A scheduled DAG's runs get no params from anyone, so every param needs a default.
    fn params(
        &mut self,
        (offset, value): (usize, Spanned<DeValue<'t>>),
        scheduled: bool,
    ) -> BTreeMap<String, ParamSpec> {
        let mut params = BTreeMap::new();
        let DeValue::Table(table) = value.into_inner() else {
            self.error(
                Some("`params`".to_owned()),
                Some(offset),
                "expected a table of named params",
            );
            return params;
        };
        for (key, value) in table {
            let name = key.get_ref().to_string();
            let item = Some(format!("param `{name}`"));
            let start = key.span().start;
            if let Err(message) = check_id(&name) {
                self.error(item.clone(), Some(start), format!("param name {message}"));
            }
            let Some(spec) = self.take::<ParamSpecSpec>(item.clone(), value) else {
                continue;
            };
            let default = spec.default.map(toml_to_json);
            let choices: Vec<serde_json::Value> =
                spec.choices.into_iter().map(toml_to_json).collect();
            let param = ParamSpec {
                param_type: spec.param_type,
                default: None,
                description: spec.description,
                choices,
            };
            for choice in &param.choices {
                if !param.param_type.matches(choice) {
                    self.error(
                        item.clone(),
                        Some(start),
                        format!(
                            "choice {choice} is not of type {}",
                            param.param_type.as_str()
                        ),
                    );
                }
            }
            if let Some(default) = &default
                && let Err(message) = param.check(default)
            {
                self.error(item.clone(), Some(start), format!("default: {message}"));
            }
            if scheduled && default.is_none() {
                self.error(
                    item.clone(),
                    Some(start),
                    "needs a `default`: the DAG has a `schedule`, and scheduled runs are given no params",
                );
            }
            params.insert(name, ParamSpec { default, ..param });
        }
        params
    }

    fn tasks(
        &mut self,
        offset: usize,
        value: Spanned<DeValue<'t>>,
        registry: &dyn TaskKinds,
        defaults: &Defaults,
        dag_queue: Option<&str>,
    ) -> Vec<Task> {
        let DeValue::Array(items) = value.into_inner() else {
            self.error(
                Some("`tasks`".to_owned()),
                Some(offset),
                "expected an array of tables: write each task as `[[tasks]]`",
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.error(
                Some("`tasks`".to_owned()),
                Some(offset),
                "no tasks: add at least one `[[tasks]]` entry",
            );
        }
        if items.len() > MAX_DAG_TASKS {
            self.error(
                Some("`tasks`".to_owned()),
                Some(offset),
                format!(
                    "{} tasks, more than the {MAX_DAG_TASKS} a DAG may have; split it into several DAGs",
                    items.len()
                ),
            );
            return Vec::new();
        }

        let mut parsed: Vec<ParsedTask> = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let start = item.span().start;
            let mut key_offsets = Vec::new();
            let mut label = format!("tasks[{index}]");
            if let DeValue::Table(table) = item.get_ref() {
                key_offsets.reserve(table.len());
                for (key, value) in table.iter() {
                    key_offsets.push((key.get_ref().to_string(), key.span().start));
                    if key.get_ref() == "id"
                        && let Some(id) = value.get_ref().as_str()
                    {
                        label = format!("task `{id}`");
                    }
                }
            }
            if let Some(spec) = self.take::<TaskSpec>(Some(label), item) {
                parsed.push(ParsedTask {
                    spec,
                    start,
                    key_offsets,
                });
            }
        }

        // Ids: well formed and unique.
        let mut first_seen: HashMap<String, usize> = HashMap::new();
        let mut valid = vec![true; parsed.len()];
        for (index, task) in parsed.iter().enumerate() {
            if let Err(message) = check_id(&task.spec.id) {
                self.error(
                    task.item(),
                    Some(task.offset("id")),
                    format!("task id {message}"),
                );
                valid[index] = false;
            } else if let Some(&first) = first_seen.get(&task.spec.id) {
                let (line, _) = self.lines.locate(self.text, parsed[first].start);
                self.error(
                    task.item(),
                    Some(task.offset("id")),
                    format!("duplicate task id (first defined at line {line})"),
                );
                valid[index] = false;
            } else {
                first_seen.insert(task.spec.id.clone(), index);
            }
        }
        let outputs_of: HashMap<&str, Vec<String>> = parsed
            .iter()
            .map(|task| (task.spec.id.as_str(), output_names(&task.spec.outputs)))
            .collect();

        let mut tasks = Vec::with_capacity(parsed.len());
        for (index, task) in parsed.iter().enumerate() {
            if let Some(built) = self.task(task, registry, defaults, dag_queue, &outputs_of)
                && valid[index]
            {
                tasks.push(built);
            }
        }

        let edges: Vec<(String, Vec<String>)> = tasks
            .iter()
            .map(|task| (task.id.clone(), task.depends_on.clone()))
            .collect();
        // The order proves there is no cycle; only without one are the cycles looked for.
        if let Some(order) = topological_order(&edges) {
            let mut slots: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
            return order
                .into_iter()
                .filter_map(|index| slots[index].take())
                .collect();
        }
        for cycle in dependency_cycles(&edges) {
            let offset = first_seen
                .get(&cycle[0])
                .map(|&index| parsed[index].offset("depends_on"));
            self.error(
                Some(format!("task `{}`", cycle[0])),
                offset,
                format!("dependency cycle: {}", cycle.join(" -> ")),
            );
        }
        Vec::new()
    }

    fn task(
        &mut self,
        task: &ParsedTask,
        registry: &dyn TaskKinds,
        defaults: &Defaults,
        dag_queue: Option<&str>,
        outputs_of: &HashMap<&str, Vec<String>>,
    ) -> Option<Task> {
        let spec = &task.spec;
        let item = task.item();
        let problems_before = self.error_count();

        let params = spec
            .params
            .clone()
            .map_or_else(|| serde_json::json!({}), toml_to_json);
        let params_at = if spec.params.is_some() {
            task.offset("params")
        } else {
            task.start
        };
        // References must name declared params; the plugin's type is then checked with each
        // reference replaced by a value of its param's type, as an attempt will see it.
        let checked = match template::references(&params) {
            Err(error) => {
                self.error(
                    item.clone(),
                    Some(params_at),
                    format!("params for `{}`: {error}", spec.kind),
                );
                None
            }
            Ok(references) => {
                let unknown: Vec<&str> = references
                    .iter()
                    .filter_map(|reference| match reference {
                        Reference::Param(name) if !self.stand_ins.params.contains_key(name) => {
                            Some(name.as_str())
                        }
                        _ => None,
                    })
                    .collect();
                for name in &unknown {
                    let declared: Vec<&str> =
                        self.stand_ins.params.keys().map(String::as_str).collect();
                    let declared = if declared.is_empty() {
                        "it declares none".to_owned()
                    } else {
                        format!("its params: {}", declared.join(", "))
                    };
                    self.error(
                        item.clone(),
                        Some(params_at),
                        format!("params for `{}`: `${{params.{name}}}` names no param of this DAG ({declared})", spec.kind),
                    );
                }
                if !unknown.is_empty() {
                    None
                } else if references.is_empty() {
                    // Most tasks: checked as they are, without a copy.
                    Some(Cow::Borrowed(&params))
                } else {
                    template::substitute(&params, &self.stand_ins)
                        .ok()
                        .map(Cow::Owned)
                }
            }
        };
        let check = match &checked {
            Some(checked) => registry.check_params(&spec.kind, checked),
            None => KindCheck::Fits,
        };
        match check {
            KindCheck::Fits => {}
            KindCheck::BadParams(error) => {
                self.error(item.clone(), Some(params_at), format!("params for `{}`: {error}", spec.kind));
            }
            KindCheck::Planned(note) => self.warning(
                item.clone(),
                Some(task.offset("kind")),
                format!("plugin kind `{}` is not available in this build yet ({note}); runs fail at this task", spec.kind),
            ),
            KindCheck::Unknown(known) => self.error(
                item.clone(),
                Some(task.offset("kind")),
                format!("unknown plugin kind `{}`; known kinds: {}", spec.kind, known.join(", ")),
            ),
        }

        let mut depends_on: BTreeSet<String> = BTreeSet::new();
        for upstream in &spec.depends_on {
            if upstream == &spec.id {
                self.error(
                    item.clone(),
                    Some(task.offset("depends_on")),
                    "a task cannot depend on itself",
                );
            } else if !outputs_of.contains_key(upstream.as_str()) {
                self.error(
                    item.clone(),
                    Some(task.offset("depends_on")),
                    format!("depends on unknown task `{upstream}`"),
                );
            } else {
                depends_on.insert(upstream.clone());
            }
        }

        let mut inputs = BTreeMap::new();
        for (name, input) in &spec.inputs {
            match self.input(task, name, input, outputs_of) {
                Some(InputRef::Task {
                    task: upstream,
                    output,
                }) => {
                    depends_on.insert(upstream.clone());
                    inputs.insert(
                        name.clone(),
                        InputRef::Task {
                            task: upstream,
                            output,
                        },
                    );
                }
                Some(other) => {
                    inputs.insert(name.clone(), other);
                }
                None => {}
            }
        }

        let mut outputs = Vec::new();
        let mut output_seen = BTreeSet::new();
        let output_entries: Vec<OutputSpec> = match &spec.outputs {
            OutputsSpec::Names(names) => names
                .iter()
                .map(|name| OutputSpec {
                    name: name.clone(),
                    kind: ArtifactKind::File,
                    publish_as: None,
                    media_type: None,
                    promote: None,
                })
                .collect(),
            OutputsSpec::Table(table) => table
                .iter()
                .map(|(name, settings)| OutputSpec {
                    name: name.clone(),
                    kind: settings.kind.unwrap_or(ArtifactKind::File),
                    publish_as: settings.publish_as.clone(),
                    media_type: settings.media_type.clone(),
                    promote: settings.promote,
                })
                .collect(),
        };
        for output in output_entries {
            let name = &output.name;
            let problem = if let Err(message) = check_id(name) {
                Some(format!("output name {message}"))
            } else if let Some(Err(message)) = output.publish_as.as_deref().map(check_artifact_name)
            {
                Some(format!("output `{name}`: `publish_as` name {message}"))
            } else if output.promote.is_some()
                && (output.kind != ArtifactKind::Model || output.publish_as.is_none())
            {
                Some(format!(
                    "output `{name}`: `promote` needs `kind = \"model\"` and a registry name in `publish_as`"
                ))
            } else if !output_seen.insert(name.clone()) {
                Some(format!("output `{name}` is declared twice"))
            } else {
                None
            };
            match problem {
                Some(problem) => self.error(item.clone(), Some(task.offset("outputs")), problem),
                None => outputs.push(output),
            }
        }

        let retry_delay = self
            .duration(task, "retry_delay", spec.retry_delay.as_ref())
            .map(|own| own.or(defaults.retry_delay));
        let max_retry_delay = self
            .duration(task, "max_retry_delay", spec.max_retry_delay.as_ref())
            .map(|own| own.or(defaults.max_retry_delay));
        let timeout = self
            .duration(task, "timeout", spec.timeout.as_ref())
            .map(|own| own.or(defaults.timeout));
        if timeout == Some(Some(Duration::ZERO)) {
            self.error(
                item.clone(),
                Some(task.offset("timeout")),
                "timeout must be longer than zero",
            );
        }
        let queue = spec
            .queue
            .clone()
            .or_else(|| defaults.spec.queue.clone())
            .or_else(|| dag_queue.map(str::to_owned));
        if let Some(queue) = &queue
            && let Err(message) = check_id(queue)
        {
            self.error(
                item.clone(),
                Some(task.offset("queue")),
                format!("queue {message}"),
            );
        }

        if self.error_count() > problems_before {
            return None;
        }
        Some(Task {
            id: spec.id.clone(),
            kind: spec.kind.clone(),
            description: spec.description.clone(),
            params,
            depends_on: depends_on.into_iter().collect(),
            trigger_rule: spec
                .trigger_rule
                .or(defaults.spec.trigger_rule)
                .unwrap_or(TriggerRule::AllSuccess),
            retries: spec.retries.or(defaults.spec.retries).unwrap_or(0),
            retry_delay: retry_delay.flatten().unwrap_or(DEFAULT_RETRY_DELAY),
            retry_backoff: spec
                .retry_backoff
                .or(defaults.spec.retry_backoff)
                .unwrap_or(true),
            max_retry_delay: max_retry_delay.flatten().unwrap_or(DEFAULT_MAX_RETRY_DELAY),
            max_lost_attempts: spec
                .max_lost_attempts
                .or(defaults.spec.max_lost_attempts)
                .unwrap_or(DEFAULT_MAX_LOST_ATTEMPTS),
            timeout: timeout.flatten(),
            inputs,
            outputs,
            queue: queue.unwrap_or_else(|| "default".to_owned()),
            priority: spec.priority.or(defaults.spec.priority).unwrap_or(0),
            cache: spec.cache.or(defaults.spec.cache).unwrap_or(false),
        })
    }

    fn error_count(&self) -> usize {
        self.errors
    }

    /// `Some(None)` when absent, `Some(Some(d))` when valid, `None` after reporting an error.
    fn duration(
        &mut self,
        task: &ParsedTask,
        key: &str,
        text: Option<&String>,
    ) -> Option<Option<Duration>> {
        let Some(text) = text else { return Some(None) };
        match duration::parse(text) {
            Ok(parsed) => Some(Some(parsed)),
            Err(message) => {
                self.error(
                    task.item(),
                    Some(task.offset(key)),
                    format!("`{key}`: {message}"),
                );
                None
            }
        }
    }

    fn input(
        &mut self,
        task: &ParsedTask,
        name: &str,
        input: &InputSpec,
        outputs_of: &HashMap<&str, Vec<String>>,
    ) -> Option<InputRef> {
        let item = task.item();
        let at = Some(task.offset("inputs"));
        if let Err(message) = check_id(name) {
            self.error(item, at, format!("input name {message}"));
            return None;
        }
        match (&input.from, &input.dataset) {
            (Some(from), None) => {
                if input.version.is_some() {
                    self.error(
                        item,
                        at,
                        format!("input `{name}`: `version` goes with `dataset`, not `from`"),
                    );
                    return None;
                }
                let Some((upstream, output)) = from.split_once('.') else {
                    self.error(
                        item,
                        at,
                        format!("input `{name}`: `from = \"{from}\"` must name `task.output`"),
                    );
                    return None;
                };
                if upstream == task.spec.id {
                    self.error(
                        item,
                        at,
                        format!("input `{name}`: a task cannot read its own output"),
                    );
                    return None;
                }
                let Some(outputs) = outputs_of.get(upstream) else {
                    self.error(
                        item,
                        at,
                        format!("input `{name}`: `from` names unknown task `{upstream}`"),
                    );
                    return None;
                };
                if !outputs.iter().any(|declared| declared == output) {
                    let declared = if outputs.is_empty() {
                        "none".to_owned()
                    } else {
                        outputs.join(", ")
                    };
                    self.error(
                        item,
                        at,
                        format!("input `{name}`: task `{upstream}` declares no output `{output}` (its outputs: {declared})"),
                    );
                    return None;
                }
                Some(InputRef::Task {
                    task: upstream.to_owned(),
                    output: output.to_owned(),
                })
            }
            (None, Some(dataset)) => {
                if let Err(message) = check_artifact_name(dataset) {
                    self.error(item, at, format!("input `{name}`: dataset name {message}"));
                    return None;
                }
                if input.version == Some(0) {
                    self.error(
                        item,
                        at,
                        format!("input `{name}`: dataset versions start at 1"),
                    );
                    return None;
                }
                Some(InputRef::Dataset {
                    name: dataset.clone(),
                    version: input.version,
                })
            }
            _ => {
                self.error(item, at, format!("input `{name}`: give exactly one of `from = \"task.output\"` or `dataset = \"name\"`"));
                None
            }
        }
    }
}

fn output_names(outputs: &OutputsSpec) -> Vec<String> {
    match outputs {
        OutputsSpec::Names(names) => names.clone(),
        OutputsSpec::Table(table) => table.keys().cloned().collect(),
    }
}

/// Checks a DAG, task, param, queue or output id: letters, digits, `_` and `-`, starting with a
/// letter, digit or `_`; at most 100 characters. Ids end up in URLs, file names and log lines, so
/// nothing that could traverse a path or need quoting is allowed.
pub(crate) fn check_id(id: &str) -> Result<(), String> {
    let valid_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if id.is_empty() {
        Err("is empty".to_owned())
    } else if id.len() > MAX_ID_LEN {
        Err(format!("`{id}` is longer than {MAX_ID_LEN} characters"))
    } else if !valid_chars || id.starts_with('-') {
        Err(format!(
            "`{id}` is not valid: use letters, digits, `_` and `-` (no spaces, dots or slashes), not starting with `-`"
        ))
    } else {
        Ok(())
    }
}

/// Checks a dataset or model name: letters, digits, `_`, `-` and `.` (`dag.task.output` is the
/// default name), not starting with `.` or `-`, no `..`, at most 200 characters.
pub fn check_artifact_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['.', '-'])
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not valid: use letters, digits, `_`, `-` and `.`"
        ))
    }
}

/// Reads `2026-01-01`, `2026-01-01T06:00:00` (both in `timezone`) or a full RFC 3339 timestamp.
pub(crate) fn parse_date_in(text: &str, timezone: Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(with_offset) = DateTime::parse_from_rfc3339(text) {
        return Ok(with_offset.with_timezone(&Utc));
    }
    let naive = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|date| date.and_hms_opt(0, 0, 0).unwrap_or_default())
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S"))
        .map_err(|_| {
            format!(
                "`{text}` is not a date; write it like \"2026-01-01\" or \"2026-01-01T06:00:00\""
            )
        })?;
    timezone
        .from_local_datetime(&naive)
        .earliest()
        .map(|local| local.with_timezone(&Utc))
        .ok_or_else(|| {
            format!("`{text}` does not exist in {timezone} (it falls into a daylight-saving gap)")
        })
}
