//! Unix SOCK_SEQPACKET sockets (std has only stream and datagram): message boundaries kept,
//! connection-oriented, so one request is one message. Used by `wispd` and `wisp ctl`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path too long: {}", path.display()),
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket(2) returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A listening SOCK_SEQPACKET socket.
pub struct SeqpacketListener {
    fd: OwnedFd,
}

impl SeqpacketListener {
    pub fn bind(path: &Path) -> io::Result<SeqpacketListener> {
        let fd = socket()?;
        let (addr, len) = sockaddr(path)?;
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        })?;
        // SAFETY: plain listen(2) on our socket.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
        Ok(SeqpacketListener { fd })
    }

    pub fn accept(&self) -> io::Result<SeqpacketConn> {
        self.accept_flags(libc::SOCK_CLOEXEC)
    }

    /// Accepts a connection whose `send` and `recv` fail with `WouldBlock` instead of waiting
    /// (an event loop's connections). On a non-blocking listener (`set_nonblocking`) this
    /// also fails with `WouldBlock` when no client is waiting.
    pub fn accept_nonblocking(&self) -> io::Result<SeqpacketConn> {
        self.accept_flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
    }

    fn accept_flags(&self, flags: libc::c_int) -> io::Result<SeqpacketConn> {
        // SAFETY: accept4 with null address pointers is allowed; the result is checked.
        let fd = cvt(unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                flags,
            )
        })?;
        // SAFETY: accept4 returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SeqpacketConn { fd })
    }

    pub fn set_nonblocking(&self) -> io::Result<()> {
        set_nonblocking(self.fd.as_raw_fd())
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a valid fd we own; results are checked.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

impl AsRawFd for SeqpacketListener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// One SOCK_SEQPACKET connection: `send` and `recv` move whole messages.
pub struct SeqpacketConn {
    fd: OwnedFd,
}

impl AsRawFd for SeqpacketConn {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl SeqpacketConn {
    pub fn connect(path: &Path) -> io::Result<SeqpacketConn> {
        let fd = socket()?;
        let (addr, len) = sockaddr(path)?;
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        cvt(unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        })?;
        Ok(SeqpacketConn { fd })
    }

    /// Fails `recv` with `WouldBlock` after `timeout` without a message, so an idle client
    /// cannot hold a server thread forever.
    pub fn set_read_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
        };
        // SAFETY: passes a valid timeval of the size given.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
        Ok(())
    }

    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: sends from a valid buffer of msg.len() bytes.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One message; `Ok(0)` means the peer closed. Longer messages are truncated (MSG_TRUNC
    /// reports it as an error).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: receives into a valid, writable buffer of buf.len() bytes.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message of {n} bytes is larger than {}", buf.len()),
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_boundaries() {
        let path = std::env::temp_dir().join(format!("wisp-seqpacket-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = SeqpacketListener::bind(&path).unwrap();
        let client = SeqpacketConn::connect(&path).unwrap();
        let server = listener.accept().unwrap();
        client.send(b"one").unwrap();
        client.send(b"two!").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(server.recv(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"one");
        assert_eq!(server.recv(&mut buf).unwrap(), 4);
        let mut small = [0u8; 2];
        client.send(b"toolong").unwrap();
        assert!(server.recv(&mut small).is_err());
        drop(client);
        assert_eq!(server.recv(&mut buf).unwrap(), 0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn nonblocking_ends_wait_with_would_block() {
        let path = std::env::temp_dir().join(format!("wisp-seqpacket-nb-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = SeqpacketListener::bind(&path).unwrap();
        listener.set_nonblocking().unwrap();
        let err = listener.accept_nonblocking().err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let client = SeqpacketConn::connect(&path).unwrap();
        let server = listener.accept_nonblocking().unwrap();
        let mut buf = [0u8; 16];
        let err = server.recv(&mut buf).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        client.send(b"hi").unwrap();
        assert_eq!(server.recv(&mut buf).unwrap(), 2);
        std::fs::remove_file(&path).unwrap();
    }
}
