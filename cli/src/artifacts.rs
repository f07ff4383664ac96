//! `kiln artifacts list|show|get|put|gc` and `kiln lineage`: artifact versions, their bytes and
//! their lineage, straight from the database and the artifact store (no server needed).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use clap::Subcommand;
use kiln_engine::artifacts::{BlobError, BlobRef};
use kiln_engine::dag::ArtifactKind;
use kiln_engine::scheduler::to_datetime;
use kiln_engine::store::{
    ArtifactVersionRecord, AttemptRef, LineageDirection, LineageGraph, Micros, PublishParams,
    Store, now_micros,
};

use crate::ops::DatabaseConfig;

/// How many versions `kiln artifacts show` lists.
const SHOWN_VERSIONS: u32 = 20;

/// How deep a lineage tree goes before it is cut.
const MAX_LINEAGE_DEPTH: usize = 50;

/// How many lines a lineage tree may have. Shared ancestors repeat under every descendant, so
/// a graph full of diamonds could otherwise print exponentially many lines.
const MAX_LINEAGE_LINES: usize = 5_000;

/// `kiln artifacts …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ArtifactsCommand {
    /// List artifact names with their latest version.
    List {
        /// Only artifacts of this kind: dataset, model or file.
        #[arg(long, value_parser = parse_kind)]
        kind: Option<ArtifactKind>,
    },
    /// Show a version's details and the name's versions.
    Show {
        /// NAME or NAME@VERSION (VERSION is a number or `latest`, the default).
        artifact: String,
    },
    /// Write a version's bytes to a file, checking them against their digest.
    Get {
        /// NAME or NAME@VERSION.
        artifact: String,
        /// The file to write; it is only created once the bytes are verified.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Store a file and publish it as a new version of NAME, by hand.
    Put {
        /// The name to publish under (letters, digits, `_`, `-` and `.`).
        name: String,
        /// The file.
        file: PathBuf,
        /// What it is: dataset, model or file.
        #[arg(long, value_parser = parse_kind)]
        kind: ArtifactKind,
        /// Its media type; guessed from the file's extension when left out.
        #[arg(long)]
        media_type: Option<String>,
    },
    /// Find blobs no version refers to, and delete them with `--yes`.
    Gc {
        /// Delete the unreferenced blobs (without it, only report them).
        #[arg(long)]
        yes: bool,
        /// Only blobs stored longer ago than this may go: a worker may have stored a blob whose
        /// completion has not been recorded yet.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        min_age: Duration,
    },
}

fn parse_kind(text: &str) -> Result<ArtifactKind, String> {
    text.parse()
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    kiln_engine::duration::parse(text)
}

/// Runs one `kiln artifacts` command.
pub(crate) async fn run(
    command: ArtifactsCommand,
    database: &DatabaseConfig,
) -> anyhow::Result<()> {
    match command {
        ArtifactsCommand::List { kind } => list(database, kind).await,
        ArtifactsCommand::Show { artifact } => show(database, &artifact).await,
        ArtifactsCommand::Get { artifact, output } => get(database, &artifact, &output).await,
        ArtifactsCommand::Put {
            name,
            file,
            kind,
            media_type,
        } => put(database, &name, &file, kind, media_type).await,
        ArtifactsCommand::Gc { yes, min_age } => gc(database, yes, min_age).await,
    }
}

/// `NAME@VERSION` as the user wrote it; `version` is `None` for the latest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VersionRef {
    name: String,
    version: Option<i64>,
}

/// Reads `NAME`, `NAME@latest` or `NAME@3`.
fn parse_version_ref(text: &str) -> anyhow::Result<VersionRef> {
    let (name, version) = match text.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (text, None),
    };
    if name.is_empty() {
        anyhow::bail!("`{text}` names no artifact; write NAME or NAME@VERSION");
    }
    let version = match version {
        None | Some("latest") => None,
        Some(number) => match number.parse::<i64>() {
            Ok(number) if number >= 1 => Some(number),
            _ => anyhow::bail!(
                "in `{text}`, the version `{number}` is not a positive integer or `latest`"
            ),
        },
    };
    Ok(VersionRef {
        name: name.to_owned(),
        version,
    })
}

