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

/// A syscall as the lists name it: `sys!(SYS_read)` is `("read", libc::SYS_read)`, so the
/// name in the docs and the number the filter checks come from one token.
macro_rules! sys {
    ($number:ident) => {
        (
            stringify!($number).trim_start_matches("SYS_"),
            libc::$number,
        )
    };
}

pub(crate) use sys;

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
        self.allow_arg(sys!(SYS_ioctl), 1, &numbers)
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
