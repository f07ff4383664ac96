//! HTTP for kiln: the REST API, the workers' execution API and the console.
//!
//! Only this crate speaks HTTP. Its request and response types (`wire`) are its own, converted
//! from and to the engine's, so the engine can change without changing the wire format. The
//! same crate holds the matching clients: the worker's execution client and the CLI's API client.
//!
//! The modules by role: `routes` holds the one route table (which `app` serves and the OpenAPI
//! document is written from) and mounts the handlers of `api` (REST, one file per resource) and
//! `exec` (the workers' API), and the `console`'s own router. Handlers take the parts of
//! `state::AppState` they use (`State<Arc<dyn Store>>` …); the console takes its
//! `ConsoleState`, which `state` builds, so it never names `AppState`. Below them all, `error`
//! and `wire` (the JSON shapes and their schemas), which depends on no other module.
//! `cli/tests/tidy.rs` checks that the modules form no circle.

mod api;
mod auth;
pub mod client;
pub mod console;
mod error;
mod exec;
mod health;
mod limits;
mod routes;
mod serve;
pub mod serving;
mod state;
pub mod wire;

pub use console::{ConsoleConfig, ConsoleConfigError};
pub use error::AppError;
pub use limits::ServeOptions;
pub use routes::{app, openapi};
pub use serve::serve;
pub use state::AppState;
