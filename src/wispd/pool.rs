//! The shells on wispd's event loop, from spawn to reap: the pool refills by spawning shells
//! (never by waiting for one); a create takes a prepared shell, writes its page, rings and is
//! answered when the shell rings back (acknowledged, guest entered, booted if asked) or its
//! deadline passes. When a shell's process ends its pidfd says so: it is reaped at once and
//! everything it held is freed (dropping a `ShellProcess` closes its page, memfd, eventfds and
//! pidfd and removes its console file and API socket). What a VM is once created: vms.rs.

use crate::clients::Requester;
use crate::daemon::{Daemon, Timer, Token};
use crate::shell_process::{ShellProcess, ShellShape};
use crate::vms::VmOp;
use std::time::{Duration, Instant};
use vmm_sys_util::epoll::EventSet;
use wisp_api::control_page::{ControlCommand, ControlPage, ShellState, Timestamp};
use wisp_api::wispd_protocol::CtlResponse;
use wisp_api::{HostLimits, VmConfig, VmResources};
use wisp_vmm::x86_64::mptable::MAX_CPUS;

/// A shell that has not prepared its VM by then is killed.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(10);
/// A create not acknowledged by then fails.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// After acknowledging a create, the shell rings again once the boot vCPU entered the guest;
/// the answer waits at most this long for that.
const FIRST_ENTRY_WAIT: Duration = Duration::from_millis(200);
/// `wait_boot`: the longest wait (from the doorbell) for the guest's boot-timer write.
const BOOT_WAIT: Duration = Duration::from_secs(5);
/// A failed shell has this long to exit by itself before it is killed.
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(2);
/// The pool is not refilled while a create is in flight (at most this long): fork, exec and KVM
/// setup would compete with it for the CPU. Refilling right after the answer leaves the most time
/// before the next create.
const REFILL_HOLDOFF: Duration = Duration::from_millis(50);
/// After a second failure in a row to prepare a shell, the next is started this much later.
const PREPARE_BACKOFF: Duration = Duration::from_secs(1);

pub(crate) struct Shell {
    pub proc: ShellProcess,
    /// When it was started (for the log).
    pub started: Instant,
    pub stage: Stage,
    /// When `shell_deadline` runs for this shell (what for depends on the stage).
    pub deadline: Option<Instant>,
}

pub(crate) enum Stage {
    /// Preparing its VM: for the pool, or for a create that found nothing prepared (cold).
    Preparing { create: Option<Box<CreateRequest>> },
    /// Prepared, in the pool.
    Ready,
    /// Create posted; answered once acknowledged, entered (and booted, if asked).
    Creating(Box<Creating>),
    /// Hosts VM `id`; `op` is a command in flight.
    Vm { id: u64, op: Option<VmOp> },
    /// Failed or killed: only waiting for the process to end.
    Ending,
}

/// A shell the spawner is starting.
pub(crate) struct Spawning {
    shape: ShellShape,
    /// The create waiting for it (a cold start), or none (for the pool).
    create: Option<Box<CreateRequest>>,
}

pub(crate) struct CreateRequest {
    pub from: Requester,
    pub config: VmConfig,
    pub sent_ns: u64,
    pub wait_boot: bool,
    /// No prepared shell fitted.
    pub cold: bool,
}

pub(crate) struct Creating {
    pub req: CreateRequest,
    pub seq: u32,
    pub acked: bool,
    pub posted: Instant,
    /// Set at the acknowledgement: the longest wait for the first-entry stamp.
    entry_deadline: Option<Instant>,
}

pub(crate) fn error(message: impl std::fmt::Display) -> CtlResponse {
    CtlResponse::Error {
        message: message.to_string(),
    }
}

/// ": <the shell's error>" if it left one on the page.
pub(crate) fn page_error(proc: &ShellProcess) -> String {
    let e = proc.page.error();
    if e.is_empty() {
        e
    } else {
        format!(": {e}")
    }
}

impl Daemon {
    /// Takes shell `id`'s stage out of it (leaving `Ending`) and out of the indexes.
    pub(crate) fn take_stage(&mut self, id: u64) -> Stage {
        self.ready.retain(|s| *s != id);
        self.preparing.retain(|s| *s != id);
        self.creating.remove(&id);
        match self.shells.get_mut(&id) {
            Some(shell) => std::mem::replace(&mut shell.stage, Stage::Ending),
            None => Stage::Ending,
        }
    }

