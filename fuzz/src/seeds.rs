//! Valid inputs for every target, the starting points of the corpus: what a well-behaved
//! driver, keyboard driver, kernel image or `wispd` would feed. `examples/seeds.rs` writes them
//! to seeds/<target>/; the fuzzer bends them from there.

use std::path::PathBuf;

use wisp_api::{
    BootSource, Drive, Entropy, LogLevel, Logger, MachineConfig, Metrics, NetworkInterface,
    VmConfig, Vsock,
};

use crate::input::Output;
use crate::virtq::{QueueLayout, F_INDIRECT, F_NEXT, F_WRITE, ROUND_RESET};

/// Named inputs of one target.
pub type Seeds = Vec<(&'static str, Vec<u8>)>;

/// A guest-memory image under construction: descriptor tables, available rings, buffers.
struct Image(Vec<u8>);

impl Image {
    fn new(len: usize) -> Self {
        Image(vec![0; len])
    }

    fn put(&mut self, addr: u64, bytes: &[u8]) {
        let a = addr as usize;
        self.0[a..a + bytes.len()].copy_from_slice(bytes);
    }

    fn desc(&mut self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.put(table + 16 * u64::from(i), &d);
    }

    /// Publishes `heads` in the available ring (index = their count).
    fn avail(&mut self, q: &QueueLayout, heads: &[u16]) {
        for (i, h) in heads.iter().enumerate() {
            self.put(q.avail + 4 + 2 * i as u64, &h.to_le_bytes());
        }
        self.put(q.avail + 2, &(heads.len() as u16).to_le_bytes());
    }
}

/// Queue `i` of a device: 16 entries, its three rings in 1 KiB at `0x400 * i` (queues never
/// share a ring); buffers go from 0x1000 up.
fn queue(i: u64) -> QueueLayout {
    QueueLayout {
        size: 16,
        desc: 0x400 * i,
        avail: 0x400 * i + 0x100,
        used: 0x400 * i + 0x200,
    }
}

/// Start of an input: layouts, ready mask (all queues), image.
fn start(queues: &[QueueLayout], image: &Image) -> Output {
    let mut o = Output::default();
    for q in queues {
        o.bytes(&q.encode());
    }
    o.u8(0x7f).u16(image.0.len() as u16).bytes(&image.0);
    o
}

/// A round that publishes one more chain head (one guest store into the available ring and
/// one into its index) and notifies the queues in `notify`.
fn round_adding(o: &mut Output, q: &QueueLayout, slot: u16, head: u16, notify: u8) {
    o.u8(notify).u8(2);
    o.u16((q.avail + 4 + 2 * u64::from(slot)) as u16)
        .u8(2)
        .u16(head);
    o.u16((q.avail + 2) as u16).u8(2).u16(slot + 1);
}

/// virtio-rng: one single buffer, one two-buffer chain, one indirect chain; then a round
/// adding another buffer, and a device reset.
pub fn virtio_rng() -> Seeds {
    let q = queue(0);
    let mut img = Image::new(0x1a00);
    img.desc(q.desc, 0, 0x1000, 64, F_WRITE, 0);
    img.desc(q.desc, 1, 0x1100, 16, F_WRITE | F_NEXT, 2);
    img.desc(q.desc, 2, 0x1200, 16, F_WRITE, 0);
    img.desc(q.desc, 3, 0x1800, 32, F_INDIRECT, 0);
    img.desc(0x1800, 0, 0x1300, 8, F_WRITE | F_NEXT, 1);
    img.desc(0x1800, 1, 0x1400, 8, F_WRITE, 0);
    img.desc(q.desc, 4, 0x1500, 100, F_WRITE, 0);
    img.avail(&q, &[0, 1, 3]);
    let mut o = start(&[q], &img);
    let simple = o.0.clone();
    round_adding(&mut o, &q, 3, 4, 1);
    let more = o.0.clone();
    o.u8(ROUND_RESET).u8(0);
    vec![("three_chains", simple), ("more", more), ("reset", o.0)]
}

fn blk_request(img: &mut Image, q: &QueueLayout, first: u16, at: u64, t: u32, data: u32) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&t.to_le_bytes());
    h[8..16].copy_from_slice(&1u64.to_le_bytes());
    img.put(at, &h);
    let data_flags = if t == 1 { 0 } else { F_WRITE };
    if data == 0 {
        img.desc(q.desc, first, at, 16, F_NEXT, first + 1);
        img.desc(q.desc, first + 1, at + 0x10, 1, F_WRITE, 0);
    } else {
        img.desc(q.desc, first, at, 16, F_NEXT, first + 1);
        img.desc(
            q.desc,
            first + 1,
            at + 0x20,
            data,
            data_flags | F_NEXT,
            first + 2,
        );
        img.desc(q.desc, first + 2, at + 0x10, 1, F_WRITE, 0);
    }
}

