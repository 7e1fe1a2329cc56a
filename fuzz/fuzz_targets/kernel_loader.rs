//! The kernel loader (ELF vmlinux with or without a PVH note, bzImage) on arbitrary bytes as
//! the kernel image, into a 64 MiB guest (MAP_NORESERVE: pages cost memory only once written).
//!
//! Invariant besides no panic: the loader answers with an error, or with a kernel that ends
//! inside the guest's RAM (vm-memory refuses every write outside it).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vm_memory::GuestMemoryMmap;
use wisp_vmm::loader::load_kernel;
use wisp_vmm::memory::create_guest_memory;

const MEM_MIB: u32 = 64;

fn setup() -> &'static (GuestMemoryMmap, std::path::PathBuf) {
    static S: OnceLock<(GuestMemoryMmap, std::path::PathBuf)> = OnceLock::new();
    S.get_or_init(|| {
        let mem = create_guest_memory(MEM_MIB).expect("guest memory");
        let path = wisp_guest_fuzz::scratch_dir().join("kernel");
        (mem, path)
    })
}

fuzz_target!(|data: &[u8]| {
    let (mem, path) = setup();
    std::fs::write(path, data).expect("write the kernel image");
    let ram = u64::from(MEM_MIB) << 20;
    if let Ok(k) = load_kernel(mem, ram, path) {
        assert!(
            k.end <= ram,
            "kernel loaded up to {:#x}, past the guest's {ram:#x} bytes of RAM",
            k.end
        );
    }
});
