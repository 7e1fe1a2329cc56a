//! `vsock-probe`: a standalone static program (not a module of the harness) that both ends of
//! the vsock scenario of tests/linux_virtio.rs run: busybox has no AF_VSOCK and no Unix-socket
//! `nc`. Built by the test with `rustc -C target-feature=+crt-static`, std only (the few
//! socket calls std lacks are declared below), and copied into L1 and L2.
//!
//! Every exchange is one line each way; results are printed as `key=value` words.
//!
//! - `connect CID PORT MSG` (L2): AF_VSOCK stream to CID:PORT, send MSG, print `reply=`.
//! - `listen PORT` (L2): accept one AF_VSOCK stream on PORT, print `got=`, answer
//!   `guest-echo:MSG`.
//! - `uds-serve PATH` (L1): accept one Unix stream on PATH (wisp's `<uds>_<port>` for guest-
//!   initiated connections), print `got=`, answer `host-echo:MSG`.
//! - `uds-connect PATH PORT MSG` (L1): Firecracker's hybrid handshake on wisp's `<uds>`:
//!   `CONNECT PORT\n` → `OK <n>\n`, then send MSG, print `handshake=` and `reply=`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;

/// linux/socket.h.
const AF_VSOCK: i32 = 40;
const SOCK_STREAM: i32 = 1;
const SOCK_CLOEXEC: i32 = 0o2_000_000;
/// linux/vm_sockets.h: any local CID, for bind.
const VMADDR_CID_ANY: u32 = u32::MAX;

/// `struct sockaddr_vm` (linux/vm_sockets.h), 16 bytes like `struct sockaddr`.
#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved1: u16,
    port: u32,
    cid: u32,
    flags: u8,
    zero: [u8; 3],
}

extern "C" {
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn connect(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn bind(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
    fn accept4(fd: i32, addr: *mut SockaddrVm, len: *mut u32, flags: i32) -> i32;
}

fn check(ret: i32, what: &str) -> io::Result<i32> {
    if ret < 0 {
        let err = io::Error::last_os_error();
        Err(io::Error::new(err.kind(), format!("{what}: {err}")))
    } else {
        Ok(ret)
    }
}

fn vsock_addr(cid: u32, port: u32) -> SockaddrVm {
    SockaddrVm {
        family: AF_VSOCK as u16,
        reserved1: 0,
        port,
        cid,
        flags: 0,
        zero: [0; 3],
    }
}

fn vsock_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall wrapper with integer arguments.
    let fd = check(
        unsafe { socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0) },
        "socket",
    )?;
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn vsock_connect(cid: u32, port: u32) -> io::Result<File> {
    let sock = vsock_socket()?;
    let addr = vsock_addr(cid, port);
    let len = std::mem::size_of::<SockaddrVm>() as u32;
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes that outlives the call.
    check(unsafe { connect(raw(&sock), &addr, len) }, "connect")?;
    Ok(File::from(sock))
}

fn vsock_accept(port: u32) -> io::Result<File> {
    let sock = vsock_socket()?;
    let addr = vsock_addr(VMADDR_CID_ANY, port);
    let mut len = std::mem::size_of::<SockaddrVm>() as u32;
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes that outlives the call.
    check(unsafe { bind(raw(&sock), &addr, len) }, "bind")?;
    // SAFETY: plain syscall wrapper with integer arguments.
    check(unsafe { listen(raw(&sock), 1) }, "listen")?;
    println!("listening={port}");
    let mut peer = vsock_addr(0, 0);
    // SAFETY: `peer` and `len` are valid for writes of a sockaddr_vm and its length.
    let fd = check(
        unsafe { accept4(raw(&sock), &mut peer, &mut len, SOCK_CLOEXEC) },
        "accept",
    )?;
    println!("peer-cid={}", peer.cid);
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn raw(fd: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

/// Reads one line (without its newline) from `reader`.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed"));
    }
    Ok(line.trim_end().to_owned())
}

/// Sends `msg` and prints the peer's one-line reply.
fn ask(mut stream: impl Write, reader: &mut impl BufRead, msg: &str) -> io::Result<()> {
    stream.write_all(format!("{msg}\n").as_bytes())?;
    println!("reply={}", read_line(reader)?);
    Ok(())
}

/// Reads one line, prints it and answers it with `prefix` prepended, then waits for the peer
/// to close (so the answer is through before the caller goes on, e.g. to reboot the guest).
fn answer(mut stream: impl Write, reader: &mut impl BufRead, prefix: &str) -> io::Result<()> {
    let got = read_line(reader)?;
    println!("got={got}");
    stream.write_all(format!("{prefix}{got}\n").as_bytes())?;
    std::io::copy(reader, &mut io::sink())?;
    println!("closed=yes");
    Ok(())
}

fn number(arg: Option<&String>) -> io::Result<u32> {
    arg.and_then(|a| a.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "expected a number"))
}

fn run(args: &[String]) -> io::Result<()> {
    let text = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "missing argument"))
    };
    match args.first().map(String::as_str) {
        Some("connect") => {
            let stream = vsock_connect(number(args.get(1))?, number(args.get(2))?)?;
            let mut reader = BufReader::new(stream.try_clone()?);
            ask(&stream, &mut reader, &text(3)?)
        }
        Some("listen") => {
            let stream = vsock_accept(number(args.get(1))?)?;
            let mut reader = BufReader::new(stream.try_clone()?);
            answer(&stream, &mut reader, "guest-echo:")
        }
        Some("uds-serve") => {
            let path = text(1)?;
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path)?;
            println!("listening={path}");
            let (stream, _) = listener.accept()?;
            let mut reader = BufReader::new(stream.try_clone()?);
            answer(&stream, &mut reader, "host-echo:")
        }
        Some("uds-connect") => {
            let mut stream = UnixStream::connect(text(1)?)?;
            stream.write_all(format!("CONNECT {}\n", number(args.get(2))?).as_bytes())?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let handshake = read_line(&mut reader)?;
            println!("handshake={}", handshake.split(' ').next().unwrap_or(""));
            if !handshake.starts_with("OK ") {
                return Err(io::Error::other(format!(
                    "handshake answered {handshake:?}"
                )));
            }
            ask(&stream, &mut reader, &text(3)?)
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: vsock-probe connect CID PORT MSG | listen PORT | uds-serve PATH | \
             uds-connect PATH PORT MSG",
        )),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vsock-probe: {e}");
            println!("error={}", e.kind());
            ExitCode::FAILURE
        }
    }
}
