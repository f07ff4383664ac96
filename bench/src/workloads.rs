//! The workloads of `WORKLOADS.md` (W1 fan-out … W5 big DAG), their sizes, and the DAG files
//! that express them, written as TOML text for the server's DAG folder.

use std::fmt::Write as _;

/// The task plugin a workload's tasks use: the in-process no-op, or `command` running `true`
/// (`sleep 0.1` for W4), so that both overheads are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plugin {
    Noop,
    Command,
}

impl Plugin {
    /// The name `--plugin` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Plugin::Noop => "noop",
            Plugin::Command => "command",
        }
    }

    /// How the report's table names it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Plugin::Noop => "noop",
            Plugin::Command => "command `true`",
        }
    }
}

/// One of the five workloads run against server and worker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    FanOut,
    Chain,
    ManyRuns,
    Sleepers,
    BigDag,
}

impl Workload {
    pub(crate) const ALL: [Workload; 5] = [
        Workload::FanOut,
        Workload::Chain,
        Workload::ManyRuns,
        Workload::Sleepers,
        Workload::BigDag,
    ];

    /// The name in `WORKLOADS.md` and in the report; `--only W1` matches its start.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::FanOut => "W1 fan-out",
            Workload::Chain => "W2 chain",
            Workload::ManyRuns => "W3 many runs",
            Workload::Sleepers => "W4 sleepers",
            Workload::BigDag => "W5 big DAG",
        }
    }
}

/// The sizes of the workloads: the documented ones, or small ones for `--quick`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) fan_out: usize,
    pub(crate) chain: usize,
    pub(crate) runs: usize,
    pub(crate) sleepers: usize,
    pub(crate) layers: usize,
    pub(crate) width: usize,
}

impl Sizes {
    pub(crate) fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                fan_out: 50,
                chain: 20,
                runs: 10,
                sleepers: 16,
                layers: 10,
                width: 10,
            }
        } else {
            Sizes {
                fan_out: 500,
                chain: 100,
                runs: 50,
                sleepers: 200,
                layers: 100,
                width: 100,
            }
        }
    }

    /// W4's ideal wall time: every sleeper's 100 ms, 8 at a time.
    pub(crate) fn sleepers_ideal_seconds(self) -> f64 {
        self.sleepers as f64 * 0.1 / 8.0
    }
}

/// One `[[tasks]]` table.
fn task(id: &str, plugin: Plugin, sleep: bool, depends_on: &[String]) -> String {
    let body = match (plugin, sleep) {
        (Plugin::Noop, false) => "kind = \"noop\"\n".to_owned(),
        (Plugin::Noop, true) => "kind = \"noop\"\nparams = { sleep = \"100ms\" }\n".to_owned(),
        (Plugin::Command, false) => {
            "kind = \"command\"\nparams = { program = \"true\" }\n".to_owned()
        }
        (Plugin::Command, true) => {
            "kind = \"command\"\nparams = { program = \"sleep\", args = [\"0.1\"] }\n".to_owned()
        }
    };
    let mut text = format!("[[tasks]]\nid = \"{id}\"\n{body}");
    if !depends_on.is_empty() {
        let quoted: Vec<String> = depends_on.iter().map(|up| format!("\"{up}\"")).collect();
        let _ = writeln!(text, "depends_on = [{}]", quoted.join(", "));
    }
    text
}

/// `c0` … `c{length - 1}`, each after the one before.
fn chain(text: &mut String, plugin: Plugin, length: usize) {
    for index in 0..length {
        let up = if index == 0 {
            Vec::new()
        } else {
            vec![format!("c{}", index - 1)]
        };
        text.push_str(&task(&format!("c{index}"), plugin, false, &up));
    }
}

