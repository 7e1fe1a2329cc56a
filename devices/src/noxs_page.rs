//! The noxs device page: a read-only page at a fixed guest-physical address that lists the VM's
//! devices (type, MMIO base, IRQ) and carries a sysctl word for host requests (power-off,
//! suspend), so a guest finds its devices without probing (LightVM's noxs, docs/design.md §5).
//!
//! The layout is guest ABI, defined once in `wisp_abi::noxs` (the unikernel reads it from
//! there too). Guest writes are ignored except a write of 0 to the sysctl word, which
//! acknowledges it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::MutDeviceMmio;
use wisp_abi::noxs::{
    ENTRY_OFF_BASE, ENTRY_OFF_IRQ, ENTRY_OFF_TYPE, ENTRY_SIZE, HEADER_SIZE, MAX_ENTRIES, OFF_COUNT,
    OFF_GENERATION, OFF_MAGIC, OFF_SYSCTL, OFF_VERSION, SYSCTL_NONE, SYSCTL_POWER_OFF,
    SYSCTL_SUSPEND,
};
pub use wisp_abi::noxs::{NOXS_MAGIC, NOXS_PAGE_SIZE, NOXS_VERSION};

const SYSCTL_OFFSET: u64 = OFF_SYSCTL as u64;
const GENERATION_OFFSET: u64 = OFF_GENERATION as u64;
/// Entries that fit in the page.
pub const NOXS_MAX_DEVICES: usize = MAX_ENTRIES;

/// A host request the guest should act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Sysctl {
    None = SYSCTL_NONE,
    PowerOff = SYSCTL_POWER_OFF,
    Suspend = SYSCTL_SUSPEND,
}

/// One device as the page lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoxsEntry {
    pub device_type: u32,
    pub irq: u32,
    pub base: u64,
}

/// The host's handle for posting sysctl requests.
#[derive(Clone, Debug, Default)]
pub struct SysctlWord(Arc<AtomicU32>);

impl SysctlWord {
    pub fn post(&self, request: Sysctl) {
        self.0.store(request as u32, Ordering::Release);
    }

    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
}

/// The VM generation the page shows (0 after a boot, new after each restore or clone).
#[derive(Clone, Debug, Default)]
pub struct VmGeneration(Arc<AtomicU64>);

impl VmGeneration {
    pub fn set(&self, generation: u64) {
        self.0.store(generation, Ordering::Release);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

pub struct NoxsPage {
    bytes: Vec<u8>,
    sysctl: SysctlWord,
    generation: VmGeneration,
}

impl NoxsPage {
    /// The page for `devices` (at most `NOXS_MAX_DEVICES`; more are left off the page).
    pub fn new(devices: &[NoxsEntry], sysctl: SysctlWord) -> Self {
        let listed = &devices[..devices.len().min(NOXS_MAX_DEVICES)];
        let mut bytes = vec![0u8; HEADER_SIZE + listed.len() * ENTRY_SIZE];
        let mut put = |at: usize, field: &[u8]| bytes[at..at + field.len()].copy_from_slice(field);
        put(OFF_MAGIC, &NOXS_MAGIC.to_le_bytes());
        put(OFF_VERSION, &NOXS_VERSION.to_le_bytes());
        put(OFF_COUNT, &(listed.len() as u32).to_le_bytes());
        // The sysctl word is served live from `sysctl`, not from these bytes.
        for (i, d) in listed.iter().enumerate() {
            let at = HEADER_SIZE + i * ENTRY_SIZE;
            put(at + ENTRY_OFF_TYPE, &d.device_type.to_le_bytes());
            put(at + ENTRY_OFF_IRQ, &d.irq.to_le_bytes());
            put(at + ENTRY_OFF_BASE, &d.base.to_le_bytes());
        }
        NoxsPage {
            bytes,
            sysctl,
            generation: VmGeneration::default(),
        }
    }

    /// Serves `generation` as the page's VM generation word.
    pub fn with_generation(mut self, generation: VmGeneration) -> Self {
        self.generation = generation;
        self
    }
}

impl MutDeviceMmio for NoxsPage {
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        let sysctl = self.sysctl.get().to_le_bytes();
        let generation = self.generation.get().to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *b = if (SYSCTL_OFFSET..SYSCTL_OFFSET + 4).contains(&at) {
                sysctl[(at - SYSCTL_OFFSET) as usize]
            } else if (GENERATION_OFFSET..GENERATION_OFFSET + 8).contains(&at) {
                generation[(at - GENERATION_OFFSET) as usize]
            } else {
                usize::try_from(at)
                    .ok()
                    .and_then(|i| self.bytes.get(i).copied())
                    .unwrap_or(0)
            };
        }
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        if offset == SYSCTL_OFFSET && data.len() == 4 && data.iter().all(|b| *b == 0) {
            self.sysctl.post(Sysctl::None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_u32(page: &mut NoxsPage, off: u64) -> u32 {
        let mut b = [0u8; 4];
        page.mmio_read(MmioAddress(0), off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn page_lists_devices_and_carries_sysctl_requests() {
        let sysctl = SysctlWord::default();
        let devs = [
            NoxsEntry {
                device_type: 2,
                irq: 5,
                base: 0xd000_2000,
            },
            NoxsEntry {
                device_type: 4,
                irq: 6,
                base: 0xd000_3000,
            },
        ];
        let mut page = NoxsPage::new(&devs, sysctl.clone());
        assert_eq!(read_u32(&mut page, 0), NOXS_MAGIC);
        assert_eq!(read_u32(&mut page, 8), 2);
        assert_eq!(read_u32(&mut page, 16 + 16), 4);
        let mut base = [0u8; 8];
        page.mmio_read(MmioAddress(0), 16 + 16 + 8, &mut base);
        assert_eq!(u64::from_le_bytes(base), 0xd000_3000);
        assert_eq!(read_u32(&mut page, 12), 0);
        sysctl.post(Sysctl::PowerOff);
        assert_eq!(read_u32(&mut page, 12), 1);
        // The guest acknowledges; other writes change nothing.
        page.mmio_write(MmioAddress(0), 0, &[0; 4]);
        assert_eq!(read_u32(&mut page, 0), NOXS_MAGIC);
        page.mmio_write(MmioAddress(0), 12, &[0; 4]);
        assert_eq!(sysctl.get(), 0);
        // Reads past the listed entries are zero, never out of bounds.
        assert_eq!(read_u32(&mut page, 4084), 0);
        assert_eq!(read_u32(&mut page, 4092), 0);
        // The generation word at the end: 0 after boot, what the host sets after a restore.
        let generation = VmGeneration::default();
        let mut page = page.with_generation(generation.clone());
        generation.set(0x1234_5678_9abc_def0);
        let mut word = [0u8; 8];
        page.mmio_read(MmioAddress(0), 4088, &mut word);
        assert_eq!(u64::from_le_bytes(word), 0x1234_5678_9abc_def0);
        assert_eq!(read_u32(&mut page, u64::MAX - 1), 0);
    }
}
