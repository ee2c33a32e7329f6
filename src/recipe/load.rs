//! Loading a recipe: parse each file with `toml` (so every value keeps its span), follow
//! `extends`, layer the files and `DNARUN_*` environment variables with figment, apply `--set`,
//! then check the result against the JSON schema and deserialize it. Every problem found is
//! collected with where it came from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Serialized};
use serde_json::{Map, Value};
use toml::de::{DeTable, DeValue};

use super::diag::{Diagnostic, Diagnostics, Origin, Sources, did_you_mean, display_key};
use super::types::Recipe;

/// The recipe's top-level keys (from the schema): `DNARUN_<KEY>__...` variables name settings
/// under them.
fn top_keys() -> Vec<String> {
    schema()
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().filter(|k| *k != "extends").cloned().collect())
        .unwrap_or_default()
}

/// Where every value and key of the merged recipe came from, by JSON pointer.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    values: HashMap<String, Origin>,
    keys: HashMap<String, Origin>,
}

impl Origins {
    /// The origin of the value at `pointer`, or of its nearest ancestor that has one.
    pub fn value(&self, pointer: &str) -> Option<Origin> {
        let mut p = pointer.to_string();
        loop {
            if let Some(o) = self.values.get(&p) {
                return Some(o.clone());
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => return None,
            }
        }
    }

    /// The origin of the key naming `pointer` (falls back to the value's).
    pub fn key(&self, pointer: &str) -> Option<Origin> {
        self.keys
            .get(pointer)
            .cloned()
            .or_else(|| self.value(pointer))
    }
}

/// A recipe read and checked against the schema, with everything needed to point at its text.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The typed recipe.
    pub recipe: Recipe,
    /// The merged recipe as JSON (what the schema saw; what the lock file records).
    pub value: Value,
    /// Where each value came from.
    pub origins: Origins,
    /// The texts origins point into.
    pub sources: Sources,
    /// The recipe file.
    pub path: PathBuf,
    /// Directory relative paths in the recipe are resolved against: the recipe's own, or for a
    /// lock file the one recorded in it (when it still exists).
    pub base: PathBuf,
}

impl Loaded {
    /// Directory relative paths in the recipe are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.base.clone()
    }

    /// Wraps diagnostics with this recipe's sources.
    pub fn diagnostics(&self, items: Vec<Diagnostic>) -> Diagnostics {
        Diagnostics {
            items,
            sources: self.sources.clone(),
        }
    }
}

/// What besides the file goes into a recipe.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `path.to.key=value` assignments, applied last, in order.
    pub sets: Vec<String>,
    /// Read `DNARUN_<SECTION>__<KEY>` variables from the environment.
    pub env: bool,
}

/// Loads, layers and checks a recipe. Returns every problem at once.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Loaded, Diagnostics> {
    load_partial(path, overrides).map_err(|(d, _)| d)
}

