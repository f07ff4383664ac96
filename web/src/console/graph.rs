//! The DAG graph, laid out on the server and drawn as SVG.
//!
//! A layered layout: a task's layer (its column) is the longest path to it from a root, so every
//! edge points right; the order within each layer comes from barycenter sweeps, which move each
//! task towards the average position of its neighbours and so remove most edge crossings. Edges
//! that skip layers are drawn as curves rather than routed through dummy nodes: simpler, and
//! good enough for the DAGs people write.

use std::collections::HashMap;
use std::fmt::Write as _;

use kiln_engine::dag::Dag;
use kiln_engine::state::TaskState;
use maud::{Markup, PreEscaped, html};

use super::layout::{shorten, state_class};

const NODE_WIDTH: f64 = 180.0;
const NODE_HEIGHT: f64 = 30.0;
const LAYER_GAP: f64 = 70.0;
const ROW_GAP: f64 = 14.0;
const MARGIN: f64 = 10.0;
/// Labels longer than this are cut (the full id is in the node's tooltip).
const LABEL_CHARS: usize = 24;
/// Down-and-up barycenter sweeps; more rarely helps.
const SWEEPS: usize = 4;

/// Where each task goes: its layer and its position within the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Per task (by index in the DAG), its layer.
    pub(crate) layer: Vec<usize>,
    /// Per layer, its tasks in order, top to bottom.
    pub(crate) layers: Vec<Vec<usize>>,
}

/// Lays out tasks given, per task, the indices of its upstreams. Upstreams must come before
/// their downstreams (the order a `Dag` keeps its tasks in); any that do not are ignored.
pub(crate) fn layout(upstreams: &[Vec<usize>]) -> Layout {
    let count = upstreams.len();
    let mut layer = vec![0usize; count];
    for (task, ups) in upstreams.iter().enumerate() {
        layer[task] = ups
            .iter()
            .filter(|&&up| up < task)
            .map(|&up| layer[up] + 1)
            .max()
            .unwrap_or(0);
    }
    let depth = layer.iter().max().map_or(0, |max| max + 1);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (task, &in_layer) in layer.iter().enumerate() {
        layers[in_layer].push(task);
    }
    let mut downstreams = vec![Vec::new(); count];
    for (task, ups) in upstreams.iter().enumerate() {
        for &up in ups.iter().filter(|&&up| up < task) {
            downstreams[up].push(task);
        }
    }
    // Positions are fractions of their layer's height, so layers of different sizes compare.
    let mut position = vec![0.0f64; count];
    let place = |layers: &[Vec<usize>], position: &mut [f64]| {
        for tasks in layers {
            for (row, &task) in tasks.iter().enumerate() {
                position[task] = (row as f64 + 0.5) / tasks.len() as f64;
            }
        }
    };
    place(&layers, &mut position);
    for sweep in 0..SWEEPS {
        let downward = sweep % 2 == 0;
        let order: Vec<usize> = if downward {
            (1..depth).collect()
        } else {
            (0..depth.saturating_sub(1)).rev().collect()
        };
        for index in order {
            let neighbours = if downward { upstreams } else { &downstreams };
            let mut keyed: Vec<(f64, usize)> = layers[index]
                .iter()
                .map(|&task| {
                    let linked: Vec<f64> = neighbours[task]
                        .iter()
                        .filter(|&&other| other < count && layer[other] != layer[task])
                        .map(|&other| position[other])
                        .collect();
                    let key = if linked.is_empty() {
                        position[task]
                    } else {
                        linked.iter().sum::<f64>() / linked.len() as f64
                    };
                    (key, task)
                })
                .collect();
            // Stable, so tasks with equal keys keep their order.
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            layers[index] = keyed.into_iter().map(|(_, task)| task).collect();
            let len = layers[index].len() as f64;
            for (row, &task) in layers[index].iter().enumerate() {
                position[task] = (row as f64 + 0.5) / len;
            }
        }
    }
    Layout { layer, layers }
}

