//! Measuring a repetition: CPU time and peak resident memory of the cluster's processes from
//! `/proc`, and wall time and per-step latency from the times the store recorded, from just
//! before the trigger call to the last task's end, so the harness's polling does not blur them.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_engine::state::RunState;
use kiln_engine::store::{Backend, RunFilter, connect, now_micros};
use kiln_web::client::ApiClient;

use crate::cluster::{Cluster, ClusterParams};
use crate::workloads::{Plugin, Sizes, Workload, dag_file, idle_dags};

/// One measured repetition.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measurement {
    /// Seconds from the trigger to the last task's recorded end.
    pub(crate) wall: f64,
    pub(crate) tasks: usize,
    /// User + system seconds of the server and every worker together.
    pub(crate) cpu_seconds: f64,
    pub(crate) server_peak_kb: u64,
    /// The largest worker's peak.
    pub(crate) worker_peak_kb: u64,
    /// W2 only: each step's time, end to end.
    pub(crate) latencies_ms: Vec<f64>,
    /// W2 only: from the trigger to the first task's start.
    pub(crate) first_start_ms: f64,
}

/// What the idle measurement found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleMeasurement {
    /// CPU of server and workers together, as a percentage of one core.
    pub(crate) cpu_percent: f64,
    pub(crate) server_peak_kb: u64,
    pub(crate) worker_peak_kb: u64,
}

/// CPU seconds (user + system) a process has used.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces and parentheses: fields are counted after the last `)`.
    let Some(after) = stat.rfind(')').map(|index| &stat[index + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second.max(1.0)
}

/// Peak resident memory of a process, in KiB.
pub(crate) fn peak_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The value at `fraction` (0 to 1) of the sorted values, nearest rank; NaN for none.
pub(crate) fn percentile(values: &[f64], fraction: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One repetition of a workload: a fresh cluster, the trigger calls, a wait until every run is
/// final, then the figures.
pub(crate) async fn workload(
    kiln: &std::path::Path,
    workload: Workload,
    plugin: Plugin,
    backend: Backend,
    sizes: Sizes,
    postgres_url: Option<&str>,
) -> anyhow::Result<Measurement> {
    let (dag, runs) = dag_file(workload, plugin, sizes);
    let (workers, concurrency) = if workload == Workload::Sleepers {
        (2, 4)
    } else {
        (2, 32)
    };
    let cluster = Cluster::start(ClusterParams {
        kiln,
        dags: &[("bench.toml".to_owned(), dag)],
        backend,
        postgres_url,
        workers,
        concurrency,
    })
    .await?;
    let client = ApiClient::new(&cluster.url, None);
    let pids = cluster.pids();
    let cpu_before: f64 = pids.iter().map(|pid| cpu_seconds(*pid)).sum();

    let triggered_at = now_micros();
    let mut run_ids = Vec::with_capacity(runs);
    for _ in 0..runs {
        run_ids.push(
            client
                .trigger("bench", serde_json::Map::new())
                .await
                .context("failed to trigger")?
                .id,
        );
    }
    let store = connect(&cluster.database_url).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let finished = store
            .run_list(&RunFilter {
                dag_id: Some("bench".to_owned()),
                state: None,
                limit: Some(10_000),
            })
            .await?
            .iter()
            .filter(|run| run.state.is_final())
            .count();
        if finished >= runs {
            break;
        }
        if Instant::now() > deadline {
            bail!("{} did not finish within 10 minutes", workload.name());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_after: f64 = pids.iter().map(|pid| cpu_seconds(*pid)).sum();
    let mut measurement = Measurement {
        cpu_seconds: cpu_after - cpu_before,
        server_peak_kb: peak_kb(pids[0]),
        worker_peak_kb: pids[1..].iter().map(|pid| peak_kb(*pid)).max().unwrap_or(0),
        ..Measurement::default()
    };
    let mut last_end = triggered_at;
    for run_id in &run_ids {
        let run = store.run_get(*run_id).await?.context("a run vanished")?;
        if run.state != RunState::Success {
            bail!("{} run {run_id} ended {}", workload.name(), run.state);
        }
        let instances = store.task_instance_list(*run_id).await?;
        measurement.tasks += instances.len();
        for instance in &instances {
            last_end = last_end.max(instance.ended_at.unwrap_or(triggered_at));
        }
        if workload == Workload::Chain {
            // The worker's completion of one step claims the next in the same transaction, so
            // a step's recorded start equals the previous step's end; the time between
            // consecutive ends is what each dependent step really costs.
            if let Some(first) = instances.first().and_then(|instance| instance.started_at) {
                measurement.first_start_ms = (first - triggered_at) as f64 / 1000.0;
            }
            let mut previous_end = triggered_at;
            for instance in &instances {
                let end = instance.ended_at.unwrap_or(previous_end);
                measurement
                    .latencies_ms
                    .push((end - previous_end) as f64 / 1000.0);
                previous_end = end;
            }
        }
    }
    measurement.wall = (last_end - triggered_at) as f64 / 1e6;
    drop(store);
    cluster.finish().await;
    Ok(measurement)
}

/// CPU and memory of a server and 2 workers with 100 DAGs loaded and nothing due, over
/// `seconds` after 2 seconds to settle.
pub(crate) async fn idle(
    kiln: &std::path::Path,
    backend: Backend,
    postgres_url: Option<&str>,
    seconds: u64,
) -> anyhow::Result<IdleMeasurement> {
    let dags = idle_dags();
    let cluster = Cluster::start(ClusterParams {
        kiln,
        dags: &dags,
        backend,
        postgres_url,
        workers: 2,
        concurrency: 4,
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids = cluster.pids();
    let before: f64 = pids.iter().map(|pid| cpu_seconds(*pid)).sum();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after: f64 = pids.iter().map(|pid| cpu_seconds(*pid)).sum();
    let measured = IdleMeasurement {
        cpu_percent: (after - before) / seconds as f64 * 100.0,
        server_peak_kb: peak_kb(pids[0]),
        worker_peak_kb: pids[1..].iter().map(|pid| peak_kb(*pid)).max().unwrap_or(0),
    };
    cluster.finish().await;
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&values, 0.0), 1.0);
        assert_eq!(percentile(&values, 0.5), 3.0);
        assert_eq!(percentile(&values, 0.99), 5.0);
        assert_eq!(percentile(&values, 1.0), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn this_process_has_used_cpu_and_memory() {
        let pid = std::process::id();
        // Spend CPU until the clock has ticked at least once (10 ms at the usual 100 Hz).
        let started = Instant::now();
        let mut spin = 0u64;
        while cpu_seconds(pid) == 0.0 && started.elapsed() < Duration::from_secs(5) {
            spin = spin.wrapping_add(1);
        }
        assert!(cpu_seconds(pid) > 0.0, "no CPU after {spin} spins");
        assert!(peak_kb(pid) > 0);
        assert_eq!(cpu_seconds(u32::MAX), 0.0);
        assert_eq!(peak_kb(u32::MAX), 0);
    }
}
