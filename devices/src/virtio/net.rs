//! virtio-net (virtio 1.2 §5.1) over a tap device.
//!
//! No offloads are offered (and TUNSETOFFLOAD is 0), so every frame is a plain Ethernet frame
//! behind a zeroed 12-byte `virtio_net_hdr_v1`, in both directions; the header passes between
//! the guest and the tap unchanged except `num_buffers`, which the device sets to 1 (§5.1.6.3:
//! without VIRTIO_NET_F_MRG_RXBUF each packet uses one buffer).
//!
//! Each direction may have a [`RateLimiter`] (Firecracker's `rx_rate_limiter` and
//! `tx_rate_limiter`): a frame that does not fit waits (rx: in `pending`, with the tap no longer
//! polled; tx: back on the available ring) until the limiter's timer fires. A pass moves at most
//! [`FRAMES_PER_PASS`] frames per direction so one busy queue cannot hold the event loop.

use std::any::Any;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events};
use log::{error, warn};
use thiserror::Error;
use virtio_queue::QueueT;

use super::chain;
use super::device::{QueueContext, VirtioDevice};
use super::metrics::DeviceMetrics;
use super::tap::{Tap, TapError, VNET_HDR_LEN};
use super::{device_id, VIRTIO_F_VERSION_1};
use crate::rate_limiter::{RateLimiter, TokenBucket};

const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const QUEUE_SIZE: u16 = 256;
/// Feature bit: the device has a MAC address in config space (§5.1.3).
const F_MAC: u32 = 5;
/// The device advises a maximum MTU in config space (Firecracker's `mtu`).
const F_MTU: u32 = 3;
/// Largest frame without offloads: header + 64 KiB (the tap's own limit).
const MAX_FRAME: usize = VNET_HDR_LEN + 65536;
/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_AT: usize = 10;
/// Frames moved per direction per event-loop pass.
pub const FRAMES_PER_PASS: usize = 64;

/// Errors creating a net device.
#[derive(Debug, Error)]
pub enum NetError {
    /// The tap could not be opened.
    #[error("virtio-net: {0}")]
    Tap(#[from] TapError),
}

/// A virtio network device backed by a tap.
pub struct Net {
    tap: Tap,
    mac: Option<[u8; 6]>,
    /// A frame read from the tap that found no rx buffer yet (length in `frame`).
    pending: Option<usize>,
    frame: Vec<u8>,
    /// Whether the tap fd is registered for EPOLLIN; dropped while the guest has no rx buffer.
    tap_armed: bool,
    metrics: Arc<DeviceMetrics>,
    rx_limiter: RateLimiter,
    tx_limiter: RateLimiter,
    /// Advised MTU (VIRTIO_NET_F_MTU); `None`: not offered.
    mtu: Option<u16>,
}

impl Net {
    /// Opens tap `tap_name`; `mac` goes into config space (else the driver picks one).
    pub fn new(tap_name: &str, mac: Option<[u8; 6]>) -> Result<Self, NetError> {
        Ok(Net {
            tap: Tap::open(tap_name)?,
            mac,
            pending: None,
            frame: vec![0; MAX_FRAME],
            tap_armed: false,
            metrics: Arc::new(DeviceMetrics::default()),
            rx_limiter: RateLimiter::default(),
            tx_limiter: RateLimiter::default(),
            mtu: None,
        })
    }

    /// Advises `mtu` to the driver with VIRTIO_NET_F_MTU (set before boot).
    pub fn set_mtu(&mut self, mtu: Option<u16>) {
        self.mtu = mtu;
    }

    /// Sets or replaces the limiter of frames to the guest (`None` twice: no limit).
    pub fn set_rx_rate_limiter(
        &mut self,
        bandwidth: Option<TokenBucket>,
        ops: Option<TokenBucket>,
    ) -> std::io::Result<()> {
        self.rx_limiter.update(bandwidth, ops)
    }