    /// Puts shell `id` in `stage` (taken out before with `take_stage`), with its deadline.
    pub(crate) fn enter(&mut self, id: u64, stage: Stage, deadline: Option<Instant>) {
        match &stage {
            Stage::Ready => self.ready.push_back(id),
            Stage::Preparing { create: None } => self.preparing.push_back(id),
            Stage::Creating(c) => {
                self.creating.insert(id, c.posted);
            }
            _ => {}
        }
        if let Some(shell) = self.shells.get_mut(&id) {
            shell.stage = stage;
            shell.deadline = deadline;
        }
        if let Some(at) = deadline {
            self.at(at, Timer::Shell(id));
        }
    }

    /// Kills shell `id`; it is freed when its process has ended.
    pub(crate) fn kill_shell(&mut self, id: u64) {
        let _ = self.take_stage(id);
        if let Some(shell) = self.shells.get(&id) {
            shell.proc.kill();
        }
        self.enter(id, Stage::Ending, Some(Instant::now() + KILL_WAIT));
    }

    /// Starts shells until the pool (prepared and preparing) is full again.
    pub(crate) fn refill(&mut self) {
        let now = Instant::now();
        if let Some(t) = self.refill_not_before {
            if now < t {
                return;
            }
            self.refill_not_before = None;
        }
        // While a create is in flight (for at most REFILL_HOLDOFF), the pool waits.
        if let Some(latest) = self.creating.values().max() {
            let until = *latest + REFILL_HOLDOFF;
            if now < until {
                self.wake_refill_at(until);
                return;
            }
        }
        let shape = self.settings.pool_shape();
        let starting = self
            .spawning
            .values()
            .filter(|s| s.create.is_none())
            .count();
        for _ in self.ready.len() + self.preparing.len() + starting..self.settings.pool {
            if !self.spawn_shell(shape, None) {
                return;
            }
        }
    }

    fn back_off(&mut self) {
        let until = Instant::now() + PREPARE_BACKOFF;
        self.refill_not_before = Some(until);
        self.wake_refill_at(until);
    }

    /// One refill timer per instant, however often the loop turns meanwhile.
    fn wake_refill_at(&mut self, at: Instant) {
        if self
            .refill_wakeup
            .is_some_and(|t| t > Instant::now() && t <= at)
        {
            return;
        }
        self.refill_wakeup = Some(at);
        self.at(at, Timer::Refill);
    }

    /// Has the spawner start a shell, for the pool or for `create`; false if it cannot.
    fn spawn_shell(&mut self, shape: ShellShape, create: Option<Box<CreateRequest>>) -> bool {
        let id = self.new_id();
        if let Err(e) = self.helper.spawn(id, shape) {
            log::error!("wispd: cannot start a shell: {e}");
            self.back_off();
            if let Some(req) = create {
                self.reply(req.from, error(format!("cold start failed: {e}")));
            }
            return false;
        }
        self.spawning.insert(id, Spawning { shape, create });
        true
    }

    /// The spawner started shells (or failed to): they prepare now, watched by the loop.
    pub(crate) fn shells_started(&mut self) {
        for started in self.helper.finished() {
            let Some(spawning) = self.spawning.remove(&started.id) else {
                continue;
            };
            match started.result {
                Ok(proc) => self.watch_shell(started.id, proc, spawning.create),
                Err(e) => self.prepare_failed(None, spawning.create, &e.to_string()),
            }
        }
        if self.helper.is_gone() {
            // Its socket would stay readable (end of file) and spin the loop.
            self.unwatch(self.helper.wake_fd());
        }
    }

