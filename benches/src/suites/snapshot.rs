//! `snapshot`: Firecracker-style snapshots of the unikernel (`count`, 128 MiB, 1 vCPU), side by
//! side with Firecracker's where `--firecracker PATH` is given: a running guest is paused and
//! `PUT /snapshot/create` writes its state and memory (create time, state file size, memory
//! file blocks on disk); resumed until its next line and paused again, it is snapshotted as a
//! Diff (the pages written since: create time, blocks on disk); the process is killed; a fresh `--api-sock` process takes
//! `PUT /snapshot/load` with `resume_vm` (request → 204, the VM resumed), and the guest's next
//! line shows it running again. Wisp only (suite `snapshot_wispd`, in snapshot_wispd.rs):
//! restore into a prepared shell and clones through wispd.

use super::{metric, micros, run_failed};
use crate::http_unix;
use crate::peers::{describe, FIRECRACKER_ARGS, GUEST_MEM_MIB};
use crate::results::{Comparison, SuiteOutcome, Unit, VmmRuns};
use crate::setup::{help_mentions, Setup};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A guest line, and when it was read.
type Line = (Instant, String);

/// A VMM process on an API socket, its stdout as timed lines.
struct ApiProcess {
    child: Child,
    socket: PathBuf,
    lines: mpsc::Receiver<Line>,
}

impl ApiProcess {
    fn spawn(
        binary: &Path,
        args: &[&str],
        socket: &Path,
        timeout: Duration,
    ) -> Result<Self, String> {
        let _ = std::fs::remove_file(socket);
        let mut child = Command::new(binary)
            .args(args)
            .arg("--api-sock")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            });
        }
        let process = ApiProcess {
            child,
            socket: socket.to_path_buf(),
            lines,
        };
        let deadline = Instant::now() + timeout;
        while UnixStream::connect(socket).is_err() {
            if Instant::now() > deadline {
                return Err(format!("{} never accepted", socket.display()));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(process)
    }

    /// `method uri body`, timed; an answer other than 2xx is an error.
    fn call(
        &self,
        method: &str,
        uri: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let t0 = Instant::now();
        let r = http_unix::request(&self.socket, method, uri, Some(body), timeout)
            .map_err(|e| format!("{method} {uri}: {e}"))?;
        let took = t0.elapsed();
        if !r.is_success() {
            return Err(format!("{method} {uri} answered {}: {}", r.status, r.body));
        }
        Ok(took)
    }

    /// The next line containing `want`, read before `deadline`.
    fn line_with(&self, want: &str, timeout: Duration) -> Result<Line, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line.contains(want) => return Ok((at, line)),
                Ok(_) => {}
                Err(_) => return Err(format!("the guest never printed {want:?}")),
            }
        }
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

struct SnapshotVmm {
    name: &'static str,
    binary: PathBuf,
    args: &'static [&'static str],
}