    /// Sets or replaces the limiter of frames from the guest.
    pub fn set_tx_rate_limiter(
        &mut self,
        bandwidth: Option<TokenBucket>,
        ops: Option<TokenBucket>,
    ) -> std::io::Result<()> {
        self.tx_limiter.update(bandwidth, ops)
    }

    fn arm_tap(&mut self, ops: &mut EventOps, on: bool) {
        if self.tap_armed == on {
            return;
        }
        let events = Events::new(&self.tap, EventSet::IN);
        let result = if on {
            ops.add(events)
        } else {
            ops.remove(events)
        };
        match result {
            Ok(()) => self.tap_armed = on,
            Err(e) => error!(
                "virtio-net {}: cannot (un)register tap: {e}",
                self.tap.name()
            ),
        }
    }

    /// Moves frames from the tap into rx buffers until either side runs dry.
    fn process_rx(&mut self, ctx: &mut QueueContext, ops: &mut EventOps) {
        let Some(queue) = ctx.queues.get_mut(RX_QUEUE) else {
            return;
        };
        self.rx_limiter.register(ops);
        let mut used = false;
        for _ in 0..FRAMES_PER_PASS {
            // Left armed, the tap brings us back for the rest after other subscribers ran.
            let len = match self.pending {
                Some(len) => len,
                None => match self.tap.read_frame(&mut self.frame) {
                    Ok(len) => len,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        warn!("virtio-net {}: tap read: {e}", self.tap.name());
                        self.metrics.error();
                        break;
                    }
                },
            };
            self.pending = Some(len);
            if !queue.ready() {
                self.arm_tap(ops, false);
                break;
            }
            let Some((head, c)) = chain::pop_chain(queue, ctx.mem) else {
                // §5.1.6.4: no buffer, so stop reading the tap until the driver adds some
                // (its rx notification re-arms it); the kernel queues or drops meanwhile.
                self.arm_tap(ops, false);
                break;
            };
            let cost = match &c {
                Ok(_) => len as u64,
                Err(_) => 0,
            };
            if !self.rx_limiter.request(cost) {
                // The frame stays pending and the tap unpolled until the limiter's timer.
                queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                self.metrics.throttled();
                self.arm_tap(ops, false);
                break;
            }
            self.pending = None;
            used = true;
            self.metrics.request();
            let written = match c {
                Ok(c) if c.readable.is_empty() && chain::total_len(&c.writable) >= len => {
                    if len >= VNET_HDR_LEN {
                        self.frame[NUM_BUFFERS_AT..NUM_BUFFERS_AT + 2]
                            .copy_from_slice(&1u16.to_le_bytes());
                    }
                    chain::fill_writable(
                        ctx.mem,
                        &c,
                        &self.frame[..len],
                        &self.metrics,
                        "virtio-net: rx",
                    )
                }
                Ok(_) => chain::refuse(
                    &self.metrics,
                    "virtio-net: rx",
                    "buffer too small or device-readable; frame dropped",
                ),
                Err(e) => chain::refuse(
                    &self.metrics,
                    "virtio-net: rx",
                    format!("{e}; frame dropped"),
                ),
            };
            chain::add_used(queue, ctx.mem, head, written);
        }
        if used {
            chain::notify_used(queue, ctx.mem, ctx.interrupt);
        }
    }

