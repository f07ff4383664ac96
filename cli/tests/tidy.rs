//! Conventions that `cargo test` enforces across the repository (after rust-analyzer's `tidy`).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, files);
        } else if name.ends_with(".rs") {
            files.push(path);
        }
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn sources() -> Vec<(PathBuf, String)> {
    let root = root();
    let mut files = Vec::new();
    for crate_dir in ["engine", "tasks", "web", "cli", "bench"] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    files.sort();
    assert!(files.len() > 10, "found only {} Rust files", files.len());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect()
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` first line:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_ignored_or_should_panic_tests() {
    // Spelled in two halves so this file does not trip its own check.
    let banned = [format!("#[{}]", "ignore"), format!("#[{}", "should_panic")];
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| banned.iter().any(|word| text.contains(word.as_str())))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "tests must run and must not panic by design:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn polars_and_linfa_stay_out_of_engine_and_web() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for crate_dir in ["engine", "web"] {
        let manifest = std::fs::read_to_string(root.join(crate_dir).join("Cargo.toml")).unwrap();
        for heavy in ["polars", "linfa"] {
            assert!(
                !manifest.contains(heavy),
                "{crate_dir} must not depend on {heavy}"
            );
        }
    }
}

#[test]
fn the_cli_does_not_speak_sql_or_http_itself() {
    // SQL is the store's (`engine::store`), HTTP is `web`'s, and `kiln bench`, which once needed
    // both here, is the `bench` crate. Crates whose names start with these count too
    // (`sqlx-core`, `axum-extra`, `tower-http`).
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("cli").join("Cargo.toml")).unwrap())
            .unwrap();
    let mut offenders = Vec::new();
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(dependencies) = manifest.get(table).and_then(toml::Value::as_table) else {
            continue;
        };
        for name in dependencies.keys() {
            if ["sqlx", "axum", "tower"]
                .iter()
                .any(|banned| name.starts_with(banned))
            {
                offenders.push(format!("[{table}] {name}"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "cli/Cargo.toml must not depend on sqlx, axum or tower:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn only_the_store_runs_sql() {
    // Test set-up that makes, breaks or inspects databases beneath the store's API.
    const ALLOWED: [&str; 6] = [
        "engine/tests/common/mod.rs",
        "engine/tests/pool.rs",
        "engine/tests/scheduler.rs",
        "engine/tests/store.rs",
        "engine/tests/timed_loop.rs",
        "web/tests/common/mod.rs",
    ];
    // Spelled in pieces so this file does not trip its own check.
    let calls = [
        format!("sqlx::{}", "query"),
        format!("{}(", "raw_sql"),
        format!("{}(", "query_as"),
        format!("{}(", "query_scalar"),
    ];
    let store = root().join("engine").join("src").join("store");
    let mut offenders = Vec::new();
    let mut running = Vec::new();
    for (path, text) in sources() {
        if path.starts_with(&store) || !calls.iter().any(|call| text.contains(call.as_str())) {
            continue;
        }
        let relative = path
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if ALLOWED.contains(&relative.as_str()) {
            running.push(relative);
        } else {
            offenders.push(relative);
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL belongs in engine/src/store/ (the store's PostgreSQL admin helpers make and drop databases):\n{}",
        offenders.join("\n")
    );
    let stale: Vec<&str> = ALLOWED
        .into_iter()
        .filter(|allowed| !running.iter().any(|path| path == allowed))
        .collect();
    assert!(
        stale.is_empty(),
        "these no longer run SQL of their own; take them off the allow-list:\n{}",
        stale.join("\n")
    );
}
