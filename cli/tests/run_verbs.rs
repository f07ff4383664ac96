//! `kiln runs cancel`, `kiln tasks mark` and `kiln tasks clear` against a real server and
//! worker: what the console and the API could do, the CLI can too.

mod support;

use std::process::Command;
use std::time::Duration;

use kiln_engine::state::{RunState, TaskState};
use support::{Cluster, kiln};

/// Runs `kiln --server URL ARGS…`; answers (success, stdout, stderr).
fn kiln_at(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(kiln())
        .args(["--server", &cluster.url()])
        .args(args)
        .env_remove("KILN_API_TOKEN")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const FLAKY: &str = "id = \"flaky\"\n[[tasks]]\nid = \"fail\"\nkind = \"command\"\nretries = 0\n\
                     params = { program = \"sh\", args = [\"-c\", \"exit 1\"] }\n\
                     [[tasks]]\nid = \"after\"\nkind = \"noop\"\ndepends_on = [\"fail\"]\n";

const SLOW: &str = "id = \"slow\"\n[[tasks]]\nid = \"sleep\"\nkind = \"command\"\n\
                    params = { program = \"sleep\", args = [\"60\"] }\n";

#[test]
fn a_run_is_cancelled_from_the_cli_and_a_second_cancel_says_it_had_ended() {
    let mut cluster = Cluster::start(&[("slow.toml", SLOW)], "20s");
    cluster.start_worker("w1", 1);
    let run_id = cluster.trigger("slow");
    cluster.wait_for(run_id, Duration::from_secs(30), |detail| {
        detail.tasks[0].state == TaskState::Running
    });
    let run = run_id.to_string();
    let (ok, stdout, stderr) = kiln_at(&cluster, &["runs", "cancel", &run]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(stdout.trim(), format!("run {run_id} cancelled"));
    assert_eq!(cluster.run(run_id).run.state, RunState::Cancelled);
    let (ok, stdout, _) = kiln_at(&cluster, &["runs", "cancel", &run]);
    assert!(ok);
    assert_eq!(
        stdout.trim(),
        format!("run {run_id} had already ended; nothing to cancel")
    );
    let (ok, _, stderr) = kiln_at(&cluster, &["runs", "cancel", "9999"]);
    assert!(!ok);
    assert!(stderr.contains("run 9999 not found"), "{stderr}");

    // `runs list` reads the database; its dates are whole seconds and its columns line up.
    let listed = Command::new(kiln())
        .arg("--data-dir")
        .arg(cluster.path().join("data"))
        .args(["runs", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let mut lines = listed.lines();
    let header = lines.next().unwrap();
    let ended = header.find("ENDED").unwrap();
    let row = lines.next().unwrap_or_else(|| panic!("no run in {listed}"));
    let end = &row[ended..];
    assert_eq!(end.len(), "2026-12-04T21:00:00Z".len(), "{listed}");
    assert!(end.ends_with('Z') && end.starts_with("20"), "{listed}");
    assert!(row.contains("cancelled"), "{listed}");
}

#[test]
fn a_failed_task_is_marked_then_cleared_with_its_downstream_from_the_cli() {
    let mut cluster = Cluster::start(&[("flaky.toml", FLAKY)], "20s");
    cluster.start_worker("w1", 2);
    let run_id = cluster.trigger("flaky");
    let detail = cluster.wait_finished(run_id, Duration::from_secs(30));
    assert_eq!(detail.run.state, RunState::Failed);
    let run = run_id.to_string();

    // Marked a success by hand: its downstream runs, and the run succeeds.
    let (ok, stdout, stderr) = kiln_at(
        &cluster,
        &["tasks", "mark", &run, "fail", "--state", "success"],
    );
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("`fail` in run {run_id} marked success")
    );
    let detail = cluster.wait_for(run_id, Duration::from_secs(30), |detail| {
        detail.run.state == RunState::Success
    });
    assert!(
        detail
            .tasks
            .iter()
            .all(|task| task.state == TaskState::Success)
    );

    // Cleared with its downstream: both run again, and the command fails again.
    let (ok, stdout, stderr) = kiln_at(&cluster, &["tasks", "clear", &run, "fail", "--downstream"]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("cleared in run {run_id}, to run again: fail, after")
    );
    let detail = cluster.wait_for(run_id, Duration::from_secs(30), |detail| {
        detail.run.state == RunState::Failed
    });
    let states: Vec<(&str, TaskState)> = detail
        .tasks
        .iter()
        .map(|task| (task.task_id.as_str(), task.state))
        .collect();
    assert_eq!(
        states,
        [
            ("fail", TaskState::Failed),
            ("after", TaskState::UpstreamFailed)
        ]
    );

    // A state that cannot be marked is refused by the CLI with the choices.
    let (ok, _, stderr) = kiln_at(
        &cluster,
        &["tasks", "mark", &run, "fail", "--state", "running"],
    );
    assert!(!ok);
    assert!(
        stderr.contains("success") && stderr.contains("failed"),
        "{stderr}"
    );
}

#[test]
fn run_params_and_built_ins_reach_a_command_through_references() {
    let dag = "id = \"greeting\"\n[params.name]\ntype = \"string\"\ndefault = \"world\"\n\
               [params.times]\ntype = \"integer\"\ndefault = 2\n\
               [[tasks]]\nid = \"greet\"\nkind = \"command\"\n\
               params = { program = \"sh\", args = [\"-c\", \"echo hello ${params.name} from run ${run.id}, try ${task.try}; echo $${HOME:+home is set}; echo env says $KILN_PARAM_NAME and $KILN_PARAM_TIMES\"] }\n";
    let mut cluster = Cluster::start(&[("greeting.toml", dag)], "20s");
    cluster.start_worker("w1", 1);
    let (ok, stdout, stderr) = kiln_at(
        &cluster,
        &["trigger", "greeting", "--param", "name=kiln", "--wait"],
    );
    assert!(ok, "{stdout}{stderr}");
    let run_id: i64 = stdout
        .split_whitespace()
        .nth(2)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no run id in {stdout}"));
    let (ok, log, stderr) = kiln_at(&cluster, &["logs", &run_id.to_string(), "greet"]);
    assert!(ok, "{stderr}");
    assert!(
        log.contains(&format!("hello kiln from run {run_id}, try 1")),
        "{log}"
    );
    assert!(
        log.contains("home is set"),
        "the escaped `$${{` reached the shell: {log}"
    );
    assert!(log.contains("env says kiln and 2"), "KILN_PARAM_*: {log}");
}

#[test]
fn a_reference_to_an_undeclared_param_is_a_load_error_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "id = \"bad\"\n[params.name]\ntype = \"string\"\ndefault = \"x\"\n\
         [[tasks]]\nid = \"greet\"\nkind = \"command\"\n\
         params = { program = \"echo\", args = [\"${params.nmae}\"] }\n",
    )
    .unwrap();
    let output = Command::new(kiln())
        .args(["dags", "validate"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("bad.toml:8:"), "{text}");
    assert!(
        text.contains("`${params.nmae}` names no param of this DAG (its params: name)"),
        "{text}"
    );
}
