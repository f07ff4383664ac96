//! A typed client for the parts of MLflow's REST API (2.0 endpoints) the mirror uses:
//! experiments, runs, batched logging, the model registry and its aliases.
//!
//! Credentials come from the environment as MLflow's own clients read them and never appear in
//! `Debug` output, logs or errors: a tracking URI with `user:password@` has them moved into
//! basic auth and removed from the URL before anything can print it.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How long one call may take before it counts as failed (and is retried later).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take: an MLflow that is down should fail fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an unexpected answer an error quotes.
const QUOTED_BODY: usize = 200;

/// MLflow's limits per `runs/log-batch` call.
const BATCH_METRICS: usize = 1000;
const BATCH_PARAMS: usize = 100;
const BATCH_TAGS: usize = 100;

/// How the client proves who it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum MlflowAuth {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer …` (`MLFLOW_TRACKING_TOKEN`).
    Bearer(String),
    /// HTTP basic auth (`MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
}

impl fmt::Debug for MlflowAuth {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            MlflowAuth::None => "None",
            MlflowAuth::Bearer(_) => "Bearer(<hidden>)",
            MlflowAuth::Basic { .. } => "Basic(<hidden>)",
        })
    }
}

/// Where MLflow is and how to sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlflowConfig {
    /// The tracking server's base URL, without credentials (`http://127.0.0.1:5000`).
    pub tracking_uri: String,
    /// Its credentials.
    pub auth: MlflowAuth,
}

impl MlflowConfig {
    /// A configuration for a tracking URI, with credentials from the environment:
    /// `MLFLOW_TRACKING_TOKEN` (bearer), else `MLFLOW_TRACKING_USERNAME` and
    /// `MLFLOW_TRACKING_PASSWORD` (basic), else any `user:password@` in the URI.
    pub fn from_env(tracking_uri: &str) -> Result<MlflowConfig, MlflowError> {
        let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        MlflowConfig::new(
            tracking_uri,
            variable("MLFLOW_TRACKING_TOKEN"),
            variable("MLFLOW_TRACKING_USERNAME"),
            variable("MLFLOW_TRACKING_PASSWORD"),
        )
    }

    /// A configuration from explicit parts (see [`MlflowConfig::from_env`] for the order).
    pub fn new(
        tracking_uri: &str,
        token: Option<String>,
        username: Option<String>,
        password: Option<String>,
    ) -> Result<MlflowConfig, MlflowError> {
        let mut url =
            reqwest::Url::parse(tracking_uri).map_err(|error| MlflowError::InvalidUri {
                reason: error.to_string(),
            })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(MlflowError::InvalidUri {
                reason: format!(
                    "the scheme is `{}`; kiln talks to a tracking server over http or https",
                    url.scheme()
                ),
            });
        }
        let embedded = (!url.username().is_empty()).then(|| MlflowAuth::Basic {
            username: url.username().to_owned(),
            password: url.password().unwrap_or_default().to_owned(),
        });
        // Neither can fail on an http(s) URL; the credentials must not stay in a printable URL.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let auth = match (token, username) {
            (Some(token), _) => MlflowAuth::Bearer(token),
            (None, Some(username)) => MlflowAuth::Basic {
                username,
                password: password.unwrap_or_default(),
            },
            (None, None) => embedded.unwrap_or_default(),
        };
        Ok(MlflowConfig {
            tracking_uri: url.as_str().trim_end_matches('/').to_owned(),
            auth,
        })
    }
}