pub fn run(setup: &Setup) -> SuiteOutcome {
    if !help_mentions(&setup.wisp, &["run"], "--restore") {
        return SuiteOutcome::Skipped {
            reason: format!("{} has no snapshots yet (issue 17)", setup.wisp.display()),
        };
    }
    let mut vmms = vec![SnapshotVmm {
        name: "wisp",
        binary: setup.wisp.clone(),
        args: &[],
    }];
    let mut notes = vec![
        format!(
            "guest: the unikernel running `count`, {GUEST_MEM_MIB} MiB, 1 vCPU, \
             track_dirty_pages; paused, then PUT /snapshot/create (Full), resumed to its next \
             line and a Diff; a new process takes PUT /snapshot/load of the Full one (File \
             backend, resume_vm)"
        ),
        "load: request → 204 (restored and resumed); load → guest line: request → the guest's \
         next console line (coarse: the guest prints every 2^12 counts)"
            .to_string(),
        "memory file on disk: allocated blocks (both write a sparse file of the guest's size)"
            .to_string(),
    ];
    match &setup.firecracker {
        Some(fc) => vmms.push(SnapshotVmm {
            name: "firecracker",
            binary: fc.clone(),
            args: FIRECRACKER_ARGS,
        }),
        None => notes.push("Firecracker not compared: give --firecracker PATH".to_string()),
    }
    let mut records: Vec<VmmRuns> = vmms
        .iter()
        .map(|v| {
            let mut cmd = Command::new(&v.binary);
            cmd.args(v.args).arg("--api-sock").arg("SOCKET");
            VmmRuns::new(v.name, describe(&cmd))
        })
        .collect();
    for run in 1..=setup.runs {
        for (vmm, record) in vmms.iter().zip(records.iter_mut()) {
            let dir = setup.out.join(format!("snapshot-{}", vmm.name));
            let _ = std::fs::remove_dir_all(&dir);
            let label = format!("run {run}/{}", setup.runs);
            let sample = std::fs::create_dir_all(&dir)
                .map_err(|e| e.to_string())
                .and_then(|()| snapshot_cycle(setup, vmm, &dir));
            match sample {
                Ok(sample) => {
                    eprintln!(
                        "[snapshot] {label} {}: create {:.2} ms, load {:.2} ms",
                        vmm.name,
                        sample.get("create_us").copied().unwrap_or(f64::NAN) / 1e3,
                        sample.get("load_us").copied().unwrap_or(f64::NAN) / 1e3,
                    );
                    record.runs.push(sample);
                }
                Err(why) => run_failed("snapshot", record, &label, &why),
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    SuiteOutcome::Comparison(Comparison {
        metrics: vec![
            metric(
                "create_us",
                "PUT /snapshot/create (paused VM)",
                Unit::Microseconds,
            ),
            metric("state_kib", "VM state file", Unit::Kibibytes),
            metric(
                "mem_disk_kib",
                "memory file, blocks on disk",
                Unit::Kibibytes,
            ),
            metric(
                "diff_create_us",
                "PUT /snapshot/create, Diff (after the Full one, the guest resumed once)",
                Unit::Microseconds,
            ),
            metric(
                "diff_mem_disk_kib",
                "Diff memory file, blocks on disk",
                Unit::Kibibytes,
            ),
            metric(
                "load_us",
                "PUT /snapshot/load → 204 (resumed)",
                Unit::Microseconds,
            ),
            metric(
                "load_to_line_us",
                "PUT /snapshot/load → guest's next line",
                Unit::Microseconds,
            ),
        ],
        vmms: records,
        notes,
    })
}

/// Boot, pause, snapshot, kill; then load in a new process and wait for the guest.
fn snapshot_cycle(
    setup: &Setup,
    vmm: &SnapshotVmm,
    dir: &Path,
) -> Result<BTreeMap<String, f64>, String> {
    let t = setup.timeout;
    let first = ApiProcess::spawn(&vmm.binary, vmm.args, &dir.join("first.sock"), t)?;
    let boot = serde_json::json!({"kernel_image_path": setup.unikernel, "boot_args": "count"});
    // Dirty page tracking on, for the Diff snapshot after the Full one (both VMMs need it).
    let machine = serde_json::json!({
        "vcpu_count": 1,
        "mem_size_mib": GUEST_MEM_MIB,
        "track_dirty_pages": true,
    });
    first.call("PUT", "/boot-source", &boot.to_string(), t)?;
    first.call("PUT", "/machine-config", &machine.to_string(), t)?;
    first.call("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#, t)?;
    first.line_with("count: 2", t)?;
    first.call("PATCH", "/vm", r#"{"state":"Paused"}"#, t)?;
    let (state, mem) = (dir.join("vm.state"), dir.join("vm.mem"));
    let create = serde_json::json!({
        "snapshot_type": "Full",
        "snapshot_path": state,
        "mem_file_path": mem,
    });
    let create_took = first.call("PUT", "/snapshot/create", &create.to_string(), t)?;
    let diff = diff_snapshot(&first, dir, t);
    drop(first);
    let state_bytes = std::fs::metadata(&state).map_err(|e| e.to_string())?.len();
    let mem_blocks = std::fs::metadata(&mem).map_err(|e| e.to_string())?.blocks();

    let second = ApiProcess::spawn(&vmm.binary, vmm.args, &dir.join("second.sock"), t)?;
    let load = serde_json::json!({
        "snapshot_path": state,
        "mem_backend": {"backend_type": "File", "backend_path": mem},
        "resume_vm": true,
    });
    let sent = Instant::now();
    let load_took = second.call("PUT", "/snapshot/load", &load.to_string(), t)?;
    let (line_at, _) = second.line_with("ount: ", t)?;
    let mut sample = BTreeMap::from([
        ("create_us".to_string(), micros(create_took)),
        ("state_kib".to_string(), state_bytes as f64 / 1024.0),
        (
            "mem_disk_kib".to_string(),
            (mem_blocks * 512) as f64 / 1024.0,
        ),
        ("load_us".to_string(), micros(load_took)),
        (
            "load_to_line_us".to_string(),
            micros(line_at.saturating_duration_since(sent)),
        ),
    ]);
    // A VMM without Diff snapshots still gives the other figures.
    match diff {
        Ok((took, kib)) => {
            sample.insert("diff_create_us".to_string(), micros(took));
            sample.insert("diff_mem_disk_kib".to_string(), kib);
        }
        Err(why) => eprintln!("[snapshot] {}: no Diff snapshot: {why}", vmm.name),
    }
    Ok(sample)
}

/// After the Full snapshot: resume until the guest prints again, pause, and take a Diff
/// snapshot (the pages written since) into `dir/diff.*`; its create time and the memory
/// file's blocks on disk (KiB).
fn diff_snapshot(vm: &ApiProcess, dir: &Path, t: Duration) -> Result<(Duration, f64), String> {
    vm.call("PATCH", "/vm", r#"{"state":"Resumed"}"#, t)?;
    vm.line_with("ount: ", t)?;
    vm.call("PATCH", "/vm", r#"{"state":"Paused"}"#, t)?;
    let mem = dir.join("diff.mem");
    let create = serde_json::json!({
        "snapshot_type": "Diff",
        "snapshot_path": dir.join("diff.state"),
        "mem_file_path": mem,
    });
    let took = vm.call("PUT", "/snapshot/create", &create.to_string(), t)?;
    let blocks = std::fs::metadata(&mem).map_err(|e| e.to_string())?.blocks();
    Ok((took, (blocks * 512) as f64 / 1024.0))
}
