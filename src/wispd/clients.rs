//! Client connections on wispd's event loop: non-blocking SOCK_SEQPACKET sockets, one request
//! at a time per client, at most one (bounded) answer buffered, and deadlines, so a client that
//! connects and says nothing, or never reads its answer, costs one fd for a while and holds
//! nobody else up. Requests are decoded here and handed to vms.rs.

use crate::daemon::{Daemon, Timer, Token};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use vmm_sys_util::epoll::EventSet;
use wisp_api::control_page::ControlCommand;
use wisp_api::seqpacket::SeqpacketConn;
use wisp_api::wispd_protocol::{
    valid_request_id, CtlRequest, CtlResponse, Envelope, MAX_MESSAGE, REQUEST_ID_MAX,
};

/// A connection with no request in flight is closed after this long without one.
const IDLE_CLIENT: Duration = Duration::from_secs(10);
/// An answer the client does not take within this long closes the connection.
const SEND_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; past it, the longest-idle one makes room.
const MAX_CLIENTS: usize = 256;
/// Connections accepted per wakeup, so a flood of connects cannot starve the shells' events.
const ACCEPT_BATCH: usize = 32;
/// Back-off when accepting fails for want of fds.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

pub(crate) struct Client {
    conn: SeqpacketConn,
    /// A request is being served: nothing more is read until it is answered.
    busy: bool,
    /// An answer the socket had no room for yet.
    out: Option<Vec<u8>>,
    interest: EventSet,
    /// When this connection is closed unless something happens (see the constants above).
    pub(crate) deadline: Instant,
}

/// Who gets the answer to a request, and the id it carried.
pub(crate) struct Requester {
    pub client: u64,
    pub request_id: Option<String>,
}

impl Requester {
    /// The request id for log lines.
    pub fn tag(&self) -> &str {
        self.request_id.as_deref().unwrap_or("-")
    }
}

fn error(message: impl std::fmt::Display) -> CtlResponse {
    CtlResponse::Error {
        message: message.to_string(),
    }
}

