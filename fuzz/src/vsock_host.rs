//! The host side of virtio-vsock for the fuzzer: host processes as Unix sockets, in the
//! hybrid convention the device speaks (`<uds_path>` for host-initiated connections,
//! `<uds_path>_<port>` for guest-initiated ones).
//!
//! Per round the input says what the host does (one action byte, then its operands):
//! - bit 0: accept the guest's connections to [`HOST_PORTS`] and write a u8-length payload
//!   into each accepted stream (host → guest data, which the device reads within the guest's
//!   credit);
//! - bit 1: connect to `<uds_path>` and write `CONNECT <u16 port>\n` (a host-initiated stream);
//! - bit 2: write a u8-length payload into every host stream (a handshake line in progress,
//!   or data);
//! - bit 3: close every host stream.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use crate::input::Input;

/// Host ports where a host process listens for guest connections.
pub const HOST_PORTS: [u32; 2] = [52, 1024];
/// The guest CID the device is given.
pub const GUEST_CID: u64 = 3;

/// Host listeners (kept for the whole process) and the streams of the current run.
#[derive(Debug)]
pub struct VsockHost {
    pub uds_path: PathBuf,
    listeners: Vec<UnixListener>,
    streams: Vec<UnixStream>,
}

impl VsockHost {
    /// Sockets in the process's scratch directory.
    pub fn new() -> VsockHost {
        let uds_path = crate::scratch_dir().join("v.sock");
        let listeners = HOST_PORTS
            .iter()
            .map(|p| {
                let path = PathBuf::from(format!("{}_{p}", uds_path.display()));
                let _ = std::fs::remove_file(&path);
                let l = UnixListener::bind(&path).expect("bind host port listener");
                l.set_nonblocking(true).expect("non-blocking listener");
                l
            })
            .collect();
        VsockHost {
            uds_path,
            listeners,
            streams: Vec::new(),
        }
    }

    /// One round of host actions (module doc).
    pub fn act(&mut self, inp: &mut Input) {
        let action = inp.u8();
        if action & 1 != 0 {
            let n = usize::from(inp.u8());
            let payload = inp.bytes(n).to_vec();
            for l in &self.listeners {
                while let Ok((mut s, _)) = l.accept() {
                    let _ = s.set_nonblocking(true);
                    let _ = s.write(&payload);
                    self.streams.push(s);
                }
            }
        }
        if action & 2 != 0 {
            let port = inp.u16();
            if let Ok(mut s) = UnixStream::connect(&self.uds_path) {
                let _ = s.set_nonblocking(true);
                let _ = s.write(format!("CONNECT {port}\n").as_bytes());
                self.streams.push(s);
            }
        }
        if action & 4 != 0 {
            let n = usize::from(inp.u8());
            let payload = inp.bytes(n).to_vec();
            for s in &mut self.streams {
                let _ = s.write(&payload);
            }
        }
        if action & 8 != 0 {
            self.streams.clear();
        }
    }

    /// Ends a run: drops the host streams and refuses connections the guest left pending.
    pub fn finish(&mut self) {
        self.streams.clear();
        for l in &self.listeners {
            while l.accept().is_ok() {}
        }
    }
}

impl Default for VsockHost {
    fn default() -> Self {
        VsockHost::new()
    }
}