    fn process_tx(&mut self, ctx: &mut QueueContext, ops: &mut EventOps) {
        self.tx_limiter.register(ops);
        if self.tx_limiter.is_blocked() {
            return;
        }
        let Some(queue) = ctx.queues.get_mut(TX_QUEUE) else {
            return;
        };
        let mut used = false;
        let mut buf = Vec::new();
        let mut frames = 0;
        while let Some((head, c)) = chain::pop_chain(queue, ctx.mem) {
            let cost = match &c {
                Ok(c) => chain::total_len(&c.readable) as u64,
                Err(_) => 0,
            };
            if !self.tx_limiter.request(cost) {
                queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                self.metrics.throttled();
                break;
            }
            used = true;
            self.metrics.request();
            match c {
                Ok(c) if c.writable.is_empty() => {
                    let len = chain::total_len(&c.readable);
                    if !(VNET_HDR_LEN..=MAX_FRAME).contains(&len) {
                        crate::guest_log!(
                            log::Level::Warn,
                            Some(&*self.metrics),
                            "virtio-net: tx frame of {len} bytes dropped"
                        );
                        self.metrics.error();
                    } else {
                        buf.resize(len, 0);
                        let sent = chain::read_at(ctx.mem, &c.readable, 0, &mut buf)
                            .map_err(|e| e.to_string())
                            .and_then(|()| self.tap.write_frame(&buf).map_err(|e| e.to_string()));
                        match sent {
                            Ok(_) => self.metrics.written_bytes(len),
                            Err(e) => {
                                // A full tap queue drops the frame, as a NIC would.
                                crate::guest_log!(
                                    log::Level::Warn,
                                    Some(&*self.metrics),
                                    "virtio-net: tx: {e}"
                                );
                                self.metrics.error();
                            }
                        }
                    }
                }
                Ok(_) => {
                    crate::guest_log!(
                        log::Level::Warn,
                        Some(&*self.metrics),
                        "virtio-net: tx chain with device-writable buffers dropped"
                    );
                    self.metrics.error();
                }
                Err(e) => {
                    crate::guest_log!(
                        log::Level::Warn,
                        Some(&*self.metrics),
                        "virtio-net: tx: {e}"
                    );
                    self.metrics.error();
                }
            }
            chain::add_used(queue, ctx.mem, head, 0);
            frames += 1;
            if frames == FRAMES_PER_PASS {
                ctx.again = true;
                break;
            }
        }
        if used {
            chain::notify_used(queue, ctx.mem, ctx.interrupt);
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_id::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = 1u64 << VIRTIO_F_VERSION_1;
        if self.mac.is_some() {
            f |= 1 << F_MAC;
        }
        if self.mtu.is_some() {
            f |= 1 << F_MTU;
        }
        f
    }

    /// `struct virtio_net_config` (§5.1.4): mac, then status (LINK_UP; read only with
    /// VIRTIO_NET_F_STATUS, which we do not offer).
    fn config_space(&self) -> Vec<u8> {
        let mut c = self.mac.unwrap_or_default().to_vec();
        c.extend_from_slice(&1u16.to_le_bytes());
        if let Some(mtu) = self.mtu {
            // max_virtqueue_pairs (meaningless without VIRTIO_NET_F_MQ), then mtu.
            c.extend_from_slice(&1u16.to_le_bytes());
            c.extend_from_slice(&mtu.to_le_bytes());
        }
        c
    }

    fn activate(&mut self, ctx: &mut QueueContext, ops: &mut EventOps) -> Result<(), String> {
        let _ = ctx;
        self.pending = None;
        self.rx_limiter.register(ops);
        self.tx_limiter.register(ops);
        self.arm_tap(ops, true);
        if self.tap_armed {
            Ok(())
        } else {
            Err(format!("cannot register tap {}", self.tap.name()))
        }
    }

    fn reset(&mut self, ops: &mut EventOps) {
        self.arm_tap(ops, false);
        self.rx_limiter.unregister(ops);
        self.tx_limiter.unregister(ops);
        self.pending = None;
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext, ops: &mut EventOps) {
        match index {
            RX_QUEUE => {
                // New rx buffers: deliver what is pending, then listen to the tap again.
                self.process_rx(ctx, ops);
                if self.pending.is_none() {
                    self.arm_tap(ops, true);
                }
            }
            TX_QUEUE => self.process_tx(ctx, ops),
            _ => {}
        }
    }

    fn process_backend(&mut self, events: Events, ctx: &mut QueueContext, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.tap.as_raw_fd() {
            self.process_rx(ctx, ops);
        } else if self.rx_limiter.on_timer(fd) {
            self.process_queue(RX_QUEUE, ctx, ops);
        } else if self.tx_limiter.on_timer(fd) {
            self.process_tx(ctx, ops);
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
mod tests {
    use super::*;
    use crate::virtio::test_driver::TestGuest;
    use std::process::Command;

    const GUEST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
    const GUEST_IP: [u8; 4] = [10, 0, 0, 2];
    const HOST_IP: [u8; 4] = [10, 0, 0, 1];

    fn sh(cmd: &str) {
        let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
        assert!(st.success(), "{cmd} failed");
    }

    /// Runs `f` on a thread moved into a fresh network namespace, with tap `wisptap0` up as
    /// 10.0.0.1/24 (commands spawned from that thread inherit its namespace).
    fn in_private_netns(f: impl FnOnce(Net) + Send + 'static) -> bool {
        if !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("skipping virtio-net test: /dev/net/tun is absent on this host");
            return false;
        }
        std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) takes no pointers; it moves only this thread
            // into a new network namespace, leaving the other test threads untouched.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            let net = Net::new("wisptap0", Some(GUEST_MAC)).unwrap();
            // IPv6 would send unsolicited frames (MLD, router solicitations) into the tap.
            let _ = Command::new("sysctl")
                .args(["-qw", "net.ipv6.conf.all.disable_ipv6=1"])
                .status();
            sh("ip link set lo up && ip link set wisptap0 up && ip addr add 10.0.0.1/24 dev wisptap0");
            f(net);
        })
        .join()
        .unwrap();
        true
    }

