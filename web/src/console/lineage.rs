//! Lineage drawn as a graph: artifact versions (`name@version`, coloured by kind) and, between
//! them, the task attempts that read some and wrote others (`dag/task run N`), laid out left to
//! right by the same layered layout as a DAG's tasks.

use std::collections::BTreeMap;

use kiln_engine::store::{ArtifactVersionRecord, AttemptRef, LineageGraph};
use maud::{Markup, html};

use super::graph::{self, Node};

/// A path segment made safe for a URL: anything but unreserved characters (and `@`) is
/// percent-encoded. Artifact names are checked when published, but a URL should not rely on it.
pub(crate) fn path_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'@') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The console page of a version.
pub(crate) fn version_href(name: &str, version: i64) -> String {
    format!("/artifacts/{}/{version}", path_segment(name))
}

/// The console page of an attempt.
pub(crate) fn attempt_href(attempt: &AttemptRef) -> String {
    format!(
        "/runs/{}/tasks/{}?try={}",
        attempt.run_id,
        path_segment(&attempt.task_id),
        attempt.try_number
    )
}

/// How an attempt is labelled: `dag/task run N`, with the try when it is not the first.
fn attempt_label(attempt: &AttemptRef) -> String {
    let mut label = format!(
        "{}/{} run {}",
        attempt.dag_id, attempt.task_id, attempt.run_id
    );
    if attempt.try_number > 1 {
        label.push_str(&format!(" try {}", attempt.try_number));
    }
    label
}

/// The nodes of a lineage graph and, per node, its upstreams: version → attempt → version.
/// `focus` is the version whose page this is, drawn outlined.
fn nodes(graph: &LineageGraph, focus: Option<i64>) -> (Vec<Node>, Vec<Vec<usize>>) {
    let mut nodes = Vec::new();
    let mut upstreams: Vec<Vec<usize>> = Vec::new();
    let mut version_index: BTreeMap<i64, usize> = BTreeMap::new();
    for version in &graph.versions {
        version_index.insert(version.id, nodes.len());
        nodes.push(version_node(version, focus == Some(version.id)));
        upstreams.push(Vec::new());
    }
    // Attempts by (task instance, try), so each is drawn once however many edges it has.
    let mut attempt_index: BTreeMap<(i64, i64), usize> = BTreeMap::new();
    let mut attempt_node =
        |attempt: &AttemptRef, nodes: &mut Vec<Node>, upstreams: &mut Vec<Vec<usize>>| {
            *attempt_index
                .entry((attempt.task_instance_id, attempt.try_number))
                .or_insert_with(|| {
                    nodes.push(Node {
                        label: attempt_label(attempt),
                        tooltip: format!("{} (try {})", attempt_label(attempt), attempt.try_number),
                        class: "node attempt".to_owned(),
                        href: Some(attempt_href(attempt)),
                    });
                    upstreams.push(Vec::new());
                    nodes.len() - 1
                })
        };
    let link = |from: usize, to: usize, upstreams: &mut Vec<Vec<usize>>| {
        if let Some(ups) = upstreams.get_mut(to)
            && !ups.contains(&from)
        {
            ups.push(from);
        }
    };
    for edge in &graph.edges {
        let (Some(&input), Some(&output)) = (
            version_index.get(&edge.input),
            version_index.get(&edge.output),
        ) else {
            continue;
        };
        let step = attempt_node(&edge.attempt, &mut nodes, &mut upstreams);
        link(input, step, &mut upstreams);
        link(step, output, &mut upstreams);
    }
    for (version_id, source) in &graph.sources {
        let Some(&output) = version_index.get(version_id) else {
            continue;
        };
        let step = attempt_node(source, &mut nodes, &mut upstreams);
        link(step, output, &mut upstreams);
    }
    (nodes, upstreams)
}

