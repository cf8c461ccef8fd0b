//! The DDS transport: the node on a ROS 2 graph without a ROS installation (ros2-client over
//! RustDDS).
//!
//! ros2-client's publishers and subscriptions are typed serde, but the node's seam moves CDR
//! bytes, so topics go through RustDDS readers and writers with a pass-through adapter
//! ([`raw`]). The ros2-client `Node` still exists so that the process appears in the ROS graph
//! (`ros2 node list`), and it hosts the lifecycle services, which need ROS 2's request/reply
//! mapping ([`lifecycle`]), chosen by the caller through [`DdsOptions`].
//!
//! Names follow the ROS 2 DDS conventions: topic `/ns/camera/image_raw` is DDS topic
//! `rt/ns/camera/image_raw` of type `sensor_msgs::msg::dds_::Image_`.

mod lifecycle;
mod raw;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ros2_client::dds::rustdds;
use ros2_client::{Context, NodeName, NodeOptions};
use rustdds::no_key::{DataReader, DataWriter};
use rustdds::{policy, DataWriterStatus, QosPolicies, QosPolicyBuilder, StatusEvented, TopicKind};

use super::open::{DdsOptions, NodeIdentity};
use super::transport::{
    Durability, LifecycleControl, Qos, RawPublisher, RawSink, Reliability, SubscriptionId,
    Transport, TransportError,
};
use raw::RawAdapter;
pub use raw::{dds_topic_name, dds_type_name, RawCdr};

/// How often the reader thread looks for new samples. RustDDS readers can also be polled
/// through mio, but one sweep over a handful of readers every 2 ms costs nothing next to a
/// forward pass, and it keeps unsubscribe trivial (drop the reader between sweeps).
const POLL_PERIOD: Duration = Duration::from_millis(2);

struct Subscription {
    reader: DataReader<RawCdr, RawAdapter>,
    sink: RawSink,
    topic: String,
}

type Subscriptions = Arc<Mutex<BTreeMap<u64, Subscription>>>;

/// [`Transport`] over DDS with ROS 2 naming.
pub struct DdsTransport {
    identity: NodeIdentity,
    options: DdsOptions,
    node: ros2_client::dds::Node,
    participant: rustdds::DomainParticipant,
    publisher: rustdds::Publisher,
    subscriber: rustdds::Subscriber,
    subscriptions: Subscriptions,
    next_id: u64,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn err(topic: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::new(topic, e)
}

impl DdsTransport {
    /// [`Self::open_with`] the default options (Fast DDS' service mapping); the environment is
    /// not consulted (`yolact node` reads it at startup).
    pub fn open(identity: &NodeIdentity) -> Result<Self, TransportError> {
        Self::open_with(identity, &DdsOptions::default())
    }

    /// Joins DDS domain `identity.domain_id` as node `identity.namespace/identity.name`.
    pub fn open_with(
        identity: &NodeIdentity,
        dds_options: &DdsOptions,
    ) -> Result<Self, TransportError> {
        let fq = fully_qualified(identity);
        let context = Context::with_options(
            ros2_client::dds::ContextOptions::new().domain_id(identity.domain_id),
        )
        .map_err(|e| {
            err(
                &fq,
                format!("cannot join DDS domain {}: {e:?}", identity.domain_id),
            )
        })?;
        let node_name = NodeName::new(&identity.namespace, &identity.name)
            .map_err(|e| err(&fq, format!("invalid node name: {e:?}")))?;
        // Parameters live in the node's own YAML; ros2-client's parameter services would offer a
        // second, disconnected parameter store.
        let options = NodeOptions::new()
            .enable_rosout(false)
            .start_parameter_services(false);
        let node = context
            .new_node(node_name, options)
            .map_err(|e| err(&fq, format!("cannot create node: {e:?}")))?;
        let participant = context.domain_participant();
        let publisher = participant
            .create_publisher(&QosPolicies::qos_none())
            .map_err(|e| err(&fq, format!("cannot create DDS publisher: {e:?}")))?;
        let subscriber = participant
            .create_subscriber(&QosPolicies::qos_none())
            .map_err(|e| err(&fq, format!("cannot create DDS subscriber: {e:?}")))?;

        let subscriptions: Subscriptions = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let reader_thread = {
            let subscriptions = Arc::clone(&subscriptions);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("dds-readers".into())
                .spawn(move || poll_readers(&subscriptions, &stop))
                .map_err(|e| err(&fq, format!("cannot start the reader thread: {e}")))?
        };
        log::info!(
            "DDS transport: node {fq} on domain {} (ros2-client, RustDDS)",
            identity.domain_id
        );
        Ok(Self {
            identity: identity.clone(),
            options: *dds_options,
            node,
            participant,
            publisher,
            subscriber,
            subscriptions,
            next_id: 0,
            stop,
            threads: vec![reader_thread],
        })
    }

