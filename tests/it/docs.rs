//! Cross-references into docs/model.md stay resolvable.
//!
//! Comments cite the model description by section number (a "docs/model.md" path followed by
//! "§6.5.3", "§6.2-6.4", "§2.4, §5.2" or "App. A"). This test scans the text files of src/, tests/,
//! tools/, kernels/, benches/, docs/ and the top-level Markdown files, and fails when
//! * a cited number has no numbered heading in docs/model.md (a dangling reference),
//! * a "§" appears that is not part of such a citation (it names no document, so it cannot be
//!   checked), or a comment still cites the spec, which is not shipped with the code,
//! * a "§N" inside docs/model.md itself points to a missing heading.
//!
//! Run: `cargo test --release --locked --test it docs::`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const DOC: &str = "docs/model.md";
const SCANNED_DIRS: [&str; 6] = ["src", "tests", "tools", "kernels", "benches", "docs"];
const TEXT_EXTENSIONS: [&str; 11] = [
    "rs", "md", "py", "cu", "cuh", "sh", "toml", "yaml", "yml", "txt", "json",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Section ids of the numbered headings: "## 6.5 Mask ..." gives "6.5", "#### 6.5.3 Crop" gives
/// "6.5.3", "### 8.5a ..." gives "8.5a", "## Appendix A. ..." gives "App. A". Fenced code is
/// skipped, since a '#' there is a comment, not a heading.
fn heading_ids(md: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut in_fence = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || !line.starts_with('#') {
            continue;
        }
        let mut words = line.trim_start_matches('#').split_whitespace();
        match words.next() {
            Some("Appendix") => {
                if let Some(letter) = words.next() {
                    ids.insert(format!("App. {}", letter.trim_end_matches('.')));
                }
            }
            Some(w) if w.starts_with(|c: char| c.is_ascii_digit()) => {
                ids.insert(w.trim_end_matches('.').to_string());
            }
            _ => {}
        }
    }
    ids
}

/// One cited section, with the byte offset of its '§' (none for "App. X").
#[derive(Debug, PartialEq)]
struct Cite {
    id: String,
    at: Option<usize>,
}

/// A section number at the start of `s`: a digit, then digits, letters and dots; a trailing dot
/// ends the sentence, not the number. Returns the number and the bytes it spans.
fn section_number(s: &str) -> Option<(String, usize)> {
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
        .unwrap_or(s.len());
    let id = s[..len].trim_end_matches('.');
    Some((id.to_string(), id.len()))
}

/// Parses the citation list that follows a "docs/model.md" at byte `start` of `text`: items "§N",
/// "§N-M" (both ends are cited) or "App. X", separated by ", ", " and " or ", and ". An item that
/// starts with '§' but has no number is reported as an error.
fn cites_after(text: &str, start: usize) -> Result<Vec<Cite>, String> {
    let mut cites = Vec::new();
    let mut pos = start;
    loop {
        let rest = &text[pos..];
        if let Some(after) = rest.strip_prefix('§') {
            let (id, len) = section_number(after)
                .ok_or_else(|| format!("'§' without a section number: {:?}", head(rest)))?;
            cites.push(Cite { id, at: Some(pos) });
            pos += '§'.len_utf8() + len;
            if let Some((end, len)) = text[pos..].strip_prefix('-').and_then(section_number) {
                cites.push(Cite { id: end, at: None });
                pos += 1 + len;
            }
        } else if let Some(after) = rest.strip_prefix("App. ") {
            let letter: String = after
                .chars()
                .take_while(|c| c.is_ascii_uppercase())
                .collect();
            if letter.is_empty() {
                return Err(format!("'App.' without a letter: {:?}", head(rest)));
            }
            pos += "App. ".len() + letter.len();
            cites.push(Cite {
                id: format!("App. {letter}"),
                at: None,
            });
        } else {
            break;
        }
        let rest = &text[pos..];
        match [", and ", ", ", " and "].iter().find(|sep| {
            rest.strip_prefix(**sep)
                .is_some_and(|r| r.starts_with('§') || r.starts_with("App. "))
        }) {
            Some(sep) => pos += sep.len(),
            None => break,
        }
    }
    Ok(cites)
}

