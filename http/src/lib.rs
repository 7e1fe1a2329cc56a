//! Wisp's REST server: HTTP/1.1 on a Unix socket, one per microVM (Firecracker's resources and
//! JSON names), on its own thread with a current-thread tokio runtime. It parses requests into
//! `wisp_api::VmmAction`s and hands them to the VMM thread over `wisp_api::vmm_channel`; it
//! knows nothing of KVM or devices, and the VMM knows nothing of it (docs/design.md §2). The
//! spec is `openapi.yaml` beside this crate.

pub mod metrics;
pub mod response;
pub mod routes;
pub mod server;
mod write_deadline;

pub use metrics::{ApiMetrics, ApiMetricsSnapshot};
pub use server::{
    spawn_api_server, spawn_api_server_with, ApiServerHandle, ServerConfig, ServerError,
    REQUEST_ID_HEADER,
};
