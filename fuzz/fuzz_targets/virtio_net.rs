//! virtio-net frame processing over arbitrary descriptor tables and available rings in a
//! guest-memory image (layout and invariants: wisp_guest_fuzz::virtq), on a real tap in a
//! private network namespace (wisp_guest_fuzz::net_host). Host actions per round: a count
//! byte (at most 4 frames), then each frame as a u16 length (at most 2 KiB) and its bytes,
//! sent into the tap so that the device delivers it to the guest's rx queue.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wisp_devices::virtio::Net;
use wisp_guest_fuzz::net_host::{NetHost, TAP_NAME};
use wisp_guest_fuzz::virtq;

static HOST: OnceLock<NetHost> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let host = HOST.get_or_init(NetHost::enter_private_netns);
    let mac = (flags & 1 != 0).then_some([0x06, 0, 0xac, 0x10, 0, 2]);
    let net = Net::new(TAP_NAME, mac).expect("open the tap");
    host.restart_tap();
    virtq::run(Box::new(net), rest, &mut |inp| {
        for _ in 0..inp.u8() % 5 {
            let len = usize::from(inp.u16() % 2049);
            host.inject(inp.bytes(len));
        }
    });
});
