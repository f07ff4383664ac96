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
    let root = root();
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
    let root = root();
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
    let root = root();
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

/// The files of `<crate_dir>/src`, with their text, as `(path below src, text)`.
fn crate_sources(crate_dir: &str) -> Vec<(String, String)> {
    let root = root();
    let src = root.join(crate_dir).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 10,
        "found only {} files in {crate_dir}",
        files.len()
    );
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
    let offenders: Vec<String> = crate_sources("web")
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

/// The graph of a crate's top-level modules (`src/<module>.rs` or `src/<module>/…`): for each
/// module, the others it names through `crate::` paths (a `crate::{a, b}` list included, and a
/// name `lib.rs` re-exports standing for the module it comes from), each with the first file
/// that does.
fn module_graph(
    crate_dir: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    use std::collections::{BTreeMap, BTreeSet};

    let sources = crate_sources(crate_dir);
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
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        for item in crate_path_heads(items) {
            reexports.insert(item, module.to_owned());
        }
        // `pub use routes::openapi;` and the like, one segment deeper.
        if let Some((_, last)) = items.rsplit_once("::") {
            reexports.insert(last.trim().to_owned(), module.to_owned());
        }
    }

    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (path, text) in &sources {
        let from = module_of(path);
        if from == "lib" {
            continue;
        }
        graph.entry(from.clone()).or_default();
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
                        .or_insert_with(|| format!("{crate_dir}/src/{path}"));
                }
            }
        }
    }
    graph
}

/// A circle in a module graph, if there is one: each step with the file that takes it.
fn module_circle(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
) -> Option<Vec<String>> {
    // Depth-first, with an explicit stack of (module, its next neighbours): a module met again
    // while still on the path closes a circle.
    let mut done: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for start in graph.keys() {
        if done.contains(start.as_str()) {
            continue;
        }
        let neighbours = |module: &str| -> Vec<&str> {
            graph
                .get(module)
                .map(|uses| uses.keys().map(String::as_str).rev().collect())
                .unwrap_or_default()
        };
        let mut path: Vec<(&str, Vec<&str>)> = vec![(start.as_str(), neighbours(start))];
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
                return Some(
                    circle
                        .iter()
                        .zip(circle.iter().skip(1).chain([&next]))
                        .map(|(from, to)| format!("{from} -> {to} ({})", graph[*from][*to]))
                        .collect(),
                );
            }
            path.push((next, neighbours(next)));
        }
    }
    None
}

/// Checks that `crate_dir`'s modules form no circle, after checking that the parse found the
/// edges it must (so the check cannot pass by reading nothing).
fn assert_no_module_circle(crate_dir: &str, expected: &[(&str, &str)]) {
    let graph = module_graph(crate_dir);
    for (from, to) in expected {
        assert!(
            graph.get(*from).is_some_and(|uses| uses.contains_key(*to)),
            "expected `{from}` to use `{to}`; the check no longer reads the sources right: \
             {graph:?}"
        );
    }
    if let Some(steps) = module_circle(&graph) {
        panic!("{crate_dir}'s modules form a circle:\n{}", steps.join("\n"));
    }
}

/// Each crate's modules depend on one another in one direction: a reader can start at the
/// bottom (`dag` in `engine`, `wire` in `web`) and never has to go back.
#[test]
fn web_modules_form_no_circle() {
    assert_no_module_circle(
        "web",
        &[("routes", "api"), ("routes", "exec"), ("api", "wire")],
    );
}

#[test]
fn engine_modules_form_no_circle() {
    assert_no_module_circle(
        "engine",
        &[("scheduler", "store"), ("store", "dag"), ("plugin", "dag")],
    );
}

#[test]
fn a_circle_of_modules_is_found_and_named() {
    let mut graph = std::collections::BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")] {
        graph
            .entry(from.to_owned())
            .or_insert_with(std::collections::BTreeMap::new)
            .insert(to.to_owned(), format!("{from}.rs"));
        graph.entry(to.to_owned()).or_default();
    }
    assert_eq!(
        module_circle(&graph).map(|steps| steps.join(", ")),
        Some("a -> b (a.rs), b -> c (b.rs), c -> a (c.rs)".to_owned())
    );
    graph.get_mut("c").unwrap().clear();
    assert_eq!(module_circle(&graph), None);
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
