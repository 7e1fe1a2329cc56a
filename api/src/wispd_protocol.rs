//! Messages between `wisp ctl` (or any client) and `wispd`, one compact JSON document per
//! SOCK_SEQPACKET message. This is the control plane's front door, not its create path: the
//! create path from `wispd` to a prepared shell is the binary control page.
//!
//! Every message may carry a `request_id` beside its fields (`Envelope`): the client picks it,
//! `wispd` logs it and returns it in the answer, so one request can be followed through logs.

use crate::config::VmConfig;
use serde::{Deserialize, Serialize};

/// Largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Longest request id accepted.
pub const REQUEST_ID_MAX: usize = 64;

/// A request or response with the client's request id beside its own fields on the wire:
/// `{"op":"list","request_id":"a1"}`, `{"status":"done","request_id":"a1"}`. A message
/// without one is still a valid request (older clients).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(flatten)]
    pub body: T,
}

/// A request id is 1 to `REQUEST_ID_MAX` characters of `[A-Za-z0-9._:-]`: safe in a log line
/// and in a fixed-size field.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= REQUEST_ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

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
    /// Restore the snapshot in directory `snapshot` (`vm.state`, `vm.mem`) into `count`
    /// prepared shells and resume each: one VM (`wisp ctl restore`) or `count` clones sharing
    /// the memory file's page cache (`wisp ctl clone`), each with its own VM generation.
    Restore {
        snapshot: String,
        #[serde(default = "one")]
        count: u32,
        #[serde(default)]
        sent_ns: u64,
    },
}

fn one() -> u32 {
    1
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
    /// The restored VMs, and how long wispd took: all of them, and each one's load.
    Restored {
        vms: Vec<VmSummary>,
        total_us: f64,
        each_us: Vec<f64>,
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

    #[test]
    fn the_request_id_travels_beside_the_fields_and_is_optional() {
        let msg = Envelope {
            request_id: Some("r-1".into()),
            body: CtlRequest::Destroy { id: "vm-1".into() },
        };
        let text = serde_json::to_string(&msg).unwrap();
        assert_eq!(text, r#"{"request_id":"r-1","op":"destroy","id":"vm-1"}"#);
        assert_eq!(
            serde_json::from_str::<Envelope<CtlRequest>>(&text).unwrap(),
            msg
        );
        let bare: Envelope<CtlRequest> = serde_json::from_str(r#"{"op":"list"}"#).unwrap();
        assert_eq!(bare.request_id, None);
        assert_eq!(bare.body, CtlRequest::List {});
        // Unknown fields are still refused with the envelope around the request.
        let odd = r#"{"op":"list","request_id":"x","y":1}"#;
        assert!(serde_json::from_str::<Envelope<CtlRequest>>(odd).is_err());
        let resp = Envelope {
            request_id: Some("r-2".into()),
            body: CtlResponse::Done,
        };
        let text = serde_json::to_string(&resp).unwrap();
        assert_eq!(text, r#"{"request_id":"r-2","status":"done"}"#);
        assert_eq!(
            serde_json::from_str::<Envelope<CtlResponse>>(&text).unwrap(),
            resp
        );
        // A client that knows nothing of request ids still reads the response.
        assert_eq!(
            serde_json::from_str::<CtlResponse>(&text).unwrap(),
            CtlResponse::Done
        );
    }

    #[test]
    fn request_ids_are_short_and_plain() {
        assert!(valid_request_id("4f2a-1796019867-3"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id("line\nbreak"));
        assert!(!valid_request_id(&"x".repeat(REQUEST_ID_MAX + 1)));
    }
}
