// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The modules of every crate in the workspace import each other without a
//! cycle: each module owns one job, and a job builds only on jobs below it
//! (docs/architecture.md draws the result).
//!
//! A module is a top-level file (`src/x.rs`) or folder (`src/x/`) of a
//! crate's `src/`; its imports are the `crate::` paths in its code (comments
//! left out). Paths to items of the crate root (`main.rs`, `lib.rs`) show as
//! `(root)`; the root's own edges are left out, since it declares every
//! module. Inside a folder module the same holds one level down: its files
//! import each other (`super::x`, `crate::folder::x`) without a cycle, and
//! its `mod.rs` plays the root.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = "(root)";

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments (string contents are kept:
/// `crate::` inside a string literal is rare enough not to matter).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in text.lines() {
        let mut l = line;
        if in_block {
            match l.find("*/") {
                Some(i) => {
                    in_block = false;
                    l = &l[i + 2..];
                }
                None => continue,
            }
        }
        if let Some(i) = l.find("/*") {
            if !l[i..].contains("*/") {
                in_block = true;
            }
            l = &l[..i];
        }
        if let Some(i) = l.find("//") {
            l = &l[..i];
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The first path segment of each `crate::` path, with the names taken
/// through it: `crate::a::B` gives (a, B), `crate::{a::B, c}` gives (a, B)
/// and (c, c).
fn crate_paths(code: &str) -> Vec<(String, String)> {
    prefixed_paths(code, "crate::")
}

/// [`crate_paths`] for any path prefix (`super::`, `crate::device::`).
fn prefixed_paths(code: &str, prefix: &str) -> Vec<(String, String)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `udc_crate::` or similar, not this crate.
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(j, _)| j);
            let mut depth = 0;
            let mut start = 0;
            let inner = &group[..end];
            for (j, c) in inner.char_indices().chain([(inner.len(), ',')]) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let item = inner[start..j].trim();
                        let first = ident(item);
                        if !first.is_empty() {
                            let last = item.rsplit("::").next().map(ident).unwrap_or_default();
                            out.push((first, last));
                        }
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            let first = ident(rest);
            let after = &rest[first.len()..];
            let name = after.strip_prefix("::").map(ident).filter(|n| !n.is_empty());
            out.push((first.clone(), name.unwrap_or(first)));
        }
    }
    out
}

/// Module -> module it imports -> the names it takes.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let module_of = |p: &Path| -> Option<String> {
        let rel = p.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?.to_string();
        if first == "bin" {
            return None; // Binaries are crates of their own.
        }
        let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        Some(if name == "main" || name == "lib" {
            ROOT.into()
        } else {
            name
        })
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|p| module_of(p)).collect();
    let mut g = Graph::new();
    for f in &files {
        let Some(from) = module_of(f) else { continue };
        let text = fs::read_to_string(f).unwrap();
        let edges = g.entry(from.clone()).or_default();
        for (first, name) in crate_paths(&code(&text)) {
            let to = if modules.contains(&first) {
                first
            } else {
                ROOT.into()
            };
            // The root declares and re-exports every module.
            if to != from && from != ROOT {
                edges.entry(to).or_default().insert(name);
            }
        }
    }
    g
}

/// The graph inside folder module `folder` of crate source `src`: its
/// files (`mod.rs` as the root) and their imports of each other.
fn folder_graph(src: &Path, folder: &Path) -> Graph {
    let Ok(entries) = fs::read_dir(folder) else {
        return Graph::new();
    };
    let files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    let stem = |p: &Path| p.file_stem().unwrap().to_string_lossy().to_string();
    let siblings: BTreeSet<String> = files.iter().map(|p| stem(p)).filter(|s| s != "mod").collect();
    let rel = folder.strip_prefix(src).unwrap();
    let crate_prefix = format!("crate::{}::", rel.to_string_lossy().replace('/', "::"));
    let mut g = Graph::new();
    for f in &files {
        let from = stem(f);
        if from == "mod" {
            continue; // It declares and re-exports every file.
        }
        let code = code(&fs::read_to_string(f).unwrap());
        let edges = g.entry(from.clone()).or_default();
        let paths = prefixed_paths(&code, "super::")
            .into_iter()
            .chain(prefixed_paths(&code, &crate_prefix));
        for (first, name) in paths {
            if siblings.contains(&first) && first != from {
                edges.entry(first).or_default().insert(name);
            }
        }
    }
    g
}

