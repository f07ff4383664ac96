//! Cache keys: what must match for a cacheable task to reuse an earlier attempt's outputs.
//!
//! The key is the SHA-256 of a canonical JSON document holding the DAG and task ids, the plugin
//! kind and version (the worker's own, since it runs the code), the task's and the run's params,
//! the exact bytes of every input (their digests) and the declared outputs. Changing any of these
//! misses; identical inputs republished as another version still hit, because their bytes are
//! what the plugin reads.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::store::ClaimedTask;

/// Bumped when the key's recipe changes, so old entries stop matching.
const RECIPE: u32 = 1;

/// The cache key of a claimed task run by a plugin of `plugin_version`.
pub fn cache_key(task: &ClaimedTask, plugin_version: u32) -> String {
    let inputs: BTreeMap<&str, String> = task
        .inputs
        .iter()
        .map(|input| (input.slot.as_str(), input.version.blob.sha256.to_hex()))
        .collect();
    let outputs: Vec<serde_json::Value> = task
        .outputs
        .iter()
        .map(|output| {
            serde_json::json!({
                "name": output.name,
                "kind": output.kind.as_str(),
                "publish_as": output.publish_as,
                "media_type": output.media_type,
                "promote": output.promote.map(|alias| alias.as_str()),
            })
        })
        .collect();
    let material = serde_json::json!({
        "recipe": RECIPE,
        "dag": task.dag_id,
        "task": task.task_id,
        "kind": task.kind,
        "plugin_version": plugin_version,
        "params": task.params,
        "run_params": task.run_params,
        "inputs": inputs,
        "outputs": outputs,
    });
    let mut canonical = String::new();
    write_canonical(&material, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// JSON with object keys sorted at every level, whatever order the map kept them in.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(params: serde_json::Value) -> ClaimedTask {
        ClaimedTask {
            task_instance_id: 1,
            fence: 1,
            run_id: 1,
            dag_id: "dag".to_owned(),
            task_id: "train".to_owned(),
            try_number: 1,
            kind: "train".to_owned(),
            params,
            run_params: serde_json::json!({ "seed": 42 }),
            logical_date: 0,
            timeout_at: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            cache: true,
        }
    }

    #[test]
    fn key_order_in_params_does_not_matter() {
        let one: serde_json::Value =
            serde_json::from_str(r#"{"a": 1, "b": {"x": 1, "y": 2}}"#).unwrap();
        let other: serde_json::Value =
            serde_json::from_str(r#"{"b": {"y": 2, "x": 1}, "a": 1}"#).unwrap();
        assert_eq!(cache_key(&task(one), 1), cache_key(&task(other), 1));
    }

    #[test]
    fn params_plugin_version_and_run_params_change_the_key() {
        let base = task(serde_json::json!({ "depth": 8 }));
        let key = cache_key(&base, 1);
        assert_ne!(key, cache_key(&base, 2));
        assert_ne!(key, cache_key(&task(serde_json::json!({ "depth": 9 })), 1));
        let mut other_run = base.clone();
        other_run.run_params = serde_json::json!({ "seed": 7 });
        assert_ne!(key, cache_key(&other_run, 1));
        let mut other_attempt = base.clone();
        other_attempt.try_number = 3;
        other_attempt.run_id = 99;
        assert_eq!(
            key,
            cache_key(&other_attempt, 1),
            "run and attempt ids are not part of the key"
        );
    }
}
