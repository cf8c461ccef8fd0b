//! `yolact node`: the ROS 2 node's entry point (colcon's executable and `ros2 run` target).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use yolact_ros2::node::args::parse_ros_args;
use yolact_ros2::node::lifecycle::STATE_FINALIZED;
use yolact_ros2::node::model::{device_name, load_host_weights, resolve_device};
use yolact_ros2::node::names::{format_table, topic_table};
use yolact_ros2::node::open::{
    default_kind, open_transport, DdsOptions, NodeIdentity, ServiceMapping, TransportKind,
    SERVICE_MAPPING_ENV,
};
use yolact_ros2::node::params::{render, resolve_params_files};
use yolact_ros2::node::Node;

/// Default node name (`-r __node:=NAME` changes it).
pub const NODE_NAME: &str = "yolact";

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// ROS 2 parameters file (`<node or /**>: ros__parameters: {...}`); see config/yolact.yaml.
    #[arg(long, value_name = "FILE")]
    pub params_file: Option<PathBuf>,
    /// Transport: `ros` (rcl via r2r) or `dds` (ros2-client); default: the one built in. With
    /// `dds`, YOLACT_DDS_SERVICE_MAPPING=enhanced|cyclone|basic (default enhanced, Fast DDS)
    /// must name the peers' rmw for `ros2 lifecycle` to reach the node.
    #[arg(long, value_enum)]
    pub transport: Option<TransportKind>,
    /// Validate the parameters, load the model, print every parameter's value and the topics
    /// with types and QoS, and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the default params file (every parameter, its default and meaning; what
    /// config/yolact.yaml holds) and exit.
    #[arg(long)]
    pub print_params_file: bool,
    /// A parameter override, NAME:=VALUE (value parsed as YAML, as ROS does).
    #[arg(short = 'p', long = "param", value_name = "NAME:=VALUE")]
    pub param: Vec<String>,
    /// `--ros-args ...` as ros2 run / ros2 launch append them (-r, -p, --params-file, ...).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..,
        value_name = "--ros-args ..."
    )]
    pub ros_args: Vec<String>,
}

/// The DDS options `yolact node` takes from its environment; read here, once, so the library
/// never looks at the process environment.
fn dds_options_from_env() -> Result<DdsOptions> {
    let value = match std::env::var(SERVICE_MAPPING_ENV) {
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(v)) => {
            bail!("{SERVICE_MAPPING_ENV}={v:?}: not valid UTF-8")
        }
    };
    Ok(DdsOptions {
        service_mapping: ServiceMapping::from_env_value(value.as_deref())?,
    })
}

fn split_param(s: &str) -> Result<(String, String)> {
    match s.split_once(":=") {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("-p `{s}`: expected NAME:=VALUE"),
    }
}

pub fn run(a: NodeArgs) -> Result<ExitCode> {
    if a.print_params_file {
        print!("{}", render::params_file());
        return Ok(ExitCode::SUCCESS);
    }
    let rest = match a.ros_args.split_first() {
        None => &[][..],
        Some((first, rest)) if first == "--ros-args" => rest,
        Some((first, _)) => {
            bail!("unexpected argument `{first}` (ROS arguments go after --ros-args)")
        }
    };
    let ros = parse_ros_args(rest, NODE_NAME)?;
    if let Some(extra) = ros.trailing.first() {
        bail!("unexpected argument `{extra}` after `--ros-args ... --`; put yolact's own flags before --ros-args");
    }
    if let Some(level) = &ros.log_level {
        // env_logger's own filter still applies, so this can only make the log quieter.
        let filter = match level.to_ascii_lowercase().as_str() {
            "debug" => log::LevelFilter::Debug,
            "info" => log::LevelFilter::Info,
            "warn" => log::LevelFilter::Warn,
            "error" | "fatal" => log::LevelFilter::Error,
            other => bail!("--log-level `{other}`: expected debug, info, warn, error or fatal"),
        };
        log::set_max_level(filter);
    }
    let name = ros
        .node_name
        .clone()
        .unwrap_or_else(|| NODE_NAME.to_string());
    let namespace = ros.namespace.clone().unwrap_or_else(|| "/".to_string());
    let domain_id = match std::env::var("ROS_DOMAIN_ID") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|d| *d <= 232)
            .with_context(|| format!("ROS_DOMAIN_ID `{s}`: expected an integer 0..=232"))?,
        _ => 0,
    };
    let identity = NodeIdentity {
        name,
        namespace,
        domain_id,
    };
    // Before --dry-run, so that a dry run also rejects a bad value.
    let dds = dds_options_from_env()?;

    // Our own flags first, then --ros-args (which come last on a launch command line and win).
    let mut files: Vec<PathBuf> = a.params_file.iter().cloned().collect();
    files.extend(ros.params_files.iter().cloned());
    let mut overrides = a
        .param
        .iter()
        .map(|s| split_param(s))
        .collect::<Result<Vec<_>>>()?;
    overrides.extend(ros.params.iter().cloned());
    let fqn = yolact_ros2::node::names::node_fqn(&identity);
    let file_refs: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    let (mut params, resolved) = resolve_params_files(&file_refs, &overrides, &fqn)?;
    params.remaps = ros.remaps.clone();
    for (from, to) in &params.remaps {
        if !yolact_ros2::node::params::is_valid_topic(from)
            || !yolact_ros2::node::params::is_valid_topic(to)
        {
            bail!("remap `{from}:={to}`: both sides must be valid topic names");
        }
    }

    if a.dry_run {
        let (device, dtype) = resolve_device(&params.device, params.fp16)?;
        let host = load_host_weights(&params.weights, &params.config)?;
        let engine = yolact_ros2::engine::Engine::from_host(&host, &device, dtype)?;
        println!(
            "node {fqn} (ROS_DOMAIN_ID {domain_id}): model {} from {} on {}, {} camera(s), autostart {}",
            engine.config().name,
            host.source,
            device_name(&device),
            params.cameras.len(),
            params.autostart
        );
        println!("parameters:");
        print!("{}", render::resolved_listing(&resolved));
        print!("{}", format_table(&topic_table(&params, &identity)));
        return Ok(ExitCode::SUCCESS);
    }

    let Some(kind) = a.transport.or_else(default_kind) else {
        eprintln!(
            "error: this `yolact` was built without a ROS 2 transport; rebuild with \
             `--features ros` (r2r, in a sourced ROS 2 shell; colcon does this) or \
             `--features dds` (ros2-client, no ROS installation needed)"
        );
        return Ok(ExitCode::from(2));
    };
    let transport = match open_transport(kind, &identity, &dds) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let node = Node::start(params, identity, transport).context("starting the node")?;
    // Runs until `ros2 lifecycle set <node> shutdown` finalizes it (or the process is killed).
    while node.lifecycle().current_state().id != STATE_FINALIZED {
        std::thread::sleep(Duration::from_millis(200));
    }
    node.shutdown()?;
    Ok(ExitCode::SUCCESS)
}
