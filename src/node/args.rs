//! The `--ros-args` that `ros2 run` / `ros2 launch` append: `-r __node:=x`, `-r __ns:=/y`,
//! topic remaps `-r from:=to`, `-p name:=value`, `--params-file F`, `--log-level L`, and the
//! flags we accept and ignore (`--enclave`, `--disable-*-logs`, ...).

use std::path::PathBuf;

use crate::error::{Error, Result};

/// What `--ros-args` said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosArgs {
    /// `-r __node:=name` (or `__name`).
    pub node_name: Option<String>,
    /// `-r __ns:=/namespace`.
    pub namespace: Option<String>,
    pub params_files: Vec<PathBuf>,
    /// `-p name:=value`, in order.
    pub params: Vec<(String, String)>,
    /// Topic remaps `-r from:=to`, in order.
    pub remaps: Vec<(String, String)>,
    /// `--log-level [logger:=]level`, last one wins.
    pub log_level: Option<String>,
    /// Arguments after a closing `--` (not ROS arguments).
    pub trailing: Vec<String>,
}

fn split_assign(s: &str, flag: &str) -> Result<(String, String)> {
    match s.split_once(":=") {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(Error::Parameter(format!(
            "--ros-args {flag} `{s}`: expected NAME:=VALUE"
        ))),
    }
}

/// A `node:rule` prefix applies the rule to one node only; rules for other nodes are dropped.
fn for_this_node<'a>(key: &'a str, node_name: &str) -> Option<&'a str> {
    match key.split_once(':') {
        Some((node, rest)) if !node.starts_with('/') && !node.is_empty() => {
            (node == node_name).then_some(rest)
        }
        _ => Some(key),
    }
}

/// Parses the arguments after `--ros-args` (up to an optional `--`), for the node `node_name`.
pub fn parse_ros_args(args: &[String], node_name: &str) -> Result<RosArgs> {
    let mut out = RosArgs::default();
    let mut it = args.iter();
    let missing = |flag: &str| Error::Parameter(format!("--ros-args {flag} needs a value"));
    while let Some(a) = it.next() {
        match a.as_str() {
            "--" => {
                out.trailing = it.by_ref().cloned().collect();
                break;
            }
            "--ros-args" => {}
            "-r" | "--remap" => {
                let v = it.next().ok_or_else(|| missing(a))?;
                let (k, to) = split_assign(v, a)?;
                let Some(from) = for_this_node(&k, node_name) else {
                    continue;
                };
                match from {
                    "__node" | "__name" => out.node_name = Some(to),
                    "__ns" => {
                        if !to.starts_with('/') {
                            return Err(Error::Parameter(format!(
                                "--ros-args -r __ns:={to}: the namespace must be absolute"
                            )));
                        }
                        out.namespace = Some(to)
                    }
                    _ => out.remaps.push((from.to_string(), to)),
                }
            }
            "-p" | "--param" => {
                let v = it.next().ok_or_else(|| missing(a))?;
                let (k, val) = split_assign(v, a)?;
                if let Some(name) = for_this_node(&k, node_name) {
                    out.params.push((name.to_string(), val));
                }
            }
            "--params-file" => {
                let v = it.next().ok_or_else(|| missing(a))?;
                out.params_files.push(PathBuf::from(v));
            }
            "--log-level" => {
                let v = it.next().ok_or_else(|| missing(a))?;
                out.log_level = Some(v.rsplit(":=").next().unwrap_or(v).to_string());
            }
            "-e" | "--enclave" | "--log-config-file" | "--log-file-name" => {
                it.next().ok_or_else(|| missing(a))?;
            }
            "--enable-rosout-logs"
            | "--disable-rosout-logs"
            | "--enable-stdout-logs"
            | "--disable-stdout-logs"
            | "--enable-external-lib-logs"
            | "--disable-external-lib-logs" => {}
            other => {
                return Err(Error::Parameter(format!(
                    "--ros-args: unknown argument `{other}` (supported: -r, -p, --params-file, --log-level, -e)"
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_what_ros2_launch_appends() {
        let a = parse_ros_args(
            &v("-r __node:=seg -r __ns:=/robot --params-file /tmp/p.yaml -p use_sim_time:=True -r camera/image_raw:=/front/image -r other:x:=y -p other:top_k:=3 --log-level debug --disable-rosout-logs -- ignored"),
            "seg",
        )
        .unwrap();
        assert_eq!(a.node_name.as_deref(), Some("seg"));
        assert_eq!(a.namespace.as_deref(), Some("/robot"));
        assert_eq!(a.params_files, vec![PathBuf::from("/tmp/p.yaml")]);
        assert_eq!(
            a.params,
            vec![("use_sim_time".to_string(), "True".to_string())]
        );
        assert_eq!(
            a.remaps,
            vec![("camera/image_raw".to_string(), "/front/image".to_string())]
        );
        assert_eq!(a.log_level.as_deref(), Some("debug"));
        assert_eq!(a.trailing, vec!["ignored".to_string()]);
    }

    #[test]
    fn rejects_malformed_arguments() {
        assert!(parse_ros_args(&v("-p top_k"), "n").is_err());
        assert!(parse_ros_args(&v("-r"), "n").is_err());
        assert!(parse_ros_args(&v("-r __ns:=relative"), "n").is_err());
        let e = parse_ros_args(&v("--bogus"), "n").unwrap_err().to_string();
        assert!(e.contains("`--bogus`"), "{e}");
    }
}
