//! virtio-rng request processing over arbitrary descriptor tables and available rings in a
//! guest-memory image (layout and invariants: wisp_guest_fuzz::virtq).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wisp_devices::virtio::Rng;
use wisp_guest_fuzz::virtq;

fuzz_target!(|data: &[u8]| {
    virtq::run(Box::new(Rng::new()), data, &mut |_| {});
});
