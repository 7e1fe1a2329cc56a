//! The host side of vsock as Unix sockets, in Firecracker's "hybrid vsock" convention:
//! - host-initiated: a host process connects to `uds_path` and writes `CONNECT <port>\n`; the
//!   device opens a stream to guest port `<port>` and, once the guest accepts, answers
//!   `OK <host port>\n` before any data;
//! - guest-initiated: a guest connection to host port P becomes a Unix connection to
//!   `<uds_path>_P`, where a host process listens.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

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
    listening: bool,
    handshakes: HashMap<RawFd, (UnixStream, Vec<u8>)>,
    next_local_port: u32,
}

impl UnixBackend {
    /// Binds `uds_path` (a stale socket file left by a previous run is replaced).
    pub fn bind(uds_path: &Path) -> Result<Self, VsockError> {
        if let Ok(meta) = std::fs::symlink_metadata(uds_path) {
            if meta.file_type().is_socket() {
                let _ = std::fs::remove_file(uds_path);
            }
        }
        let bind_err = |source| VsockError::Bind {
            path: uds_path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(uds_path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(UnixBackend {
            uds_path: uds_path.to_path_buf(),
            listener,
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

    /// Connects to the host listener for guest-initiated connections to `port`.
    pub fn connect_host_port(&self, port: u32) -> std::io::Result<UnixStream> {
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{port}"));
        connect_nonblocking(Path::new(&path))
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

impl Drop for UnixBackend {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

/// connect(2) on a non-blocking socket: a Unix listener with a full backlog answers EAGAIN
/// instead of parking the VMM thread until the host process calls accept().
fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns; the stream closes it on drop.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "vsock socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: `addr` is an initialised sockaddr_un and `len` does not exceed its size (the
    // path plus its NUL fit, checked above); connect(2) only reads it.
    let rc = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
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
