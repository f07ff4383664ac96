//! The model registry and serving on the wire: models, their versions and alias moves,
//! predictions, promotions and rollbacks.

use kiln_engine::dag::ModelAlias;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::artifacts::AttemptView;
use super::schema;

/// `GET /api/v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModelList {
    /// Models, by name.
    pub models: Vec<ModelSummary>,
}

/// A model in a list.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModelSummary {
    /// Its name.
    pub name: String,
    /// Its newest version.
    pub latest_version: i64,
    /// The version served.
    pub production: Option<i64>,
    /// The version being tried.
    pub staging: Option<i64>,
    /// RFC 3339.
    pub updated_at: String,
}

/// `GET /api/v1/models/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModelDetail {
    /// Its name.
    pub name: String,
    /// The version served, when there is one.
    pub version: Option<i64>,
    /// The served version's metrics (`accuracy` among them for classifiers).
    pub metrics: serde_json::Value,
    /// What the served version is.
    pub served: Option<ServedView>,
    /// Every version, newest first.
    pub versions: Vec<ModelVersionView>,
    /// Alias moves, oldest first.
    pub history: Vec<AliasEventView>,
}

/// The served version's model.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ServedView {
    /// The algorithm and hyperparameters.
    pub algorithm: serde_json::Value,
    /// `classification`, `regression` or `clustering`.
    pub task: String,
    /// The raw inputs a prediction takes: `{name, kind}` with kind `number` or `category`.
    pub features: Vec<serde_json::Value>,
    /// Class labels, for classifiers.
    pub classes: Vec<serde_json::Value>,
    /// When it was trained.
    pub trained_at: String,
    /// The dataset version it was trained on.
    pub training_data: serde_json::Value,
    /// The SHA-256 of the envelope.
    pub sha256: String,
}

/// A version of a model.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ModelVersionView {
    /// The version number.
    pub version: i64,
    /// Its aliases (`production`, `staging`).
    pub aliases: Vec<String>,
    /// Its metrics, as its deploy recorded them.
    pub metrics: serde_json::Value,
    /// The attempt that deployed it.
    pub producer: Option<AttemptView>,
    /// RFC 3339.
    pub created_at: String,
}

/// One move of an alias.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AliasEventView {
    /// The alias.
    pub alias: String,
    /// The version it points at since.
    pub version: i64,
    /// The version before.
    pub previous: Option<i64>,
    /// Why.
    pub reason: String,
    /// RFC 3339.
    pub at: String,
}

/// `POST /api/v1/models/{name}/predict`: rows as objects, or columns as arrays.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// Exactly one of the two, as the handler insists.
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct PredictRequest {
    /// One object per row, keyed by feature name.
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub rows: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// One array per feature, all of the same length.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, Vec<serde_json::Value>>")]
    pub columns: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The answer to a prediction request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PredictResponse {
    /// The model.
    pub model: String,
    /// The version that answered.
    pub version: i64,
    /// One prediction per row: a class label, a number or a cluster.
    pub predictions: Vec<serde_json::Value>,
    /// Per row, the probability of each class (in `classes` order), when the model has them.
    pub probabilities: Option<Vec<Vec<f64>>>,
    /// The class labels, for classifiers.
    pub classes: Option<Vec<serde_json::Value>>,
}

/// `POST /api/v1/models/{name}/promote`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The version to point the alias at.
    pub version: i64,
    /// `production` (default) or `staging`.
    #[serde(default)]
    #[schemars(with = "Option<schema::ModelAlias>")]
    pub alias: Option<ModelAlias>,
}

/// `POST /api/v1/models/{name}/rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// `production` (default) or `staging`.
    #[serde(default)]
    #[schemars(with = "Option<schema::ModelAlias>")]
    pub alias: Option<ModelAlias>,
}

/// What an alias move did.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AliasMove {
    /// The alias.
    #[schemars(with = "schema::ModelAlias")]
    pub alias: ModelAlias,
    /// The version it points at now.
    pub version: i64,
    /// The version it pointed at before.
    pub previous: Option<i64>,
}
