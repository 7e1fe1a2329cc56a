//! Wisp's API layer without a runtime: the VM configuration models shared by every front end,
//! the typed `VmmAction` boundary to the VMM thread and its channel, the configuration store
//! with its validation, the noxs control page and the wispd protocol. Knows nothing of KVM,
//! devices or HTTP (the REST server is wisp-http, above this crate; docs/design.md §2).

pub mod action;
pub mod config;
pub mod control_page;
pub mod metrics;
pub mod resources;
pub mod seqpacket;
pub mod snapshot;
pub mod validate;
pub mod vmm_channel;
pub mod wispd_protocol;

pub use action::{
    ErrorKind, InstanceInfo, VersionInfo, VmState, VmmAction, VmmActionError, VmmData,
};
pub use config::{
    Balloon, BalloonStats, BalloonStatsUpdate, BalloonUpdate, BootSource, CacheType,
    ConfigFileError, Drive, DriveUpdate, Entropy, Fs, HugePages, IoEngine, LogLevel, Logger,
    MachineConfig, MachineConfigUpdate, Metrics, NetworkInterface, NetworkInterfaceUpdate,
    RateLimiter, Serial, TokenBucket, VmConfig, Vsock,
};
pub use resources::{host_mem_mib, HostLimits, ResourcesError, VmResources};
pub use vmm_channel::{
    api_channel, new_request_id, request_id_or_new, ApiReceiver, ApiRequest, ApiSender,
    ChannelError, ReplySender, VmmResult,
};
