//! The VMMs compared, and the exact command each is run with on the same guest (the Wisp
//! unikernel, a PVH ELF that Wisp, QEMU and Firecracker all boot).

use crate::setup::Setup;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unikernel's first line on the serial console (guest/src/main.rs `GREETING`).
pub const GUEST_LINE: &[u8] = b"hello from wisp unikernel";

/// QEMU `-M microvm` as it boots the unikernel here, with the QEMU the project installs
/// (10.x from bookworm-backports, scripts/install-deps.sh).
///
/// - `-bios qboot.rom` (QEMU's own minimal firmware, in qemu-system-data): this QEMU's default
///   microvm firmware is SeaBIOS (the seabios package's bios-microvm.bin), which takes about
///   6 s to reach the guest under kvm_pvm; qboot takes about 0.1 s, and jumps to the `-kernel`
///   it finds in fw_cfg, so no option ROM is needed.
/// - `x-option-roms=off,rtc=off`: no option ROMs, no CMOS RTC (nothing for the guest to use).
///   With SeaBIOS, option ROMs must stay on: it boots `-kernel` through one, and without them
///   finds "No bootable device" and waits forever.
/// - `-device i8042`: microvm has no keyboard controller by default, and the unikernel ends by
///   pulsing the i8042 reset line (port 0x64, 0xfe); without it QEMU never exits.
///   With it, `-no-reboot` turns that reset into a clean exit (status 0), as with Wisp.
/// - `-cpu host,-arch-capabilities`: under kvm_pvm, QEMU (7.2 and 10.0 alike) aborts on
///   `-cpu host` when KVM refuses the ARCH_CAPABILITIES MSR it tries to set.
/// - `pit=off,pic=off,isa-serial=on` also boot the unikernel; the defaults are kept so the
///   machine is the stock microvm a user would run.
pub const QEMU_ARGS: &[&str] = &[
    "-M",
    "microvm,x-option-roms=off,rtc=off",
    "-bios",
    "qboot.rom",
    "-accel",
    "kvm",
    "-cpu",
    "host,-arch-capabilities",
    "-m",
    "128",
    "-smp",
    "1",
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-no-reboot",
    "-serial",
    "stdio",
    "-device",
    "i8042",
];

/// Firecracker's flags besides its mode: it logs to stdout, the stream its serial console
/// writes to byte by byte from the vCPU thread, and at its default level (info and warnings
/// on every boot) a log line can land inside the guest's line so the line is never seen (5
/// of 20 runs here). Errors still show, for a run that fails.
pub const FIRECRACKER_ARGS: &[&str] = &["--level", "Error"];

/// Guest memory for every VMM, MiB.
pub const GUEST_MEM_MIB: u32 = 128;

#[derive(Clone, Debug)]
pub enum Peer {
    Wisp,
    /// Another wisp binary (`--baseline-wisp`), run exactly as Wisp is.
    WispBaseline(PathBuf),
    Qemu(PathBuf),
    /// The binary and its config file.
    Firecracker(PathBuf, PathBuf),
}

impl Peer {
    pub fn name(&self) -> &'static str {
        match self {
            Peer::Wisp => "wisp",
            Peer::WispBaseline(_) => "wisp-baseline",
            Peer::Qemu(_) => "qemu-microvm",
            Peer::Firecracker(..) => "firecracker",
        }
    }

    /// The command that boots the unikernel (its command line: `cmdline`) and exits.
    pub fn command(&self, setup: &Setup, cmdline: &str) -> Command {
        match self {
            Peer::Wisp | Peer::WispBaseline(_) => {
                let bin = match self {
                    Peer::WispBaseline(bin) => bin,
                    _ => &setup.wisp,
                };
                let mut cmd = Command::new(bin);
                cmd.arg("run")
                    .arg("--kernel")
                    .arg(&setup.unikernel)
                    .arg("--cmdline")
                    .arg(cmdline)
                    .arg("--mem")
                    .arg(GUEST_MEM_MIB.to_string())
                    .arg("--boot-timer");
                cmd
            }
            Peer::Qemu(qemu) => {
                let mut cmd = Command::new(qemu);
                cmd.args(QEMU_ARGS).arg("-kernel").arg(&setup.unikernel);
                if !cmdline.is_empty() {
                    cmd.arg("-append").arg(cmdline);
                }
                cmd
            }
            Peer::Firecracker(bin, config) => {
                let mut cmd = Command::new(bin);
                cmd.args(FIRECRACKER_ARGS)
                    .arg("--no-api")
                    .arg("--config-file")
                    .arg(config);
                cmd
            }
        }
    }
}

/// The peers found for this run (Wisp first), writing Firecracker's config into the output
/// directory. Notes say which peers are missing and why.
pub fn peers(setup: &Setup, cmdline: &str) -> std::io::Result<(Vec<Peer>, Vec<String>)> {
    let mut peers = vec![Peer::Wisp];
    let mut notes = Vec::new();
    if let Some(baseline) = &setup.baseline_wisp {
        peers.push(Peer::WispBaseline(baseline.clone()));
    }
    match (&setup.qemu, &setup.qemu_missing) {
        (Some(qemu), _) => peers.push(Peer::Qemu(qemu.clone())),
        (None, why) => notes.push(format!(
            "QEMU not compared: {}",
            why.as_deref().unwrap_or("not found")
        )),
    }
    match &setup.firecracker {
        Some(fc) => {
            let config = setup.out.join("firecracker-vm.json");
            std::fs::write(&config, firecracker_config(&setup.unikernel, cmdline))?;
            peers.push(Peer::Firecracker(fc.clone(), config));
        }
        None => notes.push(
            "Firecracker not compared: give --firecracker PATH or FIRECRACKER=PATH".to_string(),
        ),
    }
    Ok((peers, notes))
}

