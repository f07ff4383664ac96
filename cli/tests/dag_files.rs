//! DAG files end to end: every example in `dags/` loads, and every class of broken file gets a
//! message that names the file, the line and the offending item, without a panic.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use expect_test::{Expect, expect};
use kiln_engine::dag::{MAX_DAG_FILE_BYTES, MAX_DAG_TASKS, load_dir, parse_dag};
use support::command_chain;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Loads one fixture from `tests/broken_dags/` and renders its problems.
fn check(file: &str, expected: Expect) {
    let relative = Path::new("broken_dags").join(file);
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(&relative),
    )
    .unwrap();
    let error = parse_dag(&relative, &bytes, &kiln_tasks::builtin_registry())
        .expect_err("the fixture must not load");
    expected.assert_eq(&error.to_string());
}

#[test]
fn every_example_dag_loads() {
    let set = load_dir(&repo_root().join("dags"), &kiln_tasks::builtin_registry()).unwrap();
    let errors: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let ids: Vec<&str> = set
        .dags
        .iter()
        .map(|loaded| loaded.dag.id.as_str())
        .collect();
    assert!(
        ids.contains(&"hello") && ids.contains(&"wine_quality"),
        "{ids:?}"
    );
}

#[test]
fn cycle() {
    check(
        "cycle.toml",
        expect![
            "broken_dags/cycle.toml:8:1: task `train`: dependency cycle: train -> evaluate -> train"
        ],
    );
}

#[test]
fn missing_upstream() {
    check(
        "missing_upstream.toml",
        expect![
            "broken_dags/missing_upstream.toml:8:1: task `shout`: depends on unknown task `gret`"
        ],
    );
}

#[test]
fn duplicate_task_id() {
    check(
        "duplicate_task_id.toml",
        expect![
            "broken_dags/duplicate_task_id.toml:6:1: task `greet`: duplicate task id (first defined at line 2)"
        ],
    );
}

#[test]
fn bad_cron() {
    check(
        "bad_cron.toml",
        expect![
            "broken_dags/bad_cron.toml:2:12: `schedule`: invalid schedule `61 * * * *`: Component error: Number out of bounds."
        ],
    );
}

#[test]
fn bad_timezone() {
    check(
        "bad_timezone.toml",
        expect![
            "broken_dags/bad_timezone.toml:3:1: `timezone`: unknown timezone `Europe/Atlantis`; use an IANA name such as `UTC`, `Europe/Berlin` or `America/New_York`"
        ],
    );
}

#[test]
fn unknown_plugin() {
    check(
        "unknown_plugin.toml",
        expect![
            "broken_dags/unknown_plugin.toml:4:1: task `greet`: unknown plugin kind `bash_operator`; known kinds: command, deploy, evaluate, noop, process, train"
        ],
    );
}

#[test]
fn wrong_param_type() {
    check(
        "wrong_param_type.toml",
        expect![
            "broken_dags/wrong_param_type.toml:5:1: task `greet`: params for `command`: `args[1]`: invalid type: integer `3`, expected a string"
        ],
    );
}

#[test]
fn scheduled_param_without_default() {
    check(
        "scheduled_param_without_default.toml",
        expect![
            "broken_dags/scheduled_param_without_default.toml:4:9: param `region`: needs a `default`: the DAG has a `schedule`, and scheduled runs are given no params"
        ],
    );
}

#[test]
fn missing_required_param() {
    check(
        "missing_required_param.toml",
        expect![
            "broken_dags/missing_required_param.toml:5:1: task `greet`: params for `command`: missing field `program`"
        ],
    );
}

