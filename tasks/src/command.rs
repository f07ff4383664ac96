//! `command`: runs any executable. Exit code 0 is success; anything else fails the attempt with
//! the exit code and the tail of standard error.
//!
//! The child runs in its own process group, so cancelling the task (or its timeout) stops the
//! whole tree it started, not only the direct child.
//!
//! Artifacts reach the program through its environment, so a program in any language can take
//! part: `KILN_INPUT_<NAME>` is the path of each input's local copy and `KILN_OUTPUT_<NAME>` the
//! path each declared output must be written to (names upper-cased, `-` and `.` as `_`).
//! `KILN_DAGS_DIR` is the DAG folder, for programs that read files kept beside the DAGs.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use kiln_engine::plugin::LogStream;
use kiln_engine::{TaskContext, TaskError, TaskOutput, TaskPlugin};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// How many lines of standard error a failure message quotes.
const STDERR_TAIL_LINES: usize = 20;
/// Longer lines are cut, so one runaway line cannot fill memory.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// How long a cancelled process group gets between SIGTERM and SIGKILL.
const TERMINATION_GRACE: Duration = Duration::from_secs(3);

/// Params of `command`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// The executable: a path, or a name looked up on `PATH`.
    pub program: String,
    /// Its arguments, passed as they are (no shell).
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables, on top of the worker's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory; by default the attempt's scratch directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

/// `KILN_INPUT_<NAME>`, `KILN_OUTPUT_<NAME>` and `KILN_DAGS_DIR` for the task's artifacts.
fn artifact_env(ctx: &TaskContext) -> Vec<(String, std::ffi::OsString)> {
    let variable = |prefix: &str, name: &str| {
        let name: String = name
            .chars()
            .map(|c| match c {
                '-' | '.' => '_',
                other => other.to_ascii_uppercase(),
            })
            .collect();
        format!("{prefix}{name}")
    };
    let inputs = ctx
        .inputs()
        .iter()
        .map(|(name, input)| (variable("KILN_INPUT_", name), input.path.clone().into()));
    let outputs = ctx
        .outputs()
        .iter()
        .map(|(name, slot)| (variable("KILN_OUTPUT_", name), slot.path.clone().into()));
    let dags = ctx
        .dags_dir
        .iter()
        .map(|dir| ("KILN_DAGS_DIR".to_owned(), dir.clone().into()));
    inputs.chain(outputs).chain(dags).collect()
}

/// The `command` plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Command;

/// `KILN_PARAM_<NAME>` for each of the run's params, the name upper-cased with `-` as `_` (a
/// shell cannot name a variable with `-`): a string as it is, any other value as JSON (`3`,
/// `true`, `["a","b"]`).
fn param_env(ctx: &TaskContext) -> Vec<(String, String)> {
    ctx.run_params
        .iter()
        .map(|(name, value)| {
            let text = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let name = name.to_ascii_uppercase().replace('-', "_");
            (format!("KILN_PARAM_{name}"), text)
        })
        .collect()
}

impl TaskPlugin for Command {
    const KIND: &'static str = "command";
    type Params = CommandParams;

    async fn run(&self, ctx: &TaskContext, params: CommandParams) -> Result<TaskOutput, TaskError> {
        let mut command = tokio::process::Command::new(&params.program);
        command
            .args(&params.args)
            .envs(&params.env)
            .env("KILN_DAG_ID", &ctx.dag_id)
            .env("KILN_RUN_ID", ctx.run_id.to_string())
            .env("KILN_TASK_ID", &ctx.task_id)
            .env("KILN_TRY_NUMBER", ctx.try_number.to_string())
            .env("KILN_WORK_DIR", &ctx.work_dir)
            .envs(artifact_env(ctx))
            .envs(param_env(ctx))
            .current_dir(params.cwd.as_ref().unwrap_or(&ctx.work_dir))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|error| {
            let message = format!("cannot start `{}`: {error}", params.program);
            if error.kind() == std::io::ErrorKind::NotFound
                || error.kind() == std::io::ErrorKind::PermissionDenied
            {
                TaskError::Permanent(message)
            } else {
                TaskError::Retryable(message)
            }
        })?;
        let process_group = child.id().and_then(|pid| i32::try_from(pid).ok());

