//! Garbage rings: a guest that fills its descriptor tables and available rings with noise
//! must not crash or hang any device, and the device must work again after a reset.

use super::block::Block;
use super::test_driver::{TempFile, TestGuest, MEM_SIZE};
use super::vsock::Vsock;
use super::Rng;

/// xorshift64: deterministic noise, so a failure reproduces.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn scribble(g: &mut TestGuest, queues: usize, noise: &mut Noise) {
    for q in 0..queues {
        let dq = g.queues[q];
        for i in 0..u64::from(dq.size) {
            let mut d = [0u8; 16];
            // Mostly inside guest memory, sometimes past its end.
            let addr = noise.next() % (2 * MEM_SIZE as u64);
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&((noise.next() % 9000) as u32).to_le_bytes());
            d[12..14].copy_from_slice(&((noise.next() & 7) as u16).to_le_bytes());
            d[14..16].copy_from_slice(&((noise.next() % 300) as u16).to_le_bytes());
            g.write(dq.desc + 16 * i, &d);
        }
        let mut idx = u16::from_le_bytes(g.read(dq.avail + 2, 2).try_into().unwrap());
        let n = 1 + noise.next() % 300; // sometimes more than the queue holds
        for _ in 0..n {
            let slot = dq.avail + 4 + 2 * u64::from(idx % dq.size);
            g.write(slot, &((noise.next() % 300) as u16).to_le_bytes());
            idx = idx.wrapping_add(1);
        }
        g.write(dq.avail + 2, &idx.to_le_bytes());
        g.write32(super::REG_QUEUE_NOTIFY, q as u32);
    }
    g.pump();
}

fn survive(mut g: TestGuest, queues: u32, seed: u64) {
    g.activate(queues);
    let mut noise = Noise(seed);
    for _ in 0..20 {
        scribble(&mut g, queues as usize, &mut noise);
    }
    assert!(g.errors() > 0, "noise was noticed");
    let status = g.read32(0x070);
    assert_eq!(
        status & 0x80,
        0,
        "the device never claims the driver failed"
    );
    // A driver reset brings the device back.
    g.activate(queues);
    assert_eq!(g.read32(0x070) & 4, 4, "DRIVER_OK after reset");
}

#[test]
fn noise_in_block_rings_never_panics() {
    let f = TempFile::new("hostile-blk", &[0u8; 64 * 512]);
    survive(
        TestGuest::new(Box::new(Block::new(&f.0, false, None).unwrap())),
        1,
        0x9e37_79b9,
    );
}

#[test]
fn noise_in_rng_rings_never_panics() {
    survive(TestGuest::new(Box::new(Rng::new())), 1, 0x1234_5678);
}

#[test]
fn noise_in_vsock_rings_never_panics() {
    let f = TempFile::new("hostile-vsock", b"");
    let path = f.0.with_extension("sock");
    survive(
        TestGuest::new(Box::new(Vsock::new(3, &path).unwrap())),
        3,
        0xdead_beef,
    );
}
