//! The server and workers as real processes: work is done exactly once, dead workers and a
//! restarted server lose nothing, cancellation and timeouts stop child processes, tokens hold.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kiln_engine::execution::ExecutionApi;
use kiln_engine::state::{RunState, TaskState};
use kiln_engine::store::{AttemptResult, Completion, Rejection};
use kiln_web::client::ExecutionClient;
use support::{Cluster, Process, TOKEN, command_chain, get_text, kiln};

fn fan_out(id: &str, count: usize, command: &str) -> String {
    fan_out_with(
        id,
        count,
        command,
        "[defaults]\nretries = 2\nretry_delay = \"1s\"\n",
    )
}

/// `count` independent `sh -c COMMAND` tasks after `head` (top-level keys or `[defaults]`).
fn fan_out_with(id: &str, count: usize, command: &str, head: &str) -> String {
    let mut text = format!("id = \"{id}\"\n{head}");
    for index in 0..count {
        text.push_str(&format!(
            "[[tasks]]\nid = \"t{index}\"\nkind = \"command\"\nparams = {{ program = \"sh\", args = [\"-c\", \"{command}\"] }}\n"
        ));
    }
    text
}

#[test]
fn two_workers_run_200_tasks_each_exactly_once() {
    let mut cluster = Cluster::start(&[("wide.toml", &fan_out("wide", 200, "true"))], "6s");
    cluster.start_worker("w1", 8);
    cluster.start_worker("w2", 8);
    let run_id = cluster.trigger("wide");
    let detail = cluster.wait_finished(run_id, Duration::from_secs(60));
    assert_eq!(detail.run.state, RunState::Success);
    assert_eq!(detail.tasks.len(), 200);
    let attempts = cluster.attempts(run_id);
    for (task, states) in &attempts {
        assert_eq!(
            states,
            &["success"],
            "task {task} ran {} time(s)",
            states.len()
        );
    }
    let workers: HashSet<String> = detail
        .tasks
        .iter()
        .filter_map(|task| task.worker_id.clone())
        .collect();
    assert!(workers.is_empty(), "finished tasks hold no worker");
}

#[test]
fn a_killed_worker_loses_nothing_and_its_late_report_is_refused() {
    // No retries: the lost attempts (rescued when their lease expires) must not need any.
    let mut cluster = Cluster::start(
        &[("sleepy.toml", &fan_out_with("sleepy", 16, "sleep 1", ""))],
        "2s",
    );
    let doomed = cluster.start_worker("doomed", 4);
    let run_id = cluster.trigger("sleepy");
    // Wait until the doomed worker holds tasks, then kill it before it can finish them.
    cluster.wait_for(run_id, Duration::from_secs(30), |detail| {
        detail
            .tasks
            .iter()
            .filter(|task| task.worker_id.as_deref() == Some("doomed"))
            .count()
            == 4
    });
    cluster.workers[doomed].signal(libc::SIGKILL);
    cluster.start_worker("survivor", 4);
    let detail = cluster.wait_finished(run_id, Duration::from_secs(90));
    assert_eq!(detail.run.state, RunState::Success);
    let attempts = cluster.attempts(run_id);
    let lost: usize = attempts
        .iter()
        .map(|(_, states)| states.iter().filter(|state| *state == "lost").count())
        .sum();
    assert_eq!(
        lost, 4,
        "the four tasks the dead worker held were rescued: {attempts:?}"
    );
    for (task, states) in &attempts {
        assert_eq!(
            states.iter().filter(|state| *state == "success").count(),
            1,
            "{task}: {states:?}"
        );
    }
    for task in &detail.tasks {
        assert_eq!(
            (
                task.try_number - task.lost_attempts,
                task.max_tries - task.lost_attempts
            ),
            (1, 1),
            "a loss uses none of the task's tries: {task:?}"
        );
    }

    // Replay the dead worker's completion by hand, with its old fencing token: refused.
    let url = cluster.database_url();
    let (task_instance_id, fence) = Cluster::runtime().block_on(async {
        let store = kiln_engine::store::connect(&url).await.unwrap();
        for instance in store.task_instance_list(run_id).await.unwrap() {
            for attempt in store.attempt_list(instance.id).await.unwrap() {
                if attempt.state == "lost" {
                    return (instance.id, attempt.fence);
                }
            }
        }
        panic!("no lost attempt");
    });
    let client = ExecutionClient::new(&cluster.url(), TOKEN);
    let replay = Completion {
        task_instance_id,
        fence,
        result: AttemptResult::success(serde_json::json!({})),
    };
    let outcome = Cluster::runtime()
        .block_on(client.complete("doomed", &[replay], &[], None))
        .unwrap()
        .outcomes;
    assert!(
        matches!(
            outcome[0],
            Err(Rejection::Stale {
                state: TaskState::Success,
                ..
            })
        ),
        "{outcome:?}"
    );
}

