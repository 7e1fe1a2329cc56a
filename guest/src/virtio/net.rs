//! virtio-net (virtio 1.2 §5.1): receive queue 0, transmit queue 1, the MAC from config space.
//! Only VIRTIO_NET_F_MAC is negotiated (with VERSION_1): no offloads, no mergeable buffers, so
//! every frame has the 12-byte `virtio_net_hdr_v1` in front (§5.1.6) and every receive buffer
//! must hold a whole frame.

use super::dma::{self, DmaRegion};
use super::mmio::MmioTransport;
use super::queue::{Buffer, Virtqueue, MAX_QUEUE_SIZE};
use super::{setup_queue, Slots, VirtioError, DEVICE_NET};
use crate::bytes_fmt::Mac;
use crate::deadline::Deadline;
use crate::serial::println;
use core::fmt;

/// VIRTIO_NET_F_MAC (§5.1.3): config space holds the device's MAC.
const F_MAC: u64 = 1 << 5;
/// `struct virtio_net_hdr` with `num_buffers`: 12 bytes once VERSION_1 is negotiated (§5.1.6).
pub(super) const NET_HDR_LEN: usize = 12;
/// Receive buffer: header + a 1514-byte Ethernet frame (no VLAN tags expected), rounded up.
const RX_BUFFER_LEN: usize = 2048;
/// Largest frame we send (header not included).
const MAX_FRAME: usize = RX_BUFFER_LEN - NET_HDR_LEN;
const RX_QUEUE: u16 = 0;
pub(super) const TX_QUEUE: u16 = 1;
/// Used when the device offers no MAC: a locally administered address.
const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub(super) const TX_TIMEOUT_MS: u64 = 2000;

const ETH_HEADER_LEN: usize = 14;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
/// IEEE 802 "local experimental" ethertype: the host's `net-echo` test frames.
pub(super) const ETHERTYPE_TEST: u16 = 0x88b5;
pub(super) const BROADCAST: [u8; 6] = [0xff; 6];
/// Ethernet frames shorter than this are padded (IEEE 802.3 minimum without FCS).
const MIN_FRAME: usize = 60;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// The addresses of QEMU's user network, which the tests' host side copies.
const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
const HOST_IP: [u8; 4] = [10, 0, 2, 1];
/// `net`: total wait for an ARP reply, and the gap between requests within it.
const ARP_TOTAL_MS: u64 = 2000;
const ARP_RETRY_MS: u64 = 500;
/// `net-echo` gives up after this long without a frame.
const ECHO_IDLE_MS: u64 = 60_000;

/// What went wrong with the network device.
#[derive(Debug)]
pub enum NetError {
    Virtio(VirtioError),
    /// The device completed a transmit other than the one in flight.
    WrongCompletion {
        expected: u16,
        got: u16,
    },
    /// A frame longer than a receive buffer could hold.
    FrameTooLong {
        len: usize,
    },
}

impl From<VirtioError> for NetError {
    fn from(err: VirtioError) -> Self {
        Self::Virtio(err)
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Virtio(err) => write!(f, "{err}"),
            Self::WrongCompletion { expected, got } => {
                write!(f, "device completed transmit {got}, expected {expected}")
            }
            Self::FrameTooLong { len } => write!(f, "frame of {len} bytes is too long"),
        }
    }
}

pub(super) struct NetDevice {
    pub(super) transport: MmioTransport,
    rx: Virtqueue,
    pub(super) tx: Virtqueue,
    /// The receive buffer behind each head descriptor in flight.
    rx_buffers: [Option<DmaRegion>; MAX_QUEUE_SIZE as usize],
    tx_buffer: DmaRegion,
    pub(super) mac: [u8; 6],
}

impl NetDevice {
    pub(super) fn open(slots: &Slots, name: &str) -> Result<Self, NetError> {
        let (transport, features) = slots.open(name, DEVICE_NET, F_MAC)?;
        let rx = setup_queue(&transport, RX_QUEUE)?;
        let tx = setup_queue(&transport, TX_QUEUE)?;
        let mut mac = DEFAULT_MAC;
        if features & F_MAC == 0 {
            println!(
                "{name}: the device offers no MAC, using {}",
                Mac(&DEFAULT_MAC)
            );
        } else {
            // `mac` is the first config field, six 8-bit fields (§5.1.4).
            for (offset, byte) in mac.iter_mut().enumerate() {
                *byte = transport.config_u8(offset);
            }
        }
        let mut device = NetDevice {
            transport,
            rx,
            tx,
            rx_buffers: [None; MAX_QUEUE_SIZE as usize],
            tx_buffer: dma::alloc(RX_BUFFER_LEN, 16).ok_or(VirtioError::OutOfDma)?,
            mac,
        };
        for _ in 0..device.rx.size() {
            let buffer = dma::alloc(RX_BUFFER_LEN, 16).ok_or(VirtioError::OutOfDma)?;
            device.post_rx(buffer)?;
        }
        // Receive buffers are posted before DRIVER_OK (§3.1.1 step 7, §5.1.5), the doorbell
        // rung after it.
        device.transport.driver_ok()?;
        device.transport.notify(RX_QUEUE);
        Ok(device)
    }

    fn post_rx(&mut self, buffer: DmaRegion) -> Result<(), NetError> {
        let head = self.rx.submit(&[Buffer::writable(buffer)])?;
        if let Some(slot) = self.rx_buffers.get_mut(usize::from(head)) {
            *slot = Some(buffer);
        }
        Ok(())
    }

