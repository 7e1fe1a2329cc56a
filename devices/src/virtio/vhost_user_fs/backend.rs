//! The vhost-user connection to a virtio-fs backend (virtiofsd): connecting, the handshake of
//! the vhost-user spec ("Starting and stopping rings", "Multiple queue support") and the ring
//! messages, over the rust-vmm `vhost` crate's frontend.
//!
//! Order on the socket, as QEMU and Cloud Hypervisor send it and virtiofsd expects it:
//! at start SET_OWNER, GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES,
//! GET_QUEUE_NUM (with MQ), SET_MEM_TABLE; when the driver sets DRIVER_OK SET_FEATURES, then
//! per ring SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, SET_VRING_CALL, SET_VRING_KICK and
//! SET_VRING_ENABLE; on a driver reset GET_VRING_BASE per started ring (which stops it).
//!
//! Every reply is awaited with a timeout ([`REPLY_TIMEOUT`]), so a backend that accepts the
//! connection and never answers is an error, not a hang of the VMM thread.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vhost::vhost_user::message::VhostUserVirtioFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

/// How long one reply of the backend may take before the backend counts as dead.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Protocol features Wisp uses when the backend offers them: MQ (ask how many queues it
/// serves) and REPLY_ACK (every message is acknowledged, so a refusal is seen at once).
fn wanted_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
}

/// Errors talking to the backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("vhost-user socket {0} does not exist (start virtiofsd with --socket-path first)")]
    Missing(PathBuf),
    #[error("{0} is not a Unix socket")]
    NotSocket(PathBuf),
    #[error("cannot reach vhost-user socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not answer as a vhost-user backend ({step} failed: {source})")]
    NotVhostUser {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: vhost::Error,
    },
    #[error("the backend at {path} offers no VHOST_USER_F_PROTOCOL_FEATURES")]
    NoProtocolFeatures { path: PathBuf },
    #[error("the backend at {path} serves {max} queues; this device needs {want}")]
    TooFewQueues { path: PathBuf, max: u64, want: u64 },
    #[error("guest memory region at {addr:#x} is not file-backed: vhost-user needs shared guest memory (--mem-shared)")]
    NotShared { addr: u64 },
    #[error("guest address {0:#x} of a virtqueue is not in guest memory")]
    RingAddress(u64),
    #[error("{step}: {source}")]
    Message {
        step: &'static str,
        #[source]
        source: vhost::Error,
    },
}

/// One ring as the driver configured it, for [`Backend::start_ring`].
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    pub index: usize,
    pub size: u16,
    pub max_size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub next_avail: u16,
}

/// A connected, handshaken vhost-user backend.
pub struct Backend {
    frontend: Frontend,
    path: PathBuf,
    virtio_features: u64,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("path", &self.path)
            .field("virtio_features", &self.virtio_features)
            .finish_non_exhaustive()
    }
}

/// How long a refused connection is retried (a backend between bind(2) and listen(2)).
const CONNECT_RETRY: Duration = Duration::from_millis(500);

