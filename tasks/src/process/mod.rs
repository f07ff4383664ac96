//! `process`: cleans and shapes a dataset with polars' lazy API, as a list of typed steps, and
//! optionally splits it into a training and a test set.
//!
//! The input is the task's only input (or the one `input` names): CSV, Parquet or JSON lines,
//! told apart by `format`, else by media type, else by file extension. Outputs are Parquet:
//! `data` without a split, `train` and `test` with one; each version records its columns and row
//! count. Steps that learn from the data (`standardize`, `one_hot`) learn from the training rows
//! only, so the test set never leaks into them: the split happens just before the first such
//! step (or after the last step), and what they learned is written as JSON to the output
//! `scaler` when the task declares it, so that serving applies exactly the same transformation.

mod expr;
mod split;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_engine::plugin::{InputFile, OutputFile};
use kiln_engine::store::{ColumnSchema, DatasetStats};
use kiln_engine::{TaskContext, TaskError, TaskOutput, TaskPlugin};
use polars::prelude::{
    DataFrame, DataType, Expr, IntoLazy, LazyCsvReader, LazyFileListReader, LazyFrame,
    LazyJsonLineReader, ParquetCompression, ParquetWriter, PlRefPath, ScanArgsParquet,
    UniqueKeepStrategy, col, cols, lit,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::ml::preprocess::Preprocessing as FittedSteps;

pub use split::SplitSpec;

/// The media type of every dataset `process` writes.
pub const PARQUET: &str = "application/vnd.apache.parquet";

/// Params of `process`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessParams {
    /// Which input to read, when the task has more than one.
    #[serde(default)]
    pub input: Option<String>,
    /// The input's format; by default from its media type or file extension.
    #[serde(default)]
    pub format: Option<Format>,
    /// How to read CSV.
    #[serde(default)]
    pub csv: CsvOptions,
    /// What to do, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Split into `train` and `test`.
    #[serde(default)]
    pub split: Option<SplitSpec>,
}

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Comma-separated (or `csv.separator`) text with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// One JSON object per line.
    Jsonl,
}

/// How CSV is read.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// The field separator, one ASCII character.
    #[serde(default = "comma")]
    pub separator: char,
    /// Whether the first row names the columns.
    #[serde(default = "yes")]
    pub has_header: bool,
    /// How many rows column types are guessed from (0 for all). The default reads far enough
    /// that a column of whole numbers with a decimal on row 500 is still read as decimals.
    #[serde(default = "infer_rows")]
    pub infer_schema_rows: usize,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            separator: comma(),
            has_header: true,
            infer_schema_rows: infer_rows(),
        }
    }
}

fn comma() -> char {
    ','
}

fn yes() -> bool {
    true
}

fn infer_rows() -> usize {
    10_000
}

/// Column types a `cast` step may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// 64-bit integers.
    Int64,
    /// 64-bit floats.
    Float64,
    /// Text.
    String,
    /// `true` / `false`.
    Boolean,
}

impl ColumnType {
    fn polars(self) -> DataType {
        match self {
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::String => DataType::String,
            ColumnType::Boolean => DataType::Boolean,
        }
    }
}

/// A value to fill nulls with.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FillValue {
    /// A whole number.
    Integer(i64),
    /// A number.
    Number(f64),
    /// `true` or `false`.
    Boolean(bool),
    /// Text.
    Text(String),
}

/// One step of a `process` task.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Keep only these columns, in this order.
    Select {
        /// The columns.
        columns: Vec<String>,
    },
    /// Remove these columns.
    Drop {
        /// The columns.
        columns: Vec<String>,
    },
    /// Rename columns (old name to new name).
    Rename {
        /// Old name to new name.
        columns: BTreeMap<String, String>,
    },
    /// Change column types; a value that does not convert fails the task, naming the column.
    Cast {
        /// Column to type.
        columns: BTreeMap<String, ColumnType>,
    },
    /// Remove rows with a null in any of these columns (all columns when left out).
    DropNulls {
        /// The columns.
        #[serde(default)]
        columns: Option<Vec<String>>,
    },
    /// Replace nulls with a value, per column.
    FillNulls {
        /// Column to value.
        columns: BTreeMap<String, FillValue>,
    },
    /// Remove repeated rows (judged on these columns, or all), keeping the first.
    Dedupe {
        /// The columns.
        #[serde(default)]
        columns: Option<Vec<String>>,
    },
    /// Keep the rows where an expression is true.
    Filter {
        /// For example `quality >= 3 && alcohol > 8`.
        expr: String,
    },
    /// Add (or replace) a column computed from an expression.
    Derive {
        /// The column to write.
        column: String,
        /// For example `int(quality >= 6)`.
        expr: String,
    },
    /// Center and scale columns to mean 0 and standard deviation 1 (population, as
    /// scikit-learn's `StandardScaler`), with statistics learnt from the training rows.
    Standardize {
        /// The columns.
        columns: Vec<String>,
    },
    /// Replace each column by one 0/1 column per category seen in the training rows
    /// (`column=value`); a category seen only later gets zeros everywhere.
    OneHot {
        /// The columns.
        columns: Vec<String>,
    },
}

