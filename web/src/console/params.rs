//! The trigger form, generated from a DAG's typed params, and the reading of its answers back
//! into JSON for the scheduler, which checks them exactly as it checks API triggers.

use std::collections::{BTreeMap, HashMap};

use kiln_engine::dag::{ParamSpec, ParamType};
use maud::{Markup, html};
use serde_json::{Map, Value};

/// Form fields are named `param.<name>`, so they can never clash with `csrf` and friends.
const PREFIX: &str = "param.";

/// A value as the form shows it: strings bare, everything else as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The fields for `params`, filled with `values` (a refused submission) or else the defaults.
pub(crate) fn fields(
    params: &BTreeMap<String, ParamSpec>,
    values: Option<&HashMap<String, String>>,
) -> Markup {
    html! {
        @for (name, spec) in params {
            @let field = format!("{PREFIX}{name}");
            @let current = values
                .map(|values| values.get(name).cloned().unwrap_or_default())
                .or_else(|| spec.default.as_ref().map(shown));
            @let hint = spec.description.as_str();
            label.param {
                span.name { (name) }
                span.param-type { (spec.param_type.as_str()) @if spec.default.is_none() { ", required" } }
                @if !spec.choices.is_empty() {
                    select name=(field) {
                        @if spec.default.is_none() {
                            option value="" { "—" }
                        }
                        @for choice in &spec.choices {
                            @let value = shown(choice);
                            option value=(value) selected[current.as_deref() == Some(value.as_str())] { (value) }
                        }
                    }
                } @else {
                    @match spec.param_type {
                        ParamType::String => { input type="text" name=(field) value=[current.as_deref()]; }
                        ParamType::Integer => { input type="number" step="1" name=(field) value=[current.as_deref()]; }
                        ParamType::Number => { input type="number" step="any" name=(field) value=[current.as_deref()]; }
                        ParamType::Boolean => { select name=(field) {
                            @if spec.default.is_none() {
                                option value="" { "—" }
                            }
                            option value="true" selected[current.as_deref() == Some("true")] { "true" }
                            option value="false" selected[current.as_deref() == Some("false")] { "false" }
                        } }
                        ParamType::Array | ParamType::Object => {
                            textarea name=(field) rows="3" spellcheck="false" {
                                (current.as_deref().unwrap_or_default())
                            }
                        }
                    }
                }
                @if !hint.is_empty() {
                    span.hint { (hint) }
                }
            }
        }
    }
}

/// The submitted values by param name (for showing a refused form again).
pub(crate) fn submitted(form: &[(String, String)]) -> HashMap<String, String> {
    form.iter()
        .filter_map(|(field, value)| {
            field
                .strip_prefix(PREFIX)
                .map(|name| (name.to_owned(), value.clone()))
        })
        .collect()
}

/// Reads the submitted fields as JSON values of each param's type. A field left empty means
/// "use the default" (a string param's empty field is the empty string, since it was shown
/// filled in). Types and choices are checked again by the scheduler.
pub(crate) fn parse(
    params: &BTreeMap<String, ParamSpec>,
    form: &[(String, String)],
) -> Result<Map<String, Value>, String> {
    let submitted = submitted(form);
    let mut values = Map::new();
    for (name, spec) in params {
        let Some(text) = submitted.get(name) else {
            continue;
        };
        let trimmed = text.trim();
        let value = match spec.param_type {
            ParamType::String => Value::String(text.clone()),
            _ if trimmed.is_empty() => continue,
            ParamType::Integer => trimmed
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("param `{name}`: `{trimmed}` is not an integer"))?,
            ParamType::Boolean => match trimmed {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(format!("param `{name}`: `{trimmed}` is not true or false")),
            },
            ParamType::Number | ParamType::Array | ParamType::Object => {
                serde_json::from_str(trimmed).map_err(|error| {
                    format!(
                        "param `{name}`: `{trimmed}` is not a JSON {}: {error}",
                        spec.param_type.as_str()
                    )
                })?
            }
        };
        values.insert(name.clone(), value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kiln_engine::dag::{ParamSpec, ParamType};
    use serde_json::json;

    fn spec(param_type: ParamType, default: Option<serde_json::Value>) -> ParamSpec {
        ParamSpec {
            param_type,
            default,
            description: String::new(),
            choices: Vec::new(),
        }
    }

    fn params() -> BTreeMap<String, ParamSpec> {
        BTreeMap::from([
            ("count".to_owned(), spec(ParamType::Integer, Some(json!(1)))),
            ("ratio".to_owned(), spec(ParamType::Number, None)),
            ("name".to_owned(), spec(ParamType::String, Some(json!("x")))),
            ("flag".to_owned(), spec(ParamType::Boolean, None)),
            ("list".to_owned(), spec(ParamType::Array, None)),
            ("table".to_owned(), spec(ParamType::Object, None)),
        ])
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (format!("param.{name}"), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn fields_become_typed_json() {
        let parsed = super::parse(
            &params(),
            &form(&[
                ("count", " 3 "),
                ("ratio", "0.5"),
                ("name", ""),
                ("flag", "true"),
                ("list", "[1, 2]"),
                ("table", ""),
                ("unknown", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(
            serde_json::Value::Object(parsed),
            json!({ "count": 3, "ratio": 0.5, "name": "", "flag": true, "list": [1, 2] })
        );
    }

    #[test]
    fn unreadable_fields_name_the_param() {
        let error = super::parse(&params(), &form(&[("count", "two")])).unwrap_err();
        assert_eq!(error, "param `count`: `two` is not an integer");
        let error = super::parse(&params(), &form(&[("list", "[1,")])).unwrap_err();
        assert!(
            error.starts_with("param `list`: `[1,` is not a JSON array"),
            "{error}"
        );
    }
}
