//! virtio-blk (virtio 1.2 §5.2) backed by a host file or block device, opened by wisp-hostfs
//! (no symbolic links, no FIFOs, sockets or character devices).
//!
//! Guest requests are served on the event loop with synchronous pread/pwrite, so two bounds
//! keep one queue from holding the loop: a pass serves at most [`BATCH`] requests and
//! [`PASS_BYTES`] bytes (a larger request is carried over to the next pass, in flight), then
//! the queue is re-signalled so other subscribers (the API) run in between. An optional
//! [`RateLimiter`] (Firecracker's `rate_limiter`: bandwidth and ops buckets) charges each
//! request when it starts; a request that does not fit goes back on the available ring and
//! the queue waits for the limiter's timer.

use std::any::Any;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use event_manager::{EventOps, Events};
use thiserror::Error;

use super::chain::{self, Chain};
use super::device::{Interrupt, QueueContext, VirtioDevice};
use super::metrics::DeviceMetrics;
use super::{device_id, VIRTIO_F_VERSION_1};
use crate::rate_limiter::{RateLimiter, TokenBucket};
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;

/// Sector size of the virtio-blk protocol, whatever the backing file's block size.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID serial (virtio 1.2 §5.2.6: VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;
const QUEUE_SIZE: u16 = 256;

// Feature bits, §5.2.3.
const F_SEG_MAX: u32 = 2;
const F_RO: u32 = 5;
const F_FLUSH: u32 = 9;

// Request types and status values, §5.2.6.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// `struct virtio_blk_req` header: type, reserved, sector.
const HEADER_LEN: usize = 16;
/// Requests served per event before the lock is released (file I/O runs under it).
pub const BATCH: usize = 32;
/// Bytes moved per event-loop pass; a longer request continues on the next pass.
pub const PASS_BYTES: usize = 1 << 20;
/// Bounce-buffer chunk: bounds the host memory one request can make us allocate.
const CHUNK: usize = 1 << 20;

