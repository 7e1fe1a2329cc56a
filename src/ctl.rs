//! `wisp ctl`: the command-line client of `wispd`. Every request carries a request id (given
//! with `--request-id` or generated) that wispd logs and returns with its answer.

use crate::cli::{CtlArgs, CtlCommand};
use std::io::Write;
use wisp_api::control_page::monotonic_ns;
use wisp_api::seqpacket::SeqpacketConn;
use wisp_api::wispd_protocol::{
    valid_request_id, CtlRequest, CtlResponse, Envelope, MAX_MESSAGE, REQUEST_ID_MAX,
};
use wisp_api::VmConfig;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach wispd at {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to wispd: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot read {path}: {source}")]
    Config {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid VM configuration: {source}")]
    ConfigJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("wispd sent an answer that is not understood: {0}")]
    Reply(#[source] serde_json::Error),
    #[error("wispd answered request {got:?}, not {sent}")]
    WrongAnswer { sent: String, got: Option<String> },
    #[error("request id {0:?} is not 1 to {REQUEST_ID_MAX} characters of A-Z a-z 0-9 . _ : -")]
    BadRequestId(String),
    #[error("{0}")]
    Refused(String),
}

/// A request id unique enough to find one request in a log: pid, time, and a counter.
pub fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        monotonic_ns(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Sends one request with `request_id` and waits for its answer. A create is stamped with the
/// time it is sent, after connecting, so its create time is request → first guest instruction.
pub fn request(
    socket: &std::path::Path,
    mut req: CtlRequest,
    request_id: &str,
) -> Result<CtlResponse, CtlError> {
    if !valid_request_id(request_id) {
        return Err(CtlError::BadRequestId(request_id.to_string()));
    }
    let conn = SeqpacketConn::connect(socket).map_err(|source| CtlError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    if let CtlRequest::Create { sent_ns, .. } = &mut req {
        *sent_ns = monotonic_ns();
    }
    let msg = Envelope {
        request_id: Some(request_id.to_string()),
        body: req,
    };
    let text = serde_json::to_vec(&msg).map_err(CtlError::Reply)?;
    conn.send(&text)?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = conn.recv(&mut buf)?;
    if n == 0 {
        return Err(CtlError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "wispd closed the connection without answering",
        )));
    }
    let resp: Envelope<CtlResponse> = serde_json::from_slice(&buf[..n]).map_err(CtlError::Reply)?;
    if let CtlResponse::Error { message } = resp.body {
        return Err(CtlError::Refused(message));
    }
    if resp.request_id.as_deref() != Some(request_id) {
        return Err(CtlError::WrongAnswer {
            sent: request_id.to_string(),
            got: resp.request_id,
        });
    }
    Ok(resp.body)
}

fn fmt_us(v: Option<f64>) -> String {
    v.map(|us| format!("{us:.1}")).unwrap_or_else(|| "-".into())
}

fn run(args: &CtlArgs, request_id: &str) -> Result<(), CtlError> {
    let req = match &args.command {
        CtlCommand::Create { config, wait_boot } => {
            let path = config.display().to_string();
            let text = std::fs::read(config).map_err(|source| CtlError::Config {
                path: path.clone(),
                source,
            })?;
            let config: VmConfig = serde_json::from_slice(&text)
                .map_err(|source| CtlError::ConfigJson { path, source })?;
            CtlRequest::Create {
                config: Box::new(config),
                sent_ns: monotonic_ns(),
                wait_boot: *wait_boot,
            }
        }
        CtlCommand::List => CtlRequest::List {},
        CtlCommand::Destroy { id } => CtlRequest::Destroy { id: id.clone() },
        CtlCommand::Pause { id } => CtlRequest::Pause { id: id.clone() },
        CtlCommand::Resume { id } => CtlRequest::Resume { id: id.clone() },
        CtlCommand::Console { id } => CtlRequest::Console { id: id.clone() },
        CtlCommand::Status => CtlRequest::Status {},
        CtlCommand::Restore { snapshot } => restore_request(snapshot, 1)?,
        CtlCommand::Clone { snapshot, count } => restore_request(snapshot, *count)?,
    };
    // A closed stdout (e.g. `| head`) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    match request(&args.socket, req, request_id)? {
        CtlResponse::Created { vm, times, cold } => {
            let _ = writeln!(
                out,
                "{} pid={} create-us={} doorbell-us={} boot-us={} api={}{}",
                vm.id,
                vm.pid,
                fmt_us(times.request_to_first_entry_us),
                fmt_us(times.doorbell_to_first_entry_us),
                fmt_us(times.request_to_boot_timer_us),
                vm.api_socket.as_deref().unwrap_or("-"),
                if cold {
                    " (cold start: no prepared shell fitted)"
                } else {
                    ""
                }
            );
        }
        CtlResponse::Vms { vms } => {
            let _ = writeln!(
                out,
                "{:<10} {:>8} {:<12} {:>8} {:>5}",
                "ID", "PID", "STATE", "MEM_MIB", "VCPUS"
            );
            for vm in vms {
                let _ = writeln!(
                    out,
                    "{:<10} {:>8} {:<12} {:>8} {:>5}",
                    vm.id, vm.pid, vm.state, vm.mem_size_mib, vm.vcpu_count
                );
            }
        }
        CtlResponse::Console { text } => {
            let _ = write!(out, "{text}");
        }
        CtlResponse::Status { prepared, running } => {
            let _ = writeln!(out, "prepared={prepared} running={running}");
        }
        CtlResponse::Restored {
            vms,
            total_us,
            each_us,
        } => {
            for (vm, us) in vms.iter().zip(&each_us) {
                let _ = writeln!(
                    out,
                    "{} pid={} restore-us={us:.1} api={}",
                    vm.id,
                    vm.pid,
                    vm.api_socket.as_deref().unwrap_or("-")
                );
            }
            let _ = writeln!(out, "restored={} total-us={total_us:.1}", vms.len());
        }
        CtlResponse::Done | CtlResponse::Error { .. } => {}
    }
    Ok(())
}

/// A restore of the snapshot in `dir`, named absolutely: wispd and its shells do not share
/// our working directory.
fn restore_request(dir: &std::path::Path, count: u32) -> Result<CtlRequest, CtlError> {
    let dir = std::fs::canonicalize(dir).map_err(|source| CtlError::Config {
        path: dir.display().to_string(),
        source,
    })?;
    Ok(CtlRequest::Restore {
        snapshot: dir.display().to_string(),
        count,
        sent_ns: monotonic_ns(),
    })
}

pub fn run_ctl(args: &CtlArgs) -> i32 {
    let request_id = args.request_id.clone().unwrap_or_else(new_request_id);
    match run(args, &request_id) {
        Ok(()) => 0,
        Err(e) => {
            report!("wisp ctl: error: {e} (request {request_id})");
            1
        }
    }
}
