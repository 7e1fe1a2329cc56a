//! The vsock device driven as a guest driver would, against real Unix sockets.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use super::packet::{op, Header, HDR_LEN, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::Vsock;
use crate::virtio::test_driver::{TempFile, TestGuest};

const CID: u64 = 3;
const RX: usize = 0;
const TX: usize = 1;
/// A bound on a hang (never a timing assertion).
const HANG: Duration = Duration::from_secs(10);

struct VsockGuest {
    g: TestGuest,
    rx_bufs: HashMap<u32, u64>,
    /// Packets received but not yet asked for.
    backlog: Vec<(Header, Vec<u8>)>,
    path: std::path::PathBuf,
    _dir: TempFile,
}

impl VsockGuest {
    fn new() -> Self {
        Self::with_rx(8)
    }

    fn with_rx(n: usize) -> Self {
        // A unique path: the temp file only reserves the name.
        let dir = TempFile::new("vsock", b"");
        let path = dir.0.with_extension("sock");
        let dev = Vsock::new(CID, &path).unwrap();
        let mut g = TestGuest::new(Box::new(dev));
        assert_eq!(g.read_config(0, 8), CID.to_le_bytes());
        g.activate(3);
        let mut v = VsockGuest {
            g,
            rx_bufs: HashMap::new(),
            backlog: Vec::new(),
            path,
            _dir: dir,
        };
        v.give_rx(n, 4096);
        v
    }

    fn give_rx(&mut self, n: usize, size: u32) {
        for _ in 0..n {
            let a = self.g.alloc(size as usize);
            let head = self.g.add_chain(RX, &[(a, size, true)]);
            self.rx_bufs.insert(u32::from(head), a);
        }
        self.g.notify(RX as u32);
    }

    fn hdr(&self, op: u16, guest_port: u32, host_port: u32, len: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port: guest_port,
            dst_port: host_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 64 * 1024,
            fwd_cnt: 0,
        }
    }

    fn send(&mut self, h: Header, payload: &[u8]) {
        let a = self.g.alloc(HDR_LEN + payload.len());
        self.g.write(a, &h.encode());
        self.g.write(a + HDR_LEN as u64, payload);
        if payload.is_empty() {
            self.g.add_chain(TX, &[(a, HDR_LEN as u32, false)]);
        } else {
            self.g.add_chain(
                TX,
                &[
                    (a, HDR_LEN as u32, false),
                    (a + HDR_LEN as u64, payload.len() as u32, false),
                ],
            );
        }
        self.g.notify(TX as u32);
        assert!(!self.g.take_used(TX).is_empty());
    }

    /// Runs the loop until a packet with `op` arrives and returns it; other packets wait in
    /// the backlog. Buffers returned empty (refused by the device) are skipped.
    fn recv_op(&mut self, want: u16) -> (Header, Vec<u8>) {
        let bufs = self.rx_bufs.clone();
        let mut backlog = std::mem::take(&mut self.backlog);
        let mut consumed = 0;
        self.g.pump_until(|g| {
            for (id, len) in g.take_used(RX) {
                consumed += 1;
                if (len as usize) < HDR_LEN {
                    continue;
                }
                let data = g.read(bufs[&id], len as usize);
                let mut hb = [0u8; HDR_LEN];
                hb.copy_from_slice(&data[..HDR_LEN]);
                backlog.push((Header::decode(&hb), data[HDR_LEN..].to_vec()));
            }
            backlog.iter().any(|(h, _)| h.op == want)
        });
        let at = backlog.iter().position(|(h, _)| h.op == want).unwrap();
        let got = backlog.remove(at);
        self.backlog = backlog;
        self.give_rx(consumed, 4096);
        got
    }
}

