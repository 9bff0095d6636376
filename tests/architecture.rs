//! The architecture holds: dependencies among the crate's top-level modules
//! point one way. Read from the `crate::<module>` paths in `src/` (comments
//! and doc links do not count), the graph has no cycle, the leaves import
//! no module of the crate, `config` (plain data) uses only the shared
//! vocabulary, and no service module depends on the development tools.
//! Source files stay under 600 lines, but for a listed few, each with why,
//! and none glob-imports simd-json's prelude (it shadows `Vec::iter`).
//!
//! `cargo test --test architecture -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that import nothing of the crate.
const LEAVES: &[&str] = &["allocator", "core", "guard", "logging", "samples"];
/// What `config` may use.
const CONFIG_MAY_USE: &[&str] = &["core"];
/// Development tools: only they and the binary may use them.
const DEV_TOOLS: &[&str] = &["bench", "demo"];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each top-level module of `src/` and its files.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("read src") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string();
        if path.is_dir() {
            let mut files = Vec::new();
            rust_files(&path, &mut files);
            out.insert(name, files);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            out.insert(name, vec![path]);
        }
    }
    out
}

/// The first path segments after `crate::` in `code`, also inside
/// `crate::{a::x, b}` groups.
fn used_modules(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                used.insert(ident(item.trim()));
            }
        } else {
            used.insert(ident(rest));
        }
    }
    used
}

fn graph() -> Graph {
    let mods = modules();
    let mut deps = Graph::new();
    for (name, files) in &mods {
        let mut set = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(file).expect("read source");
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for used in used_modules(&code) {
                if &used != name && mods.contains_key(&used) {
                    set.insert(used);
                }
            }
        }
        deps.insert(name.clone(), set);
    }
    deps
}

/// A cycle, as the modules along it, if there is one.
fn cycle(deps: &Graph) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        deps: &Graph,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        stack.push(m.to_string());
        for d in &deps[m] {
            if let Some(at) = stack.iter().position(|s| s == d) {
                let mut found = stack[at..].to_vec();
                found.push(d.clone());
                return Some(found);
            }
            if !done.contains(d)
                && let Some(found) = visit(d, deps, done, stack)
            {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in deps.keys() {
        if !done.contains(m)
            && let Some(found) = visit(m, deps, &mut done, &mut Vec::new())
        {
            return Some(found);
        }
    }
    None
}

#[test]
fn dependencies_among_top_level_modules_point_one_way() {
    let deps = graph();
    for (m, d) in &deps {
        let list: Vec<&str> = d.iter().map(String::as_str).collect();
        println!(
            "{m:10} -> {}",
            if list.is_empty() {
                "-".into()
            } else {
                list.join(", ")
            }
        );
    }
    let mut problems = Vec::new();
    if let Some(found) = cycle(&deps) {
        problems.push(format!("cycle: {}", found.join(" -> ")));
    }
    for leaf in LEAVES {
        match deps.get(*leaf) {
            Some(d) if !d.is_empty() => {
                problems.push(format!("{leaf} must import no module of the crate: {d:?}"))
            }
            Some(_) => {}
            None => problems.push(format!("leaf module {leaf} is gone: update LEAVES")),
        }
    }
    let config = &deps["config"];
    let extra: Vec<&String> = config
        .iter()
        .filter(|d| !CONFIG_MAY_USE.contains(&d.as_str()))
        .collect();
    if !extra.is_empty() {
        problems.push(format!("config may use only {CONFIG_MAY_USE:?}: {extra:?}"));
    }
    for (m, d) in &deps {
        if DEV_TOOLS.contains(&m.as_str()) {
            continue;
        }
        for tool in DEV_TOOLS {
            if d.contains(*tool) {
                problems.push(format!("{m} depends on the development tool {tool}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_finds_grouped_and_nested_paths_and_ignores_comments() {
    let code = "use crate::{core::Reason, index};\nlet x = crate::wire::batch::decode(y);";
    let found: Vec<String> = used_modules(code).into_iter().collect();
    assert_eq!(found, ["core", "index", "wire"]);
    // A cycle is found when there is one.
    let mut g = Graph::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["a".to_string()].into());
    assert_eq!(cycle(&g), Some(vec!["a".into(), "b".into(), "a".into()]));
    g.insert("b".into(), BTreeSet::new());
    assert_eq!(cycle(&g), None);
}

/// Most lines a source file of `src/` may have, tests included (issue 15:
/// "no source file over ~500 lines without a reason written at its top";
/// tests that would push a file past it live in `<module>/tests.rs`).
const MAX_FILE_LINES: usize = 500;

/// Files allowed past [`MAX_FILE_LINES`]. Each says why at its top, in a
/// `//! Why this file is long:` line of its module doc. Shrink this list;
/// never grow it without a reason a reviewer accepts.
const LONG_FILES: &[&str] = &[
    "bench/mod.rs",
    "config/limits.rs",
    "deliver/request.rs",
    "index/egress.rs",
    "index/endpoint.rs",
    "pipeline/dispatcher.rs",
    "source/consumer.rs",
];

/// How a long file gives its reason, in its module doc.
const LONG_REASON: &str = "//! Why this file is long:";

#[test]
fn source_files_stay_small_enough_to_read() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let name = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&file).expect("read");
        let lines = text.lines().count();
        let allowed = LONG_FILES.contains(&name.as_str());
        if lines > MAX_FILE_LINES && !allowed {
            problems.push(format!("src/{name}: {lines} lines (most {MAX_FILE_LINES})"));
        }
        let header = text.lines().take_while(|l| l.starts_with("//!"));
        if allowed && !header.into_iter().any(|l| l.starts_with(LONG_REASON)) {
            problems.push(format!(
                "src/{name} is on LONG_FILES without a `{LONG_REASON}` line at its top"
            ));
        }
        if allowed && lines <= MAX_FILE_LINES {
            problems.push(format!(
                "src/{name} is {lines} lines now: take it off LONG_FILES"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// simd-json's prelude brings value-trait's `Array` trait, which value-trait
/// implements for `Vec<T>` with an `iter()` that boxes its iterator. A trait
/// method on `Vec` is found before the slice's own `iter()`, so a glob import
/// of the prelude turned every `vec.iter()` in the file into an allocation:
/// in the event extractor, two per event (6 % of bench (b)'s CPU). Files name
/// the traits they use instead.
#[test]
fn no_file_glob_imports_a_prelude_that_shadows_vec_iter() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file).expect("read");
            text.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with("use ")
                    && (l.contains("simd_json::prelude::*")
                        || l.contains("value_trait::prelude::*"))
            })
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "glob imports of simd_json's or value_trait's prelude: {offenders:?}"
    );
}
