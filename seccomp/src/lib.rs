//! Wisp's seccomp filters (issue 13, docs/seccomp.md): one default-deny filter per kind of
//! thread, compiled once to BPF with rust-vmm's `seccompiler` and installed by each thread on
//! itself before it handles guest or client input:
//!
//! - the **vCPU** threads, at thread start, before they are handed a vCPU;
//! - the **API** thread, before its first accept;
//! - `wispd`'s thread, once its sockets, epoll set and spawner exist and before it reads a
//!   client (a filter of its own, not shared with any thread of `wisp`);
//! - the **VMM** thread, once the VM runs and before its event loop serves a device. Building
//!   the VM (opening /dev/kvm and the images, creating the VM, mapping memory, spawning vCPU
//!   threads) happens before that, as in Firecracker, whose VMM filter also goes on after boot.
//!
//! A syscall outside a thread's filter kills the whole process with SIGSYS; the kernel's audit
//! log records the syscall number.
//!
//! The binary opts in once per process ([`enable`]; `--no-seccomp` calls [`disable`]); the
//! library crates that spawn the threads call [`enter`] at each thread's start, which does
//! nothing in a process that never opted in (library tests, tools).

mod ioctls;
mod policy;
mod rules;
mod snapshot_ioctls;
mod threads;

pub use ioctls::Ioctl;
pub use policy::{disable, enable, enter, is_enabled, TEST_FORBIDDEN_SYSCALL_ENV};
pub use rules::Allowed;
pub use threads::{allowed, FilterParams, VCPU_IOCTLS, VMM_IOCTLS};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The kinds of thread a `wisp` process runs, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// The main thread: the event loop, once the VM runs.
    Vmm,
    /// "wisp-api": the REST server.
    Api,
    /// "vcpu{N}": KVM_RUN and the device handlers of its exits.
    Vcpu,
    /// `wispd`'s one thread: its event loop, serving clients and driving shells.
    Wispd,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 4] = [
        ThreadKind::Vmm,
        ThreadKind::Api,
        ThreadKind::Vcpu,
        ThreadKind::Wispd,
    ];

    /// The name used in messages, the docs and the test hook.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Api => "api",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Wispd => "wispd",
        }
    }
}

impl std::fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot compile the {kind} seccomp filter: {source}")]
    Compile {
        kind: ThreadKind,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("cannot install the {kind} seccomp filter: {source}")]
    Install {
        kind: ThreadKind,
        #[source]
        source: seccompiler::Error,
    },
}

/// The filters as BPF programs.
#[derive(Clone, Debug)]
pub struct Filters {
    vmm: BpfProgram,
    api: BpfProgram,
    vcpu: BpfProgram,
    wispd: BpfProgram,
}

impl Filters {
    /// Compiles every filter: default action KillProcess, listed syscalls allowed.
    pub fn compile(params: &FilterParams) -> Result<Filters, SeccompError> {
        Ok(Filters {
            vmm: compile(ThreadKind::Vmm, params)?,
            api: compile(ThreadKind::Api, params)?,
            vcpu: compile(ThreadKind::Vcpu, params)?,
            wispd: compile(ThreadKind::Wispd, params)?,
        })
    }

    /// The program of one thread kind.
    pub fn program(&self, kind: ThreadKind) -> &BpfProgram {
        match kind {
            ThreadKind::Vmm => &self.vmm,
            ThreadKind::Api => &self.api,
            ThreadKind::Vcpu => &self.vcpu,
            ThreadKind::Wispd => &self.wispd,
        }
    }

    /// Installs `kind`'s filter on the calling thread (and sets its no_new_privs bit). It
    /// cannot be removed; threads the caller creates afterwards inherit it.
    pub fn install(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        seccompiler::apply_filter(self.program(kind))
            .map_err(|source| SeccompError::Install { kind, source })
    }
}

fn compile(kind: ThreadKind, params: &FilterParams) -> Result<BpfProgram, SeccompError> {
    let err = |source| SeccompError::Compile { kind, source };
    let rules = allowed(kind, params)
        .map_err(err)?
        .into_iter()
        .map(|a| (a.number, a.rules))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(err)?;
    BpfProgram::try_from(filter).map_err(err)
}

#[cfg(test)]
mod tests;