    fn arp_request() -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&[0x08, 0x06]); // ARP
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
        f.extend_from_slice(&GUEST_MAC);
        f.extend_from_slice(&GUEST_IP);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&HOST_IP);
        f
    }

    fn is_arp_reply_for_guest(frame: &[u8]) -> bool {
        let eth = &frame[VNET_HDR_LEN..];
        eth.len() >= 42
            && eth[0..6] == GUEST_MAC
            && eth[12..14] == [8, 6]
            && eth[20..22] == [0, 2]
            && eth[28..32] == HOST_IP
    }

    #[test]
    fn arp_through_a_tap_in_a_private_netns_gets_a_reply() {
        in_private_netns(|net| {
            let mut g = TestGuest::new(Box::new(net));
            g.activate(2);
            assert_eq!(g.read_config(0, 6), GUEST_MAC);
            let frame = arp_request();
            let tx = g.alloc(frame.len());
            g.write(tx, &frame);
            g.add_chain(
                1,
                &[
                    (tx, VNET_HDR_LEN as u32, false),
                    (tx + 12, frame.len() as u32 - 12, false),
                ],
            );
            g.notify(1);
            assert_eq!(g.take_used(1).len(), 1);
            // No rx buffers yet: the reply waits in the device/tap. Now give buffers.
            let mut bufs = std::collections::HashMap::new();
            for _ in 0..8 {
                let a = g.alloc(2048);
                let head = g.add_chain(0, &[(a, 2048, true)]);
                bufs.insert(u32::from(head), a);
            }
            g.notify(0);
            let mut found = false;
            g.pump_until(|g| {
                for (id, len) in g.take_used(0) {
                    let f = g.read(bufs[&id], len as usize);
                    assert_eq!(&f[10..12], &[1, 0], "num_buffers is 1");
                    found |= is_arp_reply_for_guest(&f);
                }
                found
            });
            let m = g.transport.lock().unwrap().metrics().snapshot();
            assert_eq!(m.errors, 0);
            assert_eq!(m.bytes_written, frame.len() as u64);
        });
    }

    #[test]
    fn rate_limited_frames_wait_for_tokens_in_both_directions() {
        in_private_netns(|mut net| {
            // One frame per 50 ms to the tap and one per 300 ms to the guest, buckets starting
            // full (one frame each).
            let one_per = |ms| crate::rate_limiter::TokenBucket::new(1, 0, ms);
            net.set_tx_rate_limiter(None, one_per(50)).unwrap();
            net.set_rx_rate_limiter(None, one_per(300)).unwrap();
            let mut g = TestGuest::new(Box::new(net));
            g.activate(2);
            let frame = arp_request();
            for _ in 0..3 {
                let tx = g.alloc(frame.len());
                g.write(tx, &frame);
                g.add_chain(1, &[(tx, frame.len() as u32, false)]);
            }
            let start = std::time::Instant::now();
            g.notify(1);
            assert_eq!(g.take_used(1).len(), 1, "one token: one frame now");
            let mut bufs = std::collections::HashMap::new();
            for _ in 0..8 {
                let a = g.alloc(2048);
                let head = g.add_chain(0, &[(a, 2048, true)]);
                bufs.insert(u32::from(head), a);
            }
            g.notify(0);
            let (mut sent, mut replies) = (1, 0);
            g.pump_until(|g| {
                sent += g.take_used(1).len();
                for (id, len) in g.take_used(0) {
                    replies +=
                        usize::from(is_arp_reply_for_guest(&g.read(bufs[&id], len as usize)));
                }
                sent == 3 && replies >= 3
            });
            // Three replies need two more rx tokens: at least 600 ms (tx alone takes 100).
            assert!(start.elapsed() >= std::time::Duration::from_millis(580));
            let m = g.transport.lock().unwrap().metrics().snapshot();
            assert!(m.throttled >= 2, "{m:?}");
            assert_eq!(m.errors, 0);
        });
    }

    #[test]
    fn malformed_tx_chains_are_dropped_and_counted() {
        in_private_netns(|net| {
            let mut g = TestGuest::new(Box::new(net));
            g.activate(2);
            let a = g.alloc(64);
            g.add_chain(1, &[(a, 8, false)]); // shorter than the vnet header
            g.add_chain(1, &[(a, 64, true)]); // device-writable
            g.add_raw(1, 10, &[(u64::MAX - 4, 64, 0, 0)], 10); // outside guest memory
            g.notify(1);
            assert_eq!(g.take_used(1).len(), 3);
            assert_eq!(g.errors(), 3);
            // An rx buffer that is device-readable drops the frame, not the device.
            let frame = arp_request();
            let tx = g.alloc(frame.len());
            g.write(tx, &frame);
            let rx = g.alloc(2048);
            g.add_chain(0, &[(rx, 2048, false)]);
            g.add_chain(1, &[(tx, frame.len() as u32, false)]);
            g.notify(1);
            g.pump_until(|g| g.errors() == 4);
            let rx2 = g.alloc(2048);
            let head = g.add_chain(0, &[(rx2, 2048, true)]);
            g.add_chain(1, &[(tx, frame.len() as u32, false)]);
            g.notify(0);
            g.notify(1);
            g.pump_until(|g| g.take_used(0).iter().any(|&(id, _)| id == u32::from(head)));
        });
    }

    /// Firecracker's `mtu`: offered with VIRTIO_NET_F_MTU, at offset 10 of the config space
    /// (after mac, status and max_virtqueue_pairs); not offered without it.
    #[test]
    fn an_mtu_is_offered_in_config_space() {
        in_private_netns(|mut net| {
            net.set_mtu(Some(1400));
            let g = TestGuest::new(Box::new(net));
            assert_ne!(g.device_features() & (1 << F_MTU), 0);
            assert_eq!(g.read_config(10, 2), 1400u16.to_le_bytes());
        });
        in_private_netns(|net| {
            let g = TestGuest::new(Box::new(net));
            assert_eq!(g.device_features() & (1 << F_MTU), 0);
        });
    }
}