    /// Sends one Ethernet frame (without FCS) and waits until the device has taken it.
    fn send(&mut self, frame: &[u8]) -> Result<(), NetError> {
        if frame.len() > MAX_FRAME {
            return Err(NetError::FrameTooLong { len: frame.len() });
        }
        // All-zero header: no checksum offload, no GSO (§5.1.6.2).
        self.tx_buffer.write(0, &[0u8; NET_HDR_LEN]);
        self.tx_buffer.write(NET_HDR_LEN, frame);
        let len = NET_HDR_LEN + frame.len();
        let head = self
            .tx
            .submit(&[Buffer::part(self.tx_buffer, len, false)])?;
        self.transport.notify(TX_QUEUE);
        let used = self.tx.wait_used(&Deadline::after_ms(TX_TIMEOUT_MS))?;
        self.transport.ack_interrupts();
        if used.head != head {
            return Err(NetError::WrongCompletion {
                expected: head,
                got: used.head,
            });
        }
        Ok(())
    }

    /// Waits (until `deadline`) for a frame, copies it (header stripped) into `frame` and
    /// returns its length; `None` when the deadline passes first.
    fn receive(
        &mut self,
        frame: &mut [u8],
        deadline: &Deadline,
    ) -> Result<Option<usize>, NetError> {
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
                let len = usize::try_from(used.len)
                    .unwrap_or(usize::MAX)
                    .min(buffer.len());
                let copied = if len > NET_HDR_LEN {
                    let end = (len - NET_HDR_LEN).min(frame.len());
                    buffer.read(NET_HDR_LEN, &mut frame[..end])
                } else {
                    0
                };
                self.post_rx(buffer)?;
                self.transport.notify(RX_QUEUE);
                if copied >= ETH_HEADER_LEN {
                    return Ok(Some(copied));
                }
                continue;
            }
            if deadline.passed() {
                return Ok(None);
            }
            self.transport.check_healthy()?;
            core::hint::spin_loop();
        }
    }
}

fn ethertype(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[12], frame[13]])
}

/// An ARP request (RFC 826) for HOST_IP from GUEST_IP, in a padded broadcast frame.
fn arp_request(mac: &[u8; 6]) -> [u8; MIN_FRAME] {
    let mut frame = [0u8; MIN_FRAME];
    frame[0..6].copy_from_slice(&BROADCAST);
    frame[6..12].copy_from_slice(mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let arp = &mut frame[ETH_HEADER_LEN..];
    arp[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    arp[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    arp[4] = 6; // hardware address length
    arp[5] = 4; // protocol address length
    arp[6..8].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    arp[8..14].copy_from_slice(mac);
    arp[14..18].copy_from_slice(&GUEST_IP);
    // Target hardware address (18..24) stays zero: that is what we ask for.
    arp[24..28].copy_from_slice(&HOST_IP);
    frame
}

/// The sender MAC of an ARP reply from HOST_IP to GUEST_IP, if `frame` is one.
fn arp_reply_sender(frame: &[u8]) -> Option<[u8; 6]> {
    let arp = frame.get(ETH_HEADER_LEN..ETH_HEADER_LEN + 28)?;
    let is_reply = ethertype(frame) == ETHERTYPE_ARP
        && arp[6..8] == ARP_REPLY.to_be_bytes()
        && arp[14..18] == HOST_IP
        && arp[24..28] == GUEST_IP;
    is_reply.then(|| {
        let mut sender = [0u8; 6];
        sender.copy_from_slice(&arp[8..14]);
        sender
    })
}

/// The `net` command: ARP for the host and print who answered.
pub fn run(slots: &Slots) -> Result<(), NetError> {
    let mut device = NetDevice::open(slots, "net")?;
    println!("net: mac={}", Mac(&device.mac));
    let request = arp_request(&device.mac);
    let mut frame = [0u8; MAX_FRAME];
    let attempts = ARP_TOTAL_MS / ARP_RETRY_MS;
    for _ in 0..attempts {
        device.send(&request)?;
        let deadline = Deadline::after_ms(ARP_RETRY_MS);
        // Other traffic (the host's IPv6 chatter) is skipped; the deadline also ends a flood.
        while let Some(len) = device.receive(&mut frame, &deadline)? {
            if let Some(sender) = arp_reply_sender(&frame[..len]) {
                println!("net: arp reply from {}", Mac(&sender));
                return Ok(());
            }
            if deadline.passed() {
                break;
            }
        }
    }
    println!(
        "net: no arp reply for {}.{}.{}.{} within {ARP_TOTAL_MS} ms",
        HOST_IP[0], HOST_IP[1], HOST_IP[2], HOST_IP[3]
    );
    Ok(())
}

/// The `net-echo` command: sends every received frame back with the MACs swapped, until a
/// frame of ethertype 0x88b5 whose payload starts with `quit`. A frame sent to a group
/// address goes back from our own MAC (a group address is never a valid source).
pub fn echo(slots: &Slots) -> Result<(), NetError> {
    let mut device = NetDevice::open(slots, "net-echo")?;
    println!("net-echo: mac={}", Mac(&device.mac));
    println!("net-echo: ready");
    let mut frame = [0u8; MAX_FRAME];
    let mut echoed: u64 = 0;
    loop {
        let Some(len) = device.receive(&mut frame, &Deadline::after_ms(ECHO_IDLE_MS))? else {
            println!("net-echo: no frame for {ECHO_IDLE_MS} ms, stopping after {echoed} echoes");
            return Ok(());
        };
        if ethertype(&frame) == ETHERTYPE_TEST && frame[ETH_HEADER_LEN..len].starts_with(b"quit") {
            println!("net-echo: quit after {echoed} echoes");
            return Ok(());
        }
        let mut destination = [0u8; 6];
        destination.copy_from_slice(&frame[0..6]);
        frame.copy_within(6..12, 0);
        let group = destination[0] & 1 != 0;
        frame[6..12].copy_from_slice(if group { &device.mac } else { &destination });
        device.send(&frame[..len])?;
        echoed += 1;
    }
}
