//! A guest-side virtio-mmio driver for tests: it lays out split virtqueues in a real
//! `GuestMemoryMmap`, negotiates through the registers exactly as a driver does (virtio 1.2
//! §3.1.1, §4.2.3) and runs a real `EventManager` as the VMM thread would.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::device::VirtioDevice;
use super::mmio::*;
use super::MmioTransport;

pub const MEM_SIZE: usize = 16 << 20;
const DATA_START: u64 = 0x20_0000;
pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;

#[derive(Debug, Clone, Copy)]
pub struct DriverQueue {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

pub struct TestGuest {
    pub mem: GuestMemoryMmap,
    pub transport: Arc<Mutex<MmioTransport>>,
    pub em: EventManager<Arc<Mutex<MmioTransport>>>,
    pub queues: Vec<DriverQueue>,
    next_data: u64,
}

impl TestGuest {
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        Self::with_memory(mem, device)
    }

    /// A guest over given memory (of at least `MEM_SIZE` bytes), e.g. shared memory for a
    /// vhost-user device that was built with it.
    pub fn with_memory(mem: GuestMemoryMmap, device: Box<dyn VirtioDevice>) -> Self {
        let transport = Arc::new(Mutex::new(MmioTransport::new(mem.clone(), device).unwrap()));
        let mut em = EventManager::new().unwrap();
        em.add_subscriber(transport.clone());
        TestGuest {
            mem,
            transport,
            em,
            queues: Vec::new(),
            next_data: DATA_START,
        }
    }

