//! `wisp shell`: a prepared VM shell owned by `wispd` (docs/design.md §5). It prepares the VM
//! off the critical path and parks on its doorbell; the control page is then one more front end
//! of the controller: Create, Pause, Resume and Destroy become `VmmAction`s, and the page's
//! STATE word is written from the controller's state (a listener), never on its own.

use crate::cli::ShellArgs;
use crate::run::{host_limits, EXIT_VMM_ERROR};
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vmm_sys_util::eventfd::EventFd;
use wisp_api::control_page::{monotonic_ns, ControlCommand, ControlPage, ShellState, Timestamp};
use wisp_api::{api_channel, request_id_or_new, VmResources, VmState, VmmAction};
use wisp_http::spawn_api_server;
use wisp_vmm::vmm_loop::{lock, SharedController};
use wisp_vmm::{
    ApiFrontEnd, Controller, ControllerHooks, MicroVmOptions, Outcome, PreparedVm, VmmLoop,
};

/// Result codes acknowledged on the page.
const RESULT_OK: i32 = 0;
const RESULT_FAILED: i32 = 1;
const RESULT_BAD_COMMAND: i32 = 2;

/// The shell's half of the control page: the page and its two doorbells.
#[derive(Clone)]
struct Page {
    page: Arc<ControlPage>,
    ack: Arc<EventFd>,
}

impl Page {
    fn ring(&self) {
        if let Err(e) = self.ack.write(1) {
            log::error!("shell: cannot ring wispd: {e}");
        }
    }

    /// Reports a failure on the page (and stderr), acknowledging `seq` if a command failed.
    fn fail(&self, seq: Option<u32>, message: &str) {
        report!("wisp shell: {message}");
        self.page.set_error(message);
        self.page.set_state(ShellState::Failed);
        if let Some(seq) = seq {
            self.page.acknowledge(seq, RESULT_FAILED);
        }
        self.ring();
    }

    fn answer(&self, seq: u32, result: i32) {
        self.page.acknowledge(seq, result);
        self.ring();
    }
}

/// The page's state for the controller's (NotStarted is the shell's own Prepared/Configuring).
fn shell_state(state: VmState) -> Option<ShellState> {
    match state {
        VmState::NotStarted => None,
        VmState::Running => Some(ShellState::Running),
        VmState::Paused => Some(ShellState::Paused),
        VmState::Halted => Some(ShellState::Halted),
        VmState::Failed => Some(ShellState::Failed),
    }
}

/// Takes ownership of an inherited fd number.
fn inherited(fd: i32) -> OwnedFd {
    // SAFETY: wispd passes these fds to this process for it alone to own; nothing else in
    // this process refers to them.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The guest console's file, 0600 (console text is the guest's business).
fn open_console(args: &ShellArgs) -> std::io::Result<Box<dyn Write + Send>> {
    match &args.console {
        Some(path) => {
            let file: File = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)?;
            Ok(Box::new(file))
        }
        None => Ok(Box::new(std::io::sink())),
    }
}

pub fn run_shell(start: Instant, args: &ShellArgs) -> i32 {
    let control = match ControlPage::open(inherited(args.control)) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            report!("wisp shell: error: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    // SAFETY: as `inherited`: the doorbell and ack eventfds are ours alone.
    let (doorbell, ack) = unsafe {
        (
            EventFd::from_raw_fd(args.doorbell),
            EventFd::from_raw_fd(args.ack),
        )
    };
    let page = Page {
        page: control,
        ack: Arc::new(ack),
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
            Err(e) => {
                page.fail(None, &format!("cannot serve the REST API: {e}"));
                return EXIT_VMM_ERROR;
            }
        },
        None => None,
    };
    let console = match open_console(args) {
        Ok(c) => c,
        Err(e) => {
            page.fail(None, &format!("cannot open the console file: {e}"));
            return EXIT_VMM_ERROR;
        }
    };
    let prepared = match PreparedVm::prepare_with(args.mem, args.vcpus, args.mem_shared) {
        Ok(p) => p,
        Err(e) => {
            page.fail(None, &format!("cannot prepare the VM: {e}"));
            return EXIT_VMM_ERROR;
        }
    };
    // The boot vCPU stamps its first entry and the boot timer on the page itself, and rings
    // wispd each time so it never has to poll for them.
    let (boot_page, entry_page) = (page.clone(), page.clone());
    let opts = MicroVmOptions {
        start,
        console_out: console,
        console_in: None,
        on_boot: Some(Box::new(move |_| {
            boot_page
                .page
                .set_time(Timestamp::BootTimer, monotonic_ns());
            boot_page.ring();
        })),
        on_first_entry: Some(Box::new(move |_| {
            entry_page
                .page
                .set_time(Timestamp::FirstEntry, monotonic_ns());
            entry_page.ring();
        })),
        legacy_console_lifecycle: false,
    };
    let mut controller = Controller::new(
        VmResources::new(host_limits()),
        opts,
        ControllerHooks::default(),
    )
    .with_shell(prepared);
    let state_page = page.clone();
    controller.add_state_listener(Box::new(move |state| {
        if let Some(s) = shell_state(state) {
            state_page.page.set_state(s);
        }
    }));
    let mut vmm = match VmmLoop::new(controller) {
        Ok(vmm) => vmm,
        Err(e) => {
            page.fail(None, &e.to_string());
            return EXIT_VMM_ERROR;
        }
    };
    let front_end = ControlPageFrontEnd {
        page: page.clone(),
        doorbell,
        controller: vmm.controller(),
    };
    vmm.add_subscriber(Arc::new(Mutex::new(front_end)));
    let _server = api.map(|(receiver, server)| {
        let rest = ApiFrontEnd::new(receiver, vmm.controller());
        vmm.add_subscriber(Arc::new(Mutex::new(rest)));
        server
    });

    page.page
        .set_shell_info(std::process::id(), args.mem, u32::from(args.vcpus));
    page.page.set_time(Timestamp::Prepared, monotonic_ns());
    page.page.set_state(ShellState::Prepared);
    page.ring();

    match vmm.run() {
        Ok(Outcome::Exited(exit)) if exit.is_clean() => {
            page.ring();
            0
        }
        Ok(Outcome::Exited(exit)) => {
            page.fail(None, &format!("guest failed: {exit}"));
            1
        }
        // Already reported on the page by the front end.
        Ok(Outcome::StartFailed(_)) => 1,
        Ok(Outcome::NothingToRun) => {
            page.page.set_state(ShellState::Halted);
            page.ring();
            0
        }
        Err(e) => {
            page.fail(None, &e.to_string());
            1
        }
    }
}

