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

/// The bulk window: guest RAM at 16 MiB, far above the image (which ends below 2 MiB) and the
/// boot structures in low memory, for buffers too large for the arena (the benchmarks' 64 KiB
/// requests). Kept out of the image so that its size, and what a VMM loads, stays the same.
const BULK_START: usize = 16 << 20;
/// Size of the bulk window.
pub const BULK_SIZE: usize = 1 << 20;
/// RAM the PVH memory map must report before the bulk window is used: the window's end plus
/// the low megabyte.
pub const BULK_MIN_RAM: u64 = (BULK_START + BULK_SIZE) as u64 + (1 << 20);
static BULK_NEXT: AtomicUsize = AtomicUsize::new(0);

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

    /// Reads the little-endian `u16` at `at` with one 16-bit load, so a value the device is
    /// changing is seen whole (a ring index read byte by byte can be torn: 0x2ff -> 0x300 read
    /// as 0x3ff). `None` when `at` is misaligned or past the end.
    pub fn read_u16(&self, at: usize) -> Option<u16> {
        let ptr = self.u16_ptr(at)?;
        // SAFETY: `u16_ptr` checked that the two bytes lie in this region and are aligned;
        // volatile because the device writes it behind the compiler's back.
        Some(u16::from_le(unsafe { ptr.read_volatile() }))
    }

    /// Writes `value` little-endian at `at` with one 16-bit store, so the device never sees a
    /// half-written ring index. Ignored when `at` is misaligned or past the end.
    pub fn write_u16(&self, at: usize, value: u16) {
        if let Some(ptr) = self.u16_ptr(at) {
            // SAFETY: `u16_ptr` checked bounds and alignment; volatile because the device
            // reads it behind the compiler's back.
            unsafe { ptr.write_volatile(value.to_le()) };
        }
    }

    fn u16_ptr(&self, at: usize) -> Option<*mut u16> {
        let addr = self.addr.checked_add(at)?;
        (at.checked_add(2)? <= self.len && addr % 2 == 0).then_some(addr as *mut u16)
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

/// A zeroed region of `len` bytes aligned to `align` from the bulk window, or `None` when the
/// window is full or `ram_bytes` (the PVH memory map's total) does not cover it.
pub fn alloc_bulk(len: usize, align: usize, ram_bytes: u64) -> Option<DmaRegion> {
    if ram_bytes < BULK_MIN_RAM {
        return None;
    }
    let align = align.max(1);
    let start = BULK_NEXT.load(Ordering::Relaxed);
    let addr = (BULK_START + start).checked_add(align - 1)? & !(align - 1);
    let end = addr.checked_add(len)?;
    if end > BULK_START + BULK_SIZE {
        return None;
    }
    BULK_NEXT.store(end - BULK_START, Ordering::Relaxed);
    // SAFETY: [addr, addr + len) lies inside the bulk window (checked above), which is RAM
    // (the memory map reports at least BULK_MIN_RAM, contiguous above 1 MiB on the VMMs we
    // target), identity-mapped by `boot.rs`, used by nothing else, and handed out to nobody
    // else since the last reset.
    unsafe { core::ptr::write_bytes(addr as *mut u8, 0, len) };
    Some(DmaRegion { addr, len })
}

/// Takes back every region. Only call once no device uses them (after a device reset).
pub fn reset() {
    NEXT.store(0, Ordering::Relaxed);
    BULK_NEXT.store(0, Ordering::Relaxed);
}
