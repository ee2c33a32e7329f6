//! The house is what docs/architecture.md says: its table of rooms ("may import") is read from
//! the document, and every `crate::`, `super::` (and in `main.rs`, `dnarun::`) path in `src/` is
//! checked against it. Also: no import cycle between rooms, no two files importing each other,
//! and every room of `src/` in the table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Room -> the rooms it may import, from the document's table.
fn rules(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let start = doc
        .find("## Who may import whom")
        .expect("docs/architecture.md has a `## Who may import whom` section");
    let mut out = BTreeMap::new();
    for line in doc[start..].lines().skip(1) {
        if line.starts_with("## ") {
            break;
        }
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        if !line.trim_start().starts_with('|') || cells.len() < 3 {
            continue;
        }
        let room = cells[0].trim().trim_matches('`');
        if room == "room" || room.starts_with("---") {
            continue;
        }
        let room = room
            .trim_end_matches('/')
            .trim_end_matches(".rs")
            .to_string();
        let allowed = cells[cells.len() - 1]
            .split(',')
            .map(|s| s.trim().trim_matches('`').to_string())
            .filter(|s| !s.is_empty() && s != "nothing")
            .collect();
        out.insert(room, allowed);
    }
    assert!(!out.is_empty(), "the table of rooms is empty");
    out
}

