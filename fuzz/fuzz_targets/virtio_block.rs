//! virtio-blk request processing over arbitrary descriptor tables and available rings in a
//! guest-memory image (layout and invariants: wisp_guest_fuzz::virtq). Backing file: 64
//! sectors in the temp dir, refilled with the same pattern before every input so that runs
//! reproduce. Input: one byte (bit 0: read-only device), then the virtq layout.
#![no_main]

use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wisp_devices::virtio::Block;
use wisp_guest_fuzz::virtq;

const SECTORS: usize = 64;

fn backing() -> &'static (std::path::PathBuf, std::fs::File, Vec<u8>) {
    static B: OnceLock<(std::path::PathBuf, std::fs::File, Vec<u8>)> = OnceLock::new();
    B.get_or_init(|| {
        let path = wisp_guest_fuzz::scratch_dir().join("disk.img");
        let pattern: Vec<u8> = (0..SECTORS * 512).map(|i| (i / 512) as u8).collect();
        std::fs::write(&path, &pattern).expect("backing file");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open backing file");
        (path, file, pattern)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (path, file, pattern) = backing();
    file.write_all_at(pattern, 0).expect("refill backing file");
    let block = Block::new(path, flags & 1 != 0, Some("fuzz-disk")).expect("block device");
    virtq::run(Box::new(block), rest, &mut |_| {});
});
