//! A hostile guest driver for one virtio-mmio device over a small guest-memory image, and the
//! invariants the device must keep whatever the image holds.
//!
//! Input layout (read with [`Input`], so any byte string is valid):
//! - per queue of the device, 4 bytes: `size = 1 << (b0 % 9)` (1..=256, the transport refuses
//!   what the device does not allow), descriptor table, available ring and used ring at
//!   `b1 << 8`, `b2 << 8`, `b3 << 8` (rings may overlap one another and the data: a hostile
//!   guest may do that too; some lie partly outside memory and the transport must refuse them);
//! - 1 byte: which queues the driver makes ready (bit i = queue i);
//! - a u16 length and that many bytes: the memory image at guest-physical 0 (descriptor tables,
//!   available rings with their indexes, buffers: all arbitrary);
//! - then rounds, each: a control byte (bit i: notify queue i; bit 7: reset the device and set
//!   it up again), a patch count and that many guest writes `(u16 address, u8 length, bytes)`,
//!   then the host side's own actions for this device (see the target), then the notifications.
//!
//! Invariants, checked after every run of the event loop:
//! - no panic, no out-of-bounds access (vm-memory refuses any access outside guest memory;
//!   the fuzz build runs under AddressSanitizer);
//! - the event loop goes idle (a device never keeps itself busy forever);
//! - whenever the rings and the device-writable buffers do not overlap one another (so what
//!   the guest offered is exactly what the device read): every used element names a chain
//!   head the driver made available, with a used length no larger than that chain's
//!   device-writable bytes, no more used elements than the queue holds are added at once, and
//!   the device changed no guest byte outside the used rings and the device-writable buffers
//!   of the chains it returned.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use wisp_devices::virtio::mmio::{
    STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};
use wisp_devices::virtio::{MmioTransport, VirtioDevice, REG_QUEUE_NOTIFY};

use crate::input::Input;

/// Guest memory: a few pages, so that the fuzzer's image covers all of it.
pub const MEM_SIZE: usize = 64 << 10;
/// Most rounds one input runs (bounds the time one input takes).
pub const MAX_ROUNDS: usize = 16;
/// Most guest writes in one round.
pub const MAX_PATCHES: u8 = 8;
/// Descriptor flags (virtio 1.2 §2.7.5).
pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;
/// Control byte bit: reset the device and set it up again.
pub const ROUND_RESET: u8 = 0x80;

/// Event-loop rounds after which a device that still has work is declared stuck.
const MAX_PUMP: usize = 2000;
/// Descriptors the invariant checker reads per run before it gives up checking that run.
const WALK_BUDGET: usize = 1 << 12;

const REG_STATUS: u64 = 0x070;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;

/// Where the driver puts one virtqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLayout {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

impl QueueLayout {
    pub fn read(inp: &mut Input) -> Self {
        let b = [inp.u8(), inp.u8(), inp.u8(), inp.u8()];
        QueueLayout {
            size: 1 << (b[0] % 9),
            desc: u64::from(b[1]) << 8,
            avail: u64::from(b[2]) << 8,
            used: u64::from(b[3]) << 8,
        }
    }

    /// The 4 bytes [`QueueLayout::read`] turns into this layout (for seeds).
    pub fn encode(&self) -> [u8; 4] {
        [
            self.size.trailing_zeros() as u8,
            (self.desc >> 8) as u8,
            (self.avail >> 8) as u8,
            (self.used >> 8) as u8,
        ]
    }

    fn avail_range(&self) -> (u64, u64) {
        (self.avail, 6 + 2 * u64::from(self.size))
    }

    fn used_range(&self) -> (u64, u64) {
        (self.used, 6 + 8 * u64::from(self.size))
    }
}

/// A queue the device accepted (QueueReady reads back 1).
#[derive(Debug, Clone, Copy)]
struct LiveQueue {
    layout: QueueLayout,
    /// Used index as of the last check.
    used_seen: u16,
    /// The guest wrote into this used ring itself: its contents no longer tell what the
    /// device did, so the used-ring checks stop for it.
    tainted: bool,
}

/// The guest: memory, the transport around the device, the VMM's event loop.
pub struct Guest {
    pub mem: GuestMemoryMmap,
    pub transport: Arc<Mutex<MmioTransport>>,
    em: EventManager<Arc<Mutex<MmioTransport>>>,
    layouts: Vec<QueueLayout>,
    ready_mask: u8,
    live: Vec<Option<LiveQueue>>,
}