fn version_node(version: &ArtifactVersionRecord, focus: bool) -> Node {
    let kind = version.kind.as_str();
    Node {
        label: version.label(),
        tooltip: format!("{} ({kind}, {})", version.label(), version.media_type),
        class: format!("node kind-{kind}{}", if focus { " focus" } else { "" }),
        href: Some(version_href(&version.name, version.version)),
    }
}

/// The lineage as SVG, or `None` when it has no version.
pub(crate) fn svg(graph: &LineageGraph, focus: Option<i64>, aria_label: &str) -> Option<Markup> {
    if graph.versions.is_empty() {
        return None;
    }
    let (nodes, upstreams) = nodes(graph, focus);
    Some(graph::draw(aria_label, &nodes, &upstreams))
}

/// Which colour means which kind of node.
pub(crate) fn legend() -> Markup {
    html! {
        ul.legend aria-label="Lineage colours" {
            @for kind in ["dataset", "model", "file"] {
                li { span class={ "sq kind-" (kind) } {} (kind) }
            }
            li { span class="sq attempt" {} "task attempt" }
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use kiln_engine::artifacts::{BlobRef, Sha256Digest};
    use kiln_engine::dag::ArtifactKind;
    use kiln_engine::store::{ArtifactVersionRecord, AttemptRef, LineageEdge, LineageGraph};

    use super::{nodes, path_segment};

    fn version(id: i64, name: &str, kind: ArtifactKind) -> ArtifactVersionRecord {
        ArtifactVersionRecord {
            id,
            name: name.to_owned(),
            kind,
            version: 1,
            blob: BlobRef {
                sha256: Sha256Digest::from_bytes([0; 32]),
                size: 0,
            },
            media_type: "text/csv".to_owned(),
            producer: None,
            dataset: None,
            metadata: None,
            created_at: 0,
        }
    }

    fn attempt(task_instance_id: i64, task_id: &str) -> AttemptRef {
        AttemptRef {
            task_instance_id,
            try_number: 1,
            run_id: 7,
            dag_id: "pipe".to_owned(),
            task_id: task_id.to_owned(),
        }
    }

    fn check(graph: &LineageGraph, expected: Expect) {
        let (nodes, upstreams) = nodes(graph, Some(2));
        let rendered: Vec<String> = nodes
            .iter()
            .zip(&upstreams)
            .map(|(node, ups)| {
                let ups: Vec<&str> = ups.iter().map(|&up| nodes[up].label.as_str()).collect();
                format!("{} [{}] <- {ups:?}", node.label, node.class)
            })
            .collect();
        expected.assert_eq(&rendered.join("\n"));
    }

    #[test]
    fn attempts_sit_between_the_versions_they_read_and_wrote() {
        // ingest wrote raw from nothing; train read raw and ref and wrote the model.
        let graph = LineageGraph {
            versions: vec![
                version(1, "raw", ArtifactKind::Dataset),
                version(2, "m", ArtifactKind::Model),
                version(3, "ref", ArtifactKind::Dataset),
            ],
            edges: vec![
                LineageEdge {
                    input: 1,
                    output: 2,
                    attempt: attempt(20, "train"),
                },
                LineageEdge {
                    input: 3,
                    output: 2,
                    attempt: attempt(20, "train"),
                },
            ],
            sources: vec![(1, attempt(10, "ingest"))],
        };
        check(
            &graph,
            expect![[r#"
                raw@1 [node kind-dataset] <- ["pipe/ingest run 7"]
                m@1 [node kind-model focus] <- ["pipe/train run 7"]
                ref@1 [node kind-dataset] <- []
                pipe/train run 7 [node attempt] <- ["raw@1", "ref@1"]
                pipe/ingest run 7 [node attempt] <- []"#]],
        );
    }

    #[test]
    fn url_segments_are_percent_encoded() {
        assert_eq!(path_segment("pipe.clean.out"), "pipe.clean.out");
        assert_eq!(path_segment("a b/c?d"), "a%20b%2Fc%3Fd");
    }
}
