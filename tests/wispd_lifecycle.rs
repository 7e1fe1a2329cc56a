//! wispd's lifecycle end to end, on /dev/kvm: a thousand creates and destroys (and VMs that end
//! by themselves) leave nothing behind; a shell killed mid-create is reported and replaced; idle
//! clients hold nobody up; the socket path is claimed safely; SIGTERM ends everything cleanly;
//! request ids come back.

// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod wispd_common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use wisp_api::control_page::monotonic_ns;
use wisp_api::seqpacket::SeqpacketConn;
use wisp_api::wispd_protocol::{CtlRequest, CtlResponse, Envelope, MAX_MESSAGE};
use wisp_api::VmConfig;
use wisp_test_support::run_with_deadline;
use wispd_common::{
    alive, eventually, scratch_dir, unikernel_config, unikernel_vm, wispd_command, Wispd,
};

/// What wispd holds: compared before and after a workload.
#[derive(Debug, PartialEq)]
struct Footprint {
    fds: usize,
    memfds: usize,
    shells: usize,
    run_dir_entries: usize,
}

fn footprint(w: &Wispd) -> Footprint {
    Footprint {
        fds: w.fds().len(),
        memfds: w.memfds(),
        shells: w.shell_pids().len(),
        run_dir_entries: w.run_dir_entries(),
    }
}

fn create(w: &Wispd, config: &VmConfig, wait_boot: bool) -> CtlResponse {
    w.request(&CtlRequest::Create {
        config: Box::new(config.clone()),
        sent_ns: monotonic_ns(),
        wait_boot,
    })
}

fn created_id(resp: CtlResponse, what: &str) -> String {
    match resp {
        CtlResponse::Created { vm, .. } => vm.id,
        other => panic!("{what}: {other:?}"),
    }
}

fn states(w: &Wispd) -> Vec<(String, String)> {
    match w.request(&CtlRequest::List {}) {
        CtlResponse::Vms { vms } => vms.into_iter().map(|v| (v.id, v.state)).collect(),
        other => panic!("list: {other:?}"),
    }
}

/// WISP_WISPD_CYCLES create/destroy cycles (default 1000), every other VM one that greets and
/// resets by itself (so its destroy races its end), then VMs left to end by themselves: wispd's
/// fds, memfds, shells and run-directory entries come back to those of the bare pool.
#[test]
fn a_thousand_create_destroy_cycles_leave_nothing_behind() {
    let cycles: usize = std::env::var("WISP_WISPD_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let w = Wispd::start("cycles", 2, 32);
    let settled = |w: &Wispd| {
        w.wait_prepared(2);
        footprint(w)
    };
    let baseline = settled(&w);
    assert_eq!(baseline.shells, 2, "{baseline:?}");
    assert_eq!(baseline.memfds, 2, "{baseline:?}");
    let (ends, idles) = (unikernel_vm(""), unikernel_vm("idle"));
    let t0 = Instant::now();
    for i in 0..cycles {
        let config = if i % 2 == 0 { &ends } else { &idles };
        let id = created_id(create(&w, config, true), &format!("create {i}"));
        let resp = w.request(&CtlRequest::Destroy { id: id.clone() });
        assert_eq!(resp, CtlResponse::Done, "destroy {id} (cycle {i})");
    }
    eprintln!("{cycles} create/destroy cycles took {:?}", t0.elapsed());
    assert!(states(&w).is_empty(), "{:?}", states(&w));

    // VMs that end by themselves are freed without a destroy; their records stay.
    let ended: Vec<String> = (0..4)
        .map(|i| created_id(create(&w, &ends, true), &format!("ending VM {i}")))
        .collect();
    let all_halted = eventually(Duration::from_secs(10), || {
        let s = states(&w);
        s.len() == ended.len() && s.iter().all(|(_, state)| state == "halted")
    });
    assert!(all_halted, "{:?}", states(&w));
    let mut now = settled(&w);
    let deadline = Instant::now() + Duration::from_secs(5);
    while now != baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        now = settled(&w);
    }
    assert_eq!(now, baseline, "fds now: {:?}", w.fds());
    // What an ended VM printed is still there to read.
    match w.request(&CtlRequest::Console {
        id: ended[0].clone(),
    }) {
        CtlResponse::Console { text } => assert!(text.contains("hello from wisp"), "{text}"),
        other => panic!("console of an ended VM: {other:?}"),
    }
    for id in ended {
        assert_eq!(w.request(&CtlRequest::Destroy { id }), CtlResponse::Done);
    }
    assert!(states(&w).is_empty());
}

