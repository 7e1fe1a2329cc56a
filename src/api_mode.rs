//! `wisp --api-sock PATH` and `wisp --config-file FILE`: the VMM driven by Firecracker-style
//! resources. Both feed the one controller (docs/design.md §2): the config file is validated
//! as a whole and started at once; the REST server's requests reach the controller through the
//! API channel, before and after InstanceStart alike.

use crate::cli::FirecrackerFlags;
use crate::logger;
use crate::run::{dup_stream, exit_status, EXIT_VMM_ERROR};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wisp_api::{api_channel, new_request_id, HostLimits, VmConfig, VmResources, VmmAction};
use wisp_http::{spawn_api_server_with, ServerConfig};
use wisp_vmm::controller::{ApiMetricsHook, LoggerHook};
use wisp_vmm::vmm_loop::lock;
use wisp_vmm::{ApiFrontEnd, Controller, ControllerHooks, MicroVmOptions, VmmLoop};

/// How `wisp --api-sock` / `--config-file` was asked to run.
pub struct ApiModeArgs<'a> {
    pub api_sock: Option<&'a Path>,
    pub config_file: Option<&'a Path>,
    /// The group that may connect to the API socket too (0660 instead of 0600).
    pub api_sock_group: Option<u32>,
    pub limits: HostLimits,
    /// Firecracker's flags (`--id`, `--metrics-path`, `--boot-timer`, ...).
    pub firecracker: &'a FirecrackerFlags,
}

/// The configuration file's resources, validated as one document.
fn resources_from(config_file: Option<&Path>, limits: HostLimits) -> Result<VmResources, String> {
    match config_file {
        Some(path) => {
            let config = VmConfig::from_file(path).map_err(|e| e.to_string())?;
            VmResources::from_config(config, limits).map_err(|e| e.to_string())
        }
        None => Ok(VmResources::new(limits)),
    }
}

/// `--id` names the instance; `--metrics-path` configures metrics as `PUT /metrics` would.
fn with_firecracker_flags(
    resources: VmResources,
    flags: &FirecrackerFlags,
) -> Result<VmResources, String> {
    let mut resources = match &flags.id {
        Some(id) => resources.with_instance_id(id.clone()),
        None => resources,
    };
    if let Some(path) = &flags.metrics_path {
        let metrics = wisp_api::Metrics {
            metrics_path: path.clone(),
            ..Default::default()
        };
        let action = VmmAction::ConfigureMetrics(metrics);
        if let Some(Err(e)) = resources.apply(&action, wisp_api::VmState::NotStarted) {
            return Err(format!("--metrics-path: {e}"));
        }
    }
    Ok(resources)
}

pub fn run_api(start: Instant, args: &ApiModeArgs<'_>) -> i32 {
    let (api_sock, config_file) = (args.api_sock, args.config_file);
    let resources = match resources_from(config_file, args.limits)
        .and_then(|r| with_firecracker_flags(r, args.firecracker))
    {
        Ok(r) => r,
        Err(e) => {
            report!("wisp: error: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    if let Some(logger) = &resources.vm_config().logger {
        if let Err(e) = logger::configure(logger) {
            report!(
                "wisp: error: cannot open {}: {e}",
                logger.log_path.display()
            );
            return EXIT_VMM_ERROR;
        }
    }
    let (sender, receiver) = match api_channel() {
        Ok(c) => c,
        Err(e) => {
            report!("wisp: error: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    let server = match api_sock {
        Some(path) => match spawn_api_server_with(
            path,
            sender,
            ServerConfig {
                socket_group: args.api_sock_group,
                body_limit: args
                    .firecracker
                    .http_api_max_payload_size
                    .unwrap_or(ServerConfig::default().body_limit),
                ..ServerConfig::default()
            },
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                report!("wisp: error: {e}");
                return EXIT_VMM_ERROR;
            }
        },
        None => None,
    };
    let stdout = match dup_stream(std::io::stdout().as_fd()) {
        Ok(out) => out,
        Err(e) => {
            report!("wisp: error: cannot set up the console: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    let opts = MicroVmOptions {
        start,
        console_out: Box::new(stdout),
        console_in: None,
        on_boot: args.firecracker.boot_timer.then(|| {
            let hook: Box<dyn FnOnce(u64) + Send> =
                Box::new(|us| log::info!("Guest-boot-time = {us} us {} ms", us / 1000));
            hook
        }),
        on_first_entry: None,
        legacy_console_lifecycle: false,
    };
    let configure_logger: LoggerHook = Box::new(|cfg| {
        logger::configure(cfg).map_err(|e| format!("cannot open {}: {e}", cfg.log_path.display()))
    });
    let api_metrics: Option<ApiMetricsHook> = server.as_ref().map(|s| {
        let metrics = Arc::clone(s.metrics());
        let hook: ApiMetricsHook =
            Box::new(move || serde_json::to_value(metrics.snapshot()).unwrap_or_default());
        hook
    });
    let hooks = ControllerHooks {
        configure_logger: Some(configure_logger),
        api_metrics,
    };
    let mut vmm = match VmmLoop::new(Controller::new(resources, opts, hooks)) {
        Ok(vmm) => vmm,
        Err(e) => {
            report!("wisp: error: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    if config_file.is_some() {
        let shared = vmm.controller();
        let started = lock(&shared).handle(&new_request_id(), VmmAction::StartMicroVm);
        if let Err(e) = started {
            report!("wisp: error: {e}");
            return EXIT_VMM_ERROR;
        }
    }
    let front_end = ApiFrontEnd::new(receiver, vmm.controller());
    vmm.add_subscriber(Arc::new(Mutex::new(front_end)));
    let outcome = vmm.run();
    drop(server);
    exit_status(outcome)
}
