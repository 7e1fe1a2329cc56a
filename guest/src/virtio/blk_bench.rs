//! `blk-bench`: virtio-blk throughput from inside the guest, timed with the TSC.
//!
//! Three patterns on the first block device, in this order: a sequential read of the disk (up
//! to [`MAX_BENCH_BYTES`]) in 64 KiB requests with [`SEQ_DEPTH`] requests in flight; a
//! sequential write of the same span followed by one FLUSH, timed together (the host side
//! pairs it with `pwrite` + `fdatasync`; it repeats the buffers' last reads over the span, so
//! the disk's contents are lost); and [`RAND_REQUESTS`] 4 KiB reads at pseudo-random 4
//! KiB-aligned offsets, one in flight (xorshift64 from [`RAND_SEED`], the same sequence
//! `wisp-bench` replays on the host).
//!
//! Each pattern prints one line of `key=value` words: the raw counts (`bytes`, `requests`,
//! `cycles` of the TSC) and, for reading by people, `MBps`/`iops` computed with the TSC rate
//! from a `tsc_khz=N` word on the command line (the host knows its TSC rate; PVM guests see the
//! host's TSC unscaled) or else from CPUID. `wisp-bench` recomputes the rates from the raw
//! counts and its own TSC rate.
//!
//! The driver keeps per-request cost low the way a real one would: it notifies once per batch
//! of submissions and acknowledges the interrupt status only at the end (interrupts are off;
//! the driver ring asks for none, virtio 1.2 §2.7.7).

use super::blk::{
    BlkError, BlockDevice, F_FLUSH, F_RO, REQUEST_TIMEOUT_MS, SECTOR_SIZE, S_OK, S_UNWRITTEN,
    T_FLUSH, T_IN, T_OUT,
};
use super::dma::{self, DmaRegion};
use super::queue::{Buffer, MAX_QUEUE_SIZE};
use super::{Slots, VirtioError};
use crate::cpu;
use crate::deadline::{self, Deadline};
use crate::serial::println;

/// Sequential request size.
const SEQ_REQUEST_BYTES: usize = 64 * 1024;
/// Sequential requests in flight: each takes 3 descriptors (header, data, status) of the
/// 16-entry ring.
const SEQ_DEPTH: usize = 4;
/// Random request size and count.
const RAND_REQUEST_BYTES: usize = 4096;
const RAND_REQUESTS: u64 = 2_000;
/// The seed of the random offsets (shared with `wisp-bench`'s host-side replay).
pub const RAND_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// The most of the disk the sequential patterns cover.
const MAX_BENCH_BYTES: u64 = 1 << 30;
const MAX_DEPTH: usize = SEQ_DEPTH;

/// One request buffer set: the header and status the device reads and writes, and the data.
#[derive(Clone, Copy)]
struct Slot {
    header: DmaRegion,
    status: DmaRegion,
    data: DmaRegion,
}

/// Which sectors a pattern visits.
enum Pattern {
    /// Consecutive requests from sector 0.
    Sequential,
    /// xorshift64 over `blocks` request-sized blocks.
    Random { state: u64, blocks: u64 },
}

impl Pattern {
    /// The sector of request number `index` of `request_bytes` bytes.
    fn sector(&mut self, index: u64, request_bytes: usize) -> u64 {
        let sectors_per_request = (request_bytes / SECTOR_SIZE) as u64;
        match self {
            Self::Sequential => index * sectors_per_request,
            Self::Random { state, blocks } => {
                *state = xorshift64(*state);
                (*state % *blocks) * sectors_per_request
            }
        }
    }
}

