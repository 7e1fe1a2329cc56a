//! `cold --jail` and `warm --jail`: Wisp with its isolation on and off, side by side in the same
//! run. Jail + seccomp is the unikernel booted by `wisp-jailer` (its own root, the kernel bound
//! read-only, an unprivileged uid, the host's libc bound for a dynamic `wisp`) with the default
//! per-thread filters; "no seccomp" is plain `wisp --no-seccomp`. wispd's variants are `wispd
//! --jail` and `wispd --no-seccomp` (which turns off its shells' filters as well).

use crate::peers::GUEST_MEM_MIB;
use crate::setup::Setup;
use std::path::PathBuf;
use std::process::Command;

/// The unprivileged ids jailed VMs run as.
pub const JAIL_UID: &str = "10123";
pub const JAIL_GID: &str = "10123";
/// The host's libc, for a dynamically linked `wisp` (harmless for a static one).
pub const LIBC_BINDS: [&str; 2] = [
    "/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro",
    "/lib64:/lib64:ro",
];

/// Where the suite's jails are built.
pub fn jail_base(setup: &Setup) -> PathBuf {
    setup.out.join("jails")
}

/// The jailer beside `wisp`, if built.
pub fn jailer(setup: &Setup) -> Option<PathBuf> {
    setup.sibling("wisp-jailer")
}

/// `wisp --no-seccomp run …`: the cold boot without filters.
pub fn unfiltered(setup: &Setup, cmdline: &str) -> Command {
    let mut cmd = Command::new(&setup.wisp);
    cmd.arg("--no-seccomp");
    run_args(&mut cmd, &setup.unikernel.display().to_string(), cmdline);
    cmd
}

/// `wisp-jailer … -- run …`: the cold boot jailed, filters on; `id` must be unique per run.
pub fn jailed(setup: &Setup, jailer: &std::path::Path, id: &str, cmdline: &str) -> Command {
    let mut cmd = Command::new(jailer);
    cmd.args(["--id", id, "--exec-file"])
        .arg(&setup.wisp)
        .args(["--uid", JAIL_UID, "--gid", JAIL_GID])
        .arg("--chroot-base-dir")
        .arg(jail_base(setup));
    for bind in LIBC_BINDS {
        cmd.args(["--bind", bind]);
    }
    cmd.arg("--bind")
        .arg(format!("{}:/kernel:ro", setup.unikernel.display()))
        .arg("--");
    run_args(&mut cmd, "/kernel", cmdline);
    cmd
}

fn run_args(cmd: &mut Command, kernel: &str, cmdline: &str) {
    cmd.args(["run", "--kernel", kernel, "--cmdline", cmdline])
        .args(["--mem", &GUEST_MEM_MIB.to_string(), "--boot-timer"]);
}

/// `wispd --jail` flags: the unikernel's directory bound read-only at /kernels, so the create
/// names `/kernels/<file>` and nothing is linked on the create path.
pub fn wispd_jail_args(setup: &Setup, jailer: &std::path::Path) -> Vec<String> {
    let mut args = vec![
        "--jail".to_string(),
        "--jailer".to_string(),
        jailer.display().to_string(),
        "--jail-uid".to_string(),
        JAIL_UID.to_string(),
        "--jail-gid".to_string(),
        JAIL_GID.to_string(),
        "--chroot-base-dir".to_string(),
        jail_base(setup).display().to_string(),
    ];
    for bind in LIBC_BINDS {
        args.extend(["--jail-bind".to_string(), bind.to_string()]);
    }
    if let Some(dir) = setup.unikernel.parent() {
        args.extend([
            "--jail-bind".to_string(),
            format!("{}:/kernels:ro", dir.display()),
        ]);
    }
    args
}
