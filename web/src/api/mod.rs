//! The public REST API under `/api/v1`: what the CLI, the console and users with curl call, one
//! file per resource.

pub(crate) mod artifacts;
pub(crate) mod dags;
pub(crate) mod models;
pub(crate) mod runs;
pub(crate) mod workers;