/// Marsaglia's xorshift64 (13, 7, 17): cheap, and trivially the same on the host.
fn xorshift64(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The `blk-bench` command. `ram_bytes` (from the PVH memory map) bounds the bulk buffers;
/// `cmdline` may carry `tsc_khz=N`.
pub fn run(slots: &Slots, cmdline: &[u8], ram_bytes: Option<u64>) -> Result<(), BlkError> {
    let (tsc_hz, source) = tsc_rate(cmdline);
    let (mut device, features, capacity) = BlockDevice::open(slots, "blk-bench")?;
    println!("blk-bench: capacity={capacity} sectors tsc_hz={tsc_hz} (from the {source})");
    let ram = ram_bytes.unwrap_or(0);
    let alloc_slot = || -> Result<Slot, VirtioError> {
        Ok(Slot {
            header: dma::alloc(16, 16).ok_or(VirtioError::OutOfDma)?,
            status: dma::alloc(1, 1).ok_or(VirtioError::OutOfDma)?,
            data: dma::alloc_bulk(SEQ_REQUEST_BYTES, 4096, ram).ok_or(VirtioError::OutOfDma)?,
        })
    };
    let slots: [Slot; MAX_DEPTH] = [alloc_slot()?, alloc_slot()?, alloc_slot()?, alloc_slot()?];

    let span = (capacity.saturating_mul(SECTOR_SIZE as u64)).min(MAX_BENCH_BYTES);
    let seq_requests = span / SEQ_REQUEST_BYTES as u64;
    if seq_requests == 0 {
        println!("blk-bench: disk smaller than one {SEQ_REQUEST_BYTES}-byte request");
        return Ok(());
    }
    let seq_bytes = seq_requests * SEQ_REQUEST_BYTES as u64;

    let cycles = pipeline(
        &mut device,
        &slots,
        T_IN,
        SEQ_REQUEST_BYTES,
        seq_requests,
        SEQ_DEPTH,
        Pattern::Sequential,
    )?;
    print_rate(
        "seq-read",
        seq_bytes,
        seq_requests,
        SEQ_DEPTH,
        cycles,
        tsc_hz,
    );

    if features & F_RO != 0 {
        println!("blk-bench: read-only disk, no write pattern");
    } else {
        let start = cpu::rdtsc();
        pipeline(
            &mut device,
            &slots,
            T_OUT,
            SEQ_REQUEST_BYTES,
            seq_requests,
            SEQ_DEPTH,
            Pattern::Sequential,
        )?;
        if features & F_FLUSH != 0 {
            device.expect_ok("flush", T_FLUSH, 0, None)?;
        }
        let cycles = cpu::rdtsc().wrapping_sub(start);
        print_rate(
            "seq-write",
            seq_bytes,
            seq_requests,
            SEQ_DEPTH,
            cycles,
            tsc_hz,
        );
    }

    let blocks = span / RAND_REQUEST_BYTES as u64;
    let cycles = pipeline(
        &mut device,
        &slots,
        T_IN,
        RAND_REQUEST_BYTES,
        RAND_REQUESTS,
        1,
        Pattern::Random {
            state: RAND_SEED,
            blocks,
        },
    )?;
    let bytes = RAND_REQUESTS * RAND_REQUEST_BYTES as u64;
    print_rate("rand4k-read", bytes, RAND_REQUESTS, 1, cycles, tsc_hz);
    device.transport.ack_interrupts();
    println!("blk-bench: done");
    Ok(())
}

/// Request size of `blk-hog`.
const HOG_REQUEST_BYTES: usize = 1 << 20;

/// The `blk-hog` command: sequential passes of 1 MiB reads, [`SEQ_DEPTH`] in flight (all into
/// the one 1 MiB bulk buffer: the data is not looked at), forever. Prints
/// `blk-hog: pass=N bytes=B requests=R cycles=C MBps=M iops=I` after each pass.
pub fn hog(slots: &Slots, cmdline: &[u8], ram_bytes: Option<u64>) -> Result<(), BlkError> {
    let (tsc_hz, source) = tsc_rate(cmdline);
    let (mut device, _, capacity) = BlockDevice::open(slots, "blk-hog")?;
    let data = dma::alloc_bulk(HOG_REQUEST_BYTES, 4096, ram_bytes.unwrap_or(0))
        .ok_or(VirtioError::OutOfDma)?;
    let alloc_slot = || -> Result<Slot, VirtioError> {
        Ok(Slot {
            header: dma::alloc(16, 16).ok_or(VirtioError::OutOfDma)?,
            status: dma::alloc(1, 1).ok_or(VirtioError::OutOfDma)?,
            data,
        })
    };
    let slots: [Slot; MAX_DEPTH] = [alloc_slot()?, alloc_slot()?, alloc_slot()?, alloc_slot()?];
    let requests = capacity.saturating_mul(SECTOR_SIZE as u64) / HOG_REQUEST_BYTES as u64;
    println!("blk-hog: capacity={capacity} sectors tsc_hz={tsc_hz} (from the {source})");
    if requests == 0 {
        println!("blk-hog: disk smaller than one {HOG_REQUEST_BYTES}-byte request");
        return Ok(());
    }
    let bytes = requests * HOG_REQUEST_BYTES as u64;
    for pass in 1u64.. {
        let cycles = pipeline(
            &mut device,
            &slots,
            T_IN,
            HOG_REQUEST_BYTES,
            requests,
            SEQ_DEPTH,
            Pattern::Sequential,
        )?;
        let per_second = |count: u64| {
            (u128::from(count) * u128::from(tsc_hz))
                .checked_div(u128::from(cycles))
                .unwrap_or(0)
        };
        println!(
            "blk-hog: pass={pass} bytes={bytes} requests={requests} cycles={cycles} MBps={} \
             iops={}",
            per_second(bytes) / 1_000_000,
            per_second(requests)
        );
    }
    Ok(())
}

/// `blk-bench: <name> bytes=B requests=R depth=D cycles=C MBps=M iops=I`.
fn print_rate(name: &str, bytes: u64, requests: u64, depth: usize, cycles: u64, tsc_hz: u64) {
    let per_second = |count: u64| {
        (u128::from(count) * u128::from(tsc_hz))
            .checked_div(u128::from(cycles))
            .unwrap_or(0)
    };
    println!(
        "blk-bench: {name} bytes={bytes} requests={requests} depth={depth} cycles={cycles} \
         MBps={} iops={}",
        per_second(bytes) / 1_000_000,
        per_second(requests)
    );
}

/// Runs `count` requests of `kind` and `request_bytes` with up to `depth` in flight; returns
/// the TSC cycles from the first submission to the last completion.
fn pipeline(
    device: &mut BlockDevice,
    slots: &[Slot; MAX_DEPTH],
    kind: u32,
    request_bytes: usize,
    count: u64,
    depth: usize,
    mut pattern: Pattern,
) -> Result<u64, BlkError> {
    let depth = depth.clamp(1, MAX_DEPTH);
    // Which slot each head descriptor in flight uses (u8::MAX: none).
    let mut slot_of_head = [u8::MAX; MAX_QUEUE_SIZE as usize];
    let mut free = [true; MAX_DEPTH];
    let (mut issued, mut completed) = (0u64, 0u64);
    let op = if kind == T_OUT { "write" } else { "read" };
    let start = cpu::rdtsc();
    while completed < count {
        let mut submitted = false;
        for index in 0..depth {
            if issued == count || !free[index] {
                continue;
            }
            let slot = slots[index];
            let mut header = [0u8; 16];
            header[0..4].copy_from_slice(&kind.to_le_bytes());
            let sector = pattern.sector(issued, request_bytes);
            header[8..16].copy_from_slice(&sector.to_le_bytes());
            slot.header.write(0, &header);
            slot.status.write(0, &[S_UNWRITTEN]);
            let data = Buffer::part(slot.data, request_bytes, kind == T_IN);
            let head = device.queue.submit(&[
                Buffer::readable(slot.header),
                data,
                Buffer::writable(slot.status),
            ])?;
            if let Some(entry) = slot_of_head.get_mut(usize::from(head)) {
                *entry = index as u8;
            }
            free[index] = false;
            issued += 1;
            submitted = true;
        }
        if submitted {
            device.transport.notify(device.queue.index());
        }
        // Wait for one completion, then take every other one already there.
        let mut used = Some(
            device
                .queue
                .wait_used(&Deadline::after_ms(REQUEST_TIMEOUT_MS))?,
        );
        while let Some(done) = used {
            let index = slot_of_head
                .get(usize::from(done.head))
                .copied()
                .map_or(usize::MAX, usize::from);
            let Some(slot) = slots.get(index) else {
                return Err(BlkError::WrongCompletion {
                    expected: u16::MAX,
                    got: done.head,
                });
            };
            slot_of_head[usize::from(done.head)] = u8::MAX;
            free[index] = true;
            completed += 1;
            match slot.status.byte(0).unwrap_or(S_UNWRITTEN) {
                S_OK => {}
                status => return Err(BlkError::Status { op, status }),
            }
            used = device.queue.pop_used()?;
        }
    }
    Ok(cpu::rdtsc().wrapping_sub(start))
}

/// The TSC rate for the printed rates, and where it came from: a `tsc_khz=N` word on the
/// command line, else CPUID, else the deadline code's assumption.
pub(super) fn tsc_rate(cmdline: &[u8]) -> (u64, &'static str) {
    match tsc_khz_word(cmdline) {
        Some(khz) => (khz.saturating_mul(1000), "command line"),
        None => match deadline::tsc_hz_from_cpuid() {
            Some(hz) => (hz, "cpuid"),
            None => (deadline::tsc_hz(), "assumed"),
        },
    }
}

/// The value of a `tsc_khz=N` word, if the command line has one.
fn tsc_khz_word(cmdline: &[u8]) -> Option<u64> {
    cmdline
        .split(|byte| byte.is_ascii_whitespace())
        .find_map(|word| word.strip_prefix(b"tsc_khz="))
        .and_then(|digits| core::str::from_utf8(digits).ok())
        .and_then(|text| text.parse().ok())
        .filter(|&khz| khz > 0)
}
