//! The boot timer: a one-register MMIO device. The guest writes the byte 123 to it when it has
//! booted (Firecracker's convention, so the same guest images work); the VMM records the time
//! since the process started. Everything else written or read there is ignored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::MutDeviceMmio;

/// The magic value the guest writes (guest ABI: `wisp_abi::boot_timer`).
pub use wisp_abi::boot_timer::BOOT_TIMER_MAGIC;

/// Not yet written.
const UNSET: u64 = u64::MAX;

/// Shared, lock-free view of the recorded boot time.
#[derive(Clone, Debug)]
pub struct BootTime(Arc<AtomicU64>);

impl BootTime {
    /// Microseconds from VMM start to the guest's write, once it happened.
    pub fn micros(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            UNSET => None,
            us => Some(us),
        }
    }
}

/// The device. `on_boot` runs once, on the vCPU thread, when the guest first signals.
pub struct BootTimer {
    start: Instant,
    recorded: BootTime,
    on_boot: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl BootTimer {
    pub fn new(start: Instant, on_boot: Option<Box<dyn FnOnce(u64) + Send>>) -> Self {
        BootTimer {
            start,
            recorded: BootTime(Arc::new(AtomicU64::new(UNSET))),
            on_boot,
        }
    }

    /// Measures from `start` and calls `on_boot` (a prepared VM learns both at create time).
    pub fn arm(&mut self, start: Instant, on_boot: Option<Box<dyn FnOnce(u64) + Send>>) {
        self.start = start;
        self.on_boot = on_boot;
    }

    pub fn boot_time(&self) -> BootTime {
        self.recorded.clone()
    }
}

impl MutDeviceMmio for BootTimer {
    fn mmio_read(&mut self, _base: MmioAddress, _offset: MmioAddressOffset, data: &mut [u8]) {
        data.fill(0);
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        if offset != 0 || data.first() != Some(&BOOT_TIMER_MAGIC) {
            return;
        }
        let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        if self
            .recorded
            .0
            .compare_exchange(UNSET, us, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            log::info!("guest booted in {us} us");
            if let Some(cb) = self.on_boot.take() {
                cb(us);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_write_of_123_records_boot_time_once() {
        let mut timer = BootTimer::new(Instant::now(), None);
        let bt = timer.boot_time();
        timer.mmio_write(MmioAddress(0), 0, &[7]);
        assert_eq!(bt.micros(), None);
        timer.mmio_write(MmioAddress(0), 1, &[123]);
        assert_eq!(bt.micros(), None);
        timer.mmio_write(MmioAddress(0), 0, &[123]);
        let first = bt.micros().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        timer.mmio_write(MmioAddress(0), 0, &[123]);
        assert_eq!(bt.micros(), Some(first));
    }
}
