//! Descriptor chains taken from a split virtqueue, checked before any device touches them.
//!
//! `virtio-queue` walks the descriptor table; this module adds what a hostile guest makes
//! necessary: every buffer must lie inside guest memory, device-readable buffers must precede
//! device-writable ones (virtio 1.2 §2.7.4.2), and a chain that is cut short (a `next` loop,
//! a `next` index past the table, a bad indirect table) is rejected instead of half-served.

use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::device::Interrupt;
use super::metrics::DeviceMetrics;

/// Why a descriptor chain was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChainError {
    /// No descriptor could be read at all.
    #[error("descriptor chain {head} is empty or its first descriptor is unreadable")]
    Empty {
        /// Head index of the chain.
        head: u16,
    },
    /// The chain did not end: a loop, a `next` past the table, or a bad indirect table.
    #[error("descriptor chain {head} does not terminate (loop, bad next index or indirect table)")]
    Unterminated {
        /// Head index of the chain.
        head: u16,
    },
    /// A buffer lies (partly) outside guest memory.
    #[error("descriptor buffer {addr:#x}+{len} lies outside guest memory")]
    OutOfMemory {
        /// Guest-physical address of the buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A device-readable buffer follows a device-writable one.
    #[error("device-readable descriptor after a device-writable one in chain {head}")]
    ReadableAfterWritable {
        /// Head index of the chain.
        head: u16,
    },
    /// A read or write went past the buffers of the chain.
    #[error("access of {len} bytes at offset {offset} exceeds the chain's {avail} bytes")]
    TooShort {
        /// Offset into the readable or writable part.
        offset: usize,
        /// Bytes asked for.
        len: usize,
        /// Bytes the chain has.
        avail: usize,
    },
    /// Guest memory access failed even though the range was checked (memory layout changed).
    #[error("guest memory access at {addr:#x} failed")]
    Memory {
        /// Guest-physical address.
        addr: u64,
    },
}

/// One guest buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestBuf {
    /// Guest-physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A checked descriptor chain: its readable buffers, then its writable ones.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// Device-readable buffers, in order.
    pub readable: Vec<GuestBuf>,
    /// Device-writable buffers, in order.
    pub writable: Vec<GuestBuf>,
}

/// Pops the next available chain: `(head index, checked chain or why it was refused)`.
///
/// The head index is returned even for a refused chain so that the caller can still give the
/// buffers back (`add_used` with length 0): a refused request must not leak queue entries.
pub fn pop_chain(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
) -> Option<(u16, Result<Chain, ChainError>)> {
    let desc_chain = queue.pop_descriptor_chain(mem)?;
    let head = desc_chain.head_index();
    let mut chain = Chain::default();
    let mut last_has_next = false;
    let mut count = 0usize;
    for desc in desc_chain {
        count += 1;
        last_has_next = desc.has_next();
        let buf = GuestBuf {
            addr: desc.addr(),
            len: desc.len(),
        };
        if !GuestMemoryBackend::check_range(mem, buf.addr, buf.len as usize) {
            return Some((
                head,
                Err(ChainError::OutOfMemory {
                    addr: buf.addr.0,
                    len: buf.len,
                }),
            ));
        }
        if desc.is_write_only() {
            chain.writable.push(buf);
        } else if chain.writable.is_empty() {
            chain.readable.push(buf);
        } else {
            return Some((head, Err(ChainError::ReadableAfterWritable { head })));
        }
    }
    if count == 0 {
        return Some((head, Err(ChainError::Empty { head })));
    }
    if last_has_next {
        // virtio-queue stops after `queue size` descriptors or at an unreadable `next`
        // without telling us; a last descriptor that still points onwards means exactly that.
        return Some((head, Err(ChainError::Unterminated { head })));
    }
    Some((head, Ok(chain)))
}