#[test]
fn the_run_completes_across_a_server_restart() {
    let mut chain = String::from("id = \"chain\"\n");
    for index in 0..8 {
        chain.push_str(&format!(
            "[[tasks]]\nid = \"s{index}\"\nkind = \"command\"\nparams = {{ program = \"sleep\", args = [\"0.3\"] }}\n"
        ));
        if index > 0 {
            chain.push_str(&format!("depends_on = [\"s{}\"]\n", index - 1));
        }
    }
    let mut cluster = Cluster::start(&[("chain.toml", &chain)], "4s");
    cluster.start_worker("w1", 2);
    let run_id = cluster.trigger("chain");
    cluster.wait_for(run_id, Duration::from_secs(30), |detail| {
        detail
            .tasks
            .iter()
            .filter(|task| task.state == TaskState::Success)
            .count()
            >= 2
    });
    let mut server = cluster.server.take().unwrap();
    server.signal(libc::SIGKILL);
    server
        .wait_exit(Duration::from_secs(10))
        .expect("the server died");
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_server("4s");
    let detail = cluster.wait_finished(run_id, Duration::from_secs(60));
    assert_eq!(detail.run.state, RunState::Success, "{detail:?}");
    for (task, states) in cluster.attempts(run_id) {
        assert_eq!(
            states.iter().filter(|state| *state == "success").count(),
            1,
            "{task}: {states:?}"
        );
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks whether the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true);
    exists && !zombie
}

