//! virtio-vsock (virtio 1.2 §5.10): stream sockets between the guest (one CID) and host Unix
//! sockets (module `unix` describes the hybrid convention).
//!
//! Queues: 0 rx (device → driver), 1 tx (driver → device), 2 event: its only event,
//! TRANSPORT_RESET, is sent once after a snapshot restore (host connections do not survive
//! one; the guest drops its connections and reconnects, as under Firecracker).

mod connection;
pub mod packet;
#[cfg(test)]
mod tests;
mod unix;

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use event_manager::{EventOps, Events};
use log::{debug, warn};
use thiserror::Error;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::chain::{self, Chain};
use super::device::{QueueContext, VirtioDevice};
use super::metrics::DeviceMetrics;
use super::{device_id, VIRTIO_F_VERSION_1};
use connection::{Connection, State};
use packet::{op, Header, HDR_LEN, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use unix::UnixBackend;

const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const EVENT_QUEUE: usize = 2;
/// `virtio_vsock_event.id` for a transport reset (virtio 1.2 §5.10.6.7).
const EVENT_TRANSPORT_RESET: u32 = 0;
const QUEUE_SIZE: u16 = 256;
/// Largest payload we accept or send in one packet (Linux: VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
const MAX_PAYLOAD: usize = 64 * 1024;

/// Most control packets held for a guest that gives no rx buffers (bounds host memory).
const MAX_CONTROL: usize = 4096;

/// Errors creating a vsock device.
#[derive(Debug, Error)]
pub enum VsockError {
    /// CIDs 0-2 are reserved (§5.10.4) and the field is 32 bits wide in practice.
    #[error("invalid guest CID {0}: must be between 3 and 2^32 - 2")]
    Cid(u64),
    /// The host Unix socket could not be bound: a live socket or a non-socket is at the path,
    /// or the path is not usable.
    #[error("cannot listen on vsock socket {path}: {source}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: wisp_hostfs::HostFsError,
    },
}

/// (host port, guest port) identifies a stream.
type Key = (u32, u32);

/// A virtio socket device.
pub struct Vsock {
    guest_cid: u64,
    backend: UnixBackend,
    conns: HashMap<Key, Connection>,
    fds: HashMap<RawFd, Key>,
    /// Control packets waiting for an rx buffer.
    control: VecDeque<Header>,
    /// Send TRANSPORT_RESET on the next activation (a restored device).
    transport_reset_pending: bool,
    metrics: Arc<DeviceMetrics>,
}

