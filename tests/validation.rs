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
