//! A dataset version as numbers: the feature matrix (row-major `f64`) and the target, read
//! from Parquet (or CSV) with polars and copied out of its column buffers in one pass.

use std::path::Path;

use kiln_engine::TaskError;
use polars::prelude::{
    Column, DataFrame, DataType, IntoLazy, LazyCsvReader, LazyFileListReader, LazyFrame, PlRefPath,
    ScanArgsParquet, col,
};

/// Features and target of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Feature names, in column order of `x`.
    pub features: Vec<String>,
    /// `rows × features`, row-major.
    pub x: Vec<f64>,
    /// Rows.
    pub rows: usize,
    /// The target's values, when a target was asked for.
    pub target: Option<TargetColumn>,
}

impl Table {
    /// One row's features.
    pub fn row(&self, row: usize) -> &[f64] {
        let width = self.features.len();
        &self.x[row * width..(row + 1) * width]
    }
}

/// A target column: numbers, or labels (text, integers, booleans) as JSON values.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetColumn {
    /// A float column.
    Numbers(Vec<f64>),
    /// Anything else, one JSON value per row.
    Labels(Vec<serde_json::Value>),
}

fn permanent(context: String) -> impl Fn(polars::error::PolarsError) -> TaskError {
    move |error| TaskError::Permanent(format!("{context}: {error}"))
}

/// Reads a dataset file: Parquet, or CSV when the path ends in `.csv`.
pub fn scan(path: &Path, label: &str) -> Result<LazyFrame, TaskError> {
    let text = path
        .to_str()
        .ok_or_else(|| TaskError::Permanent(format!("{} is not a UTF-8 path", path.display())))?;
    let reading = format!("reading {label}");
    if path.extension().is_some_and(|extension| extension == "csv") {
        LazyCsvReader::new(PlRefPath::new(text))
            .with_infer_schema_length(Some(10_000))
            .finish()
            .map_err(permanent(reading))
    } else {
        LazyFrame::scan_parquet(PlRefPath::new(text), ScanArgsParquet::default())
            .map_err(permanent(reading))
    }
}

/// Loads the named features (all columns but the target when `None`) and the target.
pub fn load(
    frame: LazyFrame,
    label: &str,
    features: Option<&[String]>,
    target: Option<&str>,
) -> Result<Table, TaskError> {
    let mut frame = frame;
    let schema = frame
        .collect_schema()
        .map_err(permanent(format!("reading {label}")))?;
    let columns: Vec<String> = schema.iter_names().map(|name| name.to_string()).collect();
    let missing = |name: &str| {
        TaskError::Permanent(format!(
            "{label} has no column `{name}` (its columns: {})",
            columns.join(", ")
        ))
    };
    if let Some(target) = target
        && !columns.iter().any(|column| column == target)
    {
        return Err(missing(target));
    }
    let features: Vec<String> = match features {
        Some(features) => {
            for feature in features {
                if !columns.contains(feature) {
                    return Err(missing(feature));
                }
            }
            features.to_vec()
        }
        None => columns
            .iter()
            .filter(|column| Some(column.as_str()) != target)
            .cloned()
            .collect(),
    };
    if features.is_empty() {
        return Err(TaskError::Permanent(format!(
            "{label} has no feature columns"
        )));
    }
    let mut wanted: Vec<_> = features.iter().map(|name| col(name.as_str())).collect();
    if let Some(target) = target {
        wanted.push(col(target));
    }
    let frame: DataFrame = frame
        .select(wanted)
        .collect()
        .map_err(permanent(format!("reading {label}")))?;
    let rows = frame.height();
    let width = features.len();
    let mut x = vec![0.0; rows * width];
    for (index, name) in features.iter().enumerate() {
        let values = numbers(&frame, name, label)?;
        for (row, value) in values.into_iter().enumerate() {
            x[row * width + index] = value;
        }
    }
    let target = match target {
        Some(name) => Some(target_column(&frame, name, label)?),
        None => None,
    };
    Ok(Table {
        features,
        x,
        rows,
        target,
    })
}