        let stdout = child
            .stdout
            .take()
            .map(|out| tokio::spawn(pump(ctx.clone(), LogStream::Stdout, out)));
        let stderr = child
            .stderr
            .take()
            .map(|err| tokio::spawn(pump(ctx.clone(), LogStream::Stderr, err)));

        let status = tokio::select! {
            status = child.wait() => status,
            () = ctx.cancellation().cancelled() => {
                terminate(process_group, &mut child).await;
                return Err(TaskError::Cancelled(format!("`{}` was stopped", params.program)));
            }
        };
        // The direct child is gone; anything it left running in its group goes with it, so an
        // attempt never leaks processes and the output pipes reach end of file.
        signal_group(process_group, libc::SIGKILL);
        if let Some(stdout) = stdout {
            let _ = stdout.await;
        }
        let stderr_tail = match stderr {
            Some(handle) => handle.await.unwrap_or_default(),
            None => VecDeque::new(),
        };
        let status = status.map_err(|error| {
            TaskError::Retryable(format!("lost track of `{}`: {error}", params.program))
        })?;
        outcome(&params.program, status, stderr_tail)
    }
}

fn outcome(
    program: &str,
    status: ExitStatus,
    stderr_tail: VecDeque<String>,
) -> Result<TaskOutput, TaskError> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return Ok(TaskOutput {
            summary: serde_json::json!({ "exit_code": 0 }),
            ..TaskOutput::default()
        });
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "failed".to_owned(),
    };
    let mut message = format!("`{program}` {how}");
    if !stderr_tail.is_empty() {
        message.push_str("; last lines of stderr:\n");
        message.push_str(&Vec::from(stderr_tail).join("\n"));
    }
    Err(TaskError::Retryable(message))
}

/// Forwards a stream line by line to the task log; returns the last lines seen.
async fn pump(
    ctx: TaskContext,
    stream: LogStream,
    reader: impl AsyncRead + Unpin,
) -> VecDeque<String> {
    let mut reader = BufReader::new(reader);
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match read_capped_line(&mut reader, &mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buffer);
        let line = line.trim_end_matches(['\n', '\r']);
        ctx.log_line(stream, line);
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
    }
    tail
}

/// Reads one line into `buffer`, keeping at most [`MAX_LINE_BYTES`] of it and discarding the rest
/// of an overlong line. Returns the number of bytes consumed (0 at end of file).
async fn read_capped_line<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(consumed);
        }
        let (chunk, found_newline) = match available.iter().position(|&byte| byte == b'\n') {
            Some(index) => (&available[..=index], true),
            None => (available, false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(buffer.len());
        buffer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let length = chunk.len();
        reader.consume(length);
        consumed += length;
        if found_newline {
            return Ok(consumed);
        }
    }
}

fn signal_group(process_group: Option<i32>, signal: i32) {
    if let Some(group) = process_group {
        // SAFETY: `killpg` only sends a signal; an already-gone group yields ESRCH, which is fine.
        unsafe {
            libc::killpg(group, signal);
        }
    }
}

