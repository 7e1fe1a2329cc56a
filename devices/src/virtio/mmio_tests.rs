//! The virtio-mmio register interface, driven as a guest driver would.

use super::*;
use crate::virtio::test_driver::TestGuest;
use crate::virtio::Rng;

const ALL: u32 = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;

fn rng_guest() -> TestGuest {
    TestGuest::new(Box::new(Rng::new()))
}

#[test]
fn registers_identify_a_modern_device() {
    let g = rng_guest();
    assert_eq!(g.read32(REG_MAGIC), MAGIC_VALUE);
    assert_eq!(g.read32(REG_VERSION), 2);
    assert_eq!(g.read32(REG_DEVICE_ID), 4);
    assert_eq!(g.read32(REG_VENDOR_ID), VENDOR_ID);
    assert_eq!(g.device_features(), 1 << 32, "VERSION_1 only");
    g.write32(REG_QUEUE_SEL, 0);
    assert_eq!(g.read32(REG_QUEUE_NUM_MAX), 256);
    g.write32(REG_QUEUE_SEL, 7);
    assert_eq!(g.read32(REG_QUEUE_NUM_MAX), 0, "queue that does not exist");
    assert_eq!(
        g.read32(REG_SHM_LEN_LOW),
        u32::MAX,
        "no shared memory regions"
    );
}

#[test]
fn odd_sizes_and_offsets_are_ignored_without_effect() {
    let mut g = rng_guest();
    let mut two = [0xffu8; 2];
    let mut eight = [0xffu8; 8];
    {
        let mut t = g.transport.lock().unwrap();
        t.mmio_read(MmioAddress(0), REG_MAGIC, &mut two);
        t.mmio_read(MmioAddress(0), REG_MAGIC + 1, &mut eight[..4]);
        t.mmio_write(MmioAddress(0), REG_STATUS, &[STATUS_ACKNOWLEDGE as u8]);
        t.mmio_write(MmioAddress(0), REG_STATUS + 2, &[1, 0, 0, 0]);
        t.mmio_write(MmioAddress(0), REG_STATUS, &[1, 0, 0, 0, 0, 0, 0, 0]);
        t.mmio_write(MmioAddress(0), 0x2000, &[1]);
        t.mmio_read(MmioAddress(0), 0x100, &mut eight);
        t.mmio_read(MmioAddress(0), u64::MAX, &mut eight);
    }
    assert_eq!(two, [0, 0]);
    assert_eq!(eight, [0; 8]);
    assert_eq!(g.read32(REG_STATUS), 0);
    assert!(g.errors() >= 7);
    // Still a working device.
    g.activate(1);
    let a = g.alloc(8);
    g.add_chain(0, &[(a, 8, true)]);
    g.notify(0);
    assert_eq!(g.take_used(0), [(0, 8)]);
}

#[test]
fn features_without_version_1_or_not_offered_are_refused() {
    let mut g = rng_guest();
    assert!(!g.negotiate(Some(0)), "legacy driver");
    assert!(
        !g.negotiate(Some((1 << 32) | (1 << 5))),
        "feature never offered"
    );
    assert!(g.negotiate(None));
}

#[test]
fn status_bits_out_of_order_are_ignored() {
    let g = rng_guest();
    g.write32(REG_STATUS, STATUS_DRIVER_OK);
    assert_eq!(g.read32(REG_STATUS), 0);
    g.write32(REG_STATUS, STATUS_ACKNOWLEDGE);
    g.write32(
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
    );
    assert_eq!(g.read32(REG_STATUS), STATUS_ACKNOWLEDGE);
}

#[test]
fn requests_queued_before_driver_ok_are_served_on_activation() {
    let mut g = rng_guest();
    assert!(g.negotiate(None));
    assert!(g.setup_queue(0, 16));
    let a = g.alloc(8);
    g.add_chain(0, &[(a, 8, true)]);
    g.notify(0);
    assert!(g.take_used(0).is_empty(), "not served before DRIVER_OK");
    g.write32(REG_STATUS, ALL);
    g.pump();
    assert_eq!(g.take_used(0), [(0, 8)]);
}

