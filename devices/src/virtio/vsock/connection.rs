//! One vsock stream between a guest port and a host Unix socket, with the credit accounting
//! of virtio 1.2 §5.10.6.3 in both directions.

use std::io::{ErrorKind, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use event_manager::{EventOps, EventSet, Events};
use log::warn;

use super::packet::{Header, HOST_CID, TYPE_STREAM};

/// Our receive buffer per connection: the most guest data we hold for a slow host reader.
pub const BUF_ALLOC: u32 = 256 * 1024;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST sent to the guest, waiting for RESPONSE.
    Connecting,
    /// Data flows both ways.
    Established,
    /// We sent SHUTDOWN after the host closed; waiting for the guest's RST.
    Closing,
}

/// A live connection.
#[derive(Debug)]
pub struct Connection {
    pub stream: UnixStream,
    pub guest_cid: u64,
    pub host_port: u32,
    pub guest_port: u32,
    pub state: State,
    /// Guest's receive buffer and consumption, from its latest header.
    pub peer_buf_alloc: u32,
    pub peer_fwd_cnt: Wrapping<u32>,
    /// Bytes sent to the guest, ever.
    pub tx_cnt: Wrapping<u32>,
    /// Bytes received from the guest, ever.
    pub rx_cnt: Wrapping<u32>,
    /// Bytes of guest data handed to the host socket, ever.
    pub fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    pub fwd_cnt_reported: Wrapping<u32>,
    /// Bytes for the host socket not written yet: guest data, possibly after our handshake.
    pub to_host: Vec<u8>,
    /// Leading bytes of `to_host` that are our `OK <port>\n`, not guest data: they do not
    /// count in `fwd_cnt`.
    handshake_left: usize,
    /// The host socket may have data for the guest (it reported readable, we have not seen
    /// WouldBlock since); while set we do not poll for EPOLLIN.
    pub host_readable: bool,
    /// The guest said it will receive no more (SHUTDOWN with RCV).
    pub guest_no_recv: bool,
    /// The guest said it will send no more: shut the host socket's write side once flushed.
    pub guest_no_send: bool,
    /// We asked the guest for credit and have not heard back.
    pub credit_requested: bool,
    /// Events currently registered for `stream` (empty: not registered).
    pub interest: EventSet,
}

impl Connection {
    pub fn new(
        stream: UnixStream,
        guest_cid: u64,
        host_port: u32,
        guest_port: u32,
        state: State,
    ) -> Self {
        Connection {
            stream,
            guest_cid,
            host_port,
            guest_port,
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            tx_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            fwd_cnt_reported: Wrapping(0),
            to_host: Vec::new(),
            handshake_left: 0,
            host_readable: false,
            guest_no_recv: false,
            guest_no_send: false,
            credit_requested: false,
            interest: EventSet::empty(),
        }
    }

    /// A header from us (host) to the guest on this connection, carrying our credit.
    pub fn header(&mut self, op: u16, len: u32, flags: u32) -> Header {
        self.fwd_cnt_reported = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.host_port,
            dst_port: self.guest_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Records the guest's credit from any header it sent on this connection.
    pub fn update_peer_credit(&mut self, h: &Header) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = Wrapping(h.fwd_cnt);
    }

    /// Bytes we may still send the guest (§5.10.6.3.1); 0 if its numbers make no sense.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the guest's idea of our free space is low enough to deserve a CREDIT_UPDATE.
    pub fn wants_credit_update(&self) -> bool {
        let guest_view_used = (self.rx_cnt - self.fwd_cnt_reported).0;
        self.fwd_cnt != self.fwd_cnt_reported && guest_view_used >= BUF_ALLOC / 2
    }

    /// Whether data from the host socket could be sent now.
    pub fn can_send_to_guest(&self) -> bool {
        self.state == State::Established && self.host_readable && !self.guest_no_recv
    }

    /// Takes guest data: writes what the host socket accepts, keeps the rest.
    /// Err if the guest overran the credit we gave it.
    pub fn push_to_host(&mut self, data: &[u8]) -> Result<(), String> {
        self.rx_cnt += Wrapping(data.len() as u32);
        self.to_host.extend_from_slice(data);
        if self.to_host.len() > BUF_ALLOC as usize {
            return Err(format!(
                "guest overran its credit ({} bytes buffered, buf_alloc {BUF_ALLOC})",
                self.to_host.len()
            ));
        }
        self.flush_to_host()
    }

    /// Queues the hybrid-vsock handshake reply for the host, outside the credit accounting.
    pub fn push_handshake(&mut self, line: &[u8]) -> Result<(), String> {
        self.handshake_left += line.len();
        self.to_host.splice(0..0, line.iter().copied());
        self.flush_to_host()
    }

    /// Writes buffered guest data to the host socket until it would block.
    pub fn flush_to_host(&mut self) -> Result<(), String> {
        while !self.to_host.is_empty() {
            match self.stream.write(&self.to_host) {
                Ok(0) => return Err("host socket closed".into()),
                Ok(n) => {
                    self.to_host.drain(..n);
                    let ours = n.min(self.handshake_left);
                    self.handshake_left -= ours;
                    self.fwd_cnt += Wrapping((n - ours) as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("host socket write: {e}")),
            }
        }
        if self.to_host.is_empty() && self.guest_no_send {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    /// Registers exactly the events this connection needs now: IN while we wait for host data
    /// we could forward, OUT while guest data waits for the host. Level-triggered epoll never
    /// spins on a condition we cannot act on.
    pub fn update_interest(&mut self, ops: &mut EventOps) {
        let mut want = EventSet::empty();
        if self.state == State::Established && !self.host_readable && !self.guest_no_recv {
            want |= EventSet::IN;
        }
        if !self.to_host.is_empty() {
            want |= EventSet::OUT;
        }
        if want == self.interest {
            return;
        }
        let result = if self.interest.is_empty() {
            ops.add(Events::new(&self.stream, want))
        } else if want.is_empty() {
            ops.remove(Events::new(&self.stream, self.interest))
        } else {
            ops.modify(Events::new(&self.stream, want))
        };
        match result {
            Ok(()) => self.interest = want,
            Err(e) => warn!(
                "vsock: cannot update interest of port {}: {e}",
                self.host_port
            ),
        }
    }

    /// Deregisters the socket before the connection is dropped (a closed fd left registered
    /// would confuse the event manager when the number is reused).
    pub fn deregister(&mut self, ops: &mut EventOps) {
        if !self.interest.is_empty() {
            let _ = ops.remove(Events::new(&self.stream, self.interest));
            self.interest = EventSet::empty();
        }
    }
}
