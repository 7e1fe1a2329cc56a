//! `virtio`: virtio-blk throughput seen by the Wisp unikernel against the same I/O done by
//! the host directly on the same file.
//!
//! Per run, interleaved: the unikernel's `blk-bench` command on a disk image (sequential read
//! and write in 64 KiB requests, 4 KiB random reads; guest/src/virtio/blk_bench.rs), then the
//! same patterns on the same file from this process (`pread`/`pwrite` of the same sizes,
//! `fdatasync` after the write, the same xorshift64 offsets). The guest times itself with the
//! TSC and prints raw cycle counts; they are turned into rates here with the host's TSC rate
//! (PVM guests read the host TSC unscaled), which is also passed to the guest as `tsc_khz=`.
//! The page cache is left alone (dropping it would disturb the other people on the machine):
//! the image is written just before the runs, so both sides read from a warm cache.

use super::host_tsc::{host_tsc_khz, tsc_source};
use super::{metric, run_failed, virtio_net, virtio_vsock};
use crate::launch::{Input, Launched};
use crate::peers::{describe, Peer, GUEST_LINE, GUEST_MEM_MIB};
use crate::results::{Comparison, SuiteOutcome, Unit, VmmRuns};
use crate::setup::Setup;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Size of the disk image the runs use.
pub const IMAGE_BYTES: u64 = 256 << 20;
/// Request sizes and counts; must match guest/src/virtio/blk_bench.rs.
pub const SEQ_REQUEST_BYTES: usize = 64 * 1024;
pub const RAND_REQUEST_BYTES: usize = 4096;
pub const RAND_REQUESTS: u64 = 2_000;
pub const RAND_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Where QEMU's microvm puts its first virtio-mmio device (it adds no `virtio_mmio.device=`
/// word for a PVH kernel; guest/README.md). The IRQ is unused: the driver polls.
const QEMU_FIRST_SLOT: &str = "virtio_mmio.device=512@0xfeb02e00:12";
/// The least time a guest run may take before it is counted as failed.
const MIN_RUN_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, thiserror::Error)]
pub enum VirtioBenchError {
    #[error("cannot find the host's TSC rate in dmesg or /proc/cpuinfo")]
    NoTscRate,
    #[error("cannot prepare the disk image {path}: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host {pattern} on {path} failed: {source}")]
    HostIo {
        pattern: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One pattern's figures as the guest printed them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuestPattern {
    pub bytes: u64,
    pub requests: u64,
    pub cycles: u64,
}

impl GuestPattern {
    fn seconds(&self, tsc_hz: f64) -> f64 {
        self.cycles as f64 / tsc_hz
    }
}

pub fn run(setup: &Setup) -> SuiteOutcome {
    let tsc_khz = match host_tsc_khz() {
        Some(khz) => khz,
        None => {
            return SuiteOutcome::Skipped {
                reason: VirtioBenchError::NoTscRate.to_string(),
            }
        }
    };
    let image = std::env::temp_dir().join(format!("wisp-bench-virtio-{}.img", std::process::id()));
    if let Err(e) = write_image(&image) {
        return SuiteOutcome::Skipped {
            reason: e.to_string(),
        };
    }
    let cmdline = format!("blk-bench tsc_khz={tsc_khz}");
    let vsock_cmdline = format!("vsock-bench tsc_khz={tsc_khz}");
    let net_cmdline = format!("net-bench tsc_khz={tsc_khz}");
    let mut vmms: Vec<(Guest, VmmRuns)> = std::iter::once(Guest::Wisp)
        .chain(setup.qemu.clone().map(Guest::Qemu))
        .map(|g| {
            let mut command = describe(&g.command(setup, &image, &cmdline));
            if matches!(g, Guest::Wisp) {
                let uds = std::env::temp_dir().join("wisp-bench-vsock-PID-RUN/vsock.sock");
                let vsock = virtio_vsock::wisp_command(setup, &uds, &vsock_cmdline);
                let net = virtio_net::wisp_command(setup, "wisp-bench-PID-RUN", &net_cmdline);
                command = format!(
                    "{command}` and `{}` and `{}",
                    describe(&vsock),
                    describe(&net)
                );
            }
            let runs = VmmRuns::new(g.name(), command);
            (g, runs)
        })
        .collect();
    let mut host = VmmRuns::new(
        "host",
        format!(
            "wisp-bench in-process: pread/pwrite on {} (same sizes and offsets), fdatasync after writes",
            image.display()
        ),
    );
    let timeout = setup.timeout.max(MIN_RUN_TIMEOUT);
    let tsc_hz = tsc_khz as f64 * 1e3;
    for run in 1..=setup.runs {
        for (g, record) in &mut vmms {
            let command = g.command(setup, &image, &cmdline);
            let mut sample = guest_once(command, timeout, tsc_hz).unwrap_or_else(|why| {
                run_failed(
                    "virtio",
                    record,
                    &format!("run {run}/{} blk", setup.runs),
                    &why,
                );
                BTreeMap::new()
            });
            if matches!(g, Guest::Wisp) {
                match virtio_vsock::guest_once(setup, &vsock_cmdline, run, timeout, tsc_hz) {
                    Ok(mbps) => {
                        sample.insert("vsock_stream_mbps".to_string(), mbps);
                    }
                    Err(why) => run_failed(
                        "virtio",
                        record,
                        &format!("run {run}/{} vsock", setup.runs),
                        &why,
                    ),
                }
                match virtio_net::guest_once(setup, &net_cmdline, run, timeout, tsc_hz) {
                    Ok(mbps) => {
                        sample.insert("net_tx_mbps".to_string(), mbps);
                    }
                    Err(why) => run_failed(
                        "virtio",
                        record,
                        &format!("run {run}/{} net", setup.runs),
                        &why,
                    ),
                }
            }
            if !sample.is_empty() {
                eprintln!(
                    "[virtio] run {run}/{} {}: {}",
                    setup.runs,
                    g.name(),
                    show(&sample)
                );
                record.runs.push(sample);
            }
        }
        let mut sample = host_once(&image).unwrap_or_else(|why| {
            run_failed(
                "virtio",
                &mut host,
                &format!("run {run}/{} blk", setup.runs),
                &why,
            );
            BTreeMap::new()
        });
        match virtio_vsock::host_once() {
            Ok(mbps) => {
                sample.insert("vsock_stream_mbps".to_string(), mbps);
            }
            Err(why) => run_failed(
                "virtio",
                &mut host,
                &format!("run {run}/{} vsock", setup.runs),
                &why,
            ),
        }
        match virtio_net::host_once(run) {
            Ok(mbps) => {
                sample.insert("net_tx_mbps".to_string(), mbps);
            }
            Err(why) => run_failed(
                "virtio",
                &mut host,
                &format!("run {run}/{} net", setup.runs),
                &why,
            ),
        }
        if !sample.is_empty() {
            eprintln!("[virtio] run {run}/{} host: {}", setup.runs, show(&sample));
            host.runs.push(sample);
        }
    }
    if let Err(e) = std::fs::remove_file(&image) {
        log::warn!("cannot remove {}: {e}", image.display());
    }
    let notes = vec![
        format!(
            "virtio-blk: the Wisp unikernel's `blk-bench` ({} MiB guest, 1 vCPU, polling driver, \
             interrupts off) on a {} MiB raw image, against the host doing the same I/O on the \
             same file; QEMU `-M microvm` (when found) runs the same guest on the same image as \
             a peer (its default cache=writeback, aio=threads); runs interleaved wisp, qemu, host, \
             wisp …",
            GUEST_MEM_MIB,
            IMAGE_BYTES >> 20
        ),
        format!(
            "sequential: the whole image in {} KiB requests (guest: 4 in flight; host: one \
             blocking pread/pwrite at a time, kernel readahead on); write = all requests + one \
             FLUSH (guest) / fdatasync (host). Random: {RAND_REQUESTS} reads of 4 KiB at \
             xorshift64 offsets (seed {RAND_SEED:#x}), one in flight on both sides",
            SEQ_REQUEST_BYTES / 1024
        ),
        format!(
            "guest times are TSC cycles read in the guest, converted at the host's TSC rate \
             ({tsc_khz} kHz, {}); MB = 10^6 bytes",
            tsc_source()
        ),
        format!(
            "vsock: the unikernel's `vsock-bench` streams {} MiB to host port {} (Wisp's hybrid \
             vsock forwards it to a Unix socket listener in wisp-bench; counted only when every \
             byte arrived), 64 KiB packets, 4 on the transmit queue, within the host's credit; \
             host: the same bytes over a Unix socket pair between two threads, 64 KiB writes \
             and reads. QEMU is not run for vsock (its vsock needs vhost-vsock)",
            virtio_vsock::STREAM_BYTES >> 20,
            virtio_vsock::BENCH_PORT
        ),
        format!(
            "net: the unikernel's `net-bench` sends {} frames of {} bytes (broadcast, \
             ethertype 0x88b5, 8 on the transmit queue) through Wisp's virtio-net to a tap in a \
             network namespace made for the run; an AF_PACKET socket there counts them; rate = \
             frames counted × {} bytes / the guest's sending time. Host: the same frames written \
             into the same kind of tap from the host (the VMM's path without the guest), counted \
             the same way, over the writing time. QEMU is not run for net",
            virtio_net::FRAMES,
            virtio_net::FRAME_LEN,
            virtio_net::FRAME_LEN
        ),
        "page cache not dropped (shared machine): the image is written just before the runs \
         and fits in memory, so reads on both sides come from a warm cache and the figures \
         are the virtualisation path's cost, not the disk's"
            .to_string(),
    ];
    SuiteOutcome::Comparison(Comparison {
        metrics: vec![
            metric(
                "seq_read_mbps",
                "virtio-blk sequential read, 64 KiB requests",
                Unit::MegabytesPerSecond,
            ),
            metric(
                "seq_write_mbps",
                "virtio-blk sequential write + flush, 64 KiB requests",
                Unit::MegabytesPerSecond,
            ),
            metric(
                "rand4k_read_iops",
                "virtio-blk 4 KiB random read, 1 in flight",
                Unit::OpsPerSecond,
            ),
            metric(
                "vsock_stream_mbps",
                "virtio-vsock stream guest → host Unix socket, 64 KiB packets",
                Unit::MegabytesPerSecond,
            ),
            metric(
                "net_tx_mbps",
                "virtio-net transmit to a tap, 1514-byte frames, delivered",
                Unit::MegabytesPerSecond,
            ),
        ],
        vmms: vmms
            .into_iter()
            .map(|(_, runs)| runs)
            .chain(std::iter::once(host))
            .collect(),
        notes,
    })
}

fn show(record: &BTreeMap<String, f64>) -> String {
    record
        .iter()
        .map(|(key, value)| format!("{key}={value:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A VMM that runs the unikernel's `blk-bench` on the image.
enum Guest {
    Wisp,
    Qemu(PathBuf),
}

impl Guest {
    fn name(&self) -> &'static str {
        match self {
            Guest::Wisp => crate::report_md::WISP,
            Guest::Qemu(_) => "qemu-microvm",
        }
    }

    /// The `cold` suite's command for the same VMM, plus the disk.
    fn command(&self, setup: &Setup, image: &Path, cmdline: &str) -> Command {
        match self {
            Guest::Wisp => {
                let mut cmd = Peer::Wisp.command(setup, cmdline);
                cmd.arg("--disk").arg(format!("path={}", image.display()));
                cmd
            }
            Guest::Qemu(qemu) => {
                let mut cmd = Peer::Qemu(qemu.clone()).command(setup, "");
                // microvm's virtio-mmio is legacy (version 1) unless told otherwise; the
                // unikernel drives only version 2.
                cmd.args(["-global", "virtio-mmio.force-legacy=false"])
                    .arg("-drive")
                    .arg(format!("id=d0,file={},format=raw,if=none", image.display()))
                    .args(["-device", "virtio-blk-device,drive=d0"])
                    .arg("-append")
                    .arg(format!("{cmdline} {QEMU_FIRST_SLOT}"));
                cmd
            }
        }
    }
}

/// One guest run: its three rates, or why it does not count.
fn guest_once(
    command: Command,
    timeout: Duration,
    tsc_hz: f64,
) -> Result<BTreeMap<String, f64>, String> {
    let launched = Launched::spawn(command, Input::Null, GUEST_LINE).map_err(|e| e.to_string())?;
    let finished = launched.finish(timeout).map_err(|e| e.to_string())?;
    if !finished.is_clean() {
        return Err(finished.failure());
    }
    if let Some(line) = finished
        .stdout
        .lines()
        .find(|line| line.starts_with("blk-bench: error:"))
    {
        return Err(line.to_string());
    }
    let mut record = BTreeMap::new();
    for (name, key) in [
        ("seq-read", "seq_read_mbps"),
        ("seq-write", "seq_write_mbps"),
    ] {
        if let Some(p) = parse_guest_pattern(&finished.stdout, name) {
            record.insert(key.to_string(), p.bytes as f64 / p.seconds(tsc_hz) / 1e6);
        }
    }
    if let Some(p) = parse_guest_pattern(&finished.stdout, "rand4k-read") {
        record.insert(
            "rand4k_read_iops".to_string(),
            p.requests as f64 / p.seconds(tsc_hz),
        );
    }
    if record.is_empty() {
        return Err(format!(
            "no blk-bench figures in the guest's output: {:?}",
            finished.stdout
        ));
    }
    Ok(record)
}

/// The figures of `blk-bench: <name> bytes=B requests=R … cycles=C …` in `output`.
pub fn parse_guest_pattern(output: &str, name: &str) -> Option<GuestPattern> {
    let fields = parse_fields(output, &format!("blk-bench: {name}"))?;
    let pattern = GuestPattern {
        bytes: *fields.get("bytes")?,
        requests: *fields.get("requests")?,
        cycles: *fields.get("cycles")?,
    };
    (pattern.cycles > 0).then_some(pattern)
}

/// The numeric `key=value` words of the first line of `output` that starts with `prefix`
/// followed by a space.
pub fn parse_fields(output: &str, prefix: &str) -> Option<BTreeMap<String, u64>> {
    let line = output
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix)?.strip_prefix(' '))?;
    Some(
        line.split_whitespace()
            .filter_map(|word| {
                let (key, value) = word.split_once('=')?;
                Some((key.to_string(), value.parse().ok()?))
            })
            .collect(),
    )
}

/// Writes the image: `IMAGE_BYTES` of non-zero data (no holes, so the host never reads
/// zero pages it did not store), synced.
fn write_image(path: &Path) -> Result<(), VirtioBenchError> {
    let err = |source| VirtioBenchError::Image {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::create(path).map_err(err)?;
    let mut chunk = vec![0u8; SEQ_REQUEST_BYTES];
    let mut state = RAND_SEED;
    for _ in 0..IMAGE_BYTES / SEQ_REQUEST_BYTES as u64 {
        for word in chunk.chunks_exact_mut(8) {
            state = xorshift64(state);
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&chunk).map_err(err)?;
    }
    file.sync_data().map_err(err)
}

/// The host side of one run, on the same file.
fn host_once(image: &Path) -> Result<BTreeMap<String, f64>, String> {
    let io = |pattern| {
        move |source| VirtioBenchError::HostIo {
            pattern,
            path: image.to_path_buf(),
            source,
        }
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io("open"))
        .map_err(|e| e.to_string())?;
    let requests = IMAGE_BYTES / SEQ_REQUEST_BYTES as u64;
    let mut buffer = vec![0u8; SEQ_REQUEST_BYTES];
    let mut record = BTreeMap::new();

    let start = Instant::now();
    for index in 0..requests {
        file.read_exact_at(&mut buffer, index * SEQ_REQUEST_BYTES as u64)
            .map_err(io("sequential read"))
            .map_err(|e| e.to_string())?;
    }
    let seconds = start.elapsed().as_secs_f64();
    record.insert(
        "seq_read_mbps".to_string(),
        IMAGE_BYTES as f64 / seconds / 1e6,
    );

    // Writes back what was just read, as the guest does (its buffers hold the last reads).
    let start = Instant::now();
    for index in 0..requests {
        file.write_all_at(&buffer, index * SEQ_REQUEST_BYTES as u64)
            .map_err(io("sequential write"))
            .map_err(|e| e.to_string())?;
    }
    file.sync_data()
        .map_err(io("fdatasync"))
        .map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    record.insert(
        "seq_write_mbps".to_string(),
        IMAGE_BYTES as f64 / seconds / 1e6,
    );

    let blocks = IMAGE_BYTES / RAND_REQUEST_BYTES as u64;
    let mut small = vec![0u8; RAND_REQUEST_BYTES];
    let start = Instant::now();
    for offset in random_offsets(RAND_SEED, blocks, RAND_REQUESTS) {
        file.read_exact_at(&mut small, offset * RAND_REQUEST_BYTES as u64)
            .map_err(io("random read"))
            .map_err(|e| e.to_string())?;
    }
    let seconds = start.elapsed().as_secs_f64();
    record.insert(
        "rand4k_read_iops".to_string(),
        RAND_REQUESTS as f64 / seconds,
    );
    Ok(record)
}

/// Marsaglia's xorshift64 (13, 7, 17), as in the guest.
pub fn xorshift64(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The block numbers (of `blocks`) the guest's random pattern visits, in order.
pub fn random_offsets(seed: u64, blocks: u64, count: u64) -> impl Iterator<Item = u64> {
    let mut state = seed;
    (0..count).map(move |_| {
        state = xorshift64(state);
        state % blocks.max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST_OUTPUT: &str = "hello from wisp unikernel\n\
        blk-bench: device at 0xd0002000 irq 5 (from the noxs page)\n\
        blk-bench: capacity=524288 sectors tsc_hz=2596122000 (from the command line)\n\
        blk-bench: seq-read bytes=268435456 requests=4096 depth=4 cycles=7339203271 MBps=94 iops=1448\n\
        blk-bench: seq-write bytes=268435456 requests=4096 depth=4 cycles=7596371822 MBps=91 iops=1399\n\
        blk-bench: rand4k-read bytes=8192000 requests=2000 depth=1 cycles=6743568745 MBps=1 iops=769\n\
        blk-bench: done\n";

    #[test]
    fn guest_patterns_are_parsed_from_the_console() {
        let read = parse_guest_pattern(GUEST_OUTPUT, "seq-read").unwrap();
        assert_eq!(
            read,
            GuestPattern {
                bytes: 268_435_456,
                requests: 4096,
                cycles: 7_339_203_271
            }
        );
        let rand = parse_guest_pattern(GUEST_OUTPUT, "rand4k-read").unwrap();
        assert_eq!(rand.requests, 2000);
        // 2000 requests in 6.7436e9 cycles at 2.596122 GHz: 769.9 IOPS, as the guest said.
        let iops = rand.requests as f64 / rand.seconds(2.596_122e9);
        assert!((iops - 769.9).abs() < 0.1, "{iops}");
        assert_eq!(parse_guest_pattern(GUEST_OUTPUT, "seq-rewrite"), None);
    }

    #[test]
    fn a_line_without_cycles_or_with_zero_cycles_is_no_figure() {
        assert_eq!(
            parse_guest_pattern("blk-bench: seq-read bytes=1 requests=1\n", "seq-read"),
            None
        );
        assert_eq!(
            parse_guest_pattern(
                "blk-bench: seq-read bytes=1 requests=1 cycles=0\n",
                "seq-read"
            ),
            None
        );
    }

    #[test]
    fn random_offsets_replay_the_guest_sequence() {
        // First xorshift64 (13, 7, 17) step from the seed, computed by hand from the shifts.
        let first = xorshift64(RAND_SEED);
        let mut x = RAND_SEED;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        assert_eq!(first, x);
        let offsets: Vec<u64> = random_offsets(RAND_SEED, 65_536, 3).collect();
        assert_eq!(offsets[0], first % 65_536);
        assert_eq!(offsets[1], xorshift64(first) % 65_536);
        assert!(offsets.iter().all(|&o| o < 65_536));
    }
}