impl Step {
    /// Whether the step learns from the rows it sees.
    fn learns(&self) -> bool {
        matches!(self, Step::Standardize { .. } | Step::OneHot { .. })
    }
}

/// The `process` plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Process;

impl TaskPlugin for Process {
    const KIND: &'static str = "process";
    type Params = ProcessParams;

    async fn run(&self, ctx: &TaskContext, params: ProcessParams) -> Result<TaskOutput, TaskError> {
        let input = pick_input(ctx, params.input.as_deref())?.clone();
        let outputs = output_paths(ctx, params.split.is_some())?;
        let cancel = ctx.cancellation().clone();
        // polars works on all cores and blocks: keep it off the async workers.
        let work = crate::ml::off_runtime("process", move || run_steps(&input, &params, &outputs));
        let result = tokio::select! {
            result = work => result?,
            () = cancel.cancelled() => return Err(TaskError::Cancelled("process stopped".to_owned())),
        };
        for (name, rows) in &result.rows {
            ctx.log_line(
                kiln_engine::plugin::LogStream::Stdout,
                &format!("{name}: {rows} rows"),
            );
        }
        Ok(result.output)
    }
}

/// Where each output goes: `data`, or `train` and `test`; and `scaler` when declared.
struct OutputPaths {
    datasets: Vec<(String, PathBuf)>,
    scaler: Option<PathBuf>,
}

fn pick_input<'a>(ctx: &'a TaskContext, name: Option<&str>) -> Result<&'a InputFile, TaskError> {
    match name {
        Some(name) => ctx.input(name),
        None => {
            let mut inputs = ctx.inputs().values();
            match (inputs.next(), inputs.next()) {
                (Some(only), None) => Ok(only),
                (None, _) => Err(TaskError::Permanent(
                    "`process` needs an input: add one to the task's `inputs`".to_owned(),
                )),
                (Some(_), Some(_)) => Err(TaskError::Permanent(format!(
                    "the task has several inputs ({}): say which one to read with `input`",
                    ctx.inputs().keys().cloned().collect::<Vec<_>>().join(", ")
                ))),
            }
        }
    }
}

fn output_paths(ctx: &TaskContext, split: bool) -> Result<OutputPaths, TaskError> {
    let names: &[&str] = if split { &["train", "test"] } else { &["data"] };
    let mut datasets = Vec::new();
    for name in names {
        let path = ctx.output_path(name).map_err(|_| {
            TaskError::Permanent(format!(
                "`process` writes {} here: declare {} in the task's `outputs`",
                if split {
                    "`train` and `test` (it has a `split`)"
                } else {
                    "`data`"
                },
                names
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ))
        })?;
        datasets.push(((*name).to_owned(), path.to_owned()));
    }
    let scaler = ctx.outputs().get("scaler").map(|slot| slot.path.clone());
    Ok(OutputPaths { datasets, scaler })
}

struct Processed {
    output: TaskOutput,
    rows: Vec<(String, usize)>,
}

fn failed(context: &str) -> impl Fn(polars::error::PolarsError) -> TaskError + '_ {
    move |error| TaskError::Permanent(format!("{context}: {error}"))
}

fn input_format(input: &InputFile, format: Option<Format>) -> Result<Format, TaskError> {
    if let Some(format) = format {
        return Ok(format);
    }
    let by_media = match input.version.media_type.as_str() {
        "text/csv" => Some(Format::Csv),
        PARQUET => Some(Format::Parquet),
        "application/x-ndjson" | "application/jsonl" => Some(Format::Jsonl),
        _ => None,
    };
    let by_extension = || match input
        .path
        .extension()
        .and_then(|extension| extension.to_str())
    {
        Some("csv") => Some(Format::Csv),
        Some("parquet") => Some(Format::Parquet),
        Some("jsonl" | "ndjson") => Some(Format::Jsonl),
        _ => None,
    };
    by_media.or_else(by_extension).ok_or_else(|| {
        TaskError::Permanent(format!(
            "cannot tell the format of {} ({}): set `format` to csv, parquet or jsonl",
            input.version.label(),
            input.version.media_type
        ))
    })
}