    fn topic(
        &self,
        topic: &str,
        type_name: &str,
        qos: &QosPolicies,
    ) -> Result<rustdds::Topic, TransportError> {
        let dds_name = dds_topic_name(topic)?;
        let dds_type = dds_type_name(type_name).map_err(|e| err(topic, e))?;
        self.participant
            .create_topic(dds_name, dds_type, qos, TopicKind::NoKey)
            .map_err(|e| err(topic, format!("cannot create DDS topic: {e:?}")))
    }
}

/// `/ns/name`, or `/name` in the root namespace.
pub(crate) fn fully_qualified(identity: &NodeIdentity) -> String {
    let ns = identity.namespace.trim_end_matches('/');
    format!("{ns}/{}", identity.name)
}

fn poll_readers(subscriptions: &Subscriptions, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut subs) = subscriptions.lock() {
            for sub in subs.values_mut() {
                loop {
                    match sub.reader.take_next_sample() {
                        Ok(Some(sample)) => (sub.sink)(sample.into_value().into_bytes()),
                        Ok(None) => break,
                        Err(e) => {
                            // A sample that does not decode is the sender's problem; the
                            // subscription stays up for the next one.
                            log::warn!("{}: dropped an unreadable DDS sample: {e:?}", sub.topic);
                            break;
                        }
                    }
                }
            }
        }
        std::thread::sleep(POLL_PERIOD);
    }
}

/// Our QoS subset as DDS policies. Reliable writers block for at most 100 ms when a reader's
/// queue is full, as rmw does by default.
pub fn dds_qos(qos: Qos) -> QosPolicies {
    let reliability = match qos.reliability {
        Reliability::Reliable => policy::Reliability::Reliable {
            max_blocking_time: rustdds::Duration::from_millis(100),
        },
        Reliability::BestEffort => policy::Reliability::BestEffort,
    };
    let durability = match qos.durability {
        Durability::Volatile => policy::Durability::Volatile,
        Durability::TransientLocal => policy::Durability::TransientLocal,
    };
    let depth = i32::try_from(qos.depth.max(1)).unwrap_or(i32::MAX);
    QosPolicyBuilder::new()
        .reliability(reliability)
        .durability(durability)
        .history(policy::History::KeepLast { depth })
        .build()
}

struct DdsPublisher {
    writer: DataWriter<RawCdr, RawAdapter>,
    topic: String,
    /// Matched readers as of the last PublicationMatched event. RustDDS has no matched-status
    /// query yet (`get_matched_subscriptions` is a panicking placeholder), so the count is
    /// folded from the writer's status events whenever it is asked for.
    matched: AtomicUsize,
}

impl RawPublisher for DdsPublisher {
    fn publish(&self, cdr: &[u8]) -> Result<(), TransportError> {
        let sample = RawCdr::from_message(cdr).map_err(|e| err(&self.topic, e))?;
        self.writer
            .write(sample, None)
            .map_err(|e| err(&self.topic, format!("DDS write failed: {e:?}")))
    }

    fn subscription_count(&self) -> Option<usize> {
        while let Some(status) = self.writer.try_recv_status() {
            if let DataWriterStatus::PublicationMatched { current, .. } = status {
                let n = usize::try_from(current.count()).unwrap_or(0);
                self.matched.store(n, Ordering::Relaxed);
            }
        }
        Some(self.matched.load(Ordering::Relaxed))
    }
}