    pub fn read32(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.transport
            .lock()
            .unwrap()
            .mmio_read(MmioAddress(0xd000_0000), offset, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write32(&self, offset: u64, v: u32) {
        self.transport.lock().unwrap().mmio_write(
            MmioAddress(0xd000_0000),
            offset,
            &v.to_le_bytes(),
        );
    }

    pub fn read_config(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.transport
            .lock()
            .unwrap()
            .mmio_read(MmioAddress(0xd000_0000), 0x100 + offset, &mut b);
        b
    }

    pub fn device_features(&self) -> u64 {
        self.write32(0x14, 0);
        let lo = self.read32(0x10);
        self.write32(0x14, 1);
        let hi = self.read32(0x10);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// Reset, ACKNOWLEDGE, DRIVER, accept `features` (None: all offered), FEATURES_OK.
    /// Returns whether the device kept FEATURES_OK.
    pub fn negotiate(&mut self, features: Option<u64>) -> bool {
        assert_eq!(self.read32(0x000), 0x7472_6976, "magic");
        assert_eq!(self.read32(0x004), 2, "version");
        self.write32(0x070, 0);
        self.write32(0x070, STATUS_ACKNOWLEDGE);
        self.write32(0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let f = features.unwrap_or_else(|| self.device_features());
        self.write32(0x24, 0);
        self.write32(0x20, f as u32);
        self.write32(0x24, 1);
        self.write32(0x20, (f >> 32) as u32);
        self.write32(
            0x070,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        self.read32(0x070) & STATUS_FEATURES_OK != 0
    }

    /// Programs queue `index` with `size` entries; returns whether QueueReady reads back 1.
    pub fn setup_queue(&mut self, index: u32, size: u16) -> bool {
        let base = 0x1_0000 + u64::from(index) * 0x1_0000;
        let q = DriverQueue {
            size,
            desc: base,
            avail: base + 0x8000,
            used: base + 0xa000,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        };
        // Fresh, zeroed rings, as a driver allocating them would have.
        self.mem
            .write_slice(&[0u8; 0x1_0000], GuestAddress(base))
            .unwrap();
        self.write32(0x030, index);
        self.write32(0x038, u32::from(size));
        self.write32(0x080, q.desc as u32);
        self.write32(0x084, (q.desc >> 32) as u32);
        self.write32(0x090, q.avail as u32);
        self.write32(0x094, (q.avail >> 32) as u32);
        self.write32(0x0a0, q.used as u32);
        self.write32(0x0a4, (q.used >> 32) as u32);
        self.write32(0x044, 1);
        let i = index as usize;
        if self.queues.len() <= i {
            self.queues.resize(i + 1, q);
        }
        self.queues[i] = q;
        self.read32(0x044) == 1
    }

    /// Negotiates all offered features, sets up `n` queues of 256 and sets DRIVER_OK.
    pub fn activate(&mut self, n: u32) {
        assert!(self.negotiate(None));
        for i in 0..n {
            assert!(self.setup_queue(i, 256));
        }
        self.write32(
            0x070,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        self.pump();
    }

    /// Guest memory for a buffer of `len` bytes (never reused).
    pub fn alloc(&mut self, len: usize) -> u64 {
        let a = self.next_data;
        self.next_data += (len as u64 + 15) & !15;
        assert!(self.next_data < MEM_SIZE as u64);
        a
    }

    /// Writes raw descriptors at table indices `first..` (flags/next as given) and publishes
    /// `head` on the available ring.
    pub fn add_raw(&mut self, q: usize, first: u16, descs: &[(u64, u32, u16, u16)], head: u16) {
        let dq = self.queues[q];
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let at = dq.desc + 16 * u64::from(first + i as u16);
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            self.mem.write_slice(&d, GuestAddress(at)).unwrap();
        }
        self.publish(q, head);
    }

    fn publish(&mut self, q: usize, head: u16) {
        let dq = &mut self.queues[q];
        let slot = dq.avail + 4 + 2 * u64::from(dq.avail_idx % dq.size);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        dq.avail_idx = dq.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(dq.avail_idx, GuestAddress(dq.avail + 2))
            .unwrap();
    }

    /// Adds a well-formed chain of `(addr, len, device_writable)` buffers; returns its head.
    pub fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let size = self.queues[q].size;
        let first = self.queues[q].next_desc;
        assert!(
            usize::from(first) + bufs.len() <= usize::from(size),
            "test queue full"
        );
        let descs: Vec<_> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, w))| {
                let last = i + 1 == bufs.len();
                let flags = if w { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
                (
                    addr,
                    len,
                    flags,
                    if last { 0 } else { first + i as u16 + 1 },
                )
            })
            .collect();
        self.add_raw(q, first, &descs, first);
        // Descriptors are reused round-robin; tests keep fewer than `size` in flight.
        self.queues[q].next_desc = (first + bufs.len() as u16) % size;
        if self.queues[q].next_desc + 8 > size {
            self.queues[q].next_desc = 0;
        }
        first
    }

    pub fn notify(&mut self, q: u32) {
        self.write32(REG_QUEUE_NOTIFY, q);
        self.pump();
    }

    /// Runs the event loop until it has nothing ready.
    pub fn pump(&mut self) {
        for _ in 0..1000 {
            if self.em.run_with_timeout(0).unwrap() == 0 {
                return;
            }
        }
        panic!("event loop never went idle");
    }

    /// Runs the event loop, waiting up to 100 ms per round, until `done` (at most 100 rounds,
    /// a bound on a hang, not a timing assertion).
    pub fn pump_until(&mut self, mut done: impl FnMut(&mut Self) -> bool) {
        for _ in 0..100 {
            if done(self) {
                return;
            }
            self.em.run_with_timeout(100).unwrap();
        }
        assert!(done(self), "condition never became true");
    }

    /// Used-ring entries `(id, len)` added since the last call.
    pub fn take_used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let dq = self.queues[q];
        let idx: u16 = self.mem.read_obj(GuestAddress(dq.used + 2)).unwrap();
        let mut out = Vec::new();
        let mut seen = dq.used_seen;
        while seen != idx {
            let at = dq.used + 4 + 8 * u64::from(seen % dq.size);
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push((id, len));
            seen = seen.wrapping_add(1);
        }
        self.queues[q].used_seen = seen;
        out
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        b
    }

    pub fn write(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    pub fn errors(&self) -> u64 {
        self.transport.lock().unwrap().metrics().snapshot().errors
    }
}

/// A fresh file under the system temp dir, removed on drop.
pub struct TempFile(pub std::path::PathBuf);

impl TempFile {
    pub fn new(tag: &str, contents: &[u8]) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "wisp-virtio-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&p, contents).unwrap();
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