#[test]
fn cancelling_a_run_stops_its_processes_within_5_seconds() {
    let dag = fan_out(
        "forever",
        3,
        "echo $$ > $KILN_WORK_DIR/../$KILN_TASK_ID.pid; exec sleep 300",
    );
    let mut cluster = Cluster::start(&[("forever.toml", &dag)], "3s");
    cluster.start_worker("w1", 4);
    let run_id = cluster.trigger("forever");
    let pid_dir = cluster.path().join("work").join("w1");
    let started = Instant::now();
    let pids: Vec<i32> = loop {
        let pids: Vec<i32> = (0..3)
            .filter_map(|index| std::fs::read_to_string(pid_dir.join(format!("t{index}.pid"))).ok())
            .filter_map(|text| text.trim().parse().ok())
            .collect();
        if pids.len() == 3 {
            break pids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "tasks did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(pids.iter().all(|pid| alive(*pid)));
    let cancelled_at = Instant::now();
    let answer = Cluster::runtime()
        .block_on(cluster.client().cancel(run_id))
        .unwrap();
    assert!(answer.cancelled);
    while pids.iter().any(|pid| alive(*pid)) {
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(5),
            "task processes outlived the cancel by 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cluster.run(run_id).run.state, RunState::Cancelled);
}

#[test]
fn a_task_past_its_timeout_is_killed_and_retried_with_backoff() {
    let dag = "id = \"slow\"\n[[tasks]]\nid = \"stuck\"\nkind = \"command\"\ntimeout = \"1s\"\nretries = 1\nretry_delay = \"2s\"\nparams = { program = \"sleep\", args = [\"60\"] }\n";
    let mut cluster = Cluster::start(&[("slow.toml", dag)], "6s");
    cluster.start_worker("w1", 2);
    let started = Instant::now();
    let run_id = cluster.trigger("slow");
    let detail = cluster.wait_finished(run_id, Duration::from_secs(40));
    assert_eq!(detail.run.state, RunState::Failed);
    let task = &detail.tasks[0];
    assert_eq!((task.state, task.try_number), (TaskState::Failed, 2));
    assert!(
        task.error.as_deref().unwrap_or("").contains("timed out"),
        "{task:?}"
    );
    // Two 1 s attempts with a ~2 s wait between them, not two back-to-back attempts.
    assert!(
        started.elapsed() >= Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    let url = cluster.database_url();
    let attempts = Cluster::runtime().block_on(async move {
        let store = kiln_engine::store::connect(&url).await.unwrap();
        store.attempt_list(task.id).await.unwrap()
    });
    assert_eq!(attempts.len(), 2);
    let gap = attempts[1].started_at - attempts[0].ended_at.unwrap();
    assert!(
        gap >= 1_700_000,
        "retry waited {gap} µs, expected about 2 s"
    );
}

#[test]
fn a_wrong_worker_token_gets_401_and_nothing_else() {
    let cluster = Cluster::start(&[("wide.toml", &fan_out("wide", 3, "true"))], "6s");
    cluster.trigger("wide");
    let response =
        Cluster::runtime().block_on(async { reqwest_claim(&cluster.url(), "not-the-token").await });
    assert_eq!(response.0, 401);
    assert!(
        !response.1.contains("t0") && !response.1.contains("wide"),
        "{}",
        response.1
    );

    let mut command = std::process::Command::new(kiln());
    command
        .args(["--server", &cluster.url(), "worker", "--id", "intruder"])
        .env("KILN_WORKER_TOKEN", "not-the-token");
    let mut worker = Process::spawn(command);
    let status = worker
        .wait_exit(Duration::from_secs(20))
        .expect("the worker gives up");
    assert!(!status.success());
    assert!(
        worker.output().contains("refused the worker token"),
        "{}",
        worker.output()
    );
}

async fn reqwest_claim(url: &str, token: &str) -> (u16, String) {
    let client = ExecutionClient::new(url, token);
    match client
        .claim("intruder", &["default".to_owned()], 10, Duration::ZERO)
        .await
    {
        Err(kiln_engine::execution::ApiError::Unauthorized) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    // The raw answer, to check that it carries nothing about the queue.
    let response = reqwest::Client::new()
        .post(format!("{url}/api/v1/exec/claim"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "worker_id": "x", "queues": ["default"], "limit": 5, "wait_ms": 0 }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[test]
fn a_task_that_prints_100_mb_is_capped_and_the_worker_survives() {
    let dag = "id = \"loud\"\n[[tasks]]\nid = \"loud\"\nkind = \"command\"\nparams = { program = \"sh\", args = [\"-c\", \"yes 0123456789012345678901234567890123456789012345678 | head -c 100000000; echo done\"] }\n[[tasks]]\nid = \"after\"\nkind = \"command\"\ndepends_on = [\"loud\"]\nparams = { program = \"echo\", args = [\"still here\"] }\n";
    let mut cluster = Cluster::start(&[("loud.toml", dag)], "6s");
    cluster.start_worker("w1", 2);
    let run_id = cluster.trigger("loud");
    let detail = cluster.wait_finished(run_id, Duration::from_secs(120));
    assert_eq!(detail.run.state, RunState::Success, "{detail:?}");
    let runtime = Cluster::runtime();
    let client = cluster.client();
    let mut text = String::new();
    let mut after = -1;
    loop {
        let page = runtime
            .block_on(client.logs(run_id, "loud", None, after))
            .unwrap();
        if page.chunks.is_empty() {
            break;
        }
        for chunk in page.chunks {
            after = chunk.seq;
            text.push_str(&chunk.text);
        }
    }
    assert!(
        text.len() < 20 * 1024 * 1024,
        "the stored log is capped: {} bytes",
        text.len()
    );
    assert!(
        text.contains("the log reached its cap"),
        "the log says it was capped: {} bytes, ending {:?}",
        text.len(),
        &text[text.len().saturating_sub(300)..]
    );
    assert!(
        text.contains("bytes of output were dropped"),
        "and how much was dropped"
    );
    let after_log = runtime
        .block_on(client.logs(run_id, "after", None, -1))
        .unwrap();
    assert!(
        after_log
            .chunks
            .iter()
            .any(|chunk| chunk.text.contains("still here"))
    );
}

#[test]
fn standalone_runs_hello_from_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    std::fs::copy(
        root.join("dags/hello.toml"),
        dir.path().join("dags/hello.toml"),
    )
    .unwrap();
    // Artifacts under the default, relative data directory: a task's output paths must still
    // resolve from inside its own work directory.
    std::fs::write(
        dir.path().join("dags/files.toml"),
        "id = \"files\"\n[[tasks]]\nid = \"produce\"\nkind = \"command\"\n\
         params = { program = \"sh\", args = [\"-c\", \"echo 1 > \\\"$KILN_OUTPUT_TABLE\\\"\"] }\n\
         outputs = [\"table\"]\n[[tasks]]\nid = \"consume\"\nkind = \"command\"\n\
         params = { program = \"cat\", args = [] }\ninputs = { table = { from = \"produce.table\" } }\n",
    )
    .unwrap();
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut standalone = support::start_standalone(dir.path(), &listen, &[]);
    // The banner's hint works as typed, with this server's address. It is written before the
    // workers start, so it is there once one has registered.
    let hint = format!("kiln --server http://{listen} trigger hello --wait");
    assert!(
        standalone.output().contains(&hint),
        "no `{hint}` in:\n{}",
        standalone.output()
    );
    let trigger = std::process::Command::new(kiln())
        .current_dir(dir.path())
        .args([
            "--server",
            &format!("http://{listen}"),
            "trigger",
            "hello",
            "--wait",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&trigger.stdout);
    assert!(
        trigger.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&trigger.stderr),
        standalone.output()
    );
    assert!(
        stdout.contains("run ") && stdout.contains(": success"),
        "{stdout}"
    );
    assert!(
        dir.path().join(".kiln/kiln.db").exists(),
        "the data dir defaults to ./.kiln"
    );
    let files = std::process::Command::new(kiln())
        .current_dir(dir.path())
        .args([
            "--server",
            &format!("http://{listen}"),
            "trigger",
            "files",
            "--wait",
        ])
        .output()
        .unwrap();
    assert!(
        files.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&files.stdout),
        String::from_utf8_lossy(&files.stderr),
        standalone.output()
    );
    standalone.signal(libc::SIGINT);
    let status = standalone
        .wait_exit(Duration::from_secs(30))
        .expect("Ctrl-C stops standalone");
    assert!(status.success(), "{}", standalone.output());
    let server_arg = format!("http://{listen}");
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains("worker") && cmdline.contains(&server_arg))
        .collect();
    assert!(
        leftovers.is_empty(),
        "worker processes outlived standalone: {leftovers:?}"
    );
}

/// The children of `pid`, from `/proc` (their parent pid is the fourth field of `stat`).
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command name in parentheses may hold spaces: read after it.
                    let after = &stat[stat.rfind(')')? + 2..];
                    after.split(' ').nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Gone, or a zombie waiting for whoever adopted it to reap it.
fn exited(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rfind(')')
            .and_then(|end| stat.get(end + 2..end + 3))
            .is_some_and(|state| state == "Z" || state == "X")
    })
}

#[test]
fn workers_stop_when_standalone_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let mut standalone = support::start_standalone(dir.path(), &listen, &[]);
    let workers = children_of(standalone.pid());
    assert_eq!(workers.len(), 2, "{}", standalone.output());
    // SIGKILL leaves standalone no time to stop its children itself.
    standalone.signal(libc::SIGKILL);
    standalone.wait_exit(Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !workers.iter().all(|worker| exited(*worker)) {
        assert!(
            Instant::now() < deadline,
            "orphaned workers still running: {workers:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_100000_task_chain_dropped_into_a_running_server_loads_and_the_server_lives() {
    // A 4,000-task chain used to overflow the stack of the server's DAG refresh, and the
    // server died again on every start while the file was there.
    let mut cluster = Cluster::start(&[("wide.toml", &fan_out("wide", 2, "true"))], "6s");
    std::fs::write(
        cluster.path().join("dags/chain.toml"),
        command_chain("chain", 100_000),
    )
    .unwrap();
    let url = format!("{}/api/v1/dags/chain", cluster.url());
    let started = Instant::now();
    loop {
        let server = cluster.server.as_mut().unwrap();
        assert!(
            server.exited().is_none(),
            "the server died:\n{}",
            server.output()
        );
        if get_text(&url).0 == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the chain never loaded:\n{}",
            server.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Still live through the next refreshes, which read the file again.
    std::thread::sleep(Duration::from_secs(6));
    let server = cluster.server.as_mut().unwrap();
    assert!(server.exited().is_none(), "{}", server.output());
    assert_eq!(
        get_text(&format!("{}/healthz", cluster.url())),
        (200, "ok".to_owned())
    );
}

/// The pid of `standalone`'s worker process with this id.
fn standalone_worker_pid(standalone: i32, worker_id: &str) -> Option<i32> {
    children_of(standalone).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            cmdline
                .split(|byte| *byte == 0)
                .any(|arg| arg == worker_id.as_bytes())
        })
    })
}

/// Polls `standalone`'s run until `done` says so, or fails the test after `limit`.
fn wait_standalone_run(
    base: &str,
    run_id: i64,
    limit: Duration,
    standalone: &support::Process,
    done: impl Fn(&kiln_web::wire::RunDetail) -> bool,
) -> kiln_web::wire::RunDetail {
    let client = kiln_web::client::ApiClient::new(base, None);
    let runtime = Cluster::runtime();
    let started = Instant::now();
    loop {
        if let Ok(detail) = runtime.block_on(client.run(run_id))
            && done(&detail)
        {
            return detail;
        }
        assert!(
            started.elapsed() < limit,
            "run {run_id} did not get there in {limit:?}: {:?}\n{}",
            runtime.block_on(client.run(run_id)),
            standalone.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every task instance's attempts in a standalone's database: (task id, [(state, error)]).
fn standalone_attempts(dir: &std::path::Path, run_id: i64) -> Vec<(String, Vec<(String, String)>)> {
    let url = format!("sqlite://{}", dir.join(".kiln/kiln.db").display());
    Cluster::runtime().block_on(async move {
        let store = kiln_engine::store::connect(&url).await.unwrap();
        let mut result = Vec::new();
        for instance in store.task_instance_list(run_id).await.unwrap() {
            let attempts = store.attempt_list(instance.id).await.unwrap();
            result.push((
                instance.task_id.clone(),
                attempts
                    .into_iter()
                    .map(|attempt| (attempt.state, attempt.error.unwrap_or_default()))
                    .collect(),
            ));
        }
        result
    })
}

#[test]
fn a_worker_killed_under_standalone_costs_a_dag_without_retries_nothing() {
    // Issue 16's report: 40 half-second tasks, no `retries`, one worker killed with SIGKILL.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    std::fs::write(
        dir.path().join("dags/sleepy.toml"),
        fan_out_with("sleepy", 40, "sleep 0.5", ""),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let base = format!("http://{listen}");
    let standalone = support::start_standalone(dir.path(), &listen, &[]);
    let client = kiln_web::client::ApiClient::new(&base, None);
    let run_id = Cluster::runtime()
        .block_on(client.trigger("sleepy", serde_json::Map::new()))
        .unwrap()
        .id;
    let doomed = "standalone-0-0";
    wait_standalone_run(
        &base,
        run_id,
        Duration::from_secs(30),
        &standalone,
        |detail| {
            detail
                .tasks
                .iter()
                .filter(|task| task.worker_id.as_deref() == Some(doomed))
                .count()
                >= 2
        },
    );
    let pid = standalone_worker_pid(standalone.pid(), doomed).expect("the worker's process");
    // SAFETY: signals a worker process this test's standalone started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let detail = wait_standalone_run(
        &base,
        run_id,
        Duration::from_secs(45),
        &standalone,
        |detail| detail.run.state.is_final(),
    );
    assert_eq!(
        detail.run.state,
        RunState::Success,
        "{detail:?}\n{}",
        standalone.output()
    );
    let attempts = standalone_attempts(dir.path(), run_id);
    let lost: Vec<&(String, String)> = attempts
        .iter()
        .flat_map(|(_, attempts)| attempts)
        .filter(|(state, _)| state == "lost")
        .collect();
    assert!(
        !lost.is_empty(),
        "the killed worker held tasks: {attempts:?}"
    );
    // Rescued when standalone saw the worker die (or, for a claim it made as it died, when that
    // lease expired).
    assert!(
        lost.iter().all(|(_, error)| {
            error == "worker `standalone-0-0` died while running the attempt"
                || error == "worker `standalone-0-0` stopped heartbeating: its lease expired"
        }),
        "{lost:?}"
    );
    for (task, states) in &attempts {
        assert_eq!(
            states
                .iter()
                .filter(|(state, _)| state == "success")
                .count(),
            1,
            "{task}: {states:?}"
        );
    }
    let lost_per_task: i64 = detail.tasks.iter().map(|task| task.lost_attempts).sum();
    assert_eq!(usize::try_from(lost_per_task).unwrap(), lost.len());
    for task in &detail.tasks {
        assert_eq!(
            (
                task.try_number - task.lost_attempts,
                task.max_tries - task.lost_attempts
            ),
            (1, 1),
            "{task:?}"
        );
    }
    // `kiln runs show` counts the losses beside the task's own tries.
    let show = std::process::Command::new(kiln())
        .args(["--server", &base, "runs", "show", &run_id.to_string()])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{shown}");
    assert!(
        shown.contains(" 1/1 ") && shown.contains("[1 lost]"),
        "{shown}"
    );
}

#[test]
fn a_task_that_kills_its_worker_fails_after_its_lost_attempts_and_the_run_ends() {
    // The command plugin starts `sh` straight from the worker process, so `$PPID` is the
    // worker: every attempt kills the worker running it.
    let dag = "id = \"poison\"\n[[tasks]]\nid = \"poison\"\nkind = \"command\"\n\
               params = { program = \"sh\", args = [\"-c\", \"kill -9 $PPID; sleep 1\"] }\n\
               [[tasks]]\nid = \"after\"\nkind = \"command\"\ndepends_on = [\"poison\"]\n\
               params = { program = \"true\" }\n\
               [[tasks]]\nid = \"cleanup\"\nkind = \"command\"\ndepends_on = [\"poison\"]\n\
               trigger_rule = \"all_done\"\nparams = { program = \"true\" }\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dags")).unwrap();
    std::fs::write(dir.path().join("dags/poison.toml"), dag).unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let base = format!("http://{listen}");
    let mut standalone = support::start_standalone(dir.path(), &listen, &[]);
    let client = kiln_web::client::ApiClient::new(&base, None);
    let run_id = Cluster::runtime()
        .block_on(client.trigger("poison", serde_json::Map::new()))
        .unwrap()
        .id;
    let detail = wait_standalone_run(
        &base,
        run_id,
        Duration::from_secs(50),
        &standalone,
        |detail| detail.run.state.is_final(),
    );
    assert_eq!(detail.run.state, RunState::Failed, "{detail:?}");
    let task = |id: &str| detail.tasks.iter().find(|task| task.task_id == id).unwrap();
    let poison = task("poison");
    assert_eq!(
        (poison.state, poison.lost_attempts, poison.try_number),
        (TaskState::Failed, 4, 4),
        "{poison:?}"
    );
    let error = poison.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with(
            "lost 4 attempts to the infrastructure (`max_lost_attempts` is 3): attempt 1: worker `standalone-"
        ),
        "{error}"
    );
    for attempt in 1..=4 {
        assert!(
            error.contains(&format!("attempt {attempt}: worker `standalone-")),
            "{error}"
        );
    }
    assert_eq!(error.matches("worker `standalone-").count(), 4, "{error}");
    assert!(error.contains("died while running the attempt"), "{error}");
    assert_eq!(task("after").state, TaskState::UpstreamFailed);
    // The workers it killed were replaced, and run what comes after it.
    assert_eq!(task("cleanup").state, TaskState::Success, "{detail:?}");
    let attempts = standalone_attempts(dir.path(), run_id);
    let (_, poisoned) = attempts.iter().find(|(id, _)| id == "poison").unwrap();
    assert_eq!(poisoned.len(), 4, "{poisoned:?}");
    assert!(
        poisoned.iter().all(|(state, _)| state == "lost"),
        "{poisoned:?}"
    );
    assert!(standalone.exited().is_none(), "{}", standalone.output());
}
