//! `config/yolact.yaml` and the parameter table of docs/ros.md, written from [`super::table`]
//! (the tests require both files to hold exactly this), and the `--dry-run` listing.

use super::reader::Resolved;
use super::table::{Kind, Param, Value, PARAMETERS};

/// The camera that `config/yolact.yaml` shows the per-camera parameters for.
const SHOWN_CAMERA: &str = "camera";
const WIDTH: usize = 100;

fn yaml_value(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Double(d) => format!("{d:?}"),
        Value::Str(s) => format!("\"{}\"", s.replace("<name>", SHOWN_CAMERA)),
        Value::StrList(l) => format!(
            "[{}]",
            l.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn md_default(p: &Param) -> String {
    match p.default {
        Value::Str("") if p.example.is_some() => "(required)".into(),
        Value::Str("") => "`\"\"`".into(),
        Value::Str(s) => format!("`{s}`"),
        Value::StrList(l) => format!("`[{}]`", l.join(", ")),
        Value::Double(d) => format!("`{d:?}`"),
        Value::Int(i) => format!("`{i}`"),
        Value::Bool(b) => format!("`{b}`"),
    }
}

/// Words of `text` wrapped into `# ` comment lines at `indent`.
fn comment(text: &str, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && pad.len() + 2 + line.len() + 1 + word.len() > WIDTH {
            out.push_str(&format!("{pad}# {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{pad}# {line}\n"));
    }
}

/// The allowed values or range, `sep` between choices.
fn allowed(p: &Param, quote: &str, sep: &str) -> Option<String> {
    match p.kind {
        Kind::Choice(names) => Some(
            names
                .iter()
                .map(|n| format!("{quote}{n}{quote}"))
                .collect::<Vec<_>>()
                .join(sep),
        ),
        Kind::Int { lo, hi } => Some(format!("{lo}..={hi}")),
        Kind::Double { lo, hi } => Some(format!("{lo:?}..={hi:?}")),
        _ => None,
    }
}

/// `config/yolact.yaml`: every parameter with its default (a required one with its example)
/// and its meaning, nested as ROS params files are.
pub fn params_file() -> String {
    let mut out = String::from(
        "# Parameters of the yolact_ros2 node (`yolact node --params-file config/yolact.yaml`).\n\
         # Every parameter with its default and meaning; docs/ros.md has the same table. Written by\n\
         # `yolact node --print-params-file` from the node's parameter table (src/node/params/table.rs).\n\
         # Unknown names, wrong types and out-of-range values stop the node at start-up with one error\n\
         # that names each offending parameter.\n\
         /**:\n  ros__parameters:\n",
    );
    let mut open: Vec<String> = Vec::new();
    for p in PARAMETERS {
        let name = p.name_for(SHOWN_CAMERA);
        let mut path: Vec<String> = name.split('.').map(str::to_string).collect();
        let leaf = path.pop().unwrap_or_default();
        let common = open.iter().zip(&path).take_while(|(a, b)| a == b).count();
        if common < open.len() && common == 0 {
            out.push('\n');
        }
        open.truncate(common);
        for seg in &path[common..] {
            out.push_str(&format!("{}{seg}:\n", " ".repeat(4 + 2 * open.len())));
            open.push(seg.clone());
        }
        let indent = 4 + 2 * open.len();
        let mut doc = p.doc.to_string();
        let names_every_choice = match p.kind {
            Kind::Choice(names) => names.iter().all(|n| p.doc.contains(&format!("`{n}`"))),
            _ => false,
        };
        if let Some(a) = allowed(p, "", " | ").filter(|_| !names_every_choice) {
            doc.push_str(&format!(" [{a}]"));
        }
        comment(&doc, indent, &mut out);
        let value = p.example.as_ref().unwrap_or(&p.default);
        out.push_str(&format!(
            "{}{leaf}: {}\n",
            " ".repeat(indent),
            yaml_value(value)
        ));
    }
    out
}

/// The parameter table of docs/ros.md ("### Parameters").
pub fn markdown_table() -> String {
    let mut out =
        String::from("| name | type | default | allowed | meaning |\n|---|---|---|---|---|\n");
    for p in PARAMETERS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            p.name,
            p.type_name(),
            md_default(p),
            allowed(p, "`", ", ").unwrap_or_default(),
            p.doc
        ));
    }
    out
}

/// `--dry-run`'s listing: every parameter as resolved, marking the ones a file or `-p` set.
pub fn resolved_listing(resolved: &[Resolved]) -> String {
    let w = resolved.iter().map(|r| r.name.len()).max().unwrap_or(4);
    let mut s = String::new();
    for r in resolved {
        let how = if r.default { "" } else { "  (set)" };
        s.push_str(&format!("  {:w$} = {}{how}\n", r.name, r.value));
    }
    s
}