/// [`load`], and where the schema rejects values, also the recipe with those values dropped
/// (their defaults in their place) when it then fits its types: the semantic checks run on
/// whatever parsed, so one `validate` reports every problem it can.
pub fn load_partial(
    path: &Path,
    overrides: &Overrides,
) -> Result<Loaded, (Diagnostics, Option<Box<Loaded>>)> {
    let fail = |items, sources| (Diagnostics { items, sources }, None);
    let mut sources = Sources::default();
    let mut origins = Origins::default();
    let mut diags = Vec::new();

    let mut chain = Vec::new();
    let mut base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    read_chain(
        path,
        None,
        &mut chain,
        &mut sources,
        &mut origins,
        &mut diags,
        0,
        &mut base,
    );
    if !diags.is_empty() {
        return Err(fail(diags, sources));
    }

    // Layer the files (base first) and the environment with figment.
    let mut figment = Figment::new();
    for layer in &chain {
        figment = figment.merge(Serialized::defaults(layer));
    }
    if overrides.env {
        figment = figment.merge(env_provider());
        for (var, _) in std::env::vars() {
            if let Some(pointer) = env_pointer(&var) {
                origins
                    .values
                    .insert(pointer.clone(), Origin::Env(var.clone()));
                origins.keys.insert(pointer, Origin::Env(var));
            }
        }
    }
    let mut value: Value = match figment.extract() {
        Ok(v) => v,
        Err(e) => {
            diags.push(Diagnostic::new(format!(
                "the recipe layers could not be merged: {e}"
            )));
            return Err(fail(diags, sources));
        }
    };
    if let Value::Object(map) = &mut value {
        map.remove("extends");
    }

    for set in &overrides.sets {
        if let Err(d) = apply_set(&mut value, set, &mut sources, &mut origins) {
            diags.push(d);
        }
    }

    let set_failed = !diags.is_empty();
    let mut rejected = schema_diagnostics(&value, &origins);
    if overrides.env {
        rejected.extend(env_problems(std::env::vars().map(|(k, _)| k)));
    }
    point_at_the_end(&mut rejected, &sources);
    if !rejected.is_empty() || set_failed {
        let partial = (!set_failed)
            .then(|| without_rejected(&value))
            .flatten()
            .and_then(|v| {
                let recipe = serde_json::from_value::<Recipe>(v.clone()).ok()?;
                Some(Box::new(Loaded {
                    recipe,
                    value: v,
                    origins: origins.clone(),
                    sources: sources.clone(),
                    path: path.to_path_buf(),
                    base: base.clone(),
                }))
            });
        diags.extend(rejected);
        return Err((
            Diagnostics {
                items: diags,
                sources,
            },
            partial,
        ));
    }
    let recipe: Recipe = match serde_json::from_value(value.clone()) {
        Ok(r) => r,
        Err(e) => {
            // The schema and the types agree (a test checks it); this is the backstop.
            let d = Diagnostic::new(format!("the recipe does not fit its types: {e}"))
                .at(origins.value(""));
            return Err(fail(vec![d], sources));
        }
    };
    Ok(Loaded {
        recipe,
        value,
        origins,
        sources,
        path: path.to_path_buf(),
        base,
    })
}

/// A key missing from the top of the recipe has no table to point at: its diagnostic points at
/// the end of the recipe file, where a new table would go.
fn point_at_the_end(diags: &mut [Diagnostic], sources: &Sources) {
    if let Some((source, end)) = sources
        .0
        .iter()
        .position(|s| s.name != "--set")
        .map(|i| (i, end_of(&sources.0[i].text)))
    {
        for d in diags.iter_mut().filter(|d| d.origin.is_none()) {
            d.origin = Some(Origin::Span {
                source,
                span: end.clone(),
            });
        }
    }
}

fn env_provider() -> Env {
    let top = top_keys();
    Env::prefixed("DNARUN_")
        .filter(move |k| {
            let k = k.as_str().to_ascii_lowercase();
            k.contains("__") && top.iter().any(|t| k.split("__").next() == Some(t))
        })
        .split("__")
}

fn env_pointer(var: &str) -> Option<String> {
    let rest = var.strip_prefix("DNARUN_")?.to_ascii_lowercase();
    let first = rest.split("__").next()?;
    if !rest.contains("__") || !top_keys().iter().any(|t| t == first) {
        return None;
    }
    Some(
        rest.split("__")
            .fold(String::new(), |acc, p| format!("{acc}/{p}")),
    )
}

/// `DNARUN_*` variables that look like recipe settings but set none: a section the recipe does
/// not have (`DNARUN_DISTIL__EPOCHS`), or keys joined by one underscore
/// (`DNARUN_DISTILL_EPOCHS`). Other `DNARUN_*` variables (`DNARUN_LOG`) are not settings.
/// (Keys inside a section are checked by the schema like any other key.)
pub(crate) fn env_problems(vars: impl Iterator<Item = String>) -> Vec<Diagnostic> {
    let top = top_keys();
    let mut out = Vec::new();
    for var in vars {
        let Some(rest) = var.strip_prefix("DNARUN_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let joined = |section: &str, rest: &str| {
            format!("DNARUN_{}__{}", section.to_ascii_uppercase(), rest)
        };
        if let Some((section, keys)) = lower.split_once("__") {
            if top.iter().any(|t| t == section) {
                continue;
            }
            let help = match did_you_mean(section, top.iter().map(String::as_str)) {
                Some(near) => format!(
                    "did you mean `{}`? (the sections are {})",
                    joined(near, &keys.to_ascii_uppercase()),
                    top.join(", ")
                ),
                None => format!("the recipe's sections are {}", top.join(", ")),
            };
            out.push(
                Diagnostic::new(format!(
                    "the environment variable `{var}` sets no recipe key: the recipe has no section `{section}`"
                ))
                .at(Some(Origin::Env(var.clone())))
                .help(help),
            );
        } else if let Some((section, keys)) = lower.split_once('_')
            && top.iter().any(|t| t == section)
        {
            out.push(
                Diagnostic::new(format!(
                    "the environment variable `{var}` sets no recipe key: keys are joined by two underscores"
                ))
                .at(Some(Origin::Env(var.clone())))
                .help(format!(
                    "join the section and each key with `__`, as in `{}`",
                    joined(section, &keys.to_ascii_uppercase())
                )),
            );
        }
    }
    out
}

