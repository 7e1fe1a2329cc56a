//! The net half of the `virtio` suite: frames from the unikernel through Wisp's virtio-net to
//! a tap device, counted on the host, against the host writing the same frames into the same
//! tap itself (the path the VMM's writes take, without the guest).
//!
//! Each run makes a network namespace with a tap (`ip netns add`, `ip tuntap add`), runs
//! `wisp run --net tap=…` inside it (`ip netns exec`) with the unikernel's `net-bench`
//! (guest/src/virtio/net_bench.rs: 10,000 frames of 1514 bytes, ethertype 0x88b5), and counts
//! the frames that reach the tap with an AF_PACKET socket opened in the namespace. The rate is
//! delivered bytes over the guest's own sending time (its TSC cycles), so frames the host
//! dropped do not count.

use super::virtio::parse_fields;
use crate::launch::{Input, Launched};
use crate::peers::{GUEST_LINE, GUEST_MEM_MIB};
use crate::setup::Setup;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The guest's frames: count and length (guest `net_bench::FRAMES`, `FRAME_LEN`).
pub const FRAMES: u64 = 10_000;
pub const FRAME_LEN: usize = 1514;
/// IEEE 802 local experimental ethertype, which the guest's frames carry.
const ETHERTYPE_TEST: u16 = 0x88b5;
/// The tap inside the namespace.
const TAP: &str = "wbtap0";
/// The counter stops once nothing arrived for this long after the sender finished.
const QUIET: Duration = Duration::from_millis(300);
/// Receive buffer the counter asks for, so a burst is not dropped before it is counted.
const COUNTER_RCVBUF: libc::c_int = 64 << 20;

/// The guest's figures: frames and bytes sent, and TSC cycles taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuestTx {
    pub frames: u64,
    pub bytes: u64,
    pub cycles: u64,
}

/// `net-bench: tx frames=N bytes=B depth=D cycles=C …` in `output`.
pub fn parse_guest_tx(output: &str) -> Option<GuestTx> {
    let fields = parse_fields(output, "net-bench: tx")?;
    let tx = GuestTx {
        frames: *fields.get("frames")?,
        bytes: *fields.get("bytes")?,
        cycles: *fields.get("cycles")?,
    };
    (tx.cycles > 0 && tx.frames > 0).then_some(tx)
}

/// A network namespace holding one tap; deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create(run: usize) -> Result<Netns, String> {
        let ns = Netns {
            name: format!("wisp-bench-{}-{run}", std::process::id()),
        };
        ip(&["netns", "add", &ns.name])?;
        ip(&["-n", &ns.name, "tuntap", "add", TAP, "mode", "tap"])?;
        ip(&["-n", &ns.name, "link", "set", TAP, "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            log::warn!("{e}");
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Moves the calling thread into namespace `name` (only this thread: `setns` is per thread).
fn enter_netns(name: &str) -> Result<(), String> {
    let path = format!("/var/run/netns/{name}");
    let file = File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
    // SAFETY: setns on a valid namespace fd we own; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!(
            "setns({path}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A thread in the namespace counting test frames on the tap until told to stop and quiet.
struct Counter {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<u64, String>>,
}

impl Counter {
    /// Starts counting; returns once the socket is bound (frames sent later are seen).
    fn start(ns: &str) -> Result<Counter, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let ns = ns.to_string();
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || -> Result<u64, String> {
            let socket = match enter_netns(&ns).and_then(|()| packet_socket(TAP)) {
                Ok(socket) => socket,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let _ = ready_tx.send(Ok(()));
            count_frames(&socket, &flag)
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Counter { stop, thread }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the frame counter thread ended early".to_string()),
        }
    }

    /// Stops once no frame came for `QUIET`; returns the count.
    fn finish(self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "the frame counter thread panicked".to_string())?
    }
}

/// An AF_PACKET socket receiving ethertype 0x88b5 frames on interface `ifname`, with a large
/// receive buffer and a `QUIET` receive timeout.
fn packet_socket(ifname: &str) -> Result<OwnedFd, String> {
    let proto = ETHERTYPE_TEST.to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto)) };
    if fd < 0 {
        return Err(format!(
            "socket(AF_PACKET): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` is a new socket nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = CString::new(ifname).map_err(|e| e.to_string())?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(format!("no interface {ifname} in the namespace"));
    }
    // SAFETY: a zeroed sockaddr_ll is a valid value; the fields we need are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a sockaddr_ll of the size passed, alive for the call.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "bind to {ifname}: {}",
            std::io::Error::last_os_error()
        ));
    }
    set_option(&socket, libc::SO_RCVBUFFORCE, &COUNTER_RCVBUF)?;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: QUIET.as_micros() as libc::suseconds_t,
    };
    set_option(&socket, libc::SO_RCVTIMEO, &timeout)?;
    Ok(socket)
}