impl Vsock {
    /// Guest CID `guest_cid`; host side listens on `uds_path`.
    pub fn new(guest_cid: u64, uds_path: impl AsRef<Path>) -> Result<Self, VsockError> {
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::Cid(guest_cid));
        }
        Ok(Vsock {
            guest_cid,
            backend: UnixBackend::bind(uds_path.as_ref())?,
            conns: HashMap::new(),
            fds: HashMap::new(),
            control: VecDeque::new(),
            transport_reset_pending: false,
            metrics: Arc::new(DeviceMetrics::default()),
        })
    }

    /// A restored device: its host connections are gone, so on activation the guest is told
    /// with a TRANSPORT_RESET event (virtio 1.2 §5.10.6.7) to drop its own and reconnect.
    pub fn reset_transport_on_activation(&mut self) {
        self.transport_reset_pending = true;
    }

    /// Writes TRANSPORT_RESET into the driver's next event buffer. Without one the event is
    /// lost (the driver always keeps event buffers posted; a warning says so otherwise).
    fn send_transport_reset(&mut self, ctx: &mut QueueContext) {
        let Some(queue) = ctx.queues.get_mut(EVENT_QUEUE) else {
            return;
        };
        let Some((head, chain)) = chain::pop_chain(queue, ctx.mem) else {
            warn!("vsock: no event buffer for TRANSPORT_RESET after restore");
            return;
        };
        let len = match chain {
            Ok(c) => chain::fill_writable(
                ctx.mem,
                &c,
                &EVENT_TRANSPORT_RESET.to_le_bytes(),
                &self.metrics,
                "vsock event",
            ),
            Err(e) => chain::refuse(&self.metrics, "vsock event", e),
        };
        chain::add_used(queue, ctx.mem, head, len);
        chain::notify_used(queue, ctx.mem, ctx.interrupt);
    }

    /// A reply to a guest packet `h` that has no connection state (RST).
    fn rst_for(&self, h: &Header) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            type_: TYPE_STREAM,
            op: op::RST,
            ..Header::default()
        }
    }

    fn remove_conn(&mut self, key: Key, ops: &mut EventOps) {
        if let Some(mut c) = self.conns.remove(&key) {
            self.fds.remove(&c.stream.as_raw_fd());
            c.deregister(ops);
            debug!("vsock: closed host port {} <-> guest port {}", key.0, key.1);
        }
    }

    fn insert_conn(&mut self, mut c: Connection, ops: &mut EventOps) {
        let key = (c.host_port, c.guest_port);
        c.update_interest(ops);
        self.fds.insert(c.stream.as_raw_fd(), key);
        self.conns.insert(key, c);
    }

    /// Handles one packet from the guest.
    fn handle_tx(&mut self, h: Header, payload: &[u8], ops: &mut EventOps) {
        if h.src_cid != self.guest_cid || h.dst_cid != HOST_CID {
            crate::guest_log!(
                log::Level::Warn,
                Some(&*self.metrics),
                "vsock: dropping packet {} -> {} (not guest -> host)",
                h.src_cid,
                h.dst_cid
            );
            self.metrics.error();
            return;
        }
        let key = (h.dst_port, h.src_port);
        if h.type_ != TYPE_STREAM {
            self.metrics.error();
            if h.op != op::RST {
                let rst = self.rst_for(&h);
                push_control(&mut self.control, &self.metrics, rst);
            }
            return;
        }
        if h.op == op::REQUEST {
            return self.guest_connect(h, ops);
        }
        let Some(c) = self.conns.get_mut(&key) else {
            // §5.10.6.4: packets for no connection are answered with RST (except RST).
            if h.op != op::RST {
                let rst = self.rst_for(&h);
                push_control(&mut self.control, &self.metrics, rst);
            }
            return;
        };
        c.update_peer_credit(&h);
        c.credit_requested = false;
        let mut reset = false;
        match h.op {
            op::RESPONSE if c.state == State::Connecting => {
                c.state = State::Established;
                let ok = format!("OK {}\n", c.host_port);
                if let Err(e) = c.push_handshake(ok.as_bytes()) {
                    warn!("vsock: {e}");
                    reset = true;
                }
            }
            op::RW if c.state == State::Established => {
                if let Err(e) = c.push_to_host(payload) {
                    crate::guest_log!(
                        log::Level::Warn,
                        Some(&*self.metrics),
                        "vsock: port {}: {e}",
                        c.host_port
                    );
                    self.metrics.error();
                    reset = true;
                }
            }
            // The host closed and we said so; the guest's data crossed our SHUTDOWN and has
            // nowhere to go. The guest's RST follows.
            op::RW if c.state == State::Closing => {}
            op::SHUTDOWN => {
                if h.flags & SHUTDOWN_RCV != 0 {
                    c.guest_no_recv = true;
                }
                if h.flags & SHUTDOWN_SEND != 0 {
                    c.guest_no_send = true;
                    let _ = c.flush_to_host();
                }
                // A full shutdown ends the stream: the guest waits for our RST (§5.10.6.5).
                reset = c.guest_no_recv && c.guest_no_send || c.state == State::Closing;
            }
            op::RST => {
                return self.remove_conn(key, ops);
            }
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST => {
                let hdr = c.header(op::CREDIT_UPDATE, 0, 0);
                push_control(&mut self.control, &self.metrics, hdr);
            }
            _ => {
                crate::guest_log!(
                    log::Level::Warn,
                    Some(&*self.metrics),
                    "vsock: unexpected op {} in state {:?}",
                    h.op,
                    c.state
                );
                self.metrics.error();
                reset = true;
            }
        }
        if reset {
            let rst = c.header(op::RST, 0, 0);
            push_control(&mut self.control, &self.metrics, rst);
            return self.remove_conn(key, ops);
        }
        if c.wants_credit_update() {
            let hdr = c.header(op::CREDIT_UPDATE, 0, 0);
            push_control(&mut self.control, &self.metrics, hdr);
        }
        c.update_interest(ops);
    }

    /// A guest REQUEST: connect to `<uds_path>_<port>` and answer RESPONSE or RST.
    fn guest_connect(&mut self, h: Header, ops: &mut EventOps) {
        let key = (h.dst_port, h.src_port);
        if self.conns.contains_key(&key) {
            crate::guest_log!(
                log::Level::Warn,
                Some(&*self.metrics),
                "vsock: duplicate REQUEST for host port {}",
                h.dst_port
            );
            self.metrics.error();
            let rst = self.rst_for(&h);
            push_control(&mut self.control, &self.metrics, rst);
            return self.remove_conn(key, ops);
        }
        match self.backend.connect_host_port(h.dst_port) {
            Ok(stream) => {
                let mut c = Connection::new(
                    stream,
                    self.guest_cid,
                    h.dst_port,
                    h.src_port,
                    State::Established,
                );
                c.update_peer_credit(&h);
                let hdr = c.header(op::RESPONSE, 0, 0);
                push_control(&mut self.control, &self.metrics, hdr);
                self.insert_conn(c, ops);
            }
            Err(e) => {
                debug!("vsock: guest connect to host port {}: {e}", h.dst_port);
                let rst = self.rst_for(&h);
                push_control(&mut self.control, &self.metrics, rst);
            }
        }
    }

    /// A host process finished `CONNECT <port>`: ask the guest.
    fn host_connect(
        &mut self,
        stream: std::os::unix::net::UnixStream,
        guest_port: u32,
        ops: &mut EventOps,
    ) {
        let conns = &self.conns;
        let host_port = self
            .backend
            .alloc_local_port(|p| conns.contains_key(&(p, guest_port)));
        let mut c = Connection::new(
            stream,
            self.guest_cid,
            host_port,
            guest_port,
            State::Connecting,
        );
        let hdr = c.header(op::REQUEST, 0, 0);
        push_control(&mut self.control, &self.metrics, hdr);
        self.insert_conn(c, ops);
    }

    fn process_tx(&mut self, ctx: &mut QueueContext, ops: &mut EventOps) {
        let Some(queue) = ctx.queues.get_mut(TX_QUEUE) else {
            return;
        };
        let mut used = false;
        let mut payload = Vec::new();
        while let Some((head, c)) = chain::pop_chain(queue, ctx.mem) {
            used = true;
            self.metrics.request();
            match read_packet(ctx.mem, c, &mut payload) {
                Ok(h) => {
                    self.metrics.written_bytes(payload.len());
                    self.handle_tx(h, &payload, ops);
                }
                Err(e) => {
                    crate::guest_log!(log::Level::Warn, Some(&*self.metrics), "vsock: tx: {e}");
                    self.metrics.error();
                }
            }
            chain::add_used(queue, ctx.mem, head, 0);
        }
        if used {
            chain::notify_used(queue, ctx.mem, ctx.interrupt);
        }
    }

    /// Fills rx buffers: control packets first, then host data within the guest's credit.
    fn process_rx(&mut self, ctx: &mut QueueContext, ops: &mut EventOps) {
        let Some(queue) = ctx.queues.get_mut(RX_QUEUE) else {
            return;
        };
        if !queue.ready() {
            return;
        }
        let mut used = false;
        let mut buf = vec![0u8; MAX_PAYLOAD];
        // Connections with data take turns, one packet each per round, so one busy stream
        // cannot starve the others.
        let mut round: Vec<Key> = Vec::new();
        loop {
            let next_conn = if self.control.is_empty() {
                self.next_sender(&mut round)
            } else {
                None
            };
            if self.control.is_empty() && next_conn.is_none() {
                break;
            }
            let Some((head, chain)) = chain::pop_chain(queue, ctx.mem) else {
                break;
            };
            used = true;
            let chain = match chain {
                Ok(c) if c.readable.is_empty() && chain::total_len(&c.writable) >= HDR_LEN => c,
                Ok(_) => {
                    self.rx_error(
                        queue,
                        ctx.mem,
                        head,
                        "rx buffer too short or device-readable",
                    );
                    continue;
                }
                Err(e) => {
                    self.rx_error(queue, ctx.mem, head, &e.to_string());
                    continue;
                }
            };
            if let Some(h) = self.control.pop_front() {
                let len = write_packet(ctx.mem, &chain, &h, &[]).unwrap_or(0);
                chain::add_used(queue, ctx.mem, head, len);
                continue;
            }
            let Some(key) = next_conn else { break };
            let room = (chain::total_len(&chain.writable) - HDR_LEN).min(MAX_PAYLOAD);
            if room == 0 {
                // Fine for control packets, useless for data; a zero-length read would look
                // like EOF from the host.
                self.rx_error(queue, ctx.mem, head, "rx buffer has no room for payload");
                continue;
            }
            let Some(c) = self.conns.get_mut(&key) else {
                break;
            };
            let want = room.min(c.peer_credit() as usize);
            let hdr = match c.stream.read(&mut buf[..want]) {
                Ok(0) => {
                    // Host closed: tell the guest neither direction has more (§5.10.6.5).
                    c.host_readable = false;
                    c.state = State::Closing;
                    Some((c.header(op::SHUTDOWN, 0, SHUTDOWN_RCV | SHUTDOWN_SEND), 0))
                }
                Ok(n) => {
                    c.tx_cnt += std::num::Wrapping(n as u32);
                    Some((c.header(op::RW, n as u32, 0), n))
                }
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted =>
                {
                    c.host_readable = false;
                    None
                }
                Err(e) => {
                    warn!("vsock: host read on port {}: {e}", c.host_port);
                    Some((c.header(op::RST, 0, 0), 0))
                }
            };
            if c.can_send_to_guest() && c.peer_credit() == 0 && !c.credit_requested {
                c.credit_requested = true;
                let req = c.header(op::CREDIT_REQUEST, 0, 0);
                push_control(&mut self.control, &self.metrics, req);
            }
            c.update_interest(ops);
            match hdr {
                Some((h, n)) => {
                    let len = write_packet(ctx.mem, &chain, &h, &buf[..n]).unwrap_or(0);
                    self.metrics.read_bytes(n);
                    chain::add_used(queue, ctx.mem, head, len);
                    if h.op == op::RST {
                        self.remove_conn(key, ops);
                    }
                }
                None => queue.go_to_previous_position(),
            }
        }
        if used {
            chain::notify_used(queue, ctx.mem, ctx.interrupt);
        }
    }

    /// The next connection of this round that has host data and guest credit.
    fn next_sender(&self, round: &mut Vec<Key>) -> Option<Key> {
        let eligible = |k: &Key| {
            self.conns
                .get(k)
                .is_some_and(|c| c.can_send_to_guest() && c.peer_credit() > 0)
        };
        loop {
            if round.is_empty() {
                round.extend(self.conns.keys().filter(|k| eligible(k)));
                if round.is_empty() {
                    return None;
                }
            }
            if let Some(k) = round.pop().filter(|k| eligible(k)) {
                return Some(k);
            }
        }
    }

    fn rx_error(&self, queue: &mut Queue, mem: &GuestMemoryMmap, head: u16, what: &str) {
        crate::guest_log!(log::Level::Warn, Some(&*self.metrics), "vsock: rx: {what}");
        self.metrics.error();
        chain::add_used(queue, mem, head, 0);
    }
}