/// The version a reference names, or an error saying whether the name or the version is
/// unknown.
async fn resolve(
    store: &dyn Store,
    reference: &VersionRef,
) -> anyhow::Result<ArtifactVersionRecord> {
    let name = &reference.name;
    if let Some(version) = store
        .artifact_version_get(name, reference.version)
        .await
        .with_context(|| format!("failed to read artifact `{name}`"))?
    {
        return Ok(version);
    }
    let artifact = store
        .artifact_get(name)
        .await
        .with_context(|| format!("failed to read artifact `{name}`"))?;
    match (artifact, reference.version) {
        (None, _) => anyhow::bail!("artifact `{name}` not found"),
        (Some(artifact), Some(version)) => anyhow::bail!(
            "artifact `{name}` has no version {version} (latest is {})",
            artifact.latest_version
        ),
        // The latest version always exists once a name does; say so plainly if it did not.
        (Some(artifact), None) => anyhow::bail!(
            "artifact `{name}` names version {} as its latest, but it is missing",
            artifact.latest_version
        ),
    }
}

/// Dataset and model names as the DAG loader checks them.
fn check_name(name: &str) -> anyhow::Result<()> {
    kiln_engine::dag::check_artifact_name(name)
        .map_err(|message| anyhow::anyhow!("artifact name {message}"))
}

/// A media type from a file's extension, for `put` without `--media-type`.
fn guess_media_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => "text/csv",
        Some("tsv") => "text/tab-separated-values",
        Some("parquet") => "application/vnd.apache.parquet",
        Some("json") => "application/json",
        Some("jsonl" | "ndjson") => "application/x-ndjson",
        Some("txt" | "log" | "md") => "text/plain",
        Some("html") => "text/html",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// `1.5 KiB`, `3 B`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A stored time, in UTC, to the second.
