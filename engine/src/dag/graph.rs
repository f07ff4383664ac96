//! Graph checks on task dependencies: cycles (named, task by task) and a stable topological order.
//!
//! Every walk here keeps its own stack or queue: a DAG file decides how deep a recursive walk
//! would go, and a 4,000-task chain used to overflow a tokio worker's stack (petgraph's
//! `tarjan_scc` recurses once per task; its `kosaraju_scc` walks with explicit stacks).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// Every dependency cycle among `tasks`, each as the task ids along it, starting and ending with
/// the same task (`["train", "evaluate", "train"]`).
///
/// `tasks` pairs each task id with its upstream ids; unknown upstream ids are ignored here (the
/// loader reports them separately). One cycle is reported per strongly connected component,
/// starting at the component's first task in file order, so the message is deterministic.
pub fn dependency_cycles(tasks: &[(String, Vec<String>)]) -> Vec<Vec<String>> {
    // Most files have no cycle, and a topological sort proves that in linear time without
    // building a second graph.
    if topological_order(tasks).is_some() {
        return Vec::new();
    }
    let index_of: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(index, (id, _))| (id.as_str(), index))
        .collect();
    let mut graph = DiGraph::<usize, ()>::with_capacity(tasks.len(), tasks.len());
    let nodes: Vec<NodeIndex> = (0..tasks.len())
        .map(|index| graph.add_node(index))
        .collect();
    for (index, (_, upstreams)) in tasks.iter().enumerate() {
        for upstream in upstreams {
            if let Some(&upstream_index) = index_of.get(upstream.as_str()) {
                graph.add_edge(nodes[upstream_index], nodes[index], ());
            }
        }
    }

    let mut cycles = Vec::new();
    for component in kosaraju_scc(&graph) {
        let members: BTreeSet<usize> = component.iter().map(|node| graph[*node]).collect();
        let Some(&start) = members.first() else {
            continue;
        };
        let is_self_loop = graph.contains_edge(nodes[start], nodes[start]);
        if members.len() == 1 && !is_self_loop {
            continue;
        }
        // Shortest way back to `start` inside the component, by breadth-first search.
        let mut previous: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut closing = None;
        'search: while let Some(current) = queue.pop_front() {
            let mut next: Vec<usize> = graph
                .neighbors(nodes[current])
                .map(|node| graph[node])
                .filter(|n| members.contains(n))
                .collect();
            next.sort_unstable();
            for neighbour in next {
                if neighbour == start {
                    closing = Some(current);
                    break 'search;
                }
                if let std::collections::hash_map::Entry::Vacant(entry) = previous.entry(neighbour)
                {
                    entry.insert(current);
                    queue.push_back(neighbour);
                }
            }
        }
        let Some(mut cursor) = closing else { continue };
        let mut path = vec![start];
        while cursor != start {
            path.push(cursor);
            cursor = previous[&cursor];
        }
        path.push(start);
        let last = path.len() - 1;
        path[1..last].reverse();
        cycles.push(
            path.into_iter()
                .map(|index| tasks[index].0.clone())
                .collect(),
        );
    }
    cycles.sort();
    cycles
}

