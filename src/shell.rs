//! `wisp shell`: a prepared VM shell owned by `wispd` (DESIGN.md §5). It prepares the VM off
//! the critical path, parks on its doorbell, and on Create reads the configuration from the
//! control page, loads the guest, starts it and acknowledges — no HTTP, no JSON.

use crate::api_mode::RunningApi;
use crate::cli::ShellArgs;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vmm_sys_util::eventfd::EventFd;
use wisp_api::control_page::{monotonic_ns, ControlCommand, ControlPage, ShellState, Timestamp};
use wisp_api::{
    api_channel, spawn_api_server, ApiReceiver, ApiServerHandle, HostLimits, VmResources,
};
use wisp_vmm::x86_64::mptable::MAX_CPUS;
use wisp_vmm::{MicroVm, MicroVmOptions, PreparedVm, VmController};

/// Result codes acknowledged on the page.
const RESULT_OK: i32 = 0;
const RESULT_FAILED: i32 = 1;
const RESULT_BAD_COMMAND: i32 = 2;

struct Shell {
    page: Arc<ControlPage>,
    doorbell: EventFd,
    ack: EventFd,
}

impl Shell {
    fn ring(&self) {
        if let Err(e) = self.ack.write(1) {
            log::error!("shell: cannot ring wispd: {e}");
        }
    }

    fn fail(&self, seq: Option<u32>, message: &str) -> i32 {
        report!("wisp shell: {message}");
        self.page.set_error(message);
        self.page.set_state(ShellState::Failed);
        if let Some(seq) = seq {
            self.page.acknowledge(seq, RESULT_FAILED);
        }
        self.ring();
        1
    }
}

/// Takes ownership of an inherited fd number.
fn inherited(fd: i32) -> OwnedFd {
    // SAFETY: wispd passes these fds to this process for it alone to own; nothing else in
    // this process refers to them.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub fn run_shell(start: Instant, args: &ShellArgs) -> i32 {
    let page = match ControlPage::open(inherited(args.control)) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            report!("wisp shell: error: {e}");
            return 1;
        }
    };
    // SAFETY: as `inherited`: the doorbell and ack eventfds are ours alone.
    let (doorbell, ack) = unsafe {
        (
            EventFd::from_raw_fd(args.doorbell),
            EventFd::from_raw_fd(args.ack),
        )
    };
    let shell = Shell {
        page,
        doorbell,
        ack,
    };

    // The VM's own REST socket is bound while preparing, off the create path; requests that
    // arrive before the create wait for it.
    let api = match &args.api_sock {
        Some(path) => match api_channel()
            .map_err(|e| e.to_string())
            .and_then(|(tx, rx)| {
                spawn_api_server(path, tx)
                    .map(|server| (rx, server))
                    .map_err(|e| e.to_string())
            }) {
            Ok(api) => Some(api),
            Err(e) => return shell.fail(None, &format!("cannot serve the REST API: {e}")),
        },
        None => None,
    };
    let prepared = match PreparedVm::prepare(args.mem, args.vcpus) {
        Ok(p) => p,
        Err(e) => return shell.fail(None, &format!("cannot prepare the VM: {e}")),
    };
    shell
        .page
        .set_shell_info(std::process::id(), args.mem, u32::from(args.vcpus));
    shell.page.set_time(Timestamp::Prepared, monotonic_ns());
    shell.page.set_state(ShellState::Prepared);
    shell.ring();

    loop {
        if shell.doorbell.read().is_err() {
            return shell.fail(None, "doorbell closed before a create");
        }
        let Some((seq, command)) = shell.page.pending_command() else {
            continue;
        };
        match command {
            Some(ControlCommand::Create) => return create(start, shell, seq, prepared, args, api),
            Some(ControlCommand::Destroy) => {
                shell.page.set_state(ShellState::Halted);
                shell.page.acknowledge(seq, RESULT_OK);
                shell.ring();
                return 0;
            }
            _ => {
                shell.page.acknowledge(seq, RESULT_BAD_COMMAND);
                shell.ring();
            }
        }
    }
}

