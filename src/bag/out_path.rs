//! Output files that cannot destroy their inputs: an output that is, or is inside, an input is
//! refused before anything is opened for writing (paths compared after resolving symlinks, and
//! by inode when the output exists), every output is checked writable before the work starts,
//! and each is written under a temporary name in its own directory, renamed only when complete.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Why an output path was refused.
#[derive(Debug, thiserror::Error)]
pub enum OutPathError {
    #[error("{what} `{}` is the input `{}`: refusing to overwrite an input", out.display(), input.display())]
    IsInput {
        what: String,
        out: PathBuf,
        input: PathBuf,
    },
    #[error("{what} `{}` is inside the input bag `{}`: refusing to write into an input", out.display(), input.display())]
    InsideInput {
        what: String,
        out: PathBuf,
        input: PathBuf,
    },
    #[error("{what} `{}` and {other} are the same file", out.display())]
    Duplicate {
        what: String,
        other: String,
        out: PathBuf,
    },
    #[error("{what} `{}`: {msg}", out.display())]
    Unusable {
        what: String,
        out: PathBuf,
        msg: String,
    },
}

/// The temporary name an output is written under, next to it: `out.mcap` -> `out.partial.mcap`
/// (the extension is kept, so tools that go by it still open a partial bag).
pub fn partial_path(out: &Path) -> PathBuf {
    tagged(out, "partial")
}

/// `dir/stem.TAG.ext` (or `dir/name.TAG` without an extension).
pub fn tagged(out: &Path, tag: &str) -> PathBuf {
    let mut name: OsString = out.file_stem().map(OsString::from).unwrap_or_default();
    name.push(".");
    name.push(tag);
    if let Some(ext) = out.extension() {
        name.push(".");
        name.push(ext);
    }
    out.with_file_name(name)
}

/// Resolves symlinks in the longest existing prefix of `p` and appends the rest lexically
/// (`..` in the rest pops a component), so a path that does not exist yet still compares.
pub fn resolve(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            let mut out = c;
            for comp in rest.iter().rev() {
                match comp {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    c => out.push(c.as_os_str()),
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return abs,
        }
    }
}

#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_: &Path, _: &Path) -> bool {
    false
}

/// Refuses any output (`(what, path)`, e.g. `("--out", p)`) that is an input or lies inside an
/// input directory, and two outputs that are one file. Inputs are files or directories.
pub fn refuse_overlap(inputs: &[PathBuf], outputs: &[(String, PathBuf)]) -> Result<(), OutPathError> {
    let ins: Vec<(PathBuf, PathBuf)> = inputs.iter().map(|p| (p.clone(), resolve(p))).collect();
    let mut seen: Vec<(String, PathBuf)> = Vec::new();
    for (what, out) in outputs {
        let r = resolve(out);
        for (given, ri) in &ins {
            if r == *ri || same_inode(out, given) {
                return Err(OutPathError::IsInput {
                    what: what.clone(),
                    out: out.clone(),
                    input: given.clone(),
                });
            }
            if ri.is_dir() && r.starts_with(ri) {
                return Err(OutPathError::InsideInput {
                    what: what.clone(),
                    out: out.clone(),
                    input: given.clone(),
                });
            }
        }
        if let Some((other, _)) = seen.iter().find(|(_, s)| *s == r) {
            return Err(OutPathError::Duplicate {
                what: what.clone(),
                other: other.clone(),
                out: out.clone(),
            });
        }
        seen.push((what.clone(), r));
    }
    Ok(())
}

/// Checks, before any work, that `out` can be written: not a directory, its directory created
/// when missing and writable (a scratch file is created there and removed).
pub fn check_writable(what: &str, out: &Path) -> Result<(), OutPathError> {
    let bad = |msg: String| OutPathError::Unusable {
        what: what.to_string(),
        out: out.to_path_buf(),
        msg,
    };
    if out.is_dir() {
        return Err(bad("is a directory".into()));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if dir.exists() && !dir.is_dir() {
            return Err(bad(format!("`{}` is not a directory", dir.display())));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| bad(format!("creating `{}`: {e}", dir.display())))?;
    }
    let probe = partial_path(out);
    let existed = probe.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&probe)
        .map_err(|e| bad(format!("cannot write there: {e}")))?;
    if !existed {
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}

/// Writes `bytes` to `out` through its partial name and a rename, so `out` is either its old
/// content or complete.
pub fn write_atomic(out: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = partial_path(out);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_keep_the_extension() {
        assert_eq!(partial_path(Path::new("d/out.mcap")), Path::new("d/out.partial.mcap"));
        assert_eq!(partial_path(Path::new("x")), Path::new("x.partial"));
    }

    #[test]
    fn outputs_in_or_on_inputs_are_refused_through_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let bag = d.path().join("bag");
        std::fs::create_dir(&bag).unwrap();
        std::fs::write(bag.join("a.mcap"), b"x").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&bag, &link).unwrap();
        let o = |p: PathBuf| vec![("--out".to_string(), p)];
        let ins = [bag.clone()];
        assert!(matches!(
            refuse_overlap(&ins, &o(link.join("new/x.mcap"))),
            Err(OutPathError::InsideInput { .. })
        ));
        assert!(matches!(
            refuse_overlap(&[bag.join("a.mcap")], &o(link.join("a.mcap"))),
            Err(OutPathError::IsInput { .. })
        ));
        assert!(matches!(
            refuse_overlap(&ins, &o(d.path().join("x/../bag/b.mcap"))),
            Err(OutPathError::InsideInput { .. })
        ));
        std::fs::hard_link(bag.join("a.mcap"), d.path().join("hard.mcap")).unwrap();
        assert!(refuse_overlap(&[bag.join("a.mcap")], &o(d.path().join("hard.mcap"))).is_err());
        assert!(refuse_overlap(&ins, &o(d.path().join("bag2/x.mcap"))).is_ok());
        let two = vec![
            ("--out".to_string(), d.path().join("r/x")),
            ("report".to_string(), d.path().join("r/./x")),
        ];
        assert!(matches!(
            refuse_overlap(&ins, &two),
            Err(OutPathError::Duplicate { .. })
        ));
    }
}
