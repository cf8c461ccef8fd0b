//! The ROS 2 managed-node state machine (design article "Managed nodes"), with the ids and
//! labels of `lifecycle_msgs/msg/State` and `lifecycle_msgs/msg/Transition`, so `ros2 lifecycle`
//! works against it through a transport's lifecycle services.
//!
//! A transition runs in two steps as in rcl: the external transition (e.g. `configure`) moves the
//! primary state to its transition state (`configuring`), the node's callback runs, and
//! `transition_success` / `transition_failure` moves on to the goal or back to the start state.
//! Every step is published as a `lifecycle_msgs/msg/TransitionEvent`. A failed callback returns to
//! the start state (rcl's FAILURE); errors are not escalated to `errorprocessing`, because every
//! callback here cleans up after itself before reporting failure.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::transport::{LifecycleControl, LifecycleState, LifecycleTransition, RawPublisher};
use crate::bag::{BagError, CdrWriter};

pub const TRANSITION_EVENT_TYPE: &str = "lifecycle_msgs/msg/TransitionEvent";

// lifecycle_msgs/msg/State constants.
pub const STATE_UNKNOWN: u8 = 0;
pub const STATE_UNCONFIGURED: u8 = 1;
pub const STATE_INACTIVE: u8 = 2;
pub const STATE_ACTIVE: u8 = 3;
pub const STATE_FINALIZED: u8 = 4;
pub const STATE_CONFIGURING: u8 = 10;
pub const STATE_CLEANINGUP: u8 = 11;
pub const STATE_SHUTTINGDOWN: u8 = 12;
pub const STATE_ACTIVATING: u8 = 13;
pub const STATE_DEACTIVATING: u8 = 14;
pub const STATE_ERRORPROCESSING: u8 = 15;

// lifecycle_msgs/msg/Transition constants.
pub const TRANSITION_CONFIGURE: u8 = 1;
pub const TRANSITION_CLEANUP: u8 = 2;
pub const TRANSITION_ACTIVATE: u8 = 3;
pub const TRANSITION_DEACTIVATE: u8 = 4;
pub const TRANSITION_UNCONFIGURED_SHUTDOWN: u8 = 5;
pub const TRANSITION_INACTIVE_SHUTDOWN: u8 = 6;
pub const TRANSITION_ACTIVE_SHUTDOWN: u8 = 7;
pub const TRANSITION_ON_CONFIGURE_SUCCESS: u8 = 10;
pub const TRANSITION_ON_CONFIGURE_FAILURE: u8 = 12;
pub const TRANSITION_ON_CLEANUP_SUCCESS: u8 = 20;
pub const TRANSITION_ON_CLEANUP_FAILURE: u8 = 22;
pub const TRANSITION_ON_ACTIVATE_SUCCESS: u8 = 30;
pub const TRANSITION_ON_ACTIVATE_FAILURE: u8 = 32;
pub const TRANSITION_ON_DEACTIVATE_SUCCESS: u8 = 40;
pub const TRANSITION_ON_DEACTIVATE_FAILURE: u8 = 42;
pub const TRANSITION_ON_SHUTDOWN_SUCCESS: u8 = 50;
pub const TRANSITION_ON_SHUTDOWN_FAILURE: u8 = 52;

/// The label rcl gives a state id.
pub fn state_label(id: u8) -> &'static str {
    match id {
        STATE_UNCONFIGURED => "unconfigured",
        STATE_INACTIVE => "inactive",
        STATE_ACTIVE => "active",
        STATE_FINALIZED => "finalized",
        STATE_CONFIGURING => "configuring",
        STATE_CLEANINGUP => "cleaningup",
        STATE_SHUTTINGDOWN => "shuttingdown",
        STATE_ACTIVATING => "activating",
        STATE_DEACTIVATING => "deactivating",
        STATE_ERRORPROCESSING => "errorprocessing",
        _ => "unknown",
    }
}

fn state(id: u8) -> LifecycleState {
    LifecycleState {
        id,
        label: state_label(id).to_string(),
    }
}