/// virtio-blk (first byte: read-only flag): a read, a write, a flush and a GET_ID.
pub fn virtio_block() -> Seeds {
    let q = queue(0);
    let mut img = Image::new(0x1e00);
    blk_request(&mut img, &q, 0, 0x1000, 0, 1024);
    blk_request(&mut img, &q, 3, 0x1800, 1, 512);
    blk_request(&mut img, &q, 6, 0x1c00, 4, 0);
    blk_request(&mut img, &q, 8, 0x1d00, 8, 20);
    img.avail(&q, &[0, 3, 6, 8]);
    let rw = start(&[q], &img).0;
    let mut o = Output::default();
    o.u8(0).bytes(&rw);
    let mut ro = Output::default();
    ro.u8(1).bytes(&rw);
    vec![("rw", o.0), ("read_only", ro.0)]
}

fn vsock_hdr(op: u16, len: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..8].copy_from_slice(&3u64.to_le_bytes());
    h[8..16].copy_from_slice(&2u64.to_le_bytes());
    h[16..20].copy_from_slice(&1234u32.to_le_bytes());
    h[20..24].copy_from_slice(&52u32.to_le_bytes());
    h[24..28].copy_from_slice(&len.to_le_bytes());
    h[28..30].copy_from_slice(&1u16.to_le_bytes());
    h[30..32].copy_from_slice(&op.to_le_bytes());
    h[36..40].copy_from_slice(&65536u32.to_le_bytes());
    h
}

/// virtio-vsock: the guest connects to host port 52, the host accepts and writes, the guest
/// sends data and shuts down; a host process connects to guest port 5000.
pub fn virtio_vsock() -> Seeds {
    let (rx, tx, ev) = (queue(0), queue(1), queue(2));
    let mut img = Image::new(0x1b00);
    for i in 0..8u16 {
        img.desc(rx.desc, i, 0x1000 + 0x100 * u64::from(i), 0x100, F_WRITE, 0);
    }
    img.avail(&rx, &[0, 1, 2, 3, 4, 5, 6, 7]);
    img.put(0x1800, &vsock_hdr(1, 0));
    img.desc(tx.desc, 0, 0x1800, 44, 0, 0);
    img.put(0x1900, &vsock_hdr(5, 5));
    img.put(0x1900 + 44, b"hello");
    img.desc(tx.desc, 1, 0x1900, 44, F_NEXT, 2);
    img.desc(tx.desc, 2, 0x1900 + 44, 5, 0, 0);
    let mut shut = vsock_hdr(4, 0);
    shut[32..36].copy_from_slice(&3u32.to_le_bytes());
    img.put(0x1a00, &shut);
    img.desc(tx.desc, 3, 0x1a00, 44, 0, 0);
    img.avail(&tx, &[0]);
    let mut o = start(&[rx, tx, ev], &img);
    // Round 1: the host accepts the guest's connection and writes to it; rx notified.
    o.u8(1).u8(0).u8(1).u8(5).bytes(b"world");
    // Round 2: the guest sends data, then shuts down.
    round_adding(&mut o, &tx, 1, 1, 2);
    o.u8(0);
    round_adding(&mut o, &tx, 2, 3, 3);
    o.u8(0);
    let guest_side = o.0.clone();
    // A host process connects to guest port 5000 and writes its handshake and data.
    let mut h = start(&[rx, tx, ev], &img);
    h.u8(1).u8(0).u8(2).u16(5000);
    h.u8(1).u8(0).u8(4).u8(3).bytes(b"abc");
    vec![("guest_connects", guest_side), ("host_connects", h.0)]
}

fn arp_request() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&[0x06, 0, 0xac, 0x10, 0, 2]);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x06, 0, 0xac, 0x10, 0, 2, 10, 0, 0, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 0, 1]);
    f
}