/// A failed MLflow call.
#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    /// The tracking URI is not one kiln can use.
    #[error("invalid MLflow tracking URI: {reason}")]
    InvalidUri {
        /// Why.
        reason: String,
    },
    /// MLflow could not be reached, or did not answer in time.
    #[error("cannot reach MLflow at {endpoint}: {source}")]
    Unreachable {
        /// The endpoint called.
        endpoint: String,
        /// Why.
        source: reqwest::Error,
    },
    /// MLflow answered with an error.
    #[error("MLflow answered {endpoint} with HTTP {status} {code}: {message}")]
    Api {
        /// The endpoint called.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// MLflow's error code (`RESOURCE_ALREADY_EXISTS`, …), or empty.
        code: String,
        /// MLflow's message, or the start of the body.
        message: String,
    },
    /// MLflow answered, but not with the JSON its API documents.
    #[error(
        "MLflow answered {endpoint} with HTTP {status} and a body that is not the expected JSON ({detail}): {body:?}"
    )]
    Garbled {
        /// The endpoint called.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// What did not parse.
        detail: String,
        /// The start of the body.
        body: String,
    },
    /// MLflow holds something that stops the mirror (a deleted experiment, say).
    #[error("{0}")]
    Refused(String),
    /// The outbox or the id map could not be read or written.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl MlflowError {
    /// MLflow's error code, for an error answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            MlflowError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether MLflow was not there at all (so sending anything else now is pointless).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, MlflowError::Unreachable { .. })
    }
}

/// A metric value at a time and step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Its name.
    pub key: String,
    /// Its value.
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The step (0 for a single value).
    pub step: i64,
}

/// A key and a value (a param or a tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

impl KeyValue {
    /// A key and a value.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// An experiment as MLflow describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Experiment {
    /// Its id.
    pub experiment_id: String,
    /// Its name.
    pub name: String,
    /// `active` or `deleted`.
    #[serde(default)]
    pub lifecycle_stage: String,
}

/// A run's identity and state as MLflow describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunInfo {
    /// Its id.
    pub run_id: String,
    /// Its experiment.
    #[serde(default)]
    pub experiment_id: String,
    /// `RUNNING`, `FINISHED`, `FAILED`, `KILLED` or `SCHEDULED`.
    #[serde(default)]
    pub status: String,
}

/// A model version as MLflow describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ModelVersion {
    /// The registered model.
    pub name: String,
    /// MLflow's version number, as text.
    pub version: String,
    /// Where the model is.
    #[serde(default)]
    pub source: String,
    /// The run it came from.
    #[serde(default)]
    pub run_id: String,
}

/// What creating a run needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateRun {
    /// The experiment.
    pub experiment_id: String,
    /// The name shown in MLflow.
    pub run_name: String,
    /// Milliseconds since the Unix epoch.
    pub start_time: i64,
    /// Tags set at creation (searchable at once).
    pub tags: Vec<KeyValue>,
}

/// A client for one tracking server.
#[derive(Clone)]
pub struct MlflowClient {
    http: reqwest::Client,
    base: String,
    auth: MlflowAuth,
}

impl fmt::Debug for MlflowClient {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MlflowClient")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    message: String,
}

impl MlflowClient {
    /// A client for the configured server.
    pub fn new(config: &MlflowConfig) -> MlflowClient {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_default();
        MlflowClient {
            http,
            base: config.tracking_uri.clone(),
            auth: config.auth.clone(),
        }
    }

