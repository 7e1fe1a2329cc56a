//! The server under misbehaving and many clients, over raw Unix sockets: stalled half requests,
//! 100 concurrent clients, chunked bodies over the limit, and the socket-path rules.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod harness;

use harness::Harness;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use wisp_api::api_channel;
use wisp_http::{spawn_api_server, ServerConfig, ServerError};
use wisp_test_support::curl;

const HALF_HEADERS: &[u8] = b"GET / HTTP/1.1\r\nHost: local";
const HALF_BODY: &[u8] =
    b"PUT /machine-config HTTP/1.1\r\nHost: localhost\r\nContent-Length: 40\r\n\r\n{\"vcpu_count\"";

/// One HTTP/1.1 request over a raw socket, reading until the server closes.
fn raw_request(sock: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(request).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `GET /` with `Connection: close` over a raw socket; the status line of the answer.
fn raw_get_root(sock: &Path) -> String {
    let resp = raw_request(
        sock,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    resp.lines().next().unwrap_or_default().to_string()
}

fn still_waiting(s: &mut UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let waiting = matches!(s.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    waiting
}

#[test]
fn stalled_clients_do_not_block_others() {
    let h = Harness::start();
    let mut stalled_headers = UnixStream::connect(&h.sock).unwrap();
    stalled_headers.write_all(HALF_HEADERS).unwrap();
    let mut stalled_body = UnixStream::connect(&h.sock).unwrap();
    stalled_body.write_all(HALF_BODY).unwrap();

    // Others are served, reads and writes alike, while both stall.
    assert_eq!(h.curl("GET", "/", None).0, 200);
    let mc = r#"{"vcpu_count": 2, "mem_size_mib": 32}"#;
    assert_eq!(h.curl("PUT", "/machine-config", Some(mc)).0, 204);
    assert_eq!(raw_get_root(&h.sock), "HTTP/1.1 200 OK");
    assert!(still_waiting(&mut stalled_headers));
    assert!(still_waiting(&mut stalled_body));
}

#[test]
fn a_stalled_client_is_cut_off_after_the_read_timeout() {
    let h = Harness::start_with(ServerConfig {
        read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    let before = h.config();
    let mut body_staller = UnixStream::connect(&h.sock).unwrap();
    body_staller.write_all(HALF_BODY).unwrap();
    let mut answer = String::new();
    body_staller.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout"),
        "{answer}"
    );
    assert!(answer.contains("\"fault_message\":\"the request body did not arrive within 300 ms\""));

    // A client stuck inside its headers is disconnected (hyper's header_read_timeout).
    let mut header_staller = UnixStream::connect(&h.sock).unwrap();
    header_staller.write_all(HALF_HEADERS).unwrap();
    let mut rest = Vec::new();
    let _ = header_staller.read_to_end(&mut rest);
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));

    assert_eq!(h.config(), before);
    assert_eq!(
        h.server
            .as_ref()
            .unwrap()
            .metrics()
            .snapshot()
            .read_timeouts,
        1
    );
}

#[test]
fn one_hundred_concurrent_clients_are_all_answered() {
    let h = Harness::start();
    let boot = format!(r#"{{"kernel_image_path":"{}"}}"#, h.kernel.display());
    let n = 100;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let sock = h.sock.clone();
            let barrier = Arc::clone(&barrier);
            let boot = boot.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&sock).unwrap();
                barrier.wait();
                let req = if i % 2 == 0 {
                    "GET /vm/config HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n".to_string()
                } else {
                    format!(
                        "PUT /boot-source HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\
                         Content-Length: {}\r\n\r\n{boot}",
                        boot.len()
                    )
                };
                s.write_all(req.as_bytes()).unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out.lines().next().unwrap_or_default().to_string()
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let status = t.join().unwrap();
        let want = if i % 2 == 0 {
            "HTTP/1.1 200 OK"
        } else {
            "HTTP/1.1 204 No Content"
        };
        assert_eq!(status, want, "client {i}");
    }
    let snap = h.server.as_ref().unwrap().metrics().snapshot();
    assert_eq!(snap.endpoints["put_boot_source"].count, 50);
    assert_eq!(snap.endpoints["get_vm_config"].count, 50);
    assert!(snap.connections >= 100);
}

#[test]
fn a_chunked_body_over_the_limit_is_refused() {
    let h = Harness::start_with(ServerConfig {
        body_limit: 1024,
        ..ServerConfig::default()
    });
    let chunk = "x".repeat(2000);
    let req = format!(
        "PUT /boot-source HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let answer = raw_request(&h.sock, req.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("larger than the limit of 1024 bytes"),
        "{answer}"
    );
}

#[test]
fn keep_alive_connections_serve_several_requests() {
    let h = Harness::start();
    let mut s = UnixStream::connect(&h.sock).unwrap();
    s.write_all(b"GET /version HTTP/1.1\r\nHost: l\r\n\r\nGET / HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
}

#[test]
fn a_live_socket_is_refused_and_a_stale_one_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");

    let live = UnixListener::bind(&sock).unwrap();
    let (tx, _rx) = api_channel().unwrap();
    let err = spawn_api_server(&sock, tx).unwrap_err();
    assert!(matches!(err, ServerError::InUse(_)), "{err}");
    assert!(err.to_string().contains("in use"));

    drop(live); // the file stays behind, nobody answers: stale
    assert!(sock.exists());
    let (tx, rx) = api_channel().unwrap();
    let server = spawn_api_server(&sock, tx).unwrap();
    let responder = std::thread::spawn(move || {
        let req = rx.recv().unwrap();
        req.reply.send(Ok(wisp_api::VmmData::Empty));
    });
    assert_eq!(curl(&sock, "PUT", "/entropy", Some("{}")).0, 204);
    responder.join().unwrap();
    server.shutdown().unwrap();
    assert!(!sock.exists(), "shutdown removes the socket");
}

#[test]
fn a_regular_file_at_the_socket_path_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious");
    std::fs::write(&path, b"data").unwrap();
    let (tx, _rx) = api_channel().unwrap();
    let err = spawn_api_server(&path, tx).unwrap_err();
    assert!(matches!(err, ServerError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
}

#[test]
fn a_vmm_that_is_gone_yields_500_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let (tx, rx) = api_channel().unwrap();
    let _server = spawn_api_server(&sock, tx).unwrap();
    drop(rx);
    let (status, body) = curl(&sock, "GET", "/", None);
    assert_eq!(status, 500);
    assert!(body.contains("VMM thread is not running"), "{body}");
}