    fn watch_shell(&mut self, id: u64, proc: ShellProcess, create: Option<Box<CreateRequest>>) {
        let watched = self
            .watch(proc.ack_fd(), Token::ShellAck(id), EventSet::IN)
            .and_then(|()| self.watch(proc.pidfd(), Token::ShellExit(id), EventSet::IN));
        if let Err(e) = watched {
            self.unwatch(proc.ack_fd());
            let why = format!("cannot be watched: {e}");
            return self.prepare_failed(Some(proc.pid()), create, &why);
        }
        let kind = if proc.mem_shared { ", shared" } else { "" };
        log::debug!(
            "wispd: started shell {} ({} MiB{kind})",
            proc.pid(),
            proc.mem_mib
        );
        self.shells.insert(
            id,
            Shell {
                proc,
                started: Instant::now(),
                stage: Stage::Ending,
                deadline: None,
            },
        );
        let deadline = Some(Instant::now() + PREPARE_TIMEOUT);
        self.enter(id, Stage::Preparing { create }, deadline);
    }

    /// The shell rang: its page says what changed.
    pub(crate) fn shell_rang(&mut self, id: u64) {
        let Some(shell) = self.shells.get(&id) else {
            return;
        };
        shell.proc.drain_ack();
        match (&shell.stage, shell.proc.page.state()) {
            (Stage::Preparing { .. }, Some(ShellState::Prepared)) => self.prepared(id),
            (Stage::Preparing { .. }, Some(ShellState::Failed)) => {
                let why = format!("failed to prepare{}", page_error(&shell.proc));
                let pid = shell.proc.pid();
                if let Stage::Preparing { create } = self.take_stage(id) {
                    self.prepare_failed(Some(pid), create, &why);
                }
                // It exits by itself; `shell_ended` frees it.
                self.enter(id, Stage::Ending, Some(Instant::now() + KILL_WAIT));
            }
            (Stage::Creating(_), _) => self.advance_create(id),
            (Stage::Vm { .. }, _) => self.vm_rang(id),
            _ => {}
        }
    }

    /// Shell `id`'s process ended: reap it, free it, answer whoever waited on it.
    pub(crate) fn shell_ended(&mut self, id: u64) {
        let Some(shell) = self.shells.get_mut(&id) else {
            return;
        };
        let Some(how) = shell.proc.try_reap() else {
            return;
        };
        let stage = self.take_stage(id);
        let Some(mut shell) = self.shells.remove(&id) else {
            return;
        };
        self.unwatch(shell.proc.ack_fd());
        self.unwatch(shell.proc.pidfd());
        let pid = shell.proc.pid();
        match stage {
            Stage::Preparing { create } => {
                let why = format!("exited ({how}) while preparing{}", page_error(&shell.proc));
                self.prepare_failed(Some(pid), create, &why);
            }
            Stage::Ready => log::warn!("wispd: prepared shell {pid} died ({how}); replacing it"),
            Stage::Creating(c) => {
                // The acknowledgement and the end can come in one turn: the page tells.
                if c.acked || shell.proc.page.acknowledged(c.seq) == Some(0) {
                    let vm = self.created(None, &shell.proc, *c);
                    self.vm_ended(vm, &shell.proc, &how);
                } else {
                    let message = format!(
                        "the shell (pid {pid}) died during the create ({how}){}",
                        page_error(&shell.proc)
                    );
                    log::warn!("wispd: request {}: {message}", c.req.from.tag());
                    self.reply(c.req.from, error(message));
                }
            }
            Stage::Vm { id: vm, op } => self.vm_shell_ended(vm, op, &shell.proc, &how),
            Stage::Ending => log::debug!("wispd: shell {pid} ended ({how})"),
        }
        // Its files go in the spawner (an unlink can wait on the disk); dropping the shell frees
        // the rest.
        self.helper.remove(id, shell.proc.take_files());
        drop(shell);
    }

    /// Shell `id`'s deadline passed.
    pub(crate) fn shell_deadline(&mut self, id: u64) {
        let Some(shell) = self.shells.get_mut(&id) else {
            return;
        };
        shell.deadline = None;
        let pid = shell.proc.pid();
        match &shell.stage {
            Stage::Preparing { .. } => {
                if let Stage::Preparing { create } = self.take_stage(id) {
                    let why = format!("did not prepare within {PREPARE_TIMEOUT:?}");
                    self.prepare_failed(Some(pid), create, &why);
                }
                self.kill_shell(id);
            }
            Stage::Creating(c) if c.acked => self.finish_create(id),
            Stage::Creating(_) => {
                let message =
                    format!("the shell (pid {pid}) did not answer the create within {COMMAND_TIMEOUT:?}; it was killed");
                self.fail_create(id, message);
            }
            Stage::Vm { .. } => self.vm_deadline(id),
            Stage::Ending => {
                // Failed and not exiting, or killed and not yet reaped: kill (again), then wait
                // for its pidfd without a deadline.
                log::debug!("wispd: shell {pid} has not ended yet");
                shell.proc.kill();
            }
            Stage::Ready => {}
        }
    }

