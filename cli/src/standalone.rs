//! `kiln standalone`: a server on SQLite and its workers as child processes, in one command.
//!
//! The workers talk to the server over loopback with a token generated for this session, exactly
//! as remote workers would. A child that dies is noticed at once: its tasks are failed over
//! without waiting for their leases, and a new worker takes its place.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kiln_engine::execution::ExecutionService;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::ops::DatabaseConfig;
use crate::server::{ServerOptions, cancel_on_signals, start_server};

/// How standalone is set up.
#[derive(Debug, Clone)]
pub(crate) struct StandaloneOptions {
    pub(crate) listen: SocketAddr,
    pub(crate) workers: usize,
    pub(crate) concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) console: kiln_web::ConsoleConfig,
    pub(crate) mlflow: crate::server::MlflowOptions,
}

pub(crate) async fn standalone(
    database: &DatabaseConfig,
    dags_dir: &Path,
    options: StandaloneOptions,
) -> anyhow::Result<()> {
    let shutdown = cancel_on_signals()?;
    let token = hex::encode(rand::random::<[u8; 24]>());
    let server_options = ServerOptions {
        listen: options.listen,
        worker_token: token.clone(),
        api_token: std::env::var("KILN_API_TOKEN")
            .ok()
            .filter(|token| !token.is_empty()),
        lease: options.lease,
        health_stall_limit: kiln_engine::duties::DEFAULT_STALL_LIMIT,
        http: kiln_web::ServeOptions::default(),
        console: options.console,
        mlflow: options.mlflow.clone(),
    };
    let server = start_server(database, dags_dir, server_options, shutdown.clone()).await?;
    let url = format!("http://{}", server.address);
    crate::banner(format_args!(
        "kiln standalone: server on {url}, {} worker(s), data in {}",
        options.workers,
        database.data_dir.display()
    ));
    // The hint must work as typed: `kiln` talks to 127.0.0.1:8080 unless told otherwise.
    let server_flag = if url == crate::DEFAULT_SERVER {
        String::new()
    } else {
        format!("--server {url} ")
    };
    crate::banner(format_args!(
        "  trigger a run:  kiln {server_flag}trigger hello --wait"
    ));
    crate::banner(format_args!("  REST API:       curl {url}/api/v1/dags"));
    if let Some(uri) = &options.mlflow.tracking_uri {
        crate::banner(format_args!(
            "  MLflow:         runs and models mirrored to {uri}"
        ));
    }

    let supervisor = Supervisor {
        executable: std::env::current_exe().context("failed to find the kiln executable")?,
        dags_dir: std::fs::canonicalize(dags_dir).unwrap_or_else(|_| dags_dir.to_owned()),
        artifacts_config: database.artifacts_config.clone(),
        url,
        token,
        concurrency: options.concurrency,
        work_dir: database.data_dir.join("work"),
        execution: server.execution.clone(),
    };
    supervisor.run(options.workers, shutdown.clone()).await?;
    server.done.await.context("the server task panicked")?
}

struct Supervisor {
    executable: std::path::PathBuf,
    dags_dir: std::path::PathBuf,
    /// Passed on, so workers use the store directly; without it they go through the server.
    artifacts_config: Option<std::path::PathBuf>,
    url: String,
    token: String,
    concurrency: usize,
    work_dir: std::path::PathBuf,
    execution: Arc<ExecutionService>,
}

impl Supervisor {
    fn spawn(&self, slot: usize, generation: u32) -> anyhow::Result<(String, Child)> {
        let worker_id = format!("standalone-{slot}-{generation}");
        let mut command = Command::new(&self.executable);
        let supervisor = std::process::id();
        // SAFETY: between fork and exec the closure only makes async-signal-safe calls
        // (prctl, getppid, _exit) and touches no memory of the parent.
        unsafe {
            command.pre_exec(move || {
                // A worker whose standalone was killed (even with SIGKILL, which leaves no
                // time to stop children) is told to stop too, instead of retrying a server
                // that is gone forever.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The supervisor died before the line above: nobody would send the signal.
                if libc::getppid() as u32 != supervisor {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        if let Some(config) = &self.artifacts_config {
            command.arg("--artifacts-config").arg(config);
        }
        let child = command
            .arg("worker")
            .arg("--dags")
            .arg(&self.dags_dir)
            .args(["--server", &self.url])
            .args(["--concurrency", &self.concurrency.to_string()])
            .args(["--id", &worker_id])
            .arg("--work-dir")
            .arg(self.work_dir.join(&worker_id))
            // The token travels in the environment, not the command line, so `ps` does not show it.
            .env("KILN_WORKER_TOKEN", &self.token)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start worker {worker_id}"))?;
        Ok((worker_id, child))
    }

    async fn run(&self, workers: usize, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut children: HashMap<usize, (String, Child, u32)> = HashMap::new();
        for slot in 0..workers {
            let (id, child) = self.spawn(slot, 0)?;
            children.insert(slot, (id, child, 0));
        }
        loop {
            // Checking for exits every 100 ms is cheap, and finds a dead worker long before its
            // lease would expire.
            let dead: Vec<(usize, std::process::ExitStatus)> = children
                .iter_mut()
                .filter_map(|(slot, (_, child, _))| {
                    child
                        .try_wait()
                        .ok()
                        .flatten()
                        .map(|status| (*slot, status))
                })
                .collect();
            for (slot, status) in dead {
                let Some((worker_id, _, generation)) = children.remove(&slot) else {
                    continue;
                };
                if shutdown.is_cancelled() {
                    continue;
                }
                let rescued = self.execution.worker_died(&worker_id).await.unwrap_or_else(|error| {
                    tracing::error!(message = "Could not fail over a dead worker's tasks.", %error);
                    0
                });
                tracing::warn!(message = "A worker died; restarting it.", worker_id, %status, rescued);
                let (id, child) = self.spawn(slot, generation + 1)?;
                children.insert(slot, (id, child, generation + 1));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = shutdown.cancelled() => break,
            }
        }
        // Ctrl-C: workers finish or hand back their tasks, then exit.
        for (_, child, _) in children.values() {
            if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                // SAFETY: sends SIGTERM to our own child process.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        for (worker_id, mut child, _) in children.into_values() {
            match tokio::time::timeout(Duration::from_secs(40), child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(
                        message = "A worker did not stop in time; killing it.",
                        worker_id
                    );
                    let _ = child.kill().await;
                }
            }
        }
        Ok(())
    }
}