/// The doorbell count of `shell`'s fd 4 (its doorbell), from /proc.
fn doorbell_count(shell: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{shell}/fdinfo/4"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("eventfd-count:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

#[test]
fn a_shell_killed_mid_create_is_reported_and_the_pool_refilled() {
    let w = Wispd::start("midcreate", 1, 32);
    let shell = w.shell_pids()[0];
    // Stopped, the shell cannot answer its doorbell: the create is caught in flight.
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &shell.to_string()])
        .status()
        .unwrap()
        .success());
    let stopped =
        || std::fs::read_to_string(format!("/proc/{shell}/stat")).is_ok_and(|s| s.contains(") T "));
    assert!(
        eventually(Duration::from_secs(5), stopped),
        "shell {shell} never stopped"
    );
    let conn = SeqpacketConn::connect(&w.socket).unwrap();
    let req = CtlRequest::Create {
        config: Box::new(unikernel_vm("idle")),
        sent_ns: monotonic_ns(),
        wait_boot: false,
    };
    conn.send(&serde_json::to_vec(&req).unwrap()).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || doorbell_count(shell) > 0),
        "wispd never rang shell {shell}"
    );
    // Other clients are served meanwhile.
    let t0 = Instant::now();
    assert!(matches!(
        w.request(&CtlRequest::List {}),
        CtlResponse::Vms { .. }
    ));
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &shell.to_string()])
        .status()
        .unwrap()
        .success());
    conn.set_read_timeout(Duration::from_secs(10)).unwrap();
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = conn.recv(&mut buf).unwrap();
    let resp: CtlResponse = serde_json::from_slice(&buf[..n]).unwrap();
    let CtlResponse::Error { message } = resp else {
        panic!("the create did not fail: {resp:?}");
    };
    assert!(
        message.contains(&format!("pid {shell}")) && message.contains("signal 9"),
        "{message}"
    );
    // Reaped (not even a zombie is left), replaced, and the next create is warm.
    let gone = || !std::path::Path::new(&format!("/proc/{shell}")).exists();
    assert!(
        eventually(Duration::from_secs(5), gone),
        "shell {shell} was not reaped"
    );
    w.wait_prepared(1);
    assert!(!w.shell_pids().contains(&shell));
    match create(&w, &unikernel_vm("idle"), true) {
        CtlResponse::Created { cold, .. } => assert!(!cold),
        other => panic!("create after the crash: {other:?}"),
    }
}

#[test]
fn idle_clients_do_not_delay_others() {
    let w = Wispd::start("idle", 1, 32);
    // Sixteen connections that never say anything, and one that asks but never reads.
    let idle: Vec<SeqpacketConn> = (0..16)
        .map(|_| SeqpacketConn::connect(&w.socket).unwrap())
        .collect();
    let mute = SeqpacketConn::connect(&w.socket).unwrap();
    mute.send(&serde_json::to_vec(&CtlRequest::List {}).unwrap())
        .unwrap();
    let t0 = Instant::now();
    let resp = w.request(&CtlRequest::List {});
    let took = t0.elapsed();
    assert!(matches!(resp, CtlResponse::Vms { .. }), "{resp:?}");
    assert!(took < Duration::from_secs(1), "list took {took:?}");
    let (ok, out, err) = w.ctl(&["status"]);
    assert!(ok && out.starts_with("prepared=1"), "{out}{err}");
    drop((idle, mute));

    // A client that asks and asks but never reads: once its answers no longer fit, wispd stops
    // reading it, serves the others, and hangs up on it after a while.
    let flooder = SeqpacketConn::connect(&w.socket).unwrap();
    let ask = serde_json::to_vec(&CtlRequest::Status {}).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sent = (0..100_000)
            .take_while(|_| flooder.send(&ask).is_ok())
            .count();
        let _ = tx.send(sent);
    });
    // Its sends block once wispd stopped reading (the socket buffers are full).
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    assert!(matches!(
        w.request(&CtlRequest::List {}),
        CtlResponse::Vms { .. }
    ));
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let sent = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("wispd never hung up on a client that does not read");
    assert!(sent < 100_000, "wispd kept reading: {sent} requests");
}

