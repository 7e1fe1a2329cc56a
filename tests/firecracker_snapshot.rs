//! Firecracker's snapshot surface on the real `wisp` binary: `--snapshot-version`,
//! `--describe-snapshot PATH` (a real snapshot, then corrupt, truncated and foreign files), and
//! every field of `PUT /snapshot/create` and `PUT /snapshot/load` implemented or refused by
//! name (the snapshot rows of the conformance table in tests/firecracker_conformance.rs).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod firecracker_common;

use firecracker_common::{Wisp, WISP};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use wisp_test_support::{unikernel, Scratch};

/// A paused unikernel guest (counting, with a vsock device) and a Full snapshot of it in `dir`
/// (`vm.state`, `vm.mem`). Returns the running (paused) VMM.
fn snapshot_of_a_counting_guest(scratch: &Scratch, dir: &Path) -> Wisp {
    std::fs::create_dir_all(dir).unwrap();
    let wisp = Wisp::start(&scratch.join("src.sock"), &[]);
    wisp.ok(
        "PUT",
        "/boot-source",
        &json!({"kernel_image_path": unikernel(), "boot_args": "count"}),
    );
    wisp.ok(
        "PUT",
        "/machine-config",
        &json!({"vcpu_count": 1, "mem_size_mib": 32}),
    );
    wisp.ok(
        "PUT",
        "/vsock",
        &json!({"guest_cid": 3, "uds_path": scratch.join("v-src.sock")}),
    );
    wisp.ok("PUT", "/actions", &json!({"action_type": "InstanceStart"}));
    wisp.wait_for("count: 2");
    wisp.ok("PATCH", "/vm", &json!({"state": "Paused"}));
    wisp.ok("PUT", "/snapshot/create", &create_body(dir, None));
    wisp
}

fn create_body(dir: &Path, snapshot_type: Option<&str>) -> Value {
    let mut body = json!({
        "snapshot_path": dir.join("vm.state"),
        "mem_file_path": dir.join("vm.mem"),
    });
    if let Some(t) = snapshot_type {
        body["snapshot_type"] = json!(t);
    }
    body
}

