//! virtio-fs (virtio 1.2 §5.11) as a vhost-user frontend: the rings are served by a separate
//! backend process (virtiofsd), which maps guest memory from the fds of SET_MEM_TABLE.
//!
//! The transport stays Wisp's virtio-mmio: the driver's notifications reach the device as
//! usual and are relayed to the backend's kick eventfd; the backend's call eventfd is watched
//! on the event loop and raises the transport's interrupt (which also sets InterruptStatus,
//! which the Linux virtio-mmio driver reads before it looks at any ring). One relay each way
//! costs one eventfd write per batch and keeps one notification path for every device.
//!
//! Life of the backend:
//! - at construction the socket is connected and the handshake and memory table sent
//!   ([`backend`]): a missing socket, one that is not a socket, or a peer that does not
//!   speak vhost-user refuses the device, so no VM starts;
//! - DRIVER_OK sends the driver's features and every ready ring; a driver reset stops them;
//! - a hang-up on the socket (the backend died) or an unexpected message stops the device:
//!   logged once with the reason, and the rings are answered with EIO from then on
//!   ([`orphan`]), so the guest sees I/O errors and the VMM keeps running.

pub mod backend;
mod orphan;

use std::any::Any;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events};
use log::{error, info, warn};
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::backend::{Backend, BackendError, RingConfig};
use super::device::{QueueContext, VirtioDevice};
use super::metrics::DeviceMetrics;
use super::VIRTIO_F_VERSION_1;

/// virtio device ID of a file system device (virtio 1.2 §5.11).
pub const DEVICE_ID: u32 = super::device_id::FS;
/// Size of the tag field of the configuration space (§5.11.4); a shorter tag is NUL-padded.
pub const TAG_LEN: usize = 36;
/// Default size of each queue (Cloud Hypervisor's `--fs` default).
pub const DEFAULT_QUEUE_SIZE: u16 = 1024;
/// Most request queues a device may ask for (virtiofsd serves one; more need its MQ).
pub const MAX_REQUEST_QUEUES: u16 = 16;

/// Ring feature bits passed through from the backend when it offers them (virtio 1.2 §6).
const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
const VIRTIO_RING_F_EVENT_IDX: u32 = 29;

const WHO: &str = "virtio-fs";

/// What `--fs` / `PUT /fs/{id}` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The name the guest mounts (`mount -t virtiofs TAG /mnt`), 1..=36 bytes.
    pub tag: String,
    /// The backend's vhost-user socket.
    pub socket: std::path::PathBuf,
    /// Request queues (the high-priority queue comes on top).
    pub num_request_queues: u16,
    /// Size of every queue: a power of two up to 32768.
    pub queue_size: u16,
}

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserFsError {
    #[error("tag {0:?} must be 1 to {TAG_LEN} bytes long")]
    Tag(String),
    #[error("num_queues {0} must be between 1 and {MAX_REQUEST_QUEUES}")]
    Queues(u16),
    #[error("queue_size {0} must be a power of two between 2 and 32768")]
    QueueSize(u16),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// Where the device stands with its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Connected; no ring handed over (before DRIVER_OK, or after a reset).
    Idle,
    /// These rings are served by the backend.
    Running(Vec<usize>),
    /// The backend is gone; the VMM answers the rings with EIO.
    Orphaned,
}

/// A virtio-fs device served by a vhost-user backend.
pub struct VhostUserFs {
    tag: String,
    num_request_queues: u16,
    queue_sizes: Vec<u16>,
    backend: Backend,
    /// Offered to the driver: VERSION_1 plus the ring features the backend has.
    features: u64,
    acked: u64,
    /// Per queue: the backend waits on `kicks[i]`, and signals `calls[i]`.
    kicks: Vec<EventFd>,
    calls: Vec<EventFd>,
    state: State,
    /// Whether the socket and call fds are on the event loop.
    watching: bool,
    metrics: Arc<DeviceMetrics>,
}

impl std::fmt::Debug for VhostUserFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserFs")
            .field("tag", &self.tag)
            .field("backend", &self.backend)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Checks a tag as the configuration space can carry it.
