//! The host side of vsock as Unix sockets, in Firecracker's "hybrid vsock" convention:
//! - host-initiated: a host process connects to `uds_path` and writes `CONNECT <port>\n`; the
//!   device opens a stream to guest port `<port>` and, once the guest accepts, answers
//!   `OK <host port>\n` before any data;
//! - guest-initiated: a guest connection to host port P becomes a Unix connection to
//!   `<uds_path>_P`, where a host process listens.
//!
//! Both paths go through wisp-hostfs: the listener is never bound over a live socket or a
//! non-socket, is created 0600 and is removed at the end only if the path still names it; a
//! guest's connect reaches only a socket, never through a symbolic link.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use wisp_hostfs::{BoundSocket, HostFsError, SocketOptions};

use event_manager::{EventOps, EventSet, Events};
use log::warn;

use super::VsockError;

/// Longest acceptable handshake line ("CONNECT 4294967295\n" is 19 bytes).
const MAX_HANDSHAKE: usize = 32;
/// Host ports for host-initiated connections start here, clear of well-known guest ports.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// The listening socket and the host connections still in their handshake.
#[derive(Debug)]
pub struct UnixBackend {
    uds_path: PathBuf,
    listener: UnixListener,
    /// Removes `uds_path` on drop, if it still names our socket.
    _socket: BoundSocket,
    listening: bool,
    handshakes: HashMap<RawFd, (UnixStream, Vec<u8>)>,
    next_local_port: u32,
}

impl UnixBackend {
    /// Binds `uds_path`, 0600: a stale socket file left by a dead process is replaced; a live
    /// socket or anything that is not a socket is refused and left alone.
    pub fn bind(uds_path: &Path) -> Result<Self, VsockError> {
        let bind_err = |source| VsockError::Bind {
            path: uds_path.to_path_buf(),
            source,
        };
        let (listener, socket) =
            wisp_hostfs::bind_listener(uds_path, &SocketOptions::default()).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(|err| {
            bind_err(HostFsError::Io {
                op: "set non-blocking",
                err,
            })
        })?;
        Ok(UnixBackend {
            uds_path: uds_path.to_path_buf(),
            listener,
            _socket: socket,
            listening: false,
            handshakes: HashMap::new(),
            next_local_port: FIRST_LOCAL_PORT,
        })
    }

    /// Starts accepting host connections.
    pub fn register(&mut self, ops: &mut EventOps) {
        if !self.listening {
            match ops.add(Events::new(&self.listener, EventSet::IN)) {
                Ok(()) => self.listening = true,
                Err(e) => warn!("vsock: cannot register {}: {e}", self.uds_path.display()),
            }
        }
    }

    /// Stops accepting and drops half-done handshakes (device reset).
    pub fn deregister(&mut self, ops: &mut EventOps) {
        if self.listening {
            let _ = ops.remove(Events::new(&self.listener, EventSet::IN));
            self.listening = false;
        }
        for (_, (stream, _)) in self.handshakes.drain() {
            let _ = ops.remove(Events::new(&stream, EventSet::IN));
        }
    }

    /// Whether `fd` is the listener or a handshake in progress.
    pub fn owns(&self, fd: RawFd) -> bool {
        fd == self.listener.as_raw_fd() || self.handshakes.contains_key(&fd)
    }

    /// Handles readiness of the listener or of a handshake; returns the streams whose
    /// `CONNECT <port>\n` is complete, with the guest port they want.
    pub fn process(&mut self, fd: RawFd, ops: &mut EventOps) -> Vec<(UnixStream, u32)> {
        if fd == self.listener.as_raw_fd() {
            self.accept_all(ops);
            return Vec::new();
        }
        let Some((stream, line)) = self.handshakes.get_mut(&fd) else {
            return Vec::new();
        };
        let mut byte = [0u8; 1];
        // One byte at a time: bytes after the newline are connection data and stay in the
        // socket for the guest.
        let outcome = loop {
            match stream.read(&mut byte) {
                Ok(0) => break Err("host closed during handshake".to_string()),
                Ok(_) if byte[0] == b'\n' => break parse_connect(line),
                Ok(_) if line.len() >= MAX_HANDSHAKE => break Err("handshake line too long".into()),
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Vec::new(),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(format!("handshake read: {e}")),
            }
        };
        let Some((stream, _)) = self.handshakes.remove(&fd) else {
            return Vec::new();
        };
        let _ = ops.remove(Events::new(&stream, EventSet::IN));
        match outcome {
            Ok(port) => vec![(stream, port)],
            Err(e) => {
                warn!("vsock {}: {e}", self.uds_path.display());
                Vec::new()
            }
        }
    }

    fn accept_all(&mut self, ops: &mut EventOps) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nonblocking(true) {
                        warn!("vsock: cannot make host stream non-blocking: {e}");
                        continue;
                    }
                    match ops.add(Events::new(&stream, EventSet::IN)) {
                        Ok(()) => {
                            self.handshakes
                                .insert(stream.as_raw_fd(), (stream, Vec::new()));
                        }
                        Err(e) => warn!("vsock: cannot register host stream: {e}"),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("vsock: accept on {}: {e}", self.uds_path.display());
                    return;
                }
            }
        }
    }

    /// Connects to the host listener for guest-initiated connections to `port`: a socket at
    /// `<uds_path>_<port>`, reached without symbolic links. Non-blocking, so a listener with a
    /// full backlog answers EAGAIN instead of parking the VMM thread until it calls accept().
    pub fn connect_host_port(&self, port: u32) -> Result<UnixStream, HostFsError> {
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{port}"));
        wisp_hostfs::connect_stream(Path::new(&path), true)
    }

    /// A host port for a host-initiated connection, not in use per `in_use`.
    pub fn alloc_local_port(&mut self, in_use: impl Fn(u32) -> bool) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            if !in_use(port) {
                return port;
            }
        }
    }
}

fn parse_connect(line: &[u8]) -> Result<u32, String> {
    let text = std::str::from_utf8(line).map_err(|_| "handshake is not UTF-8".to_string())?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    text.strip_prefix("CONNECT ")
        .and_then(|p| p.trim().parse::<u32>().ok())
        .ok_or_else(|| format!("bad handshake {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::parse_connect;

    #[test]
    fn connect_line_parses_only_a_port() {
        assert_eq!(parse_connect(b"CONNECT 52"), Ok(52));
        assert!(parse_connect(b"CONNECT").is_err());
        assert!(parse_connect(b"CONNECT -1").is_err());
        assert!(parse_connect(b"HELLO 5").is_err());
    }
}
