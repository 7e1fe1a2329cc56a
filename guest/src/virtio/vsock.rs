//! virtio-vsock (virtio 1.2 §5.10): a stream connection from the guest to the host (CID 2).
//!
//! Queues: 0 receive, 1 transmit, 2 event. Every packet starts with the 44-byte
//! `virtio_vsock_hdr` (§5.10.6); stream flow control is credit based (§5.10.6.3): each side
//! advertises its receive buffer (`buf_alloc`) and how much it has consumed (`fwd_cnt`), and a
//! sender keeps its unacknowledged bytes within the peer's buffer.

use super::dma::{self, DmaRegion};
use super::mmio::MmioTransport;
use super::queue::{Buffer, Virtqueue, MAX_QUEUE_SIZE};
use super::{setup_queue, Slots, VirtioError, DEVICE_VSOCK};
use crate::bytes_fmt::Text;
use crate::deadline::Deadline;
use crate::serial::println;
use core::fmt;

/// VIRTIO_VSOCK_F_STREAM (§5.10.3): stream sockets (also implied when no type bit is offered).
const F_STREAM: u64 = 1 << 0;
const RX_QUEUE: u16 = 0;
pub(super) const TX_QUEUE: u16 = 1;
const EVENT_QUEUE: u16 = 2;
pub(super) const HDR_LEN: usize = 44;
/// Receive buffer: header plus up to 4 KiB of payload.
pub(super) const RX_BUFFER_LEN: usize = HDR_LEN + 4096;
/// `struct virtio_vsock_event` is one u32; the buffer is a little larger.
const EVENT_BUFFER_LEN: usize = 8;
/// The host's well-known CID (§5.10.4).
pub(super) const HOST_CID: u64 = 2;
/// The host port the `vsock` command connects to, and our (ephemeral) port.
const HOST_PORT: u32 = 1234;
pub(super) const LOCAL_PORT: u32 = 49_152;
const TYPE_STREAM: u16 = 1;
/// Operations (§5.10.6).
pub(super) const OP_REQUEST: u16 = 1;
pub(super) const OP_RESPONSE: u16 = 2;
pub(super) const OP_RST: u16 = 3;
pub(super) const OP_SHUTDOWN: u16 = 4;
pub(super) const OP_RW: u16 = 5;
pub(super) const OP_CREDIT_UPDATE: u16 = 6;
pub(super) const OP_CREDIT_REQUEST: u16 = 7;
/// SHUTDOWN flags: no more receiving, no more sending.
pub(super) const SHUTDOWN_BOTH: u32 = 3;
/// Receive buffer space we advertise: we consume every byte as it arrives.
const BUF_ALLOC: u32 = 64 * 1024;
/// What the `vsock` command sends.
const GREETING: &[u8] = b"hello from the unikernel\n";
/// The longest reply kept.
const REPLY_MAX: usize = 256;
pub(super) const CONNECT_TIMEOUT_MS: u64 = 5000;
const REPLY_TIMEOUT_MS: u64 = 5000;
pub(super) const CLOSE_TIMEOUT_MS: u64 = 2000;
pub(super) const TX_TIMEOUT_MS: u64 = 2000;

/// What went wrong with the vsock device or connection.
#[derive(Debug)]
pub enum VsockError {
    Virtio(VirtioError),
    /// The device completed a transmit other than the one in flight.
    WrongCompletion {
        expected: u16,
        got: u16,
    },
    /// The host refused or reset the connection.
    Reset {
        during: &'static str,
    },
    /// No answer from the host in time.
    Timeout {
        waiting_for: &'static str,
    },
    /// The host advertises no room for our data.
    NoCredit {
        available: u32,
        needed: usize,
    },
}

impl From<VirtioError> for VsockError {
    fn from(err: VirtioError) -> Self {
        Self::Virtio(err)
    }
}