fn head(s: &str) -> String {
    s.chars().take(30).collect()
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// Problems in one file's `text` against the heading ids; `path` only labels the messages.
/// In docs/model.md itself every "§N" is an internal cross-reference and must resolve too.
fn check_text(path: &str, text: &str, ids: &BTreeSet<String>) -> (Vec<String>, usize) {
    let mut errors = Vec::new();
    let mut cited = 0;
    let mut covered = BTreeSet::new();
    let check = |cite: &Cite, at: usize, errors: &mut Vec<String>| {
        if !ids.contains(&cite.id) {
            errors.push(format!(
                "{path}:{}: {DOC} has no heading {}",
                line_of(text, at),
                cite.id
            ));
        }
    };
    let starts: Vec<usize> = if path == DOC {
        text.match_indices('§').map(|(i, _)| i).collect()
    } else {
        let needle = format!("{DOC} ");
        text.match_indices(&needle)
            .map(|(i, _)| i + needle.len())
            .collect()
    };
    for start in starts {
        // In docs/model.md a list such as "§2.4 and §5.2" was read whole at its first '§'.
        if covered.contains(&start) {
            continue;
        }
        match cites_after(text, start) {
            Ok(cites) => {
                for cite in &cites {
                    check(cite, start, &mut errors);
                    covered.extend(cite.at);
                }
                cited += cites.len();
            }
            Err(e) => errors.push(format!("{path}:{}: {e}", line_of(text, start))),
        }
    }
    for (i, _) in text.match_indices('§') {
        if !covered.contains(&i) && path != DOC {
            errors.push(format!(
                "{path}:{}: '§' that is not part of a '{DOC} §N' reference",
                line_of(text, i)
            ));
        }
    }
    let lower = text.to_lowercase();
    for stale in ["spec §", "spec app."] {
        for (i, _) in lower.match_indices(stale) {
            errors.push(format!(
                "{path}:{}: cites the spec, which is not shipped; cite {DOC} instead",
                line_of(&lower, i)
            ));
        }
    }
    (errors, cited)
}

fn collect_text_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = entry.path();
        let kind = entry
            .file_type()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if kind.is_dir() {
            collect_text_files(&path, out);
        } else if kind.is_file()
            && path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| TEXT_EXTENSIONS.contains(&e))
        {
            out.push(path);
        }
    }
}

#[test]
fn every_model_md_reference_names_a_heading() {
    let root = root();
    let doc = std::fs::read_to_string(root.join(DOC)).expect("docs/model.md is readable");
    let ids = heading_ids(&doc);
    assert!(
        ids.contains("6.5.3") && ids.contains("App. A"),
        "heading parse: {ids:?}"
    );

    let mut files = Vec::new();
    for dir in SCANNED_DIRS {
        collect_text_files(&root.join(dir), &mut files);
    }
    for entry in std::fs::read_dir(&root).expect("repository root is readable") {
        let path = entry.expect("root entry").path();
        if path.is_file() && path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    // This file's own docs and unit cases spell out references on purpose.
    let me = root.join(file!());

    let (mut errors, mut cited, mut cited_in_src) = (Vec::new(), 0, 0);
    for path in files.iter().filter(|p| **p != me) {
        // Binary fixtures (safetensors, bags) with a text-like name are not comments.
        let Ok(text) = String::from_utf8(std::fs::read(path).expect("file is readable")) else {
            continue;
        };
        let rel = path.strip_prefix(&root).unwrap_or(path).to_string_lossy();
        let rel = rel.replace('\\', "/");
        let (e, n) = check_text(&rel, &text, &ids);
        errors.extend(e);
        cited += n;
        if rel.starts_with("src/") {
            cited_in_src += n;
        }
    }
    assert!(
        errors.is_empty(),
        "{} problem(s):\n{}",
        errors.len(),
        errors.join("\n")
    );
    // A scan that finds nothing would pass trivially.
    assert!(
        cited_in_src > 0 && cited > cited_in_src,
        "{cited} references, {cited_in_src} in src/"
    );
}

#[test]
fn reference_lists_and_ranges_are_parsed() {
    let text = "x (docs/model.md §2.4, §5.2) y docs/model.md §6.2-6.4; docs/model.md §3. \
                docs/model.md §6.5 and §8.2, z docs/model.md App. A) docs/model.md §8.5a: w";
    let ids: Vec<String> = text
        .match_indices("docs/model.md ")
        .flat_map(|(i, _)| cites_after(text, i + "docs/model.md ".len()).expect("parses"))
        .map(|c| c.id)
        .collect();
    assert_eq!(
        ids,
        ["2.4", "5.2", "6.2", "6.4", "3", "6.5", "8.2", "App. A", "8.5a"]
    );
}

#[test]
fn dangling_bare_and_stale_references_are_reported() {
    let doc = "# Title\n## 1. One\n### 1.2 Sub\n```\n# 9 not a heading\n```\n## Appendix A. X\n";
    let ids = heading_ids(doc);
    assert_eq!(
        ids,
        BTreeSet::from(["1", "1.2", "App. A"].map(String::from))
    );

    let good = "// docs/model.md §1.2, §1 and App. A\n";
    assert_eq!(check_text("a.rs", good, &ids), (Vec::new(), 3));

    let bad = "// ok docs/model.md §1\n// docs/model.md §1.3\n// (§1.2)\n// spec §1\n\
               // docs/model.md §1-9\n// docs/model.md §x\n";
    let (errors, _) = check_text("b.rs", bad, &ids);
    let expect = [
        "b.rs:2: docs/model.md has no heading 1.3",
        "b.rs:5: docs/model.md has no heading 9",
        "b.rs:6: '§' without a section number",
        "b.rs:3: '§' that is not part of",
        "b.rs:4: '§' that is not part of",
        "b.rs:6: '§' that is not part of",
        "b.rs:4: cites the spec",
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (e, want) in errors.iter().zip(expect) {
        assert!(e.starts_with(want), "{e:?} should start with {want:?}");
    }

    // Inside the document, a bare "§N" is an internal reference and must resolve.
    let (errors, n) = check_text(DOC, "see §1.2 and §7\n", &ids);
    assert_eq!(n, 2);
    assert_eq!(errors, ["docs/model.md:1: docs/model.md has no heading 7"]);
}
