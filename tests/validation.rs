//! Every front end validates the same way, before anything touches KVM: `wisp run` refuses
//! what REST and the config file refuse, with one `wisp: error:` line and exit status 1, and
//! no guest ever runs.
#![allow(clippy::unwrap_used)]

use wisp_test_support::{unikernel, wisp_run, Scratch};

fn refused(args: &[&str], expect: &str) {
    let out = wisp_run(env!("CARGO_BIN_EXE_wisp"), &unikernel(), args);
    assert_eq!(out.code(), Some(1), "{args:?}: {}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line, got {lines:?}");
    assert!(lines[0].starts_with("wisp: error: "), "{}", lines[0]);
    assert!(lines[0].contains(expect), "{args:?}: {}", lines[0]);
    // The unikernel greets first thing: no greeting, no guest.
    assert!(!out.stdout.contains("hello"), "a guest ran: {}", out.stdout);
}

#[test]
fn wisp_run_refuses_two_root_disks_a_duplicate_drive_id_and_a_reserved_cid() {
    let dir = Scratch::new("validation");
    let a = dir.0.join("a.img");
    let b = dir.0.join("b.img");
    for f in [&a, &b] {
        std::fs::write(f, vec![0u8; 4096]).unwrap();
    }
    let (a, b) = (a.display().to_string(), b.display().to_string());
    refused(
        &[
            "--disk",
            &format!("path={a},root"),
            "--disk",
            &format!("path={b},root"),
        ],
        "root device",
    );
    refused(
        &[
            "--disk",
            &format!("path={a},id=x"),
            "--disk",
            &format!("path={b},id=x"),
        ],
        "appears twice",
    );
    let uds = dir.0.join("v.sock").display().to_string();
    refused(&["--vsock", &format!("cid=2,uds={uds}")], "reserved");
}

mod wispd_common;

/// The same configurations through wispd: refused at its front door with the controller's own
/// message, before any guest runs — and the prepared shells stay in the pool.
#[test]
fn wispd_refuses_the_same_configurations_before_any_guest_runs() {
    let w = wispd_common::Wispd::start("validation", 2, 64);
    let dir = Scratch::new("validation-wispd");
    let disk = dir.0.join("d.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let drive = |id: &str, root: bool| wisp_api::Drive {
        drive_id: id.into(),
        path_on_host: disk.clone(),
        is_root_device: root,
        is_read_only: true,
        rate_limiter: None,
        ..Default::default()
    };
    let mut two_roots = wispd_common::unikernel_vm("idle");
    two_roots.drives = vec![drive("a", true), drive("b", true)];
    let mut twins = wispd_common::unikernel_vm("idle");
    twins.drives = vec![drive("x", false), drive("x", false)];
    let mut cid = wispd_common::unikernel_vm("idle");
    cid.vsock = Some(wisp_api::Vsock {
        guest_cid: 2,
        uds_path: dir.0.join("v.sock"),
        ..Default::default()
    });
    for (config, expect) in [
        (two_roots, "root device"),
        (twins, "appears twice"),
        (cid, "reserved"),
    ] {
        let path = wispd_common::write_config(&w.dir, &config);
        let (ok, out, err) = w.ctl(&["create", "--config", path.to_str().unwrap()]);
        assert!(!ok, "created: {out}");
        assert!(err.contains(expect), "{err}");
        assert!(err.lines().count() == 1, "one line: {err}");
    }
    // Nothing was spent: both prepared shells are still there, and no VM exists.
    assert_eq!(w.prepared(), 2);
    let (ok, out, _) = w.ctl(&["list"]);
    assert!(ok);
    assert!(!out.contains("vm-"), "{out}");
}
