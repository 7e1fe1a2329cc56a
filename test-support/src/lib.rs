//! What Wisp's end-to-end test crates share (tests/, api/tests, benches/tests): running a
//! process with a deadline and capturing what it printed, the real curl client on a Unix
//! socket, scratch directories and files, a network namespace with a tap, and where the
//! unikernel is.
//!
//! Dev-only: every helper panics on a setup failure, because a test that cannot set itself up
//! has failed. Nothing here knows the `wisp` binary's path: `env!("CARGO_BIN_EXE_wisp")` only
//! exists in the root package's own tests, so callers pass it in.

mod curl;
mod netns;
mod process;
mod run;
mod scratch;
mod unikernel;
mod virtiofsd;

pub use curl::curl;
pub use netns::NetNs;
pub use process::{children_of, spawn_with_lines};
pub use run::{run_with_deadline, wisp_run, Outcome};
pub use scratch::{Scratch, TempFile};
pub use unikernel::unikernel;
pub use virtiofsd::virtiofsd;
