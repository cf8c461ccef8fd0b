//! The ROS 2 params-file format: top-level keys name nodes, each holding `ros__parameters`;
//! nested maps flatten to dotted names as rclcpp does; `-p` values are YAML.

use serde_yaml::Value;

/// `-p` values are YAML (`-p top_k:=5` is an int, `-p classes:=[person,dog]` a list).
pub fn parse_value(text: &str) -> Value {
    serde_yaml::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Whether a params-file top-level key addresses this node (`/**`, `name`, `/ns/name`,
/// `/**/name`), following rcl's rules for the forms people actually write.
pub(super) fn key_matches(key: &str, node_name: &str) -> bool {
    let fq = if node_name.starts_with('/') {
        node_name.to_string()
    } else {
        format!("/{node_name}")
    };
    let base = fq.rsplit('/').next().unwrap_or("");
    key == "/**"
        || key == "**"
        || key == fq
        || key.trim_start_matches('/') == fq.trim_start_matches('/')
        || key == base
        || key == format!("/**/{base}")
}

/// The flattened `ros__parameters` of every section that addresses `node_name`, in file order.
pub fn parse_params_yaml(
    text: &str,
    node_name: &str,
) -> std::result::Result<Vec<(String, Value)>, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let top = match doc {
        Value::Mapping(m) => m,
        Value::Null => return Ok(Vec::new()),
        _ => return Err("expected a map of node names to `ros__parameters`".into()),
    };
    let mut out = Vec::new();
    for (k, v) in top {
        let Some(key) = k.as_str() else {
            return Err(format!("node key {k:?} is not a string"));
        };
        if !key_matches(key, node_name) {
            continue;
        }
        let Value::Mapping(section) = v else {
            return Err(format!("`{key}` must be a map holding `ros__parameters`"));
        };
        for (sk, sv) in section {
            if sk.as_str() != Some("ros__parameters") {
                return Err(format!(
                    "`{key}` holds {sk:?}; only `ros__parameters` is allowed there"
                ));
            }
            flatten("", &sv, &mut out)?;
        }
    }
    Ok(out)
}

fn flatten(
    prefix: &str,
    v: &Value,
    out: &mut Vec<(String, Value)>,
) -> std::result::Result<(), String> {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let name = match k {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => return Err(format!("parameter name {other:?} under `{prefix}`")),
                };
                let full = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}.{name}")
                };
                flatten(&full, child, out)?;
            }
            Ok(())
        }
        Value::Tagged(t) => flatten(prefix, &t.value, out),
        _ if prefix.is_empty() => Err("`ros__parameters` must be a map".into()),
        _ => {
            out.push((prefix.to_string(), v.clone()));
            Ok(())
        }
    }
}

pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("bool {b}"),
        Value::Number(n) if n.is_f64() => format!("double {n}"),
        Value::Number(n) => format!("int {n}"),
        Value::String(s) => format!("string \"{s}\""),
        Value::Sequence(_) => "an array".into(),
        Value::Mapping(_) => "a map".into(),
        Value::Tagged(t) => describe(&t.value),
    }
}
