//! `wispd`: the split toolstack's daemon (LightVM's noxs on KVM, DESIGN.md §5). It keeps a
//! pool of prepared `wisp shell` processes and turns each create request into one control-page
//! write and one doorbell ring. Requests arrive on a Unix SOCK_SEQPACKET socket as compact JSON
//! (`wisp ctl` is the client).

/// Like `eprintln!`, but a closed stderr is not worth a panic.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod daemon;
#[path = "../logger.rs"]
mod logger;
mod shell_process;

use clap::Parser;
use daemon::{Daemon, Settings};
use std::path::PathBuf;
use std::sync::Arc;
use wisp_api::seqpacket::{SeqpacketConn, SeqpacketListener};
use wisp_api::wispd_protocol::{CtlRequest, CtlResponse, MAX_MESSAGE};

#[derive(Parser, Debug)]
#[command(
    name = "wispd",
    version,
    about = "Wisp's control-plane daemon: prepared VM shells"
)]
struct Args {
    /// Socket to serve requests on.
    #[arg(long, default_value = "/run/wispd.sock")]
    socket: PathBuf,
    /// Prepared shells to keep ready.
    #[arg(long, default_value_t = 4)]
    pool: usize,
    /// Guest memory each prepared shell reserves (MiB, lazily backed).
    #[arg(long, default_value_t = 128)]
    shell_mem: u32,
    /// vCPUs each prepared shell creates.
    #[arg(long, default_value_t = 1)]
    shell_vcpus: u8,
    /// Where consoles are written (default: a directory beside the socket).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// The `wisp` binary (default: next to this one).
    #[arg(long)]
    wisp: Option<PathBuf>,
    /// Log level (off, error, warn, info, debug).
    #[arg(long, default_value = "warn", env = "WISP_LOG")]
    log_level: String,
}

/// Threads accepting and serving client connections.
const ACCEPT_WORKERS: usize = 8;

/// How long a client connection may stay idle before its worker drops it.
const IDLE_CLIENT: std::time::Duration = std::time::Duration::from_secs(30);

fn serve(daemon: &Daemon, conn: SeqpacketConn) {
    if let Err(e) = conn.set_read_timeout(IDLE_CLIENT) {
        log::warn!("wispd: {e}");
    }
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = match conn.recv(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                let _ = reply(
                    &conn,
                    &CtlResponse::Error {
                        message: e.to_string(),
                    },
                );
                return;
            }
        };
        let resp = match serde_json::from_slice::<CtlRequest>(&buf[..n]) {
            Ok(req) => daemon.handle(req),
            Err(e) => CtlResponse::Error {
                message: format!("bad request: {e}"),
            },
        };
        if reply(&conn, &resp).is_err() {
            return;
        }
    }
}

fn reply(conn: &SeqpacketConn, resp: &CtlResponse) -> std::io::Result<()> {
    let text = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    conn.send(&text)
}

fn sibling_wisp() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("wisp")))
        .unwrap_or_else(|| PathBuf::from("wisp"))
}

/// Removes the socket on SIGINT/SIGTERM and exits; shells die with us (PR_SET_PDEATHSIG).
fn install_exit_handler(socket: PathBuf) {
    static SOCKET: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let _ = SOCKET.set(socket);
    extern "C" fn on_signal(_: libc::c_int) {
        if let Some(path) = SOCKET.get() {
            let _ = std::fs::remove_file(path);
        }
        // SAFETY: _exit is async-signal-safe and ends the process at once.
        unsafe { libc::_exit(0) };
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only removes a file and calls _exit.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn main() {
    let args = Args::parse();
    logger::init(&args.log_level);
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.d", args.socket.display())));
    if let Err(e) = std::fs::create_dir_all(&run_dir) {
        report!("wispd: error: cannot create {}: {e}", run_dir.display());
        std::process::exit(1);
    }
    if wisp_api::seqpacket::SeqpacketConn::connect(&args.socket).is_ok() {
        report!(
            "wispd: error: {} is in use by a running wispd",
            args.socket.display()
        );
        std::process::exit(1);
    }
    let _ = std::fs::remove_file(&args.socket);
    let listener = match SeqpacketListener::bind(&args.socket) {
        Ok(l) => l,
        Err(e) => {
            report!(
                "wispd: error: cannot listen on {}: {e}",
                args.socket.display()
            );
            std::process::exit(1);
        }
    };
    install_exit_handler(args.socket.clone());
    let daemon = Arc::new(Daemon::new(Settings {
        wisp: args.wisp.clone().unwrap_or_else(sibling_wisp),
        run_dir,
        pool: args.pool,
        shell_mem: args.shell_mem,
        shell_vcpus: args.shell_vcpus,
    }));
    let refill = daemon.clone();
    std::thread::spawn(move || refill.refill_forever());
    let monitor = daemon.clone();
    std::thread::spawn(move || monitor.monitor_forever());
    // A fixed set of workers each accept and serve connections: no thread is spawned on the
    // create path, and a stalled client holds up one worker, not the daemon.
    let listener = Arc::new(listener);
    let workers: Vec<_> = (0..ACCEPT_WORKERS)
        .map(|_| {
            let (d, l) = (daemon.clone(), listener.clone());
            std::thread::spawn(move || loop {
                match l.accept() {
                    Ok(conn) => serve(&d, conn),
                    Err(e) => log::warn!("wispd: accept failed: {e}"),
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}
