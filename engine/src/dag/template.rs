//! `${…}` references in task params, replaced when an attempt starts: the run's params
//! (`${params.name}`) and what Airflow's templates give (`${run.id}`, `${run.logical_date}`,
//! `${dag.id}`, `${task.id}`, `${task.try}`).
//!
//! A string that is exactly one reference becomes the referenced value with its type (a number
//! param in a number field stays a number); a reference inside other text is written into it
//! (strings as they are, other values as JSON). `$${` writes a literal `${`. The loader checks
//! every reference against the DAG's declared params, so a wrong name is a load-time error.

use std::fmt::Write as _;

use serde_json::Value;

/// One `${…}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `${params.NAME}`: a param of the run.
    Param(String),
    /// `${run.id}`.
    RunId,
    /// `${run.logical_date}`: RFC 3339, UTC.
    LogicalDate,
    /// `${dag.id}`.
    DagId,
    /// `${task.id}`.
    TaskId,
    /// `${task.try}`: the attempt's try number, from 1.
    TaskTry,
}

/// The names a reference may use, for messages.
pub const REFERENCE_NAMES: &str =
    "params.<name>, run.id, run.logical_date, dag.id, task.id, task.try";

/// A reference that cannot be read or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `${` without its closing `}`.
    #[error("`${{` without a closing `}}` in {0:?}")]
    Unclosed(String),
    /// A name that is no reference.
    #[error(
        "`${{{0}}}` is not a reference kiln knows; use one of {REFERENCE_NAMES}, or `$${{` for a literal `${{` (a shell's `${{VAR}}`)"
    )]
    Unknown(String),
    /// A param the run does not have.
    #[error("`${{params.{0}}}` names no param of this run")]
    MissingParam(String),
}

/// The values references resolve to for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Bindings {
    /// The run's params, defaults applied.
    pub params: serde_json::Map<String, Value>,
    /// The run's id.
    pub run_id: i64,
    /// The run's logical date, RFC 3339.
    pub logical_date: String,
    /// The DAG's id.
    pub dag_id: String,
    /// The task's id.
    pub task_id: String,
    /// The attempt's try number.
    pub try_number: i64,
}

impl Bindings {
    fn value(&self, reference: &Reference) -> Result<Value, TemplateError> {
        Ok(match reference {
            Reference::Param(name) => self
                .params
                .get(name)
                .cloned()
                .ok_or_else(|| TemplateError::MissingParam(name.clone()))?,
            Reference::RunId => Value::from(self.run_id),
            Reference::LogicalDate => Value::from(self.logical_date.clone()),
            Reference::DagId => Value::from(self.dag_id.clone()),
            Reference::TaskId => Value::from(self.task_id.clone()),
            Reference::TaskTry => Value::from(self.try_number),
        })
    }
}

/// A piece of a string: text as it is, or a reference.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Reference(Reference),
}

fn reference(name: &str) -> Result<Reference, TemplateError> {
    let name = name.trim();
    Ok(match name {
        "run.id" => Reference::RunId,
        "run.logical_date" => Reference::LogicalDate,
        "dag.id" => Reference::DagId,
        "task.id" => Reference::TaskId,
        "task.try" => Reference::TaskTry,
        _ => match name.strip_prefix("params.") {
            Some(param) if !param.is_empty() && !param.contains('.') => {
                Reference::Param(param.to_owned())
            }
            _ => return Err(TemplateError::Unknown(name.to_owned())),
        },
    })
}

/// Splits a string into text and references; `None` when it has no `$` at all (the common
/// case, which then costs nothing).
fn pieces(text: &str) -> Result<Option<Vec<Piece>>, TemplateError> {
    if !text.contains('$') {
        return Ok(None);
    }
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(escaped) = after.strip_prefix("$${") {
            literal.push_str("${");
            rest = escaped;
        } else if let Some(open) = after.strip_prefix("${") {
            let close = open
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(text.to_owned()))?;
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Reference(reference(&open[..close])?));
            rest = &open[close + 1..];
        } else {
            literal.push('$');
            rest = &after[1..];
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(Some(pieces))
}

/// Every reference in `value`'s strings, in order, or the first that cannot be read.
pub fn references(value: &Value) -> Result<Vec<Reference>, TemplateError> {
    let mut found = Vec::new();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(text) => {
                for piece in pieces(text)?.into_iter().flatten() {
                    if let Piece::Reference(reference) = piece {
                        found.push(reference);
                    }
                }
            }
            Value::Array(items) => stack.extend(items.iter().rev()),
            Value::Object(fields) => stack.extend(fields.values().rev()),
            _ => {}
        }
    }
    Ok(found)
}

/// `value` with every reference replaced (see the module's rules).
pub fn substitute(value: &Value, bindings: &Bindings) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(text) => match pieces(text)? {
            None => value.clone(),
            Some(pieces) => match pieces.as_slice() {
                [Piece::Reference(reference)] => bindings.value(reference)?,
                _ => {
                    let mut out = String::new();
                    for piece in pieces {
                        match piece {
                            Piece::Text(text) => out.push_str(&text),
                            Piece::Reference(reference) => match bindings.value(&reference)? {
                                Value::String(text) => out.push_str(&text),
                                other => {
                                    let _ = write!(out, "{other}");
                                }
                            },
                        }
                    }
                    Value::String(out)
                }
            },
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| substitute(item, bindings))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, item)| Ok((key.clone(), substitute(item, bindings)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bindings() -> Bindings {
        Bindings {
            params: json!({ "name": "kiln", "threshold": 0.8, "n": 3 })
                .as_object()
                .cloned()
                .unwrap(),
            run_id: 42,
            logical_date: "2026-12-04T00:00:00Z".to_owned(),
            dag_id: "hello".to_owned(),
            task_id: "greet".to_owned(),
            try_number: 2,
        }
    }

    #[test]
    fn a_whole_reference_keeps_its_type_and_text_interpolates() {
        let params = json!({
            "args": ["hello ${params.name}", "${params.n}", "run ${run.id} try ${task.try}"],
            "gate": { "min": "${params.threshold}" },
            "when": "${run.logical_date}",
            "who": "${dag.id}.${task.id}",
            "price": "$5 and $${params.name}",
            "plain": 7
        });
        let out = substitute(&params, &bindings()).unwrap();
        assert_eq!(
            out,
            json!({
                "args": ["hello kiln", 3, "run 42 try 2"],
                "gate": { "min": 0.8 },
                "when": "2026-12-04T00:00:00Z",
                "who": "hello.greet",
                "price": "$5 and ${params.name}",
                "plain": 7
            })
        );
    }

    #[test]
    fn bad_references_are_named() {
        let error = |text: &str| {
            substitute(&json!(text), &bindings())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error("${params.missing}"),
            "`${params.missing}` names no param of this run"
        );
        assert_eq!(
            error("${run.owner}"),
            "`${run.owner}` is not a reference kiln knows; use one of params.<name>, run.id, run.logical_date, dag.id, task.id, task.try, or `$${` for a literal `${` (a shell's `${VAR}`)"
        );
        assert_eq!(
            error("a ${params.name"),
            "`${` without a closing `}` in \"a ${params.name\""
        );
        assert_eq!(
            references(&json!({ "a": ["${params.x}", "${run.id} ${params.y}"] })).unwrap(),
            vec![
                Reference::Param("x".to_owned()),
                Reference::RunId,
                Reference::Param("y".to_owned())
            ]
        );
    }
}
