//! Half-closed clients: a client that sends its request and then shuts down its write side
//! (`nc -N`, `shutdown(SHUT_WR)`) still gets the whole answer, also when the action takes the
//! VMM a while; and a client that half-closes and never reads its answers is dropped at the
//! write deadline without holding up anyone else.

#![allow(clippy::unwrap_used)]

mod harness;

use harness::Harness;
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wisp_http::ServerConfig;

/// How long the slow harness VMM takes to start, pause or resume.
const SLOW_ACTION: Duration = Duration::from_millis(700);
/// A hang guard for a client's read, far above anything the server should take.
const READ_GUARD: Duration = Duration::from_secs(20);

/// Sends `request`, shuts down the write side, then reads until the server closes.
fn half_closed_request(sock: &Path, request: &str) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(READ_GUARD)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn with_body(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn configure_boot(h: &Harness) {
    let boot = json!({"kernel_image_path": h.kernel});
    assert_eq!(
        h.curl("PUT", "/boot-source", Some(&boot.to_string())).0,
        204
    );
}

#[test]
fn get_answer_reaches_a_client_that_half_closed() {
    let h = Harness::start();
    let answer = half_closed_request(&h.sock, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(answer.contains("\"state\":\"Not started\""), "{answer:?}");
}

#[test]
fn slow_action_answers_reach_a_client_that_half_closed() {
    let h = Harness::start_slow(SLOW_ACTION);
    configure_boot(&h);

    let began = Instant::now();
    let start = with_body("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    let answer = half_closed_request(&h.sock, &start);
    assert!(
        began.elapsed() >= SLOW_ACTION,
        "the answer came before the VMM acted"
    );
    assert!(
        answer.starts_with("HTTP/1.1 204 No Content\r\n"),
        "{answer:?}"
    );
    assert!(h.curl("GET", "/", None).1.contains("\"Running\""));

    let pause = with_body("PATCH", "/vm", r#"{"state": "Paused"}"#);
    let answer = half_closed_request(&h.sock, &pause);
    assert!(
        answer.starts_with("HTTP/1.1 204 No Content\r\n"),
        "{answer:?}"
    );
    assert!(h.curl("GET", "/", None).1.contains("\"Paused\""));

    // A refused action's fault also arrives whole.
    let answer = half_closed_request(&h.sock, &start);
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("already been started"), "{answer:?}");
}

/// `printf REQUEST | nc -N -U SOCK`: the real netcat (netcat-openbsd) half-closes at stdin's
/// EOF and prints what the server answered.
fn netcat(sock: &Path, request: &str) -> String {
    let mut nc = Command::new("nc")
        .args(["-N", "-U"])
        .arg(sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("netcat-openbsd (nc) is installed: scripts/install-deps.sh");
    let mut stdin = nc.stdin.take().unwrap();
    stdin.write_all(request.as_bytes()).unwrap();
    drop(stdin);
    let mut stdout = nc.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let end = Instant::now() + READ_GUARD;
    while nc.try_wait().unwrap().is_none() {
        if Instant::now() >= end {
            nc.kill().unwrap();
            nc.wait().unwrap();
            panic!("nc -N -U did not finish within {READ_GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    reader.join().unwrap()
}

#[test]
fn netcat_with_half_close_gets_its_answers() {
    let h = Harness::start_slow(SLOW_ACTION);
    let answer = netcat(&h.sock, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");

    configure_boot(&h);
    let start = with_body("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    let answer = netcat(&h.sock, &start);
    assert!(
        answer.starts_with("HTTP/1.1 204 No Content\r\n"),
        "{answer:?}"
    );
    let answer = netcat(
        &h.sock,
        &with_body("PATCH", "/vm", r#"{"state": "Paused"}"#),
    );
    assert!(
        answer.starts_with("HTTP/1.1 204 No Content\r\n"),
        "{answer:?}"
    );
    assert!(h.curl("GET", "/", None).1.contains("\"Paused\""));
}

#[test]
fn a_half_closed_client_that_never_reads_is_dropped_at_the_write_deadline() {
    const WRITE_TIMEOUT: Duration = Duration::from_millis(300);
    const REQUESTS: usize = 2000;
    let h = Harness::start_with(ServerConfig {
        write_timeout: WRITE_TIMEOUT,
        ..ServerConfig::default()
    });
    // Pipelined requests whose answers (over a megabyte) overfill the socket buffer: the
    // server's writes stall until this client reads, which it does not.
    let mut hog = UnixStream::connect(&h.sock).unwrap();
    hog.set_write_timeout(Some(READ_GUARD)).unwrap();
    let one = "GET /vm/config HTTP/1.1\r\nHost: localhost\r\n\r\n";
    hog.write_all(one.repeat(REQUESTS).as_bytes()).unwrap();
    hog.shutdown(Shutdown::Write).unwrap();

    // Everyone else is served meanwhile.
    let began = Instant::now();
    assert_eq!(h.curl("GET", "/", None).0, 200);
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );

    // Past the deadline, the connection is gone: reading now gets what was buffered, then
    // EOF, not the rest of the 2000 answers.
    std::thread::sleep(WRITE_TIMEOUT * 4);
    hog.set_read_timeout(Some(READ_GUARD)).unwrap();
    let mut got = Vec::new();
    match hog.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading the stalled answers: {e}"),
    }
    let answers = String::from_utf8_lossy(&got)
        .matches("HTTP/1.1 200 OK")
        .count();
    assert!(answers > 0, "nothing was answered before the stall");
    assert!(
        answers < REQUESTS,
        "all {REQUESTS} answers arrived: the stalled connection was kept"
    );
    assert_eq!(h.curl("GET", "/", None).0, 200);
}