    /// A shell finished preparing: into the pool, or on to the create waiting for it.
    fn prepared(&mut self, id: u64) {
        self.prepare_failures = 0;
        if let Some(shell) = self.shells.get_mut(&id) {
            let took = shell.started.elapsed();
            log::debug!("wispd: shell {} prepared in {took:?}", shell.proc.pid());
            // A jailed shell creates its console while preparing: from now on it is read through
            // this descriptor, which outlives the jail.
            shell.proc.open_console();
        }
        match self.take_stage(id) {
            Stage::Preparing { create: Some(req) } => self.start_create(id, *req),
            _ => self.enter(id, Stage::Ready, None),
        }
    }

    /// Shell `pid` (`None`: it never started) will not be prepared: say why, and answer a create
    /// waiting for it.
    fn prepare_failed(&mut self, pid: Option<u32>, create: Option<Box<CreateRequest>>, why: &str) {
        self.prepare_failures += 1;
        if self.prepare_failures >= 2 {
            self.back_off();
        }
        let what = match pid {
            Some(pid) => format!("the shell (pid {pid}) {why}"),
            None => format!("a shell could not be started: {why}"),
        };
        match create {
            Some(req) => {
                log::warn!("wispd: request {}: {what}", req.from.tag());
                self.reply(req.from, error(format!("cold start failed: {what}")));
            }
            None => log::error!("wispd: {what}"),
        }
    }

    /// A create request: a prepared shell that fits, else one being prepared or started that
    /// fits, else a new one of the requested size (all but the first are cold starts, and say
    /// so). A VM with a virtio-fs share (or `mem_shared`) fits only a shell whose guest RAM is
    /// a memfd: the pool's shells are when wispd runs with `--shell-mem-shared`; otherwise such
    /// a create is served by a shell prepared for it, with shared memory (a cold start).
    pub(crate) fn create(
        &mut self,
        from: Requester,
        config: VmConfig,
        sent_ns: u64,
        wait_boot: bool,
    ) {
        // The same rules as every other front end, at the front door: a configuration that
        // the shell's controller would refuse never takes a shell from the pool.
        let limits = HostLimits::with_max_vcpus(MAX_CPUS);
        if let Err(e) = VmResources::from_config(config.clone(), limits) {
            return self.reply(from, error(e));
        }
        let mc = &config.machine_config;
        let (mem, vcpus, shared) = (mc.mem_size_mib, mc.vcpu_count, config.needs_shared_memory());
        let fits = |s: Option<&Shell>| s.is_some_and(|s| s.proc.shape().fits(mem, vcpus, shared));
        let mut req = CreateRequest {
            from,
            config,
            sent_ns,
            wait_boot,
            cold: false,
        };
        if let Some(&id) = self.ready.iter().find(|id| fits(self.shells.get(id))) {
            let _ = self.take_stage(id);
            return self.start_create(id, req);
        }
        req.cold = true;
        if let Some(&id) = self.preparing.iter().find(|id| fits(self.shells.get(id))) {
            return self.attach(id, req);
        }
        let starting = self
            .spawning
            .values_mut()
            .find(|s| s.create.is_none() && s.shape.fits(mem, vcpus, shared));
        if let Some(spawning) = starting {
            spawning.create = Some(Box::new(req));
            return;
        }
        // A cold start of the requested size. The configuration is checked first (on a scratch
        // page) so that a bad one starts nothing.
        let checked = ControlPage::create().and_then(|page| page.write_config(&req.config));
        if let Err(e) = checked {
            return self.reply(req.from, error(e));
        }
        let shape = ShellShape {
            mem_mib: mem,
            vcpus: vcpus.max(1),
            mem_shared: shared,
        };
        self.spawn_shell(shape, Some(Box::new(req)));
    }

