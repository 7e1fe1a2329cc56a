//! virtio-blk (virtio 1.2 §5.2): capacity, GET_ID, read, write, flush, read-only handling.
//!
//! Each request is one descriptor chain: a 16-byte header (type, reserved, sector) the device
//! reads, an optional data buffer, and a one-byte status the device writes (§5.2.6).

use super::dma::{self, DmaRegion};
use super::mmio::MmioTransport;
use super::queue::{Buffer, Virtqueue};
use super::{setup_queue, Slots, VirtioError, DEVICE_BLOCK};
use crate::bytes_fmt::{Hex, Text};
use crate::deadline::Deadline;
use crate::serial::println;
use core::fmt;

/// VIRTIO_BLK_F_RO (§5.2.3): the device is read-only.
pub(super) const F_RO: u64 = 1 << 5;
/// VIRTIO_BLK_F_FLUSH (§5.2.3): the device has a write cache and takes FLUSH.
pub(super) const F_FLUSH: u64 = 1 << 9;
/// Request types (§5.2.6).
pub(super) const T_IN: u32 = 0;
pub(super) const T_OUT: u32 = 1;
pub(super) const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
/// Request status values (§5.2.6).
pub(super) const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
/// A status byte the device never writes: still there means the device did not answer.
pub(super) const S_UNWRITTEN: u8 = 0xff;
/// virtio-blk addresses 512-byte sectors whatever the device's block size (§5.2.6).
pub(super) const SECTOR_SIZE: usize = 512;
/// The GET_ID answer: up to 20 bytes, NUL-terminated only when shorter (§5.2.6).
const ID_LEN: usize = 20;
/// What `blk` writes at the start of sector 1; tests look for it in the host file.
pub const MARKER: &[u8] = b"wisp-unikernel-was-here";
/// How long one request may take.
pub(super) const REQUEST_TIMEOUT_MS: u64 = 5000;

/// What went wrong with the block device.
#[derive(Debug)]
pub enum BlkError {
    Virtio(VirtioError),
    /// The device answered a request with a status other than OK.
    Status {
        op: &'static str,
        status: u8,
    },
    /// The device completed a request other than the one in flight.
    WrongCompletion {
        expected: u16,
        got: u16,
    },
}

impl From<VirtioError> for BlkError {
    fn from(err: VirtioError) -> Self {
        Self::Virtio(err)
    }
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Virtio(err) => write!(f, "{err}"),
            Self::Status { op, status } => match *status {
                S_UNWRITTEN => write!(f, "{op} request: the device wrote no status"),
                status => write!(f, "{op} request failed with status {status}"),
            },
            Self::WrongCompletion { expected, got } => {
                write!(f, "device completed request {got}, expected {expected}")
            }
        }
    }
}

pub(super) struct BlockDevice {
    pub(super) transport: MmioTransport,
    pub(super) queue: Virtqueue,
    header: DmaRegion,
    status: DmaRegion,
}

impl BlockDevice {
    /// Opens the first block device for command `name` (negotiating read-only and flush) and
    /// returns it with the negotiated features and its capacity in sectors.
    pub(super) fn open(slots: &Slots, name: &str) -> Result<(Self, u64, u64), BlkError> {
        let (transport, features) = slots.open(name, DEVICE_BLOCK, F_RO | F_FLUSH)?;
        let queue = setup_queue(&transport, 0)?;
        transport.driver_ok()?;
        let device = BlockDevice {
            transport,
            queue,
            header: dma::alloc(16, 16).ok_or(VirtioError::OutOfDma)?,
            status: dma::alloc(1, 1).ok_or(VirtioError::OutOfDma)?,
        };
        // Config space: u64 capacity in 512-byte sectors at offset 0 (§5.2.4).
        let capacity = device.transport.config_u64(0)?;
        Ok((device, features, capacity))
    }

