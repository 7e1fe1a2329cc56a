//! The vsock half of the `virtio` suite: stream throughput from the unikernel to a host Unix
//! socket through Wisp's hybrid vsock, against a Unix socket stream between two host threads
//! (the path the guest's bytes end on, without the guest).
//!
//! The guest's `vsock-bench` (guest/src/virtio/vsock_bench.rs) connects to host port
//! [`BENCH_PORT`], which Wisp forwards to a listener on `<uds>_1235`; it sends
//! [`STREAM_BYTES`] in 64 KiB packets and prints the TSC cycles it took. A run only counts
//! when the listener received every byte.

use super::virtio::parse_fields;
use crate::launch::{Input, Launched};
use crate::peers::{GUEST_LINE, GUEST_MEM_MIB};
use crate::setup::Setup;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// The host port the guest streams to (guest `vsock_bench::BENCH_PORT`).
pub const BENCH_PORT: u32 = 1235;
/// Bytes the guest sends (guest `vsock_bench::TOTAL_BYTES`), and the host reference's.
pub const STREAM_BYTES: u64 = 64 << 20;
/// Write and read size on the host side: the guest's packet payload.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// The guest's CID: any number above 2.
const GUEST_CID: u32 = 3;

/// The guest's figures: bytes sent and TSC cycles taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuestStream {
    pub bytes: u64,
    pub cycles: u64,
}

/// `vsock-bench: stream bytes=B packets=P depth=D cycles=C …` in `output`.
pub fn parse_guest_stream(output: &str) -> Option<GuestStream> {
    let fields = parse_fields(output, "vsock-bench: stream")?;
    let stream = GuestStream {
        bytes: *fields.get("bytes")?,
        cycles: *fields.get("cycles")?,
    };
    (stream.cycles > 0).then_some(stream)
}

/// The directory of one guest run's sockets.
fn socket_dir(run: usize) -> PathBuf {
    std::env::temp_dir().join(format!("wisp-bench-vsock-{}-{run}", std::process::id()))
}

/// The Wisp command line for one guest run with its vsock Unix socket at `uds`.
pub fn wisp_command(setup: &Setup, uds: &Path, cmdline: &str) -> Command {
    let mut cmd = Command::new(&setup.wisp);
    cmd.arg("run")
        .arg("--kernel")
        .arg(&setup.unikernel)
        .arg("--cmdline")
        .arg(cmdline)
        .arg("--mem")
        .arg(GUEST_MEM_MIB.to_string())
        .arg("--vsock")
        .arg(format!("cid={GUEST_CID},uds={}", uds.display()));
    cmd
}

/// One guest run: MB/s from the guest's cycles at `tsc_hz`, or why it does not count.
pub fn guest_once(
    setup: &Setup,
    cmdline: &str,
    run: usize,
    timeout: Duration,
    tsc_hz: f64,
) -> Result<f64, String> {
    let dir = socket_dir(run);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = guest_in(setup, cmdline, &dir, timeout, tsc_hz);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        log::warn!("cannot remove {}: {e}", dir.display());
    }
    result
}

fn guest_in(
    setup: &Setup,
    cmdline: &str,
    dir: &Path,
    timeout: Duration,
    tsc_hz: f64,
) -> Result<f64, String> {
    let uds = dir.join("vsock.sock");
    let port_path = PathBuf::from(format!("{}_{BENCH_PORT}", uds.display()));
    let listener = UnixListener::bind(&port_path)
        .map_err(|e| format!("cannot listen on {}: {e}", port_path.display()))?;
    let reader = thread::spawn(move || -> std::io::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        count_to_eof(&mut conn)
    });
    let launched = Launched::spawn(wisp_command(setup, &uds, cmdline), Input::Null, GUEST_LINE)
        .map_err(|e| e.to_string())?;
    let finished = launched.finish(timeout).map_err(|e| e.to_string())?;
    if !reader.is_finished() {
        // The guest never connected (or never closed): unblock the reader with an empty
        // stream of our own so the thread ends.
        drop(UnixStream::connect(&port_path));
    }
    let received = reader
        .join()
        .map_err(|_| "the listener thread panicked".to_string())?
        .map_err(|e| format!("listener on {}: {e}", port_path.display()))?;
    if !finished.is_clean() {
        return Err(finished.failure());
    }
    if let Some(line) = finished
        .stdout
        .lines()
        .find(|line| line.starts_with("vsock-bench: error:"))
    {
        return Err(line.to_string());
    }
    let stream = parse_guest_stream(&finished.stdout).ok_or_else(|| {
        format!(
            "no vsock-bench figures in the guest's output: {:?}",
            finished.stdout
        )
    })?;
    if received != stream.bytes {
        return Err(format!(
            "the guest sent {} bytes but the host listener received {received}",
            stream.bytes
        ));
    }
    Ok(stream.bytes as f64 / (stream.cycles as f64 / tsc_hz) / 1e6)
}

/// Reads `conn` to its end in `CHUNK_BYTES` reads; returns the byte count.
fn count_to_eof(conn: &mut UnixStream) -> std::io::Result<u64> {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut total = 0u64;
    loop {
        match conn.read(&mut buffer)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

/// The host reference: `STREAM_BYTES` over a Unix stream socket pair from one thread to
/// another in `CHUNK_BYTES` writes; MB/s from the first write to the reader's end of file.
pub fn host_once() -> Result<f64, String> {
    let (mut writer, mut reader) =
        UnixStream::pair().map_err(|e| format!("cannot create a socket pair: {e}"))?;
    let start = Instant::now();
    let sender = thread::spawn(move || -> std::io::Result<()> {
        let chunk = vec![b'w'; CHUNK_BYTES];
        for _ in 0..STREAM_BYTES / CHUNK_BYTES as u64 {
            writer.write_all(&chunk)?;
        }
        Ok(())
    });
    let received = count_to_eof(&mut reader).map_err(|e| format!("socket pair read: {e}"))?;
    let seconds = start.elapsed().as_secs_f64();
    sender
        .join()
        .map_err(|_| "the writer thread panicked".to_string())?
        .map_err(|e| format!("socket pair write: {e}"))?;
    if received != STREAM_BYTES {
        return Err(format!("sent {STREAM_BYTES} bytes, received {received}"));
    }
    Ok(STREAM_BYTES as f64 / seconds / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_stream_figures_are_parsed_from_the_console() {
        let out = "hello from wisp unikernel\n\
            vsock-bench: device at 0xd0002000 irq 5 (from the noxs page)\n\
            vsock-bench: connected to 2:1235\n\
            vsock-bench: stream bytes=67108864 packets=1024 depth=4 cycles=3045113630 MBps=57\n\
            vsock-bench: done\n";
        assert_eq!(
            parse_guest_stream(out),
            Some(GuestStream {
                bytes: 67_108_864,
                cycles: 3_045_113_630
            })
        );
        assert_eq!(
            parse_guest_stream("vsock-bench: connected to 2:1235\n"),
            None
        );
        assert_eq!(
            parse_guest_stream("vsock-bench: stream bytes=5 cycles=0\n"),
            None
        );
    }

    #[test]
    fn host_reference_moves_every_byte() {
        let mbps = host_once().unwrap();
        assert!(mbps > 0.0 && mbps.is_finite(), "{mbps}");
    }
}
