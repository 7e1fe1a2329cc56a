//! The control page's fixed layout (version 4): a memfd shared by `wispd` and one prepared
//! `wisp shell`. Protocol and field table: api/src/control_page/control_page.md.
//!
//! Every string field has a u32 length word, so a writer stores only the bytes it has and a
//! reader checks the length against the field before touching it. Paths hold up to
//! [`PATH_MAX`] bytes (Linux's `PATH_MAX`), so every path the host can open fits.

use crate::memory_map::MAX_VIRTIO_DEVICES;

/// Size of the shared region (25 pages; only the pages written are ever backed).
pub const REGION_SIZE: usize = 25 * 4096;
/// "WISPNOXS", little endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"WISPNOXS");
/// Version 4: the whole `VmConfig` (logger, metrics, smt, shared memory, 19 devices with
/// virtio-fs among them, their rate limiters), request id.
pub const VERSION: u32 = 4;

/// Linux's `PATH_MAX`: the size of every path field.
pub const PATH_MAX: usize = 4096;
/// Largest guest the page describes (1 TiB) and most vCPUs.
pub const MEM_MIB_MAX: u32 = 1 << 20;
pub const VCPUS_MAX: u32 = 255;

// Header: control words, timestamps, sizes and length words.
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
/// `CFG_*` bits: which optional parts of the configuration are present.
pub const OFF_CONFIG_FLAGS: usize = 112;
/// Logger level, `LOG_LEVEL_*`.
pub const OFF_LOG_LEVEL: usize = 116;
pub const OFF_LOG_PATH_LEN: usize = 120;
pub const OFF_METRICS_PATH_LEN: usize = 124;
pub const OFF_REQUEST_ID_LEN: usize = 128;

// Variable-length fields.
pub const OFF_REQUEST_ID: usize = 192;
pub const REQUEST_ID_MAX: usize = 64;
pub const OFF_ERROR: usize = OFF_REQUEST_ID + REQUEST_ID_MAX;
pub const ERROR_MAX: usize = 1792;
pub const OFF_CMDLINE: usize = OFF_ERROR + ERROR_MAX;
/// x86 `COMMAND_LINE_SIZE`.
pub const CMDLINE_MAX: usize = 2048;
pub const OFF_KERNEL: usize = OFF_CMDLINE + CMDLINE_MAX;
pub const KERNEL_MAX: usize = PATH_MAX;
pub const OFF_INITRD: usize = OFF_KERNEL + KERNEL_MAX;
pub const INITRD_MAX: usize = PATH_MAX;
pub const OFF_LOG_PATH: usize = OFF_INITRD + INITRD_MAX;
pub const LOG_PATH_MAX: usize = PATH_MAX;
pub const OFF_METRICS_PATH: usize = OFF_LOG_PATH + LOG_PATH_MAX;
pub const METRICS_PATH_MAX: usize = PATH_MAX;
pub const OFF_DEVICES: usize = OFF_METRICS_PATH + METRICS_PATH_MAX;
/// One entry per virtio device the VM can have (one IRQ each).
pub const DEVICES_MAX: usize = MAX_VIRTIO_DEVICES;
pub const DEVICE_ENTRY_SIZE: usize = DEV_OFF_PATH + DEV_PATH_MAX;
/// Rate-limiter table, one entry per device table entry (same index): for each of the
/// device's four bucket slots `k` (see [`DEV_OFF_REFILL`]) the bucket's `size` (u64) at
/// `16 k` and its `one_time_burst` (u64) at `16 k + 8`.
pub const OFF_LIMITERS: usize = OFF_DEVICES + DEVICES_MAX * DEVICE_ENTRY_SIZE;
pub const LIMITER_ENTRY_SIZE: usize = 4 * 16;

/// `OFF_CONFIG_FLAGS` bits.
pub const CFG_BOOT_SOURCE: u32 = 1 << 0;
pub const CFG_INITRD: u32 = 1 << 1;
pub const CFG_BOOT_ARGS: u32 = 1 << 2;
pub const CFG_SMT: u32 = 1 << 3;
pub const CFG_LOGGER: u32 = 1 << 4;
pub const CFG_LOG_SHOW_LEVEL: u32 = 1 << 5;
pub const CFG_LOG_SHOW_ORIGIN: u32 = 1 << 6;
pub const CFG_METRICS: u32 = 1 << 7;
/// `machine-config` `mem_shared`: guest RAM in a memfd a vhost-user backend can map.
pub const CFG_MEM_SHARED: u32 = 1 << 8;
pub const CFG_ALL: u32 = (1 << 9) - 1;

/// Logger levels (Firecracker's names).
pub const LOG_LEVEL_OFF: u32 = 0;
pub const LOG_LEVEL_ERROR: u32 = 1;
pub const LOG_LEVEL_WARNING: u32 = 2;
pub const LOG_LEVEL_INFO: u32 = 3;
pub const LOG_LEVEL_DEBUG: u32 = 4;
pub const LOG_LEVEL_TRACE: u32 = 5;