impl Transport for DdsTransport {
    fn subscribe(
        &mut self,
        topic: &str,
        type_name: &str,
        qos: Qos,
        sink: RawSink,
    ) -> Result<SubscriptionId, TransportError> {
        let policies = dds_qos(qos);
        let dds_topic = self.topic(topic, type_name, &policies)?;
        let reader = self
            .subscriber
            .create_datareader_no_key::<RawCdr, RawAdapter>(&dds_topic, Some(policies))
            .map_err(|e| err(topic, format!("cannot create DDS reader: {e:?}")))?;
        let id = self.next_id;
        self.next_id += 1;
        self.subscriptions
            .lock()
            .map_err(|_| err(topic, "reader table poisoned"))?
            .insert(
                id,
                Subscription {
                    reader,
                    sink,
                    topic: topic.to_string(),
                },
            );
        log::info!("DDS: subscribed to {topic} [{type_name}] ({qos})");
        Ok(SubscriptionId(id))
    }

    fn unsubscribe(&mut self, id: SubscriptionId) -> Result<(), TransportError> {
        let removed = self
            .subscriptions
            .lock()
            .map_err(|_| err("unsubscribe", "reader table poisoned"))?
            .remove(&id.0);
        match removed {
            Some(sub) => {
                log::info!("DDS: unsubscribed from {}", sub.topic);
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
        let policies = dds_qos(qos);
        let dds_topic = self.topic(topic, type_name, &policies)?;
        let writer = self
            .publisher
            .create_datawriter_no_key::<RawCdr, RawAdapter>(&dds_topic, Some(policies))
            .map_err(|e| err(topic, format!("cannot create DDS writer: {e:?}")))?;
        log::info!("DDS: advertised {topic} [{type_name}] ({qos})");
        Ok(Box::new(DdsPublisher {
            writer,
            topic: topic.to_string(),
            matched: AtomicUsize::new(0),
        }))
    }

    fn serve_lifecycle(
        &mut self,
        control: Arc<dyn LifecycleControl>,
    ) -> Result<(), TransportError> {
        let fq = fully_qualified(&self.identity);
        let servers =
            lifecycle::Servers::create(&mut self.node, &fq, self.options.service_mapping)?;
        let stop = Arc::clone(&self.stop);
        let handle = std::thread::Builder::new()
            .name("dds-lifecycle".into())
            .spawn(move || servers.serve(control.as_ref(), &stop))
            .map_err(|e| err(&fq, format!("cannot start the lifecycle thread: {e}")))?;
        self.threads.push(handle);
        Ok(())
    }
}

impl Drop for DdsTransport {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_maps_policy_by_policy() {
        let q = dds_qos(Qos::SENSOR_DATA);
        assert_eq!(q.reliability(), Some(policy::Reliability::BestEffort));
        assert_eq!(q.durability(), Some(policy::Durability::Volatile));
        assert_eq!(q.history(), Some(policy::History::KeepLast { depth: 1 }));
        let q = dds_qos(Qos {
            reliability: Reliability::Reliable,
            durability: Durability::TransientLocal,
            depth: 7,
        });
        assert!(matches!(
            q.reliability(),
            Some(policy::Reliability::Reliable { .. })
        ));
        assert_eq!(q.durability(), Some(policy::Durability::TransientLocal));
        assert_eq!(q.history(), Some(policy::History::KeepLast { depth: 7 }));
        // KEEP_LAST(0) is not a valid DDS history; the seam promises at least 1.
        let q = dds_qos(Qos {
            depth: 0,
            ..Qos::DEFAULT
        });
        assert_eq!(q.history(), Some(policy::History::KeepLast { depth: 1 }));
    }

    #[test]
    fn node_names_are_fully_qualified() {
        let id = |ns: &str| NodeIdentity {
            name: "yolact".into(),
            namespace: ns.into(),
            domain_id: 0,
        };
        assert_eq!(fully_qualified(&id("/")), "/yolact");
        assert_eq!(fully_qualified(&id("/robot/front")), "/robot/front/yolact");
    }
}
