//! The filters as data: they compile, they list each syscall once, they stay small, and the
//! test hook's syscall is in none of them.

use super::*;

fn params() -> FilterParams {
    FilterParams {
        kick_signal: libc::SIGRTMIN(),
    }
}

fn names(kind: ThreadKind) -> Vec<&'static str> {
    allowed(kind, &params())
        .unwrap()
        .iter()
        .map(|a| a.name)
        .collect()
}

#[test]
fn every_filter_compiles_to_a_program() {
    let filters = Filters::compile(&params()).unwrap();
    for kind in ThreadKind::ALL {
        assert!(!filters.program(kind).is_empty(), "{kind}");
    }
}

#[test]
fn each_syscall_is_listed_once_per_filter() {
    for kind in ThreadKind::ALL {
        let mut seen = names(kind);
        let listed = seen.len();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), listed, "{kind}: {seen:?}");
    }
}

#[test]
fn the_test_hooks_syscall_is_in_no_filter() {
    for kind in ThreadKind::ALL {
        let numbers: Vec<i64> = allowed(kind, &params())
            .unwrap()
            .iter()
            .map(|a| a.number)
            .collect();
        assert!(!numbers.contains(&libc::SYS_getppid), "{kind}");
    }
}

#[test]
fn the_filters_stay_narrow() {
    // Firecracker's: vmm about 50, api about 31, vcpu about 27. Ours must not drift wider;
    // the vmm thread's two more are vhost-user's sendmsg/recvmsg (virtio-fs), which
    // Firecracker has no device for.
    let (vmm, api, vcpu, wispd) = (
        names(ThreadKind::Vmm).len(),
        names(ThreadKind::Api).len(),
        names(ThreadKind::Vcpu).len(),
        names(ThreadKind::Wispd).len(),
    );
    eprintln!("allowed syscalls: vmm {vmm}, api {api}, vcpu {vcpu}, wispd {wispd}");
    assert!(vcpu < api && api < vmm, "vmm {vmm}, api {api}, vcpu {vcpu}");
    assert!(vmm <= 52, "vmm {vmm}");
    assert!(wispd <= 55, "wispd {wispd}");
}

#[test]
fn wispd_never_executes_traces_mounts_or_ioctls() {
    let n = names(ThreadKind::Wispd);
    for forbidden in [
        "execve", "execveat", "fork", "vfork", "clone", "clone3", "ptrace", "mount", "setns",
        "unshare", "ioctl", "bind", "listen", "setuid", "chmod", "chown",
    ] {
        assert!(!n.contains(&forbidden), "wispd allows {forbidden}");
    }
}

#[test]
fn only_the_vmm_thread_opens_files_or_sockets() {
    for kind in [ThreadKind::Api, ThreadKind::Vcpu] {
        let n = names(kind);
        for forbidden in ["openat", "socket", "connect", "unlink", "ioctl"] {
            if kind == ThreadKind::Vcpu && forbidden == "ioctl" {
                continue;
            }
            assert!(!n.contains(&forbidden), "{kind} allows {forbidden}");
        }
    }
}

/// The syscall names docs/seccomp.md lists for `kind`: its own table and the one every
/// filter shares (the first column of the tables between `<!-- seccomp:NAME -->` and
/// `<!-- /seccomp -->`).
fn documented(kind: ThreadKind) -> Vec<String> {
    let mut names = section("every");
    names.extend(section(kind.name()));
    names.sort_unstable();
    names.dedup();
    names
}

fn section(name: &str) -> Vec<String> {
    let doc = include_str!("../../docs/seccomp.md");
    let start = format!("<!-- seccomp:{name} -->");
    let from = doc
        .find(&start)
        .unwrap_or_else(|| panic!("no {start} in the docs"));
    let section = &doc[from..];
    let section = &section[..section.find("<!-- /seccomp -->").unwrap()];
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_docs_list_exactly_the_syscalls_each_filter_allows() {
    for kind in ThreadKind::ALL {
        let mut want: Vec<String> = names(kind).into_iter().map(str::to_string).collect();
        let mut have = documented(kind);
        want.sort_unstable();
        have.sort_unstable();
        assert_eq!(have, want, "docs/seccomp.md, {kind} filter");
    }
}

#[test]
fn the_docs_name_every_allowed_ioctl() {
    let doc = include_str!("../../docs/seccomp.md");
    for ioctl in VMM_IOCTLS.iter().chain(VCPU_IOCTLS) {
        assert!(doc.contains(ioctl.name), "{}", ioctl.name);
    }
}
