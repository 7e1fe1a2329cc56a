//! `VmResources`, the configuration store, on its own: the Firecracker rules and the
//! `--config-file` path, with real files.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::path::{Path, PathBuf};
use wisp_api::{
    BootSource, Drive, ErrorKind, HostLimits, MachineConfig, NetworkInterface, VmConfig,
    VmResources, VmState, VmmAction, VmmData,
};

fn files() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    let disk = dir.path().join("disk");
    std::fs::write(&kernel, b"k").unwrap();
    std::fs::write(&disk, b"d").unwrap();
    (dir, kernel, disk)
}

fn limits() -> HostLimits {
    HostLimits::with_max_vcpus(8)
}

fn drive(id: &str, path: &Path, root: bool) -> Drive {
    Drive {
        drive_id: id.into(),
        path_on_host: path.to_path_buf(),
        is_root_device: root,
        is_read_only: false,
        rate_limiter: None,
    }
}

fn tap(id: &str, dev: &str, mac: Option<&str>) -> NetworkInterface {
    NetworkInterface {
        iface_id: id.into(),
        host_dev_name: dev.into(),
        guest_mac: mac.map(str::to_string),
        rx_rate_limiter: None,
        tx_rate_limiter: None,
    }
}

#[test]
fn from_config_accepts_a_valid_document() {
    let (_d, kernel, disk) = files();
    let doc = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}"}},
            "machine-config": {{"vcpu_count": 2, "mem_size_mib": 64}},
            "drives": [{{"drive_id": "root", "path_on_host": "{}", "is_root_device": true}}]}}"#,
        kernel.display(),
        disk.display()
    );
    let cfg: VmConfig = serde_json::from_str(&doc).unwrap();
    let res = VmResources::from_config(cfg.clone(), limits()).unwrap();
    assert_eq!(res.vm_config(), &cfg);
}

#[test]
fn from_config_names_the_section_at_fault() {
    let (_d, kernel, disk) = files();
    let mut cfg = VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: kernel,
            ..Default::default()
        }),
        ..Default::default()
    };
    cfg.drives = vec![drive("a", &disk, false), drive("a", &disk, false)];
    let err = VmResources::from_config(cfg.clone(), limits()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration, section `drives`: drive id `a` appears twice"
    );
    cfg.drives.clear();
    cfg.machine_config.mem_size_mib = 0;
    let err = VmResources::from_config(cfg, limits()).unwrap_err();
    assert!(
        err.to_string()
            .contains("section `machine-config`: mem_size_mib"),
        "{err}"
    );
}

#[test]
fn smt_needs_one_or_an_even_number_of_vcpus() {
    let mut res = VmResources::new(limits());
    let mc = |vcpu_count, smt| {
        VmmAction::PutMachineConfig(MachineConfig {
            vcpu_count,
            mem_size_mib: 32,
            smt,
            mem_shared: false,
        })
    };
    assert!(res
        .apply(&mc(3, true), VmState::NotStarted)
        .unwrap()
        .is_err());
    assert!(res
        .apply(&mc(3, false), VmState::NotStarted)
        .unwrap()
        .is_ok());
    assert!(res
        .apply(&mc(4, true), VmState::NotStarted)
        .unwrap()
        .is_ok());
    assert!(res
        .apply(&mc(1, true), VmState::NotStarted)
        .unwrap()
        .is_ok());
}

#[test]
fn the_root_device_is_listed_first() {
    let (d, _k, disk) = files();
    let other = d.path().join("other");
    std::fs::write(&other, b"o").unwrap();
    let mut res = VmResources::new(limits());
    let add = |res: &mut VmResources, d: Drive| {
        res.apply(&VmmAction::InsertBlockDevice(d), VmState::NotStarted)
            .unwrap()
            .unwrap()
    };
    add(&mut res, drive("data", &other, false));
    add(&mut res, drive("root", &disk, true));
    let ids: Vec<_> = res
        .vm_config()
        .drives
        .iter()
        .map(|d| &d.drive_id[..])
        .collect();
    assert_eq!(ids, ["root", "data"]);
}

#[test]
fn network_interfaces_may_not_share_a_tap_or_a_mac() {
    let mut res = VmResources::new(limits());
    let put = |res: &mut VmResources, i| {
        res.apply(&VmmAction::InsertNetworkDevice(i), VmState::NotStarted)
            .unwrap()
    };
    assert!(put(&mut res, tap("eth0", "tap0", Some("06:00:00:00:00:01"))).is_ok());
    let e = put(&mut res, tap("eth1", "tap0", None)).unwrap_err();
    assert!(
        e.to_string()
            .contains("tap0 is already used by interface `eth0`"),
        "{e}"
    );
    let e = put(&mut res, tap("eth1", "tap1", Some("06:00:00:00:00:01"))).unwrap_err();
    assert!(e.to_string().contains("guest MAC"), "{e}");
    let e = put(&mut res, tap("eth1", "a-name-longer-than-15", None)).unwrap_err();
    assert!(e.to_string().contains("not a valid interface name"), "{e}");
    // Same id replaces, even with the same tap.
    assert!(put(&mut res, tap("eth0", "tap0", Some("06:00:00:00:00:02"))).is_ok());
    assert_eq!(res.vm_config().network_interfaces.len(), 1);
}

