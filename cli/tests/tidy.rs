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

/// The files of `web/src`, with their text, as `(path below web/src, text)`.
fn web_sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let src = root.join("web").join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 10, "found only {} web files", files.len());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let relative = path.strip_prefix(&src).unwrap().to_string_lossy();
            (relative.replace('\\', "/"), text)
        })
        .collect()
}

/// A file's code without its comments: every line from its first `//` on is dropped (a `//`
/// inside a string literal cuts that line short, which only ever hides code from a check).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn web_handlers_take_sub_states_instead_of_walking_to_the_store() {
    // `state.rs` draws each handler's part of `AppState` out by `FromRef`; a handler that
    // walks `state.scheduler().store()` itself hides what it uses from its signature.
    let offenders: Vec<String> = web_sources()
        .into_iter()
        .filter(|(path, _)| path != "state.rs")
        .flat_map(|(path, text)| {
            code_of(&text)
                .lines()
                .enumerate()
                .filter(|(_, line)| line.contains(".store()"))
                .map(|(index, line)| format!("web/src/{path}:{}: {}", index + 1, line.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "take `State<Arc<dyn Store>>` (or another part of `AppState`, see web/src/state.rs) \
         instead of calling `.store()`:\n{}",
        offenders.join("\n")
    );
}

/// The names a `crate::` path starting at `rest` brings in: its first segment, or each first
/// segment of a `crate::{a::b, c}` list.
fn crate_path_heads(rest: &str) -> Vec<String> {
    let identifier = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(list) = rest.strip_prefix('{') else {
        return vec![identifier(rest)];
    };
    // The list up to its closing brace, split at its own commas (not those of nested lists).
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    for c in list.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(identifier(&item));
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    heads.push(identifier(&item));
    heads.retain(|head| !head.is_empty());
    heads
}

#[test]
fn web_modules_form_no_circle() {
    use std::collections::{BTreeMap, BTreeSet};

    let sources = web_sources();
    // Each file belongs to its top-level module: `api/runs.rs` and `api/mod.rs` to `api`.
    let module_of = |path: &str| -> String {
        let first = path.split('/').next().unwrap_or_default();
        first.strip_suffix(".rs").unwrap_or(first).to_owned()
    };
    let modules: BTreeSet<String> = sources
        .iter()
        .map(|(path, _)| module_of(path))
        .filter(|module| module != "lib")
        .collect();
    // What `lib.rs` re-exports stands for the module it comes from (`crate::AppState` is
    // `state`'s).
    let mut reexports = BTreeMap::new();
    let lib = &sources.iter().find(|(path, _)| path == "lib.rs").unwrap().1;
    for statement in code_of(lib).split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let (module, items) = path.split_once("::").unwrap();
        for item in crate_path_heads(items) {
            reexports.insert(item, module.to_owned());
        }
        // `pub use routes::openapi;` and the like, one segment deeper.
        if let Some((_, last)) = items.rsplit_once("::") {
            reexports.insert(last.trim().to_owned(), module.to_owned());
        }
    }

    // module -> module it uses -> the first file that does.
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (path, text) in &sources {
        let from = module_of(path);
        if from == "lib" {
            continue;
        }
        let code = code_of(text);
        for (at, _) in code.match_indices("crate::") {
            let preceded_by_word = code[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            if preceded_by_word {
                continue; // `kiln_crate::…`, not ours.
            }
            for head in crate_path_heads(&code[at + "crate::".len()..]) {
                let to = if modules.contains(&head) {
                    Some(head)
                } else {
                    reexports.get(&head).cloned()
                };
                if let Some(to) = to
                    && to != from
                {
                    graph
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| format!("web/src/{path}"));
                }
            }
        }
    }
    // The parse found the edges it must: the route table mounts the handlers.
    for (from, to) in [("routes", "api"), ("routes", "exec"), ("api", "wire")] {
        assert!(
            graph.get(from).is_some_and(|uses| uses.contains_key(to)),
            "expected `{from}` to use `{to}`; the check no longer reads the sources right: \
             {graph:?}"
        );
    }

    // Depth-first, with an explicit stack of (module, its next neighbour): a module met again
    // while still on the path closes a circle.
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for start in &modules {
        if done.contains(start.as_str()) {
            continue;
        }
        let mut path: Vec<(&str, Vec<&str>)> = Vec::new();
        let neighbours = |module: &str| -> Vec<&str> {
            graph
                .get(module)
                .map(|uses| uses.keys().map(String::as_str).rev().collect())
                .unwrap_or_default()
        };
        path.push((start.as_str(), neighbours(start)));
        while let Some((module, pending)) = path.last_mut() {
            let module = *module;
            let Some(next) = pending.pop() else {
                done.insert(module);
                path.pop();
                continue;
            };
            if done.contains(next) {
                continue;
            }
            if let Some(index) = path.iter().position(|(on_path, _)| *on_path == next) {
                let circle: Vec<&str> = path[index..].iter().map(|(name, _)| *name).collect();
                let steps: Vec<String> = circle
                    .iter()
                    .zip(circle.iter().skip(1).chain([&next]))
                    .map(|(from, to)| format!("{from} -> {to} ({})", graph[*from][*to]))
                    .collect();
                panic!(
                    "web modules form a circle: {} -> {next}\n{}",
                    circle.join(" -> "),
                    steps.join("\n")
                );
            }
            path.push((next, neighbours(next)));
        }
    }
}