#[test]
fn reset_returns_registers_and_queues_to_initial_state() {
    let mut g = rng_guest();
    g.activate(1);
    let a = g.alloc(8);
    g.add_chain(0, &[(a, 8, true)]);
    g.notify(0);
    assert_ne!(g.read32(REG_INTERRUPT_STATUS), 0);
    g.write32(REG_STATUS, 0);
    g.pump();
    assert_eq!(g.read32(REG_STATUS), 0);
    assert_eq!(g.read32(REG_QUEUE_READY), 0);
    assert_eq!(g.read32(REG_INTERRUPT_STATUS), 0);
    // Notifications while reset do nothing.
    g.write32(REG_QUEUE_NOTIFY, 0);
    g.pump();
    // The driver can bring it up again from scratch.
    g.activate(1);
    let b = g.alloc(8);
    g.add_chain(0, &[(b, 8, true)]);
    g.notify(0);
    assert_eq!(g.take_used(0).len(), 1);
}

#[test]
fn queue_registers_are_frozen_while_the_queue_is_ready() {
    let mut g = rng_guest();
    g.activate(1);
    let before = g.transport.lock().unwrap().queues[0].desc_table();
    g.write32(REG_QUEUE_DESC_LOW, 0x1234_0000);
    g.write32(REG_QUEUE_NUM, 2);
    assert_eq!(g.transport.lock().unwrap().queues[0].desc_table(), before);
    assert_eq!(g.transport.lock().unwrap().queues[0].size(), 256);
}

#[test]
fn queue_with_rings_outside_memory_is_refused() {
    let mut g = rng_guest();
    assert!(g.negotiate(None));
    g.write32(REG_QUEUE_SEL, 0);
    g.write32(REG_QUEUE_NUM, 16);
    g.write32(REG_QUEUE_DESC_LOW, 0);
    g.write32(REG_QUEUE_DESC_HIGH, 0x10);
    g.write32(REG_QUEUE_READY, 1);
    assert_eq!(g.read32(REG_QUEUE_READY), 0);
}

#[test]
fn interrupt_ack_clears_only_acknowledged_bits() {
    let mut g = rng_guest();
    g.activate(1);
    let a = g.alloc(8);
    g.add_chain(0, &[(a, 8, true)]);
    g.notify(0);
    assert_eq!(g.read32(REG_INTERRUPT_STATUS), 1);
    assert_eq!(
        g.transport
            .lock()
            .unwrap()
            .interrupt_event()
            .read()
            .unwrap(),
        1
    );
    g.write32(REG_INTERRUPT_ACK, 2);
    assert_eq!(g.read32(REG_INTERRUPT_STATUS), 1);
    g.write32(REG_INTERRUPT_ACK, 1);
    assert_eq!(g.read32(REG_INTERRUPT_STATUS), 0);
}

#[test]
fn transport_can_be_shared_with_vcpu_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<std::sync::Mutex<MmioTransport>>();
}

#[test]
fn queue_with_misaligned_rings_is_refused() {
    let mut g = rng_guest();
    assert!(g.negotiate(None));
    assert!(g.setup_queue(0, 16));
    g.write32(REG_QUEUE_READY, 0);
    g.write32(REG_QUEUE_DESC_LOW, 0x1_0008); // descriptor table needs 16-byte alignment
    g.write32(REG_QUEUE_READY, 1);
    assert_eq!(g.read32(REG_QUEUE_READY), 0);
    g.write32(REG_QUEUE_DESC_LOW, 0x1_0000);
    g.write32(REG_QUEUE_READY, 1);
    assert_eq!(
        g.read32(REG_QUEUE_READY),
        1,
        "a corrected address is accepted"
    );
}

#[test]
fn available_index_past_the_queue_size_sets_needs_reset() {
    let mut g = rng_guest();
    g.activate(1);
    let avail = g.queues[0].avail;
    g.write(avail + 2, &300u16.to_le_bytes()); // 300 entries in a 256-entry queue
    g.notify(0);
    assert_ne!(g.read32(REG_STATUS) & STATUS_NEEDS_RESET, 0);
    assert_ne!(
        g.read32(REG_INTERRUPT_STATUS) & 2,
        0,
        "config-change interrupt"
    );
    // Reset and renegotiate: the device serves requests again.
    g.activate(1);
    assert_eq!(g.read32(REG_STATUS) & STATUS_NEEDS_RESET, 0);
    let a = g.alloc(8);
    g.add_chain(0, &[(a, 8, true)]);
    g.notify(0);
    assert_eq!(g.take_used(0).len(), 1);
}
