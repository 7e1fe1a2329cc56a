//! The noxs control plane end to end: a real `wispd` with prepared `wisp shell` processes,
//! driven through `wisp ctl` and its socket protocol, booting the unikernel on /dev/kvm.

// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod wispd_common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wisp_api::control_page::{layout, ControlCommand, ControlPage, ShellState};
use wisp_api::wispd_protocol::{CtlRequest, CtlResponse};
use wisp_api::{BootSource, NetworkInterface, VmConfig};
use wisp_test_support::{unikernel, NetNs};
use wispd_common::{alive, unikernel_config, unikernel_vm, write_config, Wispd};

#[test]
fn ctl_creates_lists_pauses_resumes_and_destroys_unikernel_vms() {
    let w = Wispd::start("ctl", 2, 64);
    let config = unikernel_config(&w.dir, "noxs idle");
    let config = config.to_str().unwrap();
    let (ok, out, err) = w.ctl(&["create", "--config", config, "--wait-boot"]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("vm-1 pid="), "{out}");
    assert!(
        out.contains("create-us=") && !out.contains("boot-us=-"),
        "{out}"
    );
    assert!(!out.contains("cold start"), "a prepared shell fits: {out}");
    let (ok, out, _) = w.ctl(&["create", "--config", config]);
    assert!(ok && out.starts_with("vm-2 "), "{out}");

    // Each VM also answers on its own REST socket (a real client: curl).
    let api = wispd_common::api_socket_of(&out);
    let info = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&api)
        .arg("http://localhost/")
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("\"state\":\"Running\""), "{info}");

    let (_, list, _) = w.ctl(&["list"]);
    assert_eq!(
        list.lines().filter(|l| l.contains("running")).count(),
        2,
        "{list}"
    );

    assert!(w.ctl(&["pause", "vm-1"]).0);
    let (_, list, _) = w.ctl(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("vm-1") && l.contains("paused")),
        "{list}"
    );
    assert!(w.ctl(&["resume", "vm-1"]).0);
    let (_, list, _) = w.ctl(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("vm-1") && l.contains("running")),
        "{list}"
    );

    let (ok, console, _) = w.ctl(&["console", "vm-1"]);
    assert!(
        ok && console.contains("hello from wisp unikernel"),
        "{console}"
    );
    // The guest found its devices on the noxs page (none here, but the page is there).
    assert!(console.contains("noxs: 0 devices"), "{console}");

    assert!(w.ctl(&["destroy", "vm-1"]).0);
    assert!(w.ctl(&["destroy", "vm-2"]).0);
    let (ok, _, err) = w.ctl(&["destroy", "vm-2"]);
    assert!(!ok && err.contains("no VM vm-2"), "{err}");
    let (_, list, _) = w.ctl(&["list"]);
    assert_eq!(list.lines().count(), 1, "only the header is left: {list}");
}

/// A network interface goes through the control page like the other devices: wispd, in a
/// network namespace with a tap, creates a VM from a prepared shell whose guest ARPs the host
/// over that tap with the MAC the configuration gave.
#[test]
fn a_vm_created_through_wispd_reaches_the_host_over_a_tap() {
    let ns = NetNs::new("wispd");
    let w = Wispd::start_in(Some(&ns.name), "net", 1, 64);
    let guest_mac = "52:54:00:aa:bb:02";
    let mut vm = unikernel_vm("noxs net idle");
    vm.network_interfaces.push(NetworkInterface {
        iface_id: "eth0".into(),
        host_dev_name: ns.tap.clone(),
        guest_mac: Some(guest_mac.into()),
        rx_rate_limiter: None,
        tx_rate_limiter: None,
        ..Default::default()
    });
    let config = write_config(&w.dir, &vm);
    let (ok, out, err) = w.ctl(&[
        "create",
        "--config",
        config.to_str().unwrap(),
        "--wait-boot",
    ]);
    assert!(ok, "{out}{err}");
    assert!(!out.contains("cold start"), "a prepared shell fits: {out}");
    let want = format!("net: arp reply from {}", ns.host_mac());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, console, _) = w.ctl(&["console", "vm-1"]);
        if console.contains(&want) {
            assert!(console.contains("noxs: 1 devices"), "{console}");
            assert!(
                console.contains(&format!("net: mac={guest_mac}")),
                "{console}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "want {want:?}: {console}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_guest_larger_than_the_prepared_shells_is_cold_started_and_says_so() {
    let w = Wispd::start("cold", 1, 16);
    let config = unikernel_config(&w.dir, "idle");
    let (ok, out, err) = w.ctl(&["create", "--config", config.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("cold start"),
        "32 MiB does not fit a 16 MiB shell: {out}"
    );
}

#[test]
fn two_hundred_vms_run_together_and_leave_nothing_behind() {
    let w = Wispd::start("density", 4, 16);
    let mut config = VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: unikernel(),
            initrd_path: None,
            boot_args: Some("idle".into()),
        }),
        ..Default::default()
    };
    config.machine_config.mem_size_mib = 16;
    let mut ids = Vec::new();
    for i in 0..200 {
        let resp = w.request(&CtlRequest::Create {
            config: Box::new(config.clone()),
            sent_ns: wisp_api::control_page::monotonic_ns(),
            wait_boot: true,
        });
        match resp {
            CtlResponse::Created { vm, times, .. } => {
                assert!(
                    times.request_to_boot_timer_us.is_some(),
                    "VM {i} never hit its boot timer"
                );
                ids.push(vm.id);
            }
            other => panic!("create {i} failed: {other:?}"),
        }
    }
    let CtlResponse::Vms { vms } = w.request(&CtlRequest::List {}) else {
        panic!("list failed");
    };
    let odd: Vec<_> = vms.iter().filter(|v| v.state != "running").collect();
    assert!(
        odd.is_empty() && vms.len() == 200,
        "not all running: {odd:?}"
    );
    for id in ids {
        assert_eq!(w.request(&CtlRequest::Destroy { id }), CtlResponse::Done);
    }
    w.wait_prepared(4);
    // Only the prepared pool is left: four shells, four control pages.
    assert_eq!(w.shell_pids().len(), 4);
    assert_eq!(w.memfds(), 4);
}