/// Every folder module below `src`, at any depth.
fn folders(src: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(src) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "bin") {
            out.push(p.clone());
            folders(&p, out);
        }
    }
}

/// A cycle through the graph, if it has one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        n: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in g.get(n).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(g, next, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        if let Some(c) = visit(g, n, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn workspace_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("src")];
    let mut crates: Vec<PathBuf> = fs::read_dir(root.join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    dirs.extend(crates);
    dirs
}

#[test]
fn no_crate_has_an_import_cycle() {
    let mut failures = Vec::new();
    for src in workspace_sources() {
        let mut inner = Vec::new();
        folders(&src, &mut inner);
        for folder in inner {
            let g = folder_graph(&src, &folder);
            println!("{}:", folder.display());
            for (from, edges) in &g {
                let to: Vec<&str> = edges.keys().map(String::as_str).collect();
                println!("  {from} -> {}", to.join(", "));
            }
            if let Some(c) = find_cycle(&g) {
                failures.push(format!("{}: {}", folder.display(), c.join(" -> ")));
            }
        }
        let g = graph(&src);
        println!("{}:", src.display());
        for (from, edges) in &g {
            let to: Vec<&str> = edges.keys().map(String::as_str).collect();
            println!("  {from} -> {}", to.join(", "));
        }
        if let Some(c) = find_cycle(&g) {
            let why: Vec<String> = c
                .windows(2)
                .map(|w| {
                    let names: Vec<&str> = g[&w[0]][&w[1]].iter().map(String::as_str).collect();
                    format!("{} -> {} ({})", w[0], w[1], names.join(", "))
                })
                .collect();
            failures.push(format!("{}: {}", src.display(), why.join("; ")));
        }
    }
    assert!(failures.is_empty(), "import cycles:\n{}", failures.join("\n"));
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    fs::write(src.join("a.rs"), "use crate::b::X;\n// use crate::c;\n").unwrap();
    fs::create_dir(src.join("b")).unwrap();
    fs::write(src.join("b/mod.rs"), "pub struct X;\nmod inner;\n").unwrap();
    fs::write(src.join("b/inner.rs"), "use crate::{c::{Y, Z}, b::X};\n").unwrap();
    fs::write(src.join("c.rs"), "pub struct Y;\npub struct Z;\n").unwrap();
    let g = graph(src);
    assert_eq!(g["a"].keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(g["b"].keys().collect::<Vec<_>>(), ["c"]);
    assert_eq!(find_cycle(&g), None);
    fs::write(src.join("c.rs"), "pub fn f() { crate::a::g() }\n").unwrap();
    let g = graph(src);
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    // An item of the root shows as the root's.
    fs::write(src.join("c.rs"), "use crate::Args;\n").unwrap();
    let g = graph(src);
    assert_eq!(g["c"][ROOT].iter().collect::<Vec<_>>(), ["Args"]);

    // Inside a folder: files that import each other, by `super::` or by
    // the folder's crate path.
    fs::write(src.join("b/other.rs"), "use super::inner::W;\n").unwrap();
    fs::write(src.join("b/inner.rs"), "pub struct W;\nuse crate::b::other::V;\n").unwrap();
    let g = folder_graph(src, &src.join("b"));
    assert_eq!(
        find_cycle(&g),
        Some(vec!["inner".into(), "other".into(), "inner".into()])
    );
    fs::write(src.join("b/inner.rs"), "pub struct W;\nuse super::X;\n").unwrap();
    assert_eq!(find_cycle(&folder_graph(src, &src.join("b"))), None);
}
