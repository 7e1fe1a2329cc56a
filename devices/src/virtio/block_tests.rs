//! virtio-blk requests end to end through the transport and a real event loop.

use super::*;
use crate::rate_limiter::TokenBucket;
use crate::virtio::test_driver::{TempFile, TestGuest, F_NEXT, F_WRITE};

const SECTORS: usize = 8;

fn image() -> Vec<u8> {
    (0..SECTORS * 512).map(|i| (i / 512) as u8).collect()
}

fn guest(file: &TempFile, ro: bool) -> TestGuest {
    let blk = Block::new(&file.0, ro, Some("wisp-disk-0")).unwrap();
    let mut g = TestGuest::new(Box::new(blk));
    g.activate(1);
    g
}

/// Queues header + data + status; returns (data addr, status addr).
fn request(
    g: &mut TestGuest,
    t: u32,
    sector: u64,
    data_len: u32,
    device_writes: bool,
) -> (u64, u64) {
    let hdr = g.alloc(16);
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&t.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    g.write(hdr, &h);
    let data = g.alloc(data_len as usize);
    let status = g.alloc(1);
    g.write(status, &[0xff]);
    if data_len == 0 {
        g.add_chain(0, &[(hdr, 16, false), (status, 1, true)]);
    } else {
        g.add_chain(
            0,
            &[
                (hdr, 16, false),
                (data, data_len, device_writes),
                (status, 1, true),
            ],
        );
    }
    (data, status)
}

#[test]
fn guest_write_then_read_reaches_the_backing_file() {
    let f = TempFile::new("blk-rw", &image());
    let mut g = guest(&f, false);
    assert_eq!(g.read_config(0, 8), (SECTORS as u64).to_le_bytes());
    let (data, status) = request(&mut g, T_OUT, 2, 512, false);
    g.write(data, &[0xab; 512]);
    g.notify(0);
    assert_eq!(g.read(status, 1), [S_OK]);
    assert_eq!(g.take_used(0).len(), 1);
    let on_disk = std::fs::read(&f.0).unwrap();
    assert!(on_disk[1024..1536].iter().all(|&b| b == 0xab));
    assert!(
        on_disk[512..1024].iter().all(|&b| b == 1),
        "neighbour sector untouched"
    );

    let (data, status) = request(&mut g, T_IN, 1, 1024, true);
    g.notify(0);
    assert_eq!(g.read(status, 1), [S_OK]);
    let got = g.read(data, 1024);
    assert!(got[..512].iter().all(|&b| b == 1));
    assert!(got[512..].iter().all(|&b| b == 0xab));
    let used = g.take_used(0);
    assert_eq!(used[0].1, 1025, "used length counts data and status");
    assert_ne!(g.read32(0x60) & 1, 0, "used-buffer interrupt raised");
    assert_eq!(g.errors(), 0);
}

#[test]
fn flush_and_get_id_succeed() {
    let f = TempFile::new("blk-id", &image());
    let mut g = guest(&f, false);
    assert_ne!(g.device_features() & (1 << F_FLUSH), 0);
    let (_, status) = request(&mut g, T_FLUSH, 0, 0, false);
    g.notify(0);
    assert_eq!(g.read(status, 1), [S_OK]);
    let (data, status) = request(&mut g, T_GET_ID, 0, 20, true);
    g.notify(0);
    assert_eq!(g.read(status, 1), [S_OK]);
    assert_eq!(&g.read(data, 20)[..11], b"wisp-disk-0");
}

#[test]
fn read_only_device_rejects_writes_and_keeps_the_file() {
    let f = TempFile::new("blk-ro", &image());
    let mut g = guest(&f, true);
    assert_ne!(g.device_features() & (1 << F_RO), 0);
    let (data, status) = request(&mut g, T_OUT, 0, 512, false);
    g.write(data, &[0xee; 512]);
    g.notify(0);
    assert_eq!(g.read(status, 1), [S_IOERR]);
    assert_eq!(std::fs::read(&f.0).unwrap(), image());
    let (_, status) = request(&mut g, T_IN, 0, 512, true);
    g.notify(0);
    assert_eq!(g.read(status, 1), [S_OK], "reads still work");
}