/// Reads a recipe file and, first, the files it extends. Each layer is pushed base first.
#[allow(clippy::too_many_arguments)]
fn read_chain(
    path: &Path,
    from: Option<Origin>,
    chain: &mut Vec<Value>,
    sources: &mut Sources,
    origins: &mut Origins,
    diags: &mut Vec<Diagnostic>,
    depth: usize,
    base: &mut PathBuf,
) {
    if depth > 8 {
        diags.push(
            Diagnostic::new(format!(
                "`extends` goes more than 8 files deep at `{}`; is there a cycle?",
                path.display()
            ))
            .at(from),
        );
        return;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let msg = match &from {
                None => format!("cannot read the recipe `{}`: {e}", path.display()),
                Some(_) => format!(
                    "`extends` names `{}`, which cannot be read: {e}",
                    path.display()
                ),
            };
            let help = match (&from, similar_file(path)) {
                (None, Some(other)) => format!("did you mean `{}`?", other.display()),
                (Some(_), Some(other)) => format!(
                    "did you mean `{}` (beside it)?",
                    other.file_name().unwrap_or_default().to_string_lossy()
                ),
                (None, None) => "check the path (relative to the current directory)".into(),
                (Some(_), None) => {
                    "check the path; `extends` is relative to the file that contains it".into()
                }
            };
            diags.push(Diagnostic::new(msg).at(from).help(help));
            return;
        }
    };
    let source = sources.add(path.display().to_string(), text.clone());
    let (table, errors) = DeTable::parse_recoverable(&text);
    if !errors.is_empty() {
        for e in errors {
            diags.push(
                Diagnostic::new(format!("TOML syntax error: {}", e.message().trim_end()))
                    .at(e.span().map(|span| Origin::Span { source, span })),
            );
        }
        return;
    }
    let mut layer_origins = Origins::default();
    // A lock file holds the resolved recipe under `[recipe]` and what else the run used under
    // `[lock]`; its relative paths resolve against the recorded recipe directory.
    let lock = (depth == 0).then(|| (table.get_ref().get("lock"), table.get_ref().get("recipe")));
    let table_ref = match lock {
        Some((Some(info), Some(recipe))) if recipe.get_ref().is_table() => {
            if let Some(dir) = info
                .get_ref()
                .get("recipe_dir")
                .and_then(|d| d.get_ref().as_str())
                && Path::new(dir).is_dir()
            {
                *base = PathBuf::from(dir);
            }
            recipe.get_ref().as_table().expect("a table")
        }
        _ => table.get_ref(),
    };
    let value = table_to_json(table_ref, "", source, &mut layer_origins, diags);
    if let Some(ext) = table_ref.get("extends") {
        let origin = Origin::Span {
            source,
            span: ext.span(),
        };
        match ext.get_ref().as_str() {
            Some(rel) => {
                let base_path = path.parent().unwrap_or(Path::new("")).join(rel);
                let mut ignored = PathBuf::new();
                read_chain(
                    &base_path,
                    Some(origin),
                    chain,
                    sources,
                    origins,
                    diags,
                    depth + 1,
                    &mut ignored,
                );
            }
            None => diags.push(
                Diagnostic::new("`extends` must be a string path to a base recipe")
                    .at(Some(origin)),
            ),
        }
    }
    origins.values.extend(layer_origins.values);
    origins.keys.extend(layer_origins.keys);
    chain.push(value);
}

