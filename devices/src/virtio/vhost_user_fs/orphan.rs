//! Serving the rings after the backend is gone: every FUSE request gets an `EIO` reply.
//!
//! When virtiofsd dies, requests it had taken and not answered would wait forever in the
//! guest (virtio-fs has no timeout). The VMM takes the rings back instead: everything past the
//! used index the backend last published is answered with a FUSE error (a bare
//! `fuse_out_header`, FUSE protocol 7.x `fuse_kernel.h`), and so is every later request, so the
//! guest's system calls fail with EIO instead of hanging. This assumes the backend completed
//! requests in ring order, which virtiofsd does without `--thread-pool-size` (the default);
//! with a pool, a request completed out of order just before the death could be answered
//! twice, which the guest driver reports as a broken queue (and then fails its I/O as well).

use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::super::chain;
use super::super::device::Interrupt;
use super::super::metrics::DeviceMetrics;

/// `EIO` as FUSE carries it: a negated errno in `fuse_out_header.error`.
const FUSE_EIO: i32 = -libc::EIO;
/// `sizeof(struct fuse_out_header)`: len (u32), error (i32), unique (u64).
const OUT_HEADER_LEN: usize = 16;
/// Offset of `unique` in `struct fuse_in_header` (len u32, opcode u32, unique u64, ...).
const IN_UNIQUE_OFFSET: usize = 8;

const WHO: &str = "virtio-fs";

/// Takes a ring back from a dead backend: the next request to serve is the first one the
/// backend did not mark used. Notifications go back on, so the driver kicks us.
pub fn take_back(queue: &mut Queue, mem: &GuestMemoryMmap, event_idx: bool) {
    if !queue.ready() {
        return;
    }
    let used = match queue.used_idx(mem, Ordering::Acquire) {
        Ok(idx) => idx.0,
        Err(_) => queue.next_used(),
    };
    queue.set_next_used(used);
    queue.set_next_avail(used);
    queue.set_event_idx(event_idx);
    if queue.enable_notification(mem).is_err() {
        log::warn!("{WHO}: cannot re-enable notifications on a ring taken back from the backend");
    }
}

/// Answers every available request of `queue` with EIO; returns how many.
pub fn fail_requests(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &Interrupt,
    metrics: &DeviceMetrics,
) -> usize {
    let mut answered = 0;
    loop {
        while let Some((head, c)) = chain::pop_chain(queue, mem) {
            answered += 1;
            metrics.request();
            let len = match c {
                Ok(c) => error_reply(mem, &c, metrics),
                Err(e) => chain::refuse(metrics, WHO, e),
            };
            chain::add_used(queue, mem, head, len);
        }
        // With VIRTIO_RING_F_EVENT_IDX the driver kicks only when its index passes
        // avail_event (virtio 1.2 §2.7.10): move it to what we consumed, or the next request
        // is never notified. A request published meanwhile is served in this pass.
        match queue.enable_notification(mem) {
            Ok(true) => continue,
            _ => break,
        }
    }
    if answered > 0 {
        chain::notify_used(queue, mem, interrupt);
    }
    answered
}

/// Writes `{len: 16, error: -EIO, unique}` when the request has room for a reply; a request
/// without one (FORGET on the high-priority queue) is just returned.
fn error_reply(mem: &GuestMemoryMmap, c: &chain::Chain, metrics: &DeviceMetrics) -> u32 {
    if chain::total_len(&c.writable) < OUT_HEADER_LEN {
        return 0;
    }
    let mut unique = [0u8; 8];
    if let Err(e) = chain::read_at(mem, &c.readable, IN_UNIQUE_OFFSET, &mut unique) {
        return chain::refuse(metrics, WHO, e);
    }
    let mut out = [0u8; OUT_HEADER_LEN];
    out[0..4].copy_from_slice(&(OUT_HEADER_LEN as u32).to_le_bytes());
    out[4..8].copy_from_slice(&FUSE_EIO.to_le_bytes());
    out[8..16].copy_from_slice(&unique);
    match chain::write_at(mem, &c.writable, 0, &out) {
        Ok(()) => OUT_HEADER_LEN as u32,
        Err(e) => chain::refuse(metrics, WHO, e),
    }
}