/// A column as `f64`s; nulls and values that are not numbers fail, naming the column.
fn numbers(frame: &DataFrame, name: &str, label: &str) -> Result<Vec<f64>, TaskError> {
    let column: &Column = frame
        .column(name)
        .map_err(permanent(format!("reading {label}")))?;
    let not_numbers = || {
        TaskError::Permanent(format!(
            "column `{name}` of {label} is {}, not numbers: one-hot encode it first (a `one_hot` step of `process`)",
            column.dtype()
        ))
    };
    if !(column.dtype().is_primitive_numeric() || column.dtype() == &DataType::Boolean) {
        return Err(not_numbers());
    }
    let cast = column.cast(&DataType::Float64).map_err(|_| not_numbers())?;
    let values = cast
        .f64()
        .map_err(permanent(format!("reading column `{name}` of {label}")))?;
    if values.null_count() > 0 {
        return Err(TaskError::Permanent(format!(
            "column `{name}` of {label} has {} empty values: drop or fill them first",
            values.null_count()
        )));
    }
    Ok(values.into_no_null_iter().collect())
}

fn target_column(frame: &DataFrame, name: &str, label: &str) -> Result<TargetColumn, TaskError> {
    let column = frame
        .column(name)
        .map_err(permanent(format!("reading {label}")))?;
    if column.null_count() > 0 {
        return Err(TaskError::Permanent(format!(
            "target `{name}` of {label} has {} empty values",
            column.null_count()
        )));
    }
    let read = permanent(format!("reading target `{name}` of {label}"));
    Ok(match column.dtype() {
        DataType::Float32 | DataType::Float64 => {
            TargetColumn::Numbers(numbers(frame, name, label)?)
        }
        DataType::Boolean => TargetColumn::Labels(
            column
                .bool()
                .map_err(read)?
                .iter()
                .map(|value| serde_json::Value::Bool(value.unwrap_or(false)))
                .collect(),
        ),
        dtype if dtype.is_integer() => TargetColumn::Labels(
            column
                .cast(&DataType::Int64)
                .map_err(&read)?
                .i64()
                .map_err(&read)?
                .into_no_null_iter()
                .map(serde_json::Value::from)
                .collect(),
        ),
        _ => TargetColumn::Labels(
            column
                .cast(&DataType::String)
                .map_err(&read)?
                .str()
                .map_err(&read)?
                .iter()
                .map(|text| serde_json::Value::String(text.unwrap_or_default().to_owned()))
                .collect(),
        ),
    })
}

/// Class labels sorted (numbers numerically, text lexically), and each row's class index.
pub fn classes(values: &[serde_json::Value]) -> (Vec<serde_json::Value>, Vec<usize>) {
    let mut classes: Vec<serde_json::Value> = Vec::new();
    for value in values {
        if !classes.contains(value) {
            classes.push(value.clone());
        }
    }
    classes.sort_by(|a, b| match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        _ => a.to_string().cmp(&b.to_string()),
    });
    let labels = values
        .iter()
        .map(|value| classes.iter().position(|class| class == value).unwrap_or(0))
        .collect();
    (classes, labels)
}

/// Reads a table from an in-memory frame (for tests and callers that already have one).
pub fn from_frame(
    frame: DataFrame,
    label: &str,
    features: Option<&[String]>,
    target: Option<&str>,
) -> Result<Table, TaskError> {
    load(frame.lazy(), label, features, target)
}

#[cfg(test)]
mod tests {
    use polars::prelude::{NamedFrom, Series};

    use super::*;

    #[test]
    fn features_and_labels_come_out_row_major() {
        let frame = DataFrame::new_infer_height(vec![
            Series::new("a".into(), [1.0, 2.0, 3.0]).into(),
            Series::new("b".into(), [10i64, 20, 30]).into(),
            Series::new("y".into(), ["no", "yes", "no"]).into(),
        ])
        .unwrap();
        let table = from_frame(frame, "test", None, Some("y")).unwrap();
        assert_eq!(table.features, ["a", "b"]);
        assert_eq!(table.x, [1.0, 10.0, 2.0, 20.0, 3.0, 30.0]);
        let Some(TargetColumn::Labels(labels)) = &table.target else {
            panic!("{:?}", table.target)
        };
        let (classes, indices) = classes(labels);
        assert_eq!(classes, [serde_json::json!("no"), serde_json::json!("yes")]);
        assert_eq!(indices, [0, 1, 0]);
    }

    #[test]
    fn text_features_and_missing_columns_are_refused_by_name() {
        let frame = DataFrame::new_infer_height(vec![
            Series::new("a".into(), ["x", "y"]).into(),
            Series::new("y".into(), [1i64, 0]).into(),
        ])
        .unwrap();
        let error = from_frame(frame.clone(), "train@1", None, Some("y")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("column `a` of train@1 is str"),
            "{error}"
        );
        let error = from_frame(frame, "train@1", None, Some("quality")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "train@1 has no column `quality` (its columns: a, y)"
        );
    }
}
