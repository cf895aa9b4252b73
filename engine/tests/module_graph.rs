//! The engine's modules depend on each other in one direction: no module circle. Each
//! file names what it uses by module path (`crate::coordinator::Coordinator`), never
//! through the root's re-exports, so the graph read here is the real one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file belongs to (`catalog` for `catalog/load.rs`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative
        .components()
        .next()
        .expect("a path")
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::<module>` a file's code (not its comments) names.
fn uses(text: &str) -> (BTreeSet<String>, Vec<String>) {
    let mut modules = BTreeSet::new();
    let mut through_root = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '{')
                .collect();
            if name.starts_with('{') || name.starts_with(|c: char| c.is_uppercase()) {
                through_root.push(line.trim().to_string());
            } else if !name.is_empty() {
                modules.insert(name);
            }
            rest = after;
        }
    }
    (modules, through_root)
}

#[test]
fn engine_modules_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut through_root = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("readable source");
        let (used, root) = uses(&text);
        through_root.extend(root.into_iter().map(|l| format!("{}: {l}", file.display())));
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(used.into_iter().filter(|m| *m != module));
    }
    assert!(
        through_root.is_empty(),
        "name modules, not the root's re-exports:\n{}",
        through_root.join("\n")
    );
    assert!(graph.len() > 10, "read the engine's modules: {graph:?}");

    if let Some(circle) = find_circle(&graph) {
        panic!("module circle: {}", circle.join(" -> "));
    }
}

/// A circle of `graph` (each module, then those it uses), if it has one.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search; a module met again while still on the path closes a circle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut circle = path[start..].to_vec();
            circle.push(module.to_string());
            return Some(circle);
        }
        if !done.insert(module.to_string()) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_reader_sees_code_not_comments_and_the_search_finds_circles() {
    let (used, root) = uses("use crate::a::X; // crate::b is a comment\nlet y = crate::c::f();");
    assert_eq!(used, BTreeSet::from(["a".to_string(), "c".to_string()]));
    assert!(root.is_empty());
    let (_, root) = uses("use crate::{Coordinator, sql};");
    assert_eq!(root.len(), 1);

    let graph = |edges: &[(&str, &str)]| {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in edges {
            graph
                .entry(from.to_string())
                .or_default()
                .insert(to.to_string());
        }
        graph
    };
    assert_eq!(
        find_circle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    let circle = find_circle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])).expect("a circle");
    assert_eq!(circle.first(), circle.last());
    assert_eq!(circle.len(), 4);
}
