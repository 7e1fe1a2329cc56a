//! `net-bench`: transmit throughput from the guest to the host's tap device, timed with the
//! TSC.
//!
//! Sends [`FRAMES`] Ethernet frames of [`FRAME_LEN`] bytes (a full 1500-byte MTU payload
//! plus the 14-byte header) to the broadcast address with the local experimental ethertype
//! 0x88b5, a 4-byte big-endian sequence number first in the payload, up to [`DEPTH`] frames on
//! the transmit queue. Prints `net-bench: tx frames=N bytes=B depth=D cycles=C MBps=M` (cycles
//! from the first frame to the last transmit completion; bytes are Ethernet bytes, without
//! the virtio-net header). The host counts what reaches the tap.

use super::dma::{self, DmaRegion};
use super::net::{
    NetDevice, NetError, BROADCAST, ETHERTYPE_TEST, NET_HDR_LEN, TX_QUEUE, TX_TIMEOUT_MS,
};
use super::queue::{Buffer, MAX_QUEUE_SIZE};
use super::{Slots, VirtioError};
use crate::cpu;
use crate::deadline::Deadline;
use crate::serial::println;

/// Ethernet frame length, without FCS.
const FRAME_LEN: usize = 1514;
/// Frames sent.
const FRAMES: u64 = 10_000;
/// Frames on the transmit queue at once (one descriptor each).
const DEPTH: usize = 8;

/// The `net-bench` command; `cmdline` may carry `tsc_khz=N`.
pub fn run(slots: &Slots, cmdline: &[u8]) -> Result<(), NetError> {
    let (tsc_hz, _) = super::blk_bench::tsc_rate(cmdline);
    let mut device = NetDevice::open(slots, "net-bench")?;
    let mut buffers = [None::<DmaRegion>; DEPTH];
    for buffer in &mut buffers {
        let region = dma::alloc(NET_HDR_LEN + FRAME_LEN, 16).ok_or(VirtioError::OutOfDma)?;
        // All-zero virtio-net header (no offloads, §5.1.6.2), then the Ethernet header.
        region.write(NET_HDR_LEN, &BROADCAST);
        region.write(NET_HDR_LEN + 6, &device.mac);
        region.write(NET_HDR_LEN + 12, &ETHERTYPE_TEST.to_be_bytes());
        *buffer = Some(region);
    }
    let mut slot_of_head = [u8::MAX; MAX_QUEUE_SIZE as usize];
    let mut busy = [false; DEPTH];
    let mut sent = 0u64;
    let start = cpu::rdtsc();
    let mut stall = Deadline::after_ms(TX_TIMEOUT_MS);
    loop {
        let mut submitted = false;
        for (index, buffer) in buffers.iter().enumerate() {
            let Some(region) = buffer else { continue };
            if busy[index] || sent == FRAMES {
                continue;
            }
            // Sequence number first in the payload (truncation intended: it only tells
            // frames apart in a capture).
            region.write(NET_HDR_LEN + 14, &(sent as u32).to_be_bytes());
            let head =
                device
                    .tx
                    .submit(&[Buffer::part(*region, NET_HDR_LEN + FRAME_LEN, false)])?;
            if let Some(entry) = slot_of_head.get_mut(usize::from(head)) {
                *entry = index as u8;
            }
            busy[index] = true;
            sent += 1;
            submitted = true;
        }
        if submitted {
            device.transport.notify(TX_QUEUE);
        }
        let mut progress = submitted;
        while let Some(used) = device.tx.pop_used()? {
            let index = slot_of_head
                .get(usize::from(used.head))
                .copied()
                .map_or(usize::MAX, usize::from);
            let Some(slot) = busy.get_mut(index) else {
                return Err(NetError::WrongCompletion {
                    expected: u16::MAX,
                    got: used.head,
                });
            };
            *slot = false;
            slot_of_head[usize::from(used.head)] = u8::MAX;
            progress = true;
        }
        if sent == FRAMES && !busy.contains(&true) {
            break;
        }
        if progress {
            stall = Deadline::after_ms(TX_TIMEOUT_MS);
        } else if stall.passed() {
            return Err(NetError::Virtio(VirtioError::Timeout { index: TX_QUEUE }));
        }
    }
    let cycles = cpu::rdtsc().wrapping_sub(start);
    device.transport.ack_interrupts();
    let bytes = sent * FRAME_LEN as u64;
    let mbps = (u128::from(bytes) * u128::from(tsc_hz))
        .checked_div(u128::from(cycles))
        .unwrap_or(0)
        / 1_000_000;
    println!("net-bench: tx frames={sent} bytes={bytes} depth={DEPTH} cycles={cycles} MBps={mbps}");
    Ok(())
}
