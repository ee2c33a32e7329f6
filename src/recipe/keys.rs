//! A resolved recipe as dotted keys (`distill.lr`, `blocks.2.cells.0.layers`): MLflow params,
//! and the keys two recipes differ in (resuming a run, reusing a study's nets).

use std::collections::BTreeMap;

/// The recipe flattened to dotted params: `distill.lr`, `blocks.2.cells.0.layers`. Arrays of
/// scalars (and long arrays) are JSON strings.
pub fn flatten_params(value: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        use serde_json::Value;
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            Value::Array(a) if a.iter().any(|x| x.is_object()) && a.len() <= 64 => {
                for (i, v) in a.iter().enumerate() {
                    walk(&format!("{prefix}.{i}"), v, out);
                }
            }
            Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out.into_iter().collect()
}

/// Keys whose values differ between two resolved recipes.
pub fn differing_keys(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let fa: BTreeMap<String, String> = flatten_params(a).into_iter().collect();
    let fb: BTreeMap<String, String> = flatten_params(b).into_iter().collect();
    let mut keys: Vec<String> = fa
        .keys()
        .chain(fb.keys())
        .filter(|k| fa.get(*k) != fb.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_keys_are_dotted_paths() {
        let a = serde_json::json!({"distill": {"epochs": 4}, "blocks": [{"lr": 1.0, "cells": [1]}], "x": [1, 2]});
        let b = serde_json::json!({"distill": {"epochs": 12}, "blocks": [{"lr": 2.0, "cells": [1]}], "x": [1, 3], "y": 1});
        assert_eq!(
            differing_keys(&a, &b),
            ["blocks.0.lr", "distill.epochs", "x", "y"]
        );
    }
}