impl fmt::Display for VsockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Virtio(err) => write!(f, "{err}"),
            Self::WrongCompletion { expected, got } => {
                write!(f, "device completed transmit {got}, expected {expected}")
            }
            Self::Reset { during } => write!(f, "connection reset by the host during {during}"),
            Self::Timeout { waiting_for } => write!(f, "no {waiting_for} from the host in time"),
            Self::NoCredit { available, needed } => {
                write!(f, "host has room for {available} bytes, need {needed}")
            }
        }
    }
}

/// `struct virtio_vsock_hdr` (§5.10.6), little endian on the wire.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Header {
    src_cid: u64,
    dst_cid: u64,
    src_port: u32,
    dst_port: u32,
    len: u32,
    kind: u16,
    pub(super) op: u16,
    flags: u32,
    buf_alloc: u32,
    fwd_cnt: u32,
}

impl Header {
    pub(super) fn encode(&self) -> [u8; HDR_LEN] {
        let mut bytes = [0u8; HDR_LEN];
        bytes[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        bytes[24..28].copy_from_slice(&self.len.to_le_bytes());
        bytes[28..30].copy_from_slice(&self.kind.to_le_bytes());
        bytes[30..32].copy_from_slice(&self.op.to_le_bytes());
        bytes[32..36].copy_from_slice(&self.flags.to_le_bytes());
        bytes[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        bytes[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8; HDR_LEN]) -> Self {
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }
}

pub(super) struct VsockDevice {
    pub(super) transport: MmioTransport,
    rx: Virtqueue,
    pub(super) tx: Virtqueue,
    /// Kept so the event buffer stays posted while the device runs.
    _event: Virtqueue,
    rx_buffers: [Option<DmaRegion>; MAX_QUEUE_SIZE as usize],
    tx_buffer: DmaRegion,
    pub(super) guest_cid: u64,
    /// The host port of our one stream.
    port: u32,
}

/// Our side of the one stream: the counters of §5.10.6.3.
pub(super) struct Stream {
    /// Payload bytes we consumed (sent to the host as `fwd_cnt`).
    pub(super) fwd_cnt: u32,
    /// Payload bytes we sent.
    pub(super) tx_cnt: u32,
    pub(super) peer_buf_alloc: u32,
    pub(super) peer_fwd_cnt: u32,
}

impl Stream {
    pub(super) fn update_credit(&mut self, header: &Header) {
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = header.fwd_cnt;
    }

    /// Bytes the host can take now: its buffer minus what is in flight (wrapping counters).
    pub(super) fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }
}

impl VsockDevice {
    /// Opens the first vsock device for command `name`; the stream will go to host `port`.
    pub(super) fn open(slots: &Slots, name: &str, port: u32) -> Result<Self, VsockError> {
        let (transport, _features) = slots.open(name, DEVICE_VSOCK, F_STREAM)?;
        let rx = setup_queue(&transport, RX_QUEUE)?;
        let tx = setup_queue(&transport, TX_QUEUE)?;
        let mut event = setup_queue(&transport, EVENT_QUEUE)?;
        // §5.10.6.1: the driver keeps the event queue supplied; posted before DRIVER_OK
        // (§3.1.1 step 7), the doorbell rung after it.
        let event_buffer = dma::alloc(EVENT_BUFFER_LEN, 8).ok_or(VirtioError::OutOfDma)?;
        event.submit(&[Buffer::writable(event_buffer)])?;
        let mut device = VsockDevice {
            transport,
            rx,
            tx,
            _event: event,
            rx_buffers: [None; MAX_QUEUE_SIZE as usize],
            tx_buffer: dma::alloc(RX_BUFFER_LEN, 16).ok_or(VirtioError::OutOfDma)?,
            guest_cid: 0,
            port,
        };
        for _ in 0..device.rx.size() {
            let buffer = dma::alloc(RX_BUFFER_LEN, 16).ok_or(VirtioError::OutOfDma)?;
            device.post_rx(buffer)?;
        }
        device.transport.driver_ok()?;
        // `guest_cid` is the only config field: a u64 read as two 32-bit halves (§5.10.4).
        device.guest_cid = device.transport.config_u64(0)?;
        device.transport.notify(EVENT_QUEUE);
        device.transport.notify(RX_QUEUE);
        Ok(device)
    }

