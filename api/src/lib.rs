//! Wisp's API layer: the VM configuration models shared by every front end, the typed
//! `VmmAction` boundary to the VMM thread, the configuration store with its validation, and the
//! REST server on a Unix socket. Knows nothing of KVM or devices (DESIGN.md §2).

pub mod action;
pub mod config;
pub mod control_page;
pub mod metrics;
pub mod resources;
pub mod response;
pub mod routes;
pub mod seqpacket;
pub mod server;
pub mod validate;
pub mod vmm_channel;
pub mod wispd_protocol;

pub use action::{
    ErrorKind, InstanceInfo, VersionInfo, VmState, VmmAction, VmmActionError, VmmData,
};
pub use config::{
    BootSource, ConfigFileError, Drive, DriveUpdate, Entropy, LogLevel, Logger, MachineConfig,
    MachineConfigUpdate, Metrics, NetworkInterface, RateLimiter, TokenBucket, VmConfig, Vsock,
};
pub use metrics::{ApiMetrics, ApiMetricsSnapshot};
pub use resources::{host_mem_mib, HostLimits, ResourcesError, VmResources};
pub use server::{
    spawn_api_server, spawn_api_server_with, ApiServerHandle, ServerConfig, ServerError,
};
pub use vmm_channel::{
    api_channel, new_request_id, request_id_or_new, ApiReceiver, ApiRequest, ApiSender,
    ChannelError, ReplySender, VmmResult,
};
