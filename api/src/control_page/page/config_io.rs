//! The VM configuration on the control page: written by `wispd`, read and validated by the
//! shell. Fixed-size fields, no serialisation format.

use super::{ControlPage, ControlPageError};
use crate::config::{BootSource, Drive, Entropy, MachineConfig, NetworkInterface, VmConfig, Vsock};
use crate::control_page::layout::*;
use crate::validate::{format_mac, parse_mac};
use std::path::{Path, PathBuf};

/// Largest guest the page describes (1 TiB) and most vCPUs (the KVM limit we support).
const MAX_MEM_MIB: u64 = 1 << 20;
const MAX_VCPUS: u64 = 255;

fn path_str<'a>(what: &'static str, p: &'a Path) -> Result<&'a str, ControlPageError> {
    p.to_str().ok_or(ControlPageError::NotUtf8(what))
}

impl ControlPage {
    /// Writes `config` for a Create command.
    pub fn write_config(&self, config: &VmConfig) -> Result<(), ControlPageError> {
        let boot = config.boot_source.clone().unwrap_or_default();
        self.store32(OFF_MEM_MIB, config.machine_config.mem_size_mib);
        self.store32(OFF_VCPUS, u32::from(config.machine_config.vcpu_count));
        self.write_str(
            "kernel path",
            OFF_KERNEL,
            KERNEL_MAX,
            Some(OFF_KERNEL_LEN),
            path_str("kernel path", &boot.kernel_image_path)?,
        )?;
        let initrd = match &boot.initrd_path {
            Some(p) => path_str("initrd path", p)?,
            None => "",
        };
        self.write_str(
            "initrd path",
            OFF_INITRD,
            INITRD_MAX,
            Some(OFF_INITRD_LEN),
            initrd,
        )?;
        self.write_str(
            "command line",
            OFF_CMDLINE,
            CMDLINE_MAX,
            Some(OFF_CMDLINE_LEN),
            boot.boot_args.as_deref().unwrap_or(""),
        )?;
        let mut n = 0;
        // `param`: the entry's 8 kind-specific bytes (vsock CID, net MAC).
        let mut entry = |kind: u32, flags: u32, param: [u8; 8], id: &str, path: &str| {
            if n >= DEVICES_MAX {
                return Err(ControlPageError::TooManyDevices);
            }
            let base = OFF_DEVICES + n * DEVICE_ENTRY_SIZE;
            self.store32(base + DEV_OFF_KIND, kind);
            self.store32(base + DEV_OFF_FLAGS, flags);
            self.write_bytes(base + DEV_OFF_CID, &param);
            self.write_str("device id", base + DEV_OFF_ID, DEV_ID_MAX, None, id)?;
            self.write_str("device path", base + DEV_OFF_PATH, DEV_PATH_MAX, None, path)?;
            n += 1;
            Ok(())
        };
        for d in &config.drives {
            let flags = if d.is_read_only {
                DEV_FLAG_READ_ONLY
            } else {
                0
            } | if d.is_root_device { DEV_FLAG_ROOT } else { 0 };
            entry(
                DEV_KIND_BLOCK,
                flags,
                [0; 8],
                &d.drive_id,
                path_str("drive path", &d.path_on_host)?,
            )?;
        }
        for iface in &config.network_interfaces {
            let (flags, param) = match &iface.guest_mac {
                Some(text) => {
                    let mac =
                        parse_mac(text).ok_or_else(|| ControlPageError::BadMac(text.clone()))?;
                    let mut param = [0u8; 8];
                    param[..6].copy_from_slice(&mac);
                    (DEV_FLAG_MAC, param)
                }
                None => (0, [0; 8]),
            };
            entry(
                DEV_KIND_NET,
                flags,
                param,
                &iface.iface_id,
                &iface.host_dev_name,
            )?;
        }
        if let Some(v) = &config.vsock {
            let mut param = [0u8; 8];
            param[..4].copy_from_slice(&v.guest_cid.to_le_bytes());
            entry(
                DEV_KIND_VSOCK,
                0,
                param,
                "vsock",
                path_str("vsock path", &v.uds_path)?,
            )?;
        }
        if config.entropy.is_some() {
            entry(DEV_KIND_RNG, 0, [0; 8], "rng", "")?;
        }
        self.store32(OFF_DEVICE_COUNT, n as u32);
        Ok(())
    }

