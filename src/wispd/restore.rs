//! `restore`: a snapshot restored into prepared shells (docs/design.md §10). One request
//! restores one VM (`wisp ctl restore`) or clones one snapshot into `count` VMs (`wisp ctl
//! clone`). Each shell gets `PUT /snapshot/load` on its own REST socket: the shell's controller
//! maps the memory file `MAP_PRIVATE` over the RAM it prepared (so every clone shares the
//! file's page cache and copies only the pages it writes), reattaches the devices, sets the
//! KVM state and resumes. Each clone is given its own VM generation on its noxs page, so
//! the guest can tell it is a new copy, and a snapshot with vsock gets its own host-side
//! socket per VM (`<uds_path>.<shell pid>`): clones cannot share one.
//!
//! The snapshot is checked once here (state file, memory file size) before any shell is
//! taken, and a clone takes shells only if enough prepared ones fit: a refused request
//! changes nothing. Every load is sent before any answer is read, so the shells of a clone
//! restore side by side; wispd waits for the answers (each a short request to a process that
//! was idle waiting for it).

use crate::clients::Requester;
use crate::daemon::Daemon;
use crate::pool::{error, Stage};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use wisp_api::wispd_protocol::CtlResponse;
use wisp_vmm::snapshot::memory_file::MemoryFile;
use wisp_vmm::snapshot::{load_state, new_generation, SnapshotDir};

/// One shell's load must be answered by then.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Most clones one request may make.
pub(crate) const MAX_CLONES: u32 = 1024;

/// A `PUT /snapshot/load` sent to one shell, its answer not read yet.
struct PendingLoad {
    stream: UnixStream,
    sent: Instant,
}

/// Sends `PUT /snapshot/load` with `body` on a shell's REST socket (not waiting for the answer:
/// the shells of a clone load side by side).
fn send_load(socket: &Path, body: &str) -> Result<PendingLoad, String> {
    let failed = |e: std::io::Error| format!("the shell's API socket: {e}");
    let sent = Instant::now();
    let mut stream = UnixStream::connect(socket).map_err(failed)?;
    stream
        .set_read_timeout(Some(LOAD_TIMEOUT))
        .map_err(failed)?;
    stream
        .set_write_timeout(Some(LOAD_TIMEOUT))
        .map_err(failed)?;
    let request = format!(
        "PUT /snapshot/load HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(failed)?;
    Ok(PendingLoad { stream, sent })
}

impl PendingLoad {
    /// Reads the answer: `Ok` for 204, else the shell's reason; and send → answer.
    fn answer(mut self) -> (Result<(), String>, Duration) {
        let mut answer = Vec::new();
        let read = self.stream.read_to_end(&mut answer);
        let took = self.sent.elapsed();
        if let Err(e) = read {
            return (Err(format!("the shell's API socket: {e}")), took);
        }
        let text = String::from_utf8_lossy(&answer);
        if text.starts_with("HTTP/1.1 204") {
            return (Ok(()), took);
        }
        let body = text.split_once("\r\n\r\n").map_or(&*text, |(_, b)| b);
        (Err(body.trim().to_string()), took)
    }
}

/// The host-side vsock socket of a VM restored into the shell with process id `pid`:
/// `<saved uds_path>.<pid>`, so clones of one snapshot each bind their own (and the guest's
/// connections to host port P land on `<that>_P`).
pub(crate) fn own_vsock_socket(saved: &Path, pid: u32) -> String {
    format!("{}.{pid}", saved.display())
}

impl Daemon {
    /// Restores the snapshot in `dir` into `count` prepared shells and resumes each.
    pub(crate) fn restore(&mut self, from: Requester, dir: &Path, count: u32) {
        let started = Instant::now();
        if count == 0 || count > MAX_CLONES {
            return self.reply(
                from,
                error(format!("count must be 1 to {MAX_CLONES}, not {count}")),
            );
        }
        let files = SnapshotDir::new(dir);
        let (state, vsock_uds) = match load_state(&files.state()) {
            Ok((state, config)) => (state, config.vsock.map(|v| v.uds_path)),
            Err(e) => return self.reply(from, error(e)),
        };
        if let Err(e) = MemoryFile::open(&files.memory(), state.mem_mib) {
            return self.reply(from, error(e));
        }
        let (mem, vcpus) = (state.mem_mib, u8::try_from(state.vcpus.len()).unwrap_or(0));
        let fits = |id: &u64| {
            self.shells
                .get(id)
                .is_some_and(|s| mem <= s.proc.mem_mib && vcpus <= s.proc.vcpus)
        };
        let shells: Vec<u64> = self
            .ready
            .iter()
            .filter(|id| fits(id))
            .take(count as usize)
            .copied()
            .collect();
        if shells.len() < count as usize {
            return self.reply(
                from,
                error(format!(
                    "{count} prepared shells of at least {mem} MiB and {vcpus} vCPUs are \
                     needed, {} are ready (wispd --pool, --shell-mem, --shell-vcpus)",
                    shells.len()
                )),
            );
        }
        let mut vms = Vec::with_capacity(shells.len());
        let mut each_us = Vec::with_capacity(shells.len());
        let mut failures = Vec::new();
        // Every load is sent before any answer is read: the shells restore side by side.
        let mut pending = Vec::with_capacity(shells.len());
        for id in shells {
            let _ = self.take_stage(id);
            let Some(shell) = self.shells.get(&id) else {
                continue;
            };
            let mut body = serde_json::json!({
                "snapshot_path": files.state(),
                "mem_backend": {"backend_type": "File", "backend_path": files.memory()},
                "resume_vm": true,
                "vm_generation": new_generation(),
            });
            if let Some(uds) = &vsock_uds {
                body["vsock_override"] =
                    serde_json::json!({ "uds_path": own_vsock_socket(uds, shell.proc.pid()) });
            }
            let body = body.to_string();
            pending.push((id, send_load(&shell.proc.files.api_socket, &body)));
        }
        for (id, load) in pending {
            let (loaded, took) = match load {
                Ok(load) => load.answer(),
                Err(e) => (Err(e), Duration::ZERO),
            };
            each_us.push(took.as_secs_f64() * 1e6);
            let Some(shell) = self.shells.remove(&id) else {
                continue;
            };
            match loaded {
                Ok(()) => {
                    let vm = self.restored(id, &shell.proc, mem, vcpus);
                    vms.extend(self.vm_summary(vm, &shell.proc));
                    self.shells.insert(id, shell);
                    self.enter(id, Stage::Vm { id: vm, op: None }, None);
                }
                Err(e) => {
                    failures.push(format!("shell {}: {e}", shell.proc.pid()));
                    self.shells.insert(id, shell);
                    self.kill_shell(id);
                }
            }
        }
        let response = if vms.is_empty() {
            error(format!("restore failed: {}", failures.join("; ")))
        } else {
            if !failures.is_empty() {
                log::warn!(
                    "wispd: request {}: {} of {count} restores failed: {}",
                    from.tag(),
                    failures.len(),
                    failures.join("; ")
                );
            }
            CtlResponse::Restored {
                vms,
                total_us: started.elapsed().as_secs_f64() * 1e6,
                each_us,
            }
        };
        self.reply(from, response);
        // Only then are new shells asked for: the reply does not wait behind them.
        self.refill();
    }
}
