//! Snapshot state of a virtio-mmio transport: the registers the driver set, each queue's
//! position (virtio-queue's `QueueState`) and the interrupt status. Device backends are not
//! saved: they are reopened from the configuration, and the restored transport activates its
//! device on the event loop exactly as a DRIVER_OK write would.

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState};

use super::{MmioTransport, STATUS_DRIVER_OK, STATUS_FEATURES_OK};

/// One virtqueue as the driver left it (mirrors `virtio_queue::QueueState`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub max_size: u16,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl From<QueueState> for QueueSnapshot {
    fn from(s: QueueState) -> Self {
        QueueSnapshot {
            max_size: s.max_size,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx_enabled: s.event_idx_enabled,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
        }
    }
}

impl From<&QueueSnapshot> for QueueState {
    fn from(s: &QueueSnapshot) -> Self {
        QueueState {
            max_size: s.max_size,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx_enabled: s.event_idx_enabled,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
        }
    }
}

/// A transport's registers and queues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    pub device_type: u32,
    pub status: u32,
    pub driver_features: u64,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub queue_sel: u32,
    pub interrupt_status: u32,
    pub config_generation: u32,
    pub queues: Vec<QueueSnapshot>,
}

/// Why a saved transport state does not fit the device it is restored into.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the saved device has type {saved}, this slot holds type {actual}")]
    DeviceType { saved: u32, actual: u32 },
    #[error("the saved device has {saved} queues, this one {actual}")]
    QueueCount { saved: usize, actual: usize },
    #[error("the saved driver features {saved:#x} are not all offered ({offered:#x})")]
    Features { saved: u64, offered: u64 },
    #[error("queue {index}: {source}")]
    Queue {
        index: usize,
        #[source]
        source: virtio_queue::Error,
    },
}

impl MmioTransport {
    /// The transport's state; call with the vCPUs paused (the driver cannot change it then).
    pub fn save_state(&self) -> TransportState {
        TransportState {
            device_type: self.device_type,
            status: self.status,
            driver_features: self.driver_features,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            queue_sel: self.queue_sel,
            interrupt_status: self.interrupt.status(),
            config_generation: self.interrupt.config_generation(),
            queues: self.queues.iter().map(|q| q.state().into()).collect(),
        }
    }

    /// Puts a fresh transport (status 0, never activated) into `state`. Everything is checked
    /// before anything changes. A device the driver had set DRIVER_OK on is activated on the
    /// event loop (the control eventfd), so its backend fds are registered where the loop's
    /// `EventOps` live; queued buffers are then processed as after a notification.
    pub fn restore_state(&mut self, state: &TransportState) -> Result<(), RestoreError> {
        if state.device_type != self.device_type {
            return Err(RestoreError::DeviceType {
                saved: state.device_type,
                actual: self.device_type,
            });
        }
        if state.queues.len() != self.queues.len() {
            return Err(RestoreError::QueueCount {
                saved: state.queues.len(),
                actual: self.queues.len(),
            });
        }
        let offered = self.device.features();
        if state.driver_features & !offered != 0 {
            return Err(RestoreError::Features {
                saved: state.driver_features,
                offered,
            });
        }
        let queues = state
            .queues
            .iter()
            .enumerate()
            .map(|(index, q)| {
                Queue::try_from(QueueState::from(q))
                    .map_err(|source| RestoreError::Queue { index, source })
            })
            .collect::<Result<Vec<Queue>, _>>()?;
        self.queues = queues;
        self.queue_bad.iter_mut().for_each(|v| *v = 0);
        self.status = state.status;
        self.driver_features = state.driver_features;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.queue_sel = state.queue_sel;
        self.interrupt
            .restore(state.interrupt_status, state.config_generation);
        if self.status & STATUS_FEATURES_OK != 0 {
            self.device.ack_features(self.driver_features);
        }
        if self.status & STATUS_DRIVER_OK != 0 {
            self.kick_control();
        }
        Ok(())
    }
}