impl Daemon {
    pub(crate) fn accept_clients(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            let conn = match self.listener.accept_nonblocking() {
                Ok(conn) => conn,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // The listener stays readable: stop watching it for a moment rather than
                    // spin.
                    log::warn!("wispd: cannot accept a client: {e}");
                    self.unwatch(self.listener.as_raw_fd());
                    self.listener_paused = true;
                    self.at(Instant::now() + ACCEPT_PAUSE, Timer::Listener);
                    return;
                }
                Err(e) => {
                    log::debug!("wispd: accept: {e}");
                    continue;
                }
            };
            if self.clients.len() >= MAX_CLIENTS && !self.evict_idle_client() {
                // Every client is waiting on an answer: this one is turned away at once.
                log::warn!("wispd: {MAX_CLIENTS} clients are busy; refusing a connection");
                continue;
            }
            let id = self.new_id();
            let interest = EventSet::IN | EventSet::READ_HANG_UP;
            if let Err(e) = self.watch(conn.as_raw_fd(), Token::Client(id), interest) {
                log::warn!("wispd: cannot watch a client: {e}");
                continue;
            }
            let deadline = Instant::now() + IDLE_CLIENT;
            self.clients.insert(
                id,
                Client {
                    conn,
                    busy: false,
                    out: None,
                    interest,
                    deadline,
                },
            );
            self.at(deadline, Timer::Client(id));
        }
    }

    pub(crate) fn resume_listener(&mut self) {
        if !self.listener_paused {
            return;
        }
        match self.watch(self.listener.as_raw_fd(), Token::Listener, EventSet::IN) {
            Ok(()) => self.listener_paused = false,
            Err(e) => {
                log::warn!("wispd: cannot watch the listener again: {e}");
                self.at(Instant::now() + ACCEPT_PAUSE, Timer::Listener);
            }
        }
    }

    /// Closes the idle client that waited longest; false if every client is busy.
    fn evict_idle_client(&mut self) -> bool {
        let oldest = self
            .clients
            .iter()
            .filter(|(_, c)| !c.busy)
            .min_by_key(|(_, c)| c.deadline)
            .map(|(id, _)| *id);
        match oldest {
            Some(id) => {
                log::debug!("wispd: too many clients; closing the longest idle one");
                self.close_client(id);
                true
            }
            None => false,
        }
    }

    pub(crate) fn close_client(&mut self, id: u64) {
        if let Some(client) = self.clients.remove(&id) {
            self.unwatch(client.conn.as_raw_fd());
        }
    }

    pub(crate) fn client_deadline(&mut self, id: u64) {
        // A client waiting on its answer is not idle: the request has its own deadline, and
        // answering it sets the client's next one.
        if self.clients.get(&id).is_none_or(|c| c.busy) {
            return;
        }
        log::debug!("wispd: closing client {id}: idle, or not reading its answer");
        self.close_client(id);
    }

    pub(crate) fn client_event(&mut self, id: u64, events: EventSet) {
        if events.contains(EventSet::OUT) {
            self.flush(id);
        }
        if events.contains(EventSet::IN) {
            self.read_request(id);
        }
        if events.intersects(EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR) {
            // Gone (or half-closed, which a request-answer protocol cannot use). Anything it
            // asked for goes on; its answer is dropped.
            self.close_client(id);
        }
    }

    /// Reads one request (one per wakeup: level-triggered epoll comes back for the next, after
    /// the other clients had their turn).
    fn read_request(&mut self, id: u64) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        if client.busy || client.out.is_some() {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        let got = client.conn.recv(&mut buf);
        let parsed = match got {
            Ok(0) => {
                self.buf = buf;
                self.close_client(id);
                return;
            }
            Ok(n) => decode(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.buf = buf;
                return;
            }
            Err(e) if e.kind() == ErrorKind::InvalidData => Err((None, e.to_string())),
            Err(e) => {
                log::debug!("wispd: client {id}: {e}");
                self.buf = buf;
                self.close_client(id);
                return;
            }
        };
        self.buf = buf;
        if let Some(client) = self.clients.get_mut(&id) {
            client.busy = true;
        }
        match parsed {
            Ok((request_id, req)) => {
                let from = Requester {
                    client: id,
                    request_id,
                };
                log::debug!("wispd: request {}: {}", from.tag(), describe(&req));
                self.handle(from, req);
            }
            Err((request_id, message)) => {
                let from = Requester {
                    client: id,
                    request_id,
                };
                self.reply(from, error(message));
            }
        }
        self.update_interest(id);
    }

    fn handle(&mut self, from: Requester, req: CtlRequest) {
        match req {
            CtlRequest::Create {
                config,
                sent_ns,
                wait_boot,
            } => self.create(from, *config, sent_ns, wait_boot),
            CtlRequest::Destroy { id } => self.destroy(from, &id),
            CtlRequest::Pause { id } => self.command(from, &id, ControlCommand::Pause),
            CtlRequest::Resume { id } => self.command(from, &id, ControlCommand::Resume),
            CtlRequest::List {} => {
                let resp = self.list();
                self.reply(from, resp);
            }
            CtlRequest::Console { id } => {
                let resp = self.console(&id);
                self.reply(from, resp);
            }
            CtlRequest::Status {} => {
                let resp = self.status();
                self.reply(from, resp);
            }
            CtlRequest::Restore {
                snapshot, count, ..
            } => self.restore(from, std::path::Path::new(&snapshot), count),
        }
    }

    /// Answers `from` (if it is still connected): sent now, or kept until the socket has room.
    pub(crate) fn reply(&mut self, from: Requester, resp: CtlResponse) {
        if let CtlResponse::Error { message } = &resp {
            log::debug!("wispd: request {}: error: {message}", from.tag());
        }
        let Some(client) = self.clients.get_mut(&from.client) else {
            return;
        };
        let mut text = encode(from.request_id.clone(), resp);
        if text.len() > MAX_MESSAGE {
            let too_big = error(format!(
                "the answer ({} bytes) is larger than a message may be ({MAX_MESSAGE})",
                text.len()
            ));
            text = encode(from.request_id, too_big);
        }
        client.busy = false;
        match client.conn.send(&text) {
            Ok(()) => {
                client.deadline = Instant::now() + IDLE_CLIENT;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                client.out = Some(text);
                client.deadline = Instant::now() + SEND_DEADLINE;
            }
            Err(e) => {
                log::debug!("wispd: client {}: {e}", from.client);
                self.close_client(from.client);
                return;
            }
        }
        let deadline = client.deadline;
        self.at(deadline, Timer::Client(from.client));
        self.update_interest(from.client);
    }

    /// Sends the answer that did not fit before.
    fn flush(&mut self, id: u64) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let Some(text) = client.out.take() else {
            return;
        };
        match client.conn.send(&text) {
            Ok(()) => {
                client.deadline = Instant::now() + IDLE_CLIENT;
                let deadline = client.deadline;
                self.at(deadline, Timer::Client(id));
                self.update_interest(id);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => client.out = Some(text),
            Err(_) => self.close_client(id),
        }
    }

    /// Watches for what the client's state needs: the next request, room for an answer, or
    /// (while its request is served) only its hanging up.
    fn update_interest(&mut self, id: u64) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let want = if client.out.is_some() {
            EventSet::OUT | EventSet::READ_HANG_UP
        } else if client.busy {
            EventSet::READ_HANG_UP
        } else {
            EventSet::IN | EventSet::READ_HANG_UP
        };
        if want == client.interest {
            return;
        }
        client.interest = want;
        let fd = client.conn.as_raw_fd();
        if let Err(e) = self.rewatch(fd, Token::Client(id), want) {
            log::warn!("wispd: cannot watch client {id}: {e}");
            self.close_client(id);
        }
    }
}