impl Guest {
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        let mem =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("map guest memory");
        let transport = Arc::new(Mutex::new(
            MmioTransport::new(mem.clone(), device).expect("virtio-mmio transport"),
        ));
        let mut em = EventManager::new().expect("event manager");
        em.add_subscriber(transport.clone());
        Guest {
            mem,
            transport,
            em,
            layouts: Vec::new(),
            ready_mask: 0,
            live: Vec::new(),
        }
    }

    pub fn read32(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.transport
            .lock()
            .expect("transport lock")
            .mmio_read(MmioAddress(0), offset, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write32(&self, offset: u64, v: u32) {
        self.transport.lock().expect("transport lock").mmio_write(
            MmioAddress(0),
            offset,
            &v.to_le_bytes(),
        );
    }

    /// Reset, negotiate every offered feature, program the queues, DRIVER_OK (virtio 1.2
    /// §3.1.1), then run the event loop (activation serves what the image already queued).
    pub fn start(&mut self, layouts: &[QueueLayout], ready_mask: u8) {
        self.layouts = layouts.to_vec();
        self.ready_mask = ready_mask;
        self.setup();
    }

    fn setup(&mut self) {
        self.write32(REG_STATUS, 0);
        self.write32(REG_STATUS, STATUS_ACKNOWLEDGE);
        self.write32(REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.write32(0x014, 0);
        let lo = self.read32(0x010);
        self.write32(0x014, 1);
        let hi = self.read32(0x010);
        self.write32(0x024, 0);
        self.write32(0x020, lo);
        self.write32(0x024, 1);
        self.write32(0x020, hi);
        let features_ok = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        self.write32(REG_STATUS, features_ok);
        assert_ne!(
            self.read32(REG_STATUS) & STATUS_FEATURES_OK,
            0,
            "the device refused the features it offered"
        );
        self.live = vec![None; self.layouts.len()];
        for (i, q) in self.layouts.clone().into_iter().enumerate() {
            if self.ready_mask & (1 << i) == 0 {
                continue;
            }
            // A driver hands the device a zeroed used ring (flags and index); the checker
            // counts used elements from index 0, where virtio-queue starts too.
            self.guest_write(q.used, &[0; 4]);
            self.write32(REG_QUEUE_SEL, i as u32);
            self.write32(REG_QUEUE_NUM, u32::from(q.size));
            for (reg, addr) in [(0x080, q.desc), (0x090, q.avail), (0x0a0, q.used)] {
                self.write32(reg, addr as u32);
                self.write32(reg + 4, (addr >> 32) as u32);
            }
            self.write32(REG_QUEUE_READY, 1);
            if self.read32(REG_QUEUE_READY) == 1 {
                // virtio-queue starts counting at 0 whatever the ring holds.
                self.live[i] = Some(LiveQueue {
                    layout: q,
                    used_seen: 0,
                    tainted: false,
                });
            }
        }
        self.write32(REG_STATUS, features_ok | STATUS_DRIVER_OK);
        self.pump_checked();
    }

    /// One round of the input: guest writes, host actions, notifications, event loop.
    /// Returns false when the input is used up.
    pub fn round(&mut self, inp: &mut Input, host: &mut dyn FnMut(&mut Input)) -> bool {
        if inp.is_empty() {
            return false;
        }
        let control = inp.u8();
        let patches = inp.u8() % (MAX_PATCHES + 1);
        for _ in 0..patches {
            let addr = u64::from(inp.u16());
            let len = usize::from(inp.u8());
            let bytes = inp.bytes(len);
            self.guest_write(addr, bytes);
        }
        host(inp);
        if control & ROUND_RESET != 0 {
            self.setup();
            return true;
        }
        for q in 0..self.layouts.len().min(7) {
            if control & (1 << q) != 0 {
                self.write32(REG_QUEUE_NOTIFY, q as u32);
            }
        }
        self.pump_checked();
        true
    }

    /// A guest store into its own memory (clipped at the end of memory).
    pub fn guest_write(&mut self, addr: u64, bytes: &[u8]) {
        let Ok(start) = usize::try_from(addr) else {
            return;
        };
        let end = start.saturating_add(bytes.len()).min(MEM_SIZE);
        if start >= end {
            return;
        }
        let bytes = &bytes[..end - start];
        self.mem
            .write_slice(bytes, GuestAddress(addr))
            .expect("write inside guest memory");
        for q in self.live.iter_mut().flatten() {
            if overlaps((addr, bytes.len() as u64), q.layout.used_range()) {
                q.tainted = true;
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut m = vec![0u8; MEM_SIZE];
        self.mem
            .read_slice(&mut m, GuestAddress(0))
            .expect("read guest memory");
        m
    }

    /// Runs the event loop until nothing is ready.
    pub fn pump(&mut self) {
        for _ in 0..MAX_PUMP {
            match self.em.run_with_timeout(0) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => panic!("event loop failed: {e}"),
            }
        }
        panic!("the event loop never went idle: the device keeps itself busy");
    }

    /// Runs the event loop and checks the invariants of the module doc on what it did.
    pub fn pump_checked(&mut self) {
        let before = self.snapshot();
        let plan = Plan::new(&before, &self.live);
        self.pump();
        let after = self.snapshot();
        plan.check(&before, &after, &mut self.live);
    }
}

/// Whether two `(start, length)` ranges share a byte.
fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.1 != 0 && b.1 != 0 && a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

fn le16(m: &[u8], addr: u64) -> Option<u16> {
    let a = usize::try_from(addr).ok()?;
    let b = m.get(a..a.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn le32(m: &[u8], addr: u64) -> Option<u32> {
    Some(u32::from(le16(m, addr)?) | (u32::from(le16(m, addr.checked_add(2)?)?) << 16))
}

fn le64(m: &[u8], addr: u64) -> Option<u64> {
    Some(u64::from(le32(m, addr)?) | (u64::from(le32(m, addr.checked_add(4)?)?) << 32))
}

/// The split-ring descriptor at `at`: address, length, flags, next.
fn desc_at(m: &[u8], at: u64) -> Option<(u64, u32, u16, u16)> {
    if at.checked_add(16)? > m.len() as u64 {
        return None;
    }
    Some((
        le64(m, at)?,
        le32(m, at + 8)?,
        le16(m, at + 12)?,
        le16(m, at + 14)?,
    ))
}

/// A descriptor chain as virtio-queue walks it (indirect tables included), read from the
/// memory the driver left before the device ran.
#[derive(Debug, Default, Clone)]
struct Walk {
    /// Device-writable buffers `(address, length)`.
    writable: Vec<(u64, u64)>,
    /// Indirect descriptor tables read on the way.
    tables: Vec<(u64, u64)>,
    /// Total device-writable bytes: the most a used element for this chain may claim.
    bound: u64,
}

/// Walks the chain at `head` the way `virtio_queue::DescriptorChain` does; `None` when the
/// checker's budget ran out.
fn walk(m: &[u8], q: &QueueLayout, head: u16, budget: &mut usize) -> Option<Walk> {
    let mut w = Walk::default();
    let (mut table, mut size, mut ttl, mut idx) = (
        q.desc,
        u32::from(q.size),
        u32::from(q.size),
        u32::from(head),
    );
    let mut indirect = false;
    let mut yielded = 0u32;
    while ttl != 0 && idx < size {
        *budget = budget.checked_sub(1)?;
        let Some(at) = table.checked_add(u64::from(idx) * 16) else {
            break;
        };
        let Some((addr, len, flags, next)) = desc_at(m, at) else {
            break;
        };
        if flags & F_INDIRECT != 0 {
            if indirect || len % 16 != 0 || len / 16 > u32::from(u16::MAX) {
                break;
            }
            w.tables.push((addr, u64::from(len)));
            (table, size, ttl, idx, indirect) = (addr, len / 16, len / 16, 0, true);
            continue;
        }
        let Some(y) = yielded.checked_add(len) else {
            break;
        };
        yielded = y;
        if flags & F_WRITE != 0 {
            w.writable.push((addr, u64::from(len)));
            w.bound += u64::from(len);
        }
        if flags & F_NEXT != 0 {
            idx = u32::from(next);
            ttl -= 1;
        } else {
            ttl = 0;
        }
    }
    Some(w)
}

/// What the driver offered before a run of the event loop, and whether it is clean enough
/// (no ring or table overlapping another ring or a device-writable buffer) to check exactly.
struct Plan {
    clean: bool,
    /// Per live queue: the chains at every head in its available ring.
    chains: Vec<Vec<(u16, Walk)>>,
}

impl Plan {
    fn new(m: &[u8], live: &[Option<LiveQueue>]) -> Plan {
        let mut budget = WALK_BUDGET;
        let mut clean = true;
        let mut rings = Vec::new(); // (range, written by the device)
        let mut writable = Vec::new();
        let mut chains = Vec::new();
        for q in live {
            let Some(q) = q else {
                chains.push(Vec::new());
                continue;
            };
            let l = q.layout;
            rings.push(((l.desc, 16 * u64::from(l.size)), false));
            rings.push((l.avail_range(), false));
            rings.push((l.used_range(), true));
            let mut heads: Vec<u16> = (0..u64::from(l.size))
                .filter_map(|i| le16(m, l.avail + 4 + 2 * i))
                .collect();
            heads.sort_unstable();
            heads.dedup();
            let mut mine = Vec::new();
            for head in heads {
                match walk(m, &l, head, &mut budget) {
                    Some(w) => {
                        rings.extend(w.tables.iter().map(|&t| (t, false)));
                        writable.extend(w.writable.iter().copied());
                        mine.push((head, w));
                    }
                    None => clean = false,
                }
            }
            chains.push(mine);
        }
        // The device writes used rings and writable buffers; nothing it writes may be read
        // back as a ring or table during the same run.
        for (i, &(a, a_written)) in rings.iter().enumerate() {
            for &(b, b_written) in &rings[i + 1..] {
                if (a_written || b_written) && overlaps(a, b) {
                    clean = false;
                }
            }
            if writable.iter().any(|&w| overlaps(w, a)) {
                clean = false;
            }
        }
        Plan { clean, chains }
    }

    fn check(&self, before: &[u8], after: &[u8], live: &mut [Option<LiveQueue>]) {
        let mut allowed = vec![false; MEM_SIZE];
        let mut mark = |(start, len): (u64, u64)| {
            let s = usize::try_from(start).unwrap_or(usize::MAX).min(MEM_SIZE);
            let e = usize::try_from(start.saturating_add(len))
                .unwrap_or(usize::MAX)
                .min(MEM_SIZE);
            allowed[s..e.max(s)].iter_mut().for_each(|b| *b = true);
        };
        let mut exact = self.clean;
        for (qi, q) in live.iter_mut().enumerate() {
            let Some(q) = q else { continue };
            let l = q.layout;
            mark(l.used_range());
            let now = le16(after, l.used + 2).expect("used ring inside memory");
            if !self.clean || q.tainted {
                exact = false;
                q.used_seen = now;
                continue;
            }
            let count = now.wrapping_sub(q.used_seen);
            assert!(
                count <= l.size,
                "queue {qi}: {count} used elements added at once, the queue holds {}",
                l.size
            );
            for k in 0..count {
                let slot = u64::from(q.used_seen.wrapping_add(k) % l.size);
                let at = l.used + 4 + 8 * slot;
                let id = le32(after, at).expect("used element inside memory");
                let len = le32(after, at + 4).expect("used element inside memory");
                let chain = u16::try_from(id)
                    .ok()
                    .and_then(|id| self.chains[qi].iter().find(|(h, _)| *h == id));
                let Some((_, w)) = chain else {
                    panic!("queue {qi}: used element names head {id}, never made available");
                };
                assert!(
                    u64::from(len) <= w.bound,
                    "queue {qi}: used length {len} for head {id} exceeds its {} \
                     device-writable bytes",
                    w.bound
                );
                w.writable.iter().for_each(|&r| mark(r));
            }
            q.used_seen = now;
        }
        if !exact {
            return;
        }
        // Chunk by chunk (slice comparison is one memcmp; a byte loop would be a traced
        // comparison per byte under the fuzzer's instrumentation).
        const CHUNK: usize = 256;
        for start in (0..MEM_SIZE).step_by(CHUNK) {
            let r = start..start + CHUNK;
            if before[r.clone()] == after[r.clone()] || allowed[r.clone()].iter().all(|&a| a) {
                continue;
            }
            if let Some(at) = r.clone().find(|&i| before[i] != after[i] && !allowed[i]) {
                panic!(
                    "the device wrote guest byte {at:#x}, outside the used rings and the \
                     device-writable buffers of the chains it returned"
                );
            }
        }
    }
}

/// Runs a whole input against `device`: layouts, image, rounds (module doc).
pub fn run(device: Box<dyn VirtioDevice>, data: &[u8], host: &mut dyn FnMut(&mut Input)) -> Guest {
    let mut inp = Input::new(data);
    let mut g = Guest::new(device);
    let n = g
        .transport
        .lock()
        .expect("transport lock")
        .queue_events()
        .len();
    let layouts: Vec<QueueLayout> = (0..n).map(|_| QueueLayout::read(&mut inp)).collect();
    let ready_mask = inp.u8();
    let image_len = usize::from(inp.u16());
    let image = inp.bytes(image_len.min(MEM_SIZE));
    g.mem
        .write_slice(image, GuestAddress(0))
        .expect("image inside guest memory");
    g.start(&layouts, ready_mask);
    let mut rounds = 0;
    while rounds < MAX_ROUNDS && g.round(&mut inp, host) {
        rounds += 1;
    }
    g
}
