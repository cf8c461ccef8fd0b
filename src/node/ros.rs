//! The rcl transport (r2r): what colcon builds use on a machine with ROS 2.
//!
//! Topics go through r2r's raw APIs (`subscribe_raw`, `create_publisher_untyped` +
//! `publish_raw`), which take the type as a string: our own messages need no generated Rust
//! types, and the adapter type-checks in CI with `r2r/doc-only`, where nothing can link. The
//! lifecycle services use r2r's generated `lifecycle_msgs`, which every ROS 2 installation has.
//!
//! r2r's node is driven by `spin_once`; one thread spins it, and each subscription's stream is
//! drained by its own small thread so a slow consumer of one topic cannot stall the others.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::channel::oneshot;
use futures::{future, Stream, StreamExt};
use r2r::lifecycle_msgs::{msg as lmsg, srv as lsrv};

use super::open::NodeIdentity;
use super::transport::{
    Durability, LifecycleControl, LifecycleState, LifecycleTransition, Qos, RawPublisher, RawSink,
    Reliability, SubscriptionId, Transport, TransportError,
};

const SPIN_TIMEOUT: Duration = Duration::from_millis(10);

/// [`Transport`] over rcl.
pub struct RosTransport {
    node: Arc<Mutex<r2r::Node>>,
    fq_name: String,
    stop: Arc<AtomicBool>,
    cancels: BTreeMap<u64, oneshot::Sender<()>>,
    next_id: u64,
    threads: Vec<JoinHandle<()>>,
}

fn err(topic: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::new(topic, e)
}

/// Our QoS subset as an rcl profile.
pub fn ros_qos(qos: Qos) -> r2r::QosProfile {
    let p = r2r::QosProfile::default().keep_last(qos.depth.max(1));
    let p = match qos.reliability {
        Reliability::Reliable => p.reliable(),
        Reliability::BestEffort => p.best_effort(),
    };
    match qos.durability {
        Durability::Volatile => p.volatile(),
        Durability::TransientLocal => p.transient_local(),
    }
}

impl RosTransport {
    /// Creates the rcl context and node. rcl reads `--ros-args` (remaps, `__ns`, `__node`,
    /// parameters files) from the process arguments itself, so the node name r2r reports can
    /// differ from `identity`; the services are named after the one rcl reports.
    pub fn open(identity: &NodeIdentity) -> Result<Self, TransportError> {
        let ctx = r2r::Context::create().map_err(|e| {
            err(
                &identity.name,
                format!("cannot create the rcl context: {e}"),
            )
        })?;
        let ns = if identity.namespace == "/" {
            ""
        } else {
            identity.namespace.as_str()
        };
        let node = r2r::Node::create(ctx, &identity.name, ns)
            .map_err(|e| err(&identity.name, format!("cannot create the rcl node: {e}")))?;
        let name = node.name().unwrap_or_else(|_| identity.name.clone());
        let namespace = node.namespace().unwrap_or_else(|_| ns.to_string());
        let fq_name = format!("{}/{name}", namespace.trim_end_matches('/'));
        let node = Arc::new(Mutex::new(node));
        let stop = Arc::new(AtomicBool::new(false));
        let spinner = {
            let node = Arc::clone(&node);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("rcl-spin".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match node.lock() {
                            Ok(mut n) => n.spin_once(SPIN_TIMEOUT),
                            Err(_) => break,
                        }
                        // Let subscribe/advertise take the lock between spins.
                        std::thread::yield_now();
                    }
                })
                .map_err(|e| err(&fq_name, format!("cannot start the spin thread: {e}")))?
        };
        log::info!("rcl transport: node {fq_name} (r2r)");
        Ok(Self {
            node,
            fq_name,
            stop,
            cancels: BTreeMap::new(),
            next_id: 0,
            threads: vec![spinner],
        })
    }

    fn with_node<T>(
        &self,
        topic: &str,
        f: impl FnOnce(&mut r2r::Node) -> r2r::Result<T>,
    ) -> Result<T, TransportError> {
        let mut node = self
            .node
            .lock()
            .map_err(|_| err(topic, "rcl node poisoned"))?;
        f(&mut node).map_err(|e| err(topic, e))
    }

    fn spawn(
        &mut self,
        name: &str,
        task: impl FnOnce() + Send + 'static,
    ) -> Result<(), TransportError> {
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(task)
            .map_err(|e| err(name, format!("cannot start thread: {e}")))?;
        self.threads.push(handle);
        Ok(())
    }
}

struct RosPublisher {
    // r2r's untyped publisher is Send but not Sync; the seam shares publishers between threads.
    publisher: Mutex<r2r::PublisherUntyped>,
    topic: String,
}

impl RawPublisher for RosPublisher {
    fn publish(&self, cdr: &[u8]) -> Result<(), TransportError> {
        self.publisher
            .lock()
            .map_err(|_| err(&self.topic, "publisher poisoned"))?
            .publish_raw(cdr)
            .map_err(|e| err(&self.topic, e))
    }

    fn subscription_count(&self) -> Option<usize> {
        // rcl counts other processes only; a same-process subscriber (composition) is not a use
        // case of this binary.
        self.publisher
            .lock()
            .ok()?
            .get_inter_process_subscription_count()
            .ok()
    }
}