    fn post_rx(&mut self, buffer: DmaRegion) -> Result<(), VsockError> {
        let head = self.rx.submit(&[Buffer::writable(buffer)])?;
        if let Some(slot) = self.rx_buffers.get_mut(usize::from(head)) {
            *slot = Some(buffer);
        }
        Ok(())
    }

    /// A header for our stream with our current credit.
    pub(super) fn header(&self, stream: &Stream, op: u16, len: usize, flags: u32) -> Header {
        Header {
            src_cid: self.guest_cid,
            dst_cid: HOST_CID,
            src_port: LOCAL_PORT,
            dst_port: self.port,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: stream.fwd_cnt,
        }
    }

    pub(super) fn send(&mut self, header: &Header, payload: &[u8]) -> Result<(), VsockError> {
        let payload = &payload[..payload.len().min(RX_BUFFER_LEN - HDR_LEN)];
        self.tx_buffer.write(0, &header.encode());
        self.tx_buffer.write(HDR_LEN, payload);
        let len = HDR_LEN + payload.len();
        let head = self
            .tx
            .submit(&[Buffer::part(self.tx_buffer, len, false)])?;
        self.transport.notify(TX_QUEUE);
        let used = self.tx.wait_used(&Deadline::after_ms(TX_TIMEOUT_MS))?;
        self.transport.ack_interrupts();
        if used.head != head {
            return Err(VsockError::WrongCompletion {
                expected: head,
                got: used.head,
            });
        }
        Ok(())
    }

    /// The next packet for our stream (others are dropped), its payload copied into
    /// `payload`; returns the header and the payload length. `None` at the deadline.
    pub(super) fn receive(
        &mut self,
        payload: &mut [u8],
        deadline: &Deadline,
    ) -> Result<Option<(Header, usize)>, VsockError> {
        loop {
            if let Some(used) = self.rx.pop_used()? {
                self.transport.ack_interrupts();
                let buffer = self
                    .rx_buffers
                    .get_mut(usize::from(used.head))
                    .and_then(Option::take);
                let Some(buffer) = buffer else {
                    continue;
                };
                let written = usize::try_from(used.len)
                    .unwrap_or(usize::MAX)
                    .min(buffer.len());
                let mut raw = [0u8; HDR_LEN];
                let packet = if written >= HDR_LEN {
                    buffer.read(0, &mut raw);
                    let header = Header::decode(&raw);
                    // The payload is what the header says, within what the device wrote.
                    let len = usize::try_from(header.len)
                        .unwrap_or(usize::MAX)
                        .min(written - HDR_LEN)
                        .min(payload.len());
                    let copied = buffer.read(HDR_LEN, &mut payload[..len]);
                    Some((header, copied))
                } else {
                    None
                };
                self.post_rx(buffer)?;
                self.transport.notify(RX_QUEUE);
                match packet {
                    Some((header, len))
                        if header.src_cid == HOST_CID
                            && header.src_port == self.port
                            && header.dst_port == LOCAL_PORT =>
                    {
                        return Ok(Some((header, len)))
                    }
                    _ => continue,
                }
            }
            if deadline.passed() {
                return Ok(None);
            }
            self.transport.check_healthy()?;
            core::hint::spin_loop();
        }
    }