/// Queues a control packet for the guest, unless a guest that never drains its rx queue has
/// already made us queue `MAX_CONTROL` of them.
fn push_control(control: &mut VecDeque<Header>, metrics: &DeviceMetrics, h: Header) {
    if control.len() >= MAX_CONTROL {
        crate::guest_log!(
            log::Level::Warn,
            Some(metrics),
            "vsock: guest does not drain its rx queue; dropping op {}",
            h.op
        );
        metrics.error();
        return;
    }
    control.push_back(h);
}

/// Reads header and payload of a tx chain into `payload`.
fn read_packet(
    mem: &GuestMemoryMmap,
    c: Result<Chain, chain::ChainError>,
    payload: &mut Vec<u8>,
) -> Result<Header, String> {
    let c = c.map_err(|e| e.to_string())?;
    if !c.writable.is_empty() {
        return Err("tx chain has device-writable buffers".into());
    }
    let mut hb = [0u8; HDR_LEN];
    chain::read_at(mem, &c.readable, 0, &mut hb).map_err(|e| e.to_string())?;
    let h = Header::decode(&hb);
    let len = h.len as usize;
    if len > MAX_PAYLOAD || HDR_LEN + len > chain::total_len(&c.readable) {
        return Err(format!(
            "payload length {len} exceeds the chain or {MAX_PAYLOAD}"
        ));
    }
    payload.resize(len, 0);
    chain::read_at(mem, &c.readable, HDR_LEN, payload).map_err(|e| e.to_string())?;
    Ok(h)
}

