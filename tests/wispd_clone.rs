//! Snapshots through wispd: a unikernel VM created from the pool is paused and snapshotted
//! over its own REST socket, then `wisp ctl restore` puts it into a prepared shell and
//! `wisp ctl clone` makes 100 VMs of it at once. Every clone runs, reads its own VM generation
//! on its noxs page (so each answers with its own identity), and the clones share the memory
//! file's pages: host memory (PSS, which counts a shared page once) grows by far less than
//! 100 guests' worth.

#![allow(clippy::unwrap_used)]

mod wispd_common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};
use wisp_api::wispd_protocol::{CtlRequest, CtlResponse};
use wisp_test_support::curl;
use wispd_common::{
    api_socket_of, eventually, unikernel_config, unikernel_vm, write_config, Wispd,
};

const CLONES: usize = 100;
const GUEST_MIB: u64 = 32;

/// Total proportional set size (KiB) of `pids`: shared pages count once across them.
fn pss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("Pss:"))
                .filter_map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

fn console(w: &Wispd, id: &str) -> String {
    match w.request(&CtlRequest::Console { id: id.into() }) {
        CtlResponse::Console { text } => text,
        other => panic!("console {id}: {other:?}"),
    }
}

/// The guest's identity line: `restored: generation=0x...`.
fn generation(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("restored: generation="))
        .map(str::to_string)
}

/// Creates an `await-restore idle` VM from the pool and snapshots it into `dir`.
fn snapshot_a_waiting_guest(w: &Wispd, dir: &Path) {
    let config = unikernel_config(&w.dir, "await-restore idle");
    snapshot_a_guest(w, &config, dir);
}