impl Backend {
    /// Connects to `path` and runs the start of the handshake: ownership, features, protocol
    /// features and the queue count. `queues` is the number of virtqueues the device has.
    pub fn connect(path: &Path, queues: usize) -> Result<Backend, BackendError> {
        let meta = std::fs::symlink_metadata(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => BackendError::Missing(path.to_path_buf()),
            _ => BackendError::Connect {
                path: path.to_path_buf(),
                source,
            },
        })?;
        if !meta.file_type().is_socket() {
            return Err(BackendError::NotSocket(path.to_path_buf()));
        }
        let connect_err = |source| BackendError::Connect {
            path: path.to_path_buf(),
            source,
        };
        // No symbolic links, and paths longer than sun_path work (wisp-hostfs). A backend that
        // was just started may have bound its socket but not yet called listen(2): connection
        // refused is retried for a short while before it counts as "nobody serves this".
        let refused_until = std::time::Instant::now() + CONNECT_RETRY;
        let stream: UnixStream = loop {
            match wisp_hostfs::connect_stream(path, false) {
                Ok(stream) => break stream,
                Err(e)
                    if e.raw_os_error() == Some(libc::ECONNREFUSED)
                        && std::time::Instant::now() < refused_until =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(source) => {
                    return Err(BackendError::Connect {
                        path: path.to_path_buf(),
                        source: std::io::Error::other(source),
                    })
                }
            }
        };
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(connect_err)?;
        stream
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .map_err(connect_err)?;
        let want = queues as u64;
        let mut frontend = Frontend::from_stream(stream, want);
        let not_vhost = |step| {
            let path = path.to_path_buf();
            move |source| BackendError::NotVhostUser { path, step, source }
        };
        frontend.set_owner().map_err(not_vhost("SET_OWNER"))?;
        let virtio_features = frontend.get_features().map_err(not_vhost("GET_FEATURES"))?;
        if virtio_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() == 0 {
            return Err(BackendError::NoProtocolFeatures {
                path: path.to_path_buf(),
            });
        }
        let offered = frontend
            .get_protocol_features()
            .map_err(not_vhost("GET_PROTOCOL_FEATURES"))?;
        let protocol = offered & wanted_protocol_features();
        frontend
            .set_protocol_features(protocol)
            .map_err(not_vhost("SET_PROTOCOL_FEATURES"))?;
        if protocol.contains(VhostUserProtocolFeatures::MQ) {
            let max = frontend
                .get_queue_num()
                .map_err(not_vhost("GET_QUEUE_NUM"))?;
            if max < want {
                return Err(BackendError::TooFewQueues {
                    path: path.to_path_buf(),
                    max,
                    want,
                });
            }
        }
        Ok(Backend {
            frontend,
            path: path.to_path_buf(),
            virtio_features,
        })
    }

    /// The virtio feature bits the backend offers (GET_FEATURES).
    pub fn virtio_features(&self) -> u64 {
        self.virtio_features
    }

    /// The socket path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket's fd: the VMM watches it, and anything arriving on it outside a request
    /// (a hang-up above all) means the backend is gone.
    pub fn socket_fd(&self) -> RawFd {
        self.frontend.as_raw_fd()
    }

    /// SET_MEM_TABLE: every region of guest memory, as fd + offset, so the backend maps it.
    pub fn set_mem_table(&self, mem: &GuestMemoryMmap) -> Result<(), BackendError> {
        let regions = mem
            .iter()
            .map(|r| {
                VhostUserMemoryRegionInfo::from_guest_region(r).map_err(|_| {
                    BackendError::NotShared {
                        addr: r.start_addr().0,
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.frontend
            .set_mem_table(&regions)
            .map(|_| ())
            .map_err(|source| BackendError::Message {
                step: "SET_MEM_TABLE",
                source,
            })
    }

    /// SET_FEATURES with the driver's features plus VHOST_USER_F_PROTOCOL_FEATURES (which
    /// makes rings start disabled until SET_VRING_ENABLE).
    pub fn set_features(&self, driver_features: u64) -> Result<(), BackendError> {
        let features = driver_features | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        self.frontend
            .set_features(features)
            .map_err(|source| BackendError::Message {
                step: "SET_FEATURES",
                source,
            })
    }

    /// Hands one ring to the backend and enables it.
    pub fn start_ring(
        &mut self,
        mem: &GuestMemoryMmap,
        ring: &RingConfig,
        call: &EventFd,
        kick: &EventFd,
    ) -> Result<(), BackendError> {
        let host = |addr: u64| {
            mem.get_host_address(GuestAddress(addr))
                .map(|p| p as u64)
                .map_err(|_| BackendError::RingAddress(addr))
        };
        let config = VringConfigData {
            queue_max_size: ring.max_size,
            queue_size: ring.size,
            flags: 0,
            desc_table_addr: host(ring.desc)?,
            used_ring_addr: host(ring.used)?,
            avail_ring_addr: host(ring.avail)?,
            log_addr: None,
        };
        let i = ring.index;
        let msg = |step| move |source| BackendError::Message { step, source };
        self.frontend
            .set_vring_num(i, ring.size)
            .map_err(msg("SET_VRING_NUM"))?;
        self.frontend
            .set_vring_addr(i, &config)
            .map_err(msg("SET_VRING_ADDR"))?;
        self.frontend
            .set_vring_base(i, ring.next_avail)
            .map_err(msg("SET_VRING_BASE"))?;
        self.frontend
            .set_vring_call(i, call)
            .map_err(msg("SET_VRING_CALL"))?;
        self.frontend
            .set_vring_kick(i, kick)
            .map_err(msg("SET_VRING_KICK"))?;
        self.frontend
            .set_vring_enable(i, true)
            .map_err(msg("SET_VRING_ENABLE"))
    }

    /// GET_VRING_BASE: stops ring `index` in the backend; returns its next available index.
    pub fn stop_ring(&mut self, index: usize) -> Result<u32, BackendError> {
        self.frontend
            .get_vring_base(index)
            .map_err(|source| BackendError::Message {
                step: "GET_VRING_BASE",
                source,
            })
    }
}
