//! What the user writes: the recipe types (which generate the JSON schema), layered loading with
//! source positions, and diagnostics. Knows nothing of Burn.

mod diag;
mod keys;
mod load;
mod types;

pub use diag::{
    Diagnostic, Diagnostics, Origin, Source, Sources, did_you_mean, display_key, line_col,
};
pub use keys::{differing_keys, flatten_params};
pub use load::{Loaded, Origins, Overrides, load, load_partial, schema, schema_diagnostics};
pub use types::*;

/// The schema as committed in `schemas/recipe.schema.json` for editors (pretty JSON, trailing
/// newline): [`editor_schema`] of the generated one.
pub fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&editor_schema(schema())).expect("a schema is JSON");
    s.push('\n');
    s
}

/// The schema editors apply to recipe files. A recipe with `extends` is partial (the base it
/// names supplies the rest), so it is checked against `Partial*` copies of every definition
/// without `required`; a recipe without `extends` must also match the full recipe
/// (`FullRecipe`, the generated schema). Key completion and descriptions are the same for both.
/// (`dnarun validate` checks the merged recipe against the generated schema itself.)
pub fn editor_schema(full: serde_json::Value) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    fn partial(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "required")
                    .map(|(k, x)| match (k.as_str(), x.as_str()) {
                        ("$ref", Some(r)) => (
                            k.clone(),
                            Value::from(r.replace("#/$defs/", "#/$defs/Partial")),
                        ),
                        _ => (k.clone(), partial(x)),
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(partial).collect()),
            other => other.clone(),
        }
    }
    let mut full = full;
    let defs = full
        .as_object_mut()
        .and_then(|m| m.remove("$defs"))
        .unwrap_or_else(|| json!({}));
    let mut out = Map::new();
    let mut all_defs = Map::new();
    for (name, def) in defs.as_object().into_iter().flatten() {
        all_defs.insert(name.clone(), def.clone());
        all_defs.insert(format!("Partial{name}"), partial(def));
    }
    let mut body = full.as_object().cloned().unwrap_or_default();
    for key in ["$schema", "title", "description"] {
        if let Some(v) = body.remove(key) {
            out.insert(key.into(), v);
        }
    }
    out.insert("type".into(), json!("object"));
    for key in ["properties", "additionalProperties"] {
        if let Some(v) = body.get(key) {
            out.insert(key.into(), partial(v));
        }
    }
    out.insert("if".into(), json!({"required": ["extends"]}));
    out.insert("else".into(), json!({"$ref": "#/$defs/FullRecipe"}));
    all_defs.insert("FullRecipe".into(), Value::Object(body));
    out.insert("$defs".into(), Value::Object(all_defs));
    Value::Object(out)
}

/// The recipe reference as Markdown, generated from the schema: every key with its type,
/// default and description (`dnarun schema --markdown`).
pub fn reference_markdown() -> String {
    use serde_json::Value;
    let schema = schema();
    fn resolve_in(schema: &Value, v: &Value) -> Value {
        let mut v = v;
        for _ in 0..8 {
            if let Some(r) = v.get("$ref").and_then(Value::as_str) {
                v = schema.pointer(r.trim_start_matches('#')).unwrap_or(v);
            } else if let Some(alts) = v.get("anyOf").and_then(Value::as_array) {
                match alts
                    .iter()
                    .find(|a| a.get("type") != Some(&Value::from("null")))
                {
                    Some(a) => v = a,
                    None => break,
                }
            } else {
                break;
            }
        }
        v.clone()
    }
    let resolve = |v: &Value| resolve_in(&schema, v);
    fn kind(v: &Value) -> String {
        if let Some(e) = v.get("enum").and_then(Value::as_array) {
            return e
                .iter()
                .filter_map(Value::as_str)
                .map(|s| format!("`\"{s}\"`"))
                .collect::<Vec<_>>()
                .join(" \\| ");
        }
        if let Some(alts) = v.get("oneOf").and_then(Value::as_array) {
            return alts
                .iter()
                .filter_map(|a| a.get("const").and_then(Value::as_str))
                .map(|s| format!("`\"{s}\"`"))
                .collect::<Vec<_>>()
                .join(" \\| ");
        }
        match v.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect::<Vec<_>>()
                .join(" or "),
            _ => "table".into(),
        }
    }
    fn walk(resolve: &dyn Fn(&Value) -> Value, node: &Value, prefix: &str, rows: &mut Vec<String>) {
        let node = resolve(node);
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        let required: Vec<&str> = node
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (key, raw) in props {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            let v = resolve(raw);
            let desc = raw
                .get("description")
                .or_else(|| v.get("description"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .replace('\n', " ");
            let default = raw
                .get("default")
                .map(|d| format!("`{d}`"))
                .unwrap_or_else(|| {
                    if required.contains(&key.as_str()) {
                        "required".into()
                    } else {
                        "".into()
                    }
                });
            let is_table = v.get("properties").is_some();
            let items = v.get("items").map(resolve);
            let map = v
                .get("additionalProperties")
                .filter(|a| a.is_object())
                .map(resolve);
            let k = if is_table {
                "table".into()
            } else if let Some(it) = &items {
                if it.get("properties").is_some() {
                    "array of tables".into()
                } else {
                    format!("array of {}", kind(it))
                }
            } else if map.is_some() {
                "table of named tables".into()
            } else {
                kind(&v)
            };
            rows.push(format!("| `{path}` | {k} | {default} | {desc} |"));
            if is_table {
                walk(resolve, &v, &path, rows);
            } else if let Some(it) = items.filter(|i| i.get("properties").is_some()) {
                walk(resolve, &it, &format!("{path}[]"), rows);
            } else if let Some(m) = map {
                walk(resolve, &m, &format!("{path}.<name>"), rows);
            }
        }
    }
    let mut rows = Vec::new();
    walk(&resolve, &schema, "", &mut rows);
    format!(
        "# Recipe reference\n\nGenerated from the recipe types by `dnarun schema --markdown -o docs/recipe.md`; the JSON schema is\n`schemas/recipe.schema.json`.\n\n| key | type | default | description |\n|---|---|---|---|\n{}\n",
        rows.join("\n")
    )
}
