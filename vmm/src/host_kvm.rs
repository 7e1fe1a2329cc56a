//! What kind of KVM this host has. It matters to users and to every figure we report: under
//! `kvm_pvm` (a software, pagetable-based hypervisor) small freestanding guests run fast but an
//! unmodified Linux kernel does not finish booting; with `kvm_intel`/`kvm_amd` everything runs.

use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKvm {
    /// VT-x or AMD-V: KVM with hardware virtualisation.
    Hardware(&'static str),
    /// `kvm_pvm`: KVM on a software hypervisor, without VT-x/AMD-V.
    Pvm,
    /// /dev/kvm is missing.
    Absent,
    /// /dev/kvm exists but no known backend module is loaded (built in, or unknown).
    Unknown,
}

impl HostKvm {
    /// Reads /sys/module to find the KVM backend.
    pub fn detect() -> HostKvm {
        Self::detect_in(Path::new("/sys/module"), Path::new("/dev/kvm"))
    }

    fn detect_in(sys_module: &Path, dev_kvm: &Path) -> HostKvm {
        if !dev_kvm.exists() {
            return HostKvm::Absent;
        }
        if sys_module.join("kvm_pvm").exists() {
            return HostKvm::Pvm;
        }
        for vendor in ["kvm_intel", "kvm_amd"] {
            if sys_module.join(vendor).exists() {
                return HostKvm::Hardware(vendor);
            }
        }
        HostKvm::Unknown
    }

    /// Whether an unmodified Linux guest can boot here.
    pub fn boots_linux(self) -> bool {
        matches!(self, HostKvm::Hardware(_) | HostKvm::Unknown)
    }
}

impl std::fmt::Display for HostKvm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostKvm::Hardware(module) => write!(f, "hardware KVM ({module})"),
            HostKvm::Pvm => write!(f, "kvm_pvm (software PVM, no VT-x/AMD-V)"),
            HostKvm::Absent => write!(f, "no /dev/kvm"),
            HostKvm::Unknown => write!(f, "KVM (backend module unknown)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_backend_from_sys_module() {
        let dir = std::env::temp_dir().join(format!("wisp-hostkvm-{}", std::process::id()));
        let dev = dir.join("kvm");
        std::fs::create_dir_all(dir.join("kvm_amd")).unwrap();
        assert_eq!(HostKvm::detect_in(&dir, &dev), HostKvm::Absent);
        std::fs::write(&dev, b"").unwrap();
        assert_eq!(HostKvm::detect_in(&dir, &dev), HostKvm::Hardware("kvm_amd"));
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        assert_eq!(HostKvm::detect_in(&dir, &dev), HostKvm::Pvm);
        assert!(!HostKvm::Pvm.boots_linux());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