fn table_to_json(
    table: &DeTable<'_>,
    pointer: &str,
    source: usize,
    origins: &mut Origins,
    diags: &mut Vec<Diagnostic>,
) -> Value {
    let mut map = Map::new();
    for (key, value) in table.iter() {
        let p = format!("{pointer}/{}", escape(key.get_ref()));
        origins.keys.insert(
            p.clone(),
            Origin::Span {
                source,
                span: key.span(),
            },
        );
        origins.values.insert(
            p.clone(),
            Origin::Span {
                source,
                span: value.span(),
            },
        );
        let v = to_json(value.get_ref(), &p, source, origins, diags);
        map.insert(key.get_ref().to_string(), v);
    }
    Value::Object(map)
}

fn to_json(
    value: &DeValue<'_>,
    pointer: &str,
    source: usize,
    origins: &mut Origins,
    diags: &mut Vec<Diagnostic>,
) -> Value {
    match value {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let (neg, digits) = match digits.strip_prefix('-') {
                Some(d) => (true, d.to_string()),
                None => (false, digits.trim_start_matches('+').to_string()),
            };
            let digits = match i.radix() {
                16 => digits.trim_start_matches("0x").to_string(),
                8 => digits.trim_start_matches("0o").to_string(),
                2 => digits.trim_start_matches("0b").to_string(),
                _ => digits,
            };
            match i64::from_str_radix(&digits, i.radix()) {
                Ok(n) => Value::from(if neg { -n } else { n }),
                Err(_) => match u64::from_str_radix(&digits, i.radix()) {
                    Ok(n) if !neg => Value::from(n),
                    _ => {
                        diags.push(
                            Diagnostic::new(format!(
                                "`{}` is an integer too large to use",
                                display_key(pointer)
                            ))
                            .at(origins.value(pointer)),
                        );
                        Value::Null
                    }
                },
            }
        }
        DeValue::Float(f) => match f.as_str().replace('_', "").parse::<f64>() {
            Ok(x) if x.is_finite() => Value::from(x),
            _ => {
                diags.push(
                    Diagnostic::new(format!(
                        "`{}` must be a finite number, found `{}`",
                        display_key(pointer),
                        f.as_str()
                    ))
                    .at(origins.value(pointer)),
                );
                Value::Null
            }
        },
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let p = format!("{pointer}/{i}");
                    origins.values.insert(
                        p.clone(),
                        Origin::Span {
                            source,
                            span: item.span(),
                        },
                    );
                    to_json(item.get_ref(), &p, source, origins, diags)
                })
                .collect(),
        ),
        DeValue::Table(t) => table_to_json(t, pointer, source, origins, diags),
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Applies one `--set path.to.key=value`. The value is read as TOML (`3`, `0.1`, `true`,
/// `[1, 2]`, `"text"`); anything that is not valid TOML is taken as a string.
fn apply_set(
    root: &mut Value,
    set: &str,
    sources: &mut Sources,
    origins: &mut Origins,
) -> Result<(), Diagnostic> {
    let arg = format!("--set {set}");
    let source = sources.add("--set", arg.clone());
    let whole = Origin::Span {
        source,
        span: 6..arg.len(),
    };
    let Some((path, raw)) = set.split_once('=') else {
        return Err(Diagnostic::new(format!("`--set {set}` has no `=`"))
            .at(Some(whole))
            .help("write `--set path.to.key=value`, e.g. `--set distill.epochs=2`"));
    };
    let path = path.trim();
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(
            Diagnostic::new(format!("`--set {set}` has an empty key path"))
                .at(Some(whole))
                .help("write `--set path.to.key=value`, e.g. `--set blocks.0.cells.1.layers=3`"),
        );
    }
    let value_start = 6 + set.find('=').unwrap() + 1;
    let value_origin = Origin::Span {
        source,
        span: value_start..arg.len(),
    };
    let doc = format!("v = {raw}");
    let value = match DeTable::parse(&doc) {
        Ok(t) => {
            let mut scratch = Origins::default();
            let mut d = Vec::new();
            let v = t
                .get_ref()
                .get("v")
                .map(|v| to_json(v.get_ref(), "", 0, &mut scratch, &mut d));
            match v {
                Some(v) if d.is_empty() => v,
                _ => Value::String(raw.to_string()),
            }
        }
        Err(_) => Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = path.split('.').collect();
    let mut pointer = String::new();
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        pointer.push('/');
        pointer.push_str(&escape(part));
        node = match node {
            Value::Object(map) => {
                if last {
                    map.insert(part.to_string(), value);
                    break;
                }
                map.entry(part.to_string())
                    .or_insert_with(|| Value::Object(Map::new()))
            }
            Value::Array(items) => {
                let len = items.len();
                let Some(item) = part
                    .parse::<usize>()
                    .ok()
                    .and_then(|idx| items.get_mut(idx))
                else {
                    return Err(Diagnostic::new(format!(
                        "`--set {set}`: `{}` has {len} entries, so `{part}` is not an index of it",
                        display_key(pointer.rsplit_once('/').map(|p| p.0).unwrap_or(""))
                    ))
                    .at(Some(whole))
                    .help(format!("use an index from 0 to {}", len.saturating_sub(1))));
                };
                if last {
                    *item = value;
                    break;
                }
                item
            }
            _ => {
                return Err(Diagnostic::new(format!(
                    "`--set {set}`: `{}` is not a table, so it has no key `{part}`",
                    display_key(pointer.rsplit_once('/').map(|p| p.0).unwrap_or(""))
                ))
                .at(Some(whole)));
            }
        };
    }
    origins.values.insert(pointer.clone(), value_origin);
    origins.keys.insert(pointer, whole);
    Ok(())
}