#[test]
fn shells_that_die_are_reported_and_replaced_and_none_outlive_wispd() {
    let mut w = Wispd::start("crash", 2, 16);
    let config = unikernel_config(&w.dir, "idle");
    let (ok, out, _) = w.ctl(&["create", "--config", config.to_str().unwrap()]);
    assert!(ok);
    let pid: u32 = out
        .split("pid=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // A running VM's shell crashes: it is reported as failed.
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, list, _) = w.ctl(&["list"]);
        if list
            .lines()
            .any(|l| l.starts_with("vm-1") && l.contains("failed"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "crash not reported: {list}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A prepared shell crashes: the pool is refilled.
    w.wait_prepared(2);
    let pooled: Vec<u32> = w.shell_pids().into_iter().filter(|p| *p != pid).collect();
    Command::new("kill")
        .args(["-9", &pooled[0].to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    w.wait_prepared(2);
    // Killing wispd takes every shell with it.
    let shells = w.shell_pids();
    assert!(!shells.is_empty());
    let _ = w.child.kill();
    let _ = w.child.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while shells.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "shells outlived wispd: {shells:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `wisp shell` on `page` the way wispd does (fds 3, 4, 5).
fn spawn_shell(
    page: &ControlPage,
    doorbell: &vmm_sys_util::eventfd::EventFd,
    ack: &vmm_sys_util::eventfd::EventFd,
) -> Child {
    let fds = [
        page.file().as_raw_fd(),
        doorbell.as_raw_fd(),
        ack.as_raw_fd(),
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wisp"));
    cmd.args([
        "shell",
        "--control",
        "3",
        "--doorbell",
        "4",
        "--ack",
        "5",
        "--mem",
        "16",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // SAFETY: only dup2 (async-signal-safe) on fds valid in the child, between fork and exec;
    // the sources are above 5 in this test process (std keeps 0-2, the test harness more).
    unsafe {
        cmd.pre_exec(move || {
            let high: Vec<i32> = fds
                .iter()
                .map(|fd| libc::fcntl(*fd, libc::F_DUPFD, 10))
                .collect();
            for (src, dst) in high.iter().zip([3, 4, 5]) {
                if libc::dup2(*src, dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

#[test]
fn a_control_page_with_a_wrong_magic_is_rejected_by_the_shell() {
    let page = ControlPage::create().unwrap();
    page.file()
        .write_at(b"NOTWISP!", layout::OFF_MAGIC as u64)
        .unwrap();
    let doorbell = vmm_sys_util::eventfd::EventFd::new(0).unwrap();
    let ack = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let out = spawn_shell(&page, &doorbell, &ack)
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong magic"), "{err}");
}

#[test]
fn out_of_range_lengths_on_the_page_fail_the_create_with_a_clear_error() {
    let page = ControlPage::create().unwrap();
    let doorbell = vmm_sys_util::eventfd::EventFd::new(0).unwrap();
    let ack = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let mut child = spawn_shell(&page, &doorbell, &ack);
    let deadline = Instant::now() + Duration::from_secs(10);
    while page.state() != Some(ShellState::Prepared) {
        assert!(Instant::now() < deadline, "shell never prepared");
        std::thread::sleep(Duration::from_millis(5));
    }
    let config = VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: unikernel(),
            initrd_path: None,
            boot_args: None,
        }),
        ..Default::default()
    };
    page.write_config(&config).unwrap();
    // A hostile or buggy writer: a kernel path length far past its field.
    page.file()
        .write_at(&100_000u32.to_le_bytes(), layout::OFF_KERNEL_LEN as u64)
        .unwrap();
    let seq = page.post_command(ControlCommand::Create);
    doorbell.write(1).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(page.acknowledged(seq), Some(1));
    assert_eq!(page.state(), Some(ShellState::Failed));
    assert!(page.error().contains("kernel path"), "{}", page.error());
}
