//! The host side of virtio-net for the fuzzer: a real tap in a private network namespace,
//! brought up without addresses or IPv6 so that the kernel sends nothing into it on its own,
//! and a packet socket that puts fuzzer-chosen frames into the tap's queue (what arrives
//! there is what the device reads for the guest's rx queue).
//!
//! Needs root (CAP_SYS_ADMIN for the namespace, CAP_NET_ADMIN for the tap), as the virtio-net
//! unit tests do.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The tap every run opens (it exists only in the fuzzer's own namespace).
pub const TAP_NAME: &str = "wispfz0";

/// Sockets of the fuzzer's namespace, made once per process.
#[derive(Debug)]
pub struct NetHost {
    /// For SIOCSIFFLAGS.
    ctl: OwnedFd,
    /// AF_PACKET, protocol 0: sends only, receives nothing.
    packet: OwnedFd,
}

/// An ifreq naming the tap.
fn ifreq() -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(TAP_NAME.bytes()) {
        *d = s as libc::c_char;
    }
    req
}

fn check(ret: libc::c_int, what: &str) -> libc::c_int {
    assert!(
        ret >= 0,
        "virtio_net fuzzing needs root for a tap in a private network namespace: {what}: {}",
        std::io::Error::last_os_error()
    );
    ret
}

impl NetHost {
    /// Moves the process into a fresh network namespace (once; the fuzzer runs single-threaded
    /// inputs on one thread) and opens the sockets there.
    pub fn enter_private_netns() -> NetHost {
        // SAFETY: unshare(CLONE_NEWNET) takes no pointers; it moves this thread (the one that
        // runs every input) into a new network namespace.
        check(unsafe { libc::unshare(libc::CLONE_NEWNET) }, "unshare");
        // New interfaces in this namespace start without IPv6 (no router solicitations or MLD
        // reports arriving in the tap uninvited). Absent when the kernel has no IPv6: fine.
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
        // SAFETY: plain socket(2) calls; each result is checked and owned below.
        let ctl = check(
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) },
            "socket(AF_INET)",
        );
        // SAFETY: `ctl` is a fresh descriptor that nothing else owns.
        let ctl = unsafe { OwnedFd::from_raw_fd(ctl) };
        // SAFETY: as above.
        let packet = check(
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) },
            "socket(AF_PACKET)",
        );
        // SAFETY: `packet` is a fresh descriptor that nothing else owns.
        let packet = unsafe { OwnedFd::from_raw_fd(packet) };
        let host = NetHost { ctl, packet };
        host.make_persistent_tap();
        host.tap_up();
        host
    }

    /// Creates the tap once, persistent and up, so that every run's device attaches to it
    /// (fast) instead of creating and destroying an interface (slow: an RCU grace period each).
    /// A reader's queue goes with its fd, so each run still starts with an empty tap queue.
    fn make_persistent_tap(&self) {
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .expect("virtio_net fuzzing needs /dev/net/tun");
        let mut req = ifreq();
        req.ifr_ifru.ifru_flags =
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is, valid for the call.
        check(
            unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) },
            "TUNSETIFF",
        );
        // SAFETY: TUNSETPERSIST takes its flag by value.
        check(
            unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) },
            "TUNSETPERSIST",
        );
    }

    fn set_flags(&self, flags: libc::c_int) {
        let mut req = ifreq();
        req.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads one ifreq, which `req` is, valid for the call.
        check(
            unsafe { libc::ioctl(self.ctl.as_raw_fd(), libc::SIOCSIFFLAGS, &req) },
            "SIOCSIFFLAGS",
        );
    }

    fn tap_up(&self) {
        self.set_flags(libc::IFF_UP);
    }

    /// Call after the run's device attached to the tap: takes the tap down and up again so that
    /// its transmit queue is live at once (after a reader attaches, the kernel enables it only
    /// from a deferred link-watch work item, and frames sent before that are dropped).
    pub fn restart_tap(&self) {
        self.set_flags(0);
        self.tap_up();
    }

    /// Transmits `frame` (an Ethernet frame, no vnet header) on the tap: the tap queues it for
    /// its reader, the device, with a vnet header in front. Errors (frame too short for the
    /// kernel, queue full) only mean that frame does not arrive.
    pub fn inject(&self, frame: &[u8]) {
        let name = CString::new(TAP_NAME).expect("no NUL in the tap name");
        // SAFETY: a valid NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return;
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = index as i32;
        to.sll_halen = 6;
        if frame.len() >= 6 {
            to.sll_addr[..6].copy_from_slice(&frame[..6]);
        }
        // SAFETY: sendto reads `frame.len()` bytes from `frame` and one sockaddr_ll from `to`,
        // both valid for the call.
        unsafe {
            libc::sendto(
                self.packet.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
    }
}
