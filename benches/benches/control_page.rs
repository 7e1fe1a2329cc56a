//! The noxs control page's round trip, the heart of wispd's create path: wispd writes a VM
//! configuration and posts Create, the shell sees the command, reads and validates the
//! configuration, acknowledges, and wispd sees the acknowledgement. Measured in one process
//! (both halves on the same page mapping, no doorbells), and with the two eventfd doorbells
//! rung and read as the real processes do.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::os::fd::OwnedFd;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use wisp_api::control_page::{ControlCommand, ControlPage};
use wisp_api::{BootSource, MachineConfig, VmConfig};

fn config() -> VmConfig {
    VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: "/var/lib/wisp/wisp-unikernel".into(),
            initrd_path: None,
            boot_args: Some("console=ttyS0 reboot=k panic=-1 idle".into()),
        }),
        machine_config: MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 32,
            smt: false,
            mem_shared: false,
        },
        ..Default::default()
    }
}

fn round_trip(c: &mut Criterion) {
    let wispd = ControlPage::create().expect("control page");
    let fd: OwnedFd = wispd.file().try_clone().expect("dup").into();
    let shell = ControlPage::open(fd).expect("shell view");
    let cfg = config();
    let doorbell = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let ack = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let mut group = c.benchmark_group("control_page");
    group.bench_function("create_round_trip", |b| {
        b.iter(|| {
            wispd.write_config(black_box(&cfg)).expect("write");
            let seq = wispd.post_command(ControlCommand::Create);
            let (seen, _) = shell.pending_command().expect("pending");
            black_box(shell.read_config().expect("valid"));
            shell.acknowledge(seen, 0);
            assert_eq!(wispd.acknowledged(seq), Some(0));
        })
    });
    group.bench_function("create_round_trip_with_doorbells", |b| {
        b.iter(|| {
            wispd.write_config(black_box(&cfg)).expect("write");
            let seq = wispd.post_command(ControlCommand::Create);
            doorbell.write(1).expect("ring");
            doorbell.read().expect("doorbell");
            let (seen, _) = shell.pending_command().expect("pending");
            black_box(shell.read_config().expect("valid"));
            shell.acknowledge(seen, 0);
            ack.write(1).expect("ring");
            ack.read().expect("ack");
            assert_eq!(wispd.acknowledged(seq), Some(0));
        })
    });
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
