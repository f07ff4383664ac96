//! `noop`: does nothing, optionally after a pause. It measures the engine's own overhead in
//! benchmarks and stands in for real work in tests.

use std::time::Duration;

use kiln_engine::{TaskContext, TaskError, TaskOutput, TaskPlugin};
use schemars::JsonSchema;
use serde::Deserialize;

/// Params of `noop`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopParams {
    /// How long to wait before succeeding, such as `100ms`.
    #[serde(default)]
    pub sleep: Option<String>,
}

/// The `noop` plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Noop;

impl TaskPlugin for Noop {
    const KIND: &'static str = "noop";
    type Params = NoopParams;

    async fn run(&self, ctx: &TaskContext, params: NoopParams) -> Result<TaskOutput, TaskError> {
        if let Some(sleep) = params.sleep {
            let pause: Duration =
                kiln_engine::duration::parse(&sleep).map_err(TaskError::Permanent)?;
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = ctx.cancellation().cancelled() => return Err(TaskError::Cancelled("stopped while sleeping".to_owned())),
            }
        }
        Ok(TaskOutput::default())
    }
}
