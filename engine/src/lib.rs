//! The kiln engine: DAG definitions and their validation, schedules, the task plugin contract,
//! durable state and the scheduler.
//!
//! `engine` serves no HTTP, renders no HTML and knows no concrete plugin: the `web` crate serves
//! HTTP and the `tasks` crate supplies the plugins, both through the types defined here. Its one
//! HTTP client is the MLflow mirror's (`mlflow`), which drains an outbox kept in the store.

#![warn(missing_docs)]

pub mod artifacts;
pub mod dag;
pub mod duration;
pub mod duties;
pub mod execution;
pub mod mlflow;
pub mod plugin;
pub mod schedule;
pub mod scheduler;
pub mod state;
pub mod store;
pub mod worker;

pub use dag::{Dag, Task};
pub use plugin::{PluginRegistry, TaskContext, TaskError, TaskOutput, TaskPlugin};