    /// The tracking server's base URL (without credentials).
    pub fn tracking_uri(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, endpoint: &str) -> reqwest::RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}/api/2.0/mlflow/{endpoint}", self.base));
        match &self.auth {
            MlflowAuth::None => builder,
            MlflowAuth::Bearer(token) => builder.bearer_auth(token),
            MlflowAuth::Basic { username, password } => {
                builder.basic_auth(username, Some(password))
            }
        }
    }

    /// Sends a request and reads its JSON answer; error answers become [`MlflowError::Api`].
    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<T, MlflowError> {
        let unreachable = |source: reqwest::Error| MlflowError::Unreachable {
            endpoint: endpoint.to_owned(),
            // The endpoint is named already; the URL would only repeat it.
            source: source.without_url(),
        };
        let response = builder.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        let quoted = || {
            let text = String::from_utf8_lossy(&body);
            text.chars().take(QUOTED_BODY).collect::<String>()
        };
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(error) => (error.error_code, error.message),
                Err(_) => (String::new(), quoted()),
            };
            return Err(MlflowError::Api {
                endpoint: endpoint.to_owned(),
                status: status.as_u16(),
                code,
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|error| MlflowError::Garbled {
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            detail: error.to_string(),
            body: quoted(),
        })
    }

    async fn post<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &serde_json::Value,
    ) -> Result<T, MlflowError> {
        let builder = self.request(reqwest::Method::POST, endpoint).json(body);
        self.call(endpoint, builder).await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Result<T, MlflowError> {
        let builder = self.request(reqwest::Method::GET, endpoint).query(query);
        self.call(endpoint, builder).await
    }

    /// The experiment with this name (active or deleted), if there is one.
    pub async fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            experiment: Experiment,
        }
        match self
            .get::<Answer>("experiments/get-by-name", &[("experiment_name", name)])
            .await
        {
            Ok(answer) => Ok(Some(answer.experiment)),
            Err(error) if error.code() == Some("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates an experiment; answers its id. An existing name fails with
    /// `RESOURCE_ALREADY_EXISTS`.
    pub async fn experiment_create(
        &self,
        name: &str,
        tags: &[KeyValue],
    ) -> Result<String, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            experiment_id: String,
        }
        let answer: Answer = self
            .post(
                "experiments/create",
                &serde_json::json!({ "name": name, "tags": tags }),
            )
            .await?;
        Ok(answer.experiment_id)
    }

    /// Creates a run; answers its id.
    pub async fn run_create(&self, run: &CreateRun) -> Result<String, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            run: RunBody,
        }
        #[derive(Deserialize)]
        struct RunBody {
            info: RunInfo,
        }
        let body =
            serde_json::to_value(run).map_err(|error| MlflowError::Refused(error.to_string()))?;
        let answer: Answer = self.post("runs/create", &body).await?;
        Ok(answer.run.info.run_id)
    }

    /// The active runs of an experiment that match a filter (MLflow's search syntax), at most
    /// `max_results`.
    pub async fn run_search(
        &self,
        experiment_id: &str,
        filter: &str,
        max_results: u32,
    ) -> Result<Vec<RunInfo>, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            runs: Vec<RunBody>,
        }
        #[derive(Deserialize)]
        struct RunBody {
            info: RunInfo,
        }
        let answer: Answer = self
            .post(
                "runs/search",
                &serde_json::json!({
                    "experiment_ids": [experiment_id],
                    "filter": filter,
                    "max_results": max_results,
                }),
            )
            .await?;
        Ok(answer.runs.into_iter().map(|run| run.info).collect())
    }

    /// Sets a run's status and end time.
    pub async fn run_update(
        &self,
        run_id: &str,
        status: &str,
        end_time: Option<i64>,
    ) -> Result<(), MlflowError> {
        let mut body = serde_json::json!({ "run_id": run_id, "status": status });
        if let Some(end_time) = end_time {
            body["end_time"] = end_time.into();
        }
        let _: serde_json::Value = self.post("runs/update", &body).await?;
        Ok(())
    }

    /// Logs metrics, params and tags in as few `log-batch` calls as MLflow's limits allow.
    /// Logging the same param value or the same metric point again changes nothing, so a
    /// retried batch is harmless.
    pub async fn run_log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), MlflowError> {
        let mut metrics = metrics.chunks(BATCH_METRICS);
        let mut params = params.chunks(BATCH_PARAMS);
        let mut tags = tags.chunks(BATCH_TAGS);
        loop {
            let (metrics, params, tags) = (metrics.next(), params.next(), tags.next());
            if metrics.is_none() && params.is_none() && tags.is_none() {
                return Ok(());
            }
            let _: serde_json::Value = self
                .post(
                    "runs/log-batch",
                    &serde_json::json!({
                        "run_id": run_id,
                        "metrics": metrics.unwrap_or_default(),
                        "params": params.unwrap_or_default(),
                        "tags": tags.unwrap_or_default(),
                    }),
                )
                .await?;
        }
    }

    /// Sets one tag on a run.
    pub async fn run_set_tag(
        &self,
        run_id: &str,
        key: &str,
        value: &str,
    ) -> Result<(), MlflowError> {
        let _: serde_json::Value = self
            .post(
                "runs/set-tag",
                &serde_json::json!({ "run_id": run_id, "key": key, "value": value }),
            )
            .await?;
        Ok(())
    }

    /// Creates a registered model, or leaves an existing one as it is.
    pub async fn registered_model_ensure(
        &self,
        name: &str,
        description: &str,
    ) -> Result<(), MlflowError> {
        let created: Result<serde_json::Value, MlflowError> = self
            .post(
                "registered-models/create",
                &serde_json::json!({ "name": name, "description": description }),
            )
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("RESOURCE_ALREADY_EXISTS") => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Every version of a registered model.
    pub async fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            model_versions: Vec<ModelVersion>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        // MLflow quotes names in filters with single quotes; a quote in the name is doubled.
        let filter = format!("name = '{}'", name.replace('\'', "''"));
        let mut versions = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut query = vec![("filter", filter.as_str()), ("max_results", "1000")];
            if let Some(token) = &page {
                query.push(("page_token", token));
            }
            let answer: Answer = self.get("model-versions/search", &query).await?;
            versions.extend(answer.model_versions);
            match answer.next_page_token.filter(|token| !token.is_empty()) {
                Some(token) => page = Some(token),
                None => return Ok(versions),
            }
        }
    }

    /// Creates a version of a registered model; answers MLflow's version number.
    pub async fn model_version_create(
        &self,
        name: &str,
        source: &str,
        run_id: Option<&str>,
        tags: &[KeyValue],
        description: &str,
    ) -> Result<String, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            model_version: ModelVersion,
        }
        let mut body = serde_json::json!({
            "name": name,
            "source": source,
            "tags": tags,
            "description": description,
        });
        if let Some(run_id) = run_id {
            body["run_id"] = run_id.into();
        }
        let answer: Answer = self.post("model-versions/create", &body).await?;
        Ok(answer.model_version.version)
    }

    /// Points an alias of a registered model at a version.
    pub async fn alias_set(
        &self,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), MlflowError> {
        let _: serde_json::Value = self
            .post(
                "registered-models/alias",
                &serde_json::json!({ "name": name, "alias": alias, "version": version }),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print() {
        let config = MlflowConfig::new(
            "https://alice:s3cret@mlflow.example:5000/",
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(config.tracking_uri, "https://mlflow.example:5000");
        assert_eq!(
            config.auth,
            MlflowAuth::Basic {
                username: "alice".to_owned(),
                password: "s3cret".to_owned()
            }
        );
        let client = MlflowClient::new(&config);
        let printed = format!("{config:?} {client:?}");
        assert!(
            !printed.contains("s3cret") && !printed.contains("alice"),
            "{printed}"
        );

        let config = MlflowConfig::new(
            "http://127.0.0.1:5000",
            Some("t0ken".to_owned()),
            Some("bob".to_owned()),
            None,
        )
        .unwrap();
        assert_eq!(config.auth, MlflowAuth::Bearer("t0ken".to_owned()));
        assert!(!format!("{config:?}").contains("t0ken"));

        let config = MlflowConfig::new(
            "http://127.0.0.1:5000",
            None,
            Some("bob".to_owned()),
            Some("pw".to_owned()),
        )
        .unwrap();
        assert_eq!(
            config.auth,
            MlflowAuth::Basic {
                username: "bob".to_owned(),
                password: "pw".to_owned()
            }
        );
    }

    #[test]
    fn only_http_tracking_servers() {
        let error = MlflowConfig::new("sqlite:///mlflow.db", None, None, None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid MLflow tracking URI: the scheme is `sqlite`; kiln talks to a tracking server over http or https"
        );
        assert!(MlflowConfig::new("not a url", None, None, None).is_err());
    }
}
