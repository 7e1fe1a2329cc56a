//! Measures, in process, how long `spawn_api_server` takes until the socket answers a first
//! `GET /` (bind, runtime and thread start, one request through the VMM channel). Prints the
//! median and range of 20 runs; compare with Firecracker's ~1.7 ms from process start.
//! Run: `cargo run --release -p wisp-http --example socket_ready`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use wisp_api::{api_channel, HostLimits, VmResources, VmState};
use wisp_http::spawn_api_server;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("wisp-socket-ready-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock = dir.join("api.sock");
    let mut ready = Vec::new();
    let mut first_answer = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let (tx, rx) = api_channel()?;
        let server = spawn_api_server(&sock, tx)?;
        let t_ready = t0.elapsed();
        let vmm = std::thread::spawn(move || {
            let mut res = VmResources::new(HostLimits::default());
            while let Some(req) = rx.recv() {
                let answer = res.apply(&req.action, VmState::NotStarted);
                req.reply
                    .send(answer.unwrap_or(Ok(wisp_api::VmmData::Empty)));
            }
        });
        let mut s = UnixStream::connect(&sock)?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let t_answer = t0.elapsed();
        if !out.starts_with("HTTP/1.1 200") {
            return Err(format!("unexpected answer: {out}").into());
        }
        server.shutdown()?;
        vmm.join().map_err(|_| "VMM thread panicked")?;
        ready.push(t_ready);
        first_answer.push(t_answer);
    }
    report("spawn_api_server returns (socket accepting)", &mut ready);
    report("first GET / answered", &mut first_answer);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{what}: median {:.0} us, min {:.0} us, max {:.0} us (n={})",
        us(times[times.len() / 2]),
        us(times[0]),
        us(times[times.len() - 1]),
        times.len()
    );
}
