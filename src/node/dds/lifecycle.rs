//! `lifecycle_msgs` services over DDS, so `ros2 lifecycle set/get/list` reach a DDS-transport
//! node: ros2-client servers with serde mirrors of the service types.
//!
//! The request/reply mapping differs between rmw implementations; the caller picks it
//! ([`crate::node::open::ServiceMapping`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ros2_client::dds::{Server, ServiceMapping as RmwMapping};
use ros2_client::{Message, Name, QosProfile, ServiceTypeName};
use serde::{Deserialize, Serialize};

use crate::node::open::ServiceMapping;
use crate::node::transport::{
    LifecycleControl, LifecycleState, LifecycleTransition, TransportError,
};

const POLL_PERIOD: Duration = Duration::from_millis(10);

/// `lifecycle_msgs/msg/Transition` (constants omitted: they are ids on the wire).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    pub id: u8,
    pub label: String,
}

/// `lifecycle_msgs/msg/State`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub id: u8,
    pub label: String,
}

/// `lifecycle_msgs/msg/TransitionDescription`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransitionDescription {
    pub transition: Transition,
    pub start_state: State,
    pub goal_state: State,
}

/// `lifecycle_msgs/srv/ChangeState` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeStateRequest {
    pub transition: Transition,
}
impl Message for ChangeStateRequest {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeStateResponse {
    pub success: bool,
}
impl Message for ChangeStateResponse {}

/// The request of GetState / GetAvailableStates / GetAvailableTransitions: an empty IDL struct,
/// which rosidl gives one placeholder byte.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmptyRequest {
    pub structure_needs_at_least_one_member: u8,
}
impl Message for EmptyRequest {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetStateResponse {
    pub current_state: State,
}
impl Message for GetStateResponse {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetAvailableStatesResponse {
    pub available_states: Vec<State>,
}
impl Message for GetAvailableStatesResponse {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetAvailableTransitionsResponse {
    pub available_transitions: Vec<TransitionDescription>,
}
impl Message for GetAvailableTransitionsResponse {}

fn state(s: &LifecycleState) -> State {
    State {
        id: s.id,
        label: s.label.clone(),
    }
}

fn description(t: &LifecycleTransition) -> TransitionDescription {
    TransitionDescription {
        transition: Transition {
            id: t.id,
            label: t.label.clone(),
        },
        start_state: state(&t.start),
        goal_state: state(&t.goal),
    }
}

fn rmw_mapping(mapping: ServiceMapping) -> RmwMapping {
    match mapping {
        ServiceMapping::Enhanced => RmwMapping::Enhanced,
        ServiceMapping::Cyclone => RmwMapping::Cyclone,
        ServiceMapping::Basic => RmwMapping::Basic,
    }
}

type Srv<Req, Resp> = Server<Req, Resp>;

/// The five lifecycle services of one node.
pub struct Servers {
    change_state: Srv<ChangeStateRequest, ChangeStateResponse>,
    get_state: Srv<EmptyRequest, GetStateResponse>,
    get_available_states: Srv<EmptyRequest, GetAvailableStatesResponse>,
    get_available_transitions: Srv<EmptyRequest, GetAvailableTransitionsResponse>,
    get_transition_graph: Srv<EmptyRequest, GetAvailableTransitionsResponse>,
}

fn create<Req: Message + Clone + 'static, Resp: Message + 'static>(
    node: &mut ros2_client::dds::Node,
    mapping: RmwMapping,
    fq_node: &str,
    service: &str,
    type_name: &str,
) -> Result<Srv<Req, Resp>, TransportError> {
    let full = format!("{fq_node}/{service}");
    let name = Name::new(fq_node, service)
        .map_err(|e| TransportError::new(&full, format!("invalid service name: {e:?}")))?;
    // rmw's services default: reliable, volatile, keep last 10.
    let qos =
        QosProfile::publisher_default().history(ros2_client::qos::History::KeepLast { depth: 10 });
    node.create_server(
        mapping,
        &name,
        &ServiceTypeName::new("lifecycle_msgs", type_name),
        qos.clone(),
        qos,
    )
    .map_err(|e| TransportError::new(&full, format!("cannot create service: {e:?}")))
}

impl Servers {
    pub fn create(
        node: &mut ros2_client::dds::Node,
        fq_node: &str,
        mapping: ServiceMapping,
    ) -> Result<Self, TransportError> {
        log::info!(
            "DDS: lifecycle services under {fq_node} ({} request/reply mapping)",
            mapping.name()
        );
        let mapping = rmw_mapping(mapping);
        Ok(Self {
            change_state: create(node, mapping, fq_node, "change_state", "ChangeState")?,
            get_state: create(node, mapping, fq_node, "get_state", "GetState")?,
            get_available_states: create(
                node,
                mapping,
                fq_node,
                "get_available_states",
                "GetAvailableStates",
            )?,
            get_available_transitions: create(
                node,
                mapping,
                fq_node,
                "get_available_transitions",
                "GetAvailableTransitions",
            )?,
            get_transition_graph: create(
                node,
                mapping,
                fq_node,
                "get_transition_graph",
                "GetAvailableTransitions",
            )?,
        })
    }

    /// Answers requests until `stop`.
    pub fn serve(&self, control: &dyn LifecycleControl, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            answer(&self.change_state, |r: ChangeStateRequest| {
                ChangeStateResponse {
                    success: control.change_state(r.transition.id, &r.transition.label),
                }
            });
            answer(&self.get_state, |_| GetStateResponse {
                current_state: state(&control.current_state()),
            });
            answer(&self.get_available_states, |_| GetAvailableStatesResponse {
                available_states: control.available_states().iter().map(state).collect(),
            });
            answer(&self.get_available_transitions, |_| {
                GetAvailableTransitionsResponse {
                    available_transitions: control
                        .available_transitions()
                        .iter()
                        .map(description)
                        .collect(),
                }
            });
            answer(&self.get_transition_graph, |_| {
                GetAvailableTransitionsResponse {
                    available_transitions: control
                        .transition_graph()
                        .iter()
                        .map(description)
                        .collect(),
                }
            });
            std::thread::sleep(POLL_PERIOD);
        }
    }
}

fn answer<Req: Message + Clone + 'static, Resp: Message + 'static>(
    server: &Srv<Req, Resp>,
    mut handle: impl FnMut(Req) -> Resp,
) {
    loop {
        match server.receive_request() {
            Ok(Some((id, request))) => {
                if let Err(e) = server.send_response(id, handle(request)) {
                    log::warn!("lifecycle service reply failed: {e:?}");
                }
            }
            Ok(None) => break,
            Err(e) => {
                log::warn!("lifecycle service request unreadable: {e:?}");
                break;
            }
        }
    }
}
