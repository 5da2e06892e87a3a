//! The crate's shape, checked: the arrows between its modules point down the layers of
//! `ARCHITECTURE.md`, no modules import each other in a circle, and no module grows past 700
//! lines of non-test code.
//!
//! The check reads `src/` as text: every `crate::a::b` and `super::` path outside comments and
//! test code is an arrow from the file's module to the deepest module that path names. It is
//! deliberately simple (no macro expansion, no name resolution through re-exports): a path
//! written `crate::model::Precision` points at `model`, one written
//! `crate::model::options::Precision` at `model::options`, so a low layer imports the data it
//! needs by its full path. `.ci/run` runs it as its own stage; it is also part of `cargo test`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Most lines of non-test code in one file.
const MAX_LINES: usize = 700;

/// The layers, from the bottom. A module may import modules of its own layer or below, never
/// above. The longest matching prefix decides a module's layer.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "plain data",
        &["frame", "event", "config", "model::options", "paths"],
    ),
    (
        "pure core",
        &[
            "preprocess",
            "matcher",
            "calibration",
            "trigger",
            "mailbox",
            "log_limit",
            "prompts::tokenizer",
            "sink::mqtt::queue",
            "sink::mqtt::topics",
            "snapshot::select",
            "snapshot::retention",
            "store::sample",
            "store::moments",
            "store::retention",
        ],
    ),
    ("engine", &["model", "prompts"]),
    (
        "adapters",
        &["source", "sink", "snapshot", "store", "plot", "http"],
    ),
    (
        "orchestration",
        &["daemon", "doctor", "bench", "exemplar", "replay", "search"],
    ),
    ("face", &["cli"]),
];

/// Arrows the issue that shaped this crate named, checked on top of the layers (some of them
/// the layers already forbid; these say why in the failure message).
const FORBIDDEN: &[(&str, &str, &str)] = &[
    ("model", "daemon", "the engine knows no daemon"),
    (
        "model",
        "config",
        "the engine takes plain values, not the config",
    ),
    ("preprocess", "model", "preprocessing knows no engine"),
    ("config", "source", "the config knows no adapter"),
    ("config", "sink", "the config knows no adapter"),
    ("config", "model", "the config reads only model::options"),
    ("matcher", "source", "the matcher does no I/O"),
    ("matcher", "sink", "the matcher does no I/O"),
    ("matcher", "model", "the matcher does no I/O"),
    ("matcher", "daemon", "the matcher does no I/O"),
    ("matcher", "paths", "the matcher does no I/O"),
    ("trigger", "source", "the trigger does no I/O"),
    ("trigger", "sink", "the trigger does no I/O"),
    ("trigger", "model", "the trigger does no I/O"),
    ("trigger", "daemon", "the trigger does no I/O"),
    ("trigger", "paths", "the trigger does no I/O"),
];

/// An exception to [`FORBIDDEN`]: `config` may read the plain data of `model::options`.
const ALLOWED: &[(&str, &str)] = &[("config", "model::options")];

/// `a::b` is `a` or below it.
fn is_under(module: &str, prefix: &str) -> bool {
    module == prefix
        || (module.starts_with(prefix) && module.as_bytes().get(prefix.len()) == Some(&b':'))
}

/// The module a source file defines: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts.join("::")
}

