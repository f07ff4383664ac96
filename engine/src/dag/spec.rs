//! The raw shapes of a DAG file, exactly as TOML spells them, before any cross-checking.
//!
//! Every struct denies unknown fields so a misspelt key is an error rather than a silently
//! ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[defaults]`: task settings that apply unless a task overrides them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DefaultsSpec {
    pub(crate) retries: Option<u32>,
    pub(crate) retry_delay: Option<String>,
    pub(crate) retry_backoff: Option<bool>,
    pub(crate) max_retry_delay: Option<String>,
    pub(crate) max_lost_attempts: Option<u32>,
    pub(crate) timeout: Option<String>,
    pub(crate) queue: Option<String>,
    pub(crate) priority: Option<i32>,
    pub(crate) trigger_rule: Option<super::TriggerRule>,
    pub(crate) cache: Option<bool>,
}

/// `[[tasks]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskSpec {
    pub(crate) id: String,
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) description: String,
    pub(crate) params: Option<toml::Value>,
    #[serde(default)]
    pub(crate) depends_on: Vec<String>,
    pub(crate) trigger_rule: Option<super::TriggerRule>,
    pub(crate) retries: Option<u32>,
    pub(crate) retry_delay: Option<String>,
    pub(crate) retry_backoff: Option<bool>,
    pub(crate) max_retry_delay: Option<String>,
    pub(crate) max_lost_attempts: Option<u32>,
    pub(crate) timeout: Option<String>,
    #[serde(default)]
    pub(crate) inputs: BTreeMap<String, InputSpec>,
    #[serde(default)]
    pub(crate) outputs: OutputsSpec,
    pub(crate) queue: Option<String>,
    pub(crate) priority: Option<i32>,
    pub(crate) cache: Option<bool>,
}

/// One entry of a task's `inputs` table: `{ from = "task.output" }` or
/// `{ dataset = "name", version = 3 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InputSpec {
    pub(crate) from: Option<String>,
    pub(crate) dataset: Option<String>,
    pub(crate) version: Option<u64>,
}

/// A task's `outputs`: a list of names, or a table of names to settings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OutputsSpec {
    Names(Vec<String>),
    Table(BTreeMap<String, OutputSettings>),
}

impl Default for OutputsSpec {
    fn default() -> Self {
        OutputsSpec::Names(Vec::new())
    }
}

/// `outputs.NAME = { kind = "model", publish_as = "wine_quality" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutputSettings {
    pub(crate) kind: Option<super::ArtifactKind>,
    pub(crate) publish_as: Option<String>,
    pub(crate) media_type: Option<String>,
    pub(crate) promote: Option<super::ModelAlias>,
}

/// `[params.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParamSpecSpec {
    #[serde(rename = "type")]
    pub(crate) param_type: super::ParamType,
    pub(crate) default: Option<toml::Value>,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) choices: Vec<toml::Value>,
}

/// Converts TOML to JSON; dates and times become RFC 3339 strings.
pub(crate) fn toml_to_json(value: toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(text) => serde_json::Value::String(text),
        toml::Value::Integer(number) => serde_json::Value::from(number),
        toml::Value::Float(number) => serde_json::Number::from_f64(number)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        toml::Value::Boolean(flag) => serde_json::Value::Bool(flag),
        toml::Value::Datetime(datetime) => serde_json::Value::String(datetime.to_string()),
        toml::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(toml_to_json).collect())
        }
        toml::Value::Table(table) => serde_json::Value::Object(
            table
                .into_iter()
                .map(|(key, value)| (key, toml_to_json(value)))
                .collect(),
        ),
    }
}