fn set_option<T>(socket: &OwnedFd, option: libc::c_int, value: &T) -> Result<(), String> {
    // SAFETY: `value` points to a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "setsockopt({option}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Counts frames until `stop` is set and a receive times out.
fn count_frames(socket: &OwnedFd, stop: &AtomicBool) -> Result<u64, String> {
    let mut buffer = [0u8; 2048];
    let mut count = 0u64;
    loop {
        // SAFETY: `buffer` is writable for its whole length during the call.
        let n = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if n >= 0 {
            count += 1;
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(count);
                }
            }
            std::io::ErrorKind::Interrupted => {}
            _ => return Err(format!("recv on the tap: {err}")),
        }
    }
}

/// The Wisp command, inside namespace `ns`.
pub fn wisp_command(setup: &Setup, ns: &str, cmdline: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(&setup.wisp)
        .arg("run")
        .arg("--kernel")
        .arg(&setup.unikernel)
        .arg("--cmdline")
        .arg(cmdline)
        .arg("--mem")
        .arg(GUEST_MEM_MIB.to_string())
        .arg("--net")
        .arg(format!("tap={TAP}"));
    cmd
}

/// One guest run: delivered MB/s, or why it does not count.
pub fn guest_once(
    setup: &Setup,
    cmdline: &str,
    run: usize,
    timeout: Duration,
    tsc_hz: f64,
) -> Result<f64, String> {
    let ns = Netns::create(run)?;
    let counter = Counter::start(&ns.name)?;
    let launched = Launched::spawn(
        wisp_command(setup, &ns.name, cmdline),
        Input::Null,
        GUEST_LINE,
    )
    .map_err(|e| e.to_string());
    let finished = launched.and_then(|l| l.finish(timeout).map_err(|e| e.to_string()));
    let counted = counter.finish()?;
    let finished = finished?;
    if !finished.is_clean() {
        return Err(finished.failure());
    }
    if let Some(line) = finished
        .stdout
        .lines()
        .find(|line| line.starts_with("net-bench: error:"))
    {
        return Err(line.to_string());
    }
    let tx = parse_guest_tx(&finished.stdout).ok_or_else(|| {
        format!(
            "no net-bench figures in the guest's output: {:?}",
            finished.stdout
        )
    })?;
    if counted == 0 {
        return Err(format!(
            "the guest sent {} frames, none reached the tap",
            tx.frames
        ));
    }
    let delivered = counted.min(tx.frames) * (tx.bytes / tx.frames);
    Ok(delivered as f64 / (tx.cycles as f64 / tsc_hz) / 1e6)
}

/// The host reference: `FRAMES` frames of `FRAME_LEN` bytes written into the tap from the
/// host (as the VMM writes them, without the guest), counted the same way; delivered MB/s over
/// the writing time.
pub fn host_once(run: usize) -> Result<f64, String> {
    let ns = Netns::create(run)?;
    let counter = Counter::start(&ns.name)?;
    let name = ns.name.clone();
    let writer = thread::spawn(move || -> Result<Duration, String> {
        enter_netns(&name)?;
        let mut tap = open_tap(TAP)?;
        let mut frame = vec![0u8; FRAME_LEN];
        frame[0..6].fill(0xff);
        frame[6..12].copy_from_slice(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        frame[12..14].copy_from_slice(&ETHERTYPE_TEST.to_be_bytes());
        let start = Instant::now();
        for seq in 0..FRAMES as u32 {
            frame[14..18].copy_from_slice(&seq.to_be_bytes());
            tap.write_all(&frame)
                .map_err(|e| format!("write to {TAP}: {e}"))?;
        }
        Ok(start.elapsed())
    });
    let elapsed = writer
        .join()
        .map_err(|_| "the tap writer thread panicked".to_string());
    let counted = counter.finish()?;
    let elapsed = elapsed??;
    if counted == 0 {
        return Err("no frame written to the tap was counted".to_string());
    }
    let delivered = counted.min(FRAMES) * FRAME_LEN as u64;
    Ok(delivered as f64 / elapsed.as_secs_f64() / 1e6)
}

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags (Linux `include/uapi/linux/if.h`).
#[repr(C)]
struct IfreqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens the existing tap `name` (this thread's namespace) without packet info.
fn open_tap(name: &str) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| format!("cannot open /dev/net/tun: {e}"))?;
    let mut request = IfreqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    let bytes = name.as_bytes();
    request.name[..bytes.len().min(libc::IFNAMSIZ - 1)]
        .copy_from_slice(&bytes[..bytes.len().min(libc::IFNAMSIZ - 1)]);
    // SAFETY: TUNSETIFF reads an ifreq (40 bytes, our struct's size) from a live pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    if rc != 0 {
        return Err(format!(
            "TUNSETIFF {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_tx_figures_are_parsed_from_the_console() {
        let out = "hello from wisp unikernel\n\
            net-bench: device at 0xd0002000 irq 5 (from the noxs page)\n\
            net-bench: tx frames=20000 bytes=30280000 depth=8 cycles=19970854748 MBps=3\n";
        assert_eq!(
            parse_guest_tx(out),
            Some(GuestTx {
                frames: 20_000,
                bytes: 30_280_000,
                cycles: 19_970_854_748
            })
        );
        assert_eq!(
            parse_guest_tx("net-bench: tx frames=0 bytes=0 cycles=5\n"),
            None
        );
    }

    #[test]
    fn the_ifreq_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfreqFlags>(), 40);
    }
}
