//! The ROS 2 node, free of any ROS dependency: everything here is tested in CI. The transports
//! (r2r, ros2-client) are thin adapters behind [`transport::Transport`].
//!
//! [`Node::start`] wires parameters ([`params`]), the managed-node state machine ([`lifecycle`]),
//! the latest-frame slots ([`latest`]), one inference worker that batches the cameras' pending
//! frames into one forward pass ([`worker`]), the outputs ([`outputs`]) and `/diagnostics`
//! ([`diagnostics`]) onto a transport. [`loopback`] is an in-process transport for tests.

pub mod args;
#[cfg(feature = "dds")]
pub mod dds;
mod depth3d;
pub mod diagnostics;
pub mod latest;
pub mod lifecycle;
pub mod loopback;
pub mod model;
pub mod names;
pub mod open;
pub mod outputs;
pub mod params;
#[cfg(feature = "ros")]
pub mod ros;
pub mod transport;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::tracking::StabilityReport;

use lifecycle::{Lifecycle, LifecycleHooks};
use model::HostWeights;
use names::{Role, TopicEntry};
use open::NodeIdentity;
use outputs::CameraOutputs;
use transport::{LifecycleControl, RawPublisher, SubscriptionId, Transport};

pub use depth3d::DepthCounters;
pub use params::{load_params, NodeParams};

/// Per-camera counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CameraStats {
    pub name: String,
    /// Resolved input topic.
    pub topic: String,
    /// Frames the subscription delivered.
    pub received: u64,
    /// Frames that went through inference (including ones whose publishing failed).
    pub processed: u64,
    /// Frames replaced by a newer one before inference, or discarded while inactive.
    pub dropped: u64,
    /// Frames whose outputs were published.
    pub published: u64,
    /// Overlay images drawn and published (only while the overlay topic has subscribers).
    pub overlays_published: u64,
    pub decode_errors: u64,
    /// Decode errors by reason (e.g. `encoding:yuv422`).
    pub decode_reasons: BTreeMap<String, u64>,
    pub inference_errors: u64,
    /// Forward passes this camera's frames were part of.
    pub batches: u64,
    /// Size of the last forward pass this camera was part of.
    pub last_batch_size: usize,
    /// Receive -> publish latency of the last published frame.
    pub last_latency: Option<Duration>,
    /// Header stamp (ns) of the last published frame.
    pub last_published_stamp_ns: Option<i64>,
    /// A frame is waiting in the slot.
    pub pending: bool,
    /// A frame of this camera is being processed now.
    pub in_flight: bool,
    /// Depth pairing counters (all zero for a camera without a depth topic).
    pub depth_pairing: crate::depth::PairerStats,
    pub depth: depth3d::DepthCounters,
}

/// A snapshot of the node's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStats {
    pub cameras: Vec<CameraStats>,
    /// Forward passes run.
    pub forward_passes: u64,
    /// Forward passes by batch size.
    pub batch_sizes: BTreeMap<usize, u64>,
    /// `lifecycle_msgs/msg/State` id.
    pub state: u8,
    /// Checkpoint held in host memory (configured).
    pub host_weights_loaded: bool,
    /// Engine built on the device (configured or active; dropped on deactivate).
    pub engine_loaded: bool,
}

impl NodeStats {
    /// The camera called `name`.
    pub fn camera(&self, name: &str) -> Option<&CameraStats> {
        self.cameras.iter().find(|c| c.name == name)
    }
}

/// Worker-side per-camera state.
#[derive(Default)]
struct CamRuntime {
    stats: CameraStats,
    /// Latencies (ms) of frames published since the last diagnostics tick.
    period_latencies: Vec<f64>,
    /// First message of each decode-error reason.
    decode_first: BTreeMap<String, String>,
    stability: Option<StabilityReport>,
}

/// The model: host weights from configure, the engine while configured/active.
#[derive(Default)]
struct ModelSlot {
    host: Option<Arc<HostWeights>>,
    engine: Option<Arc<Engine>>,
    device: String,
}

