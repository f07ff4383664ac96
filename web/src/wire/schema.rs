//! Schemas for the engine types the wire types hold (`#[schemars(with = "…")]`): the engine
//! knows nothing of HTTP, so the shapes it takes on the wire are written here. The enums are
//! listed from the engine's own variants, so a new one shows up in the document by itself.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// What `Sha256Digest` parses: 64 hex digits, either case.
pub(crate) const SHA256_PATTERN: &str = "^[0-9a-fA-F]{64}$";

fn string_enum(description: &str, names: &[&str]) -> Schema {
    json_schema!({ "type": "string", "enum": names, "description": description })
}

/// `kiln_engine::state::RunState`.
pub(crate) struct RunState;

impl JsonSchema for RunState {
    fn schema_name() -> Cow<'static, str> {
        "RunState".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = kiln_engine::state::RunState::ALL
            .iter()
            .map(|state| state.as_str())
            .collect();
        string_enum("The state of a run.", &names)
    }
}

/// `kiln_engine::state::TaskState`.
pub(crate) struct TaskState;

impl JsonSchema for TaskState {
    fn schema_name() -> Cow<'static, str> {
        "TaskState".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = kiln_engine::state::TaskState::ALL
            .iter()
            .map(|state| state.as_str())
            .collect();
        string_enum("The state of a task instance.", &names)
    }
}

/// `kiln_engine::dag::ArtifactKind`.
pub(crate) struct ArtifactKind;

impl JsonSchema for ArtifactKind {
    fn schema_name() -> Cow<'static, str> {
        "ArtifactKind".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        use kiln_engine::dag::ArtifactKind::{Dataset, File, Model};
        // The engine has no list of kinds; the match stops compiling when it gains one.
        let names = [Dataset, Model, File].map(|kind| match kind {
            Dataset | Model | File => kind.as_str(),
        });
        string_enum("The kind of an artifact.", &names)
    }
}

/// `kiln_engine::dag::ModelAlias`.
pub(crate) struct ModelAlias;

impl JsonSchema for ModelAlias {
    fn schema_name() -> Cow<'static, str> {
        "ModelAlias".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        use kiln_engine::dag::ModelAlias::{Production, Staging};
        // The engine has no list of aliases; the match stops compiling when it gains one.
        let names = [Production, Staging].map(|alias| match alias {
            Production | Staging => alias.as_str(),
        });
        string_enum("An alias of the model registry.", &names)
    }
}

/// `kiln_engine::artifacts::Sha256Digest`.
pub(crate) struct Sha256;

impl JsonSchema for Sha256 {
    fn schema_name() -> Cow<'static, str> {
        "Sha256".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": SHA256_PATTERN,
            "description": "A SHA-256 digest, in hex (sent lowercase).",
        })
    }
}

/// `kiln_engine::store::ColumnSchema`.
#[derive(JsonSchema)]
#[allow(dead_code)] // Only its schema is used.
pub(crate) struct ColumnSchema {
    /// The column's name.
    name: String,
    /// Its type, in the writer's words (`Float64`, `String`, …).
    dtype: String,
}

// Naming every field, this stops compiling when the engine's type gains or loses one.
impl From<kiln_engine::store::ColumnSchema> for ColumnSchema {
    fn from(column: kiln_engine::store::ColumnSchema) -> ColumnSchema {
        let kiln_engine::store::ColumnSchema { name, dtype } = column;
        ColumnSchema { name, dtype }
    }
}
