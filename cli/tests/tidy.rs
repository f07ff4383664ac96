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

fn sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for crate_dir in ["engine", "tasks", "web", "cli"] {
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