fn create(
    start: Instant,
    shell: Shell,
    seq: u32,
    prepared: PreparedVm,
    args: &ShellArgs,
    api: Option<(ApiReceiver, ApiServerHandle)>,
) -> i32 {
    let t0 = Instant::now();
    shell.page.set_state(ShellState::Configuring);
    let config = match shell.page.read_config() {
        Ok(c) => c,
        Err(e) => return shell.fail(Some(seq), &format!("rejected the control page: {e}")),
    };
    let console: Box<dyn std::io::Write + Send> = match &args.console {
        Some(path) => match File::create(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                return shell.fail(Some(seq), &format!("cannot open {}: {e}", path.display()))
            }
        },
        None => Box::new(std::io::sink()),
    };
    let boot_page = shell.page.clone();
    let entry_page = shell.page.clone();
    // wispd waits for these stamps on its ack eventfd: each is rung right after it is written.
    let (boot_ack, entry_ack) = match (shell.ack.try_clone(), shell.ack.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return shell.fail(Some(seq), &format!("cannot clone the ack eventfd: {e}"))
        }
    };
    let opts = MicroVmOptions {
        start,
        console_out: console,
        console_in: None,
        on_boot: Some(Box::new(move |_| {
            boot_page.set_time(Timestamp::BootTimer, monotonic_ns());
            let _ = boot_ack.write(1);
        })),
        on_first_entry: Some(Box::new(move |_| {
            entry_page.set_time(Timestamp::FirstEntry, monotonic_ns());
            let _ = entry_ack.write(1);
        })),
    };
    let mut vm = match MicroVm::configure(prepared, &config, opts) {
        Ok(vm) => vm,
        Err(e) => return shell.fail(Some(seq), &e.to_string()),
    };
    shell.page.set_time(Timestamp::Configured, monotonic_ns());
    let t_configured = t0.elapsed();
    let controller = vm.controller();
    if let Err(e) = vm.start() {
        return shell.fail(Some(seq), &e.to_string());
    }
    // The boot vCPU stamps its first entry on the page itself; waiting for it here would
    // only take a CPU away from it.
    shell.page.set_state(ShellState::Running);
    shell.page.acknowledge(seq, RESULT_OK);
    shell.ring();
    log::debug!("shell: create took {t_configured:?} to configure");

    let page = shell.page.clone();
    let control = Arc::new(Mutex::new(ShellControl { shell, controller }));
    vm.add_subscriber(control.clone());
    if let Some((receiver, server)) = api {
        match VmResources::from_config(
            config,
            HostLimits {
                max_vcpus: MAX_CPUS,
            },
        ) {
            Ok(resources) => {
                let running = RunningApi::new(&vm, receiver, resources, Some(server));
                vm.add_subscriber(Arc::new(Mutex::new(running)));
            }
            Err(e) => log::warn!("shell: no REST API for this VM: {e}"),
        }
    }
    let outcome = vm.run();
    let Ok(control) = control.lock() else {
        return 1;
    };
    match outcome {
        Ok(exit) if exit.is_clean() => {
            page.set_state(ShellState::Halted);
            control.shell.ring();
            0
        }
        Ok(exit) => control.shell.fail(None, &format!("guest failed: {exit}")),
        Err(e) => control.shell.fail(None, &e.to_string()),
    }
}

/// Later commands (pause, resume, destroy) arrive on the doorbell while the VM runs.
struct ShellControl {
    shell: Shell,
    controller: VmController,
}

impl MutEventSubscriber for ShellControl {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.shell.doorbell, EventSet::IN)) {
            log::error!("shell: cannot watch the doorbell: {e}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.shell.doorbell.read();
        let Some((seq, command)) = self.shell.page.pending_command() else {
            return;
        };
        let page = &self.shell.page;
        let result = match command {
            Some(ControlCommand::Pause) => match self.controller.pause() {
                Ok(()) => {
                    page.set_state(ShellState::Paused);
                    RESULT_OK
                }
                Err(e) => {
                    page.set_error(&e.to_string());
                    RESULT_FAILED
                }
            },
            Some(ControlCommand::Resume) => {
                self.controller.resume();
                page.set_state(ShellState::Running);
                RESULT_OK
            }
            Some(ControlCommand::Destroy) => {
                self.controller.resume();
                self.controller.stop();
                page.set_state(ShellState::Halted);
                RESULT_OK
            }
            _ => RESULT_BAD_COMMAND,
        };
        page.acknowledge(seq, result);
        self.shell.ring();
    }
}
