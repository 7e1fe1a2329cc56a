//! The VMMs compared, and the exact command each is run with on the same guest (the Wisp
//! unikernel, a PVH ELF that Wisp, QEMU and Firecracker all boot).

use crate::setup::Setup;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unikernel's first line on the serial console (guest/src/main.rs `GREETING`).
pub const GUEST_LINE: &[u8] = b"hello from wisp unikernel";

/// QEMU `-M microvm` as it boots the unikernel here.
///
/// - `x-option-roms=off,rtc=off`: no option ROMs, no CMOS RTC (nothing for the guest to use).
/// - `-device i8042`: microvm has no keyboard controller by default, and the unikernel ends by
///   pulsing the i8042 reset line (port 0x64, 0xfe); without it QEMU never exits.
///   With it, `-no-reboot` turns that reset into a clean exit (status 0), as with Wisp.
/// - `-cpu host,-arch-capabilities`: under kvm_pvm, QEMU 7.2 refuses `-cpu host` with the
///   ARCH_CAPABILITIES MSR it cannot set.
/// - `pit=off,pic=off,isa-serial=on` also boot the unikernel; the defaults are kept so the
///   machine is the stock microvm a user would run.
pub const QEMU_ARGS: &[&str] = &[
    "-M",
    "microvm,x-option-roms=off,rtc=off",
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

/// Guest memory for every VMM, MiB.
pub const GUEST_MEM_MIB: u32 = 128;

#[derive(Clone, Debug)]
pub enum Peer {
    Wisp,
    Qemu(PathBuf),
    /// The binary and its config file.
    Firecracker(PathBuf, PathBuf),
}

impl Peer {
    pub fn name(&self) -> &'static str {
        match self {
            Peer::Wisp => "wisp",
            Peer::Qemu(_) => "qemu-microvm",
            Peer::Firecracker(..) => "firecracker",
        }
    }

    /// The command that boots the unikernel (its command line: `cmdline`) and exits.
    pub fn command(&self, setup: &Setup, cmdline: &str) -> Command {
        match self {
            Peer::Wisp => {
                let mut cmd = Command::new(&setup.wisp);
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
                cmd.arg("--no-api").arg("--config-file").arg(config);
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
pub fn firecracker_config(kernel: &Path, cmdline: &str) -> String {
    serde_json::json!({
        "boot-source": {
            "kernel_image_path": kernel,
            "boot_args": cmdline,
        },
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

    #[test]
    fn firecracker_config_names_kernel_cmdline_and_machine() {
        let text = firecracker_config(Path::new("/k/wisp-unikernel"), "");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["boot-source"]["kernel_image_path"], "/k/wisp-unikernel");
        assert_eq!(v["boot-source"]["boot_args"], "");
        assert_eq!(v["machine-config"]["vcpu_count"], 1);
        assert_eq!(v["machine-config"]["mem_size_mib"], 128);
    }

    #[test]
    fn describe_quotes_empty_and_spaced_arguments() {
        let mut cmd = Command::new("wisp");
        cmd.args(["run", "--cmdline", "", "--x", "a b"]);
        assert_eq!(describe(&cmd), "wisp run --cmdline \"\" --x \"a b\"");
    }
}