/// The DAG as SVG: nodes coloured by `states` (the latest run's), each a link to that task in
/// run `run_id` when there is one.
pub(crate) fn svg(dag: &Dag, states: &HashMap<&str, TaskState>, run_id: Option<i64>) -> Markup {
    let index: HashMap<&str, usize> = dag
        .tasks
        .iter()
        .enumerate()
        .map(|(position, task)| (task.id.as_str(), position))
        .collect();
    let upstreams: Vec<Vec<usize>> = dag
        .tasks
        .iter()
        .map(|task| {
            task.depends_on
                .iter()
                .filter_map(|id| index.get(id.as_str()).copied())
                .collect()
        })
        .collect();
    let layout = layout(&upstreams);
    let rows = layout.layers.iter().map(Vec::len).max().unwrap_or(0);
    let row_height = NODE_HEIGHT + ROW_GAP;
    let height = rows as f64 * row_height - ROW_GAP + 2.0 * MARGIN;
    let width = layout.layers.len() as f64 * (NODE_WIDTH + LAYER_GAP) - LAYER_GAP + 2.0 * MARGIN;
    // Smaller layers are centred vertically.
    let mut at = vec![(0.0f64, 0.0f64); dag.tasks.len()];
    for (column, tasks) in layout.layers.iter().enumerate() {
        let offset = (rows - tasks.len()) as f64 * row_height / 2.0;
        for (row, &task) in tasks.iter().enumerate() {
            at[task] = (
                MARGIN + column as f64 * (NODE_WIDTH + LAYER_GAP),
                MARGIN + offset + row as f64 * row_height,
            );
        }
    }
    let mut edges = String::new();
    for (task, ups) in upstreams.iter().enumerate() {
        for &up in ups {
            let (x1, y1) = (at[up].0 + NODE_WIDTH, at[up].1 + NODE_HEIGHT / 2.0);
            let (x2, y2) = (at[task].0, at[task].1 + NODE_HEIGHT / 2.0);
            let bend = (x2 - x1) / 2.0;
            // Numbers only, so the path needs no escaping.
            let _ = write!(
                edges,
                r#"<path d="M{x1:.1} {y1:.1} C{:.1} {y1:.1} {:.1} {y2:.1} {x2:.1} {y2:.1}" marker-end="url(#arrow)"/>"#,
                x1 + bend,
                x2 - bend,
            );
        }
    }
    html! {
        svg.graph xmlns="http://www.w3.org/2000/svg" role="img" aria-label={ "Graph of " (dag.id) }
            width=(format!("{width:.0}")) height=(format!("{height:.0}"))
            viewBox=(format!("0 0 {width:.0} {height:.0}")) {
            defs {
                marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto" {
                    path d="M0 0 L10 5 L0 10 z" {}
                }
            }
            g.edges { (PreEscaped(edges)) }
            @for (position, task) in dag.tasks.iter().enumerate() {
                @let state = states.get(task.id.as_str()).map_or("none", |state| state.as_str());
                @let (x, y) = at[position];
                @let node = html! {
                    g class={ "node " (state_class(state)) } {
                        title { (task.id) ": " (state.replace('_', " ")) }
                        rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(NODE_WIDTH) height=(NODE_HEIGHT) rx="4" {}
                        text x=(format!("{:.1}", x + 8.0)) y=(format!("{:.1}", y + NODE_HEIGHT / 2.0 + 4.0)) { (shorten(&task.id, LABEL_CHARS)) }
                    }
                };
                @match run_id {
                    Some(run_id) => a href={ "/runs/" (run_id) "/tasks/" (task.id) } { (node) },
                    None => (node),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::layout;

    /// Edge crossings between adjacent layers, for judging an order.
    fn crossings(upstreams: &[Vec<usize>], layers: &[Vec<usize>]) -> usize {
        let mut row = vec![0; upstreams.len()];
        for tasks in layers {
            for (position, &task) in tasks.iter().enumerate() {
                row[task] = position;
            }
        }
        let result = layout(upstreams);
        let edges: Vec<(usize, usize)> = upstreams
            .iter()
            .enumerate()
            .flat_map(|(task, ups)| ups.iter().map(move |&up| (up, task)))
            .filter(|&(up, task)| result.layer[task] == result.layer[up] + 1)
            .collect();
        let mut count = 0;
        for (i, &(a_up, a_down)) in edges.iter().enumerate() {
            for &(b_up, b_down) in &edges[i + 1..] {
                if result.layer[a_up] == result.layer[b_up]
                    && (row[a_up] < row[b_up]) != (row[a_down] < row[b_down])
                    && row[a_up] != row[b_up]
                    && row[a_down] != row[b_down]
                {
                    count += 1;
                }
            }
        }
        count
    }

    fn check(upstreams: &[Vec<usize>], expected: Expect) {
        let result = layout(upstreams);
        let rendered: Vec<String> = result
            .layers
            .iter()
            .enumerate()
            .map(|(index, tasks)| format!("layer {index}: {tasks:?}"))
            .collect();
        expected.assert_eq(&format!(
            "{}\ncrossings: {}",
            rendered.join("\n"),
            crossings(upstreams, &result.layers)
        ));
    }

    #[test]
    fn a_layer_is_the_longest_path_from_a_root() {
        // 0 → 1 → 2, and 0 → 2 directly: 2 sits after 1, not beside it.
        check(
            &[vec![], vec![0], vec![0, 1], vec![]],
            expect![[r#"
                layer 0: [0, 3]
                layer 1: [1]
                layer 2: [2]
                crossings: 0"#]],
        );
    }

    #[test]
    fn barycenters_untangle_crossed_edges() {
        // Roots 0 and 1; in file order their children are listed crossed: 2 ← 1, 3 ← 0.
        let upstreams = [vec![], vec![], vec![1], vec![0], vec![2], vec![3]];
        let file_order = vec![vec![0, 1], vec![2, 3], vec![4, 5]];
        assert_eq!(crossings(&upstreams, &file_order), 1);
        check(
            &upstreams,
            expect![[r#"
                layer 0: [0, 1]
                layer 1: [3, 2]
                layer 2: [5, 4]
                crossings: 0"#]],
        );
    }

    #[test]
    fn an_empty_dag_has_no_layers() {
        check(
            &[],
            expect![[r#"

            crossings: 0"#]],
        );
    }
}
