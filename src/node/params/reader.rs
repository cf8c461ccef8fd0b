//! Typed reads of the raw (flattened) values, with the type, default and range of each
//! parameter from [`super::table`]. Every read removes the name, so what is left over was never
//! a parameter; every problem is collected, so one start-up error names them all; every value
//! read is recorded for `--dry-run`.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::file::describe;
use super::table::{Kind, Param};

/// A parameter's value after reading, for `--dry-run` and the start-up log.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub name: String,
    /// The value as YAML would write it.
    pub value: String,
    /// Whether no file or `-p` set it.
    pub default: bool,
}

pub(super) struct Reader {
    pub raw: BTreeMap<String, Value>,
    pub errors: Vec<String>,
    pub resolved: Vec<Resolved>,
}

impl Reader {
    pub fn new(raw: BTreeMap<String, Value>) -> Self {
        Self {
            raw,
            errors: Vec::new(),
            resolved: Vec::new(),
        }
    }

    pub fn err(&mut self, name: &str, msg: String) {
        self.errors.push(format!("`{name}`: {msg}"));
    }

    fn take(&mut self, name: &str, value_of_default: impl Fn() -> String) -> Option<Value> {
        let v = self.raw.remove(name);
        if v.is_none() {
            self.resolved.push(Resolved {
                name: name.to_string(),
                value: value_of_default(),
                default: true,
            });
        }
        v
    }

    fn record(&mut self, name: &str, value: String) {
        self.resolved.push(Resolved {
            name: name.to_string(),
            value,
            default: false,
        });
    }

    pub fn bool(&mut self, p: &Param) -> bool {
        self.bool_at(p, "")
    }

    /// A per-camera bool (`camera` replaces `<name>`); also the plain read with `camera` "".
    fn bool_at(&mut self, p: &Param, camera: &str) -> bool {
        let name = p.name_for(camera);
        let default = p.default_bool();
        let v = match self.take(&name, || default.to_string()) {
            None => return default,
            Some(Value::Bool(b)) => b,
            // launch passes `use_sim_time:=True` (YAML 1.1 spelling, which serde_yaml reads as a string).
            Some(Value::String(s)) if matches!(s.as_str(), "true" | "True" | "TRUE") => true,
            Some(Value::String(s)) if matches!(s.as_str(), "false" | "False" | "FALSE") => false,
            Some(v) => {
                self.err(&name, format!("expected a bool, got {}", describe(&v)));
                default
            }
        };
        self.record(&name, v.to_string());
        v
    }

    pub fn int(&mut self, p: &Param) -> i64 {
        let Kind::Int { lo, hi } = p.kind else {
            unreachable!("{} is not an int parameter", p.name)
        };
        let name = p.name;
        let default = p.default_int();
        let v = match self.take(name, || default.to_string()) {
            None => return default,
            Some(Value::Number(n)) if n.as_i64().is_some() => {
                let v = n.as_i64().unwrap_or(default);
                if (lo..=hi).contains(&v) {
                    v
                } else {
                    self.err(name, format!("{v} is out of range, allowed {lo}..={hi}"));
                    default
                }
            }
            Some(v) => {
                self.err(name, format!("expected an int, got {}", describe(&v)));
                default
            }
        };
        self.record(name, v.to_string());
        v
    }

    pub fn double(&mut self, p: &Param) -> f64 {
        let Kind::Double { lo, hi } = p.kind else {
            unreachable!("{} is not a double parameter", p.name)
        };
        let name = p.name;
        let default = p.default_double();
        let v = match self.take(name, || format!("{default:?}")) {
            None => return default,
            // Integers are accepted for doubles (`period: 1`); rclcpp would refuse, people write it.
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() && v >= lo && v <= hi => v,
                Some(v) => {
                    self.err(name, format!("{v} is out of range, allowed {lo}..={hi}"));
                    default
                }
                None => default,
            },
            Some(v) => {
                self.err(name, format!("expected a double, got {}", describe(&v)));
                default
            }
        };
        self.record(name, format!("{v:?}"));
        v
    }

    pub fn string(&mut self, p: &Param) -> String {
        self.string_at(p, "")
    }

    /// A per-camera string: `<name>` in the parameter's name and default becomes `camera`.
    pub fn string_at(&mut self, p: &Param, camera: &str) -> String {
        let name = p.name_for(camera);
        let default = p.default_str().replace("<name>", camera);
        let v = match self.take(&name, || format!("{default:?}")) {
            None => return default,
            Some(Value::String(s)) => s,
            Some(v) => {
                self.err(&name, format!("expected a string, got {}", describe(&v)));
                default
            }
        };
        self.record(&name, format!("{v:?}"));
        v
    }

    /// A string from the parameter's fixed set, mapped to `T` by `options` (same names).
    pub fn choice<T: Copy>(&mut self, p: &Param, options: &[(&str, T)]) -> T {
        self.choice_at(p, "", options)
    }

    pub fn choice_at<T: Copy>(&mut self, p: &Param, camera: &str, options: &[(&str, T)]) -> T {
        let Kind::Choice(names) = p.kind else {
            unreachable!("{} is not a choice parameter", p.name)
        };
        debug_assert!(options.iter().map(|(n, _)| *n).eq(names.iter().copied()));
        let name = p.name_for(camera);
        let default_name = p.default_str();
        let default = options
            .iter()
            .find(|(n, _)| *n == default_name)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| unreachable!("{}: default is not an option", p.name));
        let Some(v) = self.take(&name, || format!("{default_name:?}")) else {
            return default;
        };
        let allowed = names.join(", ");
        let t = match &v {
            Value::String(s) => match options.iter().find(|(n, _)| n == s) {
                Some((_, t)) => {
                    self.record(&name, format!("{s:?}"));
                    return *t;
                }
                None => {
                    self.err(&name, format!("\"{s}\" is not one of: {allowed}"));
                    default
                }
            },
            _ => {
                self.err(
                    &name,
                    format!(
                        "expected a string (one of: {allowed}), got {}",
                        describe(&v)
                    ),
                );
                default
            }
        };
        t
    }

    pub fn string_array(&mut self, p: &Param) -> Vec<String> {
        let name = p.name;
        let owned = || p.default_list().iter().map(|s| s.to_string()).collect();
        let v = match self.take(name, || format!("{:?}", p.default_list())) {
            None => return owned(),
            Some(Value::Sequence(items)) => {
                let mut out = Vec::new();
                for it in items {
                    match it {
                        Value::String(s) => out.push(s),
                        other => {
                            self.err(
                                name,
                                format!("expected an array of strings, found {}", describe(&other)),
                            );
                            return owned();
                        }
                    }
                }
                out
            }
            Some(v) => {
                self.err(
                    name,
                    format!("expected an array of strings, got {}", describe(&v)),
                );
                return owned();
            }
        };
        self.record(name, format!("{v:?}"));
        v
    }
}