fn utc(micros: Micros) -> String {
    to_datetime(micros).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `dag/run N/task (attempt K)`, or `put by hand`.
fn producer_text(version: &ArtifactVersionRecord) -> String {
    match &version.producer {
        Some(attempt) => format!(
            "{}/run {}/{} (attempt {})",
            attempt.dag_id, attempt.run_id, attempt.task_id, attempt.try_number
        ),
        None => "put by hand".to_owned(),
    }
}

async fn list(database: &DatabaseConfig, kind: Option<ArtifactKind>) -> anyhow::Result<()> {
    let store = database.open().await?;
    let artifacts = store
        .artifact_list(kind)
        .await
        .context("failed to list artifacts")?;
    if artifacts.is_empty() {
        match kind {
            Some(kind) => println!("no {} artifacts", kind.as_str()),
            None => println!("no artifacts"),
        }
        return Ok(());
    }
    let width = artifacts
        .iter()
        .map(|artifact| artifact.name.len())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    println!(
        "{:<width$}  {:<7}  {:>6}  UPDATED (UTC)",
        "NAME", "KIND", "LATEST"
    );
    for artifact in artifacts {
        println!(
            "{:<width$}  {:<7}  {:>6}  {}",
            artifact.name,
            artifact.kind.as_str(),
            artifact.latest_version,
            utc(artifact.updated_at)
        );
    }
    Ok(())
}

async fn show(database: &DatabaseConfig, artifact: &str) -> anyhow::Result<()> {
    let reference = parse_version_ref(artifact)?;
    let store = database.open().await?;
    let version = resolve(&*store, &reference).await?;
    let latest = store
        .artifact_get(&version.name)
        .await
        .with_context(|| format!("failed to read artifact `{}`", version.name))?
        .map_or(version.version, |artifact| artifact.latest_version);
    println!("{}", version.label());
    println!("  kind        {}", version.kind.as_str());
    println!("  version     {} of {latest}", version.version);
    println!("  sha256      {}", version.blob.sha256);
    println!(
        "  size        {} ({} bytes)",
        human_size(version.blob.size),
        version.blob.size
    );
    println!("  media type  {}", version.media_type);
    println!("  producer    {}", producer_text(&version));
    println!("  created     {} UTC", utc(version.created_at));
    if let Some(dataset) = &version.dataset {
        let columns: Vec<String> = dataset
            .columns
            .iter()
            .map(|column| format!("{} ({})", column.name, column.dtype))
            .collect();
        println!("  columns     {}", columns.join(", "));
        println!("  rows        {}", dataset.rows);
    }
    let versions = store
        .artifact_version_list(&version.name, SHOWN_VERSIONS)
        .await
        .with_context(|| format!("failed to list the versions of `{}`", version.name))?;
    println!();
    println!("versions of {}, newest first:", version.name);
    println!(
        "  {:>7}  {:<19}  {:>10}  {:<12}  PRODUCER",
        "VERSION", "CREATED (UTC)", "SIZE", "SHA256"
    );
    for listed in &versions {
        let marker = if listed.version == version.version {
            "*"
        } else {
            " "
        };
        println!(
            "{marker} {:>7}  {:<19}  {:>10}  {:<12}  {}",
            listed.version,
            utc(listed.created_at),
            human_size(listed.blob.size),
            &listed.blob.sha256.to_hex()[..12],
            producer_text(listed)
        );
    }
    let older = latest - versions.len() as i64;
    if older > 0 {
        println!("  … and {older} older version(s)");
    }
    Ok(())
}

async fn get(database: &DatabaseConfig, artifact: &str, output: &Path) -> anyhow::Result<()> {
    let reference = parse_version_ref(artifact)?;
    let store = database.open().await?;
    let version = resolve(&*store, &reference).await?;
    let blobs = database.artifact_store()?;
    let (name, number) = (&version.name, version.version);
    match blobs.get_to_file(&version.blob.sha256, output).await {
        Ok(blob) => {
            println!(
                "wrote {} ({}) to {}",
                version.label(),
                human_size(blob.size),
                output.display()
            );
            Ok(())
        }
        Err(error @ BlobError::Corrupt { .. }) => Err(anyhow::Error::new(error).context(format!(
            "the stored bytes of artifact `{name}` version {number} are corrupt, so {} was not written",
            output.display()
        ))),
        Err(error @ BlobError::NotFound { .. }) => Err(anyhow::Error::new(error).context(
            format!("the bytes of artifact `{name}` version {number} are missing from the artifact store"),
        )),
        Err(error) => Err(anyhow::Error::new(error)
            .context(format!("failed to get artifact `{name}` version {number}"))),
    }
}

async fn put(
    database: &DatabaseConfig,
    name: &str,
    file: &Path,
    kind: ArtifactKind,
    media_type: Option<String>,
) -> anyhow::Result<()> {
    check_name(name)?;
    let media_type = media_type.unwrap_or_else(|| guess_media_type(file).to_owned());
    let store = database.open().await?;
    let blobs = database.artifact_store()?;
    let stored = blobs
        .put_file(file)
        .await
        .with_context(|| format!("failed to store {}", file.display()))?;
    let publish = PublishParams {
        name: name.to_owned(),
        kind,
        blob: stored.blob,
        media_type,
        dataset: None,
        metadata: None,
    };
    let (version, reused) = store
        .artifact_publish(&publish, now_micros())
        .await
        .with_context(|| format!("failed to publish `{name}`"))?;
    // Bytes that were already stored keep their old modification time, so a concurrent
    // `artifacts gc` may have taken them for garbage between storing and publishing. Now that
    // a version refers to them no collector will; put them back if one got there first.
    if !blobs
        .exists(&stored.blob.sha256)
        .await
        .context("failed to check the stored bytes")?
    {
        blobs
            .put_file(file)
            .await
            .with_context(|| format!("failed to store {}", file.display()))?;
    }
    if reused {
        println!(
            "{} (identical bytes to the newest version, reused: no new version)",
            version.label()
        );
    } else {
        println!(
            "{} (new version, {}, sha256 {})",
            version.label(),
            human_size(version.blob.size),
            version.blob.sha256
        );
    }
    Ok(())
}

/// Waits for a stream's next item. The stream is a boxed trait object, whose methods can be
/// called without naming the trait, so this crate needs no futures dependency for it.
macro_rules! next_item {
    ($stream:expr) => {
        std::future::poll_fn(|context| $stream.as_mut().poll_next(context)).await
    };
}

async fn gc(database: &DatabaseConfig, delete: bool, min_age: Duration) -> anyhow::Result<()> {
    let store = database.open().await?;
    let blobs = database.artifact_store()?;
    let min_age_text = kiln_engine::duration::format(min_age);
    let cutoff = Utc::now()
        - chrono::Duration::from_std(min_age).context("failed to read the minimum age")?;
    // List first and read the references after: a version published while the listing runs
    // is then seen, and a blob stored after the references were read is too young to go.
    let mut listing = blobs.list_with_times();
    let mut stored = Vec::new();
    while let Some(item) = next_item!(listing) {
        stored.push(item.context("failed to list the artifact store")?);
    }
    let in_use: HashSet<String> = store
        .artifact_blob_list_in_use()
        .await
        .context("failed to read which blobs versions refer to")?
        .into_iter()
        .collect();
    let total = stored.len();
    let mut garbage: Vec<(BlobRef, chrono::DateTime<Utc>)> = Vec::new();
    let mut young = 0usize;
    for (blob, modified) in stored {
        if in_use.contains(&blob.sha256.to_hex()) {
            continue;
        }
        if modified > cutoff {
            young += 1;
        } else {
            garbage.push((blob, modified));
        }
    }
    garbage.sort_by_key(|(blob, _)| blob.sha256);
    let referenced = total - garbage.len() - young;
    println!("{total} blob(s) in the artifact store, {referenced} referenced by a version");
    if young > 0 {
        println!(
            "{young} unreferenced blob(s) stored less than {min_age_text} ago are kept (their task may not have reported yet)"
        );
    }
    if garbage.is_empty() {
        println!("no unreferenced blobs older than {min_age_text}");
        return Ok(());
    }
    let bytes: u64 = garbage.iter().map(|(blob, _)| blob.size).sum();
    println!("unreferenced blobs older than {min_age_text}:");
    for (blob, modified) in &garbage {
        println!(
            "  sha256:{}  {:>10}  stored {} UTC",
            blob.sha256,
            human_size(blob.size),
            modified.format("%Y-%m-%d %H:%M:%S")
        );
    }
    if !delete {
        println!(
            "{} unreferenced blob(s), {} in all; run with --yes to delete them",
            garbage.len(),
            human_size(bytes)
        );
        return Ok(());
    }
    // Read the references once more, so that a version published while this ran (say by
    // `artifacts put` of old bytes) keeps its blob.
    let in_use: HashSet<String> = store
        .artifact_blob_list_in_use()
        .await
        .context("failed to read which blobs versions refer to")?
        .into_iter()
        .collect();
    let (mut deleted, mut freed) = (0usize, 0u64);
    for (blob, _) in &garbage {
        if in_use.contains(&blob.sha256.to_hex()) {
            continue;
        }
        blobs
            .delete(&blob.sha256)
            .await
            .with_context(|| format!("failed to delete blob sha256:{}", blob.sha256))?;
        tracing::debug!(message = "Deleted an unreferenced blob.", sha256 = %blob.sha256, size = blob.size);
        deleted += 1;
        freed += blob.size;
    }
    println!(
        "deleted {deleted} unreferenced blob(s), {} in all",
        human_size(freed)
    );
    Ok(())
}

/// `kiln lineage NAME[@VERSION] [--downstream]`: prints the version's lineage as a tree.
pub(crate) async fn lineage(
    database: &DatabaseConfig,
    artifact: &str,
    downstream: bool,
) -> anyhow::Result<()> {
    let reference = parse_version_ref(artifact)?;
    let store = database.open().await?;
    let version = resolve(&*store, &reference).await?;
    let direction = if downstream {
        LineageDirection::Downstream
    } else {
        LineageDirection::Upstream
    };
    let graph = store
        .lineage_get_by_version(version.id, direction)
        .await
        .with_context(|| format!("failed to read the lineage of {}", version.label()))?;
    print!("{}", render_lineage(&graph, version.id, direction));
    Ok(())
}

/// One line of a tree, with the lines under it.
struct TreeNode {
    text: String,
    children: Vec<TreeNode>,
}

impl TreeNode {
    fn leaf(text: impl Into<String>) -> TreeNode {
        TreeNode {
            text: text.into(),
            children: Vec::new(),
        }
    }
}

/// A lineage graph indexed for walking it as a tree.
struct LineageWalk<'a> {
    versions: HashMap<i64, &'a ArtifactVersionRecord>,
    graph: &'a LineageGraph,
    lines: usize,
}

