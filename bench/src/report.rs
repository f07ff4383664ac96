//! The Markdown report: its heading with the machine it ran on, one table line per workload,
//! backend and plugin, the idle, artifact and console sections, printed and (for full runs)
//! appended to `BENCHMARKS.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use kiln_engine::store::Backend;

use crate::artifacts::RoundTrip;
use crate::console::PageTiming;
use crate::measure::{IdleMeasurement, Measurement, percentile};
use crate::workloads::{Plugin, Sizes, Workload};

/// The columns of the workloads' table.
pub(crate) const WORKLOAD_TABLE_HEAD: &str = "| backend | plugin | workload | tasks | wall s | tasks/s | overhead/task ms | CPU/task ms | trigger→first start ms; step p50/p99 ms | server MB | worker MB |\n|---|---|---|---|---|---|---|---|---|---|---|\n";

fn backend_label(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    }
}

fn megabytes(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The report's heading: when, which command, the machine, the build, and (when processes are
/// started) the settings every table line shares.
pub(crate) fn heading(
    quick: bool,
    only: &[String],
    repetitions: usize,
    wants_processes: bool,
) -> String {
    let build = if cfg!(debug_assertions) {
        "debug build (numbers are not representative; use --release)"
    } else {
        "release build"
    };
    let only: String = only
        .iter()
        .map(|workload| format!(" --only {workload}"))
        .collect();
    let mut report = format!(
        "## {} — {}{only}\n\nMachine: {}. {build}.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        if quick {
            "kiln bench --quick"
        } else {
            "kiln bench"
        },
        machine(),
    );
    if wants_processes {
        let _ = writeln!(
            report,
            "SQLite: WAL, synchronous=NORMAL. PostgreSQL: server defaults (fsync on). 2 workers × 32 slots (W4: 2 × 4), lease 20 s. {repetitions} repetition(s); median (min–max).\n"
        );
    }
    report
}

/// Cores, memory, kernel, kiln's version and the commit checked out in the current directory.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .next()
                .map(|line| line.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or_else(
            || "?".to_owned(),
            |kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_owned())
        .unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "{cores} cores, {memory}, Linux {kernel}, kiln {} at commit {commit}",
        env!("CARGO_PKG_VERSION")
    )
}

/// One line of the workloads' table: the median repetition by wall time, with the fastest and
/// slowest beside it. `results` must not be empty.
pub(crate) fn workload_line(
    backend: Backend,
    plugin: Plugin,
    workload: Workload,
    sizes: Sizes,
    results: &mut [Measurement],
) -> String {
    results.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    let median = &results[results.len() / 2];
    let (min, max) = (results[0].wall, results[results.len() - 1].wall);
    let overhead = if workload == Workload::Sleepers {
        format!(
            "{:.0} ms over ideal",
            (median.wall - sizes.sleepers_ideal_seconds()) * 1000.0
        )
    } else {
        format!("{:.3}", median.wall * 1000.0 / median.tasks as f64)
    };
    let latency = if median.latencies_ms.is_empty() {
        "-".to_owned()
    } else {
        format!(
            "{:.2}; {:.2} / {:.2}",
            median.first_start_ms,
            percentile(&median.latencies_ms, 0.5),
            percentile(&median.latencies_ms, 0.99)
        )
    };
    format!(
        "| {} | {} | {} | {} | {:.3} ({:.3}–{:.3}) | {:.0} | {overhead} | {:.3} | {latency} | {:.1} | {:.1} |\n",
        backend_label(backend),
        plugin.label(),
        workload.name(),
        median.tasks,
        median.wall,
        min,
        max,
        median.tasks as f64 / median.wall,
        median.cpu_seconds * 1000.0 / median.tasks as f64,
        megabytes(median.server_peak_kb),
        megabytes(median.worker_peak_kb),
    )
}

/// The idle section's heading and table head.
pub(crate) fn idle_head(seconds: u64) -> String {
    format!(
        "\nIdle ({seconds} s, 100 DAGs loaded, nothing due, server + 2 workers):\n\n| backend | CPU % of one core | server MB | worker MB |\n|---|---|---|---|\n"
    )
}