/// Comments, string and char literals blanked, `#[cfg(test)] mod tests { ... }` dropped.
fn code_of(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'r'
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            && (b[i + 1..].starts_with(b"\"") || b[i + 1..].starts_with(b"#"))
        {
            // A raw string: `r"..."`, `r#"..."#`, ...
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + 2 + hashes;
            i = text[body..]
                .find(&close)
                .map_or(b.len(), |e| body + e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal (not a lifetime).
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    match out.find("#[cfg(test)]\nmod tests") {
        Some(at) => out[..at].to_string(),
        None => out,
    }
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The module path of a file: `src/a/b.rs` -> [a, b]; `src/a/mod.rs` -> [a]; `src/main.rs` ->
/// [main] (the binary, its own room); `src/lib.rs` -> [].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The module paths a file's code names: `crate::a::b`, `crate::{a, b::c}`, `super::x`,
/// and for the binary `dnarun::a`. Each as an absolute path from the crate root.
fn imports(code: &str, me: &[String]) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    let is_boundary = |at: usize| {
        at == 0 || {
            let c = code.as_bytes()[at - 1];
            !(c.is_ascii_alphanumeric() || c == b'_' || c == b':')
        }
    };
    for root in ["crate::", "dnarun::"] {
        if root == "dnarun::" && me != ["main"] {
            continue;
        }
        for (at, _) in code.match_indices(root) {
            if !is_boundary(at) {
                continue;
            }
            let rest = &code[at + root.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let body = &group[..group.find("};").or_else(|| group.find('}')).unwrap_or(0)];
                for part in body.split(',') {
                    if let Some(head) = ident_at(part.trim().trim_start_matches('{')) {
                        out.insert(vec![head.to_string()]);
                    }
                }
            } else if let Some(a) = ident_at(rest) {
                let mut path = vec![a.to_string()];
                if let Some(b) = rest[a.len()..].strip_prefix("::").and_then(ident_at) {
                    path.push(b.to_string());
                }
                out.insert(path);
            }
        }
    }
    // `super` is relative to the module the file is (a `mod.rs` is its folder's module).
    for (at, _) in code.match_indices("super::") {
        if !is_boundary(at) {
            continue;
        }
        let mut rest = &code[at..];
        let mut ups = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            ups += 1;
            rest = r;
        }
        let mut base: Vec<String> = me[..me.len().saturating_sub(ups)].to_vec();
        if let Some(a) = ident_at(rest) {
            base.push(a.to_string());
        } else if let Some(group) = rest.strip_prefix('{') {
            for part in group[..group.find('}').unwrap_or(0)].split(',') {
                if let Some(head) = ident_at(part.trim()) {
                    let mut p = base.clone();
                    p.push(head.to_string());
                    out.insert(p);
                }
            }
            continue;
        }
        out.insert(base);
    }
    out
}

struct House {
    /// Room -> the rooms its code imports, with a file that does for each.
    rooms: BTreeMap<String, BTreeMap<String, PathBuf>>,
    /// File -> the files (modules) it imports.
    files: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    /// Every room of `src/`.
    all: BTreeSet<String>,
}

fn house(src: &Path) -> House {
    let files_list = files(src);
    let known: BTreeMap<Vec<String>, PathBuf> = files_list
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let mut h = House {
        rooms: BTreeMap::new(),
        files: BTreeMap::new(),
        all: BTreeSet::new(),
    };
    for f in &files_list {
        let me = module_of(src, f);
        let Some(room) = me.first().cloned() else {
            continue; // lib.rs: module declarations only
        };
        h.all.insert(room.clone());
        let code = code_of(&std::fs::read_to_string(f).unwrap());
        for path in imports(&code, &me) {
            let Some(top) = path.first() else { continue };
            if top != &room && known.keys().any(|k| k.first() == Some(top)) {
                h.rooms
                    .entry(room.clone())
                    .or_default()
                    .entry(top.clone())
                    .or_insert_with(|| f.clone());
            }
            // The file it names: the longest known module prefix.
            for n in (1..=path.len()).rev() {
                if let Some(target) = known.get(&path[..n]) {
                    if target != f {
                        h.files.entry(f.clone()).or_default().insert(target.clone());
                    }
                    break;
                }
            }
        }
    }
    h
}

/// The cycles of a directed graph, as sorted lists of nodes (strongly connected components
/// with more than one node).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges
        .keys()
        .chain(edges.values().flat_map(|s| s.iter()))
        .collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: BTreeSet<Vec<String>> = BTreeSet::new();
    for n in &nodes {
        let mut comp: Vec<String> = nodes
            .iter()
            .filter(|m| reaches[*n].contains(**m) && reaches[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        if comp.len() > 1 {
            comp.sort();
            out.insert(comp);
        }
    }
    out.into_iter().collect()
}

fn check(src: &Path, doc: &str) -> Vec<String> {
    let allowed = rules(doc);
    let h = house(src);
    let mut problems = Vec::new();
    for room in &h.all {
        if !allowed.contains_key(room) {
            problems.push(format!(
                "room `{room}` is not in the table of docs/architecture.md; add its row"
            ));
        }
    }
    for room in allowed.keys() {
        if !h.all.contains(room) {
            problems.push(format!(
                "the table of docs/architecture.md names `{room}`, which is not a room of src/"
            ));
        }
    }
    for (room, targets) in &h.rooms {
        let ok = allowed.get(room).cloned().unwrap_or_default();
        for (target, file) in targets {
            if !ok.contains(target) {
                problems.push(format!(
                    "`{}` imports `{target}`, which docs/architecture.md does not allow room `{room}` (it may import: {})",
                    file.display(),
                    if ok.is_empty() { "nothing".to_string() } else { ok.iter().cloned().collect::<Vec<_>>().join(", ") }
                ));
            }
        }
    }
    let graph: BTreeMap<String, BTreeSet<String>> = h
        .rooms
        .iter()
        .map(|(r, t)| (r.clone(), t.keys().cloned().collect()))
        .collect();
    for c in cycles(&graph) {
        problems.push(format!("import cycle between rooms: {}", c.join(", ")));
    }
    for c in cycles(&allowed) {
        problems.push(format!(
            "the table allows a cycle between rooms: {}",
            c.join(", ")
        ));
    }
    for (a, targets) in &h.files {
        for b in targets {
            if a < b && h.files.get(b).is_some_and(|t| t.contains(a)) {
                problems.push(format!(
                    "`{}` and `{}` import each other",
                    a.display(),
                    b.display()
                ));
            }
        }
    }
    problems
}

#[test]
fn the_code_keeps_the_rules_of_docs_architecture_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let problems = check(&root.join("src"), &doc);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The check can fail: a copy of `src/` with one forbidden import, one pair of files importing
/// each other, and one room missing from the table is refused for each.
#[test]
fn the_architecture_check_catches_what_it_forbids() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let tmp = std::env::temp_dir().join(format!("dnarun-architecture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let copy = |from: &Path, to: &Path| {
        for f in files(from) {
            let dest = to.join(f.strip_prefix(from).unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&f, dest).unwrap();
        }
    };
    copy(&root.join("src"), &tmp);
    assert!(check(&tmp, &doc).is_empty(), "the copy passes as src/ does");

    // The problems `check` finds with one file of the copy edited; the file is restored after.
    let with_edit = |file: &str, edit: &dyn Fn(&str) -> String| {
        let f = tmp.join(file);
        let text = std::fs::read_to_string(&f).unwrap();
        std::fs::write(&f, edit(&text)).unwrap();
        let problems = check(&tmp, &doc);
        std::fs::write(&f, &text).unwrap();
        problems
    };

    // space/ may import nothing: a path to the plan is refused.
    let p = with_edit("space/search.rs", &|t| {
        format!("use crate::plan::Plan;\n{t}")
    });
    assert!(
        p.iter()
            .any(|m| m.contains("space/search.rs") && m.contains("imports `plan`")),
        "{p:?}"
    );

    // A lower room naming the edge: refused, and a cycle.
    let p = with_edit("rundir/files.rs", &|t| {
        format!("{t}\nfn edge(_: crate::run::RunError) {{}}\n")
    });
    assert!(p.iter().any(|m| m.contains("imports `run`")), "{p:?}");
    assert!(p.iter().any(|m| m.starts_with("import cycle")), "{p:?}");

    // Two files of one room importing each other (preprocess.rs already imports images.rs).
    let p = with_edit("data/images.rs", &|t| {
        format!("use super::preprocess::Preprocess;\n{t}")
    });
    assert!(
        p.iter()
            .any(|m| m.contains("import each other") && m.contains("images.rs")),
        "{p:?}"
    );

    // A room the table does not know.
    std::fs::write(tmp.join("extra.rs"), "pub fn f() {}\n").unwrap();
    let p = check(&tmp, &doc);
    assert!(p.iter().any(|m| m.contains("room `extra`")), "{p:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}