/// What a managed node does in each transition; `Err` = the transition failed (logged, start
/// state restored). Called with the lifecycle's transition lock held, so never concurrently.
pub trait LifecycleHooks: Send + Sync {
    fn on_configure(&self) -> Result<(), String>;
    fn on_cleanup(&self) -> Result<(), String>;
    fn on_activate(&self) -> Result<(), String>;
    fn on_deactivate(&self) -> Result<(), String>;
    /// From any primary state but finalized; `from` says which.
    fn on_shutdown(&self, from: u8) -> Result<(), String>;
}

/// An external transition: id, label, start, transition state, goal on success, and the
/// callback-result transition ids (success, failure).
struct Edge {
    id: u8,
    label: &'static str,
    start: u8,
    via: u8,
    goal: u8,
    success: u8,
    failure: u8,
}

const EDGES: [Edge; 7] = [
    Edge {
        id: TRANSITION_CONFIGURE,
        label: "configure",
        start: STATE_UNCONFIGURED,
        via: STATE_CONFIGURING,
        goal: STATE_INACTIVE,
        success: TRANSITION_ON_CONFIGURE_SUCCESS,
        failure: TRANSITION_ON_CONFIGURE_FAILURE,
    },
    Edge {
        id: TRANSITION_CLEANUP,
        label: "cleanup",
        start: STATE_INACTIVE,
        via: STATE_CLEANINGUP,
        goal: STATE_UNCONFIGURED,
        success: TRANSITION_ON_CLEANUP_SUCCESS,
        failure: TRANSITION_ON_CLEANUP_FAILURE,
    },
    Edge {
        id: TRANSITION_ACTIVATE,
        label: "activate",
        start: STATE_INACTIVE,
        via: STATE_ACTIVATING,
        goal: STATE_ACTIVE,
        success: TRANSITION_ON_ACTIVATE_SUCCESS,
        failure: TRANSITION_ON_ACTIVATE_FAILURE,
    },
    Edge {
        id: TRANSITION_DEACTIVATE,
        label: "deactivate",
        start: STATE_ACTIVE,
        via: STATE_DEACTIVATING,
        goal: STATE_INACTIVE,
        success: TRANSITION_ON_DEACTIVATE_SUCCESS,
        failure: TRANSITION_ON_DEACTIVATE_FAILURE,
    },
    Edge {
        id: TRANSITION_UNCONFIGURED_SHUTDOWN,
        label: "shutdown",
        start: STATE_UNCONFIGURED,
        via: STATE_SHUTTINGDOWN,
        goal: STATE_FINALIZED,
        success: TRANSITION_ON_SHUTDOWN_SUCCESS,
        failure: TRANSITION_ON_SHUTDOWN_FAILURE,
    },
    Edge {
        id: TRANSITION_INACTIVE_SHUTDOWN,
        label: "shutdown",
        start: STATE_INACTIVE,
        via: STATE_SHUTTINGDOWN,
        goal: STATE_FINALIZED,
        success: TRANSITION_ON_SHUTDOWN_SUCCESS,
        failure: TRANSITION_ON_SHUTDOWN_FAILURE,
    },
    Edge {
        id: TRANSITION_ACTIVE_SHUTDOWN,
        label: "shutdown",
        start: STATE_ACTIVE,
        via: STATE_SHUTTINGDOWN,
        goal: STATE_FINALIZED,
        success: TRANSITION_ON_SHUTDOWN_SUCCESS,
        failure: TRANSITION_ON_SHUTDOWN_FAILURE,
    },
];

fn describe(id: u8, label: &str, start: u8, goal: u8) -> LifecycleTransition {
    LifecycleTransition {
        id,
        label: label.to_string(),
        start: state(start),
        goal: state(goal),
    }
}

