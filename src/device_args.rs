//! `--disk`, `--net`, `--vsock` and `--fs` option values (`key=value` lists, as in Cloud Hypervisor and
//! Firecracker's jailer) turned into the API's configuration models.

use std::path::PathBuf;
use wisp_api::config::{DEFAULT_FS_NUM_QUEUES, DEFAULT_FS_QUEUE_SIZE};
use wisp_api::{Drive, Fs, NetworkInterface, Vsock};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceArgError {
    #[error("{option}: unknown key {key:?}")]
    UnknownKey { option: &'static str, key: String },
    #[error("{option}: missing {key}=")]
    Missing {
        option: &'static str,
        key: &'static str,
    },
    #[error("{option}: {key}={value:?} is not valid")]
    Invalid {
        option: &'static str,
        key: &'static str,
        value: String,
    },
}

/// Splits "a=1,b,c=3" into (key, value) pairs; a bare word has an empty value.
fn pairs(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// `path=FILE[,ro][,id=NAME][,root]`; drives without an id are named disk0, disk1, ...
pub fn parse_disk(text: &str, index: usize) -> Result<Drive, DeviceArgError> {
    const OPT: &str = "--disk";
    let mut drive = Drive {
        drive_id: format!("disk{index}"),
        path_on_host: PathBuf::new(),
        is_root_device: false,
        is_read_only: false,
        rate_limiter: None,
        ..Default::default()
    };
    for (key, value) in pairs(text) {
        match key {
            "path" => drive.path_on_host = PathBuf::from(value),
            "ro" => drive.is_read_only = true,
            "root" => drive.is_root_device = true,
            "id" if !value.is_empty() => drive.drive_id = value.to_string(),
            "id" => {
                return Err(DeviceArgError::Invalid {
                    option: OPT,
                    key: "id",
                    value: value.into(),
                })
            }
            _ => {
                return Err(DeviceArgError::UnknownKey {
                    option: OPT,
                    key: key.into(),
                })
            }
        }
    }
    if drive.path_on_host.as_os_str().is_empty() {
        return Err(DeviceArgError::Missing {
            option: OPT,
            key: "path",
        });
    }
    Ok(drive)
}

/// `tap=NAME[,mac=MAC]`.
pub fn parse_net(text: &str, index: usize) -> Result<NetworkInterface, DeviceArgError> {
    const OPT: &str = "--net";
    let mut tap = None;
    let mut mac = None;
    for (key, value) in pairs(text) {
        match key {
            "tap" => tap = Some(value.to_string()),
            "mac" => mac = Some(value.to_string()),
            _ => {
                return Err(DeviceArgError::UnknownKey {
                    option: OPT,
                    key: key.into(),
                })
            }
        }
    }
    Ok(NetworkInterface {
        iface_id: format!("eth{index}"),
        host_dev_name: tap
            .filter(|t| !t.is_empty())
            .ok_or(DeviceArgError::Missing {
                option: OPT,
                key: "tap",
            })?,
        guest_mac: mac,
        rx_rate_limiter: None,
        tx_rate_limiter: None,
        ..Default::default()
    })
}

/// `cid=N,uds=PATH`.
pub fn parse_vsock(text: &str) -> Result<Vsock, DeviceArgError> {
    const OPT: &str = "--vsock";
    let mut cid = None;
    let mut uds = None;
    for (key, value) in pairs(text) {
        match key {
            "cid" => {
                cid = Some(value.parse::<u32>().map_err(|_| DeviceArgError::Invalid {
                    option: OPT,
                    key: "cid",
                    value: value.into(),
                })?)
            }
            "uds" => uds = Some(PathBuf::from(value)),
            _ => {
                return Err(DeviceArgError::UnknownKey {
                    option: OPT,
                    key: key.into(),
                })
            }
        }
    }
    Ok(Vsock {
        guest_cid: cid.ok_or(DeviceArgError::Missing {
            option: OPT,
            key: "cid",
        })?,
        uds_path: uds.ok_or(DeviceArgError::Missing {
            option: OPT,
            key: "uds",
        })?,
        ..Default::default()
    })
}

/// `tag=TAG,socket=PATH[,queue-size=N][,num-queues=N][,id=NAME]` (Cloud Hypervisor's `--fs`
/// keys); shares without an id are named fs0, fs1, ...
pub fn parse_fs(text: &str, index: usize) -> Result<Fs, DeviceArgError> {
    const OPT: &str = "--fs";
    let mut fs = Fs {
        fs_id: format!("fs{index}"),
        tag: String::new(),
        socket: PathBuf::new(),
        num_queues: DEFAULT_FS_NUM_QUEUES,
        queue_size: DEFAULT_FS_QUEUE_SIZE,
    };
    let number = |key: &'static str, value: &str| {
        value.parse::<u16>().map_err(|_| DeviceArgError::Invalid {
            option: OPT,
            key,
            value: value.into(),
        })
    };
    for (key, value) in pairs(text) {
        match key {
            "tag" => fs.tag = value.to_string(),
            "socket" => fs.socket = PathBuf::from(value),
            "queue-size" | "queue_size" => fs.queue_size = number("queue-size", value)?,
            "num-queues" | "num_queues" => fs.num_queues = number("num-queues", value)?,
            "id" if !value.is_empty() => fs.fs_id = value.to_string(),
            _ => {
                return Err(DeviceArgError::UnknownKey {
                    option: OPT,
                    key: key.into(),
                })
            }
        }
    }
    if fs.tag.is_empty() {
        return Err(DeviceArgError::Missing {
            option: OPT,
            key: "tag",
        });
    }
    if fs.socket.as_os_str().is_empty() {
        return Err(DeviceArgError::Missing {
            option: OPT,
            key: "socket",
        });
    }
    Ok(fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_options() {
        let d = parse_disk("path=/tmp/a.img,ro,id=rootfs,root", 0).unwrap();
        assert_eq!(d.path_on_host, PathBuf::from("/tmp/a.img"));
        assert!(d.is_read_only && d.is_root_device);
        assert_eq!(d.drive_id, "rootfs");
        assert_eq!(parse_disk("path=/x", 3).unwrap().drive_id, "disk3");
        assert_eq!(
            parse_disk("ro", 0),
            Err(DeviceArgError::Missing {
                option: "--disk",
                key: "path"
            })
        );
        assert!(matches!(
            parse_disk("path=/x,bogus=1", 0),
            Err(DeviceArgError::UnknownKey { .. })
        ));
    }

    #[test]
    fn net_and_vsock_options() {
        let n = parse_net("tap=tap0,mac=02:00:00:00:00:01", 0).unwrap();
        assert_eq!(n.host_dev_name, "tap0");
        assert_eq!(n.guest_mac.as_deref(), Some("02:00:00:00:00:01"));
        assert!(parse_net("mac=02:00:00:00:00:01", 0).is_err());
        let v = parse_vsock("cid=3,uds=/tmp/v.sock").unwrap();
        assert_eq!((v.guest_cid, v.uds_path), (3, PathBuf::from("/tmp/v.sock")));
        assert!(matches!(
            parse_vsock("cid=x,uds=/a"),
            Err(DeviceArgError::Invalid { key: "cid", .. })
        ));
    }

    #[test]
    fn fs_options() {
        let f = parse_fs("tag=myfs,socket=/run/v.sock,queue-size=256,num-queues=2", 0).unwrap();
        assert_eq!((f.fs_id.as_str(), f.tag.as_str()), ("fs0", "myfs"));
        assert_eq!(f.socket, PathBuf::from("/run/v.sock"));
        assert_eq!((f.num_queues, f.queue_size), (2, 256));
        let f = parse_fs("tag=a,socket=/s,id=root", 1).unwrap();
        assert_eq!(f.fs_id, "root");
        assert_eq!((f.num_queues, f.queue_size), (1, 1024));
        assert_eq!(
            parse_fs("socket=/s", 0),
            Err(DeviceArgError::Missing {
                option: "--fs",
                key: "tag"
            })
        );
        assert!(matches!(
            parse_fs("tag=a", 0),
            Err(DeviceArgError::Missing { key: "socket", .. })
        ));
        assert!(matches!(
            parse_fs("tag=a,socket=/s,queue-size=big", 0),
            Err(DeviceArgError::Invalid {
                key: "queue-size",
                ..
            })
        ));
    }
}
