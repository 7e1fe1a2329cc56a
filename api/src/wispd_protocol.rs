//! Messages between `wisp ctl` (or any client) and `wispd`, one compact JSON document per
//! SOCK_SEQPACKET message. This is the control plane's front door, not its create path: the
//! create path from `wispd` to a prepared shell is the binary control page.

use crate::config::VmConfig;
use serde::{Deserialize, Serialize};

/// Largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum CtlRequest {
    /// Create a VM. `sent_ns` is the client's CLOCK_MONOTONIC time of sending, so the reply can
    /// carry request → first guest instruction. With `wait_boot`, reply once the guest wrote
    /// the boot timer (or after a few seconds).
    Create {
        config: Box<VmConfig>,
        #[serde(default)]
        sent_ns: u64,
        #[serde(default)]
        wait_boot: bool,
    },
    List {},
    Destroy {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Console {
        id: String,
    },
    /// Pool state: prepared shells waiting.
    Status {},
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmSummary {
    pub id: String,
    pub pid: u32,
    pub state: String,
    pub mem_size_mib: u32,
    pub vcpu_count: u8,
    /// The VM's REST API socket, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_socket: Option<String>,
}

/// Timings of one create, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateTimes {
    /// Request sent by the client → the guest's first instruction (the shell's first entry).
    pub request_to_first_entry_us: Option<f64>,
    /// Doorbell rung by wispd → first entry.
    pub doorbell_to_first_entry_us: Option<f64>,
    /// Request sent → guest wrote the boot timer (only with `wait_boot`).
    pub request_to_boot_timer_us: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CtlResponse {
    Created {
        vm: VmSummary,
        times: CreateTimes,
        /// No prepared shell fitted: the VM was cold-started.
        cold: bool,
    },
    Vms {
        vms: Vec<VmSummary>,
    },
    Done,
    Console {
        text: String,
    },
    Status {
        prepared: usize,
        running: usize,
    },
    Error {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        let req = CtlRequest::Destroy { id: "vm-1".into() };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(text, r#"{"op":"destroy","id":"vm-1"}"#);
        assert_eq!(serde_json::from_str::<CtlRequest>(&text).unwrap(), req);
        assert!(serde_json::from_str::<CtlRequest>(r#"{"op":"list","x":1}"#).is_err());
        assert!(serde_json::from_str::<CtlRequest>(r#"{"op":"reboot"}"#).is_err());
    }
}