/// `lifecycle_msgs/msg/TransitionEvent` as CDR (with encapsulation header).
pub fn transition_event_cdr(
    timestamp_ns: u64,
    transition_id: u8,
    transition_label: &str,
    start: u8,
    goal: u8,
) -> Result<Vec<u8>, BagError> {
    let mut w = CdrWriter::new(true);
    w.write_u64(timestamp_ns);
    w.write_u8(transition_id);
    w.write_string(transition_label)?;
    w.write_u8(start);
    w.write_string(state_label(start))?;
    w.write_u8(goal);
    w.write_string(state_label(goal))?;
    Ok(w.finish())
}

/// The state machine; implements [`LifecycleControl`] for the transports.
pub struct Lifecycle {
    state: Mutex<u8>,
    /// Serialises transitions; `state` stays readable (showing the transition state) meanwhile.
    transition: Mutex<()>,
    hooks: Arc<dyn LifecycleHooks>,
    events: Mutex<Option<Box<dyn RawPublisher>>>,
}

impl Lifecycle {
    pub fn new(hooks: Arc<dyn LifecycleHooks>) -> Self {
        Lifecycle {
            state: Mutex::new(STATE_UNCONFIGURED),
            transition: Mutex::new(()),
            hooks,
            events: Mutex::new(None),
        }
    }

    /// Where `~/transition_event` goes.
    pub fn set_event_publisher(&self, p: Box<dyn RawPublisher>) {
        *self.events.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
    }

    pub fn state_id(&self) -> u8 {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, id: u8, transition: u8, label: &str) {
        let start = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *s, id)
        };
        log::info!(
            "lifecycle: {} -> {} ({label})",
            state_label(start),
            state_label(id)
        );
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        if let Some(p) = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let r = transition_event_cdr(ns, transition, label, start, id)
                .map_err(|e| e.to_string())
                .and_then(|b| p.publish(&b).map_err(|e| e.to_string()));
            if let Err(e) = r {
                log::warn!("lifecycle: cannot publish the transition event: {e}");
            }
        }
    }

    /// Runs a transition; the `Err` text says why it was refused or failed.
    pub fn trigger(&self, transition_id: u8, label: &str) -> Result<(), String> {
        let _guard = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.state_id();
        let edge = EDGES.iter().find(|e| {
            e.start == current
                && if transition_id == 0 {
                    e.label == label
                } else {
                    e.id == transition_id
                }
        });
        let Some(edge) = edge else {
            let what = if transition_id == 0 {
                format!("`{label}`")
            } else {
                format!("{transition_id}")
            };
            return Err(format!(
                "transition {what} is not valid from state {}",
                state_label(current)
            ));
        };
        self.set(edge.via, edge.id, edge.label);
        let result = match edge.id {
            TRANSITION_CONFIGURE => self.hooks.on_configure(),
            TRANSITION_CLEANUP => self.hooks.on_cleanup(),
            TRANSITION_ACTIVATE => self.hooks.on_activate(),
            TRANSITION_DEACTIVATE => self.hooks.on_deactivate(),
            _ => self.hooks.on_shutdown(edge.start),
        };
        match result {
            Ok(()) => {
                self.set(edge.goal, edge.success, "transition_success");
                Ok(())
            }
            Err(e) => {
                log::error!("lifecycle: {} failed: {e}", edge.label);
                self.set(edge.start, edge.failure, "transition_failure");
                Err(format!("{} failed: {e}", edge.label))
            }
        }
    }
}

impl LifecycleControl for Lifecycle {
    fn current_state(&self) -> LifecycleState {
        state(self.state_id())
    }