/// Everything the threads and the lifecycle hooks share.
struct Shared {
    params: NodeParams,
    identity: NodeIdentity,
    topics: Vec<TopicEntry>,
    transport: Mutex<Box<dyn Transport>>,
    latest: Arc<latest::Latest>,
    cams: Mutex<Vec<CamRuntime>>,
    /// Per camera, also for cameras without depth (never fed then).
    depth: Vec<Mutex<depth3d::DepthState>>,
    model: Mutex<ModelSlot>,
    outputs: Mutex<Vec<CameraOutputs>>,
    diag_pub: Mutex<Option<Box<dyn RawPublisher>>>,
    subs: Mutex<Vec<SubscriptionId>>,
    active: AtomicBool,
    activated_at: Mutex<Option<Instant>>,
    forward: Mutex<(u64, BTreeMap<usize, u64>)>,
    /// Bumped on every deactivate so a frame in flight across a deactivate is not published.
    epoch: std::sync::atomic::AtomicU64,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn engine(&self) -> Option<Arc<Engine>> {
        lock(&self.model).engine.clone()
    }

    fn input_topics(&self) -> impl Iterator<Item = &TopicEntry> {
        self.topics.iter().filter(|t| t.role == Role::Input)
    }

    fn configure(&self) -> Result<()> {
        let p = &self.params;
        if p.use_sim_time {
            log::info!(
                "use_sim_time: accepted; latencies and rates use the wall clock, outputs keep the input stamps"
            );
        }
        let (device, dtype) = model::resolve_device(&p.device, p.fp16)?;
        let t0 = Instant::now();
        let host = Arc::new(model::load_host_weights(&p.weights, &p.config)?);
        let engine = Arc::new(Engine::from_host(&host, &device, dtype)?);
        log::info!(
            "configure: model {} from {} on {} in {:.1} s",
            host.config.name,
            host.source,
            model::device_name(&device),
            t0.elapsed().as_secs_f64()
        );
        let mut outs: Vec<CameraOutputs> = (0..p.cameras.len())
            .map(|_| CameraOutputs::default())
            .collect();
        let mut diag = None;
        {
            let mut tr = lock(&self.transport);
            for t in &self.topics {
                if t.is_input() || t.role == Role::TransitionEvent {
                    continue;
                }
                let publisher = tr.advertise(&t.topic, &t.type_name, t.qos)?;
                log::info!("publish {} [{}] qos: {}", t.topic, t.type_name, t.qos);
                let cam = p.cameras.iter().position(|c| c.name == t.camera);
                match (t.role, cam) {
                    (Role::Diagnostics, _) => diag = Some(publisher),
                    (Role::Instances, Some(i)) => outs[i].instances = Some(publisher),
                    (Role::Detections, Some(i)) => outs[i].detections = Some(publisher),
                    (Role::LabelImage, Some(i)) => outs[i].label_image = Some(publisher),
                    (Role::Overlay, Some(i)) => outs[i].overlay = Some(publisher),
                    (Role::Detections3d, Some(i)) => outs[i].detections_3d = Some(publisher),
                    (Role::Points, Some(i)) => outs[i].points = Some(publisher),
                    _ => {}
                }
            }
        }
        *lock(&self.outputs) = outs;
        *lock(&self.diag_pub) = diag;
        let mut m = lock(&self.model);
        m.device = model::device_name(&device);
        m.host = Some(host);
        m.engine = Some(engine);
        Ok(())
    }