/// SIGTERM to the whole group, then SIGKILL if it has not exited within the grace period.
async fn terminate(process_group: Option<i32>, child: &mut tokio::process::Child) {
    signal_group(process_group, libc::SIGTERM);
    if tokio::time::timeout(TERMINATION_GRACE, child.wait())
        .await
        .is_err()
    {
        signal_group(process_group, libc::SIGKILL);
        let _ = child.wait().await;
    }
    signal_group(process_group, libc::SIGKILL);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use kiln_engine::plugin::LogSink;
    use tokio_util::sync::CancellationToken;

    use super::*;

    #[derive(Default)]
    struct Captured(Mutex<Vec<(LogStream, String)>>);

    impl LogSink for Captured {
        fn line(&self, stream: LogStream, text: &str) {
            self.0.lock().unwrap().push((stream, text.to_owned()));
        }
    }

    fn context(dir: &std::path::Path) -> (TaskContext, Arc<Captured>, CancellationToken) {
        let logs = Arc::new(Captured::default());
        let cancel = CancellationToken::new();
        let ctx = TaskContext::new(
            "dag",
            7,
            "task",
            1,
            dir.to_owned(),
            logs.clone(),
            cancel.clone(),
        );
        (ctx, logs, cancel)
    }

    fn params(program: &str, args: &[&str]) -> CommandParams {
        CommandParams {
            program: program.to_owned(),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            env: BTreeMap::new(),
            cwd: None,
        }
    }

    #[tokio::test]
    async fn captures_stdout_stderr_env_and_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, logs, _) = context(dir.path());
        let mut params = params(
            "sh",
            &["-c", "echo out-$GREETING $KILN_TASK_ID; echo err >&2; pwd"],
        );
        params.env.insert("GREETING".to_owned(), "hi".to_owned());
        let output = Command.run(&ctx, params).await.unwrap();
        assert_eq!(output.summary["exit_code"], 0);
        let logs = logs.0.lock().unwrap().clone();
        assert!(
            logs.contains(&(LogStream::Stdout, "out-hi task".to_owned())),
            "{logs:?}"
        );
        assert!(
            logs.contains(&(LogStream::Stderr, "err".to_owned())),
            "{logs:?}"
        );
        let cwd = std::fs::canonicalize(dir.path()).unwrap();
        assert!(
            logs.contains(&(LogStream::Stdout, cwd.display().to_string())),
            "{logs:?}"
        );
    }

    #[tokio::test]
    async fn non_zero_exit_fails_with_code_and_stderr_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _, _) = context(dir.path());
        let script = "for i in $(seq 1 30); do echo line$i >&2; done; exit 3";
        let error = Command
            .run(&ctx, params("sh", &["-c", script]))
            .await
            .unwrap_err();
        assert!(error.is_retryable());
        let message = error.to_string();
        assert!(
            message.starts_with("`sh` exited with code 3; last lines of stderr:\nline11\n"),
            "{message}"
        );
        assert!(message.ends_with("line30"), "{message}");
        assert!(!message.contains("line10\n"), "{message}");
    }

    #[tokio::test]
    async fn missing_program_is_a_permanent_error() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _, _) = context(dir.path());
        let error = Command
            .run(&ctx, params("kiln-no-such-program", &[]))
            .await
            .unwrap_err();
        assert!(!error.is_retryable());
        assert!(
            error
                .to_string()
                .starts_with("cannot start `kiln-no-such-program`"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn cancelling_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _, cancel) = context(dir.path());
        let pid_file = dir.path().join("grandchild.pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
        let run =
            tokio::spawn(async move { Command.run(&ctx, params("sh", &["-c", &script])).await });
        while !pid_file.exists()
            || std::fs::read_to_string(&pid_file)
                .unwrap()
                .trim()
                .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let grandchild: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let started = Instant::now();
        cancel.cancel();
        let error = run.await.unwrap().unwrap_err();
        assert!(matches!(error, TaskError::Cancelled(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // Signals are delivered asynchronously, so allow the grandchild a moment to die.
        let gone = || {
            // SAFETY: signal 0 only checks whether the process exists.
            let exists = unsafe { libc::kill(grandchild, 0) } == 0;
            let zombie = std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .map(|stat| stat.split_whitespace().nth(2) == Some("Z"))
                .unwrap_or(true);
            !exists || zombie
        };
        while !gone() && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone(), "the grandchild sleep survived cancellation for 5 s");
    }

    #[tokio::test]
    async fn overlong_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, logs, _) = context(dir.path());
        Command
            .run(
                &ctx,
                params(
                    "sh",
                    &[
                        "-c",
                        "head -c 200000 /dev/zero | tr '\\0' x; echo; echo after",
                    ],
                ),
            )
            .await
            .unwrap();
        let logs = logs.0.lock().unwrap().clone();
        assert_eq!(logs[0].1.len(), MAX_LINE_BYTES);
        assert_eq!(logs[1].1, "after");
    }
}