/// The recipe's JSON schema, generated from the types.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Recipe)).expect("a schema is JSON")
}

/// The schema node that describes the value at `pointer`, following `$ref`s.
fn schema_at<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut node = resolve(root, root);
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        node = resolve(root, node);
        let next = node
            .get("properties")
            .and_then(|p| p.get(part))
            .or_else(|| node.get("items").filter(|_| part.parse::<usize>().is_ok()))
            .or_else(|| {
                node.get("prefixItems")
                    .and_then(|p| part.parse::<usize>().ok().and_then(|i| p.get(i)))
            })
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))
            .or_else(|| {
                // Option<T> is `anyOf: [T, null]` when T is a reference.
                node.get("anyOf")?.as_array()?.iter().find_map(|alt| {
                    let alt = resolve(root, alt);
                    alt.get("properties").and_then(|p| p.get(part))
                })
            })?;
        node = next;
    }
    Some(resolve(root, node))
}

fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(n) => node = n,
                None => return node,
            }
        } else if let Some(any) = node.get("anyOf").and_then(Value::as_array) {
            // Option<Struct>: look through to the non-null alternative.
            let non_null: Vec<&Value> = any
                .iter()
                .filter(|a| a.get("type") != Some(&Value::from("null")))
                .collect();
            if non_null.len() == 1 {
                node = non_null[0];
            } else {
                return node;
            }
        } else {
            return node;
        }
    }
    node
}

/// A file beside a missing `path` whose name is a likely misspelling of its name (a recipe
/// typed `quickstrat.toml`): at most 2 edits, and at most a third of the name. Returned as
/// `path` with that name.
fn similar_file(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    std::fs::read_dir(dir.unwrap_or(Path::new(".")))
        .ok()?
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|other| (strsim::damerau_levenshtein(name, &other), other))
        .filter(|(d, _)| *d <= 2 && 3 * d <= name.chars().count())
        .min()
        .map(|(_, other)| path.with_file_name(other))
}

fn json_kind(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("the boolean `{b}`"),
        Value::Number(n) if n.is_i64() || n.is_u64() => format!("the integer `{n}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) => format!("the string `\"{s}\"`"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "a table".into(),
    }
}