    fn change_state(&self, transition_id: u8, label: &str) -> bool {
        match self.trigger(transition_id, label) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("lifecycle: {e}");
                false
            }
        }
    }

    fn available_states(&self) -> Vec<LifecycleState> {
        [
            STATE_UNKNOWN,
            STATE_UNCONFIGURED,
            STATE_INACTIVE,
            STATE_ACTIVE,
            STATE_FINALIZED,
            STATE_CONFIGURING,
            STATE_CLEANINGUP,
            STATE_SHUTTINGDOWN,
            STATE_ACTIVATING,
            STATE_DEACTIVATING,
            STATE_ERRORPROCESSING,
        ]
        .into_iter()
        .map(state)
        .collect()
    }

    fn available_transitions(&self) -> Vec<LifecycleTransition> {
        let current = self.state_id();
        EDGES
            .iter()
            .filter(|e| e.start == current)
            .map(|e| describe(e.id, e.label, e.start, e.via))
            .collect()
    }

    fn transition_graph(&self) -> Vec<LifecycleTransition> {
        let mut out = Vec::new();
        for e in &EDGES {
            out.push(describe(e.id, e.label, e.start, e.via));
        }
        // The callback results out of each transition state (shutdown's appear once).
        let mut seen = Vec::new();
        for e in &EDGES {
            if seen.contains(&e.via) {
                continue;
            }
            seen.push(e.via);
            out.push(describe(e.success, "transition_success", e.via, e.goal));
            out.push(describe(e.failure, "transition_failure", e.via, e.start));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bag::CdrReader;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    struct Hooks {
        fail_activate: AtomicBool,
        calls: Mutex<Vec<&'static str>>,
    }

    impl LifecycleHooks for Hooks {
        fn on_configure(&self) -> Result<(), String> {
            self.calls.lock().unwrap().push("configure");
            Ok(())
        }
        fn on_cleanup(&self) -> Result<(), String> {
            self.calls.lock().unwrap().push("cleanup");
            Ok(())
        }
        fn on_activate(&self) -> Result<(), String> {
            self.calls.lock().unwrap().push("activate");
            if self.fail_activate.load(Ordering::SeqCst) {
                Err("no camera".into())
            } else {
                Ok(())
            }
        }
        fn on_deactivate(&self) -> Result<(), String> {
            self.calls.lock().unwrap().push("deactivate");
            Ok(())
        }
        fn on_shutdown(&self, _from: u8) -> Result<(), String> {
            self.calls.lock().unwrap().push("shutdown");
            Ok(())
        }
    }

    #[test]
    fn walks_the_standard_graph_and_rejects_invalid_transitions() {
        let hooks = Arc::new(Hooks::default());
        let lc = Lifecycle::new(hooks.clone());
        assert_eq!(lc.current_state().label, "unconfigured");
        assert!(!lc.change_state(TRANSITION_ACTIVATE, ""));
        assert!(lc.change_state(0, "configure"));
        assert_eq!(lc.current_state(), state(2));
        hooks.fail_activate.store(true, Ordering::SeqCst);
        assert!(!lc.change_state(TRANSITION_ACTIVATE, ""));
        assert_eq!(lc.state_id(), STATE_INACTIVE);
        hooks.fail_activate.store(false, Ordering::SeqCst);
        assert!(lc.change_state(TRANSITION_ACTIVATE, ""));
        assert_eq!(lc.current_state().label, "active");
        let ids: Vec<u8> = lc.available_transitions().iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![4, 7]);
        assert!(!lc.change_state(TRANSITION_INACTIVE_SHUTDOWN, ""));
        assert!(lc.change_state(0, "shutdown"));
        assert_eq!(lc.state_id(), STATE_FINALIZED);
        assert!(lc.available_transitions().is_empty());
        assert_eq!(
            *hooks.calls.lock().unwrap(),
            vec!["configure", "activate", "activate", "shutdown"]
        );
        assert_eq!(lc.transition_graph().len(), 7 + 2 * 5);
    }

    #[test]
    fn transition_event_reads_back_field_by_field() {
        let b = transition_event_cdr(123, 1, "configure", 1, 10).unwrap();
        let mut r = CdrReader::new(&b).unwrap();
        assert_eq!(r.read_u64().unwrap(), 123);
        assert_eq!(r.read_u8().unwrap(), 1);
        assert_eq!(r.read_string().unwrap(), "configure");
        assert_eq!(r.read_u8().unwrap(), 1);
        assert_eq!(r.read_string().unwrap(), "unconfigured");
        assert_eq!(r.read_u8().unwrap(), 10);
        assert_eq!(r.read_string().unwrap(), "configuring");
        assert_eq!(r.remaining(), 0);
    }
}
