//! Graphs laid out on the server and drawn as SVG: a DAG's tasks, and artifact lineage.
//!
//! A layered layout: a node's layer (its column) is the longest path to it from a root, so every
//! edge points right; the order within each layer comes from barycenter sweeps, which move each
//! node towards the average position of its neighbours and so remove most edge crossings. Edges
//! that skip layers are drawn as curves rather than routed through dummy nodes: simpler, and
//! good enough for the DAGs people write.

use std::collections::{HashMap, VecDeque};
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
/// Labels longer than this are cut (the full text is in the node's tooltip).
const LABEL_CHARS: usize = 24;
/// Down-and-up barycenter sweeps; more rarely helps.
const SWEEPS: usize = 4;

/// Where each node goes: its layer and its position within the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Per node (by index), its layer.
    pub(crate) layer: Vec<usize>,
    /// Per layer, its nodes in order, top to bottom.
    pub(crate) layers: Vec<Vec<usize>>,
}

/// The nodes in an order where every upstream comes before its downstreams (Kahn's algorithm,
/// lowest index first, so an order that already is one is kept). Nodes on a cycle, which a
/// well-formed graph does not have, follow in index order.
fn topological_order(upstreams: &[Vec<usize>]) -> Vec<usize> {
    let count = upstreams.len();
    let mut waiting = vec![0usize; count];
    let mut downstreams = vec![Vec::new(); count];
    for (node, ups) in upstreams.iter().enumerate() {
        for &up in ups.iter().filter(|&&up| up < count && up != node) {
            waiting[node] += 1;
            downstreams[up].push(node);
        }
    }
    let mut ready: VecDeque<usize> = (0..count).filter(|&node| waiting[node] == 0).collect();
    let mut placed = vec![false; count];
    let mut order = Vec::with_capacity(count);
    while let Some(node) = ready.pop_front() {
        placed[node] = true;
        order.push(node);
        for &down in &downstreams[node] {
            waiting[down] -= 1;
            if waiting[down] == 0 {
                ready.push_back(down);
            }
        }
    }
    order.extend((0..count).filter(|&node| !placed[node]));
    order
}

/// Lays out nodes given, per node, the indices of its upstreams. Edges that would close a cycle
/// (and out-of-range indices) are ignored.
pub(crate) fn layout(upstreams: &[Vec<usize>]) -> Layout {
    let count = upstreams.len();
    let order = topological_order(upstreams);
    let mut rank = vec![0usize; count];
    for (position, &node) in order.iter().enumerate() {
        rank[node] = position;
    }
    // Only edges that go forward in the order count, so the layout always terminates.
    let forward: Vec<Vec<usize>> = upstreams
        .iter()
        .enumerate()
        .map(|(node, ups)| {
            ups.iter()
                .copied()
                .filter(|&up| up < count && rank[up] < rank[node])
                .collect()
        })
        .collect();
    let mut layer = vec![0usize; count];
    for &node in &order {
        layer[node] = forward[node]
            .iter()
            .map(|&up| layer[up] + 1)
            .max()
            .unwrap_or(0);
    }
    let depth = layer.iter().max().map_or(0, |max| max + 1);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (node, &in_layer) in layer.iter().enumerate() {
        layers[in_layer].push(node);
    }
    let mut downstreams = vec![Vec::new(); count];
    for (node, ups) in forward.iter().enumerate() {
        for &up in ups {
            downstreams[up].push(node);
        }
    }
    // Positions are fractions of their layer's height, so layers of different sizes compare.
    let mut position = vec![0.0f64; count];
    let place = |layers: &[Vec<usize>], position: &mut [f64]| {
        for nodes in layers {
            for (row, &node) in nodes.iter().enumerate() {
                position[node] = (row as f64 + 0.5) / nodes.len() as f64;
            }
        }
    };
    place(&layers, &mut position);
    for sweep in 0..SWEEPS {
        let downward = sweep % 2 == 0;
        let sweep_order: Vec<usize> = if downward {
            (1..depth).collect()
        } else {
            (0..depth.saturating_sub(1)).rev().collect()
        };
        for index in sweep_order {
            let neighbours = if downward { &forward } else { &downstreams };
            let mut keyed: Vec<(f64, usize)> = layers[index]
                .iter()
                .map(|&node| {
                    let linked: Vec<f64> = neighbours[node]
                        .iter()
                        .filter(|&&other| layer[other] != layer[node])
                        .map(|&other| position[other])
                        .collect();
                    let key = if linked.is_empty() {
                        position[node]
                    } else {
                        linked.iter().sum::<f64>() / linked.len() as f64
                    };
                    (key, node)
                })
                .collect();
            // Stable, so nodes with equal keys keep their order.
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            layers[index] = keyed.into_iter().map(|(_, node)| node).collect();
            let len = layers[index].len() as f64;
            for (row, &node) in layers[index].iter().enumerate() {
                position[node] = (row as f64 + 0.5) / len;
            }
        }
    }
    Layout { layer, layers }
}

