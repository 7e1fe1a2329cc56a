//! `vsock-bench`: stream throughput from the guest to a host listener over virtio-vsock, timed
//! with the TSC.
//!
//! Connects to host CID 2 port [`BENCH_PORT`] (with Wisp's hybrid vsock, the host listens on
//! `<uds>_1235`), sends [`TOTAL_BYTES`] in packets of [`PACKET_PAYLOAD`] bytes (the largest a
//! Linux peer takes, `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`) with up to [`DEPTH`] packets on the
//! transmit queue, always within the host's credit (§5.10.6.3), then closes. Prints
//! `vsock-bench: stream bytes=B packets=P depth=D cycles=C MBps=M` (cycles from the first
//! packet to the last transmit completion; MBps from `tsc_khz=N` on the command line, else
//! CPUID, as for `blk-bench`).

use super::dma::{self, DmaRegion};
use super::queue::{Buffer, MAX_QUEUE_SIZE};
use super::vsock::{
    Stream, VsockDevice, VsockError, HDR_LEN, HOST_CID, OP_RST, OP_RW, RX_BUFFER_LEN, TX_QUEUE,
    TX_TIMEOUT_MS,
};
use super::{Slots, VirtioError};
use crate::cpu;
use crate::deadline::Deadline;
use crate::serial::println;

/// The host port `vsock-bench` streams to.
pub const BENCH_PORT: u32 = 1235;
/// Payload bytes per packet.
const PACKET_PAYLOAD: usize = 64 * 1024;
/// Packets on the transmit queue at once (two descriptors each: header, payload).
const DEPTH: usize = 4;
/// Bytes streamed.
const TOTAL_BYTES: u64 = 64 << 20;

/// The `vsock-bench` command. `ram_bytes` bounds the bulk buffers; `cmdline` may carry
/// `tsc_khz=N`.
pub fn run(slots: &Slots, cmdline: &[u8], ram_bytes: Option<u64>) -> Result<(), VsockError> {
    let (tsc_hz, _) = super::blk_bench::tsc_rate(cmdline);
    let mut device = VsockDevice::open(slots, "vsock-bench", BENCH_PORT)?;
    let mut stream = Stream {
        fwd_cnt: 0,
        tx_cnt: 0,
        peer_buf_alloc: 0,
        peer_fwd_cnt: 0,
    };
    let mut scratch = [0u8; RX_BUFFER_LEN - HDR_LEN];
    device.connect(&mut stream, &mut scratch)?;
    println!("vsock-bench: connected to {HOST_CID}:{BENCH_PORT}");

    let ram = ram_bytes.unwrap_or(0);
    let mut headers = [None::<DmaRegion>; DEPTH];
    let mut payloads = [None::<DmaRegion>; DEPTH];
    for (header, payload) in headers.iter_mut().zip(payloads.iter_mut()) {
        *header = Some(dma::alloc(HDR_LEN, 16).ok_or(VirtioError::OutOfDma)?);
        let region = dma::alloc_bulk(PACKET_PAYLOAD, 4096, ram).ok_or(VirtioError::OutOfDma)?;
        // Printable, recognisable bytes: a host dump of the stream shows what it is.
        let pattern: [u8; 64] = core::array::from_fn(|i| b'a' + (i % 26) as u8);
        for offset in (0..PACKET_PAYLOAD).step_by(pattern.len()) {
            region.write(offset, &pattern);
        }
        *payload = Some(region);
    }

    // Which slot each head descriptor in flight uses (u8::MAX: none).
    let mut slot_of_head = [u8::MAX; MAX_QUEUE_SIZE as usize];
    let mut busy = [false; DEPTH];
    let (mut sent, mut packets) = (0u64, 0u64);
    let start = cpu::rdtsc();
    let mut stall = Deadline::after_ms(TX_TIMEOUT_MS);
    loop {
        let mut submitted = false;
        for index in 0..DEPTH {
            let (Some(header_region), Some(payload)) = (headers[index], payloads[index]) else {
                continue;
            };
            if busy[index] || sent == TOTAL_BYTES {
                continue;
            }
            let len = PACKET_PAYLOAD.min((TOTAL_BYTES - sent) as usize);
            if (stream.peer_credit() as usize) < len {
                break;
            }
            let header = device.header(&stream, OP_RW, len, 0);
            header_region.write(0, &header.encode());
            let head = device.tx.submit(&[
                Buffer::readable(header_region),
                Buffer::part(payload, len, false),
            ])?;
            if let Some(entry) = slot_of_head.get_mut(usize::from(head)) {
                *entry = index as u8;
            }
            busy[index] = true;
            stream.tx_cnt = stream.tx_cnt.wrapping_add(len as u32);
            sent += len as u64;
            packets += 1;
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
                return Err(VsockError::WrongCompletion {
                    expected: u16::MAX,
                    got: used.head,
                });
            };
            *slot = false;
            slot_of_head[usize::from(used.head)] = u8::MAX;
            progress = true;
        }
        if sent == TOTAL_BYTES && !busy.contains(&true) {
            break;
        }
        // Credit updates (and anything else the host says) arrive on the receive queue; a
        // deadline of zero takes what is there without waiting.
        while let Some((header, len)) = device.receive(&mut scratch, &Deadline::after_ms(0))? {
            stream.update_credit(&header);
            stream.fwd_cnt = stream.fwd_cnt.wrapping_add(len as u32);
            if header.op == OP_RST {
                return Err(VsockError::Reset {
                    during: "the stream",
                });
            }
            progress = true;
        }
        if progress {
            stall = Deadline::after_ms(TX_TIMEOUT_MS);
        } else if stall.passed() {
            return Err(VsockError::Timeout {
                waiting_for: "transmit completion or credit",
            });
        }
    }
    let cycles = cpu::rdtsc().wrapping_sub(start);
    device.transport.ack_interrupts();
    let mbps = (u128::from(sent) * u128::from(tsc_hz))
        .checked_div(u128::from(cycles))
        .unwrap_or(0)
        / 1_000_000;
    println!(
        "vsock-bench: stream bytes={sent} packets={packets} depth={DEPTH} cycles={cycles} \
         MBps={mbps}"
    );
    device.close(&stream, &mut scratch)?;
    println!("vsock-bench: done");
    Ok(())
}
