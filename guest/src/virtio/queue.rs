//! Split virtqueues (virtio 1.2 §2.7): a descriptor table, the driver ("available") ring and
//! the device ("used") ring, in the DMA arena. Completion is found by polling the used ring.
//!
//! Everything read back from the device (used index, descriptor id, length) is checked: a
//! misbehaving device produces an error, never a panic or an out-of-bounds access.

use super::dma::{self, DmaRegion};
use super::VirtioError;
use crate::deadline::Deadline;
use core::sync::atomic::{fence, Ordering};

/// The largest ring this driver builds; the device's QueueNumMax may lower it.
pub const MAX_QUEUE_SIZE: u16 = 16;
const MAX: usize = MAX_QUEUE_SIZE as usize;

/// Descriptor flags (§2.7.5).
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
/// Driver ring flag (§2.7.6): we poll, so the device need not interrupt us.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Used-ring polls between two looks at the clock in [`Virtqueue::wait_used`].
const POLLS_PER_DEADLINE_CHECK: u32 = 1024;

const DESC_SIZE: usize = 16;
/// Alignments from §2.7 table "Virtqueue Part Alignment".
const DESC_ALIGN: usize = 16;
const AVAIL_ALIGN: usize = 2;
const USED_ALIGN: usize = 4;

/// One buffer of a request: `writable` buffers are filled by the device.
#[derive(Clone, Copy, Debug)]
pub struct Buffer {
    pub region: DmaRegion,
    pub len: u32,
    pub writable: bool,
}

impl Buffer {
    /// The whole of `region`, readable by the device.
    pub fn readable(region: DmaRegion) -> Self {
        Self::part(region, region.len(), false)
    }

    /// The whole of `region`, written by the device.
    pub fn writable(region: DmaRegion) -> Self {
        Self::part(region, region.len(), true)
    }

    /// The first `len` bytes of `region` (clamped).
    pub fn part(region: DmaRegion, len: usize, writable: bool) -> Self {
        let len = u32::try_from(len.min(region.len())).unwrap_or(u32::MAX);
        Buffer {
            region,
            len,
            writable,
        }
    }
}

/// A finished request: the head descriptor it was submitted with and the number of bytes the
/// device says it wrote (unchecked: callers clamp it to their buffer).
#[derive(Clone, Copy, Debug)]
pub struct Used {
    pub head: u16,
    pub len: u32,
}

/// One split virtqueue.
pub struct Virtqueue {
    index: u16,
    size: u16,
    desc: DmaRegion,
    avail: DmaRegion,
    used: DmaRegion,
    /// Our own copy of each descriptor's `next` (the device may not change the table, but we
    /// never trust what is in shared memory when freeing).
    next: [u16; MAX],
    /// Descriptors in the chain starting at each head in flight (0 = not a head in flight).
    chain_len: [u16; MAX],
    free: [bool; MAX],
    avail_idx: u16,
    last_used: u16,
}

impl Virtqueue {
    /// Allocates a ring of `min(max_size, MAX_QUEUE_SIZE)` entries for queue `index`.
    pub fn new(index: u16, max_size: u16) -> Result<Self, VirtioError> {
        let size = max_size.min(MAX_QUEUE_SIZE);
        // Split rings must have a power-of-two size (§2.7 "Queue Size").
        let size = if size.is_power_of_two() {
            size
        } else {
            1 << (15 - size.leading_zeros())
        };
        let entries = usize::from(size);
        let desc = dma::alloc(DESC_SIZE * entries, DESC_ALIGN).ok_or(VirtioError::OutOfDma)?;
        // flags, idx, ring[size], used_event (§2.7.6).
        let avail = dma::alloc(6 + 2 * entries, AVAIL_ALIGN).ok_or(VirtioError::OutOfDma)?;
        // flags, idx, ring[size] of {id u32, len u32}, avail_event (§2.7.8).
        let used = dma::alloc(6 + 8 * entries, USED_ALIGN).ok_or(VirtioError::OutOfDma)?;
        avail.write(0, &AVAIL_F_NO_INTERRUPT.to_le_bytes());
        let mut free = [false; MAX];
        free[..entries].fill(true);
        Ok(Virtqueue {
            index,
            size,
            desc,
            avail,
            used,
            next: [0; MAX],
            chain_len: [0; MAX],
            free,
            avail_idx: 0,
            last_used: 0,
        })
    }

