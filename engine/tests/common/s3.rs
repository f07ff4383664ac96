//! The S3-compatible server the tests run against, named by `KILN_TEST_S3_*` (s3s-fs in CI).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kiln_engine::artifacts::S3Config;
use object_store::aws::AmazonS3Builder;
use object_store::signer::Signer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The S3 server named by `KILN_TEST_S3_*`.
pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Server {
    pub fn from_env(test: &str) -> Option<S3Server> {
        let endpoint = match std::env::var("KILN_TEST_S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => endpoint,
            _ => {
                super::skip(test, "S3", "KILN_TEST_S3_ENDPOINT");
                return None;
            }
        };
        let variable = |name: &str| {
            std::env::var(name)
                .unwrap_or_else(|_| panic!("KILN_TEST_S3_ENDPOINT is set but {name} is not"))
        };
        Some(S3Server {
            endpoint,
            access_key: variable("KILN_TEST_S3_ACCESS_KEY"),
            secret_key: variable("KILN_TEST_S3_SECRET_KEY"),
        })
    }

    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            bucket: bucket.to_owned(),
            region: Some("us-east-1".to_owned()),
            endpoint: Some(self.endpoint.clone()),
            path_style: true,
            allow_http: true,
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
            session_token: None,
        }
    }

    /// A plain client for the bucket, to reach around the blob layer.
    pub fn raw_client(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .build()
            .unwrap()
    }

    /// Creates a fresh bucket. object_store has no call for that, but it can presign any
    /// request: a presigned PUT on the bucket's root is S3's CreateBucket, sent here as plain
    /// HTTP/1.1 so that the test needs no HTTP client and works with any S3-compatible server.
    pub async fn create_bucket(&self) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let bucket = format!(
            "kiln-test-{}-{}-{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let url = self
            .raw_client(&bucket)
            .signed_url(
                "PUT".parse().unwrap(),
                &object_store::path::Path::default(),
                Duration::from_secs(300),
            )
            .await
            .unwrap();
        let host = url.host_str().unwrap().to_owned();
        let port = url.port_or_known_default().unwrap();
        let target = format!("{}?{}", url.path(), url.query().unwrap_or_default());
        let mut connection = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .unwrap_or_else(|error| {
                panic!("S3 server at {} is unreachable: {error}", self.endpoint)
            });
        let request = format!(
            "PUT {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        connection.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        connection.read_to_string(&mut response).await.unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket} failed:\n{response}"
        );
        bucket
    }
}
