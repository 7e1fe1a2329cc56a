//! virtio-rng / entropy device (virtio 1.2 §5.4): one queue of device-writable buffers that
//! the device fills with random bytes. It may fill fewer bytes than offered (the used length
//! says how many), so the command asks again until it has enough, a bounded number of times.

use super::dma;
use super::queue::Buffer;
use super::{setup_queue, Slots, VirtioError, DEVICE_RNG};
use crate::bytes_fmt::Hex;
use crate::deadline::Deadline;
use crate::serial::println;

/// Bytes the `rng` command reads.
const WANTED: usize = 32;
/// Requests before giving up on a device that returns short (or empty) buffers.
const MAX_REQUESTS: usize = 16;
const REQUEST_TIMEOUT_MS: u64 = 5000;

/// The `rng` command: 32 random bytes as hex, and `rng: ok` unless they are all zero.
pub fn run(slots: &Slots) -> Result<(), VirtioError> {
    let (transport, _features) = slots.open("rng", DEVICE_RNG, 0)?;
    let mut queue = setup_queue(&transport, 0)?;
    transport.driver_ok()?;
    let buffer = dma::alloc(WANTED, 1).ok_or(VirtioError::OutOfDma)?;
    let mut random = [0u8; WANTED];
    let mut have = 0;
    for _ in 0..MAX_REQUESTS {
        if have == WANTED {
            break;
        }
        let head = queue.submit(&[Buffer::part(buffer, WANTED - have, true)])?;
        transport.notify(queue.index());
        let used = queue.wait_used(&Deadline::after_ms(REQUEST_TIMEOUT_MS))?;
        transport.ack_interrupts();
        if used.head != head {
            return Err(VirtioError::BadUsedId {
                index: queue.index(),
                id: u32::from(used.head),
            });
        }
        // Never trust the length beyond what was offered.
        let filled = usize::try_from(used.len)
            .unwrap_or(usize::MAX)
            .min(WANTED - have);
        have += buffer.read(0, &mut random[have..have + filled]);
    }
    println!("rng: {}", Hex(&random[..have]));
    if have < WANTED {
        println!("rng: short read: {have} of {WANTED} bytes after {MAX_REQUESTS} requests");
    } else if random.iter().all(|&byte| byte == 0) {
        println!("rng: all zero");
    } else {
        println!("rng: ok");
    }
    Ok(())
}
