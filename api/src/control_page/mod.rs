//! The noxs control page: a versioned, fixed-layout shared-memory region (a sealed memfd)
//! between `wispd` and one prepared `wisp` shell, plus one eventfd doorbell each way. `wispd`
//! writes a command and the whole VM configuration, bumps the sequence number and rings; the
//! shell acts and acknowledges. No HTTP, no serialisation, no central store on the create path
//! (LightVM's noxs, docs/design.md §5). Layout and protocol: control_page.md.
//!
//! Both sides treat the page as hostile: every access is atomic (a peer writing concurrently
//! cannot cause undefined behaviour, only garbage), everything read is validated, and the
//! memfd is sealed so that neither side can resize it under the other.

pub mod layout;
mod page;

pub use page::{ControlPage, ControlPageError};

use layout::*;

/// Lifecycle of the VM a shell hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ShellState {
    Empty = 0,
    Prepared = 1,
    Configuring = 2,
    Running = 3,
    Paused = 4,
    Halted = 5,
    Failed = 6,
}

impl ShellState {
    pub fn from_u32(v: u32) -> Option<ShellState> {
        use ShellState::*;
        [
            Empty,
            Prepared,
            Configuring,
            Running,
            Paused,
            Halted,
            Failed,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }

    pub fn name(self) -> &'static str {
        match self {
            ShellState::Empty => "empty",
            ShellState::Prepared => "prepared",
            ShellState::Configuring => "configuring",
            ShellState::Running => "running",
            ShellState::Paused => "paused",
            ShellState::Halted => "halted",
            ShellState::Failed => "failed",
        }
    }
}

/// What `wispd` asks of a shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ControlCommand {
    None = 0,
    Create = 1,
    Pause = 2,
    Resume = 3,
    Destroy = 4,
}

impl ControlCommand {
    pub fn from_u32(v: u32) -> Option<ControlCommand> {
        use ControlCommand::*;
        [None, Create, Pause, Resume, Destroy]
            .into_iter()
            .find(|c| *c as u32 == v)
    }
}

/// Timestamps on the page, CLOCK_MONOTONIC nanoseconds (one clock for every process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timestamp {
    /// The shell finished preparing.
    Prepared,
    /// `wispd` rang the create doorbell.
    Command,
    /// The shell finished configuring the guest.
    Configured,
    /// The boot vCPU entered the guest for the first time.
    FirstEntry,
    /// The guest wrote the boot timer.
    BootTimer,
}

impl Timestamp {
    fn offset(self) -> usize {
        match self {
            Timestamp::Prepared => OFF_T_PREPARED,
            Timestamp::Command => OFF_T_COMMAND,
            Timestamp::Configured => OFF_T_CONFIGURED,
            Timestamp::FirstEntry => OFF_T_FIRST_ENTRY,
            Timestamp::BootTimer => OFF_T_BOOT_TIMER,
        }
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000) + ts.tv_nsec as u64
}