impl Transport for RosTransport {
    fn subscribe(
        &mut self,
        topic: &str,
        type_name: &str,
        qos: Qos,
        mut sink: RawSink,
    ) -> Result<SubscriptionId, TransportError> {
        let stream = self.with_node(topic, |n| n.subscribe_raw(topic, type_name, ros_qos(qos)))?;
        let (cancel, cancelled) = oneshot::channel::<()>();
        let id = self.next_id;
        self.next_id += 1;
        self.spawn(&format!("rcl-sub-{id}"), move || {
            let drain = stream.for_each(move |msg| {
                sink(msg);
                future::ready(())
            });
            // Dropping the stream is how r2r ends a subscription (the next spin removes it).
            futures::executor::block_on(future::select(drain, cancelled));
        })?;
        self.cancels.insert(id, cancel);
        log::info!("rcl: subscribed to {topic} [{type_name}] ({qos})");
        Ok(SubscriptionId(id))
    }

    fn unsubscribe(&mut self, id: SubscriptionId) -> Result<(), TransportError> {
        match self.cancels.remove(&id.0) {
            // The receiver may already be gone when the node shut down; either way it is over.
            Some(cancel) => {
                let _ = cancel.send(());
                Ok(())
            }
            None => Err(err("unsubscribe", format!("no subscription {}", id.0))),
        }
    }

    fn advertise(
        &mut self,
        topic: &str,
        type_name: &str,
        qos: Qos,
    ) -> Result<Box<dyn RawPublisher>, TransportError> {
        let publisher = self.with_node(topic, |n| {
            n.create_publisher_untyped(topic, type_name, ros_qos(qos))
        })?;
        log::info!("rcl: advertised {topic} [{type_name}] ({qos})");
        Ok(Box::new(RosPublisher {
            publisher: Mutex::new(publisher),
            topic: topic.to_string(),
        }))
    }

    fn serve_lifecycle(
        &mut self,
        control: Arc<dyn LifecycleControl>,
    ) -> Result<(), TransportError> {
        let fq = self.fq_name.clone();
        let qos = r2r::QosProfile::services_default;
        let name = |s: &str| format!("{fq}/{s}");
        let change = self.with_node(&fq, |n| {
            n.create_service::<lsrv::ChangeState::Service>(&name("change_state"), qos())
        })?;
        let get = self.with_node(&fq, |n| {
            n.create_service::<lsrv::GetState::Service>(&name("get_state"), qos())
        })?;
        let states = self.with_node(&fq, |n| {
            n.create_service::<lsrv::GetAvailableStates::Service>(
                &name("get_available_states"),
                qos(),
            )
        })?;
        let transitions = self.with_node(&fq, |n| {
            n.create_service::<lsrv::GetAvailableTransitions::Service>(
                &name("get_available_transitions"),
                qos(),
            )
        })?;
        let graph = self.with_node(&fq, |n| {
            n.create_service::<lsrv::GetAvailableTransitions::Service>(
                &name("get_transition_graph"),
                qos(),
            )
        })?;
        self.spawn("rcl-lifecycle", move || {
            let c = control.as_ref();
            let change = serve(change, |r: lsrv::ChangeState::Request| {
                lsrv::ChangeState::Response {
                    success: c.change_state(r.transition.id, &r.transition.label),
                }
            });
            let get = serve(get, |_| lsrv::GetState::Response {
                current_state: state(&c.current_state()),
            });
            let states = serve(states, |_| lsrv::GetAvailableStates::Response {
                available_states: c.available_states().iter().map(state).collect(),
            });
            let transitions = serve(transitions, |_| lsrv::GetAvailableTransitions::Response {
                available_transitions: c.available_transitions().iter().map(description).collect(),
            });
            let graph = serve(graph, |_| lsrv::GetAvailableTransitions::Response {
                available_transitions: c.transition_graph().iter().map(description).collect(),
            });
            futures::executor::block_on(future::join5(change, get, states, transitions, graph));
        })?;
        log::info!("rcl: lifecycle services under {fq}");
        Ok(())
    }
}

/// Answers every request of one service until the node goes away.
async fn serve<T>(
    requests: impl Stream<Item = r2r::ServiceRequest<T>> + Unpin,
    mut answer: impl FnMut(T::Request) -> T::Response,
) where
    T: r2r::WrappedServiceTypeSupport + 'static,
{
    requests
        .for_each(move |req| {
            let response = answer(req.message.clone());
            if let Err(e) = req.respond(response) {
                log::warn!("lifecycle service reply failed: {e}");
            }
            future::ready(())
        })
        .await;
}

fn state(s: &LifecycleState) -> lmsg::State {
    lmsg::State {
        id: s.id,
        label: s.label.clone(),
    }
}

fn description(t: &LifecycleTransition) -> lmsg::TransitionDescription {
    lmsg::TransitionDescription {
        transition: lmsg::Transition {
            id: t.id,
            label: t.label.clone(),
        },
        start_state: state(&t.start),
        goal_state: state(&t.goal),
    }
}

impl Drop for RosTransport {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (_, cancel) in std::mem::take(&mut self.cancels) {
            let _ = cancel.send(());
        }
        // Only the spinner is joined: service threads end with the node, which may outlive us
        // through their streams.
        if !self.threads.is_empty() {
            let spinner = self.threads.remove(0);
            let _ = spinner.join();
        }
    }
}