    /// Connects our stream (§5.10.6.4): REQUEST, then RESPONSE or RST. `payload` is scratch.
    pub(super) fn connect(
        &mut self,
        stream: &mut Stream,
        payload: &mut [u8],
    ) -> Result<(), VsockError> {
        let request = self.header(stream, OP_REQUEST, 0, 0);
        self.send(&request, &[])?;
        let deadline = Deadline::after_ms(CONNECT_TIMEOUT_MS);
        loop {
            let Some((header, _)) = self.receive(payload, &deadline)? else {
                return Err(VsockError::Timeout {
                    waiting_for: "RESPONSE",
                });
            };
            stream.update_credit(&header);
            match header.op {
                OP_RESPONSE => return Ok(()),
                OP_RST => return Err(VsockError::Reset { during: "connect" }),
                _ => {}
            }
        }
    }

    /// Closes our stream (§5.10.6.5): SHUTDOWN both ways, wait for the host's RST, else
    /// reset it ourselves. `payload` is scratch.
    pub(super) fn close(&mut self, stream: &Stream, payload: &mut [u8]) -> Result<(), VsockError> {
        let shutdown = self.header(stream, OP_SHUTDOWN, 0, SHUTDOWN_BOTH);
        self.send(&shutdown, &[])?;
        let deadline = Deadline::after_ms(CLOSE_TIMEOUT_MS);
        while let Some((header, _)) = self.receive(payload, &deadline)? {
            if header.op == OP_RST {
                return Ok(());
            }
            if deadline.passed() {
                break;
            }
        }
        let rst = self.header(stream, OP_RST, 0, 0);
        self.send(&rst, &[])
    }
}

/// The `vsock` command: connect to host port 1234, send a greeting, print the reply, close.
pub fn run(slots: &Slots) -> Result<(), VsockError> {
    let mut device = VsockDevice::open(slots, "vsock", HOST_PORT)?;
    println!("vsock: cid={}", device.guest_cid);
    let mut stream = Stream {
        fwd_cnt: 0,
        tx_cnt: 0,
        peer_buf_alloc: 0,
        peer_fwd_cnt: 0,
    };
    let mut payload = [0u8; RX_BUFFER_LEN - HDR_LEN];

    device.connect(&mut stream, &mut payload)?;
    println!("vsock: connected to {HOST_CID}:{HOST_PORT}");

    // Send, within the host's credit (§5.10.6.3).
    if (stream.peer_credit() as usize) < GREETING.len() {
        return Err(VsockError::NoCredit {
            available: stream.peer_credit(),
            needed: GREETING.len(),
        });
    }
    let rw = device.header(&stream, OP_RW, GREETING.len(), 0);
    device.send(&rw, GREETING)?;
    stream.tx_cnt = stream.tx_cnt.wrapping_add(GREETING.len() as u32);

    // Read the reply: up to a newline, the host's SHUTDOWN, or REPLY_MAX bytes.
    let mut reply = [0u8; REPLY_MAX];
    let mut have = 0;
    let deadline = Deadline::after_ms(REPLY_TIMEOUT_MS);
    let mut host_closed = false;
    while have < REPLY_MAX && !reply[..have].contains(&b'\n') {
        let Some((header, len)) = device.receive(&mut payload, &deadline)? else {
            break;
        };
        stream.update_credit(&header);
        match header.op {
            OP_RW => {
                let take = len.min(REPLY_MAX - have);
                reply[have..have + take].copy_from_slice(&payload[..take]);
                have += take;
                stream.fwd_cnt = stream.fwd_cnt.wrapping_add(len as u32);
            }
            OP_CREDIT_REQUEST => {
                let update = device.header(&stream, OP_CREDIT_UPDATE, 0, 0);
                device.send(&update, &[])?;
            }
            OP_SHUTDOWN | OP_RST => {
                host_closed = true;
                break;
            }
            _ => {}
        }
    }
    if have == 0 {
        return Err(if host_closed {
            VsockError::Reset {
                during: "the reply",
            }
        } else {
            VsockError::Timeout {
                waiting_for: "reply",
            }
        });
    }
    let text = reply[..have].strip_suffix(b"\n").unwrap_or(&reply[..have]);
    println!("vsock: got {}", Text(text));

    device.close(&stream, &mut payload)?;
    println!("vsock: closed");
    Ok(())
}
