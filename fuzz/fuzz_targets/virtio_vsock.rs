//! virtio-vsock packet processing over arbitrary descriptor tables and available rings in a
//! guest-memory image (layout and invariants: wisp_guest_fuzz::virtq), against real Unix
//! sockets on the host side whose actions the input also chooses (wisp_guest_fuzz::vsock_host).
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use wisp_devices::virtio::Vsock;
use wisp_guest_fuzz::virtq;
use wisp_guest_fuzz::vsock_host::{VsockHost, GUEST_CID};

static HOST: Mutex<Option<VsockHost>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = HOST.lock().expect("host lock");
    let host = guard.get_or_insert_with(VsockHost::new);
    let vsock = Vsock::new(GUEST_CID, &host.uds_path).expect("vsock device");
    let guest = virtq::run(Box::new(vsock), data, &mut |inp| host.act(inp));
    drop(guest);
    host.finish();
});