/// `layers` layers of `width` tasks `t{layer}_{index}`, each after up to three tasks of the
/// layer before: `(index + k * stride) % width` for k in 0..3.
fn layers(text: &mut String, plugin: Plugin, layers: usize, width: usize, stride: usize) {
    for layer in 0..layers {
        for index in 0..width {
            let up: Vec<String> = if layer == 0 {
                Vec::new()
            } else {
                let mut ups: Vec<String> = (0..3)
                    .map(|k| format!("t{}_{}", layer - 1, (index + k * stride) % width))
                    .collect();
                ups.sort();
                ups.dedup();
                ups
            };
            text.push_str(&task(&format!("t{layer}_{index}"), plugin, false, &up));
        }
    }
}

/// The DAG file (id `bench`) of a workload, and how many runs to trigger.
pub(crate) fn dag_file(workload: Workload, plugin: Plugin, sizes: Sizes) -> (String, usize) {
    let mut text = String::from("id = \"bench\"\nmax_active_runs = 1000\n");
    match workload {
        Workload::FanOut => {
            text.push_str(&task("root", plugin, false, &[]));
            let middle: Vec<String> = (0..sizes.fan_out)
                .map(|index| format!("m{index}"))
                .collect();
            for id in &middle {
                text.push_str(&task(id, plugin, false, &["root".to_owned()]));
            }
            text.push_str(&task("join", plugin, false, &middle));
            (text, 1)
        }
        Workload::Chain => {
            chain(&mut text, plugin, sizes.chain);
            (text, 1)
        }
        Workload::ManyRuns => {
            chain(&mut text, plugin, 5);
            (text, sizes.runs)
        }
        Workload::Sleepers => {
            for index in 0..sizes.sleepers {
                text.push_str(&task(&format!("s{index}"), plugin, true, &[]));
            }
            (text, 1)
        }
        Workload::BigDag => {
            layers(&mut text, plugin, sizes.layers, sizes.width, 7);
            (text, 1)
        }
    }
}

/// The `console` workload's DAG: `layers` layers of `width` `noop` tasks, each task after up to
/// three of the layer before, so the graph view lays out real crossings.
pub(crate) fn layered_dag(
    dag_id: &str,
    layer_count: usize,
    width: usize,
    max_active_runs: usize,
) -> String {
    let mut text = format!("id = \"{dag_id}\"\nmax_active_runs = {max_active_runs}\n");
    layers(&mut text, Plugin::Noop, layer_count, width, 3);
    text
}

/// The idle measurement's DAG folder: 100 DAGs on a daily schedule that starts in 2099, so
/// the scheduler has work to look at and nothing to run.
pub(crate) fn idle_dags() -> Vec<(String, String)> {
    (0..100)
        .map(|index| {
            let text = format!(
                "id = \"idle{index}\"\nschedule = \"@daily\"\nstart_date = \"2099-01-01\"\n[[tasks]]\nid = \"t\"\nkind = \"noop\"\n"
            );
            (format!("idle{index}.toml"), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_has_its_documented_number_of_tasks() {
        let sizes = Sizes::new(false);
        let count = |workload| {
            let (text, runs) = dag_file(workload, Plugin::Noop, sizes);
            (text.matches("[[tasks]]").count(), runs)
        };
        assert_eq!(count(Workload::FanOut), (502, 1));
        assert_eq!(count(Workload::Chain), (100, 1));
        assert_eq!(count(Workload::ManyRuns), (5, 50));
        assert_eq!(count(Workload::Sleepers), (200, 1));
        assert_eq!(count(Workload::BigDag), (10_000, 1));
        assert_eq!(sizes.sleepers_ideal_seconds(), 2.5);
    }

    #[test]
    fn a_layer_depends_on_three_tasks_of_the_one_before() {
        let text = layered_dag("console", 2, 10, 50);
        assert!(text.contains(
            "[[tasks]]\nid = \"t1_9\"\nkind = \"noop\"\ndepends_on = [\"t0_2\", \"t0_5\", \"t0_9\"]\n"
        ));
        let (text, _) = dag_file(Workload::BigDag, Plugin::Command, Sizes::new(true));
        assert!(text.contains(
            "id = \"t1_0\"\nkind = \"command\"\nparams = { program = \"true\" }\ndepends_on = [\"t0_0\", \"t0_4\", \"t0_7\"]\n"
        ));
    }
}
