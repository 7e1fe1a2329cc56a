//! The one definition of every address, magic value and layout that two sides of Wisp must
//! agree on, so they cannot drift apart:
//!
//! * guest-visible ABI, shared by the VMM and devices (host) and the unikernel (guest):
//!   the MMIO map and device IRQs ([`memory_map`]), the boot timer ([`boot_timer`]), the noxs
//!   device page ([`noxs`]) and the MP table ([`mptable`]);
//! * the control page between `wispd` and a prepared `wisp shell` ([`control_page`]).
//!
//! Constants only: no code that touches memory, no dependencies, `no_std`, so the freestanding
//! unikernel can use it as it is.

#![cfg_attr(not(test), no_std)]

pub mod boot_timer;
pub mod control_page;
pub mod memory_map;
pub mod mptable;
pub mod noxs;