#[test]
fn lifecycle_actions_are_checked_against_the_state() {
    let (_d, kernel, _disk) = files();
    let mut res = VmResources::new(limits());
    let boot = VmmAction::ConfigureBootSource(BootSource {
        kernel_image_path: kernel,
        ..Default::default()
    });
    assert_eq!(
        res.apply(&boot, VmState::NotStarted),
        Some(Ok(VmmData::Empty))
    );
    // The VMM's own work: the store says "yours" by returning None.
    assert_eq!(
        res.apply(&VmmAction::StartMicroVm, VmState::NotStarted),
        None
    );
    assert_eq!(res.apply(&VmmAction::Pause, VmState::Running), None);
    assert_eq!(res.apply(&VmmAction::Resume, VmState::Paused), None);
    assert_eq!(
        res.apply(&VmmAction::SendCtrlAltDel, VmState::Running),
        None
    );

    let refused = |res: &mut VmResources, a: VmmAction, s: VmState| {
        res.apply(&a, s).unwrap().unwrap_err().kind()
    };
    assert_eq!(
        refused(&mut res, VmmAction::StartMicroVm, VmState::Running),
        ErrorKind::NotAllowedInState
    );
    assert_eq!(
        refused(&mut res, VmmAction::Pause, VmState::NotStarted),
        ErrorKind::NotAllowedInState
    );
    assert_eq!(
        refused(&mut res, VmmAction::SendCtrlAltDel, VmState::Paused),
        ErrorKind::NotAllowedInState
    );
    assert_eq!(
        refused(&mut res, boot.clone(), VmState::Paused),
        ErrorKind::NotAllowedInState
    );
    // Reads work in every state.
    for s in [
        VmState::NotStarted,
        VmState::Running,
        VmState::Paused,
        VmState::Halted,
    ] {
        match res.apply(&VmmAction::GetVmInfo, s) {
            Some(Ok(VmmData::InstanceInfo(info))) => assert_eq!(info.state, s),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_instance_id_can_be_set() {
    let res = &mut VmResources::new(limits()).with_instance_id("vm-42");
    match res.apply(&VmmAction::GetVmInfo, VmState::NotStarted) {
        Some(Ok(VmmData::InstanceInfo(info))) => assert_eq!(info.id, "vm-42"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn at_most_nineteen_virtio_devices_fit_one_per_irq() {
    let dir = tempfile::tempdir().unwrap();
    let mut res = VmResources::new(limits());
    for i in 0..wisp_api::resources::MAX_VIRTIO_DEVICES {
        let path = dir.path().join(format!("d{i}"));
        std::fs::write(&path, [0u8; 512]).unwrap();
        let drive = wisp_api::Drive {
            drive_id: format!("d{i}"),
            path_on_host: path,
            is_root_device: false,
            is_read_only: true,
            rate_limiter: None,
        };
        let put = res.apply(&VmmAction::InsertBlockDevice(drive), VmState::NotStarted);
        assert_eq!(put, Some(Ok(VmmData::Empty)), "drive {i}");
    }
    let refused = res
        .apply(
            &VmmAction::SetEntropy(wisp_api::Entropy::default()),
            VmState::NotStarted,
        )
        .unwrap()
        .unwrap_err();
    assert!(
        refused.to_string().contains("19 virtio devices"),
        "{refused}"
    );
    // Replacing an existing drive adds nothing and is still allowed.
    let again = dir.path().join("again");
    std::fs::write(&again, [0u8; 512]).unwrap();
    let drive = wisp_api::Drive {
        drive_id: "d0".into(),
        path_on_host: again,
        is_root_device: false,
        is_read_only: true,
        rate_limiter: None,
    };
    let put = res.apply(&VmmAction::InsertBlockDevice(drive), VmState::NotStarted);
    assert_eq!(put, Some(Ok(VmmData::Empty)));
}

#[test]
fn guest_memory_above_the_host_is_refused_unless_overcommit_is_allowed() {
    let small_host = HostLimits {
        max_mem_mib: 1024,
        ..limits()
    };
    let mc = MachineConfig {
        vcpu_count: 1,
        mem_size_mib: 1025,
        smt: false,
        mem_shared: false,
    };
    let mut res = VmResources::new(small_host);
    let err = res
        .apply(
            &VmmAction::PutMachineConfig(mc.clone()),
            VmState::NotStarted,
        )
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    let msg = err.to_string();
    assert!(msg.contains("1025") && msg.contains("1024 MiB"), "{msg}");
    let exact = MachineConfig {
        mem_size_mib: 1024,
        ..mc.clone()
    };
    let put = VmmAction::PutMachineConfig(exact);
    assert!(res.apply(&put, VmState::NotStarted).unwrap().is_ok());

    let mut res = VmResources::new(HostLimits {
        allow_overcommit: true,
        ..small_host
    });
    let put = VmmAction::PutMachineConfig(mc);
    assert!(res.apply(&put, VmState::NotStarted).unwrap().is_ok());
}