pub fn check_tag(tag: &str) -> Result<(), VhostUserFsError> {
    if tag.is_empty() || tag.len() > TAG_LEN || tag.contains('\0') {
        return Err(VhostUserFsError::Tag(tag.to_string()));
    }
    Ok(())
}

impl VhostUserFs {
    /// Connects to the backend, runs the handshake and sends it `mem`'s table. `mem` must be
    /// the guest memory the transport uses, and file-backed (shared).
    pub fn new(config: &FsConfig, mem: &GuestMemoryMmap) -> Result<Self, VhostUserFsError> {
        check_tag(&config.tag)?;
        if config.num_request_queues == 0 || config.num_request_queues > MAX_REQUEST_QUEUES {
            return Err(VhostUserFsError::Queues(config.num_request_queues));
        }
        if config.queue_size < 2 || !config.queue_size.is_power_of_two() {
            return Err(VhostUserFsError::QueueSize(config.queue_size));
        }
        let queues = 1 + usize::from(config.num_request_queues);
        let backend = Backend::connect(&config.socket, queues)?;
        backend.set_mem_table(mem)?;
        let ring_bits = (1u64 << VIRTIO_RING_F_INDIRECT_DESC) | (1u64 << VIRTIO_RING_F_EVENT_IDX);
        let features = (1u64 << VIRTIO_F_VERSION_1) | (backend.virtio_features() & ring_bits);
        let fd = || EventFd::new(EFD_NONBLOCK).map_err(VhostUserFsError::EventFd);
        let kicks = (0..queues).map(|_| fd()).collect::<Result<Vec<_>, _>>()?;
        let calls = (0..queues).map(|_| fd()).collect::<Result<Vec<_>, _>>()?;
        info!(
            "{WHO} {}: connected to {} (backend features {:#x})",
            config.tag,
            config.socket.display(),
            backend.virtio_features()
        );
        Ok(VhostUserFs {
            tag: config.tag.clone(),
            num_request_queues: config.num_request_queues,
            queue_sizes: vec![config.queue_size; queues],
            backend,
            features,
            acked: 0,
            kicks,
            calls,
            state: State::Idle,
            watching: false,
            metrics: Arc::new(DeviceMetrics::default()),
        })
    }

    /// The tag the guest mounts.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The backend's socket.
    pub fn socket(&self) -> &Path {
        self.backend.path()
    }

    /// Whether the backend is gone (the device answers EIO).
    pub fn is_orphaned(&self) -> bool {
        self.state == State::Orphaned
    }

    fn watch(&mut self, ops: &mut EventOps) {
        if self.watching {
            return;
        }
        let socket = Events::new_raw(self.backend.socket_fd(), EventSet::IN);
        let all = std::iter::once(socket).chain(
            self.calls
                .iter()
                .map(|c| Events::new_raw(c.as_raw_fd(), EventSet::IN)),
        );
        for events in all {
            if let Err(e) = ops.add(events) {
                error!("{WHO} {}: cannot watch a backend fd: {e}", self.tag);
            }
        }
        self.watching = true;
    }

    fn unwatch(&mut self, ops: &mut EventOps) {
        if !self.watching {
            return;
        }
        let socket = Events::new_raw(self.backend.socket_fd(), EventSet::IN);
        let all = std::iter::once(socket).chain(
            self.calls
                .iter()
                .map(|c| Events::new_raw(c.as_raw_fd(), EventSet::IN)),
        );
        for events in all {
            // A fd that is already gone from epoll (closed socket) is fine to miss.
            let _ = ops.remove(events);
        }
        self.watching = false;
    }

    /// The backend is gone (or broke the protocol): stop relaying, answer the rings ourselves.
    fn orphan(&mut self, why: &str, ctx: &mut QueueContext, ops: &mut EventOps) {
        if self.state == State::Orphaned {
            return;
        }
        // Once per device: the line says which share and why, the counters say the rest.
        error!(
            "{WHO} {}: backend {} is gone ({why}); the device stops and the guest's requests \
             fail with EIO",
            self.tag,
            self.backend.path().display()
        );
        self.metrics.error();
        self.unwatch(ops);
        self.state = State::Orphaned;
        let event_idx = self.acked & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        for queue in ctx.queues.iter_mut() {
            orphan::take_back(queue, ctx.mem, event_idx);
            orphan::fail_requests(queue, ctx.mem, ctx.interrupt, &self.metrics);
        }
        // Completions the backend published just before it died may not have been signalled.
        ctx.interrupt.signal_used_queue();
    }