fn expected_kind(node: &Value) -> String {
    let one = |t: &str| match t {
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "boolean" => "a boolean (`true` or `false`)",
        "array" => "an array",
        "object" => "a table",
        "null" => "absent",
        _ => "a value",
    };
    match node.get("type") {
        Some(Value::String(t)) => one(t).into(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .map(one)
            .collect::<Vec<_>>()
            .join(" or "),
        _ if node.get("enum").is_some() || node.get("oneOf").is_some() => {
            "one of the names listed".into()
        }
        _ => "a valid value".into(),
    }
}

fn enum_options(node: &Value) -> Vec<String> {
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
    }
    node.get("oneOf")
        .and_then(Value::as_array)
        .map(|alts| {
            alts.iter()
                .filter_map(|a| a.get("const").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Keys earlier versions read, and what replaced them.
const REMOVED: [(&str, &str); 1] = [(
    "/study/reuse",
    "`study.reuse` was removed: the stage cache takes an earlier study's retrained nets by itself when they are the same nets (same architecture, retraining settings, images and seed); delete the line",
)];

/// One diagnostic per unknown key under `pointer`, with a "did you mean" or the allowed keys;
/// the suggested pointers are added to `suggested`.
fn unknown_keys<'a>(
    pointer: &str,
    unexpected: impl Iterator<Item = &'a str>,
    node: Option<&Value>,
    origins: &Origins,
    suggested: &mut Vec<String>,
) -> Vec<Diagnostic> {
    let allowed: Vec<&str> = node
        .and_then(|n| n.get("properties"))
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for name in unexpected {
        let p = format!("{pointer}/{}", escape(name));
        let d = Diagnostic::new(format!("unknown key `{}`", display_key(&p))).at(origins.key(&p));
        if let Some(why) = REMOVED.iter().find(|(k, _)| *k == p).map(|(_, w)| w) {
            out.push(d.help(*why));
            continue;
        }
        out.push(match did_you_mean(name, allowed.iter().copied()) {
            Some(s) => {
                suggested.push(format!("{pointer}/{s}"));
                d.help(format!("did you mean `{s}`?"))
            }
            None => d.help(format!(
                "the keys allowed here are: {}",
                allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        });
    }
    out
}

/// "`key` must be <what the schema allows>, found <what it is>", with a "did you mean".
fn mismatch(key: &str, node: Option<&Value>, instance: &Value) -> Diagnostic {
    let options = node.map(enum_options).unwrap_or_default();
    let expected = if options.is_empty() {
        node.map(expected_kind)
            .unwrap_or_else(|| "a valid value".into())
    } else {
        format!(
            "one of {}",
            options
                .iter()
                .map(|o| format!("`\"{o}\"`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut d = Diagnostic::new(format!(
        "`{key}` must be {expected}, found {}",
        json_kind(instance)
    ));
    if let Some(found) = instance.as_str()
        && let Some(s) = did_you_mean(found, options.iter().map(String::as_str))
    {
        d = d.help(format!("did you mean `\"{s}\"`?"));
    }
    d
}

/// The recipe without the values the schema rejects (unknown keys, values of the wrong kind or
/// out of range), so that their defaults apply; `None` when a rejection cannot be dropped (a
/// missing key, a bad array element, the whole recipe).
fn without_rejected(value: &Value) -> Option<Value> {
    use jsonschema::error::ValidationErrorKind as K;
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).ok()?;
    let mut drop: Vec<String> = Vec::new();
    for err in validator.iter_errors(value) {
        let pointer = err.instance_path.as_str().to_string();
        match &err.kind {
            K::AdditionalProperties { unexpected } => drop.extend(
                unexpected
                    .iter()
                    .map(|k| format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"))),
            ),
            K::Required { .. } => return None,
            _ => drop.push(pointer),
        }
    }
    let mut v = value.clone();
    for p in drop {
        let (parent, key) = p.rsplit_once('/')?;
        let key = key.replace("~1", "/").replace("~0", "~");
        match v.pointer_mut(parent) {
            Some(Value::Object(m)) => {
                m.remove(&key);
            }
            _ => return None,
        }
    }
    validator.is_valid(&v).then_some(v)
}

/// The empty span just after a text's last character (trailing whitespace left out).
fn end_of(text: &str) -> std::ops::Range<usize> {
    let end = text.trim_end().len();
    end..end
}

/// Checks the merged recipe against the schema; one diagnostic per problem.
pub fn schema_diagnostics(value: &Value, origins: &Origins) -> Vec<Diagnostic> {
    use jsonschema::error::ValidationErrorKind as K;
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("the generated schema is valid");
    let mut out: Vec<Diagnostic> = Vec::new();
    // A misspelt required key shows up twice (unknown + missing): report it once, as unknown.
    let mut suggested: Vec<String> = Vec::new();
    let mut missing: Vec<(String, Diagnostic)> = Vec::new();
    let mut queue: std::collections::VecDeque<jsonschema::ValidationError<'static>> =
        validator.iter_errors(value).map(|e| e.to_owned()).collect();
    while let Some(err) = queue.pop_front() {
        let pointer = err.instance_path.as_str().to_string();
        // A value of the right kind that fails inside (an optional table with a bad key): report
        // the innermost problems, with their own expected and found, instead of "must be a table".
        let inner = match &err.kind {
            K::AnyOf { context } | K::OneOfNotValid { context } => context.iter().position(|b| {
                !b.is_empty()
                    && b.iter()
                        .all(|e| e.instance_path.as_str().len() > pointer.len())
            }),
            _ => None,
        };
        if let Some(i) = inner {
            if let K::AnyOf { context } | K::OneOfNotValid { context } = err.kind {
                for e in context.into_iter().nth(i).into_iter().flatten().rev() {
                    queue.push_front(e);
                }
            }
            continue;
        }
        let key = display_key(&pointer);
        let node = schema_at(&schema, &pointer);
        let d = match &err.kind {
            K::AdditionalProperties { unexpected } => {
                let names = unexpected.iter().map(String::as_str);
                out.extend(unknown_keys(&pointer, names, node, origins, &mut suggested));
                continue;
            }
            K::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                let p = format!("{pointer}/{name}");
                let desc = schema_at(&schema, &p)
                    .and_then(|n| n.get("description"))
                    .and_then(Value::as_str)
                    .map(|d| d.lines().next().unwrap_or("").to_string());
                let mut d = Diagnostic::new(format!("missing key `{}`", display_key(&p)))
                    .at(origins.value(&pointer));
                let table = schema_at(&schema, &p).is_some_and(|n| {
                    n.get("type").and_then(Value::as_str) == Some("object")
                        || n.get("$ref").is_some()
                });
                let what = if table && pointer.is_empty() {
                    format!("a `[{name}]` table (at the end of the file, say)")
                } else {
                    format!("`{name}`")
                };
                d = d.help(match desc {
                    Some(desc) => format!("add {what}: {desc}"),
                    None => format!("add {what}"),
                });
                missing.push((p, d));
                continue;
            }
            K::Enum { .. } => {
                let options = node.map(enum_options).unwrap_or_default();
                let found = err.instance.as_str().unwrap_or_default().to_string();
                let mut d = Diagnostic::new(format!(
                    "`{key}` must be one of {}, found {}",
                    options
                        .iter()
                        .map(|o| format!("`\"{o}\"`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    json_kind(&err.instance)
                ))
                .at(origins.value(&pointer));
                if let Some(s) = did_you_mean(&found, options.iter().map(String::as_str)) {
                    d = d.help(format!("did you mean `\"{s}\"`?"));
                }
                d
            }
            K::Type { .. } | K::OneOfNotValid { .. } | K::AnyOf { .. } => {
                mismatch(&key, node, &err.instance).at(origins.value(&pointer))
            }
            K::Minimum { limit } => Diagnostic::new(format!(
                "`{key}` must be at least {limit}, found {}",
                err.instance
            ))
            .at(origins.value(&pointer)),
            K::Maximum { limit } => Diagnostic::new(format!(
                "`{key}` must be at most {limit}, found {}",
                err.instance
            ))
            .at(origins.value(&pointer)),
            K::MinItems { limit } | K::MaxItems { limit } => Diagnostic::new(format!(
                "`{key}` must have exactly {limit} entries, found {}",
                err.instance.as_array().map(Vec::len).unwrap_or(0)
            ))
            .at(origins.value(&pointer)),
            _ => Diagnostic::new(format!("`{key}`: {err}")).at(origins.value(&pointer)),
        };
        if !out.contains(&d) {
            out.push(d);
        }
    }
    for (p, d) in missing {
        if !suggested.contains(&p) && !out.contains(&d) {
            out.push(d);
        }
    }
    out
}