    /// The queue's index on its device.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Number of ring entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Guest-physical addresses of the descriptor table, driver ring and device ring.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.desc.addr(), self.avail.addr(), self.used.addr())
    }

    /// Puts a request made of `buffers` (readable ones first, then writable ones, §2.7.4.2)
    /// on the driver ring and returns its head descriptor. The caller notifies the device.
    pub fn submit(&mut self, buffers: &[Buffer]) -> Result<u16, VirtioError> {
        if buffers.is_empty() {
            return Err(VirtioError::EmptyRequest);
        }
        let mut ids = [0u16; MAX];
        let mut found = 0;
        for (id, free) in self.free[..usize::from(self.size)].iter().enumerate() {
            if found == buffers.len() {
                break;
            }
            if *free {
                ids[found] = id as u16;
                found += 1;
            }
        }
        if found < buffers.len() {
            return Err(VirtioError::QueueFull { index: self.index });
        }
        for (position, buffer) in buffers.iter().enumerate() {
            let id = ids[position];
            let last = position + 1 == buffers.len();
            let mut flags = if buffer.writable { DESC_F_WRITE } else { 0 };
            let next = if last { 0 } else { ids[position + 1] };
            if !last {
                flags |= DESC_F_NEXT;
            }
            let mut entry = [0u8; DESC_SIZE];
            entry[0..8].copy_from_slice(&buffer.region.addr().to_le_bytes());
            entry[8..12].copy_from_slice(&buffer.len.to_le_bytes());
            entry[12..14].copy_from_slice(&flags.to_le_bytes());
            entry[14..16].copy_from_slice(&next.to_le_bytes());
            self.desc.write(usize::from(id) * DESC_SIZE, &entry);
            self.free[usize::from(id)] = false;
            self.next[usize::from(id)] = next;
        }
        let head = ids[0];
        self.chain_len[usize::from(head)] = buffers.len() as u16;
        let slot = usize::from(self.avail_idx % self.size);
        self.avail.write(4 + 2 * slot, &head.to_le_bytes());
        // The ring entry must be visible before the index that publishes it (§2.7.13).
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // One 16-bit store: the device may be reading the index right now (§2.7.13.3).
        self.avail.write_u16(2, self.avail_idx);
        Ok(head)
    }

    fn used_idx(&self) -> u16 {
        // One 16-bit load: the device may be writing the index right now.
        self.used.read_u16(2).unwrap_or(self.last_used)
    }

    /// The next finished request, if the device has put one on the used ring.
    pub fn pop_used(&mut self) -> Result<Option<Used>, VirtioError> {
        let device_idx = self.used_idx();
        let pending = device_idx.wrapping_sub(self.last_used);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err(VirtioError::BadUsedIndex {
                index: self.index,
                used: device_idx,
                seen: self.last_used,
            });
        }
        // Read the element only after seeing the index that publishes it.
        fence(Ordering::SeqCst);
        let slot = usize::from(self.last_used % self.size);
        let mut element = [0u8; 8];
        self.used.read(4 + 8 * slot, &mut element);
        self.last_used = self.last_used.wrapping_add(1);
        let id = u32::from_le_bytes([element[0], element[1], element[2], element[3]]);
        let len = u32::from_le_bytes([element[4], element[5], element[6], element[7]]);
        let head = match u16::try_from(id) {
            Ok(head) if head < self.size && self.chain_len[usize::from(head)] != 0 => head,
            _ => {
                return Err(VirtioError::BadUsedId {
                    index: self.index,
                    id,
                })
            }
        };
        self.release(head);
        Ok(Some(Used { head, len }))
    }

    fn release(&mut self, head: u16) {
        let mut id = head;
        let count = self.chain_len[usize::from(head)];
        self.chain_len[usize::from(head)] = 0;
        for _ in 0..count {
            let slot = usize::from(id);
            self.free[slot] = true;
            id = self.next[slot];
            if id >= self.size {
                break;
            }
        }
    }

    /// Waits (polling, bounded by `deadline`) for the next finished request.
    ///
    /// The deadline is only looked at every [`POLLS_PER_DEADLINE_CHECK`] polls, and the loop
    /// has no `pause`: under PVM both `rdtsc` and `pause` trap to the hypervisor (measured
    /// here: about 14,000 and 7,000 TSC cycles), while a read of the used ring costs nothing.
    pub fn wait_used(&mut self, deadline: &Deadline) -> Result<Used, VirtioError> {
        loop {
            for _ in 0..POLLS_PER_DEADLINE_CHECK {
                if let Some(used) = self.pop_used()? {
                    return Ok(used);
                }
            }
            if deadline.passed() {
                return Err(VirtioError::Timeout { index: self.index });
            }
        }
    }
}