/// Creates a VM from the pool with `config` (a guest that prints `await-restore: waiting`)
/// and snapshots it into `dir`; returns the VM's pid.
fn snapshot_a_guest(w: &Wispd, config: &Path, dir: &Path) -> u32 {
    let (ok, out, err) = w.ctl(&["create", "--config", config.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(
        eventually(Duration::from_secs(30), || console(w, "vm-1")
            .contains("await-restore: waiting")),
        "the guest never waited: {}",
        console(w, "vm-1")
    );
    let api = api_socket_of(&out);
    let (status, body) = curl(&api, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
    assert_eq!(status, 204, "{body}");
    std::fs::create_dir_all(dir).unwrap();
    let create = serde_json::json!({
        "snapshot_path": dir.join("vm.state"),
        "mem_file_path": dir.join("vm.mem"),
    });
    let (status, body) = curl(&api, "PUT", "/snapshot/create", Some(&create.to_string()));
    assert_eq!(status, 204, "{body}");
    pids_of(&out)[0].1
}

/// `(vm-N, pid)` of each `vm-N pid=P` line of `wisp ctl` output.
fn pids_of(out: &str) -> Vec<(String, u32)> {
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let id = words.next()?.to_string();
            let pid = words.next()?.strip_prefix("pid=")?.parse().ok()?;
            Some((id, pid))
        })
        .collect()
}

/// Clones of a VM with vsock each get their own host-side socket (`<uds_path>.<pid>`), so
/// they all restore, and each guest's connection to host port 1234 reaches the listener of
/// its own clone.
#[test]
fn clones_of_a_vm_with_vsock_each_connect_back_on_their_own_socket() {
    const N: usize = 4;
    let w = Wispd::start("clone-vsock", N + 1, GUEST_MIB as u32);
    let uds = w.dir.join("v.sock");
    let mut vm = unikernel_vm("await-restore vsock");
    vm.vsock = Some(wisp_api::config::Vsock {
        guest_cid: 3,
        uds_path: uds.clone(),
        vsock_id: None,
    });
    let config = write_config(&w.dir, &vm);
    let dir = w.dir.join("snap");
    let original = snapshot_a_guest(&w, &config, &dir);

    // Every shell that may take a clone listens on its own `<uds>.<pid>_1234` first (the
    // guest connects as soon as it runs again).
    w.wait_prepared(N + 1);
    let mut listeners = HashMap::new();
    for pid in w.shell_pids().into_iter().filter(|&p| p != original) {
        let path = format!("{}.{pid}_1234", uds.display());
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        listeners.insert(pid, listener);
    }
    let (ok, out, err) = w.ctl(&[
        "clone",
        "--snapshot",
        dir.to_str().unwrap(),
        "--count",
        &N.to_string(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("restored={N} ")), "{out}");
    let clones = pids_of(&out);
    assert_eq!(clones.len(), N, "{out}");
    for (id, pid) in &clones {
        let listener = listeners
            .get(pid)
            .unwrap_or_else(|| panic!("{id} (pid {pid}) was not a prepared shell"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "{id} never connected to its socket: {}",
                        console(&w, id)
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept for {id}: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        assert_eq!(line, "hello from the unikernel\n", "{id}");
        (&stream).write_all(b"hello from the host\n").unwrap();
        assert!(
            eventually(Duration::from_secs(30), || console(&w, id)
                .contains("vsock: got hello from the host")),
            "{id}: {}",
            console(&w, id)
        );
    }
    // No clone connected to another's socket.
    for (pid, listener) in &listeners {
        if !clones.iter().any(|(_, p)| p == pid) {
            assert!(
                listener.accept().is_err(),
                "shell {pid} was not cloned into"
            );
        }
    }
}

#[test]
fn one_snapshot_restores_into_a_prepared_shell_and_clones_into_a_hundred_vms() {
    let w = Wispd::start("clone", CLONES + 2, GUEST_MIB as u32);
    let dir = w.dir.join("snap");
    snapshot_a_waiting_guest(&w, &dir);
    let dir_arg = dir.to_str().unwrap();

    // One restore: the guest goes on and reads its new generation.
    let (ok, out, err) = w.ctl(&["restore", "--snapshot", dir_arg]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("vm-2 pid="), "{out}");
    assert!(out.contains("restore-us="), "{out}");
    assert!(
        eventually(Duration::from_secs(30), || generation(&console(&w, "vm-2"))
            .is_some()),
        "vm-2 never saw its restore: {}",
        console(&w, "vm-2")
    );

    // A clone asking for more shells than are prepared takes none.
    let (ok, _, err) = w.ctl(&["clone", "--snapshot", dir_arg, "--count", "1000"]);
    assert!(!ok && err.contains("prepared shells"), "{err}");

    let before = pss_kib(&w.shell_pids());
    let (ok, out, err) = w.ctl(&["clone", "--snapshot", dir_arg, "--count", "100"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("restored={CLONES} ")), "{out}");
    eprintln!("{}", out.lines().last().unwrap_or_default());
    let ids: Vec<String> = (3..3 + CLONES).map(|n| format!("vm-{n}")).collect();
    let mut identities = HashSet::new();
    for id in &ids {
        assert!(
            eventually(Duration::from_secs(60), || generation(&console(&w, id))
                .is_some()),
            "{id} never saw its restore: {}",
            console(&w, id)
        );
        identities.insert(generation(&console(&w, id)).unwrap());
    }
    identities.insert(generation(&console(&w, "vm-2")).unwrap());
    assert_eq!(
        identities.len(),
        CLONES + 1,
        "each VM has its own generation"
    );
    // All running together.
    match w.request(&CtlRequest::List {}) {
        CtlResponse::Vms { vms } => {
            let running = vms.iter().filter(|v| v.state == "running").count();
            assert_eq!(running, CLONES + 1, "{vms:?}");
        }
        other => panic!("list: {other:?}"),
    }
    let after = pss_kib(&w.shell_pids());
    let grown_mib = after.saturating_sub(before) / 1024;
    let guests_mib = CLONES as u64 * GUEST_MIB;
    eprintln!(
        "{CLONES} clones: shells' PSS {} MiB -> {} MiB (+{grown_mib} MiB; {guests_mib} MiB of guests)",
        before / 1024,
        after / 1024
    );
    assert!(
        grown_mib * 4 < guests_mib,
        "the clones grew host memory by {grown_mib} MiB, not far below {guests_mib} MiB"
    );
}
