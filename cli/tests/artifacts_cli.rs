//! `kiln artifacts …` and `kiln lineage` as a user runs them: the real binary on a SQLite
//! database and a local artifact store in a temporary data directory.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_engine::artifacts::{ArtifactStoreConfig, BlobStore, blob_key};
use support::kiln;

/// A data directory and a folder of input files, for one test.
struct Workspace {
    dir: tempfile::TempDir,
}

/// What a `kiln` run printed, and whether it succeeded.
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Workspace {
    fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    /// Writes an input file; answers its path.
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Runs `kiln --data-dir DATA ARGS…` in the workspace.
    fn kiln(&self, args: &[&str]) -> Ran {
        let output: Output = Command::new(kiln())
            .current_dir(self.dir.path())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .env_remove("KILN_DATABASE_URL")
            .env_remove("KILN_ARTIFACTS_CONFIG")
            .env_remove("KILN_DATA_DIR")
            .env("KILN_LOG", "warn")
            .output()
            .expect("kiln runs");
        Ran {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs kiln and expects success; answers its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let ran = self.kiln(args);
        assert!(
            ran.success,
            "kiln {args:?} failed:\n{}\n{}",
            ran.stdout, ran.stderr
        );
        ran.stdout
    }

    /// Runs kiln and expects failure; answers its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let ran = self.kiln(args);
        assert!(
            !ran.success,
            "kiln {args:?} succeeded:\n{}\n{}",
            ran.stdout, ran.stderr
        );
        ran.stderr
    }

    /// The file a blob is stored in, from the digest `kiln artifacts show` prints.
    fn blob_file(&self, artifact: &str) -> PathBuf {
        let shown = self.ok(&["artifacts", "show", artifact]);
        let sha256 = shown
            .lines()
            .find_map(|line| line.trim().strip_prefix("sha256"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no digest in:\n{shown}"));
        self.data_dir()
            .join("artifacts")
            .join(blob_key(&sha256.parse().unwrap()))
    }

    /// Stores bytes in the artifact store without publishing them, as a worker whose
    /// completion never arrived would leave them.
    fn stray_blob(&self, bytes: &[u8]) -> PathBuf {
        let source = self.file("stray.bin", bytes);
        let store =
            BlobStore::from_config(&ArtifactStoreConfig::local_under(&self.data_dir())).unwrap();
        let blob = support::Cluster::runtime()
            .block_on(store.put_file(&source))
            .unwrap()
            .blob;
        self.data_dir()
            .join("artifacts")
            .join(blob_key(&blob.sha256))
    }
}

fn assert_contains(text: &str, expected: &str) {
    assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
}

#[test]
fn put_list_show_and_get_round_trip() {
    let workspace = Workspace::new();
    let first = workspace.file("reference.csv", b"a,b\n1,2\n");
    let second = workspace.file("reference-2.csv", b"a,b\n1,2\n3,4\n");
    let model = workspace.file("model.bin", b"weights");

    let out = workspace.ok(&[
        "artifacts",
        "put",
        "reference",
        path(&first),
        "--kind",
        "dataset",
    ]);
    assert_eq!(
        out.lines().next().unwrap_or_default().split(' ').next(),
        Some("reference@1")
    );
    assert_contains(&out, "new version, 8 B");
    let out = workspace.ok(&[
        "artifacts",
        "put",
        "reference",
        path(&first),
        "--kind",
        "dataset",
    ]);
    assert_contains(
        &out,
        "reference@1 (identical bytes to the newest version, reused: no new version)",
    );
    let out = workspace.ok(&[
        "artifacts",
        "put",
        "reference",
        path(&second),
        "--kind",
        "dataset",
    ]);
    assert_contains(&out, "reference@2 (new version, 12 B");
    workspace.ok(&[
        "artifacts",
        "put",
        "weights.v1",
        path(&model),
        "--kind",
        "model",
        "--media-type",
        "application/x-weights",
    ]);

    let stderr = workspace.fails(&[
        "artifacts",
        "put",
        "reference",
        path(&model),
        "--kind",
        "model",
    ]);
    assert_contains(
        &stderr,
        "artifact `reference` is a dataset; a model cannot be published under the same name",
    );
    let stderr = workspace.fails(&["artifacts", "put", "a/b", path(&model), "--kind", "model"]);
    assert_contains(&stderr, "artifact name `a/b` is not valid");

    let listed = workspace.ok(&["artifacts", "list"]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|line| line.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["NAME", "KIND", "LATEST"],
            vec!["reference", "dataset", "2"],
            vec!["weights.v1", "model", "1"],
        ],
        "{listed}"
    );
    let models = workspace.ok(&["artifacts", "list", "--kind", "model"]);
    assert_eq!(models.lines().count(), 2, "{models}");
    assert_contains(&models, "weights.v1");
    assert_eq!(
        workspace.ok(&["artifacts", "list", "--kind", "file"]),
        "no file artifacts\n"
    );
    let stderr = workspace.fails(&["artifacts", "list", "--kind", "table"]);
    assert_contains(
        &stderr,
        "unknown artifact kind `table` (dataset, model or file)",
    );

    let shown = workspace.ok(&["artifacts", "show", "reference@1"]);
    for line in [
        "reference@1\n",
        "  kind        dataset\n",
        "  version     1 of 2\n",
        "  size        8 B (8 bytes)\n",
        "  media type  text/csv\n",
        "  producer    put by hand\n",
        "versions of reference, newest first:",
    ] {
        assert_contains(&shown, line);
    }
    let versions: Vec<&str> = shown
        .lines()
        .skip_while(|line| !line.contains("VERSION"))
        .skip(1)
        .filter_map(|line| line.split_whitespace().find(|word| *word != "*"))
        .collect();
    assert_eq!(versions, ["2", "1"], "{shown}");
    let shown = workspace.ok(&["artifacts", "show", "weights.v1"]);
    assert_contains(&shown, "  media type  application/x-weights\n");

    assert_contains(
        &workspace.fails(&["artifacts", "show", "reference@3"]),
        "artifact `reference` has no version 3 (latest is 2)",
    );
    assert_contains(
        &workspace.fails(&["artifacts", "show", "nope"]),
        "artifact `nope` not found",
    );
    assert_contains(
        &workspace.fails(&["artifacts", "show", "reference@two"]),
        "the version `two` is not a positive integer or `latest`",
    );

    let out = workspace.path("out.csv");
    workspace.ok(&["artifacts", "get", "reference@1", "-o", path(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), b"a,b\n1,2\n");
    workspace.ok(&["artifacts", "get", "reference", "-o", path(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), b"a,b\n1,2\n3,4\n");
}

#[test]
fn getting_corrupt_bytes_fails_and_writes_nothing() {
    let workspace = Workspace::new();
    let source = workspace.file("data.bin", b"precious bytes");
    workspace.ok(&[
        "artifacts",
        "put",
        "precious",
        path(&source),
        "--kind",
        "file",
    ]);
    let stored = workspace.blob_file("precious@1");
    let mut bytes = std::fs::read(&stored).unwrap();
    assert_eq!(bytes, b"precious bytes");
    bytes[3] ^= 0x20;
    std::fs::write(&stored, &bytes).unwrap();

    let out_dir = workspace.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("precious.bin");
    let stderr = workspace.fails(&["artifacts", "get", "precious@1", "-o", path(&out)]);
    assert_contains(&stderr, "artifact `precious` version 1 are corrupt");
    assert!(!out.exists(), "the output file was created");
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "files were left behind: {left:?}");
}

#[test]
fn lineage_of_a_version_put_by_hand() {
    let workspace = Workspace::new();
    let source = workspace.file("data.csv", b"x\n1\n");
    workspace.ok(&[
        "artifacts",
        "put",
        "seed",
        path(&source),
        "--kind",
        "dataset",
    ]);
    assert_eq!(
        workspace.ok(&["lineage", "seed"]),
        "seed@1\n└─ put by hand\n"
    );
    assert_eq!(
        workspace.ok(&["lineage", "seed@1", "--downstream"]),
        "seed@1 (no task has read it)\n"
    );
    assert_contains(
        &workspace.fails(&["lineage", "seed@2"]),
        "artifact `seed` has no version 2 (latest is 1)",
    );
}

#[test]
fn gc_deletes_only_old_unreferenced_blobs_and_only_when_told() {
    let workspace = Workspace::new();
    let kept = workspace.file("kept.csv", b"kept\n");
    workspace.ok(&["artifacts", "put", "kept", path(&kept), "--kind", "dataset"]);
    let also_kept = workspace.file("also.bin", b"also kept");
    workspace.ok(&[
        "artifacts",
        "put",
        "also",
        path(&also_kept),
        "--kind",
        "model",
    ]);
    let kept_files = [workspace.blob_file("kept"), workspace.blob_file("also")];

    let report = workspace.ok(&["artifacts", "gc", "--min-age", "0s"]);
    assert_contains(
        &report,
        "2 blob(s) in the artifact store, 2 referenced by a version",
    );
    assert_contains(&report, "no unreferenced blobs older than 0s");

    let stray = workspace.stray_blob(b"nobody refers to me");
    let stray_hex = stray_digest(&stray);

    // Under the default minimum age the fresh stray is kept, and not offered for deletion.
    let report = workspace.ok(&["artifacts", "gc"]);
    assert_contains(
        &report,
        "3 blob(s) in the artifact store, 2 referenced by a version",
    );
    assert_contains(
        &report,
        "1 unreferenced blob(s) stored less than 1h ago are kept",
    );
    assert!(!report.contains(&stray_hex), "{report}");
    let report = workspace.ok(&["artifacts", "gc", "--yes"]);
    assert_contains(&report, "no unreferenced blobs older than 1h");
    assert!(stray.exists());

    // Old enough: reported, but a dry run deletes nothing.
    let report = workspace.ok(&["artifacts", "gc", "--min-age", "0s"]);
    assert_contains(&report, &format!("sha256:{stray_hex}"));
    assert_contains(
        &report,
        "1 unreferenced blob(s), 19 B in all; run with --yes to delete them",
    );
    for file in &kept_files {
        assert!(!report.contains(&stray_digest(file)), "{report}");
    }
    assert!(stray.exists(), "a dry run deleted the blob");

    let report = workspace.ok(&["artifacts", "gc", "--yes", "--min-age", "0s"]);
    assert_contains(&report, "deleted 1 unreferenced blob(s), 19 B in all");
    assert!(!stray.exists(), "the unreferenced blob is still there");
    for file in &kept_files {
        assert!(file.exists(), "{} was deleted", file.display());
    }
    let out = workspace.path("kept-out.csv");
    workspace.ok(&["artifacts", "get", "kept", "-o", path(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), b"kept\n");
    let report = workspace.ok(&["artifacts", "gc", "--min-age", "0s"]);
    assert_contains(
        &report,
        "2 blob(s) in the artifact store, 2 referenced by a version",
    );
}

/// The digest a blob file is stored under: its folder and its name.
fn stray_digest(file: &Path) -> String {
    let folder = file.parent().and_then(Path::file_name).unwrap();
    format!(
        "{}{}",
        folder.to_string_lossy(),
        file.file_name().unwrap().to_string_lossy()
    )
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn models_are_listed_promoted_and_rolled_back_from_the_command_line() {
    let workspace = Workspace::new();
    assert!(workspace.ok(&["models", "list"]).contains("no models yet"));
    for bytes in [&b"{\"weights\": 1}"[..], &b"{\"weights\": 2}"[..]] {
        let model = workspace.file("model.json", bytes);
        workspace.ok(&[
            "artifacts",
            "put",
            "wq",
            model.to_str().unwrap(),
            "--kind",
            "model",
        ]);
    }
    let promoted = workspace.ok(&["models", "promote", "wq", "1"]);
    assert_eq!(promoted.trim(), "wq: production is version 1 (was -)");
    workspace.ok(&["models", "promote", "wq", "2"]);
    let listed = workspace.ok(&["models", "list"]);
    let row = listed.lines().find(|line| line.starts_with("wq ")).unwrap();
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&columns[..4], ["wq", "2", "2", "-"], "{listed}");
    let rolled = workspace.ok(&["models", "rollback", "wq"]);
    assert_eq!(
        rolled.trim(),
        "wq: production rolled back from version 2 to 1"
    );
    let error = workspace.fails(&["models", "rollback", "wq"]);
    assert!(
        error.contains("model `wq` has had no other production version to roll back to"),
        "{error}"
    );
    let shown = workspace.ok(&["models", "show", "wq"]);
    assert!(
        shown.starts_with("model wq: production 1, staging -"),
        "{shown}"
    );
    assert!(
        shown.contains("production 2 -> 1: rolled back from version 2"),
        "{shown}"
    );
    // The versions' columns line up under their headers, whatever the metrics' length.
    let header = shown
        .lines()
        .find(|line| line.trim_start().starts_with("VERSION"))
        .unwrap_or_else(|| panic!("no version table in {shown}"));
    let created = header.find("CREATED").unwrap();
    let versions: Vec<&str> = shown
        .lines()
        .skip_while(|line| *line != header)
        .skip(1)
        .take_while(|line| !line.is_empty())
        .collect();
    assert_eq!(versions.len(), 2, "{shown}");
    for row in versions {
        assert!(
            row.get(created..)
                .is_some_and(|rest| rest.starts_with("20")),
            "{shown}"
        );
    }
    let error = workspace.fails(&["models", "promote", "wq", "9"]);
    assert!(error.contains("model `wq` version 9 not found"), "{error}");
    let data = workspace.file("rows.csv", b"a\n1\n");
    workspace.ok(&[
        "artifacts",
        "put",
        "rows",
        data.to_str().unwrap(),
        "--kind",
        "dataset",
    ]);
    let error = workspace.fails(&["models", "promote", "rows", "1"]);
    assert!(
        error.contains("artifact `rows` is a dataset, not a model"),
        "{error}"
    );
}
