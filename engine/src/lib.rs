//! The kiln engine: DAG definitions and their validation, schedules, the task plugin contract,
//! durable state and the scheduler.
//!
//! `engine` knows nothing about HTTP, HTML or any concrete plugin: the `web` crate speaks HTTP and
//! the `tasks` crate supplies the plugins, both through the types defined here.

#![warn(missing_docs)]

pub mod artifacts;
pub mod dag;
pub mod duration;
pub mod execution;
pub mod plugin;
pub mod schedule;
pub mod scheduler;
pub mod state;
pub mod store;
pub mod worker;

pub use dag::{Dag, Task};
pub use plugin::{PluginRegistry, TaskContext, TaskError, TaskOutput, TaskPlugin};
