//! The control page's fixed layout (version 1). See control_page.md beside this file.

/// Size of the shared region: one page.
pub const PAGE_SIZE: usize = 4096;
/// "WISPNOXS", little endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"WISPNOXS");
pub const VERSION: u32 = 1;

pub const OFF_MAGIC: usize = 0;
pub const OFF_VERSION: usize = 8;
pub const OFF_STATE: usize = 12;
pub const OFF_COMMAND: usize = 16;
pub const OFF_SEQ: usize = 20;
pub const OFF_ACK: usize = 24;
pub const OFF_RESULT: usize = 28;
pub const OFF_T_PREPARED: usize = 32;
pub const OFF_T_COMMAND: usize = 40;
pub const OFF_T_CONFIGURED: usize = 48;
pub const OFF_T_FIRST_ENTRY: usize = 56;
pub const OFF_T_BOOT_TIMER: usize = 64;
pub const OFF_MEM_MIB: usize = 72;
pub const OFF_VCPUS: usize = 76;
pub const OFF_KERNEL_LEN: usize = 80;
pub const OFF_INITRD_LEN: usize = 84;
pub const OFF_CMDLINE_LEN: usize = 88;
pub const OFF_ERROR_LEN: usize = 92;
pub const OFF_SHELL_PID: usize = 96;
pub const OFF_DEVICE_COUNT: usize = 100;
pub const OFF_SHELL_MEM_MIB: usize = 104;
pub const OFF_SHELL_VCPUS: usize = 108;
pub const OFF_KERNEL: usize = 128;
pub const KERNEL_MAX: usize = 256;
pub const OFF_INITRD: usize = OFF_KERNEL + KERNEL_MAX;
pub const INITRD_MAX: usize = 256;
pub const OFF_CMDLINE: usize = OFF_INITRD + INITRD_MAX;
pub const CMDLINE_MAX: usize = 2048;
pub const OFF_ERROR: usize = OFF_CMDLINE + CMDLINE_MAX;
pub const ERROR_MAX: usize = 256;
pub const OFF_DEVICES: usize = OFF_ERROR + ERROR_MAX;
pub const DEVICE_ENTRY_SIZE: usize = 256;
pub const DEVICES_MAX: usize = 4;

/// Within a device entry.
pub const DEV_OFF_KIND: usize = 0;
pub const DEV_OFF_FLAGS: usize = 4;
/// Kind-specific parameter (8 bytes): vsock's guest CID (u32), or net's guest MAC (6 bytes).
pub const DEV_OFF_CID: usize = 8;
pub const DEV_OFF_MAC: usize = 8;
pub const DEV_OFF_ID: usize = 16;
pub const DEV_ID_MAX: usize = 32;
pub const DEV_OFF_PATH: usize = 48;
pub const DEV_PATH_MAX: usize = DEVICE_ENTRY_SIZE - DEV_OFF_PATH;

pub const DEV_KIND_BLOCK: u32 = 1;
pub const DEV_KIND_NET: u32 = 2;
pub const DEV_KIND_VSOCK: u32 = 3;
pub const DEV_KIND_RNG: u32 = 4;
pub const DEV_FLAG_READ_ONLY: u32 = 1;
pub const DEV_FLAG_ROOT: u32 = 2;
/// Net: the entry carries a guest MAC (otherwise the device picks one).
pub const DEV_FLAG_MAC: u32 = 4;

const _: () = assert!(OFF_DEVICES + DEVICES_MAX * DEVICE_ENTRY_SIZE <= PAGE_SIZE);
