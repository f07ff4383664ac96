//! [`ArtifactStoreConfig`]: where blobs live, and how a storage backend is built from it.
//!
//! Credentials may come from the configuration or, where it leaves them out, from each cloud's
//! usual environment variables. Either way they are never shown: `Debug` prints `***`, and the
//! values end up in the [`Secrets`] that scrub every backend message.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use serde::Deserialize;

use super::error::BlobError;
use super::redact::{REDACTED, Secrets};

/// The folder under the data directory that holds a default local artifact store.
pub const DEFAULT_LOCAL_DIR: &str = "artifacts";

/// Where the artifact store keeps its blobs.
///
/// Deserializes from a table tagged by `backend`, for example in TOML:
///
/// ```toml
/// backend = "s3"
/// bucket = "kiln-artifacts"
/// region = "eu-central-1"
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum ArtifactStoreConfig {
    /// A folder on the local file system.
    Local(LocalConfig),
    /// An S3 bucket, on AWS or any S3-compatible server.
    S3(S3Config),
    /// A Google Cloud Storage bucket.
    Gcs(GcsConfig),
    /// An Azure Blob Storage container.
    Azure(AzureConfig),
}

impl ArtifactStoreConfig {
    /// The default: a local store in the `artifacts` folder of the data directory.
    pub fn local_under(data_dir: &Path) -> Self {
        ArtifactStoreConfig::Local(LocalConfig {
            root: data_dir.join(DEFAULT_LOCAL_DIR),
        })
    }

    /// Builds the storage backend and gathers the credentials its messages must not show.
    pub(crate) fn build(&self) -> Result<(Arc<dyn ObjectStore>, Secrets), BlobError> {
        match self {
            ArtifactStoreConfig::Local(config) => config.build(),
            ArtifactStoreConfig::S3(config) => config.build(),
            ArtifactStoreConfig::Gcs(config) => config.build(),
            ArtifactStoreConfig::Azure(config) => config.build(),
        }
    }
}

impl fmt::Debug for ArtifactStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactStoreConfig::Local(config) => config.fmt(f),
            ArtifactStoreConfig::S3(config) => config.fmt(f),
            ArtifactStoreConfig::Gcs(config) => config.fmt(f),
            ArtifactStoreConfig::Azure(config) => config.fmt(f),
        }
    }
}

/// A local artifact store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The folder holding the blobs; created when missing.
    pub root: PathBuf,
}

impl LocalConfig {
    fn build(&self) -> Result<(Arc<dyn ObjectStore>, Secrets), BlobError> {
        std::fs::create_dir_all(&self.root).map_err(|source| BlobError::File {
            operation: "create the artifact store folder",
            path: self.root.clone(),
            source,
        })?;
        let store =
            LocalFileSystem::new_with_prefix(&self.root).map_err(|error| BlobError::Config {
                backend: "local",
                message: Secrets::default().describe(&error),
            })?;
        Ok((Arc::new(store), Secrets::default()))
    }
}

/// An S3 bucket. Credentials left out here come from `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, then from the instance or task role.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket, which must exist.
    pub bucket: String,
    /// The region; when left out, `AWS_REGION` or `AWS_DEFAULT_REGION`, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// The server for S3-compatible stores (`http://127.0.0.1:9000`); AWS when left out.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Address the bucket in the path (`endpoint/bucket/key`), as most S3-compatible servers
    /// need. Otherwise requests are virtual-hosted (`bucket.endpoint/key`), as AWS prefers,
    /// and a configured `endpoint` must then already name the bucket.
    #[serde(default)]
    pub path_style: bool,
    /// Allow plain `http://` endpoints, for servers on a trusted network or in tests.
    #[serde(default)]
    pub allow_http: bool,
    /// The access key id.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret access key.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// The session token of temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
}

impl S3Config {
    fn build(&self) -> Result<(Arc<dyn ObjectStore>, Secrets), BlobError> {
        let explicit_credentials = self.access_key_id.is_some() || self.secret_access_key.is_some();
        // `AmazonS3Builder::from_env` reads every `AWS_*` variable; this does the same, except
        // that configured credentials keep the environment's out entirely, so a configured key
        // is never paired with a session token that belongs to another one.
        let mut builder = AmazonS3Builder::new();
        for (name, value) in std::env::vars_os() {
            let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
                continue;
            };
            if !name.starts_with("AWS_") {
                continue;
            }
            let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() else {
                continue;
            };
            let is_credential = matches!(
                key,
                AmazonS3ConfigKey::AccessKeyId
                    | AmazonS3ConfigKey::SecretAccessKey
                    | AmazonS3ConfigKey::Token
            );
            if !(explicit_credentials && is_credential) {
                builder = builder.with_config(key, value);
            }
        }
        builder = builder
            .with_bucket_name(&self.bucket)
            .with_virtual_hosted_style_request(!self.path_style)
            .with_allow_http(self.allow_http);
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(access_key_id) = &self.access_key_id {
            builder = builder.with_access_key_id(access_key_id);
        }
        if let Some(secret_access_key) = &self.secret_access_key {
            builder = builder.with_secret_access_key(secret_access_key);
        }
        if let Some(session_token) = &self.session_token {
            builder = builder.with_token(session_token);
        }
        let secrets = Secrets::new(
            [
                AmazonS3ConfigKey::AccessKeyId,
                AmazonS3ConfigKey::SecretAccessKey,
                AmazonS3ConfigKey::Token,
            ]
            .iter()
            .filter_map(|key| builder.get_config_value(key)),
        );
        let store = builder.build().map_err(|error| BlobError::Config {
            backend: "s3",
            message: secrets.describe(&error),
        })?;
        Ok((Arc::new(store), secrets))
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &redacted(&self.access_key_id))
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .finish()
    }
}

