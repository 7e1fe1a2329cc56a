//! The channel from a front end to the VMM thread: a `std::sync::mpsc` queue of `ApiRequest`s
//! plus an `EventFd` that the sender bumps after each push, so the VMM's event-manager loop
//! wakes up without polling. Each request carries its request id and its own reply slot (a
//! closure); replying is a plain non-blocking call, so neither side needs an async runtime.
//! On the VMM thread, `wisp_vmm::controller` drains the queue and answers every request.

use crate::action::{VmmAction, VmmActionError, VmmData};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// What the VMM answers to one action.
pub type VmmResult = Result<VmmData, VmmActionError>;

/// Longest request id accepted from a client (`X-Request-Id`, `wisp ctl --request-id`).
pub const MAX_REQUEST_ID: usize = 64;

/// A fresh request id for a request that arrived without one: unique within this host for the
/// life of the process (pid, a counter, and the time).
pub fn new_request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{:x}-{:x}-{n}", std::process::id(), t)
}

/// A client's request id if it is usable (1..=64 printable ASCII characters, no spaces),
/// else a fresh one: ids end up in log and metrics lines, so nothing else gets through.
pub fn request_id_or_new(given: Option<&str>) -> String {
    match given {
        Some(id) if is_valid_request_id(id) => id.to_string(),
        _ => new_request_id(),
    }
}

/// Whether `id` may be used as a request id.
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

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
pub struct ApiRequest {
    pub action: VmmAction,
    /// Follows the request through every component's log lines.
    pub request_id: String,
    pub reply: ReplySender,
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("action", &self.action)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

/// The reply slot of one request: whatever the front end needs to get the result back (a
/// oneshot for the HTTP server, a plain channel elsewhere). No async runtime down here.
pub struct ReplySender(Box<dyn FnOnce(VmmResult) + Send>);

impl ReplySender {
    pub fn new(reply: impl FnOnce(VmmResult) + Send + 'static) -> Self {
        ReplySender(Box::new(reply))
    }

    /// Delivers the result. Never blocks; if the client has gone away the result is dropped.
    pub fn send(self, result: VmmResult) {
        (self.0)(result)
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

    /// Queues `action` and wakes the VMM; `reply` gets the result on the VMM thread.
    pub fn submit(
        &self,
        action: VmmAction,
        request_id: String,
        reply: ReplySender,
    ) -> Result<(), ChannelError> {
        self.tx
            .send(ApiRequest {
                action,
                request_id,
                reply,
            })
            .map_err(|_| ChannelError::VmmGone)?;
        self.wake.write(1).map_err(ChannelError::Wake)
    }

    /// Queues `action` and blocks until its result (for synchronous front ends and tests).
    pub fn call(&self, action: VmmAction, request_id: String) -> VmmResult {
        let (tx, rx) = mpsc::sync_channel(1);
        let reply = ReplySender::new(move |r| {
            let _ = tx.send(r);
        });
        self.submit(action, request_id, reply)
            .map_err(|_| VmmActionError::VmmGone)?;
        rx.recv().map_err(|_| VmmActionError::VmmGone)?
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

    /// True once every sender is gone and nothing is queued.
    pub fn is_closed(&self) -> bool {
        matches!(self.rx.try_recv(), Err(mpsc::TryRecvError::Disconnected))
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
        let (reply_tx, reply_rx) = mpsc::channel();
        let reply = ReplySender::new(move |r| reply_tx.send(r).unwrap());
        tx.submit(VmmAction::GetVersion, "r1".into(), reply)
            .unwrap();
        assert_eq!(rx.wake_fd().read().unwrap(), 1);
        let reqs = rx.drain();
        assert_eq!(reqs.len(), 1);
        assert!(rx.drain().is_empty());
        let req = reqs.into_iter().next().unwrap();
        assert_eq!(req.action, VmmAction::GetVersion);
        assert_eq!(req.request_id, "r1");
        req.reply.send(Ok(VmmData::Empty));
        assert_eq!(reply_rx.try_recv().unwrap(), Ok(VmmData::Empty));
    }

    #[test]
    fn submit_fails_when_the_vmm_is_gone() {
        let (tx, rx) = api_channel().unwrap();
        drop(rx);
        assert!(matches!(
            tx.submit(VmmAction::GetVersion, "r".into(), ReplySender::new(|_| ())),
            Err(ChannelError::VmmGone)
        ));
        assert_eq!(
            tx.call(VmmAction::GetVersion, "r".into()),
            Err(VmmActionError::VmmGone)
        );
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        assert_eq!(request_id_or_new(Some("abc-123")), "abc-123");
        for bad in ["", "has space", "new\nline", &"x".repeat(65)] {
            let id = request_id_or_new(Some(bad));
            assert_ne!(id, bad);
            assert!(is_valid_request_id(&id), "{id}");
        }
        assert_ne!(new_request_id(), new_request_id());
    }
}