#[test]
fn out_of_range_and_unknown_requests_fail_with_status() {
    let f = TempFile::new("blk-range", &image());
    let mut g = guest(&f, false);
    let (_, s1) = request(&mut g, T_IN, SECTORS as u64 - 1, 1024, true);
    let (_, s2) = request(&mut g, T_OUT, u64::MAX, 512, false);
    let (_, s3) = request(&mut g, 99, 0, 0, false);
    let (_, s4) = request(&mut g, T_IN, 0, 100, true);
    g.notify(0);
    assert_eq!(g.read(s1, 1), [S_IOERR]);
    assert_eq!(g.read(s2, 1), [S_IOERR]);
    assert_eq!(g.read(s3, 1), [S_UNSUPP]);
    assert_eq!(g.read(s4, 1), [S_IOERR], "length not a multiple of 512");
    assert_eq!(g.take_used(0).len(), 4);
    assert_eq!(g.errors(), 4);
}

#[test]
fn malformed_chains_fail_alone_and_the_device_keeps_working() {
    let f = TempFile::new("blk-bad", &image());
    let mut g = guest(&f, false);
    let hdr = g.alloc(16);
    let status = g.alloc(1);
    let outside = crate::virtio::test_driver::MEM_SIZE as u64 - 8;
    // Header buffer running off the end of guest memory.
    g.add_raw(
        0,
        0,
        &[(outside, 16, F_NEXT, 1), (status, 1, F_WRITE, 0)],
        0,
    );
    // Header too short.
    g.add_raw(0, 2, &[(hdr, 8, F_NEXT, 3), (status, 1, F_WRITE, 0)], 2);
    // Status byte in a device-readable buffer only.
    g.add_raw(0, 4, &[(hdr, 16, F_NEXT, 5), (status, 1, 0, 0)], 4);
    // A loop: 6 -> 7 -> 6 -> ...
    g.add_raw(
        0,
        6,
        &[(hdr, 16, F_NEXT, 7), (status, 1, F_WRITE | F_NEXT, 6)],
        6,
    );
    // Readable after writable.
    g.add_raw(
        0,
        8,
        &[(status, 1, F_WRITE | F_NEXT, 9), (hdr, 16, 0, 0)],
        8,
    );
    // `next` past the end of the table.
    g.add_raw(0, 10, &[(hdr, 16, F_NEXT, 500)], 10);
    g.notify(0);
    let used = g.take_used(0);
    assert_eq!(used.len(), 6, "every bad chain is returned to the driver");
    assert!(used.iter().all(|&(_, len)| len == 0));
    assert_eq!(g.errors(), 6);
    // The queue keeps serving good requests afterwards.
    let (data, status) = request(&mut g, T_IN, 3, 512, true);
    g.notify(0);
    assert_eq!(g.read(status, 1), [S_OK]);
    assert!(g.read(data, 512).iter().all(|&b| b == 3));
}

#[test]
fn more_requests_than_one_batch_are_all_served() {
    let f = TempFile::new("blk-batch", &image());
    let mut g = guest(&f, false);
    let statuses: Vec<u64> = (0..BATCH as u64 + 8)
        .map(|i| request(&mut g, T_IN, i % SECTORS as u64, 512, true).1)
        .collect();
    g.notify(0);
    assert_eq!(g.take_used(0).len(), statuses.len());
    assert!(statuses.iter().all(|&s| g.read(s, 1) == [S_OK]));
}

