//! The frontend against a real virtiofsd: the vhost-user handshake, memory table and rings,
//! then FUSE requests posted by the test driver through the virtqueue and answered by
//! virtiofsd from the shared guest memory; a killed backend; sockets that are not backends.
//!
//! virtiofsd comes from `scripts/install-deps.sh` (~/.cache/wisp/virtiofsd/bin) or `PATH`
//! (`WISP_VIRTIOFSD` overrides); a machine without it fails these tests.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::virtio::test_driver::{TestGuest, MEM_SIZE};

const FUSE_LOOKUP: u32 = 1;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_INIT: u32 = 26;
const FUSE_ROOT_ID: u64 = 1;
/// The request queue (queue 0 is the high-priority one).
const REQ: usize = 1;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "wisp-vufs-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(p.join("share")).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// virtiofsd serving `dir/share` on `dir/vfs.sock`, killed on drop.
struct Virtiofsd(Child);

impl Virtiofsd {
    fn start(dir: &Path) -> (Virtiofsd, PathBuf) {
        let socket = dir.join("vfs.sock");
        let child = Command::new(wisp_test_support::virtiofsd())
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(dir.join("share"))
            .args([
                "--cache",
                "auto",
                "--sandbox",
                "none",
                "--log-level",
                "error",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn virtiofsd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "virtiofsd never made its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        (Virtiofsd(child), socket)
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Guest memory in a memfd, as `--mem-shared` gives it: the backend maps the same pages.
fn shared_memory() -> GuestMemoryMmap {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"wisp-test-guest".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(MEM_SIZE as u64).unwrap();
    GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(0),
        MEM_SIZE,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap()
}

fn config(socket: &Path) -> FsConfig {
    FsConfig {
        tag: "share0".into(),
        socket: socket.to_path_buf(),
        num_request_queues: 1,
        queue_size: 256,
    }
}

/// A FUSE request: `fuse_in_header` + `body`.
fn request(opcode: u32, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&(40 + body.len() as u32).to_le_bytes());
    r.extend_from_slice(&opcode.to_le_bytes());
    r.extend_from_slice(&unique.to_le_bytes());
    r.extend_from_slice(&nodeid.to_le_bytes());
    r.extend_from_slice(&[0u8; 16]); // uid, gid, pid, total_extlen, padding
    r.extend_from_slice(body);
    r
}

/// Posts one request on the request queue and waits for its reply; returns
/// (out header error, reply bytes after the header).
fn call(g: &mut TestGuest, req: &[u8], reply_len: u32) -> (i32, Vec<u8>) {
    let inb = g.alloc(req.len());
    g.write(inb, req);
    let outb = g.alloc(reply_len as usize);
    g.add_chain(
        REQ,
        &[(inb, req.len() as u32, false), (outb, reply_len, true)],
    );
    g.notify(REQ as u32);
    let mut used = Vec::new();
    g.pump_until(|g| {
        used.extend(g.take_used(REQ));
        !used.is_empty()
    });
    let out = g.read(outb, reply_len as usize);
    let len = u32::from_le_bytes(out[0..4].try_into().unwrap()) as usize;
    let error = i32::from_le_bytes(out[4..8].try_into().unwrap());
    assert_eq!(&out[8..16], &req[8..16], "reply for another request");
    assert_eq!(used[0].1 as usize, len, "used length is the reply length");
    (error, out[16..len.max(16)].to_vec())
}

fn fuse_init(g: &mut TestGuest) -> (i32, Vec<u8>) {
    let mut init = Vec::new();
    for v in [7u32, 38, 128 * 1024, 0, 0] {
        init.extend_from_slice(&v.to_le_bytes());
    }
    init.extend_from_slice(&[0u8; 44]);
    call(g, &request(FUSE_INIT, 1, 0, &init), 16 + 64)
}

fn running_guest(socket: &Path) -> TestGuest {
    let mem = shared_memory();
    let fs = VhostUserFs::new(&config(socket), &mem).expect("handshake with virtiofsd");
    let mut g = TestGuest::with_memory(mem, Box::new(fs));
    assert_eq!(g.read32(0x008), DEVICE_ID);
    let cfg = g.read_config(0, 40);
    assert_eq!(&cfg[..7], b"share0\0");
    assert_eq!(u32::from_le_bytes(cfg[36..40].try_into().unwrap()), 1);
    g.activate(2);
    g
}

#[test]
fn virtiofsd_answers_fuse_requests_posted_through_the_rings() {
    let dir = Scratch::new("fuse");
    std::fs::write(dir.0.join("share/hello"), b"hello from the host\n").unwrap();
    let (_daemon, socket) = Virtiofsd::start(&dir.0);
    let mut g = running_guest(&socket);
    assert_ne!(g.device_features() & (1 << VIRTIO_F_VERSION_1), 0);

    let (error, init) = fuse_init(&mut g);
    assert_eq!(error, 0, "FUSE_INIT refused");
    assert_eq!(u32::from_le_bytes(init[0..4].try_into().unwrap()), 7);

    let (error, entry) = call(
        &mut g,
        &request(FUSE_LOOKUP, 2, FUSE_ROOT_ID, b"hello\0"),
        16 + 128,
    );
    assert_eq!(error, 0, "LOOKUP hello");
    let nodeid = u64::from_le_bytes(entry[0..8].try_into().unwrap());
    let size = u64::from_le_bytes(entry[48..56].try_into().unwrap());
    assert_eq!(size, 20, "size in fuse_attr");

    let (error, open) = call(&mut g, &request(FUSE_OPEN, 3, nodeid, &[0u8; 8]), 16 + 16);
    assert_eq!(error, 0, "OPEN hello");
    let fh = u64::from_le_bytes(open[0..8].try_into().unwrap());
    let mut read = Vec::new();
    read.extend_from_slice(&fh.to_le_bytes());
    read.extend_from_slice(&0u64.to_le_bytes());
    read.extend_from_slice(&4096u32.to_le_bytes());
    read.extend_from_slice(&[0u8; 20]);
    let (error, data) = call(&mut g, &request(FUSE_READ, 4, nodeid, &read), 16 + 4096);
    assert_eq!(error, 0, "READ hello");
    assert_eq!(data, b"hello from the host\n");

    let (error, _) = call(
        &mut g,
        &request(FUSE_LOOKUP, 5, FUSE_ROOT_ID, b"missing\0"),
        16 + 128,
    );
    assert_eq!(error, -libc::ENOENT);
}

#[test]
fn a_killed_backend_stops_the_device_and_requests_fail_with_eio() {
    let dir = Scratch::new("kill");
    let (daemon, socket) = Virtiofsd::start(&dir.0);
    let mut g = running_guest(&socket);
    assert_eq!(fuse_init(&mut g).0, 0);
    drop(daemon);
    g.pump_until(|g| {
        g.transport
            .lock()
            .unwrap()
            .device_mut::<VhostUserFs>()
            .unwrap()
            .is_orphaned()
    });
    let (error, _) = call(
        &mut g,
        &request(FUSE_LOOKUP, 9, FUSE_ROOT_ID, b"x\0"),
        16 + 128,
    );
    assert_eq!(error, -libc::EIO);
    // The driver negotiated EVENT_IDX (virtiofsd offers it): avail_event must follow what the
    // device consumed, or a real driver would never kick again.
    assert_ne!(g.device_features() & (1 << VIRTIO_RING_F_EVENT_IDX), 0);
    let q = g.queues[REQ];
    let avail_idx = u16::from_le_bytes(g.read(q.avail + 2, 2).try_into().unwrap());
    let event_at = q.used + 4 + 8 * u64::from(q.size);
    let avail_event = u16::from_le_bytes(g.read(event_at, 2).try_into().unwrap());
    assert_eq!(avail_event, avail_idx, "avail_event left behind");
    // And again: the device keeps answering, it does not wedge.
    let (error, _) = call(
        &mut g,
        &request(FUSE_LOOKUP, 10, FUSE_ROOT_ID, b"y\0"),
        16 + 128,
    );
    assert_eq!(error, -libc::EIO);
}

fn new_error(socket: &Path) -> String {
    VhostUserFs::new(&config(socket), &shared_memory())
        .unwrap_err()
        .to_string()
}

#[test]
fn a_missing_socket_or_a_regular_file_is_refused_with_a_clear_error() {
    let dir = Scratch::new("bad");
    let err = new_error(&dir.0.join("nope.sock"));
    assert!(err.contains("does not exist"), "{err}");
    let file = dir.0.join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = new_error(&file);
    assert!(err.contains("is not a Unix socket"), "{err}");
}

#[test]
fn a_socket_that_does_not_speak_vhost_user_is_refused() {
    let dir = Scratch::new("notvu");
    let path = dir.0.join("http.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let err = new_error(&path);
    assert!(
        err.contains("does not answer as a vhost-user backend"),
        "{err}"
    );
    server.join().unwrap();
}

#[test]
fn anonymous_guest_memory_is_refused_before_any_ring_is_sent() {
    let dir = Scratch::new("anon");
    let (_daemon, socket) = Virtiofsd::start(&dir.0);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let err = VhostUserFs::new(&config(&socket), &mem)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--mem-shared"), "{err}");
}

#[test]
fn tags_and_queue_counts_are_checked() {
    let long = "t".repeat(TAG_LEN + 1);
    let cfg = FsConfig {
        tag: long,
        ..config(Path::new("/nonexistent"))
    };
    let err = VhostUserFs::new(&cfg, &shared_memory())
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 to 36 bytes"), "{err}");
    assert!(check_tag(&"t".repeat(TAG_LEN)).is_ok());
    assert!(check_tag("").is_err());
    let cfg = FsConfig {
        num_request_queues: 0,
        ..config(Path::new("/nonexistent"))
    };
    assert!(VhostUserFs::new(&cfg, &shared_memory()).is_err());
}
