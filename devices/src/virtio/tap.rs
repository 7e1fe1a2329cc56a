//! A Linux tap device opened through /dev/net/tun (Documentation/networking/tuntap.rst),
//! in the mode virtio-net wants: Ethernet frames (IFF_TAP), no packet-info prefix
//! (IFF_NO_PI), each frame preceded by a 12-byte `virtio_net_hdr_v1` (IFF_VNET_HDR +
//! TUNSETVNETHDRSZ), no offloads (TUNSETOFFLOAD 0) so the kernel never hands us GSO frames.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use thiserror::Error;

/// Size of `struct virtio_net_hdr_v1` (virtio 1.2 §5.1.6).
pub const VNET_HDR_LEN: usize = 12;

/// Errors opening a tap.
#[derive(Debug, Error)]
pub enum TapError {
    /// Interface name empty or longer than IFNAMSIZ - 1.
    #[error("invalid tap interface name {0:?}")]
    Name(String),
    /// /dev/net/tun could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(#[source] std::io::Error),
    /// An ioctl on the tun fd failed.
    #[error("tap {name}: {op} failed: {source}")]
    Ioctl {
        /// Interface.
        name: String,
        /// Which ioctl.
        op: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags (the union's first member).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open, non-blocking tap device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to (or creates) tap interface `name` in the caller's network namespace.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(TapError::Name(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let err = |op| {
            let source = std::io::Error::last_os_error();
            TapError::Ioctl {
                name: name.to_string(),
                op,
                source,
            }
        };
        let fd = file.as_raw_fd();
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` is a properly sized,
        // initialised, exclusively borrowed `ifreq` layout that outlives the call.
        if unsafe { libc::ioctl(fd, libc::TUNSETIFF as _, &mut req) } < 0 {
            return Err(err("TUNSETIFF"));
        }
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, valid for the call.
        if unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ as _, &hdr_len) } < 0 {
            return Err(err("TUNSETVNETHDRSZ"));
        }
        // SAFETY: TUNSETOFFLOAD takes its flags by value; no memory is passed.
        if unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD as _, 0 as libc::c_ulong) } < 0 {
            return Err(err("TUNSETOFFLOAD"));
        }
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (vnet header included); `WouldBlock` when none is queued.
    pub fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }

    /// Writes one frame (vnet header included).
    pub fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.file.write(frame)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