#[test]
fn invalid_queue_sizes_are_refused_at_ready() {
    let f = TempFile::new("blk-qsize", &image());
    let blk = Block::new(&f.0, false, None).unwrap();
    let mut g = TestGuest::new(Box::new(blk));
    assert!(g.negotiate(None));
    assert!(!g.setup_queue(0, 0), "size 0");
    assert!(!g.setup_queue(0, 3), "size not a power of two");
    assert!(!g.setup_queue(0, 512), "size above QueueNumMax");
    assert!(g.setup_queue(0, 16));
}

#[test]
fn update_backing_changes_capacity_and_raises_config_change() {
    let f = TempFile::new("blk-old", &image());
    let bigger = TempFile::new("blk-new", &[0u8; 16 * 512]);
    let g = guest(&f, false);
    let generation = g.read32(0xfc);
    g.transport
        .lock()
        .unwrap()
        .device_mut::<Block>()
        .unwrap()
        .update_backing(&bigger.0)
        .unwrap();
    assert_eq!(g.read_config(0, 8), 16u64.to_le_bytes());
    assert_ne!(g.read32(0xfc), generation);
    assert_ne!(g.read32(0x60) & 2, 0, "config-change interrupt bit");
    g.write32(0x64, 2);
    assert_eq!(g.read32(0x60) & 2, 0, "InterruptACK clears it");
}

#[test]
fn a_read_larger_than_one_pass_is_served_over_several_passes() {
    let sectors = 3 * PASS_BYTES / 512 + 8;
    let contents: Vec<u8> = (0..sectors * 512).map(|i| (i / 4096) as u8).collect();
    let f = TempFile::new("blk-big", &contents);
    let mut g = guest(&f, false);
    let len = (3 * PASS_BYTES + 4096) as u32;
    let (data, status) = request(&mut g, T_IN, 0, len, true);
    // One pass moves at most PASS_BYTES: after the first event the request is still open.
    g.write32(crate::virtio::REG_QUEUE_NOTIFY, 0);
    g.em.run_with_timeout(0).unwrap();
    assert!(g.take_used(0).is_empty(), "not finished in one pass");
    g.pump();
    assert_eq!(g.read(status, 1), [S_OK]);
    assert_eq!(g.take_used(0), vec![(0, len + 1)]);
    assert_eq!(g.read(data, len as usize), contents[..len as usize]);
}

#[test]
fn an_ops_limited_drive_holds_requests_back_until_its_timer_fires() {
    let f = TempFile::new("blk-ops", &image());
    let mut blk = Block::new(&f.0, false, None).unwrap();
    // Two requests per 100 ms, bucket starts full.
    blk.set_rate_limiter(None, TokenBucket::new(2, 0, 100))
        .unwrap();
    let mut g = TestGuest::new(Box::new(blk));
    g.activate(1);
    let statuses: Vec<u64> = (0..5)
        .map(|i| request(&mut g, T_IN, i, 512, true).1)
        .collect();
    let start = std::time::Instant::now();
    g.notify(0);
    assert_eq!(g.take_used(0).len(), 2, "the bucket's two tokens");
    let mut done = 2;
    g.pump_until(|g| {
        done += g.take_used(0).len();
        done == 5
    });
    // Three more tokens at 20/s take at least 150 ms (100 ms for two, 50 for the third).
    assert!(start.elapsed() >= std::time::Duration::from_millis(140));
    assert!(statuses.iter().all(|&s| g.read(s, 1) == [S_OK]));
    let m = g.transport.lock().unwrap().metrics().snapshot();
    assert!(m.throttled >= 1);
    assert_eq!(m.requests, 5);
}

