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

/// One completion path: an attempt's state changes in one file of the store, where every end
/// of an attempt (a report, a lost lease, a timeout, a cancel) is a compare-and-set.
#[test]
fn only_the_completions_module_ends_attempts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let home = root.join("engine/src/store/completions.rs");
    // Spelled in two halves so this file does not trip its own check.
    let statement = format!("UPDATE task_attempts {}", "SET state");
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|(path, text)| *path != home && text.contains(&statement))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "attempts end only in engine/src/store/completions.rs (complete_in, close_attempts_in):\n{}",
        offenders.join("\n")
    );
}

/// `engine` knows no HTTP server or HTML: only `web` serves them.
#[test]
fn the_engine_serves_no_http() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let manifest = std::fs::read_to_string(root.join("engine/Cargo.toml")).unwrap();
    for server in ["axum", "hyper", "tower", "maud"] {
        assert!(
            !manifest
                .lines()
                .any(|line| line.trim_start().starts_with(server)),
            "engine must not depend on {server}"
        );
    }
}

/// The modules of a crate (`src/<module>.rs` or `src/<module>/…`) and the other modules each
/// names through `crate::` paths (`use crate::{a, b::c}` included).
fn module_graph(
    src: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = std::collections::BTreeMap::new();
    for path in files {
        let relative = path.strip_prefix(src).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let named: &mut std::collections::BTreeSet<String> =
            graph.entry(module.clone()).or_default();
        for (index, _) in text.match_indices("crate::") {
            let rest = &text[index + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // A group: its top-level names (`crate::{a, b::{c, d}}` names a and b).
                Some(group) => {
                    let mut depth = 0;
                    let end = group
                        .char_indices()
                        .find(|&(_, char)| {
                            match char {
                                '{' => depth += 1,
                                '}' if depth == 0 => return true,
                                '}' => depth -= 1,
                                _ => {}
                            }
                            false
                        })
                        .map_or(group.len(), |(end, _)| end);
                    let mut names = Vec::new();
                    let mut depth = 0;
                    let mut start = true;
                    for (offset, char) in group[..end].char_indices() {
                        match char {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            ',' if depth == 0 => start = true,
                            char if start && depth == 0 && !char.is_whitespace() => {
                                let name = &group[offset..];
                                let len = name
                                    .find(|char: char| !(char.is_alphanumeric() || char == '_'))
                                    .unwrap_or(name.len());
                                names.push(&name[..len]);
                                start = false;
                            }
                            _ => {}
                        }
                    }
                    names
                }
                None => {
                    let len = rest
                        .find(|char: char| !(char.is_alphanumeric() || char == '_'))
                        .unwrap_or(rest.len());
                    vec![&rest[..len]]
                }
            };
            for name in names {
                if !name.is_empty() && name != module {
                    named.insert(name.to_owned());
                }
            }
        }
    }
    // Names that are not modules (items re-exported at the crate root) are no edges.
    let modules: std::collections::BTreeSet<String> = graph.keys().cloned().collect();
    for named in graph.values_mut() {
        named.retain(|name| modules.contains(name));
    }
    graph
}

/// A circle in `graph`, if it has one, as the modules along it.
fn module_circle(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    // Depth-first with an explicit stack: white (unseen), grey (on the path), black (done).
    let mut colour: std::collections::BTreeMap<&str, u8> = std::collections::BTreeMap::new();
    for start in graph.keys() {
        if colour.contains_key(start.as_str()) {
            continue;
        }
        let mut path: Vec<(&str, Vec<&str>)> = Vec::new();
        let next_of = |module: &str| -> Vec<&str> {
            graph
                .get(module)
                .map_or_else(Vec::new, |named| named.iter().map(String::as_str).collect())
        };
        colour.insert(start, 1);
        path.push((start, next_of(start)));
        while let Some((module, pending)) = path.last_mut() {
            let module = *module;
            match pending.pop() {
                Some(next) => match colour.get(next) {
                    Some(1) => {
                        let at = path.iter().position(|(on, _)| *on == next).unwrap();
                        let mut circle: Vec<String> =
                            path[at..].iter().map(|(on, _)| (*on).to_owned()).collect();
                        circle.push(next.to_owned());
                        return Some(circle);
                    }
                    Some(_) => {}
                    None => {
                        colour.insert(next, 1);
                        path.push((next, next_of(next)));
                    }
                },
                None => {
                    colour.insert(module, 2);
                    path.pop();
                }
            }
        }
    }
    None
}

/// Each crate's modules depend on one another in one direction: a reader can start at the
/// bottom (`dag`, `state`, `store` in `engine`) and never has to go back.
#[test]
fn engine_modules_form_no_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let graph = module_graph(&root.join("engine/src"));
    assert!(
        graph.contains_key("store") && graph.contains_key("dag"),
        "{graph:?}"
    );
    if let Some(circle) = module_circle(&graph) {
        panic!(
            "engine's modules import each other in a circle: {}",
            circle.join(" -> ")
        );
    }
}

#[test]
fn a_circle_of_modules_is_found_and_named() {
    let mut graph = std::collections::BTreeMap::new();
    let edges = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")];
    for (from, to) in edges {
        graph
            .entry(from.to_owned())
            .or_insert_with(std::collections::BTreeSet::new)
            .insert(to.to_owned());
        graph.entry(to.to_owned()).or_default();
    }
    assert_eq!(
        module_circle(&graph).map(|circle| circle.join(" -> ")),
        Some("a -> b -> c -> a".to_owned())
    );
    graph.get_mut("c").unwrap().clear();
    assert_eq!(module_circle(&graph), None);
}