/// Writes a packet into an rx chain; returns the used length.
fn write_packet(
    mem: &GuestMemoryMmap,
    c: &Chain,
    h: &Header,
    payload: &[u8],
) -> Result<u32, String> {
    chain::write_at(mem, &c.writable, 0, &h.encode()).map_err(|e| e.to_string())?;
    chain::write_at(mem, &c.writable, HDR_LEN, payload).map_err(|e| e.to_string())?;
    Ok((HDR_LEN + payload.len()) as u32)
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_id::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    /// `struct virtio_vsock_config` (§5.10.4): the guest CID.
    fn config_space(&self) -> Vec<u8> {
        self.guest_cid.to_le_bytes().to_vec()
    }

    fn activate(&mut self, ctx: &mut QueueContext, ops: &mut EventOps) -> Result<(), String> {
        self.backend.register(ops);
        if std::mem::take(&mut self.transport_reset_pending) {
            self.send_transport_reset(ctx);
        }
        Ok(())
    }

    fn reset(&mut self, ops: &mut EventOps) {
        self.backend.deregister(ops);
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove_conn(key, ops);
        }
        self.control.clear();
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext, ops: &mut EventOps) {
        match index {
            TX_QUEUE => {
                self.process_tx(ctx, ops);
                self.process_rx(ctx, ops);
            }
            RX_QUEUE => self.process_rx(ctx, ops),
            _ => {}
        }
    }

    fn process_backend(&mut self, events: Events, ctx: &mut QueueContext, ops: &mut EventOps) {
        let fd = events.fd();
        if self.backend.owns(fd) {
            for (stream, port) in self.backend.process(fd, ops) {
                self.host_connect(stream, port, ops);
            }
        } else if let Some(key) = self.fds.get(&fd).copied() {
            let Some(c) = self.conns.get_mut(&key) else {
                return;
            };
            let set = events.event_set();
            if set.intersects(event_manager::EventSet::OUT) {
                if let Err(e) = c.flush_to_host() {
                    warn!("vsock: {e}");
                    let rst = c.header(op::RST, 0, 0);
                    push_control(&mut self.control, &self.metrics, rst);
                    self.remove_conn(key, ops);
                    return self.process_rx(ctx, ops);
                }
                if c.wants_credit_update() {
                    let hdr = c.header(op::CREDIT_UPDATE, 0, 0);
                    push_control(&mut self.control, &self.metrics, hdr);
                }
            }
            if set.intersects(
                event_manager::EventSet::IN
                    | event_manager::EventSet::HANG_UP
                    | event_manager::EventSet::READ_HANG_UP
                    | event_manager::EventSet::ERROR,
            ) && c.state == State::Established
            {
                c.host_readable = true;
            }
            c.update_interest(ops);
        }
        self.process_rx(ctx, ops);
    }

    fn metrics(&self) -> &Arc<DeviceMetrics> {
        &self.metrics
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