fn describe(path: &Path) -> Output {
    Command::new(WISP)
        .arg("--describe-snapshot")
        .arg(path)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `--snapshot-version` prints the format version Wisp writes; `--describe-snapshot` prints
/// it for a real snapshot (its state file or its directory) after checking the whole file, and
/// refuses a corrupt, truncated or foreign file with the reason and a non-zero status.
/// What `--snapshot-version` prints: the state file format version Wisp writes.
fn version_line() -> String {
    format!("v{}\n", wisp_vmm::snapshot::format::FORMAT_VERSION)
}

#[test]
fn describe_snapshot_checks_the_file_and_prints_its_format_version() {
    let out = Command::new(WISP)
        .arg("--snapshot-version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), version_line());

    let scratch = Scratch::new("fc-describe");
    let dir = scratch.join("snap");
    let _paused = snapshot_of_a_counting_guest(&scratch, &dir);
    let state = dir.join("vm.state");
    for path in [&state, &dir] {
        let out = describe(path);
        assert!(out.status.success(), "{}: {out:?}", path.display());
        assert_eq!(stdout(&out), version_line(), "{}", path.display());
    }

    let bytes = std::fs::read(&state).unwrap();
    let bad = |name: &str, content: Vec<u8>| -> PathBuf {
        let path = scratch.join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55;
    let mut future = bytes.clone();
    future[8] = 9;
    let cases = [
        (bad("flipped.state", flipped), "is corrupt: CRC-32"),
        (
            bad("short.state", bytes[..bytes.len() / 2].to_vec()),
            "is truncated",
        ),
        (bad("future.state", future), "format version 9"),
        (
            bad("text.state", b"{\"not\": \"a snapshot\"}".to_vec()),
            "not a Wisp snapshot",
        ),
        (
            scratch.join("missing.state"),
            "cannot read the snapshot file",
        ),
    ];
    for (path, reason) in cases {
        let out = describe(&path);
        assert_eq!(out.status.code(), Some(1), "{}: {out:?}", path.display());
        assert!(stdout(&out).is_empty(), "{}: {out:?}", path.display());
        let err = stderr(&out);
        assert!(
            err.contains("--describe-snapshot") && err.contains(reason),
            "{}: {err}",
            path.display()
        );
    }
}

/// What the table expects of one snapshot request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// 204: accepted and implemented.
    Implemented,
    /// 400 "<field> is not supported by Wisp: <reason>".
    Refused,
    /// Diff snapshots are implemented (tests/snapshot_diff.rs); this VM runs without KVM's
    /// dirty log, so a Diff of it is refused with a 400 that names `track_dirty_pages`.
    DiffNeedsDirtyLog,
}

/// Every field of Firecracker's SnapshotCreateParams and SnapshotLoadParams, set to a value
/// from its swagger: implemented (204) or refused by name, never "unknown field". Each load
/// goes into a fresh `wisp --api-sock`, as Firecracker's clients do.
#[test]
fn every_firecracker_snapshot_field_is_implemented_or_refused_by_name() {
    use Expect::{DiffNeedsDirtyLog, Implemented, Refused};
    let scratch = Scratch::new("fc-snap-fields");
    let dir = scratch.join("snap");
    let paused = snapshot_of_a_counting_guest(&scratch, &dir);
    let state = dir.join("vm.state");
    let mem = dir.join("vm.mem");
    let file = json!({"backend_type": "File", "backend_path": mem});
    let load = |field: &str, value: Value| {
        let mut body = json!({"snapshot_path": state, "mem_backend": file});
        if field == "mem_file_path" {
            body = json!({"snapshot_path": state});
        }
        body[field] = value;
        body
    };
    let again = scratch.join("again");
    std::fs::create_dir_all(&again).unwrap();
    let diff_dir = scratch.join("diff");
    std::fs::create_dir_all(&diff_dir).unwrap();
    let create_cases: Vec<(&str, Value, Expect)> = vec![
        (
            "snapshot_type=Full",
            create_body(&again, Some("Full")),
            Implemented,
        ),
        (
            "snapshot_type=Diff",
            create_body(&diff_dir, Some("Diff")),
            DiffNeedsDirtyLog,
        ),
    ];
    let load_cases: Vec<(&str, Value, Expect)> = vec![
        (
            "mem_backend File",
            load("resume_vm", json!(false)),
            Implemented,
        ),
        (
            "mem_file_path",
            load("mem_file_path", json!(mem)),
            Implemented,
        ),
        ("resume_vm", load("resume_vm", json!(true)), Implemented),
        (
            "mem_backend Uffd",
            load(
                "mem_backend",
                json!({"backend_type": "Uffd", "backend_path": scratch.join("uffd.sock")}),
            ),
            Refused,
        ),
        (
            "vsock_override",
            load(
                "vsock_override",
                json!({"uds_path": scratch.join("v-new.sock")}),
            ),
            Implemented,
        ),
        (
            "clock_realtime=false",
            load("clock_realtime", json!(false)),
            Implemented,
        ),
        (
            "clock_realtime=true",
            load("clock_realtime", json!(true)),
            Refused,
        ),
        (
            "huge_pages=Snapshot",
            load("huge_pages", json!("Snapshot")),
            Implemented,
        ),
        ("huge_pages=2M", load("huge_pages", json!("2M")), Refused),
        (
            "enable_diff_snapshots",
            load("enable_diff_snapshots", json!(true)),
            Implemented,
        ),
        (
            "track_dirty_pages",
            load("track_dirty_pages", json!(true)),
            Implemented,
        ),
    ];
    println!("| resource | field | Wisp |");
    println!("|---|---|---|");
    let verdict = |path: &str, field: &str, status: u16, answer: &str, expect: Expect| {
        let refused = status == 400 && answer.contains("is not supported by Wisp: ");
        let ok = match expect {
            Implemented => status == 204,
            Refused => refused,
            DiffNeedsDirtyLog => status == 400 && answer.contains("track_dirty_pages"),
        };
        assert!(
            ok,
            "PUT {path} field {field}: expected {expect:?}, got {status} {answer}"
        );
        assert!(!answer.contains("unknown field"), "{field}: {answer}");
        if refused {
            // The refusal names the field (or the value) it refuses.
            let name = field.split('=').next().unwrap();
            let named = name.rsplit(' ').next().unwrap();
            assert!(answer.contains(named), "{field}: {answer}");
        }
        let shown = if expect == DiffNeedsDirtyLog {
            "implemented (needs track_dirty_pages)".to_string()
        } else if refused {
            let reason = answer.split("is not supported by Wisp: ").nth(1).unwrap();
            format!("refused on purpose: {}", reason.trim_end_matches("\"}"))
        } else {
            "implemented".to_string()
        };
        println!("| PUT {path} | {field} | {shown} |");
    };
    for (field, body, expect) in create_cases {
        let (status, answer) = paused.call("PUT", "/snapshot/create", Some(&body));
        verdict("/snapshot/create", field, status, &answer, expect);
    }
    for (i, (field, mut body, expect)) in load_cases.into_iter().enumerate() {
        // The source VMM still holds the snapshot's vsock socket: each load gets its own.
        if body.get("vsock_override").is_none() {
            body["vsock_override"] = json!({"uds_path": scratch.join(format!("v-{i}.sock"))});
        }
        let fresh = Wisp::start(&scratch.join(format!("load-{i}.sock")), &[]);
        let (status, answer) = fresh.call("PUT", "/snapshot/load", Some(&body));
        verdict("/snapshot/load", field, status, &answer, expect);
        if status == 204 && field == "vsock_override" {
            let config = fresh.get("/vm/config");
            assert_eq!(
                config["vsock"]["uds_path"],
                json!(scratch.join("v-new.sock")),
                "{config}"
            );
            assert!(
                scratch.join("v-new.sock").exists(),
                "the new socket is bound"
            );
        }
        if status == 204 && field == "resume_vm" {
            fresh.wait_for("count: ");
        }
    }
    // An override must name a device the snapshot has (this one has no network interface).
    let fresh = Wisp::start(&scratch.join("load-net.sock"), &[]);
    let mut body = load(
        "network_overrides",
        json!([{"iface_id": "eth0", "host_dev_name": "tap9"}]),
    );
    body["vsock_override"] = json!({"uds_path": scratch.join("v-net.sock")});
    let (status, answer) = fresh.call("PUT", "/snapshot/load", Some(&body));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("network_overrides: the snapshot has no network interface \\\"eth0\\\""),
        "{answer}"
    );
    println!("| PUT /snapshot/load | network_overrides | implemented (the iface must exist) |");
}
