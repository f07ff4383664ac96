//! Commands that talk to a running server through the public REST API: `kiln trigger`,
//! `kiln runs show`, `kiln logs`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use kiln_engine::state::{RunState, TaskState};
use kiln_web::client::ApiClient;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone)]
pub(crate) struct ServerAddress {
    pub(crate) url: String,
    pub(crate) api_token: Option<String>,
}

impl ServerAddress {
    fn client(&self) -> ApiClient {
        ApiClient::new(&self.url, self.api_token.clone())
    }
}

/// Reads `k=v`; the value is JSON when it parses as JSON (`3`, `true`, `[1,2]`), text otherwise.
fn parse_param(text: &str) -> anyhow::Result<(String, serde_json::Value)> {
    let (key, value) = text
        .split_once('=')
        .with_context(|| format!("--param `{text}` must look like name=value"))?;
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

pub(crate) async fn trigger(
    server: &ServerAddress,
    dag_id: &str,
    params: &[String],
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let params = params
        .iter()
        .map(|text| parse_param(text))
        .collect::<anyhow::Result<serde_json::Map<_, _>>>()?;
    let client = server.client();
    let run = client
        .trigger(dag_id, params)
        .await
        .with_context(|| format!("failed to trigger `{dag_id}`"))?;
    println!("triggered run {} of `{dag_id}`", run.id);
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut stderr = std::io::stderr();
    // A redrawn bar is for a terminal; a file or a pipe gets a line when something changes.
    let terminal = std::io::IsTerminal::is_terminal(&stderr);
    let mut last_reported = None;
    loop {
        let detail = client
            .run(run.id)
            .await
            .context("failed to follow the run")?;
        let total = detail.tasks.len();
        let done = detail
            .tasks
            .iter()
            .filter(|task| is_final(task.state))
            .count();
        if terminal {
            let width = 30;
            let filled = (done * width).checked_div(total).unwrap_or(width);
            let _ = write!(
                stderr,
                "\r[{}{}] {done}/{total} tasks  {}   ",
                "#".repeat(filled),
                " ".repeat(width - filled),
                detail.run.state
            );
            let _ = stderr.flush();
        } else if last_reported != Some((done, detail.run.state)) {
            last_reported = Some((done, detail.run.state));
            let _ = writeln!(stderr, "{done}/{total} tasks, run {}", detail.run.state);
        }
        if detail.run.state.is_final() {
            if terminal {
                let _ = writeln!(stderr);
            }
            print_tasks(&detail);
            return Ok(if detail.run.state == RunState::Success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn is_final(state: TaskState) -> bool {
    state.is_final()
}

/// How many lines of a task's error, after its first, `runs show` and `trigger --wait` print
/// under its row (a failed command's error carries the last 20 lines of its stderr).
const ERROR_LINES_SHOWN: usize = 20;

fn print_tasks(detail: &kiln_web::wire::RunDetail) {
    println!(
        "run {} of `{}`: {}",
        detail.run.id, detail.run.dag_id, detail.run.state
    );
    if let Some(mlflow) = &detail.mlflow {
        println!("  MLflow: {}", mlflow.url);
    }
    println!(
        "  {:<24} {:<16} {:>5}  {:>10}  ERROR",
        "TASK", "STATE", "TRIES", "DURATION"
    );
    for task in &detail.tasks {
        let duration = task
            .duration_seconds
            .map_or_else(|| "-".to_owned(), |seconds| format!("{seconds:.3}s"));
        let mut error_lines = task.error.as_deref().unwrap_or("").lines();
        let error = error_lines.next().unwrap_or("");
        // The task's own tries; attempts lost to the infrastructure use none of them, and are
        // counted beside the error.
        let lost = task.lost_attempts;
        let error = match lost {
            0 => error.to_owned(),
            _ => format!("[{lost} lost] {error}").trim_end().to_owned(),
        };
        println!(
            "  {:<24} {:<16} {:>2}/{:<2}  {:>10}  {}",
            task.task_id,
            task.state.as_str(),
            task.try_number - lost,
            task.max_tries - lost,
            duration,
            error
        );
        // The first line of an error says what failed; the lines under it (a command's last
        // lines of stderr) usually say why, so they follow the row instead of being cut off.
        for line in error_lines.take(ERROR_LINES_SHOWN) {
            println!("  {:<24} | {line}", "");
        }
        if let Some(mlflow) = &task.mlflow {
            println!("  {:<24} MLflow: {}", "", mlflow.url);
        }
    }
}

pub(crate) async fn show(server: &ServerAddress, run_id: i64) -> anyhow::Result<ExitCode> {
    let detail = server
        .client()
        .run(run_id)
        .await
        .with_context(|| format!("failed to read run {run_id}"))?;
    print_tasks(&detail);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn logs(
    server: &ServerAddress,
    run_id: i64,
    task_id: &str,
    try_number: Option<i64>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let client = server.client();
    let mut after = -1;
    let mut stdout = std::io::stdout().lock();
    loop {
        let page = client
            .logs(run_id, task_id, try_number, after)
            .await
            .with_context(|| format!("failed to read the log of `{task_id}` in run {run_id}"))?;
        for chunk in &page.chunks {
            stdout
                .write_all(chunk.text.as_bytes())
                .context("failed to write the log")?;
            after = chunk.seq;
        }
        stdout.flush().ok();
        if !follow || (page.finished && page.chunks.is_empty()) {
            return Ok(ExitCode::SUCCESS);
        }
        if page.chunks.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// Refuses `kiln logs --follow` style misuse early, with the reason.
/// `kiln runs cancel`: a run already over is said so, and is not an error.
pub(crate) async fn cancel(server: &ServerAddress, run_id: i64) -> anyhow::Result<ExitCode> {
    let answer = server
        .client()
        .cancel(run_id)
        .await
        .with_context(|| format!("failed to cancel run {run_id}"))?;
    if answer.cancelled {
        println!("run {run_id} cancelled");
    } else {
        println!("run {run_id} had already ended; nothing to cancel");
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln tasks clear`.
pub(crate) async fn clear(
    server: &ServerAddress,
    run_id: i64,
    task_id: &str,
    downstream: bool,
) -> anyhow::Result<()> {
    let answer = server
        .client()
        .clear(run_id, task_id, downstream)
        .await
        .with_context(|| format!("failed to clear `{task_id}` in run {run_id}"))?;
    println!(
        "cleared in run {run_id}, to run again: {}",
        answer.cleared.join(", ")
    );
    Ok(())
}

/// `kiln tasks mark`.
pub(crate) async fn mark(
    server: &ServerAddress,
    run_id: i64,
    task_id: &str,
    state: TaskState,
) -> anyhow::Result<()> {
    server
        .client()
        .mark(run_id, task_id, state)
        .await
        .with_context(|| format!("failed to mark `{task_id}` in run {run_id}"))?;
    println!("`{task_id}` in run {run_id} marked {state}");
    Ok(())
}

pub(crate) fn check_run_id(text: &str) -> anyhow::Result<i64> {
    match text.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => bail!("`{text}` is not a run id (a positive number, as `kiln runs list` shows)"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn params_parse_as_json_or_text() {
        assert_eq!(
            super::parse_param("n=3").unwrap(),
            ("n".to_owned(), serde_json::json!(3))
        );
        assert_eq!(
            super::parse_param("name=world").unwrap(),
            ("name".to_owned(), serde_json::json!("world"))
        );
        assert_eq!(
            super::parse_param("flags=[1,2]").unwrap(),
            ("flags".to_owned(), serde_json::json!([1, 2]))
        );
        assert!(super::parse_param("oops").is_err());
    }
}