    /// Hands `req` to shell `id`, still preparing: the create starts once it is prepared.
    fn attach(&mut self, id: u64, req: CreateRequest) {
        let deadline = self.shells.get(&id).and_then(|s| s.deadline);
        let _ = self.take_stage(id);
        let create = Some(Box::new(req));
        self.enter(id, Stage::Preparing { create }, deadline);
    }

    /// Writes the configuration into prepared shell `id` (already out of the pool) and rings.
    fn start_create(&mut self, id: u64, req: CreateRequest) {
        let Some(shell) = self.shells.get(&id) else {
            return;
        };
        // Jailed: the files the request names go into the shell's root now, and the page names
        // them by their jail paths. A shell that got some of them is not reused.
        let jail = self.helper.plan().jail.as_ref();
        let config = match (jail, shell.proc.files.root()) {
            (Some(jail), Some(root)) => match jail.place_files(&req.config, &root) {
                Ok(config) => config,
                Err(e) => {
                    self.kill_shell(id);
                    return self.reply(req.from, error(e));
                }
            },
            _ => req.config.clone(),
        };
        let page = &shell.proc.page;
        let written = page.write_config(&config).and_then(|()| {
            // The shell's controller logs the create under the client's request id.
            req.from
                .request_id
                .as_deref()
                .map_or(Ok(()), |id| page.set_request_id(id))
        });
        if let Err(e) = written {
            // Nothing was asked of the shell yet: it goes back to the pool unchanged.
            self.enter(id, Stage::Ready, None);
            return self.reply(req.from, error(e));
        }
        match shell.proc.post(ControlCommand::Create) {
            Ok(seq) => {
                let now = Instant::now();
                let creating = Box::new(Creating {
                    req,
                    seq,
                    acked: false,
                    posted: now,
                    entry_deadline: None,
                });
                self.enter(id, Stage::Creating(creating), Some(now + COMMAND_TIMEOUT));
            }
            Err(e) => {
                self.kill_shell(id);
                self.reply(req.from, error(e));
            }
        }
    }

    /// The creating shell rang: acknowledged? entered? booted?
    fn advance_create(&mut self, id: u64) {
        let Some(shell) = self.shells.get_mut(&id) else {
            return;
        };
        let Stage::Creating(c) = &mut shell.stage else {
            return;
        };
        let page = &shell.proc.page;
        let now = Instant::now();
        if !c.acked {
            match page.acknowledged(c.seq) {
                None => return,
                Some(0) => {
                    c.acked = true;
                    c.entry_deadline = Some(now + FIRST_ENTRY_WAIT);
                }
                Some(_) => {
                    let message = format!(
                        "the shell (pid {}) failed: {}",
                        shell.proc.pid(),
                        page.error()
                    );
                    return self.fail_create(id, message);
                }
            }
        }
        let entered = page.time(Timestamp::FirstEntry) != 0;
        let booted = page.time(Timestamp::BootTimer) != 0;
        let wait_until = if !entered {
            c.entry_deadline
        } else if c.req.wait_boot && !booted {
            Some(c.posted + BOOT_WAIT)
        } else {
            None
        };
        match wait_until {
            Some(at) if at > now => {
                if shell.deadline != Some(at) {
                    shell.deadline = Some(at);
                    self.at(at, Timer::Shell(id));
                }
            }
            _ => self.finish_create(id),
        }
    }

    /// The create is answered with whatever times the page holds; shell `id` now hosts a VM.
    fn finish_create(&mut self, id: u64) {
        let Stage::Creating(c) = self.take_stage(id) else {
            return;
        };
        let Some(shell) = self.shells.remove(&id) else {
            return;
        };
        let vm = self.created(Some(id), &shell.proc, *c);
        self.shells.insert(id, shell);
        self.enter(id, Stage::Vm { id: vm, op: None }, None);
    }

    fn fail_create(&mut self, id: u64, message: String) {
        let Stage::Creating(c) = self.take_stage(id) else {
            return;
        };
        log::warn!("wispd: request {}: {message}", c.req.from.tag());
        self.kill_shell(id);
        self.reply(c.req.from, error(message));
    }
}