    fn bounded(
        &self,
        field: &'static str,
        off: usize,
        lo: u64,
        hi: u64,
    ) -> Result<u32, ControlPageError> {
        let v = self.load32(off);
        if u64::from(v) < lo || u64::from(v) > hi {
            return Err(ControlPageError::OutOfRange {
                field,
                value: u64::from(v),
            });
        }
        Ok(v)
    }

    /// Reads and validates the configuration of a Create command.
    pub fn read_config(&self) -> Result<VmConfig, ControlPageError> {
        let mem_size_mib = self.bounded("memory", OFF_MEM_MIB, 1, MAX_MEM_MIB)?;
        let vcpu_count = self.bounded("vcpus", OFF_VCPUS, 1, MAX_VCPUS)? as u8;
        let kernel = self.read_str("kernel path", OFF_KERNEL, KERNEL_MAX, Some(OFF_KERNEL_LEN))?;
        if kernel.is_empty() {
            return Err(ControlPageError::OutOfRange {
                field: "kernel path length",
                value: 0,
            });
        }
        let initrd = self.read_str("initrd path", OFF_INITRD, INITRD_MAX, Some(OFF_INITRD_LEN))?;
        let cmdline = self.read_str(
            "command line",
            OFF_CMDLINE,
            CMDLINE_MAX,
            Some(OFF_CMDLINE_LEN),
        )?;
        let count = self.bounded("device count", OFF_DEVICE_COUNT, 0, DEVICES_MAX as u64)?;
        let mut config = VmConfig {
            boot_source: Some(BootSource {
                kernel_image_path: PathBuf::from(kernel),
                initrd_path: (!initrd.is_empty()).then(|| PathBuf::from(initrd)),
                boot_args: Some(cmdline),
            }),
            machine_config: MachineConfig {
                vcpu_count,
                mem_size_mib,
                smt: false,
            },
            ..Default::default()
        };
        for i in 0..count as usize {
            let base = OFF_DEVICES + i * DEVICE_ENTRY_SIZE;
            let flags = self.load32(base + DEV_OFF_FLAGS);
            let id = self.read_str("device id", base + DEV_OFF_ID, DEV_ID_MAX, None)?;
            let path = self.read_str("device path", base + DEV_OFF_PATH, DEV_PATH_MAX, None)?;
            match self.load32(base + DEV_OFF_KIND) {
                DEV_KIND_BLOCK => config.drives.push(Drive {
                    drive_id: id,
                    path_on_host: PathBuf::from(path),
                    is_root_device: flags & DEV_FLAG_ROOT != 0,
                    is_read_only: flags & DEV_FLAG_READ_ONLY != 0,
                }),
                DEV_KIND_NET => {
                    let guest_mac = (flags & DEV_FLAG_MAC != 0).then(|| {
                        let mut mac = [0u8; 6];
                        mac.copy_from_slice(&self.read_bytes(base + DEV_OFF_MAC, 6));
                        format_mac(&mac)
                    });
                    config.network_interfaces.push(NetworkInterface {
                        iface_id: id,
                        host_dev_name: path,
                        guest_mac,
                    })
                }
                DEV_KIND_VSOCK => {
                    config.vsock = Some(Vsock {
                        guest_cid: self.load32(base + DEV_OFF_CID),
                        uds_path: PathBuf::from(path),
                    })
                }
                DEV_KIND_RNG => config.entropy = Some(Entropy::default()),
                other => {
                    return Err(ControlPageError::OutOfRange {
                        field: "device kind",
                        value: u64::from(other),
                    })
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_page::{ControlCommand, ShellState, Timestamp};
    use std::os::fd::OwnedFd;

    fn shell_view(page: &ControlPage) -> Result<ControlPage, ControlPageError> {
        let fd: OwnedFd = page.file().try_clone().unwrap().into();
        ControlPage::open(fd)
    }

    fn sample() -> VmConfig {
        VmConfig {
            boot_source: Some(BootSource {
                kernel_image_path: "/boot/vmlinux".into(),
                initrd_path: Some("/boot/initrd".into()),
                boot_args: Some("console=ttyS0 quiet".into()),
            }),
            machine_config: MachineConfig {
                vcpu_count: 2,
                mem_size_mib: 256,
                smt: false,
            },
            drives: vec![Drive {
                drive_id: "root".into(),
                path_on_host: "/img/root.ext4".into(),
                is_root_device: true,
                is_read_only: true,
            }],
            network_interfaces: vec![NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: "tap0".into(),
                guest_mac: Some("06:00:ac:10:00:02".into()),
            }],
            vsock: Some(Vsock {
                guest_cid: 3,
                uds_path: "/run/v.sock".into(),
            }),
            entropy: Some(Entropy::default()),
            ..Default::default()
        }
    }

    #[test]
    fn configuration_round_trips_between_the_two_sides() {
        let wispd = ControlPage::create().unwrap();
        let shell = shell_view(&wispd).unwrap();
        wispd.write_config(&sample()).unwrap();
        let seq = wispd.post_command(ControlCommand::Create);
        assert_eq!(
            shell.pending_command(),
            Some((seq, Some(ControlCommand::Create)))
        );
        assert_eq!(shell.read_config().unwrap(), sample());
        shell.set_time(Timestamp::FirstEntry, 42);
        shell.set_state(ShellState::Running);
        shell.acknowledge(seq, 0);
        assert_eq!(wispd.acknowledged(seq), Some(0));
        assert_eq!(shell.pending_command(), None);
        assert_eq!(wispd.state(), Some(ShellState::Running));
        assert_eq!(wispd.time(Timestamp::FirstEntry), 42);
    }

    #[test]
    fn a_page_with_a_wrong_magic_is_refused() {
        let page = ControlPage::create().unwrap();
        page.store64(OFF_MAGIC, 0xdead_beef);
        assert!(matches!(
            shell_view(&page),
            Err(ControlPageError::BadMagic(0xdead_beef))
        ));
        page.store64(OFF_MAGIC, MAGIC);
        page.store32(OFF_VERSION, 9);
        assert!(matches!(
            shell_view(&page),
            Err(ControlPageError::BadVersion(9))
        ));
    }

    #[test]
    fn out_of_range_lengths_and_values_are_errors_not_reads_past_the_field() {
        let page = ControlPage::create().unwrap();
        page.write_config(&sample()).unwrap();
        page.store32(OFF_KERNEL_LEN, 10_000);
        let err = page.read_config().unwrap_err();
        assert!(
            matches!(
                err,
                ControlPageError::OutOfRange {
                    field: "kernel path",
                    ..
                }
            ),
            "{err}"
        );
        page.write_config(&sample()).unwrap();
        page.store32(OFF_VCPUS, 0);
        assert!(page.read_config().is_err());
        page.write_config(&sample()).unwrap();
        page.store32(OFF_DEVICE_COUNT, 99);
        assert!(page.read_config().is_err());
        page.write_config(&sample()).unwrap();
        page.store32(OFF_DEVICES, 77);
        assert!(page.read_config().is_err());
        page.write_config(&sample()).unwrap();
        page.write_bytes(OFF_CMDLINE, &[0xff, 0xfe]);
        assert!(matches!(
            page.read_config(),
            Err(ControlPageError::NotUtf8(_))
        ));
    }

    #[test]
    fn configurations_that_do_not_fit_are_refused_on_write() {
        let page = ControlPage::create().unwrap();
        let mut c = sample();
        c.boot_source.as_mut().unwrap().boot_args = Some("x".repeat(CMDLINE_MAX + 1));
        assert!(matches!(
            page.write_config(&c),
            Err(ControlPageError::TooLong { .. })
        ));
        let mut c = sample();
        for i in 0..4 {
            c.drives.push(Drive {
                drive_id: format!("d{i}"),
                path_on_host: "/x".into(),
                is_root_device: false,
                is_read_only: false,
            });
        }
        assert!(matches!(
            page.write_config(&c),
            Err(ControlPageError::TooManyDevices)
        ));
    }

    #[test]
    fn an_interface_without_a_mac_round_trips_and_a_bad_mac_is_refused_on_write() {
        let wispd = ControlPage::create().unwrap();
        let shell = shell_view(&wispd).unwrap();
        let mut c = sample();
        c.network_interfaces[0].guest_mac = None;
        wispd.write_config(&c).unwrap();
        assert_eq!(shell.read_config().unwrap(), c);
        c.network_interfaces[0].guest_mac = Some("06:00:ac:10:00".into());
        assert!(matches!(
            wispd.write_config(&c),
            Err(ControlPageError::BadMac(_))
        ));
    }
}
