//! The vocabulary the per-thread filters are written in: a list of allowed syscalls, each by
//! name and number, either outright or only with certain arguments (ioctl request numbers,
//! `fcntl` commands, `mmap` protections). Lists are merged by syscall: a syscall allowed
//! outright anywhere is allowed outright; otherwise any of its argument rules may match.

use crate::ioctls::Ioctl;
use seccompiler::{BackendError, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
use std::collections::BTreeMap;

/// One syscall a thread may make.
#[derive(Clone, Debug)]
pub struct Allowed {
    pub name: &'static str,
    pub number: i64,
    /// Empty: any arguments. Otherwise one of these rules must match.
    pub rules: Vec<SeccompRule>,
}

/// A syscall by name, for `allow!(read)`: the name the docs list, and libc's number for it.
macro_rules! sys {
    ($name:ident) => {
        (stringify!($name), $crate::rules::syscall_number!($name))
    };
}

/// `libc::SYS_<name>`.
macro_rules! syscall_number {
    (accept4) => {
        libc::SYS_accept4
    };
    (brk) => {
        libc::SYS_brk
    };
    (clock_gettime) => {
        libc::SYS_clock_gettime
    };
    (close) => {
        libc::SYS_close
    };
    (connect) => {
        libc::SYS_connect
    };
    (epoll_ctl) => {
        libc::SYS_epoll_ctl
    };
    (epoll_pwait) => {
        libc::SYS_epoll_pwait
    };
    (epoll_wait) => {
        libc::SYS_epoll_wait
    };
    (exit) => {
        libc::SYS_exit
    };
    (exit_group) => {
        libc::SYS_exit_group
    };
    (fcntl) => {
        libc::SYS_fcntl
    };
    (fdatasync) => {
        libc::SYS_fdatasync
    };
    (fstat) => {
        libc::SYS_fstat
    };
    (fsync) => {
        libc::SYS_fsync
    };
    (futex) => {
        libc::SYS_futex
    };
    (getpid) => {
        libc::SYS_getpid
    };
    (getrandom) => {
        libc::SYS_getrandom
    };
    (gettid) => {
        libc::SYS_gettid
    };
    (ioctl) => {
        libc::SYS_ioctl
    };
    (lseek) => {
        libc::SYS_lseek
    };
    (madvise) => {
        libc::SYS_madvise
    };
    (mmap) => {
        libc::SYS_mmap
    };
    (mprotect) => {
        libc::SYS_mprotect
    };
    (mremap) => {
        libc::SYS_mremap
    };
    (munmap) => {
        libc::SYS_munmap
    };
    (newfstatat) => {
        libc::SYS_newfstatat
    };
    (openat) => {
        libc::SYS_openat
    };
    (pread64) => {
        libc::SYS_pread64
    };
    (preadv) => {
        libc::SYS_preadv
    };
    (pwrite64) => {
        libc::SYS_pwrite64
    };
    (pwritev) => {
        libc::SYS_pwritev
    };
    (read) => {
        libc::SYS_read
    };
    (readv) => {
        libc::SYS_readv
    };
    (recvfrom) => {
        libc::SYS_recvfrom
    };
    (rt_sigprocmask) => {
        libc::SYS_rt_sigprocmask
    };
    (rt_sigreturn) => {
        libc::SYS_rt_sigreturn
    };
    (sched_yield) => {
        libc::SYS_sched_yield
    };
    (sendto) => {
        libc::SYS_sendto
    };
    (shutdown) => {
        libc::SYS_shutdown
    };
    (sigaltstack) => {
        libc::SYS_sigaltstack
    };
    (socket) => {
        libc::SYS_socket
    };
    (statx) => {
        libc::SYS_statx
    };
    (tgkill) => {
        libc::SYS_tgkill
    };
    (unlink) => {
        libc::SYS_unlink
    };
    (unlinkat) => {
        libc::SYS_unlinkat
    };
    (write) => {
        libc::SYS_write
    };
    (writev) => {
        libc::SYS_writev
    };
}

pub(crate) use {sys, syscall_number};

/// Builds one thread kind's list.
#[derive(Default)]
pub struct SyscallList {
    allowed: Vec<Allowed>,
}

type Built = Result<(), BackendError>;

impl SyscallList {
    /// Allows each syscall with any arguments.
    pub fn allow(&mut self, syscalls: &[(&'static str, i64)]) {
        for &(name, number) in syscalls {
            self.allowed.push(Allowed {
                name,
                number,
                rules: Vec::new(),
            });
        }
    }

    /// Allows `syscall` when argument `index` (a 32-bit value) equals one of `values`.
    pub fn allow_arg(&mut self, syscall: (&'static str, i64), index: u8, values: &[u64]) -> Built {
        let rules = values
            .iter()
            .map(|&v| rule(vec![dword(index, SeccompCmpOp::Eq, v)?]))
            .collect::<Result<Vec<_>, _>>()?;
        self.push(syscall, rules);
        Ok(())
    }

    /// Allows `ioctl` with these request numbers only.
    pub fn allow_ioctls(&mut self, ioctls: &[Ioctl]) -> Built {
        let numbers: Vec<u64> = ioctls.iter().map(|i| i.number).collect();
        self.allow_arg(sys!(ioctl), 1, &numbers)
    }

    /// Allows `syscall` when argument `index` has none of the bits of `mask` set.
    pub fn allow_without_bits(
        &mut self,
        syscall: (&'static str, i64),
        index: u8,
        mask: u64,
    ) -> Built {
        let none_set = dword(index, SeccompCmpOp::MaskedEq(mask), 0)?;
        self.push(syscall, vec![rule(vec![none_set])?]);
        Ok(())
    }

    fn push(&mut self, (name, number): (&'static str, i64), rules: Vec<SeccompRule>) {
        self.allowed.push(Allowed {
            name,
            number,
            rules,
        });
    }

    /// The list merged by syscall number, in number order.
    pub fn merged(self) -> Vec<Allowed> {
        let mut by_number: BTreeMap<i64, Allowed> = BTreeMap::new();
        for entry in self.allowed {
            match by_number.get_mut(&entry.number) {
                None => {
                    by_number.insert(entry.number, entry);
                }
                Some(have) if have.rules.is_empty() => {}
                Some(have) if entry.rules.is_empty() => have.rules.clear(),
                Some(have) => have.rules.extend(entry.rules),
            }
        }
        by_number.into_values().collect()
    }
}

fn dword(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, BackendError> {
    SeccompRule::new(conditions)
}