/// Errors of the block device.
#[derive(Debug, Error)]
pub enum BlockError {
    /// The backing file could not be opened, or is not a regular file or block device.
    #[error("cannot open block backing file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: wisp_hostfs::HostFsError,
    },
    /// Its size could not be read.
    #[error("cannot stat block backing file {path}: {source}")]
    Stat {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A virtio block device.
pub struct Block {
    file: File,
    path: PathBuf,
    read_only: bool,
    /// Capacity in 512-byte sectors (a trailing partial sector is not exposed).
    capacity: u64,
    id: [u8; ID_BYTES],
    interrupt: Option<Arc<Interrupt>>,
    metrics: Arc<DeviceMetrics>,
    limiter: RateLimiter,
    /// A data request partly served by an earlier pass.
    in_flight: Option<InFlight>,
    /// Firecracker's `cache_type` `Unsafe`: VIRTIO_BLK_F_FLUSH is not offered and a flush
    /// request is answered OK without syncing (writes stay in the host page cache).
    flush_ignored: bool,
}

/// A read or write larger than what one pass moves.
struct InFlight {
    head: u16,
    chain: Chain,
    read: bool,
    /// Byte offset in the backing file.
    offset: u64,
    len: usize,
    done: usize,
}

/// A checked request header, before any data moves.
enum Request {
    Read { offset: u64, len: usize },
    Write { offset: u64, len: usize },
    Flush,
    GetId { len: usize },
}

impl Request {
    /// Bandwidth tokens the request costs.
    fn bytes(&self) -> u64 {
        match self {
            Request::Read { len, .. } | Request::Write { len, .. } => *len as u64,
            Request::Flush | Request::GetId { .. } => 0,
        }
    }
}

/// Why a request failed (logged; the guest sees IOERR or UNSUPP).
#[derive(Debug, Error)]
enum RequestError {
    #[error("malformed request: {0}")]
    Chain(#[from] chain::ChainError),
    #[error("request has no device-writable status byte")]
    NoStatus,
    #[error("data length {0} is not a multiple of 512")]
    Unaligned(usize),
    #[error("sectors {sector}+{len} bytes past capacity {capacity} sectors")]
    OutOfRange {
        sector: u64,
        len: usize,
        capacity: u64,
    },
    #[error("write to a read-only device")]
    ReadOnly,
    #[error("backing file I/O failed: {0}")]
    Io(#[source] std::io::Error),
    #[error("unsupported request type {0}")]
    Unsupported(u32),
}

impl Block {
    /// Opens `path` (read-only if `read_only`); `id` is the GET_ID serial, truncated to 20 bytes.
    pub fn new(
        path: impl AsRef<Path>,
        read_only: bool,
        id: Option<&str>,
    ) -> Result<Self, BlockError> {
        let path = path.as_ref().to_path_buf();
        let (file, capacity) = open_backing(&path, read_only)?;
        let mut serial = [0u8; ID_BYTES];
        if let Some(id) = id {
            let n = id.len().min(ID_BYTES);
            serial[..n].copy_from_slice(&id.as_bytes()[..n]);
        }
        Ok(Block {
            file,
            path,
            read_only,
            capacity,
            id: serial,
            interrupt: None,
            metrics: Arc::new(DeviceMetrics::default()),
            limiter: RateLimiter::default(),
            in_flight: None,
            flush_ignored: false,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The backing file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `cache_type`: `true` for Firecracker's `Unsafe` (no flush offered, flushes not synced),
    /// `false` for `Writeback` (flush offered and honoured with fdatasync). Set before boot.
    pub fn set_flush_ignored(&mut self, ignored: bool) {
        self.flush_ignored = ignored;
    }

    /// Swaps the backing file (PATCH /drives): new capacity, config-change interrupt.
    pub fn update_backing(&mut self, path: impl AsRef<Path>) -> Result<(), BlockError> {
        let path = path.as_ref().to_path_buf();
        let (file, capacity) = open_backing(&path, self.read_only)?;
        self.file = file;
        self.path = path;
        self.capacity = capacity;
        if let Some(interrupt) = &self.interrupt {
            interrupt.signal_config_change();
        }
        Ok(())
    }

    /// Sets or replaces the rate limiter (at creation and by PATCH /drives on a running VM);
    /// `None` for both buckets removes the limit.
    pub fn set_rate_limiter(
        &mut self,
        bandwidth: Option<TokenBucket>,
        ops: Option<TokenBucket>,
    ) -> std::io::Result<()> {
        self.limiter.update(bandwidth, ops)
    }

    /// Reads and checks a chain's header: what the request asks for, nothing moved yet.
    fn parse(&self, mem: &GuestMemoryMmap, c: &Chain) -> Result<Request, RequestError> {
        let mut header = [0u8; HEADER_LEN];
        chain::read_at(mem, &c.readable, 0, &mut header)?;
        let req_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        // The status byte is the last device-writable byte; data sits between.
        let data_in = chain::total_len(&c.writable).saturating_sub(1);
        let data_out = chain::total_len(&c.readable) - HEADER_LEN;
        match req_type {
            T_IN => {
                if data_out != 0 {
                    return Err(chain::ChainError::ReadableAfterWritable { head: 0 }.into());
                }
                let offset = self.check_range(sector, data_in)?;
                Ok(Request::Read {
                    offset,
                    len: data_in,
                })
            }
            T_OUT => {
                if self.read_only {
                    return Err(RequestError::ReadOnly);
                }
                let offset = self.check_range(sector, data_out)?;
                Ok(Request::Write {
                    offset,
                    len: data_out,
                })
            }
            T_FLUSH => Ok(Request::Flush),
            T_GET_ID => Ok(Request::GetId { len: data_in }),
            other => Err(RequestError::Unsupported(other)),
        }
    }

    /// Moves up to `max` more bytes of an in-flight read or write.
    fn transfer(
        &mut self,
        mem: &GuestMemoryMmap,
        f: &mut InFlight,
        max: usize,
    ) -> Result<(), RequestError> {
        let end = f.done + (f.len - f.done).min(max);
        let mut buf = vec![0u8; (end - f.done).min(CHUNK)];
        while f.done < end {
            let n = (end - f.done).min(CHUNK);
            let at = f.offset + f.done as u64;
            if f.read {
                self.file
                    .read_exact_at(&mut buf[..n], at)
                    .map_err(RequestError::Io)?;
                chain::write_at(mem, &f.chain.writable, f.done, &buf[..n])?;
                self.metrics.read_bytes(n);
            } else {
                chain::read_at(mem, &f.chain.readable, HEADER_LEN + f.done, &mut buf[..n])?;
                self.file
                    .write_all_at(&buf[..n], at)
                    .map_err(RequestError::Io)?;
                self.metrics.written_bytes(n);
            }
            f.done += n;
        }
        Ok(())
    }

    /// Serves a request that moves no data (flush, GET_ID); returns the bytes written into
    /// the guest before the status byte.
    fn serve_control(
        &mut self,
        mem: &GuestMemoryMmap,
        c: &Chain,
        r: &Request,
    ) -> Result<usize, RequestError> {
        match r {
            Request::Flush if self.flush_ignored => Ok(0),
            Request::Flush => {
                self.file.sync_data().map_err(RequestError::Io)?;
                Ok(0)
            }
            Request::GetId { len } => {
                let n = (*len).min(ID_BYTES);
                chain::write_at(mem, &c.writable, 0, &self.id[..n])?;
                Ok(n)
            }
            Request::Read { .. } | Request::Write { .. } => Ok(0),
        }
    }

    /// Checks a popped chain's shape: enough readable bytes for the header and a status byte.
    fn check_shape(c: Result<Chain, chain::ChainError>) -> Result<Chain, RequestError> {
        match c {
            Ok(c) if chain::total_len(&c.readable) < HEADER_LEN => {
                Err(RequestError::Chain(chain::ChainError::TooShort {
                    offset: 0,
                    len: HEADER_LEN,
                    avail: chain::total_len(&c.readable),
                }))
            }
            // Empty device-writable descriptors leave no byte for the status either (found by
            // fuzz/ virtio_block: finding its offset underflowed).
            Ok(c) if chain::total_len(&c.writable) == 0 => Err(RequestError::NoStatus),
            Ok(c) => Ok(c),
            Err(e) => Err(RequestError::Chain(e)),
        }
    }

    /// Writes the status byte of a finished request; returns the used length.
    fn complete(
        &mut self,
        mem: &GuestMemoryMmap,
        c: &Chain,
        result: Result<usize, RequestError>,
    ) -> u32 {
        let (status, written) = match result {
            Ok(n) => (S_OK, n),
            Err(e) => {
                self.fail(&e);
                let status = match e {
                    RequestError::Unsupported(_) => S_UNSUPP,
                    _ => S_IOERR,
                };
                (status, 0)
            }
        };
        let status_at = chain::total_len(&c.writable) - 1;
        if let Err(e) = chain::write_at(mem, &c.writable, status_at, &[status]) {
            self.fail(&RequestError::Chain(e));
            return 0;
        }
        (written + 1) as u32
    }

    fn check_range(&self, sector: u64, len: usize) -> Result<u64, RequestError> {
        if !(len as u64).is_multiple_of(SECTOR_SIZE) {
            return Err(RequestError::Unaligned(len));
        }
        let out_of_range = RequestError::OutOfRange {
            sector,
            len,
            capacity: self.capacity,
        };
        let end = sector.checked_add(len as u64 / SECTOR_SIZE);
        match end {
            Some(end) if end <= self.capacity => Ok(sector * SECTOR_SIZE),
            _ => Err(out_of_range),
        }
    }

    fn fail(&self, e: &RequestError) {
        crate::guest_log!(
            log::Level::Warn,
            Some(&*self.metrics),
            "virtio-blk {}: {e}",
            self.path.display()
        );
        self.metrics.error();
    }
}

fn open_backing(path: &Path, read_only: bool) -> Result<(File, u64), BlockError> {
    let kind = wisp_hostfs::FileKind::RegularOrBlockDevice;
    let opened = if read_only {
        wisp_hostfs::open_read(path, kind)
    } else {
        wisp_hostfs::open_read_write(path, kind)
    };
    let mut file = opened.map_err(|source| BlockError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    // Seeking to the end sizes block devices too (their st_size is 0); I/O is positional, so
    // the offset left behind does not matter.
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(|source| BlockError::Stat {
            path: path.to_path_buf(),
            source,
        })?;
    Ok((file, len / SECTOR_SIZE))
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_id::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1) | (1 << F_SEG_MAX);
        if !self.flush_ignored {
            f |= 1 << F_FLUSH;
        }
        if self.read_only {
            f |= 1 << F_RO;
        }
        f
    }

    /// `struct virtio_blk_config` up to `seg_max` (§5.2.4): capacity, size_max, seg_max.
    fn config_space(&self) -> Vec<u8> {
        let mut c = Vec::with_capacity(16);
        c.extend_from_slice(&self.capacity.to_le_bytes());
        c.extend_from_slice(&0u32.to_le_bytes());
        // Header and status take two descriptors of the queue.
        c.extend_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        c
    }

    fn activate(&mut self, ctx: &mut QueueContext, ops: &mut EventOps) -> Result<(), String> {
        self.interrupt = Some(ctx.interrupt.clone());
        self.limiter.register(ops);
        Ok(())
    }

    fn reset(&mut self, ops: &mut EventOps) {
        self.interrupt = None;
        // The chain in flight belongs to the queue the driver just reset.
        self.in_flight = None;
        self.limiter.unregister(ops);
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext, ops: &mut EventOps) {
        // A limiter set by PATCH after activation gets its timer registered here.
        self.limiter.register(ops);
        if self.limiter.is_blocked() {
            // Its timer brings us back; a notification meanwhile changes nothing.
            return;
        }
        let Some(queue) = ctx.queues.get_mut(index) else {
            return;
        };
        let mut used = false;
        let mut served = 0;
        let mut budget = PASS_BYTES;
        loop {
            if self.in_flight.is_none() {
                let Some((head, c)) = chain::pop_chain(queue, ctx.mem) else {
                    break;
                };
                let request = Self::check_shape(c).map(|c| {
                    let r = self.parse(ctx.mem, &c);
                    (c, r)
                });
                let cost = match &request {
                    Ok((_, Ok(r))) => r.bytes(),
                    _ => 0,
                };
                if !self.limiter.request(cost) {
                    // Back on the available ring, served when the limiter's timer fires.
                    queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                    self.metrics.throttled();
                    break;
                }
                self.metrics.request();
                match request {
                    Ok((c, Ok(Request::Read { offset, len }))) if len > 0 => {
                        self.in_flight = Some(InFlight {
                            head,
                            chain: c,
                            read: true,
                            offset,
                            len,
                            done: 0,
                        })
                    }
                    Ok((c, Ok(Request::Write { offset, len }))) if len > 0 => {
                        self.in_flight = Some(InFlight {
                            head,
                            chain: c,
                            read: false,
                            offset,
                            len,
                            done: 0,
                        })
                    }
                    Ok((c, r)) => {
                        let result = r.and_then(|r| self.serve_control(ctx.mem, &c, &r));
                        let len = self.complete(ctx.mem, &c, result);
                        chain::add_used(queue, ctx.mem, head, len);
                        used = true;
                        served += 1;
                    }
                    Err(e) => {
                        self.fail(&e);
                        chain::add_used(queue, ctx.mem, head, 0);
                        used = true;
                        served += 1;
                    }
                }
            }
            if let Some(mut f) = self.in_flight.take() {
                let before = f.done;
                let result = self.transfer(ctx.mem, &mut f, budget);
                budget = budget.saturating_sub(f.done - before);
                if result.is_ok() && f.done < f.len {
                    self.in_flight = Some(f);
                } else {
                    let result = result.map(|()| if f.read { f.len } else { 0 });
                    let len = self.complete(ctx.mem, &f.chain, result);
                    chain::add_used(queue, ctx.mem, f.head, len);
                    used = true;
                    served += 1;
                }
            }
            if budget == 0 || served >= BATCH {
                ctx.again = true;
                break;
            }
        }
        if used {
            chain::notify_used(queue, ctx.mem, ctx.interrupt);
        }
    }

    fn process_backend(&mut self, events: Events, ctx: &mut QueueContext, ops: &mut EventOps) {
        if self.limiter.on_timer(events.fd()) {
            self.process_queue(0, ctx, ops);
        }
    }

    fn metrics(&self) -> &Arc<DeviceMetrics> {
        &self.metrics
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;