/// A Google Cloud Storage bucket. Without a service account file here, credentials come from
/// `GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_SERVICE_ACCOUNT_KEY`, `GOOGLE_APPLICATION_CREDENTIALS` or
/// the metadata server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcsConfig {
    /// The bucket, which must exist.
    pub bucket: String,
    /// A service account key file. The key itself is deliberately not a setting, so that it
    /// stays out of configuration files.
    #[serde(default)]
    pub service_account_path: Option<PathBuf>,
}

impl GcsConfig {
    fn build(&self) -> Result<(Arc<dyn ObjectStore>, Secrets), BlobError> {
        let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(&self.bucket);
        if let Some(path) = &self.service_account_path {
            builder = builder.with_service_account_path(path.to_string_lossy());
        }
        let secrets = Secrets::new(builder.get_config_value(&GoogleConfigKey::ServiceAccountKey));
        let store = builder.build().map_err(|error| BlobError::Config {
            backend: "gcs",
            message: secrets.describe(&error),
        })?;
        Ok((Arc::new(store), secrets))
    }
}

/// An Azure Blob Storage container. Without an access key here, credentials come from
/// `AZURE_STORAGE_ACCESS_KEY`, `AZURE_STORAGE_SAS_KEY`, the client-secret variables or a
/// managed identity.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// The storage account.
    pub account: String,
    /// The container, which must exist.
    pub container: String,
    /// The storage account's access key.
    #[serde(default)]
    pub access_key: Option<String>,
    /// A different endpoint, for Azurite or sovereign clouds.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Allow plain `http://` endpoints, for Azurite or tests.
    #[serde(default)]
    pub allow_http: bool,
}

impl AzureConfig {
    fn build(&self) -> Result<(Arc<dyn ObjectStore>, Secrets), BlobError> {
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_account(&self.account)
            .with_container_name(&self.container)
            .with_allow_http(self.allow_http);
        if let Some(access_key) = &self.access_key {
            builder = builder.with_access_key(access_key);
        }
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let secrets = Secrets::new(
            [
                AzureConfigKey::AccessKey,
                AzureConfigKey::ClientSecret,
                AzureConfigKey::SasKey,
                AzureConfigKey::Token,
                AzureConfigKey::FabricSessionToken,
            ]
            .iter()
            .filter_map(|key| builder.get_config_value(key)),
        );
        let store = builder.build().map_err(|error| BlobError::Config {
            backend: "azure",
            message: secrets.describe(&error),
        })?;
        Ok((Arc::new(store), secrets))
    }
}

impl fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureConfig")
            .field("account", &self.account)
            .field("container", &self.container)
            .field("access_key", &redacted(&self.access_key))
            .field("endpoint", &self.endpoint)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Shows whether a credential is set, never its value.
fn redacted(value: &Option<String>) -> Option<&'static str> {
    value.as_ref().map(|_| REDACTED)
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn reads_each_backend_from_toml() {
        let local: ArtifactStoreConfig =
            toml::from_str("backend = \"local\"\nroot = \"/srv/kiln\"").unwrap();
        assert_eq!(
            local,
            ArtifactStoreConfig::Local(LocalConfig {
                root: "/srv/kiln".into()
            })
        );
        let s3: ArtifactStoreConfig = toml::from_str(
            r#"
            backend = "s3"
            bucket = "artifacts"
            endpoint = "http://127.0.0.1:9000"
            path_style = true
            allow_http = true
            access_key_id = "AKIDEXAMPLE"
            secret_access_key = "wJalrXUtnFEMI/K7MDENG"
            "#,
        )
        .unwrap();
        expect![[r#"S3Config { bucket: "artifacts", region: None, endpoint: Some("http://127.0.0.1:9000"), path_style: true, allow_http: true, access_key_id: Some("***"), secret_access_key: Some("***"), session_token: None }"#]]
            .assert_eq(&format!("{s3:?}"));
        let gcs: ArtifactStoreConfig = toml::from_str("backend = \"gcs\"\nbucket = \"b\"").unwrap();
        expect![[r#"GcsConfig { bucket: "b", service_account_path: None }"#]]
            .assert_eq(&format!("{gcs:?}"));
        let azure: ArtifactStoreConfig = toml::from_str(
            "backend = \"azure\"\naccount = \"acct\"\ncontainer = \"c\"\naccess_key = \"k3y\"",
        )
        .unwrap();
        expect![[r#"AzureConfig { account: "acct", container: "c", access_key: Some("***"), endpoint: None, allow_http: false }"#]]
            .assert_eq(&format!("{azure:?}"));
    }

    #[test]
    fn rejects_unknown_settings_and_backends() {
        let typo = toml::from_str::<ArtifactStoreConfig>(
            "backend = \"s3\"\nbucket = \"b\"\npathstyle = true",
        );
        assert!(
            typo.unwrap_err()
                .to_string()
                .contains("unknown field `pathstyle`")
        );
        let unknown = toml::from_str::<ArtifactStoreConfig>("backend = \"ftp\"");
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown variant `ftp`")
        );
    }

    #[test]
    fn default_store_lives_in_the_data_dir() {
        let ArtifactStoreConfig::Local(config) =
            ArtifactStoreConfig::local_under(Path::new(".kiln"))
        else {
            panic!("the default store is not local");
        };
        assert_eq!(config.root, Path::new(".kiln/artifacts"));
    }
}