fn same_attempt(left: &AttemptRef, right: &AttemptRef) -> bool {
    left.task_instance_id == right.task_instance_id && left.try_number == right.try_number
}

fn attempt_text(attempt: &AttemptRef) -> String {
    format!(
        "{}/{} run {} attempt {}",
        attempt.dag_id, attempt.task_id, attempt.run_id, attempt.try_number
    )
}

impl LineageWalk<'_> {
    fn label(&self, id: i64) -> String {
        self.versions
            .get(&id)
            .map_or_else(|| format!("version #{id}"), |version| version.label())
    }

    /// Sorts version ids by label and drops duplicates.
    fn sorted(&self, ids: impl Iterator<Item = i64>) -> Vec<i64> {
        let unique: BTreeSet<i64> = ids.collect();
        let mut ids: Vec<i64> = unique.into_iter().collect();
        ids.sort_by_key(|id| {
            let version = self.versions.get(id);
            (
                version.map(|version| version.name.clone()),
                version.map(|version| version.version),
                *id,
            )
        });
        ids
    }

    /// The version's node, or a reason not to go on below it.
    fn enter(&mut self, id: i64, depth: usize, path: &[i64]) -> Result<TreeNode, TreeNode> {
        self.lines += 1;
        let mut node = TreeNode::leaf(self.label(id));
        if path.contains(&id) {
            // Possible when an attempt reads a version and writes identical bytes under the
            // same name, which reuses that very version.
            node.text.push_str(" (already shown above: a cycle)");
            return Err(node);
        }
        if depth >= MAX_LINEAGE_DEPTH {
            node.children.push(TreeNode::leaf(format!(
                "… (cut at depth {MAX_LINEAGE_DEPTH})"
            )));
            return Err(node);
        }
        if self.lines >= MAX_LINEAGE_LINES {
            node.children.push(TreeNode::leaf(format!(
                "… (cut after {MAX_LINEAGE_LINES} lines)"
            )));
            return Err(node);
        }
        Ok(node)
    }

    /// The version, the attempt that first wrote it, and what that attempt read, recursively.
    fn upstream(&mut self, id: i64, depth: usize, path: &mut Vec<i64>) -> TreeNode {
        let mut node = match self.enter(id, depth, path) {
            Ok(node) => node,
            Err(node) => return node,
        };
        let Some(producer) = self
            .versions
            .get(&id)
            .and_then(|version| version.producer.clone())
        else {
            node.children.push(TreeNode::leaf("put by hand"));
            return node;
        };
        let graph = self.graph;
        let inputs = self.sorted(
            graph
                .edges
                .iter()
                .filter(|edge| edge.output == id && same_attempt(&edge.attempt, &producer))
                .map(|edge| edge.input),
        );
        let mut attempt = TreeNode::leaf(format!("← {}", attempt_text(&producer)));
        let is_source = graph
            .sources
            .iter()
            .any(|(version, source)| *version == id && same_attempt(source, &producer));
        if inputs.is_empty() && is_source {
            attempt.text.push_str(" (read no artifacts)");
        }
        path.push(id);
        for input in inputs {
            attempt.children.push(self.upstream(input, depth + 1, path));
        }
        path.pop();
        node.children.push(attempt);
        node
    }

    /// The version, each attempt that read it, and what those attempts wrote, recursively.
    fn downstream(&mut self, id: i64, depth: usize, path: &mut Vec<i64>) -> TreeNode {
        let mut node = match self.enter(id, depth, path) {
            Ok(node) => node,
            Err(node) => return node,
        };
        let graph = self.graph;
        let mut readers: Vec<&AttemptRef> = Vec::new();
        for edge in graph.edges.iter().filter(|edge| edge.input == id) {
            if !readers
                .iter()
                .any(|reader| same_attempt(reader, &edge.attempt))
            {
                readers.push(&edge.attempt);
            }
        }
        readers.sort_by_key(|attempt| {
            (
                attempt.run_id,
                attempt.task_id.clone(),
                attempt.try_number,
                attempt.task_instance_id,
            )
        });
        path.push(id);
        for reader in readers {
            let outputs = self.sorted(
                graph
                    .edges
                    .iter()
                    .filter(|edge| edge.input == id && same_attempt(&edge.attempt, reader))
                    .map(|edge| edge.output),
            );
            let mut attempt = TreeNode::leaf(format!("→ {}", attempt_text(reader)));
            for output in outputs {
                attempt
                    .children
                    .push(self.downstream(output, depth + 1, path));
            }
            node.children.push(attempt);
        }
        path.pop();
        node
    }
}

