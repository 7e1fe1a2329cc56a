//! `wisp demo`: boots the demo microVM and shows its console and boot time.
//!
//! Which guest depends on the host's KVM: with hardware KVM it is the Tinyx Linux guest (built
//! from the distribution's kernel source on first use, then cached, by the `tinyx` program: the
//! VMM binary does not link the kernel builder); under `kvm_pvm`, which cannot finish booting an
//! unmodified Linux, it is the Wisp unikernel, built into this binary.
//!
//! `wisp demo --app nginx` (or `redis`) boots a Tinyx application image built from Debian's
//! packages (`tinyx image`, cached) on the default Tinyx kernel (`tinyx kernel`, IPv6 included), with
//! virtio-net on a tap this command creates (`wisp-demo0`, 172.30.0.1/24; needs root) and
//! prints the address to try from the host. It needs hardware KVM; under `kvm_pvm` it says so
//! and exits.

use crate::run::{run_vm, EXIT_VMM_ERROR};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;
use wisp_api::{BootSource, MachineConfig, NetworkInterface, VmConfig};
use wisp_vmm::host_kvm::HostKvm;

/// The unikernel, embedded so the demo needs nothing but this binary.
const UNIKERNEL: &[u8] = include_bytes!(env!("WISP_UNIKERNEL"));

fn demo_config(kernel: PathBuf, initrd: Option<PathBuf>, cmdline: &str) -> VmConfig {
    VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: kernel,
            initrd_path: initrd,
            boot_args: Some(cmdline.into()),
        }),
        machine_config: MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 128,
            smt: false,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// `wisp demo` options.
#[derive(clap::Args, Debug, Default)]
pub struct DemoArgs {
    /// Boot a Tinyx application image built from Debian packages instead: `nginx` or `redis`
    /// (hardware KVM and root, for the tap, needed).
    #[arg(long)]
    pub app: Option<String>,
}

/// An application the demo can serve: Debian packages, the command `/init` runs, its port,
/// and how to try it from the host.
struct DemoApp {
    packages: &'static [&'static str],
    command: &'static str,
    port: u16,
    try_it: &'static str,
}

const DEMO_APPS: &[(&str, DemoApp)] = &[
    (
        "nginx",
        DemoApp {
            packages: &["nginx-light"],
            command: "nginx -g 'daemon off;'",
            port: 80,
            try_it: "curl http://{guest}/",
        },
    ),
    (
        "redis",
        DemoApp {
            packages: &["redis-server"],
            command: "redis-server --bind 0.0.0.0 --protected-mode no --save ''",
            port: 6379,
            try_it: "redis-cli -h {guest} PING",
        },
    ),
];

/// The demo's tap and addresses.
const DEMO_TAP: &str = "wisp-demo0";
const DEMO_HOST_IP: &str = "172.30.0.1";
const DEMO_GUEST_IP: &str = "172.30.0.2";
const DEMO_MAC: &str = "02:00:ac:1e:00:02";

/// Runs `tinyx ARGS…` (the `tinyx` beside this executable, else the one on PATH), its progress
/// on our stderr, and returns the paths it printed for each of `fields`.
fn tinyx(args: &[&str], fields: &[&str]) -> Result<Vec<PathBuf>, String> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("tinyx")))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from("tinyx"));
    let out = Command::new(&program)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} {} failed ({})",
            program.display(),
            args.first().unwrap_or(&""),
            out.status
        ));
    }
    fields
        .iter()
        .map(|name| {
            let prefix = format!("{name} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix).map(|p| PathBuf::from(p.trim())))
                .ok_or_else(|| format!("{} printed no {name} path", program.display()))
        })
        .collect()
}

/// The default Tinyx guest (vmlinux, initramfs), from `tinyx guest`.
fn tinyx_guest() -> Result<(PathBuf, PathBuf), String> {
    let paths = tinyx(&["guest"], &["vmlinux", "initramfs"])?;
    Ok((paths[0].clone(), paths[1].clone()))
}

/// Runs `ip ARGS…`; an error names the command.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates the demo tap with the host's address on it (replacing a leftover one).
fn create_tap() -> Result<(), String> {
    let _ = ip(&["link", "del", DEMO_TAP]);
    ip(&["tuntap", "add", "dev", DEMO_TAP, "mode", "tap"])?;
    ip(&[
        "addr",
        "add",
        &format!("{DEMO_HOST_IP}/24"),
        "dev",
        DEMO_TAP,
    ])?;
    ip(&["link", "set", DEMO_TAP, "up"])
}

