//! Unit tests of the balloon device through the MMIO transport and a test driver.

use super::*;
use crate::virtio::test_driver::{TestGuest, MEM_SIZE};
use vm_device::MutDeviceMmio;
use vm_memory::Bytes;

/// A page of guest memory well above the test driver's rings and buffers.
const PAGE_AT: u64 = 12 << 20;

fn pfns(list: &[u64]) -> Vec<u8> {
    list.iter()
        .flat_map(|p| (*p as u32).to_le_bytes())
        .collect()
}

fn report(g: &TestGuest) -> BalloonReport {
    g.transport
        .lock()
        .unwrap()
        .device_mut::<Balloon>()
        .unwrap()
        .report()
}

#[test]
fn inflated_pages_are_dropped_and_read_back_as_zeros() {
    let mut g = TestGuest::new(Box::new(Balloon::new(4, true, 0, false).unwrap()));
    assert_eq!(
        g.device_features() & (1 << F_DEFLATE_ON_OOM),
        1 << F_DEFLATE_ON_OOM
    );
    g.activate(2);
    assert_eq!(g.read_config(0, 4), (4u32 * 256).to_le_bytes());
    g.mem
        .write_slice(&[0xabu8; 8192], GuestAddress(PAGE_AT))
        .unwrap();
    let list = g.alloc(8);
    let first = PAGE_AT / PAGE_SIZE;
    g.write(list, &pfns(&[first, first + 1]));
    g.add_chain(0, &[(list, 8, false)]);
    g.notify(0);
    assert_eq!(g.take_used(0), [(0, 0)]);
    assert_eq!(g.read(PAGE_AT, 8192), vec![0u8; 8192]);
    assert_eq!(report(&g).pages_released, 2);
    // The driver reports its size in `actual`.
    g.transport.lock().unwrap().mmio_write(
        vm_device::bus::MmioAddress(0xd000_0000),
        0x104,
        &2u32.to_le_bytes(),
    );
    assert_eq!(report(&g).actual_pages, 2);
}

#[test]
fn a_new_target_raises_a_config_interrupt() {
    let mut g = TestGuest::new(Box::new(Balloon::new(0, false, 0, false).unwrap()));
    g.activate(2);
    g.transport
        .lock()
        .unwrap()
        .device_mut::<Balloon>()
        .unwrap()
        .set_target_mib(16);
    assert_eq!(g.read_config(0, 4), (16u32 * 256).to_le_bytes());
    assert_eq!(g.read32(0x60) & 2, 2, "config-change interrupt");
}

#[test]
fn frames_outside_guest_memory_are_counted_and_skipped() {
    let mut g = TestGuest::new(Box::new(Balloon::new(0, false, 0, false).unwrap()));
    g.activate(2);
    let list = g.alloc(8);
    let outside = MEM_SIZE as u64 / PAGE_SIZE + 10;
    g.write(list, &pfns(&[outside, PAGE_AT / PAGE_SIZE]));
    g.add_chain(0, &[(list, 8, false)]);
    g.notify(0);
    assert_eq!(g.take_used(0).len(), 1);
    assert_eq!(g.errors(), 1);
    assert_eq!(report(&g).pages_released, 1);
}

#[test]
fn statistics_are_read_and_the_buffer_is_handed_back_on_the_poll() {
    let mut g = TestGuest::new(Box::new(Balloon::new(0, false, 1, false).unwrap()));
    g.activate(3);
    let buf = g.alloc(20);
    let mut stats = Vec::new();
    stats.extend_from_slice(&4u16.to_le_bytes()); // MEMFREE
    stats.extend_from_slice(&(100u64 << 20).to_le_bytes());
    stats.extend_from_slice(&5u16.to_le_bytes()); // MEMTOT
    stats.extend_from_slice(&(128u64 << 20).to_le_bytes());
    g.write(buf, &stats);
    g.add_chain(2, &[(buf, 20, false)]);
    g.notify(2);
    assert!(g.take_used(2).is_empty(), "kept until the poll");
    let r = report(&g);
    assert_eq!(r.stats[4], Some(100 << 20));
    assert_eq!(r.stats[5], Some(128 << 20));
    let mut back = 0;
    g.pump_until(|g| {
        back += g.take_used(2).len();
        back == 1
    });
}

#[test]
fn reported_free_pages_are_dropped_and_the_buffers_returned() {
    // Reporting without statistics: the reporting queue is the third queue (index 2).
    let mut g = TestGuest::new(Box::new(Balloon::new(0, false, 0, true).unwrap()));
    assert_ne!(g.device_features() & (1 << F_REPORTING), 0);
    g.activate(3);
    g.mem
        .write_slice(&[0x5au8; 3 * 4096], GuestAddress(PAGE_AT))
        .unwrap();
    // The driver lends a free range of two pages, as one buffer.
    g.add_chain(2, &[(PAGE_AT, 2 * 4096, false)]);
    g.notify(2);
    assert_eq!(g.take_used(2), [(0, 0)]);
    assert_eq!(g.read(PAGE_AT, 2 * 4096), vec![0u8; 2 * 4096]);
    assert_eq!(
        g.read(PAGE_AT + 2 * 4096, 4),
        [0x5a; 4],
        "the next page is kept"
    );
    assert_eq!(report(&g).pages_released, 2);
}