/// A device-to-driver transfer: copies `bytes` into the chain's device-writable buffers and
/// returns the used length. A failure fails this request alone: logged, counted, length 0.
pub fn fill_writable(
    mem: &GuestMemoryMmap,
    chain: &Chain,
    bytes: &[u8],
    metrics: &DeviceMetrics,
    who: &str,
) -> u32 {
    match write_at(mem, &chain.writable, 0, bytes) {
        Ok(()) => {
            metrics.read_bytes(bytes.len());
            bytes.len() as u32
        }
        Err(e) => refuse(metrics, who, e),
    }
}

/// A request the device will not serve: logged and counted; its used length is 0.
pub fn refuse(metrics: &DeviceMetrics, who: &str, why: impl std::fmt::Display) -> u32 {
    crate::guest_log!(log::Level::Warn, Some(metrics), "{who}: {why}");
    metrics.error();
    0
}

/// Puts a chain on the used ring; `len` is the number of bytes the device wrote into it.
pub fn add_used(queue: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: u32) {
    if let Err(e) = queue.add_used(mem, head, len) {
        crate::guest_log!(
            log::Level::Warn,
            None,
            "virtio: cannot add used descriptor {head}: {e}"
        );
    }
}

/// Raises the used-buffer interrupt if the driver wants one (virtio 1.2 §2.7.10).
pub fn notify_used(queue: &mut Queue, mem: &GuestMemoryMmap, interrupt: &Interrupt) {
    if queue.needs_notification(mem).unwrap_or(true) {
        interrupt.signal_used_queue();
    }
}

/// Total length of a list of buffers (saturating: the spec caps a chain at 4 GiB).
pub fn total_len(bufs: &[GuestBuf]) -> usize {
    bufs.iter().map(|b| b.len as usize).sum()
}

/// Copies `out.len()` bytes starting `offset` bytes into the concatenation of `bufs`.
pub fn read_at(
    mem: &GuestMemoryMmap,
    bufs: &[GuestBuf],
    offset: usize,
    out: &mut [u8],
) -> Result<(), ChainError> {
    let avail = total_len(bufs);
    if offset.checked_add(out.len()).is_none_or(|end| end > avail) {
        return Err(ChainError::TooShort {
            offset,
            len: out.len(),
            avail,
        });
    }
    let mut done = 0;
    for (addr, len, at) in spans(bufs, offset, out.len()) {
        mem.read_slice(&mut out[at..at + len], addr)
            .map_err(|_| ChainError::Memory { addr: addr.0 })?;
        done += len;
    }
    debug_assert_eq!(done, out.len());
    Ok(())
}

/// Copies `data` to `offset` bytes into the concatenation of `bufs`.
pub fn write_at(
    mem: &GuestMemoryMmap,
    bufs: &[GuestBuf],
    offset: usize,
    data: &[u8],
) -> Result<(), ChainError> {
    let avail = total_len(bufs);
    if offset.checked_add(data.len()).is_none_or(|end| end > avail) {
        return Err(ChainError::TooShort {
            offset,
            len: data.len(),
            avail,
        });
    }
    for (addr, len, at) in spans(bufs, offset, data.len()) {
        mem.write_slice(&data[at..at + len], addr)
            .map_err(|_| ChainError::Memory { addr: addr.0 })?;
    }
    Ok(())
}

/// The pieces `(guest address, length, offset into the caller's slice)` covering
/// `[offset, offset + len)` of the concatenated buffers.
fn spans(bufs: &[GuestBuf], offset: usize, len: usize) -> Vec<(GuestAddress, usize, usize)> {
    let mut out = Vec::new();
    let mut skip = offset;
    let mut at = 0;
    for b in bufs {
        if at == len {
            break;
        }
        let blen = b.len as usize;
        if skip >= blen {
            skip -= blen;
            continue;
        }
        let n = (blen - skip).min(len - at);
        out.push((GuestAddress(b.addr.0 + skip as u64), n, at));
        at += n;
        skip = 0;
    }
    out
}
