//! The channel from a front end to the VMM thread: a `std::sync::mpsc` queue of `ApiRequest`s
//! plus an `EventFd` that the sender bumps after each push, so the VMM's epoll/event-manager
//! loop wakes up without polling. Each request carries its own one-shot reply slot; replying is
//! a plain non-blocking call, so the VMM thread needs no async runtime.
//!
//! The VMM thread's side, in full:
//!
//! ```no_run
//! use std::path::Path;
//! use wisp_api::{api_channel, spawn_api_server, HostLimits, VmResources, VmState};
//! use wisp_api::{VmmAction, VmmActionError, VmmData};
//!
//! # fn execute(_: &VmmAction, _: &mut VmResources, _: &mut VmState) -> Result<VmmData, VmmActionError> { Ok(VmmData::Empty) }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (sender, receiver) = api_channel()?;
//! let _server = spawn_api_server(Path::new("/tmp/wisp.sock"), sender)?; // socket accepts now
//! let mut resources = VmResources::new(HostLimits { max_vcpus: 32 }); // or ::from_config
//! let mut state = VmState::NotStarted;
//! // Register receiver.wake_fd() (EPOLLIN) with the event loop; when it is readable:
//! for req in receiver.drain() {
//!     let result = match resources.apply(&req.action, state) {
//!         Some(answered) => answered, // reads, configuration, and refusals
//!         // StartMicroVm (boot resources.vm_config()), Pause, Resume, SendCtrlAltDel,
//!         // FlushMetrics, UpdateBlockDevice after boot: the VMM's own work.
//!         None => execute(&req.action, &mut resources, &mut state),
//!     };
//!     req.reply.send(result);
//! }
//! # Ok(()) }
//! ```

use crate::action::{VmmAction, VmmActionError, VmmData};
use std::sync::mpsc;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// What the VMM answers to one action.
pub type VmmResult = Result<VmmData, VmmActionError>;

/// Errors of creating or using the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("cannot create the API wake-up eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("cannot wake the VMM thread through its eventfd: {0}")]
    Wake(#[source] std::io::Error),
    #[error("the VMM thread is not running (its end of the API channel is closed)")]
    VmmGone,
}

/// One request for the VMM thread: run `action`, then `reply.send(result)`.
#[derive(Debug)]
pub struct ApiRequest {
    pub action: VmmAction,
    pub reply: ReplySender,
}

/// The reply slot of one request.
#[derive(Debug)]
pub struct ReplySender(tokio::sync::oneshot::Sender<VmmResult>);

impl ReplySender {
    /// Delivers the result. Never blocks; if the client has gone away the result is dropped.
    pub fn send(self, result: VmmResult) {
        if self.0.send(result).is_err() {
            log::debug!("API client went away before its reply");
        }
    }
}

/// The front end's half: queues actions and wakes the VMM thread.
#[derive(Debug)]
pub struct ApiSender {
    tx: mpsc::Sender<ApiRequest>,
    wake: EventFd,
}

impl ApiSender {
    /// Wraps a queue and the eventfd the VMM thread watches (pass a `try_clone` of it).
    pub fn new(tx: mpsc::Sender<ApiRequest>, wake: EventFd) -> Self {
        ApiSender { tx, wake }
    }

    /// Queues `action`, wakes the VMM, and returns where its result will arrive.
    pub fn submit(
        &self,
        action: VmmAction,
    ) -> Result<tokio::sync::oneshot::Receiver<VmmResult>, ChannelError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(ApiRequest {
                action,
                reply: ReplySender(reply),
            })
            .map_err(|_| ChannelError::VmmGone)?;
        self.wake.write(1).map_err(ChannelError::Wake)?;
        Ok(rx)
    }
}

/// The VMM thread's half.
#[derive(Debug)]
pub struct ApiReceiver {
    rx: mpsc::Receiver<ApiRequest>,
    wake: EventFd,
}

impl ApiReceiver {
    /// The eventfd to register (EPOLLIN) with the VMM's event loop.
    pub fn wake_fd(&self) -> &EventFd {
        &self.wake
    }

    /// Call when the eventfd is readable: clears it, then takes every queued request. Clearing
    /// first means a request queued meanwhile re-arms the eventfd, so none is missed.
    pub fn drain(&self) -> Vec<ApiRequest> {
        // EAGAIN only means the counter was already zero.
        let _ = self.wake.read();
        self.rx.try_iter().collect()
    }

    /// Blocks for the next request; `None` once every sender is gone. For VMM loops that have
    /// nothing else to wait on (and for tests).
    pub fn recv(&self) -> Option<ApiRequest> {
        self.rx.recv().ok()
    }
}

/// A connected sender/receiver pair with a fresh non-blocking eventfd.
pub fn api_channel() -> Result<(ApiSender, ApiReceiver), ChannelError> {
    let wake = EventFd::new(EFD_NONBLOCK).map_err(ChannelError::EventFd)?;
    let sender_wake = wake.try_clone().map_err(ChannelError::EventFd)?;
    let (tx, rx) = mpsc::channel();
    Ok((ApiSender::new(tx, sender_wake), ApiReceiver { rx, wake }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_wakes_the_eventfd_and_the_reply_arrives() {
        let (tx, rx) = api_channel().unwrap();
        let mut reply = tx.submit(VmmAction::GetVersion).unwrap();
        assert_eq!(rx.wake_fd().read().unwrap(), 1);
        let reqs = rx.drain();
        assert_eq!(reqs.len(), 1);
        assert!(rx.drain().is_empty());
        let req = reqs.into_iter().next().unwrap();
        assert_eq!(req.action, VmmAction::GetVersion);
        req.reply.send(Ok(VmmData::Empty));
        assert_eq!(reply.try_recv().unwrap(), Ok(VmmData::Empty));
    }

    #[test]
    fn submit_fails_when_the_vmm_is_gone() {
        let (tx, rx) = api_channel().unwrap();
        drop(rx);
        assert!(matches!(
            tx.submit(VmmAction::GetVersion),
            Err(ChannelError::VmmGone)
        ));
    }
}