#[test]
fn the_socket_path_is_claimed_only_when_nothing_lives_there() {
    let dir = scratch_dir("socketpath");
    let file = dir.join("precious");
    std::fs::write(&file, b"do not delete").unwrap();
    let out = run_with_deadline(wispd_command(&file, 1, 32), b"", Duration::from_secs(10));
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("not a socket"), "{}", out.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), b"do not delete");

    let w = Wispd::start("livesocket", 1, 32);
    let out = run_with_deadline(
        wispd_command(&w.socket, 1, 32),
        b"",
        Duration::from_secs(10),
    );
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("in use"), "{}", out.stderr);
    // The first wispd still serves.
    assert_eq!(w.prepared(), 1);
    // Its run directory is private, and so are the consoles in it.
    let run_dir = std::path::PathBuf::from(format!("{}.d", w.socket.display()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&run_dir), 0o700);
    let consoles: Vec<_> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "console"))
        .collect();
    assert!(!consoles.is_empty());
    for c in consoles {
        assert_eq!(mode(&c), 0o600, "{}", c.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_ends_wispd_its_shells_and_its_socket() {
    let mut w = Wispd::start("sigterm", 2, 32);
    let config = unikernel_config(&w.dir, "idle");
    let (ok, out, err) = w.ctl(&["create", "--config", config.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    w.wait_prepared(2);
    let shells = w.shell_pids();
    assert_eq!(shells.len(), 3, "two prepared and one VM: {shells:?}");
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    assert_eq!(unsafe { libc::kill(w.pid() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = w.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "wispd ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    assert!(!w.socket.exists(), "the socket is left behind");
    let run_dir = std::path::PathBuf::from(format!("{}.d", w.socket.display()));
    assert!(!run_dir.exists(), "the run directory is left behind");
    // wispd reaped its shells before exiting: none is left, not even as a zombie.
    for pid in shells {
        assert!(!alive(pid), "shell {pid} outlived wispd");
    }
}

#[test]
fn request_ids_come_back_with_answers_and_name_failed_requests() {
    let w = Wispd::start("requestid", 1, 32);
    let conn = SeqpacketConn::connect(&w.socket).unwrap();
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut ask = |text: &str| -> Envelope<CtlResponse> {
        conn.send(text.as_bytes()).unwrap();
        let n = conn.recv(&mut buf).unwrap();
        serde_json::from_slice(&buf[..n]).unwrap()
    };
    let resp = ask(r#"{"op":"status","request_id":"t-1"}"#);
    assert_eq!(resp.request_id.as_deref(), Some("t-1"));
    assert!(matches!(resp.body, CtlResponse::Status { .. }));
    let resp = ask(r#"{"op":"destroy","id":"vm-9","request_id":"t-2"}"#);
    assert_eq!(resp.request_id.as_deref(), Some("t-2"));
    assert!(matches!(resp.body, CtlResponse::Error { .. }));
    let resp = ask(r#"{"op":"status","request_id":"no spaces please"}"#);
    assert_eq!(resp.request_id, None);
    assert!(
        matches!(&resp.body, CtlResponse::Error { message } if message.contains("bad request id")),
        "{resp:?}"
    );

    let (ok, _, err) = w.ctl(&["--request-id", "t-3", "destroy", "vm-9"]);
    assert!(
        !ok && err.contains("no VM vm-9") && err.contains("(request t-3)"),
        "{err}"
    );
    // A generated id names the request too.
    let (ok, _, err) = w.ctl(&["destroy", "vm-9"]);
    assert!(!ok && err.contains("(request "), "{err}");
    let (ok, out, err) = w.ctl(&["--request-id", "t-4", "status"]);
    assert!(ok && out.starts_with("prepared="), "{out}{err}");
}