fn scan(input: &InputFile, params: &ProcessParams) -> Result<LazyFrame, TaskError> {
    let path = input.path.to_str().ok_or_else(|| {
        TaskError::Permanent(format!(
            "the input path {} is not UTF-8",
            input.path.display()
        ))
    })?;
    let path = PlRefPath::new(path);
    let reading = format!("reading {}", input.version.label());
    match input_format(input, params.format)? {
        Format::Csv => {
            let separator = u8::try_from(params.csv.separator)
                .ok()
                .filter(u8::is_ascii)
                .ok_or_else(|| {
                    TaskError::Permanent(format!(
                        "`csv.separator` must be one ASCII character, not {:?}",
                        params.csv.separator
                    ))
                })?;
            let rows = (params.csv.infer_schema_rows > 0).then_some(params.csv.infer_schema_rows);
            LazyCsvReader::new(path)
                .with_has_header(params.csv.has_header)
                .with_separator(separator)
                .with_infer_schema_length(rows)
                .finish()
                .map_err(failed(&reading))
        }
        Format::Parquet => {
            LazyFrame::scan_parquet(path, ScanArgsParquet::default()).map_err(failed(&reading))
        }
        Format::Jsonl => LazyJsonLineReader::new(path)
            .finish()
            .map_err(failed(&reading)),
    }
}