    fn activate(self: &Arc<Self>) -> Result<()> {
        {
            let mut m = lock(&self.model);
            if m.engine.is_none() {
                let host = m
                    .host
                    .clone()
                    .ok_or_else(|| Error::Invalid("activate without configured weights".into()))?;
                let (device, dtype) = model::resolve_device(&self.params.device, self.params.fp16)?;
                let t0 = Instant::now();
                m.engine = Some(Arc::new(Engine::from_host(&host, &device, dtype)?));
                log::info!(
                    "activate: engine rebuilt from host weights in {:.2} s",
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        *lock(&self.activated_at) = Some(Instant::now());
        self.active.store(true, Ordering::SeqCst);
        let mut ids = Vec::new();
        let mut tr = lock(&self.transport);
        for (i, t) in self.input_topics().enumerate() {
            let latest = self.latest.clone();
            let r = tr.subscribe(
                &t.topic,
                &t.type_name,
                t.qos,
                Box::new(move |data| latest.put(i, data)),
            );
            match r {
                Ok(id) => {
                    log::info!("subscribe {} [{}] qos: {}", t.topic, t.type_name, t.qos);
                    ids.push(id);
                }
                Err(e) => {
                    for id in ids {
                        let _ = tr.unsubscribe(id);
                    }
                    self.active.store(false, Ordering::SeqCst);
                    return Err(e.into());
                }
            }
        }
        let depth_inputs = self
            .topics
            .iter()
            .filter(|t| matches!(t.role, Role::DepthInput | Role::DepthInfoInput));
        for t in depth_inputs {
            let Some(cam) = self.params.cameras.iter().position(|c| c.name == t.camera) else {
                continue;
            };
            let me = self.clone();
            let info = t.role == Role::DepthInfoInput;
            let sink: transport::RawSink = Box::new(move |data| {
                if let Some(st) = me.depth.get(cam) {
                    if info {
                        depth3d::sink_info(st, data);
                    } else {
                        depth3d::sink_depth(st, data);
                    }
                }
            });
            match tr.subscribe(&t.topic, &t.type_name, t.qos, sink) {
                Ok(id) => {
                    log::info!("subscribe {} [{}] qos: {}", t.topic, t.type_name, t.qos);
                    ids.push(id);
                }
                Err(e) => {
                    for id in ids {
                        let _ = tr.unsubscribe(id);
                    }
                    self.active.store(false, Ordering::SeqCst);
                    return Err(e.into());
                }
            }
        }
        *lock(&self.subs) = ids;
        Ok(())
    }

    fn deactivate(&self) -> Result<()> {
        self.active.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let ids = std::mem::take(&mut *lock(&self.subs));
        let mut first_err = None;
        {
            let mut tr = lock(&self.transport);
            for id in ids {
                if let Err(e) = tr.unsubscribe(id) {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.latest.clear();
        for d in &self.depth {
            lock(d).pairer.clear();
        }
        // The device engine goes (its memory is freed once a frame in flight finishes); the host
        // weights stay so activate is quick.
        lock(&self.model).engine = None;
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    fn cleanup(&self) {
        *lock(&self.outputs) = Vec::new();
        *lock(&self.diag_pub) = None;
        *lock(&self.model) = ModelSlot::default();
    }
}

struct Hooks(Arc<Shared>);

impl LifecycleHooks for Hooks {
    fn on_configure(&self) -> std::result::Result<(), String> {
        self.0.configure().map_err(|e| {
            self.0.cleanup();
            e.to_string()
        })
    }
    fn on_cleanup(&self) -> std::result::Result<(), String> {
        self.0.cleanup();
        Ok(())
    }
    fn on_activate(&self) -> std::result::Result<(), String> {
        self.0.activate().map_err(|e| e.to_string())
    }
    fn on_deactivate(&self) -> std::result::Result<(), String> {
        self.0.deactivate().map_err(|e| e.to_string())
    }
    fn on_shutdown(&self, from: u8) -> std::result::Result<(), String> {
        let r = if from == lifecycle::STATE_ACTIVE {
            self.0.deactivate().map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        self.0.cleanup();
        r
    }
}

/// A running node: its threads, lifecycle and counters.
pub struct Node {
    shared: Arc<Shared>,
    lifecycle: Arc<Lifecycle>,
    latest: Arc<latest::Latest>,
    stop_diag: Option<mpsc::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Node {
    /// Validates params, calls `transport.serve_lifecycle(...)`, and if `autostart` configures +
    /// activates (an error there is returned: the node does not start half-way).
    pub fn start(
        params: NodeParams,
        identity: NodeIdentity,
        mut transport: Box<dyn Transport>,
    ) -> Result<Node> {
        for (from, to) in &params.remaps {
            if !params::is_valid_topic(from) || !params::is_valid_topic(to) {
                return Err(Error::Parameter(format!(
                    "remap `{from}:={to}`: both sides must be valid topic names"
                )));
            }
        }
        let topics = names::topic_table(&params, &identity);
        let events_topic = topics
            .iter()
            .find(|t| t.role == Role::TransitionEvent)
            .cloned()
            .ok_or_else(|| Error::Invalid("no transition event topic".into()))?;
        let events = transport.advertise(
            &events_topic.topic,
            &events_topic.type_name,
            events_topic.qos,
        )?;
        let latest = Arc::new(latest::Latest::new(params.cameras.len()));
        let cams = params
            .cameras
            .iter()
            .zip(topics.iter().filter(|t| t.role == Role::Input))
            .map(|(c, t)| CamRuntime {
                stats: CameraStats {
                    name: c.name.clone(),
                    topic: t.topic.clone(),
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect();
        let autostart = params.autostart;
        let depth = (0..params.cameras.len())
            .map(|_| Mutex::new(depth3d::DepthState::new(&params.depth)))
            .collect();
        let shared = Arc::new(Shared {
            params,
            identity,
            topics,
            transport: Mutex::new(transport),
            latest: latest.clone(),
            cams: Mutex::new(cams),
            depth,
            model: Mutex::new(ModelSlot::default()),
            outputs: Mutex::new(Vec::new()),
            diag_pub: Mutex::new(None),
            subs: Mutex::new(Vec::new()),
            active: AtomicBool::new(false),
            activated_at: Mutex::new(None),
            forward: Mutex::new((0, BTreeMap::new())),
            epoch: std::sync::atomic::AtomicU64::new(0),
        });
        let lifecycle = Arc::new(Lifecycle::new(Arc::new(Hooks(shared.clone()))));
        lifecycle.set_event_publisher(events);
        lock(&shared.transport).serve_lifecycle(lifecycle.clone())?;

        let (stop_tx, stop_rx) = mpsc::channel();
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("yolact-worker".into())
                .spawn(move || worker::run(&s))
                .map_err(|e| Error::Invalid(format!("cannot start the worker thread: {e}")))?,
        );
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("yolact-diagnostics".into())
                .spawn(move || worker::diagnostics_loop(&s, &stop_rx))
                .map_err(|e| Error::Invalid(format!("cannot start the diagnostics thread: {e}")))?,
        );
        let node = Node {
            shared,
            lifecycle,
            latest,
            stop_diag: Some(stop_tx),
            threads,
        };
        for t in &node.shared.topics {
            log::info!(
                "{} {} [{}] qos: {}",
                t.direction(),
                t.topic,
                t.type_name,
                t.qos
            );
        }
        if autostart {
            for (id, label) in [
                (lifecycle::TRANSITION_CONFIGURE, "configure"),
                (lifecycle::TRANSITION_ACTIVATE, "activate"),
            ] {
                if let Err(e) = node.lifecycle.trigger(id, label) {
                    let _ = node.shutdown();
                    return Err(Error::Invalid(format!("autostart: {e}")));
                }
            }
        }
        Ok(node)
    }

    /// The managed-node control the transport's lifecycle services use.
    pub fn lifecycle(&self) -> Arc<dyn LifecycleControl> {
        self.lifecycle.clone()
    }

    /// Every topic the node subscribes or publishes (resolved, remapped).
    pub fn topics(&self) -> &[TopicEntry] {
        &self.shared.topics
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.shared.identity
    }

    pub fn stats(&self) -> NodeStats {
        let counters = self.latest.counters();
        let pending = self.latest.pending();
        let cams = lock(&self.shared.cams);
        let (forward_passes, batch_sizes) = lock(&self.shared.forward).clone();
        let (host_weights_loaded, engine_loaded) = {
            let m = lock(&self.shared.model);
            (m.host.is_some(), m.engine.is_some())
        };
        NodeStats {
            host_weights_loaded,
            engine_loaded,
            cameras: cams
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut s = c.stats.clone();
                    if let Some(k) = counters.get(i) {
                        s.received = k.received;
                        s.dropped = k.dropped;
                    }
                    s.pending = pending.get(i).copied().unwrap_or(false);
                    if let Some(d) = self.shared.depth.get(i) {
                        (s.depth_pairing, s.depth) = lock(d).snapshot();
                    }
                    s
                })
                .collect(),
            forward_passes,
            batch_sizes,
            state: self.lifecycle.state_id(),
        }
    }

    /// Finalizes the lifecycle (unsubscribes, drops the model), stops the threads.
    pub fn shutdown(mut self) -> Result<()> {
        let r = if self.lifecycle.state_id() != lifecycle::STATE_FINALIZED {
            self.lifecycle
                .trigger(0, "shutdown")
                .map_err(Error::Invalid)
        } else {
            Ok(())
        };
        self.stop_threads();
        r
    }

    fn stop_threads(&mut self) {
        self.latest.stop();
        self.stop_diag.take();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("a node thread panicked");
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            if self.lifecycle.state_id() != lifecycle::STATE_FINALIZED {
                let _ = self.lifecycle.trigger(0, "shutdown");
            }
            self.stop_threads();
        }
    }
}