/// The control page as a front end: wispd's commands, read when it rings the doorbell.
struct ControlPageFrontEnd {
    page: Page,
    doorbell: EventFd,
    controller: SharedController,
}

impl ControlPageFrontEnd {
    /// Create: read and validate the page's configuration, then start — the whole of it
    /// through the controller, so the page gets exactly the checks REST gets.
    fn create(&self, seq: u32, request_id: &str) {
        let t0 = Instant::now();
        let page = &self.page.page;
        if lock(&self.controller).state() != VmState::NotStarted {
            // This shell already hosts its guest; another create is wispd's mistake.
            page.set_error("create refused: this shell already hosts a guest");
            return self.page.answer(seq, RESULT_BAD_COMMAND);
        }
        page.set_state(ShellState::Configuring);
        let config = match page.read_config() {
            Ok(c) => c,
            Err(e) => return self.fail_create(seq, &format!("rejected the control page: {e}")),
        };
        let mut controller = lock(&self.controller);
        if let Err(e) = controller.handle(request_id, VmmAction::ConfigureAll(Box::new(config))) {
            drop(controller);
            return self.fail_create(seq, &e.to_string());
        }
        page.set_time(Timestamp::Configured, monotonic_ns());
        if let Err(e) = controller.handle(request_id, VmmAction::StartMicroVm) {
            drop(controller);
            return self.fail_create(seq, &e.to_string());
        }
        drop(controller);
        self.page.answer(seq, RESULT_OK);
        log::debug!("[{request_id}] shell: create took {:?}", t0.elapsed());
    }

    /// A create that failed ends this shell: it cannot host another guest.
    fn fail_create(&self, seq: u32, message: &str) {
        self.page.fail(Some(seq), message);
        lock(&self.controller).finish(Outcome::StartFailed(message.to_string()));
    }

    /// Pause, Resume, Destroy: one action each.
    fn lifecycle(&self, seq: u32, request_id: &str, action: VmmAction) {
        let mut controller = lock(&self.controller);
        let result =
            if action == VmmAction::StopMicroVm && controller.state() == VmState::NotStarted {
                // A prepared shell destroyed before any create simply ends.
                controller.finish(Outcome::NothingToRun);
                self.page.page.set_state(ShellState::Halted);
                Ok(wisp_api::VmmData::Empty)
            } else {
                controller.handle(request_id, action)
            };
        drop(controller);
        match result {
            Ok(_) => self.page.answer(seq, RESULT_OK),
            Err(e) => {
                self.page.page.set_error(&e.to_string());
                self.page.answer(seq, RESULT_FAILED);
            }
        }
    }
}

impl MutEventSubscriber for ControlPageFrontEnd {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.doorbell, EventSet::IN)) {
            log::error!("shell: cannot watch the doorbell: {e}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.doorbell.read();
        let Some((seq, command)) = self.page.page.pending_command() else {
            return;
        };
        // wispd writes the id of the request behind the command (`wisp ctl --request-id`, or
        // one it made); a page without one gets a fresh id here.
        let request_id = request_id_or_new(Some(&self.page.page.request_id()));
        match command {
            Some(ControlCommand::Create) => self.create(seq, &request_id),
            Some(ControlCommand::Pause) => self.lifecycle(seq, &request_id, VmmAction::Pause),
            Some(ControlCommand::Resume) => self.lifecycle(seq, &request_id, VmmAction::Resume),
            Some(ControlCommand::Destroy) => {
                self.lifecycle(seq, &request_id, VmmAction::StopMicroVm)
            }
            _ => self.page.answer(seq, RESULT_BAD_COMMAND),
        }
    }
}
