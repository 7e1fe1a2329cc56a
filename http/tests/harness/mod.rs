//! Test harness: the real server on a temporary Unix socket, answered by a VMM-side thread
//! that uses the real `VmResources` store and plays the VMM's part of the lifecycle (state
//! changes on start/pause/resume, optionally slowly, a metrics line on flush). Clients are real: `curl
//! --unix-socket` (wisp-test-support) and raw `UnixStream`s (server_raw.rs).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;
use wisp_api::{
    api_channel, ApiReceiver, HostLimits, VmResources, VmState, VmmAction, VmmActionError, VmmData,
};
use wisp_http::{spawn_api_server_with, ApiServerHandle, ServerConfig};
use wisp_test_support::curl;

/// Host limit used by the harness, so "above the host limit" is testable.
pub const MAX_VCPUS: u8 = 4;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub kernel: PathBuf,
    pub server: Option<ApiServerHandle>,
    vmm: Option<JoinHandle<()>>,
}

impl Harness {
    pub fn start() -> Harness {
        Harness::start_with(ServerConfig::default())
    }

    pub fn start_with(config: ServerConfig) -> Harness {
        Harness::start_full(config, Duration::ZERO)
    }

    /// A VMM that takes `action_delay` to start, pause or resume, as a real one may.
    pub fn start_slow(action_delay: Duration) -> Harness {
        Harness::start_full(ServerConfig::default(), action_delay)
    }

    pub fn start_full(config: ServerConfig, action_delay: Duration) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"\x7fELF not really a kernel").unwrap();
        let (tx, rx) = api_channel().unwrap();
        let server = spawn_api_server_with(&sock, tx, config).unwrap();
        let metrics = std::sync::Arc::clone(server.metrics());
        let vmm = std::thread::spawn(move || vmm_thread(rx, metrics, action_delay));
        Harness {
            dir,
            sock,
            kernel,
            server: Some(server),
            vmm: Some(vmm),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A request through curl: (status, body).
    pub fn curl(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        curl(&self.sock, method, path, body)
    }

    /// `GET /vm/config` as JSON.
    pub fn config(&self) -> serde_json::Value {
        let (status, body) = self.curl("GET", "/vm/config", None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The `fault_message` of a failed request, after checking its status.
    pub fn expect_fault(&self, method: &str, path: &str, body: &str, status: u16) -> String {
        let (got, text) = self.curl(method, path, Some(body));
        assert_eq!(got, status, "{method} {path} {body} answered {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["fault_message"].as_str().unwrap().to_string()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Stopping the server drops its ApiSender, which ends the VMM thread's recv loop.
        drop(self.server.take());
        if let Some(t) = self.vmm.take() {
            t.join().unwrap();
        }
    }
}

/// The VMM side: the store answers what it can; the rest is the lifecycle a VMM would run.
fn vmm_thread(
    rx: ApiReceiver,
    metrics: std::sync::Arc<wisp_http::ApiMetrics>,
    action_delay: Duration,
) {
    let mut resources = VmResources::new(HostLimits::with_max_vcpus(MAX_VCPUS));
    let mut state = VmState::NotStarted;
    while let Some(req) = rx.recv() {
        let result = match resources.apply(&req.action, state) {
            Some(r) => r,
            None => match &req.action {
                VmmAction::StartMicroVm | VmmAction::Resume => {
                    std::thread::sleep(action_delay);
                    state = VmState::Running;
                    Ok(VmmData::Empty)
                }
                VmmAction::Pause => {
                    std::thread::sleep(action_delay);
                    state = VmState::Paused;
                    Ok(VmmData::Empty)
                }
                VmmAction::FlushMetrics => flush_metrics(&resources, &metrics),
                VmmAction::UpdateBlockDevice(update) => {
                    resources.commit_drive_update(update);
                    Ok(VmmData::Empty)
                }
                _ => Ok(VmmData::Empty),
            },
        };
        req.reply.send(result);
    }
}

fn flush_metrics(
    resources: &VmResources,
    metrics: &wisp_http::ApiMetrics,
) -> Result<VmmData, VmmActionError> {
    let path = &resources.vm_config().metrics.as_ref().unwrap().metrics_path;
    wisp_api::metrics::append_json_line(path, &metrics.snapshot())
        .map_err(|e| VmmActionError::internal(e.to_string()))?;
    Ok(VmmData::Empty)
}