    /// Sends one request and waits for it; returns the status byte.
    fn request(&mut self, kind: u32, sector: u64, data: Option<Buffer>) -> Result<u8, BlkError> {
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        self.header.write(0, &header);
        self.status.write(0, &[S_UNWRITTEN]);
        let head_buffer = Buffer::readable(self.header);
        let status_buffer = Buffer::writable(self.status);
        let head = match data {
            Some(data) => self.queue.submit(&[head_buffer, data, status_buffer])?,
            None => self.queue.submit(&[head_buffer, status_buffer])?,
        };
        self.transport.notify(self.queue.index());
        let used = self
            .queue
            .wait_used(&Deadline::after_ms(REQUEST_TIMEOUT_MS))?;
        self.transport.ack_interrupts();
        if used.head != head {
            return Err(BlkError::WrongCompletion {
                expected: head,
                got: used.head,
            });
        }
        Ok(self.status.byte(0).unwrap_or(S_UNWRITTEN))
    }

    pub(super) fn expect_ok(
        &mut self,
        op: &'static str,
        kind: u32,
        sector: u64,
        data: Option<Buffer>,
    ) -> Result<(), BlkError> {
        match self.request(kind, sector, data)? {
            S_OK => Ok(()),
            status => Err(BlkError::Status { op, status }),
        }
    }
}

/// The `blk` command: capacity, serial, sector 0, then a write-flush-read check on sector 1
/// (or, on a read-only device, a check that writes are refused). `blk-restored`
/// (`after_restore`) waits for a snapshot restore before the write, so the write goes through
/// a device that was live when the snapshot was taken.
pub fn run(slots: &Slots, after_restore: bool) -> Result<(), BlkError> {
    let (mut device, features, capacity) = BlockDevice::open(slots, "blk")?;
    println!("blk: capacity={capacity} sectors");

    let id = dma::alloc(ID_LEN, 1).ok_or(VirtioError::OutOfDma)?;
    match device.request(T_GET_ID, 0, Some(Buffer::writable(id)))? {
        S_OK => {
            let mut bytes = [0u8; ID_LEN];
            id.read(0, &mut bytes);
            let len = bytes.iter().position(|&byte| byte == 0).unwrap_or(ID_LEN);
            println!("blk: id={}", Text(&bytes[..len]));
        }
        S_UNSUPP => println!("blk: id unsupported"),
        status => {
            return Err(BlkError::Status {
                op: "GET_ID",
                status,
            })
        }
    }

    if capacity == 0 {
        println!("blk: empty disk, nothing to read");
        return Ok(());
    }
    let sector = dma::alloc(SECTOR_SIZE, 16).ok_or(VirtioError::OutOfDma)?;
    device.expect_ok("read", T_IN, 0, Some(Buffer::writable(sector)))?;
    let mut first = [0u8; 16];
    sector.read(0, &mut first);
    println!("blk: sector0={}", Hex(&first));

    if capacity < 2 {
        println!("blk: disk has one sector, skipping the write check");
        return Ok(());
    }
    if features & F_RO != 0 {
        println!("blk: read-only");
        sector.write(0, MARKER);
        match device.request(T_OUT, 1, Some(Buffer::readable(sector)))? {
            S_IOERR => println!("blk: write rejected"),
            status => {
                println!("blk: write to a read-only disk returned status {status}, not IOERR")
            }
        }
        return Ok(());
    }
    if after_restore {
        crate::noxs::await_restore();
    }
    // Keep the rest of sector 1 as it is: read, put the marker in front, write back.
    device.expect_ok("read", T_IN, 1, Some(Buffer::writable(sector)))?;
    sector.write(0, MARKER);
    device.expect_ok("write", T_OUT, 1, Some(Buffer::readable(sector)))?;
    if features & F_FLUSH != 0 {
        device.expect_ok("flush", T_FLUSH, 0, None)?;
        println!("blk: flush ok");
    } else {
        println!("blk: no flush feature (write-through device)");
    }
    // Read back into a fresh buffer so a device that ignored the read cannot pass.
    let check = dma::alloc(SECTOR_SIZE, 16).ok_or(VirtioError::OutOfDma)?;
    device.expect_ok("read", T_IN, 1, Some(Buffer::writable(check)))?;
    let mut back = [0u8; MARKER.len()];
    check.read(0, &mut back);
    if back == MARKER {
        println!("blk: write ok");
    } else {
        println!("blk: write mismatch: read back {}", Text(&back));
    }
    Ok(())
}