type Decoded = Result<(Option<String>, CtlRequest), (Option<String>, String)>;

/// One request message: its id and the request, or (the id if it had a good one) an error.
fn decode(bytes: &[u8]) -> Decoded {
    match serde_json::from_slice::<Envelope<CtlRequest>>(bytes) {
        Ok(msg) => match msg.request_id {
            Some(id) if !valid_request_id(&id) => Err((
                None,
                format!("bad request id: 1 to {REQUEST_ID_MAX} characters of A-Z a-z 0-9 . _ : -"),
            )),
            request_id => Ok((request_id, msg.body)),
        },
        Err(e) => {
            // The id of a message that is otherwise not understood, if it has a good one.
            let request_id = serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| Some(v.get("request_id")?.as_str()?.to_string()))
                .filter(|id| valid_request_id(id));
            Err((request_id, format!("bad request: {e}")))
        }
    }
}

fn encode(request_id: Option<String>, body: CtlResponse) -> Vec<u8> {
    let msg = Envelope { request_id, body };
    // Serialising these plain types cannot fail; an empty message would read as an error.
    serde_json::to_vec(&msg).unwrap_or_default()
}

/// A request for a debug log line (without the configuration's contents).
fn describe(req: &CtlRequest) -> String {
    match req {
        CtlRequest::Create {
            config, wait_boot, ..
        } => format!(
            "create ({} MiB, {} vCPUs{})",
            config.machine_config.mem_size_mib,
            config.machine_config.vcpu_count,
            if *wait_boot { ", wait for boot" } else { "" }
        ),
        CtlRequest::List {} => "list".into(),
        CtlRequest::Status {} => "status".into(),
        CtlRequest::Destroy { id } => format!("destroy {id}"),
        CtlRequest::Pause { id } => format!("pause {id}"),
        CtlRequest::Resume { id } => format!("resume {id}"),
        CtlRequest::Console { id } => format!("console {id}"),
        CtlRequest::Restore {
            snapshot, count, ..
        } => format!("restore {snapshot} x{count}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_decoded_with_their_id_and_bad_ones_keep_a_good_id() {
        let (id, req) = decode(br#"{"op":"list","request_id":"a-1"}"#).unwrap();
        assert_eq!((id.as_deref(), req), (Some("a-1"), CtlRequest::List {}));
        let (id, msg) = decode(br#"{"op":"reboot","request_id":"a-2"}"#).unwrap_err();
        assert_eq!(id.as_deref(), Some("a-2"));
        assert!(msg.starts_with("bad request"), "{msg}");
        let (id, msg) = decode(br#"{"op":"list","request_id":"no spaces"}"#).unwrap_err();
        assert_eq!(id, None);
        assert!(msg.contains("bad request id"), "{msg}");
        assert!(decode(b"\xff").is_err());
    }
}
