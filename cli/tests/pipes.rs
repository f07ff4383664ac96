//! What the CLI writes where nobody watches a terminal, and what it says when something fails:
//! a listing piped into a reader that goes away ends quietly (no panic), a failed command shows
//! why under its row, `trigger --wait` into a file writes progress lines, not a redrawn bar, and
//! an unreachable server is named once, with how to point at another.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use support::{Cluster, kiln};

#[test]
fn a_listing_whose_reader_goes_away_ends_without_a_panic() {
    // Far more than a pipe's 64 KiB buffer, so the listing is still writing when the reader
    // leaves (what `kiln dags list | head -1` does).
    let dir = tempfile::tempdir().unwrap();
    for index in 0..1500 {
        let id = format!("{index:04}_{}", "x".repeat(90));
        std::fs::write(
            dir.path().join(format!("{index:04}.toml")),
            format!("id = \"{id}\"\n[[tasks]]\nid = \"only\"\nkind = \"noop\"\n"),
        )
        .unwrap();
    }
    let mut child = Command::new(kiln())
        .arg("dags")
        .arg("list")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    // The reader is gone: the rest of the listing meets a closed pipe.
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        output.status
    );
}

#[test]
fn trigger_wait_into_a_file_writes_lines_not_a_redrawn_bar() {
    let chain = "id = \"chain\"\n[[tasks]]\nid = \"a\"\nkind = \"noop\"\n[[tasks]]\nid = \"b\"\nkind = \"noop\"\ndepends_on = [\"a\"]\n";
    let mut cluster = Cluster::start(&[("chain.toml", chain)], "20s");
    cluster.start_worker("w1", 2);
    let output = Command::new(kiln())
        .args(["--server", &cluster.url(), "trigger", "chain", "--wait"])
        .env_remove("KILN_API_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stderr.contains('\r'),
        "carriage returns in a file: {stderr:?}"
    );
    assert!(
        stderr.lines().any(|line| line == "2/2 tasks, run success"),
        "{stderr}"
    );
    assert!(stdout.contains("run 1 of `chain`: success"), "{stdout}");
}

#[test]
fn an_unreachable_server_is_named_once_with_the_way_to_point_at_another() {
    let url = format!("http://127.0.0.1:{}", support::free_port());
    let output = Command::new(kiln())
        .args(["--server", &url, "trigger", "hello"])
        .env_remove("KILN_API_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches(&url).count(), 1, "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(
        stderr.contains("--server") && stderr.contains("KILN_SERVER"),
        "{stderr}"
    );
}

#[test]
fn a_failed_command_shows_why_under_its_row() {
    let failing = "id = \"copy\"\n[[tasks]]\nid = \"copy\"\nkind = \"command\"\nretries = 0\n\
                   params = { program = \"sh\", args = [\"-c\", \"echo working; echo 'cp: cannot stat missing.csv' >&2; exit 1\"] }\n";
    let mut cluster = Cluster::start(&[("copy.toml", failing)], "20s");
    cluster.start_worker("w1", 1);
    let output = Command::new(kiln())
        .args(["--server", &cluster.url(), "trigger", "copy", "--wait"])
        .env_remove("KILN_API_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let row = stdout
        .lines()
        .position(|line| line.trim_start().starts_with("copy ") && line.contains("failed"))
        .unwrap_or_else(|| panic!("no failed row in:\n{stdout}"));
    let under: Vec<&str> = stdout.lines().skip(row + 1).collect();
    assert!(
        under
            .iter()
            .any(|line| line.contains("| cp: cannot stat missing.csv")),
        "{stdout}"
    );
}