/// One backend's idle line.
pub(crate) fn idle_line(backend: Backend, idle: IdleMeasurement) -> String {
    format!(
        "| {} | {:.2} | {:.1} | {:.1} |\n",
        backend_label(backend),
        idle.cpu_percent,
        megabytes(idle.server_peak_kb),
        megabytes(idle.worker_peak_kb)
    )
}

/// The artifact streaming paragraph.
pub(crate) fn artifacts_line(size: u64, trip: RoundTrip) -> String {
    let mib = (size >> 20) as f64;
    format!(
        "\nArtifact streaming (local store, this process): {} MiB written in {:.2} s ({:.0} MiB/s) and read back hash-checked in {:.2} s ({:.0} MiB/s); peak resident memory {:.1} MB.\n",
        size >> 20,
        trip.put,
        mib / trip.put,
        trip.get,
        mib / trip.get,
        megabytes(trip.peak_kb)
    )
}

/// The console section: a line per page and the slowest page.
pub(crate) fn console_section(
    runs: usize,
    renders: usize,
    filled: Duration,
    timings: &[PageTiming],
) -> String {
    let mut section = format!(
        "\nConsole pages (SQLite; {runs} finished runs of a 100-task DAG, 10 layers of 10, filled in {:.1} s; each page rendered {renders} times in this process through the router with `oneshot`, after one warm-up; time to the whole body):\n\n| page | path | median ms | max ms | KiB |\n|---|---|---|---|---|\n",
        filled.as_secs_f64()
    );
    for timing in timings {
        let _ = writeln!(
            section,
            "| {} | `{}` | {:.2} | {:.2} | {:.1} |",
            timing.name,
            timing.path,
            percentile(&timing.times_ms, 0.5),
            percentile(&timing.times_ms, 1.0),
            timing.bytes as f64 / 1024.0
        );
    }
    if let Some(slowest) = timings
        .iter()
        .max_by(|a, b| percentile(&a.times_ms, 1.0).total_cmp(&percentile(&b.times_ms, 1.0)))
    {
        let _ = writeln!(
            section,
            "\nSlowest: {}, {:.2} ms at worst.",
            slowest.name,
            percentile(&slowest.times_ms, 1.0)
        );
    }
    section
}

/// Prints the whole report: it is `kiln bench`'s output, and the progress lines before it went
/// to stderr.
#[allow(clippy::print_stdout)]
pub(crate) fn print(report: &str) {
    println!("{report}");
}

/// Appends the report to `path`, starting the file with its heading when it is new.
pub(crate) fn append(path: &Path, report: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let exists = path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    if !exists {
        writeln!(
            file,
            "# Benchmarks\n\nProduced by `kiln bench` (see `bench/WORKLOADS.md` for the workloads). Newest last.\n"
        )?;
    }
    writeln!(file, "{report}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_line_reports_the_median_repetition() {
        let repetition = |wall: f64| Measurement {
            wall,
            tasks: 20,
            cpu_seconds: 0.5,
            server_peak_kb: 20 * 1024,
            worker_peak_kb: 10 * 1024,
            latencies_ms: vec![1.0, 2.0, 3.0],
            first_start_ms: 4.0,
        };
        let mut results = vec![repetition(2.0), repetition(1.0), repetition(3.0)];
        let line = workload_line(
            Backend::Postgres,
            Plugin::Command,
            Workload::Chain,
            Sizes::new(true),
            &mut results,
        );
        assert_eq!(
            line,
            "| PostgreSQL | command `true` | W2 chain | 20 | 2.000 (1.000–3.000) | 10 | 100.000 | 25.000 | 4.00; 2.00 / 3.00 | 20.0 | 10.0 |\n"
        );
    }

    #[test]
    fn the_sleepers_overhead_is_against_the_ideal() {
        let mut results = vec![Measurement {
            wall: 2.5,
            tasks: 16,
            ..Measurement::default()
        }];
        let line = workload_line(
            Backend::Sqlite,
            Plugin::Noop,
            Workload::Sleepers,
            Sizes::new(true),
            &mut results,
        );
        // Quick: 16 sleepers of 100 ms, 8 at a time, is 0.2 s at best.
        assert!(line.contains("| 2300 ms over ideal |"), "{line}");
        assert!(
            line.starts_with("| SQLite | noop | W4 sleepers | 16 |"),
            "{line}"
        );
    }
}