/// Draws a version's lineage as a tree with box-drawing characters. Upstream, each version
/// has the attempt that produced it under it, and under that the versions it read, down to
/// the sources; downstream, each version has the attempts that read it, and under each what
/// it wrote. Shared ancestors repeat under every descendant.
fn render_lineage(graph: &LineageGraph, root: i64, direction: LineageDirection) -> String {
    let mut walk = LineageWalk {
        versions: graph
            .versions
            .iter()
            .map(|version| (version.id, version))
            .collect(),
        graph,
        lines: 0,
    };
    let mut tree = match direction {
        LineageDirection::Upstream => walk.upstream(root, 0, &mut Vec::new()),
        LineageDirection::Downstream => walk.downstream(root, 0, &mut Vec::new()),
    };
    if direction == LineageDirection::Downstream && tree.children.is_empty() {
        tree.text.push_str(" (no task has read it)");
    }
    let mut out = format!("{}\n", tree.text);
    draw_children(&tree.children, "", &mut out);
    out
}

fn draw_children(children: &[TreeNode], prefix: &str, out: &mut String) {
    for (index, child) in children.iter().enumerate() {
        let last = index + 1 == children.len();
        out.push_str(prefix);
        out.push_str(if last { "└─ " } else { "├─ " });
        out.push_str(&child.text);
        out.push('\n');
        let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
        draw_children(&child.children, &deeper, out);
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use kiln_engine::artifacts::Sha256Digest;
    use kiln_engine::store::LineageEdge;

    use super::*;

    fn version(
        id: i64,
        name: &str,
        number: i64,
        producer: Option<AttemptRef>,
    ) -> ArtifactVersionRecord {
        ArtifactVersionRecord {
            id,
            name: name.to_owned(),
            kind: ArtifactKind::Dataset,
            version: number,
            blob: BlobRef {
                sha256: Sha256Digest::from_bytes([id as u8; 32]),
                size: 1,
            },
            media_type: "text/csv".to_owned(),
            producer,
            dataset: None,
            metadata: None,
            created_at: 0,
        }
    }

    fn attempt(task_instance_id: i64, task_id: &str, try_number: i64) -> AttemptRef {
        AttemptRef {
            task_instance_id,
            try_number,
            run_id: 7,
            dag_id: "pipe".to_owned(),
            task_id: task_id.to_owned(),
        }
    }

    fn edge(input: i64, output: i64, by: &AttemptRef) -> LineageEdge {
        LineageEdge {
            input,
            output,
            attempt: by.clone(),
        }
    }

    /// raw (ingest) and reference (by hand) → clean → model, and clean → report too.
    fn pipeline() -> LineageGraph {
        let ingest = attempt(1, "ingest", 1);
        let clean = attempt(2, "clean", 2);
        let train = attempt(3, "train", 1);
        LineageGraph {
            versions: vec![
                version(10, "raw", 1, Some(ingest.clone())),
                version(11, "reference", 3, None),
                version(12, "clean", 1, Some(clean.clone())),
                version(13, "model", 1, Some(train.clone())),
                version(14, "report", 1, Some(train.clone())),
            ],
            edges: vec![
                edge(10, 12, &clean),
                edge(11, 12, &clean),
                edge(12, 13, &train),
                edge(11, 13, &train),
                edge(12, 14, &train),
                edge(11, 14, &train),
            ],
            sources: vec![(10, ingest)],
        }
    }

    fn check(graph: &LineageGraph, root: i64, direction: LineageDirection, expected: Expect) {
        expected.assert_eq(&render_lineage(graph, root, direction));
    }

    #[test]
    fn upstream_goes_down_to_sources_and_versions_put_by_hand() {
        check(
            &pipeline(),
            13,
            LineageDirection::Upstream,
            expect![[r#"
                model@1
                └─ ← pipe/train run 7 attempt 1
                   ├─ clean@1
                   │  └─ ← pipe/clean run 7 attempt 2
                   │     ├─ raw@1
                   │     │  └─ ← pipe/ingest run 7 attempt 1 (read no artifacts)
                   │     └─ reference@3
                   │        └─ put by hand
                   └─ reference@3
                      └─ put by hand
            "#]],
        );
        check(
            &pipeline(),
            11,
            LineageDirection::Upstream,
            expect![[r#"
                reference@3
                └─ put by hand
            "#]],
        );
    }

    #[test]
    fn downstream_follows_every_reader() {
        check(
            &pipeline(),
            11,
            LineageDirection::Downstream,
            expect![[r#"
                reference@3
                ├─ → pipe/clean run 7 attempt 2
                │  └─ clean@1
                │     └─ → pipe/train run 7 attempt 1
                │        ├─ model@1
                │        └─ report@1
                └─ → pipe/train run 7 attempt 1
                   ├─ model@1
                   └─ report@1
            "#]],
        );
        check(
            &pipeline(),
            14,
            LineageDirection::Downstream,
            expect![[r#"
                report@1 (no task has read it)
            "#]],
        );
    }

    #[test]
    fn cycles_and_long_chains_are_cut() {
        // An attempt that read `state@1` and wrote identical bytes, reusing `state@1`.
        let update = attempt(1, "update", 1);
        let cyclic = LineageGraph {
            versions: vec![version(1, "state", 1, Some(update.clone()))],
            edges: vec![edge(1, 1, &update)],
            sources: vec![],
        };
        check(
            &cyclic,
            1,
            LineageDirection::Upstream,
            expect![[r#"
                state@1
                └─ ← pipe/update run 7 attempt 1
                   └─ state@1 (already shown above: a cycle)
            "#]],
        );

        // A chain of 60 versions, each made from the one before.
        let mut chain = LineageGraph::default();
        for id in 1..=60 {
            let step = attempt(id, "step", 1);
            chain
                .versions
                .push(version(id, "v", id, Some(step.clone())));
            if id > 1 {
                chain.edges.push(edge(id - 1, id, &step));
            } else {
                chain.sources.push((id, step));
            }
        }
        let tree = render_lineage(&chain, 60, LineageDirection::Upstream);
        let lines: Vec<&str> = tree.lines().collect();
        assert_eq!(lines.len(), 2 * MAX_LINEAGE_DEPTH + 2, "{tree}");
        assert!(lines[lines.len() - 2].ends_with("v@10"), "{tree}");
        assert!(
            lines[lines.len() - 1].ends_with(&format!("… (cut at depth {MAX_LINEAGE_DEPTH})")),
            "{tree}"
        );
    }

    #[test]
    fn version_references_parse_or_say_what_is_wrong() {
        let parsed = |text: &str| {
            parse_version_ref(text)
                .map(|reference| (reference.name, reference.version))
                .map_err(|error| error.to_string())
        };
        assert_eq!(parsed("raw"), Ok(("raw".to_owned(), None)));
        assert_eq!(parsed("raw@latest"), Ok(("raw".to_owned(), None)));
        assert_eq!(
            parsed("pipe.clean.out@12"),
            Ok(("pipe.clean.out".to_owned(), Some(12)))
        );
        expect![[r#"
            [
                Err(
                    "in `raw@0`, the version `0` is not a positive integer or `latest`",
                ),
                Err(
                    "in `raw@`, the version `` is not a positive integer or `latest`",
                ),
                Err(
                    "in `raw@x`, the version `x` is not a positive integer or `latest`",
                ),
                Err(
                    "`@3` names no artifact; write NAME or NAME@VERSION",
                ),
                Err(
                    "`` names no artifact; write NAME or NAME@VERSION",
                ),
            ]
        "#]]
        .assert_debug_eq(&["raw@0", "raw@", "raw@x", "@3", ""].map(parsed));
    }

    #[test]
    fn names_sizes_and_media_types() {
        assert!(check_name("pipe.clean.out").is_ok());
        for bad in ["", ".hidden", "-x", "a..b", "a/b", "a@1", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(guess_media_type(Path::new("x/data.CSV")), "text/csv");
        assert_eq!(
            guess_media_type(Path::new("model")),
            "application/octet-stream"
        );
    }
}