/// One node to draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// The text in the box, cut to fit.
    pub(crate) label: String,
    /// The tooltip, with the whole label.
    pub(crate) tooltip: String,
    /// The node group's CSS classes; its colour comes from `--c` and `--t`.
    pub(crate) class: String,
    /// Where the node links to, if anywhere.
    pub(crate) href: Option<String>,
}

/// Draws nodes and the edges given, per node, as the indices of its upstreams, laid out by
/// [`layout`], as an SVG with the class `graph`.
pub(crate) fn draw(aria_label: &str, nodes: &[Node], upstreams: &[Vec<usize>]) -> Markup {
    let layout = layout(upstreams);
    let rows = layout.layers.iter().map(Vec::len).max().unwrap_or(0);
    let row_height = NODE_HEIGHT + ROW_GAP;
    let height = rows as f64 * row_height - ROW_GAP + 2.0 * MARGIN;
    let width = layout.layers.len() as f64 * (NODE_WIDTH + LAYER_GAP) - LAYER_GAP + 2.0 * MARGIN;
    // Smaller layers are centred vertically.
    let mut at = vec![(0.0f64, 0.0f64); nodes.len()];
    for (column, members) in layout.layers.iter().enumerate() {
        let offset = (rows - members.len()) as f64 * row_height / 2.0;
        for (row, &node) in members.iter().enumerate() {
            if let Some(slot) = at.get_mut(node) {
                *slot = (
                    MARGIN + column as f64 * (NODE_WIDTH + LAYER_GAP),
                    MARGIN + offset + row as f64 * row_height,
                );
            }
        }
    }
    let mut edges = String::new();
    for (node, ups) in upstreams.iter().enumerate() {
        for &up in ups {
            let (Some(from), Some(to)) = (at.get(up), at.get(node)) else {
                continue;
            };
            if up == node {
                continue;
            }
            let (x1, y1) = (from.0 + NODE_WIDTH, from.1 + NODE_HEIGHT / 2.0);
            let (x2, y2) = (to.0, to.1 + NODE_HEIGHT / 2.0);
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
        svg.graph xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(aria_label)
            width=(format!("{width:.0}")) height=(format!("{height:.0}"))
            viewBox=(format!("0 0 {width:.0} {height:.0}")) {
            defs {
                marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto" {
                    path d="M0 0 L10 5 L0 10 z" {}
                }
            }
            g.edges { (PreEscaped(edges)) }
            @for (node, (x, y)) in nodes.iter().zip(&at) {
                @let shape = html! {
                    g class=(node.class) {
                        title { (node.tooltip) }
                        rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(NODE_WIDTH) height=(NODE_HEIGHT) rx="4" {}
                        text x=(format!("{:.1}", x + 8.0)) y=(format!("{:.1}", y + NODE_HEIGHT / 2.0 + 4.0)) { (shorten(&node.label, LABEL_CHARS)) }
                    }
                };
                @match &node.href {
                    Some(href) => a href=(href) { (shape) },
                    None => (shape),
                }
            }
        }
    }
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
    let nodes: Vec<Node> = dag
        .tasks
        .iter()
        .map(|task| {
            let state = states
                .get(task.id.as_str())
                .map_or("none", |state| state.as_str());
            Node {
                label: task.id.clone(),
                tooltip: format!("{}: {}", task.id, state.replace('_', " ")),
                class: format!("node {}", state_class(state)),
                href: run_id.map(|run_id| format!("/runs/{run_id}/tasks/{}", task.id)),
            }
        })
        .collect();
    draw(&format!("Graph of {}", dag.id), &nodes, &upstreams)
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
    fn any_node_order_gives_the_same_layers() {
        // The chain 3 → 1 → 0 → 2 listed out of order, as lineage nodes come.
        check(
            &[vec![1], vec![3], vec![0], vec![]],
            expect![[r#"
                layer 0: [3]
                layer 1: [1]
                layer 2: [0]
                layer 3: [2]
                crossings: 0"#]],
        );
    }

    #[test]
    fn a_cycle_does_not_stop_the_layout() {
        // 0 ⇄ 1, and 1 reads itself: no order satisfies every edge, so one is ignored.
        check(
            &[vec![1], vec![0, 1], vec![]],
            expect![[r#"
                layer 0: [0, 2]
                layer 1: [1]
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
