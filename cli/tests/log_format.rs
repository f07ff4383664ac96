//! kiln's own log lines on stderr: JSON objects under `KILN_LOG_FORMAT=json`, plain text without
//! colour codes when stderr is not a terminal, and a clear refusal of an unknown format.

mod support;

use std::process::Command;

use support::{Cluster, kiln};

const HELLO: &str = "id = \"hello\"\n[[tasks]]\nid = \"only\"\nkind = \"noop\"\n";

/// The server's output so far; `start_server` returns once it says it is listening.
fn server_output(cluster: &Cluster) -> String {
    cluster.server.as_ref().unwrap().output()
}

#[test]
fn json_logs_are_one_object_a_line_with_the_event_fields_at_the_top() {
    let mut cluster = Cluster::prepare(&[("hello.toml", HELLO)]);
    cluster
        .env
        .push(("KILN_LOG_FORMAT".to_owned(), "json".to_owned()));
    cluster.start_server("20s");
    let output = server_output(&cluster);
    let events: Vec<serde_json::Value> = output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not a JSON object ({error}): {line}"))
        })
        .collect();
    let listening = events
        .iter()
        .find(|event| event["message"] == "kiln server listening.")
        .unwrap_or_else(|| panic!("no listening event in {events:?}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["address"], format!("127.0.0.1:{}", cluster.port));
    assert!(
        listening["target"]
            .as_str()
            .is_some_and(|target| target.starts_with("kiln"))
    );
    assert!(
        listening["timestamp"]
            .as_str()
            .is_some_and(|at| chrono::DateTime::parse_from_rfc3339(at).is_ok()),
        "{listening}"
    );
}

#[test]
fn text_logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let mut cluster = Cluster::prepare(&[("hello.toml", HELLO)]);
    cluster
        .env
        .push(("KILN_LOG_FORMAT".to_owned(), "text".to_owned()));
    cluster.start_server("20s");
    let output = server_output(&cluster);
    assert!(output.contains(" INFO "), "{output}");
    assert!(
        !output.contains('\u{1b}'),
        "colour codes in a pipe:\n{output:?}"
    );
}

#[test]
fn an_unknown_log_format_is_refused_by_name() {
    let output = Command::new(kiln())
        .args(["dags", "list"])
        .env("KILN_LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("yaml") && stderr.contains("text") && stderr.contains("json"),
        "{stderr}"
    );
}
