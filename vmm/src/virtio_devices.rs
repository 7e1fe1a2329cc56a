//! Turns the configuration's drives, network interfaces, vsock and entropy device into virtio
//! devices on MMIO slots. Each goes through `DeviceManager::attach_virtio`, so its bus entry,
//! ioeventfds, irqfd and command-line entry are made together.

use crate::device_manager::{DeviceManager, DeviceManagerError};
use crate::microvm::Subscriber;
use kvm_ioctls::VmFd;
use linux_loader::cmdline::Cmdline;
use std::sync::{Arc, Mutex};
use vm_memory::GuestMemoryMmap;
use wisp_api::validate::parse_mac;
use wisp_api::{RateLimiter, VmConfig};
use wisp_devices::rate_limiter::TokenBucket;
use wisp_devices::virtio::block::BlockError;
use wisp_devices::virtio::net::NetError;
use wisp_devices::virtio::vhost_user_fs::{FsConfig, VhostUserFsError};
use wisp_devices::virtio::vsock::VsockError;
use wisp_devices::virtio::{
    Balloon, Block, MmioTransport, Net, Rng, VhostUserFs, VirtioDevice, Vsock,
};

#[derive(Debug, thiserror::Error)]
pub enum VirtioSetupError {
    #[error("drive {id}: {source}")]
    Block {
        id: String,
        #[source]
        source: BlockError,
    },
    #[error("network interface {id}: {source}")]
    Net {
        id: String,
        #[source]
        source: NetError,
    },
    #[error("network interface {id}: invalid MAC address {mac:?} (want six hex bytes like 02:00:00:00:00:01)")]
    Mac { id: String, mac: String },
    #[error("vsock: {0}")]
    Vsock(#[source] VsockError),
    #[error("balloon: cannot create its statistics timerfd: {0}")]
    Balloon(#[source] std::io::Error),
    #[error("fs {id}: {source}")]
    Fs {
        id: String,
        #[source]
        source: VhostUserFsError,
    },
    #[error("{what}: cannot create the rate limiter's timerfd: {source}")]
    RateLimiter {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: {source}")]
    Transport {
        name: String,
        #[source]
        source: wisp_devices::virtio::mmio::Error,
    },
    #[error(transparent)]
    Attach(#[from] DeviceManagerError),
    #[error("kernel command line: {0}")]
    Cmdline(#[from] linux_loader::cmdline::Error),
}

/// A virtio device of the running VM, for the front ends (PATCH /drives, metrics).
pub struct VirtioHandle {
    /// "block", "net", "vsock", "rng", "balloon" or "fs".
    pub kind: &'static str,
    /// The drive or interface id from the configuration ("vsock" / "rng" for those).
    pub id: String,
    pub transport: Arc<Mutex<MmioTransport>>,
}

fn attach(
    dm: &mut DeviceManager,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    cmdline: &mut Cmdline,
    kind: &'static str,
    id: String,
    device: Box<dyn VirtioDevice>,
) -> Result<VirtioHandle, VirtioSetupError> {
    let transport =
        MmioTransport::new(mem.clone(), device).map_err(|source| VirtioSetupError::Transport {
            name: format!("{kind} {id}"),
            source,
        })?;
    let device_type = transport.device_type();
    let transport = Arc::new(Mutex::new(transport));
    {
        let t = transport
            .lock()
            .map_err(|_| DeviceManagerError::NoSlot(kind))?;
        dm.attach_virtio(
            kind,
            vm,
            cmdline,
            device_type,
            transport.clone(),
            t.queue_events(),
            t.interrupt_event(),
        )?;
    }
    Ok(VirtioHandle {
        kind,
        id,
        transport,
    })
}

/// Creates and attaches every virtio device `config` asks for. The root drive goes first, so
/// Linux names it /dev/vda, and its `root=` argument is added to the command line.
pub fn attach_virtio_devices(
    dm: &mut DeviceManager,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    cmdline: &mut Cmdline,
    config: &VmConfig,
) -> Result<Vec<VirtioHandle>, VirtioSetupError> {
    let mut handles = Vec::new();
    let mut drives: Vec<_> = config.drives.iter().collect();
    drives.sort_by_key(|d| !d.is_root_device);
    for drive in drives {
        let mut block = Block::new(
            &drive.path_on_host,
            drive.is_read_only,
            Some(&drive.drive_id),
        )
        .map_err(|source| VirtioSetupError::Block {
            id: drive.drive_id.clone(),
            source,
        })?;
        let (bw, ops) = buckets(drive.rate_limiter.as_ref());
        block
            .set_rate_limiter(bw, ops)
            .map_err(|source| VirtioSetupError::RateLimiter {
                what: format!("drive {}", drive.drive_id),
                source,
            })?;
        block.set_flush_ignored(drive.cache_type == Some(wisp_api::CacheType::Unsafe));
        if drive.is_root_device {
            let mode = if drive.is_read_only { "ro" } else { "rw" };
            match &drive.partuuid {
                Some(uuid) => cmdline.insert_str(format!("root=PARTUUID={uuid} {mode}"))?,
                None => cmdline.insert_str(format!("root=/dev/vda {mode}"))?,
            }
        }
        handles.push(attach(
            dm,
            vm,
            mem,
            cmdline,
            "block",
            drive.drive_id.clone(),
            Box::new(block),
        )?);
    }
    for iface in &config.network_interfaces {
        let mac = match &iface.guest_mac {
            Some(text) => Some(parse_mac(text).ok_or_else(|| VirtioSetupError::Mac {
                id: iface.iface_id.clone(),
                mac: text.clone(),
            })?),
            None => None,
        };
        let mut net =
            Net::new(&iface.host_dev_name, mac).map_err(|source| VirtioSetupError::Net {
                id: iface.iface_id.clone(),
                source,
            })?;
        let limiter_err = |source| VirtioSetupError::RateLimiter {
            what: format!("network interface {}", iface.iface_id),
            source,
        };
        let (bw, ops) = buckets(iface.rx_rate_limiter.as_ref());
        net.set_rx_rate_limiter(bw, ops).map_err(limiter_err)?;
        let (bw, ops) = buckets(iface.tx_rate_limiter.as_ref());
        net.set_tx_rate_limiter(bw, ops).map_err(limiter_err)?;
        net.set_mtu(iface.mtu);
        handles.push(attach(
            dm,
            vm,
            mem,
            cmdline,
            "net",
            iface.iface_id.clone(),
            Box::new(net),
        )?);
    }
    if let Some(vsock) = &config.vsock {
        let dev = Vsock::new(u64::from(vsock.guest_cid), &vsock.uds_path)
            .map_err(VirtioSetupError::Vsock)?;
        handles.push(attach(
            dm,
            vm,
            mem,
            cmdline,
            "vsock",
            "vsock".into(),
            Box::new(dev),
        )?);
    }
    if let Some(entropy) = &config.entropy {
        let mut rng = Rng::new();
        let (bw, ops) = buckets(entropy.rate_limiter.as_ref());
        rng.set_rate_limiter(bw, ops)
            .map_err(|source| VirtioSetupError::RateLimiter {
                what: "entropy".into(),
                source,
            })?;
        handles.push(attach(
            dm,
            vm,
            mem,
            cmdline,
            "rng",
            "rng".into(),
            Box::new(rng),
        )?);
    }
    if let Some(b) = &config.balloon {
        let balloon = Balloon::new(
            b.amount_mib,
            b.deflate_on_oom,
            b.stats_polling_interval_s,
            b.free_page_reporting,
        )
        .map_err(VirtioSetupError::Balloon)?;
        handles.push(attach(
            dm,
            vm,
            mem,
            cmdline,
            "balloon",
            "balloon".into(),
            Box::new(balloon),
        )?);
    }
    attach_fs_devices(dm, vm, mem, cmdline, config, &mut handles)?;
    Ok(handles)
}

/// virtio-fs devices: each connects to its vhost-user backend and sends it the memory table
/// here, so a missing or wrong backend refuses the VM before it starts.
fn attach_fs_devices(
    dm: &mut DeviceManager,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    cmdline: &mut Cmdline,
    config: &VmConfig,
    handles: &mut Vec<VirtioHandle>,
) -> Result<(), VirtioSetupError> {
    for fs in &config.fs {
        let device_config = FsConfig {
            tag: fs.tag.clone(),
            socket: fs.socket.clone(),
            num_request_queues: fs.num_queues,
            queue_size: fs.queue_size,
        };
        let device =
            VhostUserFs::new(&device_config, mem).map_err(|source| VirtioSetupError::Fs {
                id: fs.fs_id.clone(),
                source,
            })?;
        handles.push(attach(
            dm,
            vm,
            mem,
            cmdline,
            "fs",
            fs.fs_id.clone(),
            Box::new(device),
        )?);
    }
    Ok(())
}

/// The event-loop subscriber of each device.
pub fn subscribers(handles: &[VirtioHandle]) -> impl Iterator<Item = Subscriber> + '_ {
    handles.iter().map(|h| h.transport.clone() as Subscriber)
}

/// The device-side buckets of an API `rate_limiter` (bandwidth, ops); `None`: no limit.
pub fn buckets(limiter: Option<&RateLimiter>) -> (Option<TokenBucket>, Option<TokenBucket>) {
    let make = |b: &wisp_api::TokenBucket| {
        TokenBucket::new(b.size, b.one_time_burst.unwrap_or(0), b.refill_time)
    };
    match limiter {
        Some(l) => (
            l.bandwidth.as_ref().and_then(make),
            l.ops.as_ref().and_then(make),
        ),
        None => (None, None),
    }
}
