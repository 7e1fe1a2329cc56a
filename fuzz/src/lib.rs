//! Shared pieces of the guest-facing fuzz targets (fuzz_targets/): a byte reader for the
//! fuzzer's input, a guest-side virtio-mmio driver over a small guest-memory image with the
//! invariants every device must keep, and the host ends of the net and vsock backends.
//!
//! The targets drive the real device code in-process, without KVM: the transport's registers
//! through `vm_device::MutDeviceMmio`, queue notifications and backend readiness through a real
//! `event_manager::EventManager`, exactly as the VMM thread runs them.

pub mod input;
pub mod net_host;
pub mod seeds;
pub mod virtq;
pub mod vsock_host;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A directory of this fuzzer process's own for backing files and sockets, removed when the
/// process exits normally (libFuzzer ends a time-bounded run with `exit`).
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("wisp-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz scratch dir");
        extern "C" fn remove() {
            if let Some(dir) = DIR.get() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        // SAFETY: registers a plain `extern "C" fn()` with no captured state.
        unsafe { libc::atexit(remove) };
        dir
    })
}
