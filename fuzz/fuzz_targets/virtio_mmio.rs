//! The virtio-mmio register file under arbitrary access sequences: any offset in and past the
//! 4 KiB slot, widths 1/2/4/8, reads and writes of any value (status transitions, queue
//! selection and sizes, ring addresses, feature negotiation, config space, notifications,
//! interrupt acks), interleaved with runs of the event loop (activation and reset finish
//! there, queues get served) and guest stores into memory.
//!
//! Input: one byte picks the device (rng, block, vsock), a u16 length and a memory image, then
//! operations: a kind byte (bits 0-1: write, read, event loop, guest store; bits 2-3: width
//! 1 << n), a u16 offset (modulo 0x1100) and a u64 value (guest store: u16 address, u8
//! length, bytes).
//!
//! Invariants besides no panic: identification registers never change; the status register
//! only holds bits in the order of virtio 1.2 §3.1.1 (DRIVER_OK implies FEATURES_OK implies
//! DRIVER implies ACKNOWLEDGE); a register access of the wrong size reads as zeros.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;
use wisp_devices::virtio::mmio::{
    STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};
use wisp_devices::virtio::{Block, Rng, VirtioDevice, Vsock};
use wisp_guest_fuzz::input::Input;
use wisp_guest_fuzz::virtq::{Guest, MEM_SIZE};

/// Most operations per input.
const MAX_OPS: usize = 512;

fn device(choice: u8) -> Box<dyn VirtioDevice> {
    static FILE: OnceLock<std::path::PathBuf> = OnceLock::new();
    let tmp = || wisp_guest_fuzz::scratch_dir().join("mmio");
    match choice % 3 {
        0 => Box::new(Rng::new()),
        1 => {
            let path = FILE.get_or_init(|| {
                let p = tmp().with_extension("img");
                std::fs::write(&p, [0u8; 8 * 512]).expect("backing file");
                p
            });
            Box::new(Block::new(path, choice & 4 != 0, None).expect("block device"))
        }
        _ => Box::new(Vsock::new(3, tmp().with_extension("sock")).expect("vsock device")),
    }
}

fn check_status(s: u32) {
    let implies = |a: u32, b: u32| s & a == 0 || s & b != 0;
    assert!(
        implies(STATUS_DRIVER_OK, STATUS_FEATURES_OK)
            && implies(STATUS_FEATURES_OK, STATUS_DRIVER)
            && implies(STATUS_DRIVER, STATUS_ACKNOWLEDGE),
        "status {s:#x} holds bits out of the order of virtio 1.2 §3.1.1"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mut g = Guest::new(device(inp.u8()));
    let image_len = usize::from(inp.u16()).min(MEM_SIZE);
    g.guest_write(0, inp.bytes(image_len));
    let id = g.read32(0x008);
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        let kind = inp.u8();
        let width = 1usize << ((kind >> 2) & 3);
        let offset = u64::from(inp.u16() % 0x1100);
        match kind & 3 {
            0 => {
                let value = inp.u64().to_le_bytes();
                let t = &mut *g.transport.lock().expect("transport lock");
                t.mmio_write(MmioAddress(0), offset, &value[..width]);
            }
            1 => {
                let mut buf = [0xa5u8; 8];
                let t = &mut *g.transport.lock().expect("transport lock");
                t.mmio_read(MmioAddress(0), offset, &mut buf[..width]);
                if offset < 0x100 && (width != 4 || offset % 4 != 0) {
                    assert_eq!(buf[..width], [0u8; 8][..width], "bad-size register read");
                }
            }
            2 => g.pump(),
            _ => {
                let len = usize::from(inp.u8());
                let bytes = inp.bytes(len);
                g.guest_write(offset.wrapping_mul(16), bytes);
            }
        }
        assert_eq!(g.read32(0x000), 0x7472_6976, "magic");
        assert_eq!(g.read32(0x004), 2, "version");
        assert_eq!(g.read32(0x008), id, "device id");
        check_status(g.read32(0x070));
    }
    g.pump();
    check_status(g.read32(0x070));
});