// Within a device entry.
pub const DEV_OFF_KIND: usize = 0;
pub const DEV_OFF_FLAGS: usize = 4;
/// Kind-specific word: vsock's guest CID.
pub const DEV_OFF_CID: usize = 8;
pub const DEV_OFF_ID_LEN: usize = 12;
pub const DEV_OFF_PATH_LEN: usize = 16;
/// Net: the guest MAC as text, "aa:bb:cc:dd:ee:ff" (present when `DEV_FLAG_MAC`).
pub const DEV_OFF_MAC: usize = 20;
pub const DEV_MAC_LEN: usize = 17;
/// Four u32 `refill_time`s (ms), one per bucket slot `k = 2 * limiter + bucket`: limiter 0
/// is a drive's or the entropy device's `rate_limiter` or a net `rx_rate_limiter`, limiter 1 a
/// net `tx_rate_limiter`; bucket 0 is `bandwidth`, 1 `ops`.
pub const DEV_OFF_REFILL: usize = 40;
/// Drive id or interface id (empty for vsock and rng).
pub const DEV_OFF_ID: usize = 64;
pub const DEV_ID_MAX: usize = 64;
/// Host path: drive file, tap device name, vsock Unix socket (empty for rng).
pub const DEV_OFF_PATH: usize = DEV_OFF_ID + DEV_ID_MAX;
pub const DEV_PATH_MAX: usize = PATH_MAX;

pub const DEV_KIND_BLOCK: u32 = 1;
pub const DEV_KIND_NET: u32 = 2;
pub const DEV_KIND_VSOCK: u32 = 3;
pub const DEV_KIND_RNG: u32 = 4;
/// virtio-fs (vhost-user): the kind-specific word at [`DEV_OFF_CID`] holds `num_queues`
/// (bits 0-15) and `queue_size` (bits 16-31), the tag sits NUL-padded at [`DEV_OFF_FS_TAG`],
/// the id is the fs id and the path the backend's socket.
pub const DEV_KIND_FS: u32 = 5;
/// virtio-fs tag, NUL-padded (a tag has no NUL): fs entries use neither the MAC nor the
/// refill slots it overlaps.
pub const DEV_OFF_FS_TAG: usize = DEV_OFF_MAC;
pub const DEV_FS_TAG_MAX: usize = 36;
/// Block: read-only, root device.
pub const DEV_FLAG_READ_ONLY: u32 = 1 << 0;
pub const DEV_FLAG_ROOT: u32 = 1 << 1;
/// Net: the entry carries a guest MAC (otherwise the device picks one).
pub const DEV_FLAG_MAC: u32 = 1 << 2;
/// Limiter 0 / 1 is present (it may still have no bucket).
pub const DEV_FLAG_LIMITER: [u32; 2] = [1 << 3, 1 << 4];
/// Bucket slot `k` is present (its limiter must be).
pub const DEV_FLAG_BUCKET: [u32; 4] = [1 << 5, 1 << 6, 1 << 7, 1 << 8];
/// Bucket slot `k` has a `one_time_burst` (its bucket must be present).
pub const DEV_FLAG_BURST: [u32; 4] = [1 << 9, 1 << 10, 1 << 11, 1 << 12];

const _: () = assert!(OFF_REQUEST_ID_LEN + 4 <= OFF_REQUEST_ID);
const _: () = assert!(DEV_OFF_MAC + DEV_MAC_LEN <= DEV_OFF_REFILL);
const _: () = assert!(DEV_OFF_REFILL + 16 <= DEV_OFF_ID);
const _: () = assert!(DEV_OFF_FS_TAG + DEV_FS_TAG_MAX <= DEV_OFF_ID);
const _: () = assert!(OFF_LIMITERS.is_multiple_of(8));
const _: () = assert!(OFF_LIMITERS + DEVICES_MAX * LIMITER_ENTRY_SIZE <= REGION_SIZE);
const _: () = assert!(OFF_DEVICES.is_multiple_of(8) && DEVICE_ENTRY_SIZE.is_multiple_of(8));
const _: () = assert!(OFF_DEVICES + DEVICES_MAX * DEVICE_ENTRY_SIZE <= REGION_SIZE);
const _: () = assert!(REGION_SIZE.is_multiple_of(4096));

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field as (offset, size), in page order.
    fn fields() -> Vec<(usize, usize)> {
        let mut f: Vec<(usize, usize)> = (0..=OFF_REQUEST_ID_LEN)
            .step_by(4)
            .map(|o| (o, 4))
            .collect();
        f.extend([
            (OFF_REQUEST_ID, REQUEST_ID_MAX),
            (OFF_ERROR, ERROR_MAX),
            (OFF_CMDLINE, CMDLINE_MAX),
            (OFF_KERNEL, KERNEL_MAX),
            (OFF_INITRD, INITRD_MAX),
            (OFF_LOG_PATH, LOG_PATH_MAX),
            (OFF_METRICS_PATH, METRICS_PATH_MAX),
        ]);
        f.extend(
            (0..DEVICES_MAX).map(|i| (OFF_DEVICES + i * DEVICE_ENTRY_SIZE, DEVICE_ENTRY_SIZE)),
        );
        f.extend(
            (0..DEVICES_MAX).map(|i| (OFF_LIMITERS + i * LIMITER_ENTRY_SIZE, LIMITER_ENTRY_SIZE)),
        );
        f
    }

    #[test]
    fn fields_do_not_overlap_and_fit_the_region() {
        let f = fields();
        for pair in f.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:?} overlap");
        }
        let (last, size) = f[f.len() - 1];
        assert!(last + size <= REGION_SIZE);
        // The words the page accesses as u32 / u64 atomics are aligned.
        assert!(f.iter().filter(|(_, s)| *s == 4).all(|(o, _)| o % 4 == 0));
        assert_eq!(OFF_MAGIC % 8 + OFF_T_PREPARED % 8 + OFF_T_BOOT_TIMER % 8, 0);
    }

    #[test]
    fn the_page_holds_every_device_a_vm_can_attach() {
        assert_eq!(DEVICES_MAX, 19);
        assert_eq!(&MAGIC.to_le_bytes(), b"WISPNOXS");
    }
}