#[test]
fn unknown_key() {
    check(
        "unknown_key.toml",
        expect![[r#"
        broken_dags/unknown_key.toml:2:1: `schedul`: unknown key; expected one of id, description, schedule, timezone, start_date, end_date, catchup, max_catchup_runs, max_active_runs, tags, queue, params, defaults, tasks
        broken_dags/unknown_key.toml:6:1: task `greet`: unknown field `dependz_on`, expected one of `id`, `kind`, `description`, `params`, `depends_on`, `trigger_rule`, `retries`, `retry_delay`, `retry_backoff`, `max_retry_delay`, `max_lost_attempts`, `timeout`, `inputs`, `outputs`, `queue`, `priority`, `cache`"#]],
    );
}

#[test]
fn empty_file() {
    check(
        "empty.toml",
        expect![
            "broken_dags/empty.toml: empty file: a DAG needs at least an `id` and one `[[tasks]]` entry"
        ],
    );
}

#[test]
fn ids_with_spaces_or_traversal() {
    check(
        "id_with_space.toml",
        expect![[r#"
        broken_dags/id_with_space.toml:1:1: `id`: DAG id `my dag` is not valid: use letters, digits, `_` and `-` (no spaces, dots or slashes), not starting with `-`
        broken_dags/id_with_space.toml:3:1: task `say hello`: task id `say hello` is not valid: use letters, digits, `_` and `-` (no spaces, dots or slashes), not starting with `-`"#]],
    );
    check(
        "id_with_traversal.toml",
        expect![[r#"
        broken_dags/id_with_traversal.toml:1:1: `id`: DAG id `../etc/passwd` is not valid: use letters, digits, `_` and `-` (no spaces, dots or slashes), not starting with `-`
        broken_dags/id_with_traversal.toml:3:1: task `../up`: task id `../up` is not valid: use letters, digits, `_` and `-` (no spaces, dots or slashes), not starting with `-`"#]],
    );
}

#[test]
fn syntax_error() {
    check(
        "syntax_error.toml",
        expect![[
            r#"broken_dags/syntax_error.toml:3:12: invalid TOML: invalid basic string, expected `"`"#
        ]],
    );
}

#[test]
fn bad_input_reference() {
    check(
        "bad_input_reference.toml",
        expect![[r#"
        broken_dags/bad_input_reference.toml:9:1: task `clean`: input `raw`: task `ingest` declares no output `row` (its outputs: raw)
        broken_dags/bad_input_reference.toml:9:1: task `clean`: input `ref`: `from` names unknown task `nowhere`"#]],
    );
}

#[test]
fn all_problems_of_a_file_are_reported_together() {
    check(
        "many_errors.toml",
        expect![[r#"
        broken_dags/many_errors.toml:3:12: `schedule`: schedule `every day` has 2 fields; a crontab needs 5 (minute hour day-of-month month day-of-week)
        broken_dags/many_errors.toml:4:1: `timezone`: unknown timezone `Mars/Olympus`; use an IANA name such as `UTC`, `Europe/Berlin` or `America/New_York`
        broken_dags/many_errors.toml:5:1: `max_active_runs`: must be at least 1
        broken_dags/many_errors.toml:7:2: `defaults`: `retry_delay`: duration `10` has no unit; write it like `10s` or `10m`
        broken_dags/many_errors.toml:13:1: task `a`: params for `command`: `program`: invalid type: integer `7`, expected a string
        broken_dags/many_errors.toml:19:16: task `b`: unknown variant `sometimes`, expected one of `all_success`, `all_failed`, `all_done`, `one_success`, `one_failed`, `none_failed`
        broken_dags/many_errors.toml:24:1: task `c`: `timeout`: invalid duration `soon` (expected number at 0); write it like `30s`, `5m` or `1h`"#]],
    );
}

#[test]
fn max_lost_attempts_defaults_to_3_and_follows_defaults_then_the_task() {
    let text = "id = \"lossy\"\n[[tasks]]\nid = \"plain\"\nkind = \"noop\"\n";
    let loaded = parse_dag(
        Path::new("lossy.toml"),
        text.as_bytes(),
        &kiln_tasks::builtin_registry(),
    )
    .unwrap();
    assert_eq!(loaded.dag.tasks[0].max_lost_attempts, 3);
    let text = "id = \"lossy\"\n[defaults]\nmax_lost_attempts = 1\n\
                [[tasks]]\nid = \"inherits\"\nkind = \"noop\"\n\
                [[tasks]]\nid = \"own\"\nkind = \"noop\"\nmax_lost_attempts = 0\n";
    let loaded = parse_dag(
        Path::new("lossy.toml"),
        text.as_bytes(),
        &kiln_tasks::builtin_registry(),
    )
    .unwrap();
    let budgets: Vec<(&str, u32)> = loaded
        .dag
        .tasks
        .iter()
        .map(|task| (task.id.as_str(), task.max_lost_attempts))
        .collect();
    assert_eq!(budgets, [("inherits", 1), ("own", 0)]);
    // A version stored before the key existed reads as the default.
    let mut stored = serde_json::to_value(&loaded.dag.tasks[0]).unwrap();
    stored.as_object_mut().unwrap().remove("max_lost_attempts");
    let task: kiln_engine::dag::Task = serde_json::from_value(stored).unwrap();
    assert_eq!(task.max_lost_attempts, 3);
}

#[test]
fn max_lost_attempts_must_be_a_count() {
    let text = "id = \"lossy\"\n[defaults]\nmax_lost_attempts = \"many\"\n\
                [[tasks]]\nid = \"t\"\nkind = \"noop\"\nmax_lost_attempts = -1\n";
    let error = parse_dag(
        Path::new("lossy.toml"),
        text.as_bytes(),
        &kiln_tasks::builtin_registry(),
    )
    .unwrap_err();
    expect![[r#"
        lossy.toml:3:21: `defaults`: invalid type: string "many", expected u32
        lossy.toml:7:21: task `t`: invalid value: integer `-1`, expected u32"#]]
    .assert_eq(&error.to_string());
}

#[test]
fn binary_file() {
    let bytes: Vec<u8> = (0u8..=255).cycle().take(4096).collect();
    let error = parse_dag(
        Path::new("blob.toml"),
        &bytes,
        &kiln_tasks::builtin_registry(),
    )
    .unwrap_err();
    expect!["blob.toml: not a text file: it contains a NUL byte at offset 0"]
        .assert_eq(&error.to_string());
    let latin1 = b"id = \"caf\xe9\"\n";
    let error = parse_dag(
        Path::new("latin1.toml"),
        latin1,
        &kiln_tasks::builtin_registry(),
    )
    .unwrap_err();
    expect!["latin1.toml: not UTF-8 text: invalid byte sequence at offset 9"]
        .assert_eq(&error.to_string());
}

#[test]
fn a_file_over_the_size_limit() {
    let mut text = String::from("id = \"huge\"\n");
    while text.len() <= MAX_DAG_FILE_BYTES {
        text.push_str("[[tasks]]\nid = \"t\"\nkind = \"noop\"\n");
    }
    let error = parse_dag(
        Path::new("huge.toml"),
        text.as_bytes(),
        &kiln_tasks::builtin_registry(),
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("huge.toml: file is {} bytes", text.len())),
        "{message}"
    );
    assert!(
        message.contains(&format!("more than the {MAX_DAG_FILE_BYTES} bytes")),
        "{message}"
    );
}

#[test]
fn deeply_nested_toml() {
    for (open, close) in [("[", "]"), ("{a=", "}")] {
        let depth = 100_000;
        let text = format!(
            "id = \"deep\"\nx = {}1{}\n",
            open.repeat(depth),
            close.repeat(depth)
        );
        let error = parse_dag(
            Path::new("deep.toml"),
            text.as_bytes(),
            &kiln_tasks::builtin_registry(),
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("deep.toml:2:"), "{message}");
        assert!(
            message.ends_with(": arrays or tables nest more than 64 levels deep"),
            "{message}"
        );
    }
}

#[test]
fn a_large_dag_loads() {
    // 10,000 tasks: 100 layers of 100, each depending on 3 of the layer before (workload W5).
    let mut text = String::from("id = \"big\"\n");
    for layer in 0..100 {
        for index in 0..100 {
            text.push_str(&format!(
                "[[tasks]]\nid = \"t{layer}_{index}\"\nkind = \"noop\"\n"
            ));
            if layer > 0 {
                let ups: Vec<String> = (0..3)
                    .map(|k| format!("\"t{}_{}\"", layer - 1, (index + k * 33) % 100))
                    .collect();
                text.push_str(&format!("depends_on = [{}]\n", ups.join(", ")));
            }
        }
    }
    let loaded = parse_dag(
        Path::new("big.toml"),
        text.as_bytes(),
        &kiln_tasks::builtin_registry(),
    )
    .unwrap();
    assert_eq!(loaded.dag.tasks.len(), 10_000);
    assert_eq!(loaded.dag.tasks.last().unwrap().id, "t99_99");
}

#[test]
fn the_largest_chain_validates_and_one_task_more_is_refused_clearly() {
    // Recursive cycle detection overflowed the stack at about 15,000 chained tasks.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("chain.toml"),
        command_chain("chain", MAX_DAG_TASKS),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["dags", "validate"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("ok    chain  {MAX_DAG_TASKS} task(s)")),
        "{stdout}"
    );

    let error = parse_dag(
        Path::new("longer.toml"),
        command_chain("longer", MAX_DAG_TASKS + 1).as_bytes(),
        &kiln_tasks::builtin_registry(),
    )
    .unwrap_err();
    expect!["longer.toml:2:3: `tasks`: 100001 tasks, more than the 100000 a DAG may have; split it into several DAGs"]
        .assert_eq(&error.to_string());
}

#[test]
fn a_file_wrong_on_every_task_lists_the_first_problems_and_counts_the_rest() {
    let mut text = String::from("id = \"wrong\"\n");
    for index in 0..50_000 {
        text.push_str(&format!(
            "[[tasks]]\nid = \"t{index}\"\nkind = \"noop\"\nbogus = 1\n"
        ));
    }
    let error = parse_dag(
        Path::new("wrong.toml"),
        text.as_bytes(),
        &kiln_tasks::builtin_registry(),
    )
    .unwrap_err();
    assert_eq!(error.problems.len(), 201);
    assert_eq!(error.problems[0].line, Some(5), "{}", error.problems[0]);
    assert!(
        error.problems[0].to_string().starts_with("task `t0`: "),
        "{}",
        error.problems[0]
    );
    let last = error.problems.last().unwrap().to_string();
    assert!(
        last.contains("more problems (only the first 200 are listed)"),
        "{last}"
    );
}

#[test]
fn files_that_are_not_plain_files_and_deep_or_looping_folders_cannot_hang_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    // Reading a FIFO blocks until a writer comes; reading /dev/zero never ends.
    let fifo = Command::new("mkfifo")
        .arg(dir.path().join("pipe.toml"))
        .status()
        .unwrap();
    assert!(fifo.success());
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.toml")).unwrap();
    // A link back up the tree: followed, the walk would never end.
    std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
    let mut deep = dir.path().to_owned();
    for _ in 0..300 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(
        deep.join("deep.toml"),
        "id = \"deep\"\n[[tasks]]\nid = \"only\"\nkind = \"noop\"\n",
    )
    .unwrap();

    let set = load_dir(dir.path(), &kiln_tasks::builtin_registry()).unwrap();
    let loaded: Vec<&str> = set
        .dags
        .iter()
        .map(|loaded| loaded.dag.id.as_str())
        .collect();
    assert_eq!(loaded, ["deep"]);
    let rendered: Vec<String> = set
        .errors
        .iter()
        .map(|error| {
            error
                .to_string()
                .replace(&dir.path().display().to_string(), "DIR")
        })
        .collect();
    expect![[r#"
        DIR/pipe.toml: not a regular file (a DAG file must be plain text)
        DIR/zero.toml: not a regular file (a DAG file must be plain text)"#]]
    .assert_eq(&rendered.join("\n"));
}

#[test]
fn one_broken_file_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_root().join("dags/hello.toml"),
        dir.path().join("hello.toml"),
    )
    .unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken_dags/cycle.toml"),
        dir.path().join("cycle.toml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("copy.toml"),
        std::fs::read(repo_root().join("dags/hello.toml")).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a DAG").unwrap();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    std::fs::write(
        dir.path().join("nested/other.toml"),
        "id = \"other\"\n[[tasks]]\nid = \"only\"\nkind = \"noop\"\n",
    )
    .unwrap();
    let set = load_dir(dir.path(), &kiln_tasks::builtin_registry()).unwrap();
    let loaded: Vec<&str> = set
        .dags
        .iter()
        .map(|loaded| loaded.dag.id.as_str())
        .collect();
    assert_eq!(
        loaded,
        ["other"],
        "both copies of `hello` are refused, the nested file loads"
    );
    let rendered: Vec<String> = set
        .errors
        .iter()
        .map(|error| {
            error
                .to_string()
                .replace(&dir.path().display().to_string(), "DIR")
        })
        .collect();
    expect![[r#"
        DIR/copy.toml: `id`: DAG id `hello` is also declared in DIR/hello.toml
        DIR/cycle.toml:8:1: task `train`: dependency cycle: train -> evaluate -> train
        DIR/hello.toml: `id`: DAG id `hello` is also declared in DIR/copy.toml"#]]
    .assert_eq(&rendered.join("\n"));
}

#[test]
fn cli_validate_exit_codes_and_summary() {
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let good = Command::new(kiln)
        .args(["dags", "validate"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let stdout = String::from_utf8(good.stdout).unwrap();
    assert!(good.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok    hello  5 task(s), schedule */30 * * * * (Europe/Berlin)"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("2 DAG(s) valid, 0 file(s) with errors (0 problem(s))\n"),
        "{stdout}"
    );

    let broken = Command::new(kiln)
        .args(["dags", "validate", "tests/broken_dags"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(broken.stdout).unwrap();
    assert_eq!(broken.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("tests/broken_dags/cycle.toml:8:1: task `train`: dependency cycle: train -> evaluate -> train"), "{stdout}");
    assert!(
        stdout.contains("0 DAG(s) valid, 16 file(s) with errors"),
        "{stdout}"
    );
}

#[test]
fn cli_show_next_times_and_dot() {
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let output = Command::new(kiln)
        .args(["dags", "show", "hello", "--from", "2026-10-25T00:10:00Z"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    // Across the Berlin fall-back: 02:30 CEST, then 02:00 and 02:30 CET, every 30 real minutes.
    expect![[r#"
        hello: Say hello, fan out, join
        file: dags/hello.toml
        schedule: */30 * * * * in Europe/Berlin (At every 30 minutes.)
        next runs:
          2026-10-25T02:30:00+02:00
          2026-10-25T02:00:00+01:00
          2026-10-25T02:30:00+01:00
          2026-10-25T03:00:00+01:00
          2026-10-25T03:30:00+01:00
        tags: example
        param name: string (default "world") Who to greet
        tasks (upstream before downstream):
          greet                command    after: -
          shout                command    after: greet
          whisper              command    after: greet
          count                command    after: greet
          goodbye              command    after: count, shout, whisper
    "#]]
    .assert_eq(&stdout);
    let dot = Command::new(kiln)
        .args(["dags", "show", "hello", "--dot"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let dot = String::from_utf8(dot.stdout).unwrap();
    assert!(
        dot.starts_with("digraph \"hello\" {") && dot.contains("\"greet\" -> \"shout\";"),
        "{dot}"
    );

    let missing = Command::new(kiln)
        .args(["dags", "show", "nope"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8(missing.stderr).unwrap();
    assert!(
        stderr.contains("no DAG `nope` in dags (loaded: hello, wine_quality)"),
        "{stderr}"
    );
}