/// virtio-net (first byte: bit 0 gives the device a MAC): rx buffers, one transmitted ARP
/// request, then the host puts two frames into the tap.
pub fn virtio_net() -> Seeds {
    let (rx, tx) = (queue(0), queue(1));
    let mut img = Image::new(0x1900);
    for i in 0..4u16 {
        img.desc(rx.desc, i, 0x1000 + 0x200 * u64::from(i), 0x200, F_WRITE, 0);
    }
    img.avail(&rx, &[0, 1, 2, 3]);
    let frame = arp_request();
    img.put(0x1800, &[0; 12]);
    img.put(0x180c, &frame);
    img.desc(tx.desc, 0, 0x1800, 12, F_NEXT, 1);
    img.desc(tx.desc, 1, 0x180c, frame.len() as u32, 0, 0);
    img.avail(&tx, &[0]);
    let mut o = Output::default();
    o.u8(1).bytes(&start(&[rx, tx], &img).0);
    o.u8(3).u8(0).u8(2);
    o.u16(frame.len() as u16).bytes(&frame);
    o.u16(60).bytes(&[0x5a; 60]);
    vec![("arp_and_rx", o.0)]
}

/// An MMIO write, read or event-loop run in the format of the virtio_mmio target.
fn mmio_w(o: &mut Output, off: u16, v: u32) {
    o.u8(2 << 2).u16(off).u64(u64::from(v));
}

fn mmio_r(o: &mut Output, off: u16) {
    o.u8(1 | (2 << 2)).u16(off);
}

/// The virtio_mmio target: a driver's whole bring-up on each device, then a notification.
pub fn virtio_mmio() -> Seeds {
    let mut out = Vec::new();
    for (name, dev, queues) in [("rng", 0u8, 1u32), ("block", 1, 1), ("vsock", 2, 3)] {
        let mut o = Output::default();
        o.u8(dev).u16(0);
        mmio_r(&mut o, 0x000);
        mmio_w(&mut o, 0x070, 0);
        mmio_w(&mut o, 0x070, 1);
        mmio_w(&mut o, 0x070, 3);
        mmio_w(&mut o, 0x014, 1);
        mmio_r(&mut o, 0x010);
        mmio_w(&mut o, 0x024, 1);
        mmio_w(&mut o, 0x020, 1);
        mmio_w(&mut o, 0x070, 11);
        mmio_r(&mut o, 0x070);
        for q in 0..queues {
            let l = queue(u64::from(q));
            mmio_w(&mut o, 0x030, q);
            mmio_r(&mut o, 0x034);
            mmio_w(&mut o, 0x038, 16);
            mmio_w(&mut o, 0x080, l.desc as u32);
            mmio_w(&mut o, 0x090, l.avail as u32);
            mmio_w(&mut o, 0x0a0, l.used as u32);
            mmio_w(&mut o, 0x044, 1);
            mmio_r(&mut o, 0x044);
        }
        mmio_w(&mut o, 0x070, 15);
        o.u8(2).u16(0);
        mmio_w(&mut o, 0x050, 0);
        o.u8(2).u16(0);
        mmio_r(&mut o, 0x060);
        mmio_w(&mut o, 0x064, 1);
        o.u8(1).u16(0x100);
        mmio_r(&mut o, 0x0fc);
        mmio_w(&mut o, 0x070, 0);
        o.u8(2).u16(0);
        out.push((name, o.0));
    }
    out
}

/// The i8042 target: Linux's controller probe, the keyboard probe, a Ctrl-Alt-Del, a reboot.
pub fn i8042() -> Seeds {
    let (w60, w64, r60, r64, drain, cad) = (0u8, 1u8, 2u8, 3u8, 4u8, 5u8);
    let probe = [
        (w64, 0x20),
        (r64, 0),
        (r60, 0),
        (w64, 0x60),
        (w60, 0x65),
        (w64, 0xaa),
        (r60, 0),
        (w64, 0xa9),
        (r60, 0),
        (w64, 0xd3),
        (w60, 0x5a),
        (r60, 0),
        (w60, 0xff),
        (drain, 0),
        (w60, 0xf2),
        (drain, 0),
        (w60, 0xf0),
        (w60, 0x00),
        (drain, 0),
        (w60, 0xf4),
        (drain, 0),
        (cad, 0),
        (drain, 0),
        (w64, 0xfe),
    ];
    vec![(
        "linux_probe",
        probe.iter().flat_map(|&(k, v)| [k, v]).collect(),
    )]
}

