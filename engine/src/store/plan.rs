//! A DAG version prepared for scheduling: tasks by index, downstream lists and leaves.

use std::collections::HashMap;

use crate::dag::{Dag, Task};

/// A DAG version with the lookups the scheduler needs on every completion.
#[derive(Debug)]
pub struct DagPlan {
    /// The DAG version's id in the store.
    pub version_id: i64,
    /// The definition.
    pub dag: Dag,
    index: HashMap<String, usize>,
    downstream: Vec<Vec<usize>>,
    leaves: Vec<usize>,
}

impl DagPlan {
    /// Indexes a definition.
    pub fn new(version_id: i64, dag: Dag) -> DagPlan {
        let index: HashMap<String, usize> = dag
            .tasks
            .iter()
            .enumerate()
            .map(|(position, task)| (task.id.clone(), position))
            .collect();
        let mut downstream = vec![Vec::new(); dag.tasks.len()];
        for (position, task) in dag.tasks.iter().enumerate() {
            for upstream in &task.depends_on {
                if let Some(&upstream_position) = index.get(upstream) {
                    downstream[upstream_position].push(position);
                }
            }
        }
        let leaves = (0..dag.tasks.len())
            .filter(|&position| downstream[position].is_empty())
            .collect();
        DagPlan {
            version_id,
            dag,
            index,
            downstream,
            leaves,
        }
    }

    /// The task with this id.
    pub fn task(&self, task_id: &str) -> Option<&Task> {
        self.index
            .get(task_id)
            .map(|&position| &self.dag.tasks[position])
    }

    /// The tasks that depend directly on `task_id`.
    pub fn downstream_of(&self, task_id: &str) -> impl Iterator<Item = &Task> {
        self.index.get(task_id).into_iter().flat_map(|&position| {
            self.downstream[position]
                .iter()
                .map(|&down| &self.dag.tasks[down])
        })
    }

    /// `task_id` and every task that depends on it, directly or not, in DAG order.
    pub fn with_descendants(&self, task_id: &str) -> Vec<&Task> {
        let Some(&start) = self.index.get(task_id) else {
            return Vec::new();
        };
        let mut seen = vec![false; self.dag.tasks.len()];
        let mut stack = vec![start];
        while let Some(position) = stack.pop() {
            if !seen[position] {
                seen[position] = true;
                stack.extend(&self.downstream[position]);
            }
        }
        self.dag
            .tasks
            .iter()
            .enumerate()
            .filter(|(position, _)| seen[*position])
            .map(|(_, task)| task)
            .collect()
    }

    /// Tasks nothing depends on.
    pub fn leaves(&self) -> impl Iterator<Item = &Task> {
        self.leaves
            .iter()
            .map(|&position| &self.dag.tasks[position])
    }
}
