//! The control page's fixed layout (version 2). The offsets and sizes live in `wisp-abi`
//! (`wisp_abi::control_page`), the one place both sides take them from; the field table is
//! control_page.md beside this file.

pub use wisp_abi::control_page::*;

/// The most virtio devices one VM can have (drives, network interfaces, vsock and entropy
/// together: one IRQ each). The page holds that many; the configuration store refuses more.
pub const MAX_DEVICES: usize = DEVICES_MAX;

// Every id the configuration store accepts fits a device entry's id field.
const _: () = assert!(crate::validate::MAX_ID_LEN <= DEV_ID_MAX);
// And every kernel command line (plus its NUL) fits the command-line field.
const _: () = assert!(crate::validate::MAX_BOOT_ARGS_LEN < CMDLINE_MAX);
