//! A kiln cluster for one repetition: a `kiln server` and its `kiln worker`s, real processes of
//! the `kiln` binary talking over loopback HTTP, on a fresh SQLite file or a fresh PostgreSQL
//! database that is dropped afterwards.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use kiln_engine::store::{
    Backend, postgres_database_create, postgres_database_drop, postgres_database_url,
};
use kiln_web::client::ApiClient;

/// The token the server and its workers share; the cluster is on loopback for one repetition.
const WORKER_TOKEN: &str = "bench";

/// What a cluster is started with.
pub(crate) struct ClusterParams<'a> {
    /// The `kiln` binary.
    pub(crate) kiln: &'a Path,
    /// The DAG folder's files, by file name.
    pub(crate) dags: &'a [(String, String)],
    pub(crate) backend: Backend,
    /// The PostgreSQL server's administrative URL, for [`Backend::Postgres`].
    pub(crate) postgres_url: Option<&'a str>,
    pub(crate) workers: usize,
    /// Task slots per worker.
    pub(crate) concurrency: usize,
}

/// Server and worker processes for one repetition; dropping it kills them.
pub(crate) struct Cluster {
    dir: tempfile::TempDir,
    /// The server's base URL.
    pub(crate) url: String,
    /// The store's URL, which the harness reads results from.
    pub(crate) database_url: String,
    /// The PostgreSQL database made for this cluster: the admin URL and its name.
    postgres: Option<(String, String)>,
    server: Child,
    workers: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_processes();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    /// Writes the DAG folder, makes the database, starts the server, waits until its API
    /// answers, then starts the workers.
    pub(crate) async fn start(params: ClusterParams<'_>) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir().context("failed to create a temporary directory")?;
        std::fs::create_dir(dir.path().join("dags"))?;
        for (name, text) in params.dags {
            std::fs::write(dir.path().join("dags").join(name), text)?;
        }
        let (database_url, postgres) = match params.backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("kiln.db").display()),
                None,
            ),
            Backend::Postgres => {
                let admin = params.postgres_url.context("no PostgreSQL URL")?;
                let name = format!(
                    "kiln_bench_{}_{}",
                    std::process::id(),
                    rand::random::<u32>()
                );
                postgres_database_create(admin, &name).await?;
                let url = postgres_database_url(admin, &name)?;
                (url, Some((admin.to_owned(), name)))
            }
        };
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let server = Command::new(params.kiln)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--dags")
            .arg(dir.path().join("dags"))
            .args([
                "--database-url",
                &database_url,
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--lease",
                "20s",
            ])
            .env("KILN_WORKER_TOKEN", WORKER_TOKEN)
            .env("KILN_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("failed to start the server")?;
        let mut cluster = Cluster {
            dir,
            url,
            database_url,
            postgres,
            server,
            workers: Vec::new(),
        };
        if !api_ready(&cluster.url).await {
            // The database goes too; `Drop` alone would only stop the server.
            cluster.finish().await;
            bail!("the benchmark server did not come up");
        }
        for index in 0..params.workers {
            let worker = Command::new(params.kiln)
                .args([
                    "--server",
                    &cluster.url,
                    "worker",
                    "--concurrency",
                    &params.concurrency.to_string(),
                    "--id",
                    &format!("bench-{index}"),
                ])
                .arg("--work-dir")
                .arg(cluster.dir.path().join(format!("work-{index}")))
                .env("KILN_WORKER_TOKEN", WORKER_TOKEN)
                .env("KILN_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .context("failed to start a worker")?;
            cluster.workers.push(worker);
        }
        // Workers register and start long-polling; give them a moment so the first claim is warm.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(cluster)
    }

    /// The server's process id, then each worker's.
    pub(crate) fn pids(&self) -> Vec<u32> {
        std::iter::once(self.server.id())
            .chain(self.workers.iter().map(Child::id))
            .collect()
    }

    fn stop_processes(&mut self) {
        for child in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.server))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the processes and drops the PostgreSQL database, if one was made.
    pub(crate) async fn finish(mut self) {
        self.stop_processes();
        if let Some((admin, name)) = self.postgres.take()
            && let Err(error) = postgres_database_drop(&admin, &name).await
        {
            eprintln!("failed to drop the benchmark database {name}: {error}");
        }
    }
}

/// Whether the server's API answers within about 6 seconds.
async fn api_ready(url: &str) -> bool {
    let client = ApiClient::new(url, None);
    for _ in 0..300 {
        if client.dags().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