#[test]
fn a_queue_resumed_by_its_timer_keeps_going_past_one_pass() {
    // Requests of a whole pass each, one op per 20 ms: the timer's pass ends at the byte
    // budget and must hand the queue back to the event loop, not drop it.
    let sectors = 4 * PASS_BYTES / 512;
    let f = TempFile::new("blk-timer-pass", &vec![7u8; sectors * 512]);
    let mut blk = Block::new(&f.0, false, None).unwrap();
    blk.set_rate_limiter(None, TokenBucket::new(1, 0, 20))
        .unwrap();
    let mut g = TestGuest::new(Box::new(blk));
    g.activate(1);
    for i in 0..4 {
        request(
            &mut g,
            T_IN,
            (i * PASS_BYTES / 512) as u64,
            PASS_BYTES as u32,
            true,
        );
    }
    g.notify(0);
    let mut done = g.take_used(0).len();
    assert_eq!(done, 1);
    g.pump_until(|g| {
        done += g.take_used(0).len();
        done == 4
    });
}

#[test]
fn a_bandwidth_limited_drive_moves_bytes_at_the_bucket_rate() {
    let f = TempFile::new("blk-bw", &image());
    let mut blk = Block::new(&f.0, false, None).unwrap();
    // 2 KiB per 100 ms, starting full: 4 one-sector reads now, 4 more over 100 ms.
    blk.set_rate_limiter(TokenBucket::new(2048, 0, 100), None)
        .unwrap();
    let mut g = TestGuest::new(Box::new(blk));
    g.activate(1);
    for i in 0..8 {
        request(&mut g, T_IN, i, 512, true);
    }
    let start = std::time::Instant::now();
    g.notify(0);
    assert_eq!(g.take_used(0).len(), 4);
    let mut done = 4;
    g.pump_until(|g| {
        done += g.take_used(0).len();
        done == 8
    });
    assert!(start.elapsed() >= std::time::Duration::from_millis(90));
}

#[test]
fn removing_the_limit_at_run_time_releases_a_waiting_queue() {
    let f = TempFile::new("blk-patch", &image());
    let mut blk = Block::new(&f.0, false, None).unwrap();
    // One op per minute.
    blk.set_rate_limiter(None, TokenBucket::new(1, 0, 60_000))
        .unwrap();
    let mut g = TestGuest::new(Box::new(blk));
    g.activate(1);
    request(&mut g, T_IN, 0, 512, true);
    request(&mut g, T_IN, 1, 512, true);
    g.notify(0);
    assert_eq!(g.take_used(0).len(), 1);
    g.transport
        .lock()
        .unwrap()
        .device_mut::<Block>()
        .unwrap()
        .set_rate_limiter(None, None)
        .unwrap();
    let mut done = 0;
    g.pump_until(|g| {
        done += g.take_used(0).len();
        done == 1
    });
}

#[test]
fn zero_length_status_buffer_fails_alone() {
    // Found by fuzz/ (virtio_block): device-writable descriptors that are all empty leave no
    // byte for the status; finding its offset underflowed (a panic in debug builds).
    let f = TempFile::new("blk-empty-status", &image());
    let mut g = guest(&f, false);
    let hdr = g.alloc(16);
    g.write(hdr, &[0; 16]);
    let status = g.alloc(1);
    g.add_raw(0, 0, &[(hdr, 16, F_NEXT, 1), (status, 0, F_WRITE, 0)], 0);
    g.notify(0);
    assert_eq!(g.take_used(0), [(0, 0)]);
    assert_eq!(g.errors(), 1);
}

/// Firecracker's `cache_type` `Unsafe`: flush is not offered, and a driver that sends one
/// anyway gets OK (nothing is synced); the default (`Writeback`) offers it.
#[test]
fn unsafe_cache_type_offers_no_flush_and_answers_one_without_syncing() {
    let f = TempFile::new("blk-unsafe", &image());
    let mut blk = Block::new(&f.0, false, None).unwrap();
    blk.set_flush_ignored(true);
    let mut g = TestGuest::new(Box::new(blk));
    assert_eq!(g.device_features() & (1 << F_FLUSH), 0);
    g.activate(1);
    let (_, status) = request(&mut g, T_FLUSH, 0, 0, false);
    g.notify(0);
    assert_eq!(g.read(status, 1), [S_OK]);
    assert_eq!(g.errors(), 0);
}