    fn start_rings(&mut self, ctx: &mut QueueContext) -> Result<Vec<usize>, BackendError> {
        self.backend.set_features(self.acked)?;
        let mut started = Vec::new();
        for (index, queue) in ctx.queues.iter().enumerate() {
            if !queue.ready() {
                continue;
            }
            let ring = RingConfig {
                index,
                size: queue.size(),
                max_size: queue.max_size(),
                desc: queue.desc_table(),
                avail: queue.avail_ring(),
                used: queue.used_ring(),
                next_avail: queue.next_avail(),
            };
            self.backend
                .start_ring(ctx.mem, &ring, &self.calls[index], &self.kicks[index])?;
            started.push(index);
        }
        Ok(started)
    }
}

impl VirtioDevice for VhostUserFs {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    /// §5.11.4: `u8 tag[36]; le32 num_request_queues;`.
    fn config_space(&self) -> Vec<u8> {
        let mut config = vec![0u8; TAG_LEN + 4];
        config[..self.tag.len()].copy_from_slice(self.tag.as_bytes());
        config[TAG_LEN..].copy_from_slice(&u32::from(self.num_request_queues).to_le_bytes());
        config
    }

    fn activate(&mut self, ctx: &mut QueueContext, ops: &mut EventOps) -> Result<(), String> {
        if self.state == State::Orphaned {
            // The driver reset and came back after the backend died: keep answering EIO,
            // with the ring features it negotiated this time.
            let event_idx = self.acked & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
            for queue in ctx.queues.iter_mut() {
                queue.set_event_idx(event_idx);
            }
            return Ok(());
        }
        match self.start_rings(ctx) {
            Ok(started) => {
                self.state = State::Running(started);
                self.watch(ops);
                Ok(())
            }
            Err(e) => {
                self.orphan(&e.to_string(), ctx, ops);
                Err(format!("{WHO} {}: cannot start the rings: {e}", self.tag))
            }
        }
    }

    fn reset(&mut self, ops: &mut EventOps) {
        if let State::Running(started) = std::mem::replace(&mut self.state, State::Idle) {
            for index in started {
                if let Err(e) = self.backend.stop_ring(index) {
                    warn!("{WHO} {}: cannot stop ring {index}: {e}", self.tag);
                }
            }
        }
        if self.state == State::Idle {
            self.unwatch(ops);
        }
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext, _ops: &mut EventOps) {
        match &self.state {
            State::Running(_) => {
                // The backend consumes the ring; keep the transport's view of it current so
                // its "available index ran past the queue size" check stays quiet.
                if let Some(queue) = ctx.queues.get_mut(index) {
                    if let Ok(avail) = queue.avail_idx(ctx.mem, Ordering::Acquire) {
                        queue.set_next_avail(avail.0);
                    }
                }
                if let Some(kick) = self.kicks.get(index) {
                    if let Err(e) = kick.write(1) {
                        warn!("{WHO} {}: cannot kick ring {index}: {e}", self.tag);
                    }
                }
            }
            State::Orphaned => {
                if let Some(queue) = ctx.queues.get_mut(index) {
                    orphan::fail_requests(queue, ctx.mem, ctx.interrupt, &self.metrics);
                }
            }
            State::Idle => {}
        }
    }

    fn process_backend(&mut self, events: Events, ctx: &mut QueueContext, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.backend.socket_fd() {
            let why = if events
                .event_set()
                .intersects(EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR)
            {
                "its socket was closed"
            } else {
                "it sent a message nobody asked for"
            };
            self.orphan(why, ctx, ops);
            return;
        }
        if let Some(call) = self.calls.iter().find(|c| c.as_raw_fd() == fd) {
            let _ = call.read();
            ctx.interrupt.signal_used_queue();
        }
    }

    fn metrics(&self) -> &Arc<DeviceMetrics> {
        &self.metrics
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests;
