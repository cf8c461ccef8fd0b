//! No module of the engine depends, directly or through others, on a module that depends on it.
//!
//! The test reads every `src/**/*.rs`, finds the paths it uses (`use` trees, `crate::a::b`,
//! `super::`, `self::`, paths into child modules) and resolves each to the FILE that defines the
//! module it names, following `pub use` re-exports to where the item lives. Each file is one node
//! of the graph; a cycle through any module of the engine (`engine/`, `post/`, `ops/`, `model/`,
//! `cuda/`, `output/`, `weights/`, `error.rs`, `config.rs`) fails the test with the cycle spelled
//! out, each edge with the path that makes it. Comments, strings and `#[cfg(test)]` modules do
//! not count: a unit test may reach anywhere.
//!
//! Run: `cargo test --release --locked --test it layout::`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// Top-level modules of the engine: folders and single files.
const ENGINE: [&str; 9] = [
    "engine", "post", "ops", "model", "cuda", "output", "weights", "error", "config",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

/// Tokens of Rust source with comments, strings, chars and numbers dropped; lifetimes become a
/// punctuation mark so `'a` never reads as an identifier that starts a path.
fn lex(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_string = |mut i: usize| -> usize {
        // c[i] == '"'; returns the index after the closing quote.
        i += 1;
        while i < c.len() && c[i] != '"' {
            i += if c[i] == '\\' { 2 } else { 1 };
        }
        i + 1
    };
    let skip_raw = |mut i: usize| -> usize {
        // c[i] is '#' or '"' after an `r`.
        let mut hashes = 0;
        while i < c.len() && c[i] == '#' {
            hashes += 1;
            i += 1;
        }
        i += 1;
        while i < c.len() {
            if c[i] == '"' && (0..hashes).all(|h| c.get(i + 1 + h) == Some(&'#')) {
                return i + 1 + hashes;
            }
            i += 1;
        }
        i
    };
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(i);
        } else if ch == '\'' {
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                out.push(Tok::Punct('\''));
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let at = c.get(i).copied();
            match (word.as_str(), at) {
                ("r" | "br", Some('"' | '#')) => i = skip_raw(i),
                ("b", Some('"')) => i = skip_string(i),
                ("b", Some('\'')) => {
                    i += 1;
                    while i < c.len() && c[i] != '\'' {
                        i += if c[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                _ => out.push(Tok::Ident(word)),
            }
        } else if ch == ':' && next == Some(':') {
            out.push(Tok::Sep);
            i += 2;
        } else {
            if !ch.is_whitespace() {
                out.push(Tok::Punct(ch));
            }
            i += 1;
        }
    }
    out
}

type ModPath = Vec<String>;

/// A path as written, with the module scope it was written in.
struct Reference {
    scope: ModPath,
    path: Vec<String>,
}

#[derive(Default)]
struct FileScan {
    refs: Vec<Reference>,
    /// Modules declared inline (`mod x { .. }`), absolute.
    inline: Vec<ModPath>,
    /// `pub use`: (module, exported name) -> the path it stands for, as written in that module.
    reexports: Vec<(ModPath, String, Vec<String>)>,
    /// `#[cfg(test)] mod x;`: child files that only tests compile.
    test_children: Vec<ModPath>,
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

/// One use tree starting at `toks[*i]`, appended to `prefix`: the full paths it names, each
/// with the name it binds (`None` for a glob).
fn use_tree(
    toks: &[Tok],
    i: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix;
    loop {
        match toks.get(*i) {
            Some(Tok::Punct('{')) => {
                *i += 1;
                while !matches!(toks.get(*i), Some(Tok::Punct('}')) | None) {
                    use_tree(toks, i, path.clone(), out);
                    if toks.get(*i) == Some(&Tok::Punct(',')) {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push((path, None));
                return;
            }
            Some(Tok::Ident(s)) => {
                if s == "self" && !path.is_empty() {
                    // `a::{self}` binds `a`.
                } else {
                    path.push(s.clone());
                }
                *i += 1;
                if toks.get(*i) == Some(&Tok::Sep) {
                    *i += 1;
                    continue;
                }
                let mut name = path.last().cloned();
                if ident(toks.get(*i)) == Some("as") {
                    name = ident(toks.get(*i + 1)).map(str::to_owned);
                    *i += 2;
                }
                out.push((path, name));
                return;
            }
            Some(Tok::Sep) => *i += 1, // a leading `::`
            _ => return,
        }
    }
}

fn is_cfg_test(toks: &[Tok], i: usize) -> bool {
    let want = [
        Tok::Punct('#'),
        Tok::Punct('['),
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    toks.get(i..i + want.len()) == Some(&want[..])
}

fn scan_file(module: &ModPath, src: &str) -> FileScan {
    let toks = lex(src);
    let mut scan = FileScan::default();
    // (module path, brace depth inside it, test-only)
    let mut scopes: Vec<(ModPath, usize, bool)> = vec![(module.clone(), 0, false)];
    let mut depth = 0usize;
    let mut pending_test = false;
    let mut i = 0;
    while i < toks.len() {
        let (scope, _, in_test) = scopes
            .last()
            .cloned()
            .expect("the file scope is never popped");
        if is_cfg_test(&toks, i) {
            pending_test = true;
            i += 7;
            continue;
        }
        match &toks[i] {
            Tok::Punct('{') => {
                depth += 1;
                pending_test = false;
                i += 1;
            }
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                while scopes.len() > 1 && scopes.last().is_some_and(|s| s.1 > depth) {
                    scopes.pop();
                }
                i += 1;
            }
            Tok::Punct(';') => {
                pending_test = false;
                i += 1;
            }
            Tok::Ident(w) if w == "mod" => {
                let Some(name) = ident(toks.get(i + 1)) else {
                    i += 1;
                    continue;
                };
                let mut child = scope.clone();
                child.push(name.to_owned());
                match toks.get(i + 2) {
                    Some(Tok::Punct('{')) => {
                        depth += 1;
                        scan.inline.push(child.clone());
                        scopes.push((child, depth, in_test || pending_test));
                        i += 3;
                    }
                    _ => {
                        if pending_test || in_test {
                            scan.test_children.push(child);
                        }
                        i += 2;
                    }
                }
                pending_test = false;
            }
            Tok::Ident(w) if w == "use" => {
                let public = i > 0
                    && (ident(toks.get(i - 1)) == Some("pub") || toks[i - 1] == Tok::Punct(')'));
                i += 1;
                let mut paths = Vec::new();
                use_tree(&toks, &mut i, Vec::new(), &mut paths);
                if !in_test {
                    for (path, name) in paths {
                        if public {
                            if let Some(name) = name {
                                scan.reexports.push((scope.clone(), name, path.clone()));
                            }
                        }
                        scan.refs.push(Reference {
                            scope: scope.clone(),
                            path,
                        });
                    }
                }
            }
            Tok::Ident(w) if i == 0 || toks[i - 1] != Tok::Sep => {
                let mut path = vec![w.clone()];
                let mut j = i + 1;
                while toks.get(j) == Some(&Tok::Sep) {
                    match ident(toks.get(j + 1)) {
                        Some(s) => path.push(s.to_owned()),
                        None => break, // `::<T>` turbofish
                    }
                    j += 2;
                }
                if path.len() > 1 && !in_test {
                    scan.refs.push(Reference {
                        scope: scope.clone(),
                        path,
                    });
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    scan
}

/// The file modules under src/, by module path (`src/lib.rs` is the empty path).
fn file_modules(src: &Path) -> BTreeMap<ModPath, PathBuf> {
    fn walk(dir: &Path, prefix: &ModPath, out: &mut BTreeMap<ModPath, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("UTF-8 file name")
                .to_owned();
            if p.is_dir() {
                let mut sub = prefix.clone();
                sub.push(name);
                walk(&p, &sub, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                if prefix.is_empty() && name == "main" {
                    continue; // the binary's root: its `crate` is another crate
                }
                let mut m = prefix.clone();
                if name != "mod" && !(prefix.is_empty() && name == "lib") {
                    m.push(name);
                }
                out.insert(m, p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &Vec::new(), &mut out);
    out
}

struct Graph {
    files: BTreeMap<ModPath, PathBuf>,
    modules: BTreeSet<ModPath>,
    reexports: BTreeMap<(ModPath, String), (ModPath, Vec<String>)>,
    /// from file -> to file -> the first path (as written) that makes the edge
    edges: BTreeMap<ModPath, BTreeMap<ModPath, String>>,
}

impl Graph {
    /// The absolute path `path` names when written in `scope`, or None for other crates.
    fn absolute(&self, scope: &ModPath, path: &[String]) -> Option<Vec<String>> {
        let first = path.first()?;
        match first.as_str() {
            "crate" => Some(path[1..].to_vec()),
            "self" => Some(scope.iter().chain(&path[1..]).cloned().collect()),
            "super" => {
                let ups = path.iter().take_while(|s| *s == "super").count();
                let base = scope.get(..scope.len().checked_sub(ups)?)?;
                Some(base.iter().chain(&path[ups..]).cloned().collect())
            }
            _ => {
                let mut child = scope.clone();
                child.push(first.clone());
                self.modules
                    .contains(&child)
                    .then(|| scope.iter().chain(path).cloned().collect())
            }
        }
    }

    /// The file that defines what the absolute `path` names, through re-exports.
    fn file_of(&self, path: Vec<String>, hops: usize) -> Option<ModPath> {
        let k = (0..=path.len())
            .rev()
            .find(|&k| self.files.contains_key(&path[..k]))?;
        // The longest prefix that is a module (inline or file) holds the named item.
        let m = (k..=path.len())
            .rev()
            .find(|&m| self.modules.contains(&path[..m]))
            .unwrap_or(k);
        if m < path.len() && hops < 8 {
            if let Some((scope, target)) =
                self.reexports.get(&(path[..m].to_vec(), path[m].clone()))
            {
                if let Some(abs) = self.absolute(scope, target) {
                    let full: Vec<String> = abs
                        .into_iter()
                        .chain(path[m + 1..].iter().cloned())
                        .collect();
                    return self.file_of(full, hops + 1);
                }
            }
        }
        Some(path[..k].to_vec())
    }

    fn build(root: &Path) -> Graph {
        let files = file_modules(&root.join("src"));
        let scans: Vec<(ModPath, FileScan)> = files
            .iter()
            .map(|(m, p)| {
                let src =
                    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                (m.clone(), scan_file(m, &src))
            })
            .collect();
        let test_only: BTreeSet<ModPath> = scans
            .iter()
            .flat_map(|(_, s)| s.test_children.iter().cloned())
            .collect();
        let mut modules: BTreeSet<ModPath> = files.keys().cloned().collect();
        let mut reexports = BTreeMap::new();
        for (_, s) in &scans {
            modules.extend(s.inline.iter().cloned());
            for (scope, name, path) in &s.reexports {
                reexports.insert((scope.clone(), name.clone()), (scope.clone(), path.clone()));
            }
        }
        let mut g = Graph {
            files,
            modules,
            reexports,
            edges: BTreeMap::new(),
        };
        for (from, scan) in &scans {
            if test_only.contains(from) {
                continue;
            }
            for r in &scan.refs {
                let Some(abs) = g.absolute(&r.scope, &r.path) else {
                    continue;
                };
                let Some(to) = g.file_of(abs, 0) else {
                    continue;
                };
                if &to != from {
                    g.edges
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| r.path.join("::"));
                }
            }
        }
        g
    }

    /// A shortest cycle through `start`, as the list of its nodes (start first), if any.
    fn cycle_through(&self, start: &ModPath) -> Option<Vec<ModPath>> {
        let mut prev: BTreeMap<ModPath, ModPath> = BTreeMap::new();
        let mut queue = VecDeque::from([start.clone()]);
        while let Some(n) = queue.pop_front() {
            for next in self.edges.get(&n).into_iter().flat_map(|e| e.keys()) {
                if next == start {
                    let mut cycle = vec![n.clone()];
                    while let Some(p) = prev.get(cycle.last().expect("non-empty")) {
                        cycle.push(p.clone());
                    }
                    cycle.reverse();
                    return Some(cycle);
                }
                if !prev.contains_key(next) {
                    prev.insert(next.clone(), n.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        None
    }
}

fn name(m: &ModPath) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("/")
    }
}

fn in_engine(m: &ModPath) -> bool {
    m.first().is_some_and(|f| ENGINE.contains(&f.as_str()))
}

fn describe(g: &Graph, cycle: &[ModPath]) -> String {
    let mut s = name(&cycle[0]);
    for (k, from) in cycle.iter().enumerate() {
        let to = &cycle[(k + 1) % cycle.len()];
        let via = &g.edges[from][to];
        s.push_str(&format!(" -> {} ({via})", name(to)));
    }
    s
}

#[test]
fn the_engine_modules_form_no_cycle() {
    let g = Graph::build(Path::new(env!("CARGO_MANIFEST_DIR")));
    let mut seen: BTreeSet<BTreeSet<ModPath>> = BTreeSet::new();
    let mut cycles = Vec::new();
    for m in g.files.keys().filter(|m| in_engine(m)) {
        if let Some(c) = g.cycle_through(m) {
            if seen.insert(c.iter().cloned().collect()) {
                cycles.push(describe(&g, &c));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "module cycles through the engine:\n  {}",
        cycles.join("\n  ")
    );
}

/// The scanner itself: each kind of reference it must see, and the text it must not read.
#[test]
fn the_scanner_resolves_uses_paths_reexports_and_skips_comments_and_tests() {
    let m = |s: &str| -> ModPath { s.split('/').map(str::to_owned).collect() };
    let src = r##"
        //! crate::a::commented
        use super::{sib::{self, Thing as T}, other::*};
        pub use crate::a::deep::Item;
        const S: &str = "crate::a::in_string";
        const R: &str = r#"crate::a::in_raw"#;
        fn f<'a>(x: &'a u8) -> char { crate::b::call(); child::g(); 'x' }
        mod inner { use super::super::up; }
        #[cfg(test)]
        mod tests { use crate::a::only_tests; }
        #[cfg(test)]
        mod test_util;
    "##;
    let scan = scan_file(&m("p/q"), src);
    let refs: Vec<String> = scan
        .refs
        .iter()
        .map(|r| format!("{}:{}", r.scope.join("/"), r.path.join("::")))
        .collect();
    assert_eq!(
        refs,
        [
            "p/q:super::sib",
            "p/q:super::sib::Thing",
            "p/q:super::other",
            "p/q:crate::a::deep::Item",
            "p/q:crate::b::call",
            "p/q:child::g",
            "p/q/inner:super::super::up",
        ]
    );
    assert_eq!(scan.inline, [m("p/q/inner"), m("p/q/tests")]);
    assert_eq!(scan.test_children, [m("p/q/test_util")]);
    assert_eq!(
        scan.reexports,
        [(m("p/q"), "Item".to_owned(), m("crate/a/deep/Item"))]
    );
}
