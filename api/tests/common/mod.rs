//! Test harness: the real server on a temporary Unix socket, answered by a VMM-side thread
//! that uses the real `VmResources` store and plays the VMM's part of the lifecycle (state
//! changes on start/pause/resume, a metrics line on flush). Clients are real: `curl
//! --unix-socket` and raw `UnixStream`s.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use wisp_api::{
    api_channel, spawn_api_server_with, ApiReceiver, ApiServerHandle, HostLimits, ServerConfig,
    VmResources, VmState, VmmAction, VmmActionError, VmmData,
};

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
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"\x7fELF not really a kernel").unwrap();
        let (tx, rx) = api_channel().unwrap();
        let server = spawn_api_server_with(&sock, tx, config).unwrap();
        let metrics = std::sync::Arc::clone(server.metrics());
        let vmm = std::thread::spawn(move || vmm_thread(rx, metrics));
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
fn vmm_thread(rx: ApiReceiver, metrics: std::sync::Arc<wisp_api::ApiMetrics>) {
    let mut resources = VmResources::new(HostLimits::with_max_vcpus(MAX_VCPUS));
    let mut state = VmState::NotStarted;
    while let Some(req) = rx.recv() {
        let result = match resources.apply(&req.action, state) {
            Some(r) => r,
            None => match &req.action {
                VmmAction::StartMicroVm | VmmAction::Resume => {
                    state = VmState::Running;
                    Ok(VmmData::Empty)
                }
                VmmAction::Pause => {
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
    metrics: &wisp_api::ApiMetrics,
) -> Result<VmmData, VmmActionError> {
    let path = &resources.vm_config().metrics.as_ref().unwrap().metrics_path;
    wisp_api::metrics::append_json_line(path, &metrics.snapshot())
        .map_err(|e| VmmActionError::internal(e.to_string()))?;
    Ok(VmmData::Empty)
}

/// One request with the real curl client.
pub fn curl(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "--unix-socket"])
        .arg(sock)
        .args(["-X", method, "-w", "\n%{http_code}"])
        .arg(format!("http://localhost{path}"));
    if body.is_some() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl must be installed (apt-get install -y curl)");
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(body.unwrap_or("").as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    let code = code
        .parse()
        .unwrap_or_else(|_| panic!("curl failed: {}", String::from_utf8_lossy(&out.stderr)));
    (code, body.to_string())
}

/// One HTTP/1.1 request over a raw socket, reading until the server closes.
pub fn raw_request(sock: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(request).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `GET /` with `Connection: close` over a raw socket; the status line of the answer.
pub fn raw_get_root(sock: &Path) -> String {
    let resp = raw_request(
        sock,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    resp.lines().next().unwrap_or_default().to_string()
}
