//! What the numbers were measured on: CPU, kernel, the kind of /dev/kvm (hardware or PVM), and
//! the versions of the VMMs. Absolute times mean little without it (docs/design.md §7).

use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;
use std::process::Command;
use wisp_vmm::host_kvm::HostKvm;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cpu_model: String,
    pub cpus: usize,
    pub mem_total_kib: u64,
    /// `uname -srv`, read from /proc/sys/kernel.
    pub kernel: String,
    /// The KVM backend, e.g. "kvm_pvm (software PVM, no VT-x/AMD-V)".
    pub host_kvm: String,
    /// The QEMU binary compared (`--qemu`): its `--version` first line and its path; `None`
    /// when QEMU is not compared.
    pub qemu_version: Option<String>,
    /// The Firecracker binary compared (`--firecracker`): its `--version` first line and path.
    #[serde(default)]
    pub firecracker_version: Option<String>,
    /// `wisp --version`.
    pub wisp_version: Option<String>,
    /// /proc/loadavg when the run started: the machine may be shared, and load shows in
    /// every number.
    #[serde(default)]
    pub load_average: String,
}

impl MachineInfo {
    /// This machine, and the versions of the binaries this run uses (`qemu`, `firecracker`:
    /// the peers actually compared, if any).
    pub fn detect(wisp: &Path, qemu: Option<&Path>, firecracker: Option<&Path>) -> MachineInfo {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        MachineInfo {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            mem_total_kib: meminfo_kib(&meminfo, "MemTotal").unwrap_or(0),
            kernel: kernel(),
            host_kvm: HostKvm::detect().to_string(),
            qemu_version: qemu.and_then(version_of),
            firecracker_version: firecracker.and_then(version_of),
            wisp_version: first_line_of(Command::new(wisp).arg("--version")),
            load_average: fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        }
    }
}

/// The first `model name` in /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// A `Name:   N kB` field of /proc/meminfo.
pub fn meminfo_kib(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        (name == field)
            .then(|| rest.split_whitespace().next()?.parse().ok())
            .flatten()
    })
}

fn kernel() -> String {
    let read = |name: &str| {
        fs::read_to_string(Path::new("/proc/sys/kernel").join(name))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{} {} {}",
        read("ostype"),
        read("osrelease"),
        read("version")
    )
}

/// `PROGRAM --version`'s first line, with the program's path: the binary that ran, not
/// whichever one PATH finds.
fn version_of(program: &Path) -> Option<String> {
    let line = first_line_of(Command::new(program).arg("--version"))?;
    Some(format!("{line} ({})", program.display()))
}

fn first_line_of(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_model_and_meminfo_fields() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 9B14"));
        let meminfo = "MemTotal:       24579740 kB\nMemFree:  100 kB\nMemAvailable:   20000 kB\n";
        assert_eq!(meminfo_kib(meminfo, "MemTotal"), Some(24579740));
        assert_eq!(meminfo_kib(meminfo, "MemAvailable"), Some(20000));
        assert_eq!(meminfo_kib(meminfo, "Mem"), None);
    }

    #[test]
    fn versions_name_the_binary_that_ran() {
        // QEMU is a project dependency (scripts/install-deps.sh).
        let qemu = crate::setup::find_program("qemu-system-x86_64")
            .expect("qemu-system-x86_64 on PATH: run scripts/install-deps.sh");
        let info = MachineInfo::detect(Path::new("/nonexistent/wisp"), Some(&qemu), None);
        let version = info.qemu_version.unwrap();
        assert!(version.starts_with("QEMU emulator version "), "{version}");
        assert!(
            version.ends_with(&format!("({})", qemu.display())),
            "{version}"
        );
        assert_eq!(version_of(Path::new("/nonexistent/qemu")), None);
    }

    #[test]
    fn detect_reads_this_machine() {
        let info = MachineInfo::detect(Path::new("/nonexistent/wisp"), None, None);
        assert!(info.cpus >= 1);
        assert!(info.mem_total_kib > 0);
        assert!(info.kernel.starts_with("Linux"), "{}", info.kernel);
        assert_eq!(info.wisp_version, None);
        assert_eq!(info.qemu_version, None);
        assert_eq!(info.firecracker_version, None);
        assert_eq!(
            info.load_average.split(' ').count(),
            3,
            "{}",
            info.load_average
        );
    }
}