/// `wisp demo --app NAME`: the application image on a tap, with its address printed.
fn run_app_demo(start: Instant, host: &HostKvm, name: &str) -> i32 {
    let Some((_, app)) = DEMO_APPS.iter().find(|(n, _)| *n == name) else {
        let known: Vec<&str> = DEMO_APPS.iter().map(|(n, _)| *n).collect();
        report!(
            "wisp: error: no demo application {name:?}; known: {}",
            known.join(", ")
        );
        return EXIT_VMM_ERROR;
    };
    match host {
        HostKvm::Absent => {
            report!("wisp: error: this host has no /dev/kvm: KVM is required");
            return EXIT_VMM_ERROR;
        }
        HostKvm::Pvm => {
            report!(
                "wisp demo --app {name}: {host}: an unmodified Linux cannot finish booting \
                 here, and the {name} image runs on the Tinyx Linux kernel, so this demo needs \
                 hardware KVM. Nothing was started. (tests/linux_tinyx_app.rs runs the same \
                 image under wisp inside the real-KVM test host; `wisp demo` without --app \
                 boots the unikernel here.)"
            );
            return EXIT_VMM_ERROR;
        }
        HostKvm::Hardware(_) | HostKvm::Unknown => {}
    }
    report!("wisp demo --app {name}: {host}: building or fetching the Tinyx kernel and the {name} image (Debian packages) from the cache…");
    let kernel = match tinyx(&["kernel"], &["vmlinux"]) {
        Ok(p) => p[0].clone(),
        Err(e) => {
            report!("wisp: error: cannot build the Tinyx kernel: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    let port = app.port.to_string();
    let mut image_args = vec!["image"];
    for p in app.packages {
        image_args.extend(["--deb", p]);
    }
    image_args.extend(["--run", app.command, "--port", &port]);
    let image = match tinyx(&image_args, &["initramfs"]) {
        Ok(p) => p[0].clone(),
        Err(e) => {
            report!("wisp: error: cannot build the {name} image: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    if let Err(e) = create_tap() {
        report!("wisp: error: cannot create the demo tap {DEMO_TAP} (root needed): {e}");
        return EXIT_VMM_ERROR;
    }
    let mut config = demo_config(
        kernel,
        Some(image),
        &format!(
            "console=ttyS0 reboot=k panic=-1 pci=off nomodule quiet \
             ip={DEMO_GUEST_IP}::{DEMO_HOST_IP}:255.255.255.0::eth0:off"
        ),
    );
    config.machine_config.mem_size_mib = 512;
    config.network_interfaces.push(NetworkInterface {
        iface_id: "eth0".into(),
        host_dev_name: DEMO_TAP.into(),
        guest_mac: Some(DEMO_MAC.into()),
        rx_rate_limiter: None,
        tx_rate_limiter: None,
        mtu: None,
    });
    report!(
        "wisp demo --app {name}: the guest is {DEMO_GUEST_IP} on {DEMO_TAP}; once its console \
         shows the application started, try: {}   (Ctrl-C ends the VM)",
        app.try_it.replace("{guest}", DEMO_GUEST_IP)
    );
    let code = run_vm(start, &config, true, false);
    let _ = ip(&["link", "del", DEMO_TAP]);
    code
}

fn unikernel_file() -> std::io::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("wisp-demo-unikernel-{}", std::process::id()));
    std::fs::write(&path, UNIKERNEL)?;
    Ok(path)
}

pub fn run_demo(start: Instant, args: &DemoArgs) -> i32 {
    let host = HostKvm::detect();
    if let Some(app) = &args.app {
        return run_app_demo(start, &host, app);
    }
    match host {
        HostKvm::Absent => {
            report!("wisp: error: this host has no /dev/kvm: KVM is required");
            EXIT_VMM_ERROR
        }
        HostKvm::Hardware(_) | HostKvm::Unknown => {
            report!("wisp demo: {host}: booting the Tinyx Linux guest (2 vCPUs, 128 MiB)");
            report!("wisp demo: building or fetching the Tinyx guest from the cache…");
            let (vmlinux, initramfs) = match tinyx_guest() {
                Ok(g) => g,
                Err(e) => {
                    report!("wisp: error: cannot build the Tinyx guest: {e}");
                    return EXIT_VMM_ERROR;
                }
            };
            let config = demo_config(
                vmlinux,
                Some(initramfs),
                "console=ttyS0 reboot=k panic=-1 pci=off nomodule quiet",
            );
            run_vm(start, &config, true, false)
        }
        HostKvm::Pvm => {
            report!(
                "wisp demo: {host}: an unmodified Linux cannot finish booting here, so the demo \
                 boots the Wisp unikernel (2 vCPUs, 128 MiB)"
            );
            let path = match unikernel_file() {
                Ok(p) => p,
                Err(e) => {
                    report!("wisp: error: cannot write the demo unikernel: {e}");
                    return EXIT_VMM_ERROR;
                }
            };
            let code = run_vm(
                start,
                &demo_config(path.clone(), None, "smp mem"),
                true,
                false,
            );
            let _ = std::fs::remove_file(path);
            code
        }
    }
}
