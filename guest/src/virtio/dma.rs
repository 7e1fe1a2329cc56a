//! Memory shared with virtio devices: virtqueue rings and request buffers.
//!
//! The unikernel runs with guest-physical = virtual (identity paging, `boot.rs`), so a
//! pointer into this arena is also the address a device is given. One command drives one
//! device at a time: the arena is handed out by bumping an offset and taken back whole with
//! [`reset`] once that device has been reset (virtio 1.2 §3.3.1: after a reset the device no
//! longer touches the memory it was given).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Size of the arena: rings (well under a page each at our queue sizes) plus 16 net receive
/// buffers, 16 vsock receive buffers and a few request buffers fit with room to spare.
const ARENA_SIZE: usize = 256 * 1024;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);

// SAFETY: the arena is only reached through `alloc`, which hands out disjoint ranges (the bump
// offset is atomic); the unikernel drives devices from the boot CPU only.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A zeroed region of the arena: its address is both the pointer and the guest-physical
/// address given to the device.
#[derive(Clone, Copy, Debug)]
pub struct DmaRegion {
    addr: usize,
    len: usize,
}

impl DmaRegion {
    /// Guest-physical address (= virtual address) of the region.
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Pointer to the region's first byte.
    pub fn ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// Copies `bytes` to offset `at`, clamped to the region.
    pub fn write(&self, at: usize, bytes: &[u8]) {
        let room = self.len.saturating_sub(at);
        let count = bytes.len().min(room);
        for (index, byte) in bytes[..count].iter().enumerate() {
            // SAFETY: `at + index < len`, inside this region of the static arena; volatile
            // because the device reads the memory behind the compiler's back.
            unsafe { self.ptr().add(at + index).write_volatile(*byte) };
        }
    }

    /// Copies `out.len()` bytes from offset `at` (clamped to the region) and returns how many.
    pub fn read(&self, at: usize, out: &mut [u8]) -> usize {
        let room = self.len.saturating_sub(at);
        let count = out.len().min(room);
        for (index, byte) in out[..count].iter_mut().enumerate() {
            // SAFETY: `at + index < len`, inside this region of the static arena; volatile
            // because the device wrote it behind the compiler's back.
            *byte = unsafe { self.ptr().add(at + index).read_volatile() };
        }
        count
    }

    /// The byte at `at`, or `None` past the end.
    pub fn byte(&self, at: usize) -> Option<u8> {
        let mut one = [0u8];
        (self.read(at, &mut one) == 1).then_some(one[0])
    }
}

/// A zeroed region of `len` bytes aligned to `align` (a power of two), or `None` when the
/// arena is full.
pub fn alloc(len: usize, align: usize) -> Option<DmaRegion> {
    let base = ARENA.0.get() as usize;
    let align = align.max(1);
    let start = NEXT.load(Ordering::Relaxed);
    let addr = (base + start).checked_add(align - 1)? & !(align - 1);
    let end = addr.checked_add(len)?;
    if end > base + ARENA_SIZE {
        return None;
    }
    NEXT.store(end - base, Ordering::Relaxed);
    // SAFETY: [addr, addr + len) lies inside the arena (checked above) and was handed out to
    // nobody else since the last reset.
    unsafe { core::ptr::write_bytes(addr as *mut u8, 0, len) };
    Some(DmaRegion { addr, len })
}

/// Takes back every region. Only call once no device uses them (after a device reset).
pub fn reset() {
    NEXT.store(0, Ordering::Relaxed);
}