/// The code of a file without comments, string literals and test code (an inline
/// `#[cfg(test)] mod tests { ... }` runs to the end of the file, as every file here has it).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if text[i..].starts_with("//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if text[i..].starts_with("/*") {
            i = text[i..].find("*/").map_or(bytes.len(), |j| i + j + 2);
        } else if bytes[i] == b'"' {
            // A string literal (raw strings here hold no quotes of their own).
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if bytes[i] == b'\'' && text[i..].chars().nth(2) == Some('\'') {
            // A char literal like '"' (lifetimes have no closing quote).
            i += text[i..].chars().take(3).map(char::len_utf8).sum::<usize>();
        } else {
            let c = text[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Lines of non-test code in a file (test files count none).
fn non_test_lines(file: &Path, text: &str) -> usize {
    if file.file_name().is_some_and(|n| n == "tests.rs") {
        return 0;
    }
    match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => text[..i].lines().count(),
        None => text.lines().count(),
    }
}

/// Every path the code names, expanded: `use crate::a::{b, c::d}` gives `crate::a::b` and
/// `crate::a::c::d`; `super::x` is made absolute from `module`.
fn paths_in(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &code[i..];
        let start = if !at_word || (i > 0 && bytes[i - 1] == b':') {
            None
        } else if rest.starts_with("crate::") {
            Some((String::new(), "crate::".len()))
        } else if rest.starts_with("super::") {
            let mut parent: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
            let mut len = 0;
            while code[i + len..].starts_with("super::") {
                parent.pop();
                len += "super::".len();
            }
            Some((parent.join("::"), len))
        } else {
            None
        };
        let Some((base, len)) = start else {
            i += 1;
            continue;
        };
        let (tree, used) = path_tree(&code[i + len..]);
        for p in tree {
            out.push(if base.is_empty() {
                p
            } else if p.is_empty() {
                base.clone()
            } else {
                format!("{base}::{p}")
            });
        }
        i += len + used.max(1);
    }
    out
}

/// Reads `a::b::{c, d::e}` at the start of `s`: the expanded paths and the bytes used.
fn path_tree(s: &str) -> (Vec<String>, usize) {
    let mut prefix = Vec::new();
    let mut i = 0;
    let bytes = s.as_bytes();
    loop {
        let word_len = s[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len() - i);
        if word_len > 0 {
            prefix.push(s[i..i + word_len].to_owned());
            i += word_len;
        }
        if s[i..].starts_with("::{") {
            i += 3;
            let mut out = Vec::new();
            loop {
                while i < bytes.len() && (bytes[i] as char).is_whitespace() {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    i += 1;
                    break;
                }
                let (inner, used) = path_tree(&s[i..]);
                for p in inner {
                    let mut full = prefix.clone();
                    if !p.is_empty() && p != "self" {
                        full.push(p);
                    }
                    out.push(full.join("::"));
                }
                i += used;
                while i < bytes.len() && bytes[i] != b',' && bytes[i] != b'}' {
                    i += 1;
                }
                if i < bytes.len() && bytes[i] == b',' {
                    i += 1;
                }
            }
            return (out, i);
        }
        if s[i..].starts_with("::") && word_len > 0 {
            i += 2;
            continue;
        }
        return (vec![prefix.join("::")], i);
    }
}

/// The crate read from its sources: its modules and the arrows between them.
struct Crate {
    /// Module -> (file, non-test lines).
    modules: BTreeMap<String, (PathBuf, usize)>,
    /// (from, to) module arrows, to the deepest known module each path names.
    arrows: BTreeSet<(String, String)>,
}

impl Crate {
    fn from_files(src: &Path, files: &[(PathBuf, String)]) -> Crate {
        let mut modules = BTreeMap::new();
        for (file, text) in files {
            let m = module_of(src, file);
            // Test modules may import anything; `main.rs` is the binary, outside the library.
            if file
                .file_name()
                .is_some_and(|n| n == "tests.rs" || n == "main.rs")
            {
                continue;
            }
            modules.insert(m, (file.clone(), non_test_lines(file, text)));
        }
        let mut arrows = BTreeSet::new();
        for (file, text) in files {
            let from = module_of(src, file);
            if !modules.contains_key(&from) {
                continue;
            }
            for path in paths_in(&from, &code_of(text)) {
                let mut parts: Vec<&str> = path.split("::").collect();
                while !parts.is_empty() && !modules.contains_key(&parts.join("::")) {
                    parts.pop();
                }
                let to = parts.join("::");
                if !to.is_empty() && to != from {
                    arrows.insert((from.clone(), to));
                }
            }
        }
        Crate { modules, arrows }
    }

    fn read(src: &Path) -> Crate {
        let mut files = Vec::new();
        let mut dirs = vec![src.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    files.push((p, text));
                }
            }
        }
        files.sort();
        Crate::from_files(src, &files)
    }

    /// Every rule broken, one line each.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (m, (file, lines)) in &self.modules {
            if *lines > MAX_LINES {
                out.push(format!(
                    "{} ({m}): {lines} lines of non-test code, more than {MAX_LINES}",
                    file.display()
                ));
            }
        }
        for (from, to) in &self.arrows {
            if let (Some(lf), Some(lt)) = (layer_of(from), layer_of(to))
                && lt > lf
            {
                out.push(format!(
                    "{from} -> {to}: an arrow up the layers ({} imports {})",
                    LAYERS[lf].0, LAYERS[lt].0
                ));
            }
            for (a, b, why) in FORBIDDEN {
                if is_under(from, a)
                    && is_under(to, b)
                    && !ALLOWED
                        .iter()
                        .any(|(x, y)| is_under(from, x) && is_under(to, y))
                {
                    out.push(format!("{from} -> {to}: forbidden ({why})"));
                }
            }
        }
        out.extend(self.cycles());
        out
    }

    /// Cycles among the modules of each level: the top-level modules (arrows between their
    /// subtrees), and the children of every module (arrows between sibling subtrees; a module
    /// and its own children may import each other, as `mod.rs` re-exports them).
    fn cycles(&self) -> Vec<String> {
        let mut parents: BTreeSet<String> = BTreeSet::new();
        parents.insert(String::new());
        for m in self.modules.keys() {
            if let Some((p, _)) = m.rsplit_once("::") {
                parents.insert(p.to_owned());
            }
        }
        let mut out = Vec::new();
        for parent in parents {
            let child_of = |m: &str| -> Option<String> {
                let rest = if parent.is_empty() {
                    m
                } else {
                    m.strip_prefix(&parent)?.strip_prefix("::")?
                };
                let head = rest.split("::").next()?;
                (!head.is_empty()).then(|| {
                    if parent.is_empty() {
                        head.to_owned()
                    } else {
                        format!("{parent}::{head}")
                    }
                })
            };
            let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (from, to) in &self.arrows {
                if let (Some(a), Some(b)) = (child_of(from), child_of(to))
                    && a != b
                {
                    graph.entry(a).or_default().insert(b);
                }
            }
            if let Some(cycle) = find_cycle(&graph) {
                out.push(format!("import cycle: {}", cycle.join(" -> ")));
            }
        }
        out
    }
}

