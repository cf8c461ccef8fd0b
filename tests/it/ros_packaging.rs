//! The ROS packaging, checked with the real tools where CI has them: `colcon list` over a scratch
//! workspace holding this repository, the launch files (Python compiles, XML parses and uses only
//! declared arguments, both declare the same ones), and the package manifests.
//!
//! colcon is not part of the Rust toolchain: the colcon test skips with a printed reason when it
//! is missing, and fails instead when `YOLACT_REQUIRE_COLCON=1` (CI installs it; see .ci/run).

use crate::support::{repo, yolact_cmd};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Skips (returns false) or panics, as the environment asks.
fn tool_missing(var: &str, why: &str) -> bool {
    if required(var) {
        panic!("{why} ({var}=1)");
    }
    eprintln!("SKIPPED: {why}; set {var}=1 to make this a failure");
    false
}

/// The colcon command: `$YOLACT_COLCON`, `colcon` on PATH, or `python3 -m colcon` (pip may
/// install the script where PATH does not look).
fn colcon() -> Option<Vec<String>> {
    if let Ok(p) = std::env::var("YOLACT_COLCON") {
        return Some(vec![p]);
    }
    [vec!["colcon"], vec!["python3", "-m", "colcon"]]
        .into_iter()
        .find(|cmd| {
            Command::new(cmd[0])
                .args(&cmd[1..])
                .arg("--help")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|cmd| cmd.into_iter().map(String::from).collect())
}

fn colcon_cmd(colcon: &[String]) -> Command {
    let mut c = Command::new(&colcon[0]);
    c.args(&colcon[1..]);
    c
}

fn cargo_ament_build_installed() -> bool {
    Command::new("cargo")
        .args(["ament-build", "--help"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `colcon list` prints `name<TAB>path<TAB>(type)` per package.
fn parse_colcon_list(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            match cols.as_slice() {
                [name, _path, ty] => Some((
                    name.to_string(),
                    ty.trim_matches(|c| c == '(' || c == ')').to_string(),
                )),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn colcon_lists_every_package_with_its_build_type() {
    let Some(colcon) = colcon() else {
        tool_missing(
            "YOLACT_REQUIRE_COLCON",
            "colcon is not installed (pip install colcon-core colcon-ros colcon-ros-cargo \
             colcon-package-information colcon-metadata)",
        );
        return;
    };
    // colcon-ros-cargo only identifies an ament_cargo package when `cargo ament-build` runs.
    if !cargo_ament_build_installed() {
        tool_missing(
            "YOLACT_REQUIRE_COLCON",
            "cargo-ament-build is not installed (cargo install cargo-ament-build)",
        );
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let src = ws.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::os::unix::fs::symlink(repo(), src.join("yolact_ros2")).unwrap();
    let out = colcon_cmd(&colcon)
        .args(["--log-base", "log", "list", "--base-paths", "src"])
        .current_dir(ws.path())
        .output()
        .expect("run colcon");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "colcon list failed:\n{stdout}\n{stderr}"
    );
    let listed = parse_colcon_list(&stdout);
    let expected = vec![
        ("yolact_ros2".to_string(), "ament_cargo".to_string()),
        (
            "yolact_ros2_msgs".to_string(),
            "ros.ament_cmake".to_string(),
        ),
    ];
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "colcon list:\n{stdout}\n{stderr}");

    // Build order: the messages first, because r2r is generated from the installed messages.
    let out = colcon_cmd(&colcon)
        .args([
            "--log-base",
            "log",
            "list",
            "--base-paths",
            "src",
            "--topological-order",
            "--names-only",
        ])
        .current_dir(ws.path())
        .output()
        .expect("run colcon");
    let order = String::from_utf8_lossy(&out.stdout);
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(order, ["yolact_ros2_msgs", "yolact_ros2"]);

    // colcon-metadata turns colcon.pkg's cargo-args into the package's build arguments.
    let out = colcon_cmd(&colcon)
        .args([
            "--log-base",
            "log",
            "info",
            "--base-paths",
            "src",
            "yolact_ros2",
        ])
        .current_dir(ws.path())
        .output()
        .expect("run colcon info");
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "colcon info failed: {info}");
    assert!(
        info.contains("rcl") && info.contains("yolact_ros2_msgs"),
        "dependencies missing from colcon info:\n{info}"
    );
    if info.contains("cargo-args") || info.contains("cargo_args") {
        assert!(info.contains("--features"), "{info}");
    } else {
        eprintln!("note: colcon-metadata not installed; colcon.pkg's cargo-args not checked");
    }
}

fn launch_py() -> String {
    std::fs::read_to_string(repo().join("launch/yolact.launch.py")).unwrap()
}

/// The argument names a launch.py declares, read by Python's own parser.
fn py_declared_args(path: &Path) -> Option<BTreeSet<String>> {
    let script = r#"
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
for node in ast.walk(tree):
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
        print(node.args[0].value)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

/// Every `$(var NAME)` in a string.
fn var_uses(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("$(var ") {
        let after = &rest[i + 6..];
        let end = after.find(')').expect("unterminated $(var");
        out.push(after[..end].trim().to_string());
        rest = &after[end..];
    }
    out
}

struct XmlLaunch {
    declared: BTreeSet<String>,
    used: BTreeSet<String>,
    node_args: String,
    node_exec: String,
}

fn xml_launch(text: &str) -> XmlLaunch {
    let doc = roxmltree::Document::parse(text).expect("launch XML parses");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "launch");
    let mut declared = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut node_args = String::new();
    let mut node_exec = String::new();
    for n in root.descendants().filter(|n| n.is_element()) {
        if n.tag_name().name() == "arg" {
            let name = n.attribute("name").expect("<arg> without name");
            assert!(declared.insert(name.to_string()), "{name} declared twice");
        }
        if n.tag_name().name() == "node" {
            node_args = n.attribute("args").unwrap_or_default().to_string();
            node_exec = n.attribute("exec").unwrap_or_default().to_string();
        }
        for a in n.attributes() {
            used.extend(var_uses(a.value()));
        }
    }
    XmlLaunch {
        declared,
        used,
        node_args,
        node_exec,
    }
}

const LAUNCH_ARGS: [&str; 6] = [
    "config",
    "image_topic",
    "namespace",
    "params_file",
    "use_sim_time",
    "weights",
];

#[test]
fn launch_xml_uses_only_declared_arguments_and_starts_yolact_node() {
    let text = std::fs::read_to_string(repo().join("launch/yolact.launch.xml")).unwrap();
    let x = xml_launch(&text);
    let expected: BTreeSet<String> = LAUNCH_ARGS.iter().map(|s| s.to_string()).collect();
    assert_eq!(x.declared, expected);
    let undeclared: Vec<_> = x.used.difference(&x.declared).collect();
    assert!(undeclared.is_empty(), "undeclared: {undeclared:?}");
    assert_eq!(x.node_exec, "yolact");
    assert!(
        x.node_args
            .starts_with("node --params-file $(var params_file)"),
        "{}",
        x.node_args
    );
    // Every model/topic argument reaches the node as an override.
    for (param, arg) in [
        ("weights", "weights"),
        ("config", "config"),
        ("cameras.camera.topic", "image_topic"),
        ("use_sim_time", "use_sim_time"),
    ] {
        assert!(
            x.node_args.contains(&format!("-p {param}:=$(var {arg})")),
            "{arg} not passed as {param}: {}",
            x.node_args
        );
    }
}

#[test]
fn the_checker_catches_an_undeclared_argument() {
    let x = xml_launch(
        r#"<launch><arg name="a"/><node exec="yolact" args="node $(var a) $(var b)"/></launch>"#,
    );
    let undeclared: Vec<_> = x.used.difference(&x.declared).cloned().collect();
    assert_eq!(undeclared, ["b"]);
    assert_eq!(var_uses("x $(var one) y $(var  two )"), ["one", "two"]);
}

#[test]
fn launch_py_compiles_and_declares_the_same_arguments_as_the_xml() {
    let path = repo().join("launch/yolact.launch.py");
    let scratch = tempfile::tempdir().unwrap();
    let compiled = Command::new("python3")
        .args(["-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)"])
        .arg(&path)
        .arg(scratch.path().join("launch.pyc"))
        .output();
    let Ok(compiled) = compiled else {
        eprintln!("SKIPPED: python3 not found");
        return;
    };
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let declared = py_declared_args(&path).expect("python3");
    let expected: BTreeSet<String> = LAUNCH_ARGS.iter().map(|s| s.to_string()).collect();
    assert_eq!(declared, expected);
    let src = launch_py();
    assert!(src.contains(r#"executable="yolact""#));
    assert!(src.contains(r#""node", "--params-file""#));
}

fn manifest(path: &Path) -> (String, String, BTreeSet<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let el = |name: &'static str| {
        doc.descendants()
            .filter(move |n| n.tag_name().name() == name)
            .filter_map(|n| n.text())
            .map(str::to_string)
    };
    let name = el("name").next().expect("<name>");
    let build_type = el("build_type").next().expect("<build_type>");
    let deps = el("depend").chain(el("build_depend")).collect();
    (name, build_type, deps)
}

#[test]
fn manifests_name_the_packages_and_their_dependencies() {
    let (name, ty, deps) = manifest(&repo().join("package.xml"));
    assert_eq!((name.as_str(), ty.as_str()), ("yolact_ros2", "ament_cargo"));
    for d in [
        "yolact_ros2_msgs",
        "sensor_msgs",
        "vision_msgs",
        "diagnostic_msgs",
        "lifecycle_msgs",
        "std_msgs",
    ] {
        assert!(deps.contains(d), "yolact_ros2 does not depend on {d}");
    }
    let (name, ty, deps) = manifest(&repo().join("yolact_ros2_msgs/package.xml"));
    assert_eq!(
        (name.as_str(), ty.as_str()),
        ("yolact_ros2_msgs", "ament_cmake")
    );
    assert!(deps.contains("std_msgs"));
    // The Cargo package and the ROS package agree on the name cargo-ament-build installs under.
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    assert!(cargo.contains("name = \"yolact_ros2\""));
}

#[test]
fn the_messages_package_builds_the_repositorys_msg_files() {
    // One source of truth: the package's msg/ resolves to the repository's msg/.
    let pkg = std::fs::canonicalize(repo().join("yolact_ros2_msgs/msg")).unwrap();
    let root = std::fs::canonicalize(repo().join("msg")).unwrap();
    assert_eq!(pkg, root);
    let msgs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "msg"))
        .collect();
    assert!(msgs.len() >= 2, "{msgs:?}");
    let cmake = std::fs::read_to_string(repo().join("yolact_ros2_msgs/CMakeLists.txt")).unwrap();
    assert!(cmake.contains("rosidl_generate_interfaces"));
    assert!(cmake.contains("msg/*.msg"));
    assert!(cmake.contains("DEPENDENCIES std_msgs"));
}

/// `$(var X)` replaced from `vars`.
fn substitute(s: &str, vars: &[(&str, String)]) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("$(var {k})"), v);
    }
    out
}

#[test]
fn the_launch_command_line_is_one_yolact_node_accepts() {
    let text = std::fs::read_to_string(repo().join("launch/yolact.launch.xml")).unwrap();
    let x = xml_launch(&text);
    let doc = roxmltree::Document::parse(&text).unwrap();
    let default = |name: &str| {
        doc.descendants()
            .find(|n| n.tag_name().name() == "arg" && n.attribute("name") == Some(name))
            .and_then(|n| n.attribute("default"))
            .unwrap_or_default()
            .to_string()
    };
    let config_yaml = repo().join("config/yolact.yaml");
    let vars = [
        // The installed share/yolact_ros2/config/yolact.yaml is this file.
        ("params_file", config_yaml.display().to_string()),
        ("weights", "synthetic".to_string()),
        ("config", default("config")),
        ("image_topic", default("image_topic")),
        ("use_sim_time", default("use_sim_time")),
    ];
    let cmdline = substitute(&x.node_args, &vars);
    assert!(!cmdline.contains("$("), "{cmdline}");
    // launch splits `args` on whitespace and appends the node's --ros-args.
    let mut args: Vec<&str> = cmdline.split_whitespace().collect();
    assert_eq!(args.remove(0), "node");
    let out = yolact_cmd()
        .arg("node")
        .arg("--dry-run")
        .args(&args)
        .args(["--ros-args", "-r", "__node:=yolact", "-r", "__ns:=/front"])
        .output()
        .expect("run yolact node --dry-run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{cmdline}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The launch arguments arrived: namespace, detected config, image topic.
    assert!(stdout.contains("node /front/yolact"), "{stdout}");
    assert!(stdout.contains("model yolact_resnet50"), "{stdout}");
    assert!(stdout.contains("/front/camera/image_raw"), "{stdout}");
}
