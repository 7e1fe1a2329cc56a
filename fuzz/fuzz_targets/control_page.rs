//! The shell's reader of the noxs control page on a hostile page: `wispd` (or anything that
//! got the memfd) may leave any bytes on it. The page is a real sealed memfd; the input
//! patches a valid page written by `write_config` (so the fuzzer starts from pages the reader
//! accepts and bends them) and the shell side maps it and reads everything it reads in
//! production: state, pending command, request id, error text, timestamps, configuration.
//!
//! Input: one byte picks the starting page (bit 0: the sample configuration, else an empty
//! page with only magic and version; bit 1: keep the peer's magic and version untouched
//! whatever the patches say), then patches `(u32 offset modulo the page size, u8 length,
//! bytes)`.
//!
//! Invariants besides no panic: a configuration the reader accepts passes the configuration
//! store's validation or is refused by it cleanly, and writes back to a fresh page and reads
//! back equal (the page carries every accepted configuration losslessly).
#![no_main]

use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use libfuzzer_sys::fuzz_target;
use wisp_api::control_page::layout::{MAGIC, OFF_MAGIC, OFF_VERSION, REGION_SIZE, VERSION};
use wisp_api::control_page::{ControlPage, Timestamp};
use wisp_api::{HostLimits, VmResources};
use wisp_guest_fuzz::input::Input;
use wisp_guest_fuzz::seeds::sample_config;

fn shell_view(page: &ControlPage) -> Result<ControlPage, wisp_api::control_page::ControlPageError> {
    let fd: OwnedFd = page.file().try_clone().expect("dup the memfd").into();
    ControlPage::open(fd)
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let start = inp.u8();
    let page = ControlPage::create().expect("control page");
    if start & 1 != 0 {
        page.write_config(&sample_config())
            .expect("sample fits the page");
    }
    while !inp.is_empty() {
        let off = inp.u32() as usize % REGION_SIZE;
        let len = usize::from(inp.u8()).min(REGION_SIZE - off);
        let bytes = inp.bytes(len);
        page.file()
            .write_all_at(bytes, off as u64)
            .expect("write into the memfd");
    }
    if start & 2 != 0 {
        page.file()
            .write_all_at(&MAGIC.to_le_bytes(), OFF_MAGIC as u64)
            .expect("magic");
        page.file()
            .write_all_at(&VERSION.to_le_bytes(), OFF_VERSION as u64)
            .expect("version");
    }
    let Ok(shell) = shell_view(&page) else {
        return;
    };
    let _ = shell.state();
    let _ = shell.pending_command();
    let _ = shell.request_id();
    let _ = shell.error();
    let _ = shell.shell_info();
    for t in [
        Timestamp::Prepared,
        Timestamp::Command,
        Timestamp::Configured,
        Timestamp::FirstEntry,
        Timestamp::BootTimer,
    ] {
        let _ = shell.time(t);
    }
    let Ok(config) = shell.read_config() else {
        return;
    };
    let fresh = ControlPage::create().expect("control page");
    fresh
        .write_config(&config)
        .expect("an accepted configuration fits the page again");
    let back = shell_view(&fresh)
        .expect("a fresh page opens")
        .read_config()
        .expect("a written configuration reads back");
    assert_eq!(
        back, config,
        "the configuration changed on its way through the page"
    );
    let _ = VmResources::from_config(config, HostLimits::default());
});
