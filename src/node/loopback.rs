//! An in-process [`Transport`]: publishers deliver synchronously to the matching subscriptions of
//! every clone of the same loopback. Tests (and the DDS adapter's tests) drive the node with it:
//! give the node one clone, keep another to publish images and receive outputs.
//!
//! Matching follows DDS: same topic and type, and a reliable subscription does not match a
//! best-effort publisher. `subscription_count` is exact.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::transport::{
    LifecycleControl, Qos, RawPublisher, RawSink, Reliability, SubscriptionId, Transport,
    TransportError,
};

struct Sub {
    id: SubscriptionId,
    topic: String,
    type_name: String,
    qos: Qos,
    // Each sink has its own lock so a slow sink never blocks delivery to other topics.
    sink: Arc<Mutex<RawSink>>,
}

#[derive(Default)]
struct Graph {
    next_id: u64,
    subs: Vec<Sub>,
    /// topic -> (type, qos) of every publisher ever advertised, for [`LoopbackTransport::topics`].
    advertised: BTreeMap<String, Vec<(String, Qos)>>,
    lifecycle: Option<Arc<dyn LifecycleControl>>,
}

fn compatible(pub_qos: Qos, sub_qos: Qos) -> bool {
    !(sub_qos.reliability == Reliability::Reliable
        && pub_qos.reliability == Reliability::BestEffort)
}

/// A cheap handle; clones share one graph.
#[derive(Clone, Default)]
pub struct LoopbackTransport {
    graph: Arc<Mutex<Graph>>,
}

impl LoopbackTransport {
    pub fn new() -> Self {
        Self::default()
    }

    /// The lifecycle control the node registered through [`Transport::serve_lifecycle`].
    pub fn lifecycle(&self) -> Option<Arc<dyn LifecycleControl>> {
        self.lock().lifecycle.clone()
    }

    /// Every advertised topic with its type and QoS.
    pub fn advertised(&self) -> BTreeMap<String, Vec<(String, Qos)>> {
        self.lock().advertised.clone()
    }

    /// Subscribed topics with their type and QoS (one entry per subscription).
    pub fn subscriptions(&self) -> Vec<(String, String, Qos)> {
        self.lock()
            .subs
            .iter()
            .map(|s| (s.topic.clone(), s.type_name.clone(), s.qos))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Graph> {
        // A panicking sink must not take the whole graph down with it.
        self.graph.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Transport for LoopbackTransport {
    fn subscribe(
        &mut self,
        topic: &str,
        type_name: &str,
        qos: Qos,
        sink: RawSink,
    ) -> Result<SubscriptionId, TransportError> {
        let mut g = self.lock();
        g.next_id += 1;
        let id = SubscriptionId(g.next_id);
        g.subs.push(Sub {
            id,
            topic: topic.to_string(),
            type_name: type_name.to_string(),
            qos,
            sink: Arc::new(Mutex::new(sink)),
        });
        Ok(id)
    }

    fn unsubscribe(&mut self, id: SubscriptionId) -> Result<(), TransportError> {
        let mut g = self.lock();
        let before = g.subs.len();
        g.subs.retain(|s| s.id != id);
        if g.subs.len() == before {
            return Err(TransportError::new("", format!("no subscription {}", id.0)));
        }
        Ok(())
    }

    fn advertise(
        &mut self,
        topic: &str,
        type_name: &str,
        qos: Qos,
    ) -> Result<Box<dyn RawPublisher>, TransportError> {
        self.lock()
            .advertised
            .entry(topic.to_string())
            .or_default()
            .push((type_name.to_string(), qos));
        Ok(Box::new(LoopbackPublisher {
            graph: self.clone(),
            topic: topic.to_string(),
            type_name: type_name.to_string(),
            qos,
        }))
    }

    fn serve_lifecycle(
        &mut self,
        control: Arc<dyn LifecycleControl>,
    ) -> Result<(), TransportError> {
        self.lock().lifecycle = Some(control);
        Ok(())
    }
}

struct LoopbackPublisher {
    graph: LoopbackTransport,
    topic: String,
    type_name: String,
    qos: Qos,
}

impl LoopbackPublisher {
    fn matching(&self) -> Vec<Arc<Mutex<RawSink>>> {
        self.graph
            .lock()
            .subs
            .iter()
            .filter(|s| {
                s.topic == self.topic
                    && s.type_name == self.type_name
                    && compatible(self.qos, s.qos)
            })
            .map(|s| s.sink.clone())
            .collect()
    }
}

impl RawPublisher for LoopbackPublisher {
    fn publish(&self, cdr: &[u8]) -> Result<(), TransportError> {
        // The graph lock is released before the sinks run, so a sink may publish or subscribe.
        for sink in self.matching() {
            let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
            (s)(cdr.to_vec());
        }
        Ok(())
    }

    fn subscription_count(&self) -> Option<usize> {
        Some(self.matching().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::transport::Qos;
    use std::sync::mpsc;

    #[test]
    fn delivers_to_matching_topic_type_and_qos_only() {
        let mut a = LoopbackTransport::new();
        let mut b = a.clone();
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        let id = b
            .subscribe(
                "/t",
                "x/msg/A",
                Qos::SENSOR_DATA,
                Box::new(move |m| tx.send(m).unwrap()),
            )
            .unwrap();
        b.subscribe(
            "/t",
            "x/msg/A",
            Qos::DEFAULT,
            Box::new(move |m| tx2.send(m).unwrap()),
        )
        .unwrap();
        let reliable = a.advertise("/t", "x/msg/A", Qos::DEFAULT).unwrap();
        let best_effort = a.advertise("/t", "x/msg/A", Qos::SENSOR_DATA).unwrap();
        let other_type = a.advertise("/t", "x/msg/B", Qos::DEFAULT).unwrap();
        assert_eq!(reliable.subscription_count(), Some(2));
        assert_eq!(best_effort.subscription_count(), Some(1));
        assert_eq!(other_type.subscription_count(), Some(0));
        reliable.publish(&[1]).unwrap();
        best_effort.publish(&[2]).unwrap();
        other_type.publish(&[3]).unwrap();
        let got: Vec<Vec<u8>> = rx.try_iter().collect();
        assert_eq!(got, vec![vec![1], vec![1], vec![2]]);
        b.unsubscribe(id).unwrap();
        assert_eq!(reliable.subscription_count(), Some(1));
        assert!(b.unsubscribe(id).is_err());
    }
}
