//! MMIO exit dispatch: what a vCPU thread does for each KVM_EXIT_MMIO — look the address up on
//! vm-device's `IoManager` and call the device under its mutex. Measured with the boot timer
//! alone on the bus and with a bus populated like a VM with many virtio-mmio slots (the lookup
//! is a range search, so it grows with the number of devices). The other hot paths have their
//! own benches: `virtio_queue` (pop/push) and `control_page` (the create round trip).

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vm_device::bus::{MmioAddress, MmioRange};
use vm_device::device_manager::{IoManager, MmioManager};
use wisp_devices::boot_timer::BootTimer;
use wisp_vmm::layout::{BOOT_TIMER_START, MMIO_SLOT_SIZE, VIRTIO_MMIO_START};

/// A bus with the boot timer and `slots` more devices on the virtio-mmio slots. Boot timers
/// stand in for the virtio devices: the dispatch path (lookup, lock, call) is the same.
fn bus(slots: u64) -> IoManager {
    let mut io = IoManager::new();
    let add = |io: &mut IoManager, base: u64| {
        let range = MmioRange::new(MmioAddress(base), MMIO_SLOT_SIZE).expect("slot range");
        io.register_mmio(
            range,
            Arc::new(Mutex::new(BootTimer::new(Instant::now(), None))),
        )
        .expect("register device");
    };
    add(&mut io, BOOT_TIMER_START);
    for slot in 0..slots {
        add(&mut io, VIRTIO_MMIO_START + slot * MMIO_SLOT_SIZE);
    }
    io
}

fn mmio_dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("mmio_exit_dispatch");
    for slots in [0_u64, 32] {
        let io = bus(slots);
        // A byte that is not the boot-timer magic: dispatched, then ignored by the device.
        group.bench_function(format!("write_1_byte/{}_devices", slots + 1), |b| {
            b.iter(|| io.mmio_write(black_box(MmioAddress(BOOT_TIMER_START)), black_box(&[7u8])))
        });
        let mut data = [0u8; 4];
        group.bench_function(format!("read_4_bytes/{}_devices", slots + 1), |b| {
            b.iter(|| {
                io.mmio_read(
                    black_box(MmioAddress(BOOT_TIMER_START)),
                    black_box(&mut data),
                )
            })
        });
        // An address with no device: what an unhandled guest access costs.
        group.bench_function(format!("write_unmapped/{}_devices", slots + 1), |b| {
            b.iter(|| io.mmio_write(black_box(MmioAddress(0xfff0_0000)), black_box(&[7u8])))
        });
    }
    group.finish();
}

criterion_group!(benches, mmio_dispatch);
criterion_main!(benches);
