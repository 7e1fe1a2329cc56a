//! `wisp ctl`: the command-line client of `wispd`.

use crate::cli::{CtlArgs, CtlCommand};
use std::io::Write;
use wisp_api::control_page::monotonic_ns;
use wisp_api::seqpacket::SeqpacketConn;
use wisp_api::wispd_protocol::{CtlRequest, CtlResponse, MAX_MESSAGE};
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
    #[error("{0}")]
    Refused(String),
}

/// Sends one request and waits for its answer. A create is stamped with the time it is sent,
/// after connecting, so its create time is request → first guest instruction.
pub fn request(socket: &std::path::Path, mut req: CtlRequest) -> Result<CtlResponse, CtlError> {
    let conn = SeqpacketConn::connect(socket).map_err(|source| CtlError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    if let CtlRequest::Create { sent_ns, .. } = &mut req {
        *sent_ns = monotonic_ns();
    }
    let text = serde_json::to_vec(&req).map_err(CtlError::Reply)?;
    conn.send(&text)?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = conn.recv(&mut buf)?;
    let resp: CtlResponse = serde_json::from_slice(&buf[..n]).map_err(CtlError::Reply)?;
    if let CtlResponse::Error { message } = resp {
        return Err(CtlError::Refused(message));
    }
    Ok(resp)
}

fn fmt_us(v: Option<f64>) -> String {
    v.map(|us| format!("{us:.1}")).unwrap_or_else(|| "-".into())
}

fn run(args: &CtlArgs) -> Result<(), CtlError> {
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
    };
    // A closed stdout (e.g. `| head`) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    match request(&args.socket, req)? {
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
        CtlResponse::Done | CtlResponse::Error { .. } => {}
    }
    Ok(())
}

pub fn run_ctl(args: &CtlArgs) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            report!("wisp ctl: error: {e}");
            1
        }
    }
}
