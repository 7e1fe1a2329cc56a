//! `linux`: the Tinyx Linux guest, Wisp against the peers, inside the real-KVM test host
//! (issue 4) where this machine's KVM cannot boot Linux. Not wired up yet: it reports why.

use crate::results::SuiteOutcome;
use wisp_vmm::host_kvm::HostKvm;

pub fn run() -> SuiteOutcome {
    let host = HostKvm::detect();
    let harness = crate::setup::workspace_file("tests/testhost/mod.rs");
    let reason = if host.boots_linux() {
        format!(
            "/dev/kvm here is {host}, but wisp-bench has no Tinyx guest wired in yet \
             (needs the Tinyx artifacts, issue 3)"
        )
    } else if harness.is_file() {
        format!(
            "/dev/kvm here is {host}, where Linux does not finish booting; the real-KVM test \
             host ({}) is a cargo-test harness that wisp-bench cannot drive yet",
            harness.display()
        )
    } else {
        format!("/dev/kvm here is {host}, where Linux does not finish booting, and there is no real-KVM test host harness (tests/testhost/)")
    };
    SuiteOutcome::Skipped { reason }
}
