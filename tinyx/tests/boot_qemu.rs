//! End to end: the default Tinyx guest (built on first run, then from the cache)
//! boots under QEMU `-M microvm` with TCG to its `/init` and application.
//!
//! Slow only the first time on a machine (the kernel build, a few minutes); always
//! run, so CI exercises the real kernel and initramfs.

use std::path::Path;

use wisp_tinyx::fragment::{check_config, Fragment};
use wisp_tinyx::initramfs::{build_initramfs, InitramfsSpec, DEFAULT_APP_MARKER, INIT_MARKER};
use wisp_tinyx::kernel::default_fragments;
use wisp_tinyx::qemu::{boot, QemuBoot};
use wisp_tinyx::{default_guest, GuestArtifacts};

fn guest() -> GuestArtifacts {
    default_guest().expect("default Tinyx guest builds (or comes from the cache)")
}

fn assert_boots(kernel: &Path, initramfs: &Path, marker: &str) -> String {
    let outcome = boot(&QemuBoot::new(kernel, initramfs, marker)).expect("qemu runs");
    assert!(
        outcome.reached_marker(),
        "{} did not print {marker:?}; console:\n{}",
        kernel.display(),
        outcome.console
    );
    assert!(
        outcome.exited,
        "guest did not reset after its app:\n{}",
        outcome.console
    );
    outcome.console
}

#[test]
fn default_guest_vmlinux_boots_through_pvh_to_init_and_app() {
    let g = guest();
    let console = assert_boots(&g.vmlinux, &g.initramfs, DEFAULT_APP_MARKER);
    // Early printk is on the serial port from the first line.
    assert!(console.contains("Linux version 6."), "{console}");
    let init = console.find(INIT_MARKER).expect("init marker");
    let app = console.find(DEFAULT_APP_MARKER).expect("app marker");
    assert!(init < app, "{console}");
    assert!(
        console.contains("tinyx: app exited with status 0"),
        "{console}"
    );
}

#[test]
fn default_guest_bzimage_boots_to_init() {
    let g = guest();
    assert_boots(&g.bzimage, &g.initramfs, DEFAULT_APP_MARKER);
}

#[test]
fn dynamic_app_runs_with_its_libraries_in_the_guest() {
    let g = guest();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = dir.path().join("ls.cpio.gz");
    // /bin/ls is dynamically linked (libc, libselinux, libpcre2 and the loader):
    // it runs only if the closure is complete and laid out where the loader looks.
    let probe = dir.path().join("probe");
    std::fs::write(&probe, "tinyx-probe-file\n").unwrap();
    let spec = InitramfsSpec {
        app: Some("/bin/ls".into()),
        init_script: None,
        adds: vec![(probe, "/probe/tinyx-probe-file".into())],
    };
    build_initramfs(&spec, &initramfs).unwrap();
    // The default init runs `/app/ls` with no arguments in /, whose listing
    // includes the directory added above.
    let console = assert_boots(&g.vmlinux, &initramfs, "tinyx: app exited with status 0");
    assert!(console.contains("probe"), "{console}");
}

#[test]
fn default_kernel_config_honours_every_fragment_option() {
    // The cache entry keeps the final .config beside the kernel.
    let config_path = guest().vmlinux.with_file_name("config");
    let text = std::fs::read_to_string(&config_path).unwrap();
    let config = Fragment::parse(&text, ".config").unwrap();
    let wanted = Fragment::merged(
        &default_fragments()
            .iter()
            .map(|f| Fragment::parse(&f.text, &f.name).unwrap())
            .collect::<Vec<_>>(),
    );
    assert_eq!(check_config(&wanted, &config), vec![]);
    assert!(text.contains("CONFIG_PVH=y"));
    assert!(text.contains("# CONFIG_MODULES is not set"));
}