fn elf(pvh: bool) -> Vec<u8> {
    let mut f = vec![0u8; 0x200];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little-endian
    f[6] = 1;
    f[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    f[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    f[0x18..0x20].copy_from_slice(&0x10_0000u64.to_le_bytes()); // entry
    f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // phoff
    f[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    f[0x38..0x3a].copy_from_slice(&(1 + u16::from(pvh)).to_le_bytes()); // phnum
    let ph = |f: &mut Vec<u8>, at: usize, p_type: u32, off: u64, addr: u64, size: u64| {
        f[at..at + 4].copy_from_slice(&p_type.to_le_bytes());
        f[at + 4..at + 8].copy_from_slice(&5u32.to_le_bytes());
        f[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
        f[at + 16..at + 24].copy_from_slice(&addr.to_le_bytes());
        f[at + 24..at + 32].copy_from_slice(&addr.to_le_bytes());
        f[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        f[at + 40..at + 48].copy_from_slice(&size.to_le_bytes());
        f[at + 48..at + 56].copy_from_slice(&16u64.to_le_bytes());
    };
    ph(&mut f, 64, 1, 0x180, 0x10_0000, 0x80);
    if pvh {
        // PT_NOTE: "Xen" note type 18 (XEN_ELFNOTE_PHYS32_ENTRY) with a 32-bit entry.
        ph(&mut f, 120, 4, 0x140, 0, 24);
        f[0x140..0x144].copy_from_slice(&4u32.to_le_bytes());
        f[0x144..0x148].copy_from_slice(&4u32.to_le_bytes());
        f[0x148..0x14c].copy_from_slice(&18u32.to_le_bytes());
        f[0x14c..0x150].copy_from_slice(b"Xen\0");
        f[0x150..0x154].copy_from_slice(&0x10_0000u32.to_le_bytes());
    }
    f[0x180..0x184].copy_from_slice(&[0xf4, 0xeb, 0xfd, 0x90]); // hlt; jmp
    f
}

fn bzimage() -> Vec<u8> {
    let setup_sects = 1u8;
    let mut f = vec![0u8; 512 * (1 + usize::from(setup_sects)) + 0x100];
    f[0x1f1] = setup_sects;
    f[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    f[0x202..0x206].copy_from_slice(b"HdrS");
    f[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    f[0x211] = 1; // LOADED_HIGH
    f[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    f[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
    f[0x260..0x264].copy_from_slice(&0x40_0000u32.to_le_bytes()); // init_size
    f
}

/// The kernel_loader target: an ELF with and without a PVH note, a bzImage.
pub fn kernel_loader() -> Seeds {
    vec![
        ("elf", elf(false)),
        ("elf_pvh", elf(true)),
        ("bzimage", bzimage()),
    ]
}

/// A configuration with one of everything (as the control-page unit tests use).
pub fn sample_config() -> VmConfig {
    VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: "/boot/vmlinux".into(),
            initrd_path: Some("/boot/initrd".into()),
            boot_args: Some("console=ttyS0 quiet".into()),
        }),
        machine_config: MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 256,
            smt: true,
            ..Default::default()
        },
        drives: vec![Drive {
            drive_id: "root".into(),
            path_on_host: PathBuf::from("/img/root.ext4"),
            is_root_device: true,
            is_read_only: true,
            rate_limiter: None,
            ..Default::default()
        }],
        network_interfaces: vec![NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: Some("06:00:AC:10:00:02".into()),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
            ..Default::default()
        }],
        vsock: Some(Vsock {
            guest_cid: 3,
            uds_path: "/run/v.sock".into(),
            ..Default::default()
        }),
        entropy: Some(Entropy::default()),
        fs: Vec::new(),
        logger: Some(Logger {
            log_path: "/run/wisp.log".into(),
            level: LogLevel::Debug,
            show_level: true,
            show_log_origin: false,
            ..Default::default()
        }),
        metrics: Some(Metrics {
            metrics_path: "/run/wisp.metrics".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The control_page target: the sample page as written; an empty page given memory and
/// vCPUs; the sample page with its device count raised past the table.
pub fn control_page() -> Seeds {
    use wisp_api::control_page::layout::{OFF_DEVICE_COUNT, OFF_MEM_MIB, OFF_VCPUS};
    let mut minimal = Output::default();
    minimal.u8(0);
    minimal.u32(OFF_MEM_MIB as u32).u8(4).u32(128);
    minimal.u32(OFF_VCPUS as u32).u8(4).u32(1);
    let mut count = Output::default();
    count.u8(3).u32(OFF_DEVICE_COUNT as u32).u8(4).u32(20);
    vec![
        ("sample", vec![1]),
        ("minimal", minimal.0),
        ("device_count", count.0),
    ]
}

/// Every target's seeds.
pub fn all() -> Vec<(&'static str, Seeds)> {
    vec![
        ("virtio_block", virtio_block()),
        ("virtio_net", virtio_net()),
        ("virtio_vsock", virtio_vsock()),
        ("virtio_rng", virtio_rng()),
        ("virtio_mmio", virtio_mmio()),
        ("i8042", i8042()),
        ("kernel_loader", kernel_loader()),
        ("control_page", control_page()),
    ]
}