/// Firecracker's `--config-file` document: the same boot source and machine as the others.
///
/// Firecracker reads it as its `VmmConfig` (src/vmm/src/resources.rs), where `drives` and
/// `boot-source` have no serde default: without `"drives": []` the file is refused even for a
/// diskless guest. `machine-config` is optional, but when present needs `vcpu_count` and
/// `mem_size_mib`. Wisp's `--config-file` and `wisp ctl create --config` take the same document.
pub fn firecracker_config(kernel: &Path, cmdline: &str) -> String {
    serde_json::json!({
        "boot-source": {
            "kernel_image_path": kernel,
            "boot_args": cmdline,
        },
        "drives": [],
        "machine-config": {
            "vcpu_count": 1,
            "mem_size_mib": GUEST_MEM_MIB,
        },
    })
    .to_string()
}

/// A command as one shell-like line, for the report.
pub fn describe(cmd: &Command) -> String {
    let quote = |s: &str| {
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            format!("{s:?}")
        } else {
            s.to_string()
        }
    };
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Firecracker's `--no-api --config-file` mode requires, mirrored from its
    /// `VmmConfig` (src/vmm/src/resources.rs, firecracker 81b38b9, and the structs it names):
    /// a field without a serde default there has none here, and the nested documents deny
    /// unknown fields as Firecracker's do. The top level denies them too, which Firecracker
    /// does not: a misspelt key would otherwise be silently ignored there.
    mod firecracker_no_api {
        use serde::Deserialize;
        use serde_json::Value;

        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        #[allow(dead_code)]
        pub struct VmmConfig {
            pub balloon: Option<Value>,
            pub drives: Vec<Value>,
            pub boot_source: BootSourceConfig,
            pub cpu_config: Option<Value>,
            pub logger: Option<Value>,
            pub machine_config: Option<MachineConfig>,
            pub metrics: Option<Value>,
            pub mmds_config: Option<Value>,
            #[serde(default)]
            pub network_interfaces: Vec<Value>,
            pub vsock: Option<Value>,
            pub entropy: Option<Value>,
            #[serde(default)]
            pub pmem: Vec<Value>,
            pub memory_hotplug: Option<Value>,
        }

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct BootSourceConfig {
            pub kernel_image_path: String,
            pub initrd_path: Option<String>,
            pub boot_args: Option<String>,
        }

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        pub struct MachineConfig {
            pub vcpu_count: u8,
            pub mem_size_mib: usize,
            #[serde(default)]
            pub smt: bool,
            pub cpu_template: Option<Value>,
            #[serde(default)]
            pub track_dirty_pages: bool,
            pub huge_pages: Option<Value>,
        }
    }

    #[test]
    fn firecracker_config_has_every_field_its_no_api_mode_requires() {
        let text = firecracker_config(Path::new("/k/wisp-unikernel"), "echo");
        let config: firecracker_no_api::VmmConfig = serde_json::from_str(&text).unwrap();
        assert!(config.drives.is_empty());
        assert_eq!(config.boot_source.kernel_image_path, "/k/wisp-unikernel");
        assert_eq!(config.boot_source.boot_args.as_deref(), Some("echo"));
        assert_eq!(config.boot_source.initrd_path, None);
        let machine = config.machine_config.unwrap();
        assert_eq!(machine.vcpu_count, 1);
        assert_eq!(machine.mem_size_mib, GUEST_MEM_MIB as usize);
    }

    #[test]
    fn the_mirror_refuses_a_config_without_drives_as_firecracker_did() {
        let mut v: serde_json::Value =
            serde_json::from_str(&firecracker_config(Path::new("/k"), "")).unwrap();
        v.as_object_mut().unwrap().remove("drives");
        let err = serde_json::from_value::<firecracker_no_api::VmmConfig>(v).unwrap_err();
        assert!(err.to_string().contains("missing field `drives`"), "{err}");
    }

    #[test]
    fn wisp_reads_the_same_config_document() {
        // The warm suite gives this document to `wisp ctl create --config`.
        let text = firecracker_config(Path::new("/k/wisp-unikernel"), "");
        let config: wisp_api::config::VmConfig = serde_json::from_str(&text).unwrap();
        let boot = config.boot_source.unwrap();
        assert_eq!(boot.kernel_image_path, Path::new("/k/wisp-unikernel"));
        assert!(config.drives.is_empty());
        assert_eq!(config.machine_config.vcpu_count, 1);
        assert_eq!(config.machine_config.mem_size_mib, GUEST_MEM_MIB);
    }

    #[test]
    fn firecracker_runs_quiet_without_its_api_on_the_config_file() {
        let setup = Setup {
            wisp: "/w/wisp".into(),
            unikernel: "/k/wisp-unikernel".into(),
            qemu: None,
            qemu_missing: None,
            firecracker: Some("/fc/firecracker".into()),
            baseline_wisp: None,
            out: "/out".into(),
            runs: 1,
            max_vms: 1,
            pool: 1,
            timeout: std::time::Duration::from_secs(1),
            started_utc: String::new(),
            jail: false,
            mem_shared: false,
        };
        let fc = Peer::Firecracker("/fc/firecracker".into(), "/out/fc.json".into());
        assert_eq!(
            describe(&fc.command(&setup, "")),
            "/fc/firecracker --level Error --no-api --config-file /out/fc.json"
        );
    }

    #[test]
    fn describe_quotes_empty_and_spaced_arguments() {
        let mut cmd = Command::new("wisp");
        cmd.args(["run", "--cmdline", "", "--x", "a b"]);
        assert_eq!(describe(&cmd), "wisp run --cmdline \"\" --x \"a b\"");
    }
}
