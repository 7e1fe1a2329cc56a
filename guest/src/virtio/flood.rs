//! `mmio-flood`: a guest that misbehaves on purpose, writing a read-only register of a virtio
//! device over and over for a few seconds. Each write is a guest error the VMM must answer
//! without letting the guest flood its log (the host rate-limits those lines and counts the
//! rest in the device's metrics).

use super::mmio::MmioTransport;
use super::{Slots, VirtioError};
use crate::deadline::Deadline;
use crate::serial::println;

/// How long the flood lasts.
const FLOOD_MS: u64 = 3000;
/// ConfigGeneration (virtio 1.2 §4.2.2): read-only, so every write is a guest error.
const REG_CONFIG_GENERATION: usize = 0x0fc;
/// virtio device ID of the entropy device, the simplest one to open.
const DEVICE_RNG: u32 = 4;

/// The `mmio-flood` command: prints `mmio-flood: writes=N` at the end.
pub fn run(slots: &Slots) -> Result<(), VirtioError> {
    let (transport, _): (MmioTransport, u64) = slots.open("mmio-flood", DEVICE_RNG, 0)?;
    let deadline = Deadline::after_ms(FLOOD_MS);
    let mut writes = 0u64;
    while !deadline.passed() {
        for _ in 0..64 {
            transport.poke(REG_CONFIG_GENERATION, 0);
        }
        writes += 64;
    }
    println!("mmio-flood: writes={writes}");
    Ok(())
}