/// A topological order of `tasks` (indices into the slice), upstream before downstream, with file
/// order breaking ties; `None` if there is a cycle.
pub fn topological_order(tasks: &[(String, Vec<String>)]) -> Option<Vec<usize>> {
    let index_of: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(index, (id, _))| (id.as_str(), index))
        .collect();
    let mut pending = vec![0usize; tasks.len()];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (index, (_, upstreams)) in tasks.iter().enumerate() {
        for upstream in upstreams {
            if let Some(&upstream_index) = index_of.get(upstream.as_str()) {
                pending[index] += 1;
                downstream[upstream_index].push(index);
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..tasks.len())
        .filter(|&index| pending[index] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(tasks.len());
    while let Some(Reverse(index)) = ready.pop() {
        order.push(index);
        for &next in &downstream[index] {
            pending[next] -= 1;
            if pending[next] == 0 {
                ready.push(Reverse(next));
            }
        }
    }
    (order.len() == tasks.len()).then_some(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tasks(edges: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        edges
            .iter()
            .map(|(id, ups)| {
                (
                    (*id).to_owned(),
                    ups.iter().map(|up| (*up).to_owned()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn names_the_cycle() {
        let graph = tasks(&[
            ("ingest", &[]),
            ("train", &["ingest", "evaluate"]),
            ("evaluate", &["train"]),
        ]);
        assert_eq!(
            dependency_cycles(&graph),
            vec![vec!["train", "evaluate", "train"]]
        );
        assert_eq!(topological_order(&graph), None);
    }

    #[test]
    fn self_loop_and_two_separate_cycles() {
        let graph = tasks(&[("a", &["a"]), ("b", &["c"]), ("c", &["d"]), ("d", &["b"])]);
        assert_eq!(
            dependency_cycles(&graph),
            vec![vec!["a", "a"], vec!["b", "d", "c", "b"]]
        );
    }

    #[test]
    fn order_is_stable_by_file_order() {
        let graph = tasks(&[
            ("join", &["left", "right"]),
            ("right", &["root"]),
            ("left", &["root"]),
            ("root", &[]),
        ]);
        let order: Vec<&str> = topological_order(&graph)
            .unwrap()
            .iter()
            .map(|&i| graph[i].0.as_str())
            .collect();
        assert_eq!(order, ["root", "right", "left", "join"]);
    }

    /// A chain `t0 <- t1 <- … <- t{len-1}`, optionally closed into one cycle by `t0` depending
    /// on the last task.
    fn chain(len: usize, closed: bool) -> Vec<(String, Vec<String>)> {
        (0..len)
            .map(|index| {
                let upstream = match index {
                    0 if closed => vec![format!("t{}", len - 1)],
                    0 => Vec::new(),
                    _ => vec![format!("t{}", index - 1)],
                };
                (format!("t{index}"), upstream)
            })
            .collect()
    }

    #[test]
    fn a_chain_deeper_than_any_stack_is_checked_without_recursion() {
        // Test threads have a 2 MiB stack: a recursive walk overflows it long before this.
        let open = chain(200_000, false);
        assert!(dependency_cycles(&open).is_empty());
        assert_eq!(
            topological_order(&open).map(|order| order.len()),
            Some(200_000)
        );

        let closed = chain(200_000, true);
        let cycles = dependency_cycles(&closed);
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].len(), 200_001);
        assert_eq!(cycles[0].first().map(String::as_str), Some("t0"));
        assert_eq!(cycles[0].last().map(String::as_str), Some("t0"));
        assert_eq!(topological_order(&closed), None);
    }

    /// A random DAG: task `i` may depend only on tasks before it, so it is acyclic by construction.
    fn acyclic_graph() -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
        (1usize..40).prop_flat_map(|size| {
            proptest::collection::vec(
                proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
                size,
            )
            .prop_map(move |choices| {
                choices
                    .iter()
                    .enumerate()
                    .map(|(index, picks)| {
                        let mut ups: Vec<String> = if index == 0 {
                            Vec::new()
                        } else {
                            picks
                                .iter()
                                .map(|pick| format!("t{}", pick.index(index)))
                                .collect()
                        };
                        ups.sort();
                        ups.dedup();
                        (format!("t{index}"), ups)
                    })
                    .collect()
            })
        })
    }

    proptest! {
        #[test]
        fn acyclic_graphs_order_respects_every_edge(graph in acyclic_graph(), seed in any::<u64>()) {
            // Shuffle declaration order so the order does not simply follow the construction.
            let mut shuffled = graph.clone();
            let len = shuffled.len();
            for index in 0..len {
                let swap = (seed.wrapping_mul(index as u64 + 7) % len as u64) as usize;
                shuffled.swap(index, swap);
            }
            prop_assert!(dependency_cycles(&shuffled).is_empty());
            let order = topological_order(&shuffled).unwrap();
            let position: HashMap<&str, usize> =
                order.iter().enumerate().map(|(pos, &index)| (shuffled[index].0.as_str(), pos)).collect();
            for (id, ups) in &shuffled {
                for up in ups {
                    prop_assert!(position[up.as_str()] < position[id.as_str()], "{up} must come before {id}");
                }
            }
        }

        #[test]
        fn a_back_edge_always_gives_a_named_cycle(graph in acyclic_graph(), pick in any::<prop::sample::Index>()) {
            // Find an edge up -> down and add down -> up as a back edge.
            let edges: Vec<(usize, String)> = graph
                .iter()
                .enumerate()
                .flat_map(|(index, (_, ups))| ups.iter().map(move |up| (index, up.clone())))
                .collect();
            prop_assume!(!edges.is_empty());
            let (down_index, up) = edges[pick.index(edges.len())].clone();
            let down = graph[down_index].0.clone();
            let mut cyclic = graph.clone();
            let up_index = cyclic.iter().position(|(id, _)| *id == up).unwrap();
            cyclic[up_index].1.push(down.clone());
            let cycles = dependency_cycles(&cyclic);
            prop_assert!(!cycles.is_empty());
            prop_assert!(topological_order(&cyclic).is_none());
            let cycle = cycles.iter().find(|cycle| cycle.contains(&up)).expect("the cycle names the back edge");
            prop_assert!(cycle.contains(&down));
            prop_assert_eq!(cycle.first(), cycle.last());
            // Every step along the reported cycle is a real dependency edge.
            for step in cycle.windows(2) {
                let downstream = cyclic.iter().find(|(id, _)| *id == step[1]).unwrap();
                prop_assert!(downstream.1.contains(&step[0]), "{} -> {} is not an edge", step[0], step[1]);
            }
        }
    }
}