fn read_line(s: &mut UnixStream) -> String {
    s.set_read_timeout(Some(HANG)).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

#[test]
fn host_initiated_connection_handshakes_and_carries_data_both_ways() {
    let mut v = VsockGuest::new();
    let mut host = UnixStream::connect(&v.path).unwrap();
    host.write_all(b"CONNECT 52\n").unwrap();
    let (req, _) = v.recv_op(op::REQUEST);
    assert_eq!(
        (req.src_cid, req.dst_cid, req.dst_port),
        (HOST_CID, CID, 52)
    );
    let host_port = req.src_port;
    // The guest accepts.
    v.send(v.hdr(op::RESPONSE, 52, host_port, 0), &[]);
    assert_eq!(read_line(&mut host), format!("OK {host_port}\n"));
    // Host -> guest.
    host.write_all(b"ping").unwrap();
    let (rw, data) = v.recv_op(op::RW);
    assert_eq!((rw.src_port, rw.dst_port, rw.len), (host_port, 52, 4));
    assert_eq!(data, b"ping");
    // Guest -> host.
    v.send(v.hdr(op::RW, 52, host_port, 4), b"pong");
    let mut buf = [0u8; 4];
    host.set_read_timeout(Some(HANG)).unwrap();
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    // Host closes: the guest is told neither direction has more.
    drop(host);
    let (sd, _) = v.recv_op(op::SHUTDOWN);
    assert_eq!(sd.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    v.send(v.hdr(op::RST, 52, host_port, 0), &[]);
    assert_eq!(v.g.errors(), 0);
}

#[test]
fn guest_initiated_connection_reaches_the_port_listener() {
    let mut v = VsockGuest::new();
    let mut listener_path = v.path.clone().into_os_string();
    listener_path.push("_1234");
    let listener = UnixListener::bind(&listener_path).unwrap();
    v.send(v.hdr(op::REQUEST, 5000, 1234, 0), &[]);
    let (resp, _) = v.recv_op(op::RESPONSE);
    assert_eq!((resp.src_port, resp.dst_port), (1234, 5000));
    let (mut host, _) = listener.accept().unwrap();
    v.send(v.hdr(op::RW, 5000, 1234, 5), b"hello");
    let mut buf = [0u8; 5];
    host.set_read_timeout(Some(HANG)).unwrap();
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    host.write_all(b"world").unwrap();
    let (_, data) = v.recv_op(op::RW);
    assert_eq!(data, b"world");
    // The guest closes both directions: the device answers RST and closes the host side.
    let mut sd = v.hdr(op::SHUTDOWN, 5000, 1234, 0);
    sd.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    v.send(sd, &[]);
    v.recv_op(op::RST);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let _ = std::fs::remove_file(&listener_path);
}

#[test]
fn guest_connect_to_a_port_nobody_listens_on_is_reset() {
    let mut v = VsockGuest::new();
    v.send(v.hdr(op::REQUEST, 5001, 999, 0), &[]);
    let (rst, _) = v.recv_op(op::RST);
    assert_eq!((rst.src_port, rst.dst_port), (999, 5001));
}

#[test]
fn packets_for_unknown_connections_get_rst() {
    let mut v = VsockGuest::new();
    v.send(v.hdr(op::RW, 7, 8, 3), b"abc");
    let (rst, _) = v.recv_op(op::RST);
    assert_eq!((rst.src_port, rst.dst_port), (8, 7));
}

#[test]
fn host_data_respects_the_guest_credit() {
    let mut v = VsockGuest::new();
    let mut listener_path = v.path.clone().into_os_string();
    listener_path.push("_77");
    let listener = UnixListener::bind(&listener_path).unwrap();
    let mut req = v.hdr(op::REQUEST, 6000, 77, 0);
    req.buf_alloc = 100;
    v.send(req, &[]);
    v.recv_op(op::RESPONSE);
    let (mut host, _) = listener.accept().unwrap();
    host.write_all(&[7u8; 300]).unwrap();
    let (rw, data) = v.recv_op(op::RW);
    assert_eq!(rw.len, 100, "no more than the guest's buf_alloc");
    assert_eq!(data.len(), 100);
    v.recv_op(op::CREDIT_REQUEST);
    // The guest consumed 100 bytes and says so.
    let mut upd = v.hdr(op::CREDIT_UPDATE, 6000, 77, 0);
    upd.buf_alloc = 100;
    upd.fwd_cnt = 100;
    v.send(upd, &[]);
    let (rw, _) = v.recv_op(op::RW);
    assert_eq!(rw.len, 100);
    let _ = std::fs::remove_file(&listener_path);
}

#[test]
fn malformed_vsock_packets_are_counted_and_the_device_keeps_working() {
    let mut v = VsockGuest::new();
    let a = v.g.alloc(64);
    v.g.add_chain(TX, &[(a, 20, false)]); // header too short
    v.g.add_chain(TX, &[(a, 64, true)]); // device-writable tx buffer
    let mut h = v.hdr(op::RW, 1, 2, 1000); // payload longer than the chain
    v.g.write(a, &h.encode());
    v.g.add_chain(TX, &[(a, HDR_LEN as u32, false)]);
    h = v.hdr(op::REQUEST, 1, 2, 0);
    h.src_cid = 9; // spoofed source CID
    let b = v.g.alloc(HDR_LEN);
    v.g.write(b, &h.encode());
    v.g.add_chain(TX, &[(b, HDR_LEN as u32, false)]);
    v.g.add_raw(TX, 100, &[(u64::MAX - 8, 44, 0, 0)], 100); // outside guest memory
    v.g.notify(TX as u32);
    assert_eq!(v.g.take_used(TX).len(), 5);
    assert_eq!(v.g.errors(), 5);
    // The device still connects guests afterwards.
    v.send(v.hdr(op::REQUEST, 5002, 998, 0), &[]);
    v.recv_op(op::RST);
}

#[test]
fn rx_buffer_too_small_for_a_header_is_returned_empty() {
    let mut v = VsockGuest::with_rx(0);
    let small = v.g.alloc(16);
    v.g.add_chain(RX, &[(small, 16, true)]);
    v.give_rx(1, 4096);
    v.send(v.hdr(op::REQUEST, 5003, 997, 0), &[]);
    let (rst, _) = v.recv_op(op::RST);
    assert_eq!(rst.dst_port, 5003);
    assert_eq!(v.g.errors(), 1);
}

/// A snapshot of a live device restored into a new one (a new process would reopen its
/// socket): the transport's registers and queues come back, the device is activated on the
/// event loop, and the guest hears TRANSPORT_RESET on its event queue (its host connections
/// are gone), while rx and tx go on from where they were.
#[test]
fn a_restored_device_tells_the_guest_its_transport_was_reset() {
    use crate::virtio::MmioTransport;
    use event_manager::{EventManager, SubscriberOps};
    use std::sync::{Arc, Mutex};

    let mut v = VsockGuest::new();
    let event_buf = v.g.alloc(8);
    v.g.write(event_buf, &[0xff; 8]);
    let head = v.g.add_chain(2, &[(event_buf, 8, true)]);
    let saved = v.g.transport.lock().unwrap().save_state();
    assert!(v.g.take_used(2).is_empty(), "no event before the restore");

    let dir = TempFile::new("vsock-restored", b"");
    let mut dev = Vsock::new(CID, dir.0.with_extension("sock")).unwrap();
    dev.reset_transport_on_activation();
    let mut restored = MmioTransport::new(v.g.mem.clone(), Box::new(dev)).unwrap();
    restored.restore_state(&saved).unwrap();
    assert_eq!(
        restored.save_state(),
        saved,
        "registers and queues as saved"
    );
    let restored = Arc::new(Mutex::new(restored));
    let mut em: EventManager<Arc<Mutex<MmioTransport>>> = EventManager::new().unwrap();
    em.add_subscriber(restored);
    for _ in 0..100 {
        if em.run_with_timeout(0).unwrap() == 0 {
            break;
        }
    }
    assert_eq!(v.g.take_used(2), vec![(u32::from(head), 4)]);
    // virtio_vsock_event.id = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (0).
    assert_eq!(v.g.read(event_buf, 4), 0u32.to_le_bytes());
}

#[test]
fn a_saved_state_of_another_device_type_is_refused() {
    use crate::virtio::{MmioTransport, Rng};
    let v = VsockGuest::new();
    let mut saved = v.g.transport.lock().unwrap().save_state();
    let mut rng = MmioTransport::new(v.g.mem.clone(), Box::new(Rng::new())).unwrap();
    assert!(rng.restore_state(&saved).is_err());
    saved.queues.pop();
    let dir = TempFile::new("vsock-short", b"");
    let dev = Vsock::new(CID, dir.0.with_extension("sock")).unwrap();
    let mut vsock = MmioTransport::new(v.g.mem.clone(), Box::new(dev)).unwrap();
    let before = vsock.save_state();
    assert!(vsock.restore_state(&saved).is_err());
    assert_eq!(
        vsock.save_state(),
        before,
        "a refused state changes nothing"
    );
}