fn layer_of(module: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, (_, members)) in LAYERS.iter().enumerate() {
        for m in *members {
            if is_under(module, m) && best.is_none_or(|(len, _)| m.len() > len) {
                best = Some((m.len(), i));
            }
        }
    }
    best.map(|(_, i)| i)
}

/// A cycle in `graph` (its nodes in order, the first repeated at the end), if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_crate_follows_its_architecture() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let krate = Crate::read(&src);
    assert!(
        krate.modules.len() > 20 && krate.arrows.len() > 40,
        "the check read too little: {} modules, {} arrows",
        krate.modules.len(),
        krate.arrows.len()
    );
    for m in krate.modules.keys() {
        assert!(
            m.is_empty() || layer_of(m).is_some(),
            "module {m} has no layer: add it to LAYERS in tests/architecture.rs (and to \
             ARCHITECTURE.md)"
        );
    }
    let problems = krate.problems();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// The check itself, on small made-up crates: each rule can fail.

fn fake(files: &[(&str, &str)]) -> Crate {
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(f, t)| (Path::new("src").join(f), (*t).to_owned()))
        .collect();
    Crate::from_files(Path::new("src"), &files)
}

#[test]
fn paths_are_expanded_from_use_trees_and_super() {
    let code = code_of(
        "use crate::a::{b, c::{d, e}, self};\nuse super::super::x::Y;\n// crate::not::this\n\
         fn f() { let s = \"crate::nor::this\"; crate::g::h(); }\n",
    );
    let mut got = paths_in("p::q::r", &code);
    got.sort();
    assert_eq!(
        got,
        ["a", "a::b", "a::c::d", "a::c::e", "g::h", "p::x::Y"].map(String::from)
    );
}

#[test]
fn a_cycle_between_top_level_modules_is_caught() {
    let k = fake(&[
        ("lib.rs", "pub mod config; pub mod sink;"),
        ("config.rs", "use crate::sink::mqtt::MqttError;"),
        ("sink/mod.rs", "pub mod mqtt;"),
        ("sink/mqtt.rs", "use crate::config::MqttConfig;"),
    ]);
    let p = k.problems();
    assert!(
        p.iter()
            .any(|l| l.starts_with("import cycle: config -> sink")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|l| l.contains("config -> sink::mqtt: forbidden"))
    );
}

#[test]
fn children_may_import_their_parent_but_siblings_not_in_a_circle() {
    let ok = fake(&[
        (
            "model/mod.rs",
            "pub use engine::Encoder; pub struct ModelError;",
        ),
        (
            "model/engine.rs",
            "use super::ModelError; use super::plan::Plan;",
        ),
        ("model/plan.rs", "use super::ModelError;"),
    ]);
    assert_eq!(ok.problems(), Vec::<String>::new());
    let bad = fake(&[
        ("model/mod.rs", ""),
        ("model/engine.rs", "use super::plan::Plan;"),
        ("model/plan.rs", "fn f() { super::engine::run(); }"),
    ]);
    assert_eq!(
        bad.problems(),
        ["import cycle: model::engine -> model::plan -> model::engine"]
    );
}

#[test]
fn arrows_up_the_layers_and_named_arrows_are_caught() {
    let k = fake(&[
        ("model/mod.rs", "use crate::daemon::cache_dir;"),
        ("model/options.rs", ""),
        ("daemon.rs", ""),
        ("preprocess.rs", "use crate::model::ChannelOrder;"),
        (
            "config.rs",
            "use crate::model::options::Runtime; use crate::model::X;",
        ),
    ]);
    let p = k.problems();
    for want in [
        "model -> daemon: an arrow up the layers (engine imports orchestration)",
        "model -> daemon: forbidden (the engine knows no daemon)",
        "preprocess -> model: forbidden (preprocessing knows no engine)",
        "config -> model: forbidden (the config reads only model::options)",
    ] {
        assert!(p.iter().any(|l| l == want), "{want:?} not in {p:#?}");
    }
    assert!(
        !p.iter().any(|l| l.starts_with("config -> model::options")),
        "{p:#?}"
    );
}

#[test]
fn oversized_modules_are_caught_and_tests_do_not_count() {
    let big = "fn f() {}\n".repeat(MAX_LINES + 1);
    let with_tests = format!(
        "{}#[cfg(test)]\nmod tests {{\n{big}}}\n",
        "fn f() {}\n".repeat(10)
    );
    let k = fake(&[
        ("matcher.rs", &big),
        ("trigger.rs", &with_tests),
        ("trigger/tests.rs", &big),
    ]);
    assert_eq!(
        k.problems(),
        [format!(
            "src/matcher.rs (matcher): {} lines of non-test code, more than {MAX_LINES}",
            MAX_LINES + 1
        )]
    );
}
