//! The process's choice, made once by the binary: filters on (compiled here, once) or off
//! (`--no-seccomp`). Threads spawned deep inside the library crates look it up when they
//! start, so no filter has to be threaded through every constructor between `main` and them.

use crate::{FilterParams, Filters, SeccompError, ThreadKind};
use std::sync::OnceLock;

/// Test-only (debug builds): `vmm`, `api` or `vcpu` makes that thread call a syscall no filter
/// allows right after its filter is on, so tests can watch the process die of SIGSYS.
pub const TEST_FORBIDDEN_SYSCALL_ENV: &str = "WISP_TEST_FORBIDDEN_SYSCALL";

struct Policy {
    /// `None`: the process runs without filters (`--no-seccomp`).
    filters: Option<Filters>,
    /// The thread kind that breaks its filter on purpose (debug builds only).
    forbidden_in: Option<ThreadKind>,
}

static POLICY: OnceLock<Policy> = OnceLock::new();

/// Compiles the filters and makes every thread that starts from now on install its own.
/// Call once, early in `main`, before any VMM, API or vCPU thread exists.
pub fn enable(params: &FilterParams) -> Result<(), SeccompError> {
    let started = std::time::Instant::now();
    let filters = Filters::compile(params)?;
    log::debug!("seccomp filters compiled in {:?}", started.elapsed());
    set(Some(filters));
    Ok(())
}

/// `--no-seccomp`: threads run unfiltered. For debugging only; says so in the log.
pub fn disable() {
    log::warn!("seccomp filters are off (--no-seccomp): for debugging only");
    set(None);
}

fn set(filters: Option<Filters>) {
    let policy = Policy {
        filters,
        forbidden_in: forbidden_in(),
    };
    if POLICY.set(policy).is_err() {
        log::warn!("the seccomp policy was already chosen; keeping the first choice");
    }
}

/// Whether this process's threads install filters.
pub fn is_enabled() -> bool {
    POLICY.get().is_some_and(|p| p.filters.is_some())
}

/// Installs `kind`'s filter on the calling thread, if the process enabled filters. The
/// thread must not go on to handle input when this fails.
pub fn enter(kind: ThreadKind) -> Result<(), SeccompError> {
    let Some(policy) = POLICY.get() else {
        return Ok(());
    };
    if let Some(filters) = &policy.filters {
        filters.install(kind)?;
        log::debug!("{kind} thread: seccomp filter installed");
    }
    if policy.forbidden_in == Some(kind) {
        break_the_filter(kind);
    }
    Ok(())
}

#[cfg(debug_assertions)]
fn forbidden_in() -> Option<ThreadKind> {
    let want = std::env::var(TEST_FORBIDDEN_SYSCALL_ENV).ok()?;
    ThreadKind::ALL.into_iter().find(|k| k.name() == want)
}

#[cfg(not(debug_assertions))]
fn forbidden_in() -> Option<ThreadKind> {
    None
}

/// `getppid`: harmless, and in no filter (nothing in Wisp asks for its parent), so under a
/// filter the process dies here with SIGSYS and without one it carries on.
fn break_the_filter(kind: ThreadKind) {
    log::warn!(
        "{kind} thread: calling getppid, which no filter allows ({TEST_FORBIDDEN_SYSCALL_ENV})"
    );
    // SAFETY: getppid takes no arguments and touches no memory.
    let _ = unsafe { libc::syscall(libc::SYS_getppid) };
}