/// Checks that every named column exists, so a typo fails with the columns there are.
fn require(frame: &mut LazyFrame, step: &str, names: &[&String]) -> Result<(), TaskError> {
    let schema = frame
        .collect_schema()
        .map_err(failed(&format!("step `{step}`")))?;
    for name in names {
        if schema.get(name.as_str()).is_none() {
            let known: Vec<&str> = schema.iter_names().map(|name| name.as_str()).collect();
            return Err(TaskError::Permanent(format!(
                "step `{step}`: no column `{name}` (the columns: {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// Applies a step that learns nothing.
fn apply(mut frame: LazyFrame, step: &Step) -> Result<LazyFrame, TaskError> {
    Ok(match step {
        Step::Select { columns } => {
            require(&mut frame, "select", &columns.iter().collect::<Vec<_>>())?;
            frame.select(
                columns
                    .iter()
                    .map(|name| col(name.as_str()))
                    .collect::<Vec<Expr>>(),
            )
        }
        Step::Drop { columns } => {
            require(&mut frame, "drop", &columns.iter().collect::<Vec<_>>())?;
            frame.drop(cols(columns.iter().map(String::as_str)))
        }
        Step::Rename { columns } => {
            require(&mut frame, "rename", &columns.keys().collect::<Vec<_>>())?;
            let schema = frame.collect_schema().map_err(failed("step `rename`"))?;
            let renamed: Vec<Expr> = schema
                .iter_names()
                .map(|name| match columns.get(name.as_str()) {
                    Some(new) => col(name.as_str()).alias(new.as_str()),
                    None => col(name.as_str()),
                })
                .collect();
            frame.select(renamed)
        }
        Step::Cast { columns } => {
            require(&mut frame, "cast", &columns.keys().collect::<Vec<_>>())?;
            frame.with_columns(
                columns
                    .iter()
                    .map(|(name, to)| col(name.as_str()).strict_cast(to.polars()))
                    .collect::<Vec<_>>(),
            )
        }
        Step::DropNulls { columns } => match columns {
            Some(columns) => {
                require(
                    &mut frame,
                    "drop_nulls",
                    &columns.iter().collect::<Vec<_>>(),
                )?;
                frame.drop_nulls(Some(cols(columns.iter().map(String::as_str))))
            }
            None => frame.drop_nulls(None),
        },
        Step::FillNulls { columns } => {
            require(
                &mut frame,
                "fill_nulls",
                &columns.keys().collect::<Vec<_>>(),
            )?;
            frame.with_columns(
                columns
                    .iter()
                    .map(|(name, value)| {
                        let value = match value {
                            FillValue::Integer(value) => lit(*value),
                            FillValue::Number(value) => lit(*value),
                            FillValue::Boolean(value) => lit(*value),
                            FillValue::Text(value) => lit(value.clone()),
                        };
                        col(name.as_str()).fill_null(value)
                    })
                    .collect::<Vec<_>>(),
            )
        }
        Step::Dedupe { columns } => {
            let subset = match columns {
                Some(columns) => {
                    require(&mut frame, "dedupe", &columns.iter().collect::<Vec<_>>())?;
                    Some(columns.iter().map(|name| col(name.as_str())).collect())
                }
                None => None,
            };
            frame.unique_stable_generic(subset, UniqueKeepStrategy::First)
        }
        Step::Filter { expr } => {
            let ast = expr::parse(expr)
                .map_err(|error| TaskError::Permanent(format!("step `filter`: {error}")))?;
            let mut used = Vec::new();
            ast.columns(&mut used);
            require(&mut frame, "filter", &used.iter().collect::<Vec<_>>())?;
            frame.filter(ast.to_polars())
        }
        Step::Derive { column, expr } => {
            let ast = expr::parse(expr).map_err(|error| {
                TaskError::Permanent(format!("step `derive` of `{column}`: {error}"))
            })?;
            let mut used = Vec::new();
            ast.columns(&mut used);
            require(&mut frame, "derive", &used.iter().collect::<Vec<_>>())?;
            frame.with_column(ast.to_polars().alias(column.as_str()))
        }
        Step::Standardize { .. } | Step::OneHot { .. } => frame,
    })
}

/// Learns what a learning step needs from the training rows.
fn fit(train: &DataFrame, step: &Step, fitted: &mut FittedSteps) -> Result<(), TaskError> {
    match step {
        Step::Standardize { columns } => {
            let mut frame = train.clone().lazy();
            require(
                &mut frame,
                "standardize",
                &columns.iter().collect::<Vec<_>>(),
            )?;
            let stats = frame
                .select(
                    columns
                        .iter()
                        .flat_map(|name| {
                            let values = col(name.as_str()).cast(DataType::Float64);
                            [
                                values.clone().mean().alias(format!("mean {name}")),
                                values.std(0).alias(format!("std {name}")),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
                .collect()
                .map_err(failed("step `standardize`"))?;
            for name in columns {
                let value = |prefix: &str| -> Result<f64, TaskError> {
                    stats
                        .column(&format!("{prefix} {name}"))
                        .and_then(|column| column.f64().map(|values| values.get(0)))
                        .map_err(failed("step `standardize`"))?
                        .ok_or_else(|| {
                            TaskError::Permanent(format!(
                                "step `standardize`: column `{name}` has no values to learn from"
                            ))
                        })
                };
                let (mean, std) = (value("mean")?, value("std")?);
                // A constant column would divide by zero; scikit-learn scales it by 1 instead.
                let std = if std > 0.0 && std.is_finite() {
                    std
                } else {
                    1.0
                };
                fitted.standardize.insert(name.clone(), (mean, std));
            }
        }
        Step::OneHot { columns } => {
            for name in columns {
                let column = train
                    .column(name)
                    .map_err(|_| {
                        TaskError::Permanent(format!(
                            "step `one_hot`: no column `{name}` (the columns: {})",
                            train
                                .get_column_names()
                                .iter()
                                .map(|name| name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?
                    .cast(&DataType::String)
                    .map_err(failed("step `one_hot`"))?;
                let values = column.str().map_err(failed("step `one_hot`"))?;
                let mut categories: Vec<String> = values
                    .iter()
                    .flatten()
                    .map(str::to_owned)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if categories.len() > 1000 {
                    categories.truncate(0);
                    return Err(TaskError::Permanent(format!(
                        "step `one_hot`: column `{name}` has more than 1,000 categories"
                    )));
                }
                fitted.one_hot.insert(name.clone(), categories);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Applies a learnt step.
fn transform(
    mut frame: LazyFrame,
    step: &Step,
    fitted: &FittedSteps,
) -> Result<LazyFrame, TaskError> {
    Ok(match step {
        Step::Standardize { columns } => frame.with_columns(
            columns
                .iter()
                .filter_map(|name| {
                    fitted.standardize.get(name).map(|(mean, std)| {
                        ((col(name.as_str()).cast(DataType::Float64) - lit(*mean)) / lit(*std))
                            .alias(name.as_str())
                    })
                })
                .collect::<Vec<_>>(),
        ),
        Step::OneHot { columns } => {
            require(&mut frame, "one_hot", &columns.iter().collect::<Vec<_>>())?;
            let mut encoded = Vec::new();
            for name in columns {
                for category in fitted.one_hot.get(name).into_iter().flatten() {
                    encoded.push(
                        col(name.as_str())
                            .cast(DataType::String)
                            .eq(lit(category.clone()))
                            .fill_null(lit(false))
                            .cast(DataType::Float64)
                            .alias(format!("{name}={category}")),
                    );
                }
            }
            frame
                .with_columns(encoded)
                .drop(cols(columns.iter().map(String::as_str)))
        }
        other => apply(frame, other)?,
    })
}

fn run_steps(
    input: &InputFile,
    params: &ProcessParams,
    outputs: &OutputPaths,
) -> Result<Processed, TaskError> {
    let mut frame = scan(input, params)?;
    let first_learning = params
        .steps
        .iter()
        .position(Step::learns)
        .unwrap_or(params.steps.len());
    for step in &params.steps[..first_learning] {
        frame = apply(frame, step)?;
    }
    let whole = frame.collect().map_err(failed("processing"))?;
    let mut parts: Vec<DataFrame> = match &params.split {
        Some(spec) => {
            let (train, test) = split::split(&whole, spec)?;
            vec![train, test]
        }
        None => vec![whole],
    };
    let mut fitted = FittedSteps::default();
    for step in &params.steps[first_learning..] {
        if step.learns() {
            fit(&parts[0], step, &mut fitted)?;
        }
        for part in &mut parts {
            *part = transform(part.clone().lazy(), step, &fitted)?
                .collect()
                .map_err(failed("processing"))?;
        }
    }
    let mut output = TaskOutput {
        summary: serde_json::json!({}),
        ..TaskOutput::default()
    };
    let mut rows = Vec::new();
    for ((name, path), mut part) in outputs.datasets.iter().zip(parts) {
        write_parquet(&mut part, path)?;
        rows.push((name.clone(), part.height()));
        output.summary[name] =
            serde_json::json!({ "rows": part.height(), "columns": part.width() });
        output.outputs.insert(
            name.clone(),
            OutputFile {
                path: path.clone(),
                media_type: Some(PARQUET.to_owned()),
                dataset: Some(stats_of(&part)),
                metadata: Some(serde_json::json!({ "preview": preview_of(&part) })),
            },
        );
    }
    if let Some(path) = &outputs.scaler {
        let json = serde_json::to_vec_pretty(&fitted)
            .map_err(|error| TaskError::Permanent(format!("writing the scaler: {error}")))?;
        std::fs::write(path, json).map_err(|error| {
            TaskError::Retryable(format!("writing {}: {error}", path.display()))
        })?;
        output.outputs.insert(
            "scaler".to_owned(),
            OutputFile {
                path: path.clone(),
                media_type: Some("application/json".to_owned()),
                dataset: None,
                metadata: None,
            },
        );
    }
    Ok(Processed { output, rows })
}

fn write_parquet(frame: &mut DataFrame, path: &Path) -> Result<(), TaskError> {
    let file = std::fs::File::create(path)
        .map_err(|error| TaskError::Retryable(format!("creating {}: {error}", path.display())))?;
    // Snappy, as pandas, pyarrow and Spark write by default: every reader has it, and it costs
    // a fraction of zstd's time on numbers that hardly compress.
    ParquetWriter::new(file)
        .with_compression(ParquetCompression::Snappy)
        .finish(frame)
        .map(drop)
        .map_err(|error| TaskError::Retryable(format!("writing {}: {error}", path.display())))
}

/// A dataset's columns and rows, as its version records them.
pub fn stats_of(frame: &DataFrame) -> DatasetStats {
    DatasetStats {
        columns: frame
            .schema()
            .iter()
            .map(|(name, dtype)| ColumnSchema {
                name: name.to_string(),
                dtype: dtype.to_string(),
            })
            .collect(),
        rows: frame.height() as u64,
    }
}

/// Rows a dataset's stored preview keeps.
const PREVIEW_ROWS: usize = 20;

/// The first rows of a dataset as text, for the console, which reads no Parquet itself.
fn preview_of(frame: &DataFrame) -> serde_json::Value {
    let head = frame.head(Some(PREVIEW_ROWS));
    let columns: Vec<String> = head
        .get_column_names()
        .iter()
        .map(|name| name.to_string())
        .collect();
    let cells: Vec<Vec<String>> = head
        .columns()
        .iter()
        .map(|column| {
            (0..head.height())
                .map(|row| match column.get(row) {
                    Ok(polars::prelude::AnyValue::Null) | Err(_) => String::new(),
                    Ok(polars::prelude::AnyValue::String(text)) => text.to_owned(),
                    Ok(value) => value.to_string(),
                })
                .collect()
        })
        .collect();
    let rows: Vec<Vec<String>> = (0..head.height())
        .map(|row| cells.iter().map(|column| column[row].clone()).collect())
        .collect();
    serde_json::json!({ "columns": columns, "rows": rows, "total_rows": frame.height() })
}
