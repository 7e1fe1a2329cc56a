//! The VMs wispd created: their records, `list`, `status` and `console`, and pause, resume and
//! destroy, each posted to the VM's shell and answered when it acknowledges (or, for destroy,
//! when its process has ended and been freed). A VM that ends by itself is freed at once (see
//! pool.rs) and leaves only its record: how it ended and the end of its console, kept until it
//! is destroyed (at most `MAX_ENDED` of them).

use crate::clients::Requester;
use crate::daemon::Daemon;
use crate::pool::{error, page_error, Creating, Stage, COMMAND_TIMEOUT, KILL_WAIT};
use crate::shell_process::ShellProcess;
use std::time::{Duration, Instant};
use wisp_api::control_page::{ControlCommand, ShellState, Timestamp};
use wisp_api::wispd_protocol::{CreateTimes, CtlResponse, VmSummary};

/// A destroyed VM's shell has this long to end by itself before it is killed.
const DESTROY_GRACE: Duration = Duration::from_millis(500);
/// Most console output returned by `console`.
const CONSOLE_TAIL: u64 = 32 * 1024;
/// Console output kept for a VM that ended by itself.
const ENDED_CONSOLE: u64 = 16 * 1024;
/// Records of VMs that ended by themselves kept until destroyed; past it, the oldest go.
const MAX_ENDED: usize = 256;

pub(crate) struct VmOp {
    from: Requester,
    command: ControlCommand,
    seq: u32,
    /// Destroy: the shell was sent SIGKILL.
    killed: bool,
}

/// A VM as `list` shows it. `shell` is `None` once the VM ended: then only this remains.
pub(crate) struct VmRecord {
    shell: Option<u64>,
    pid: u32,
    mem_size_mib: u32,
    vcpu_count: u8,
    api_socket: Option<String>,
    ended: Option<String>,
    console: String,
}

fn vm_name(n: u64) -> String {
    format!("vm-{n}")
}

fn parse_vm(id: &str) -> Option<u64> {
    id.strip_prefix("vm-")?.parse().ok()
}

fn command_name(c: ControlCommand) -> &'static str {
    match c {
        ControlCommand::None => "none",
        ControlCommand::Create => "create",
        ControlCommand::Pause => "pause",
        ControlCommand::Resume => "resume",
        ControlCommand::Destroy => "destroy",
    }
}

fn us_between(from_ns: u64, to_ns: u64) -> Option<f64> {
    (from_ns != 0 && to_ns >= from_ns).then(|| (to_ns - from_ns) as f64 / 1000.0)
}

fn summary(id: u64, vm: &VmRecord, proc: Option<&ShellProcess>) -> VmSummary {
    let state = match (&vm.ended, proc) {
        (Some(how), _) => how.clone(),
        (None, Some(p)) => p.page.state().map_or("unknown", |s| s.name()).to_string(),
        (None, None) => "unknown".into(),
    };
    VmSummary {
        id: vm_name(id),
        pid: vm.pid,
        state,
        mem_size_mib: vm.mem_size_mib,
        vcpu_count: vm.vcpu_count,
        api_socket: vm.api_socket.clone(),
    }
}

impl Daemon {
    /// A create succeeded on `proc` (shell `shell`, or `None` if it already ended): the VM gets
    /// its id and record, and the requester its answer.
    pub(crate) fn created(&mut self, shell: Option<u64>, proc: &ShellProcess, c: Creating) -> u64 {
        let page = &proc.page;
        let first = page.time(Timestamp::FirstEntry);
        let times = CreateTimes {
            request_to_first_entry_us: us_between(c.req.sent_ns, first),
            doorbell_to_first_entry_us: us_between(page.time(Timestamp::Command), first),
            request_to_boot_timer_us: us_between(c.req.sent_ns, page.time(Timestamp::BootTimer)),
        };
        let mc = &c.req.config.machine_config;
        let record = VmRecord {
            shell,
            pid: proc.pid(),
            mem_size_mib: mc.mem_size_mib,
            vcpu_count: mc.vcpu_count,
            api_socket: Some(proc.files.api_socket.display().to_string()),
            ended: None,
            console: String::new(),
        };
        let id = self.next_vm;
        self.next_vm += 1;
        let vm = summary(id, &record, Some(proc));
        self.vms.insert(id, record);
        let cold = c.req.cold;
        self.reply(c.req.from, CtlResponse::Created { vm, times, cold });
        id
    }

    /// A snapshot was restored into shell `shell` (`proc`): the VM gets its id and record.
    pub(crate) fn restored(&mut self, shell: u64, proc: &ShellProcess, mem: u32, vcpus: u8) -> u64 {
        let record = VmRecord {
            shell: Some(shell),
            pid: proc.pid(),
            mem_size_mib: mem,
            vcpu_count: vcpus,
            api_socket: Some(proc.files.api_socket.display().to_string()),
            ended: None,
            console: String::new(),
        };
        let id = self.next_vm;
        self.next_vm += 1;
        self.vms.insert(id, record);
        id
    }

    /// The summary of VM `vm`, as `list` shows it.
    pub(crate) fn vm_summary(&self, vm: u64, proc: &ShellProcess) -> Option<VmSummary> {
        self.vms.get(&vm).map(|r| summary(vm, r, Some(proc)))
    }

    /// VM `vm` ended by itself (its shell `proc` is reaped): keep only how, and its console.
    pub(crate) fn vm_ended(&mut self, vm: u64, proc: &ShellProcess, how: &str) {
        let state = if proc.page.state() == Some(ShellState::Halted) {
            "halted".to_string()
        } else {
            format!("failed ({how}){}", page_error(proc))
        };
        log::debug!(
            "wispd: {} (shell {}) ended: {state}",
            vm_name(vm),
            proc.pid()
        );
        let console = proc.console_tail(ENDED_CONSOLE).unwrap_or_default();
        let Some(record) = self.vms.get_mut(&vm) else {
            return;
        };
        record.shell = None;
        record.api_socket = None;
        record.ended = Some(state);
        record.console = console;
        self.ended.push_back(vm);
        while self.ended.len() > MAX_ENDED {
            if let Some(old) = self.ended.pop_front() {
                self.vms.remove(&old);
            }
        }
    }

    fn forget_vm(&mut self, vm: u64) {
        self.vms.remove(&vm);
        self.ended.retain(|v| *v != vm);
    }

    /// VM `vm`'s shell ended; `op` was in flight.
    pub(crate) fn vm_shell_ended(
        &mut self,
        vm: u64,
        op: Option<VmOp>,
        proc: &ShellProcess,
        how: &str,
    ) {
        match op {
            Some(op) if op.command == ControlCommand::Destroy => {
                self.forget_vm(vm);
                self.reply(op.from, CtlResponse::Done);
            }
            Some(op) => {
                self.vm_ended(vm, proc, how);
                let message = format!(
                    "{} ended before it acknowledged the {}",
                    vm_name(vm),
                    command_name(op.command)
                );
                self.reply(op.from, error(message));
            }
            None => self.vm_ended(vm, proc, how),
        }
    }

    /// The VM's shell rang: an acknowledgement of the pause or resume in flight?
    pub(crate) fn vm_rang(&mut self, id: u64) {
        let Some(shell) = self.shells.get(&id) else {
            return;
        };
        let Stage::Vm { op: Some(op), .. } = &shell.stage else {
            return;
        };
        if op.command == ControlCommand::Destroy {
            // Done when the process has ended.
            return;
        }
        let Some(result) = shell.proc.page.acknowledged(op.seq) else {
            return;
        };
        let failure = (result != 0).then(|| shell.proc.page.error());
        let Stage::Vm {
            id: vm,
            op: Some(op),
        } = self.take_stage(id)
        else {
            return;
        };
        self.enter(id, Stage::Vm { id: vm, op: None }, None);
        match failure {
            None => self.reply(op.from, CtlResponse::Done),
            Some(e) => self.reply(op.from, error(e)),
        }
    }

    /// The VM's command deadline passed: a destroy kills, a pause or resume fails.
    pub(crate) fn vm_deadline(&mut self, id: u64) {
        let Some(shell) = self.shells.get(&id) else {
            return;
        };
        let pid = shell.proc.pid();
        let (vm, mut op) = match self.take_stage(id) {
            Stage::Vm {
                id: vm,
                op: Some(op),
            } => (vm, op),
            // Nothing in flight (a stale deadline): nothing to do.
            other => return self.enter(id, other, None),
        };
        // A destroy kills; a jailed shell is asked first (SIGTERM to its jailer, which removes
        // the jail), then killed at the next deadline.
        let hard = self.shells.get(&id).is_some_and(|s| s.proc.killed_hard());
        if op.command == ControlCommand::Destroy && !(op.killed && hard) {
            if let Some(shell) = self.shells.get(&id) {
                shell.proc.kill();
            }
            op.killed = true;
            let deadline = Some(Instant::now() + KILL_WAIT);
            return self.enter(
                id,
                Stage::Vm {
                    id: vm,
                    op: Some(op),
                },
                deadline,
            );
        }
        self.enter(id, Stage::Vm { id: vm, op: None }, None);
        let message = if op.command == ControlCommand::Destroy {
            format!(
                "{}: the shell (pid {pid}) did not end after SIGKILL",
                vm_name(vm)
            )
        } else {
            format!(
                "{}: the shell (pid {pid}) did not acknowledge the {} within {COMMAND_TIMEOUT:?}",
                vm_name(vm),
                command_name(op.command)
            )
        };
        log::warn!("wispd: request {}: {message}", op.from.tag());
        self.reply(op.from, error(message));
    }

    /// The running VM `name`'s shell, or the answer saying why there is none.
    fn live_shell(&self, name: &str) -> Result<u64, String> {
        let Some(record) = parse_vm(name).and_then(|n| self.vms.get(&n)) else {
            return Err(format!("no VM {name}"));
        };
        match record.shell {
            Some(shell) => Ok(shell),
            None => Err(format!(
                "VM {name} is not running ({})",
                record.ended.as_deref().unwrap_or("ended")
            )),
        }
    }

    /// Destroy: an ended VM's record goes at once; a running one is asked to stop, killed
    /// after `DESTROY_GRACE`, and answered once its shell has ended and been freed.
    pub(crate) fn destroy(&mut self, from: Requester, name: &str) {
        let shell = match self.live_shell(name) {
            Ok(shell) => shell,
            Err(why) => {
                // An ended VM: only its record is left, and it goes now.
                if let Some(vm) = parse_vm(name).filter(|n| self.vms.contains_key(n)) {
                    self.forget_vm(vm);
                    return self.reply(from, CtlResponse::Done);
                }
                return self.reply(from, error(why));
            }
        };
        let deadline = self.shells.get(&shell).and_then(|s| s.deadline);
        let (id, op) = match self.take_stage(shell) {
            Stage::Vm { id, op } => (id, op),
            // A record names only shells hosting its VM; anything else is left as it was.
            other => {
                self.enter(shell, other, deadline);
                return self.reply(from, error(format!("no VM {name}")));
            }
        };
        if let Some(old) = op {
            if old.command == ControlCommand::Destroy {
                self.enter(shell, Stage::Vm { id, op: Some(old) }, deadline);
                return self.reply(from, error(format!("{name} is already being destroyed")));
            }
            let what = command_name(old.command);
            let message = format!("{name} was destroyed before it acknowledged the {what}");
            self.reply(old.from, error(message));
        }
        let Some(proc) = self.shells.get(&shell).map(|s| &s.proc) else {
            return;
        };
        let (seq, killed, wait) = match proc.post(ControlCommand::Destroy) {
            Ok(seq) => (seq, false, DESTROY_GRACE),
            Err(_) => {
                proc.kill();
                (0, true, KILL_WAIT)
            }
        };
        let op = Some(VmOp {
            from,
            command: ControlCommand::Destroy,
            seq,
            killed,
        });
        self.enter(shell, Stage::Vm { id, op }, Some(Instant::now() + wait));
    }

    /// Pause or resume: posted to the shell, answered when it acknowledges.
    pub(crate) fn command(&mut self, from: Requester, name: &str, command: ControlCommand) {
        let shell = match self.live_shell(name) {
            Ok(shell) => shell,
            Err(why) => return self.reply(from, error(why)),
        };
        let deadline = self.shells.get(&shell).and_then(|s| s.deadline);
        let (id, op) = match self.take_stage(shell) {
            Stage::Vm { id, op } => (id, op),
            // A record names only shells hosting its VM; anything else is left as it was.
            other => {
                self.enter(shell, other, deadline);
                return self.reply(from, error(format!("no VM {name}")));
            }
        };
        if let Some(op) = op {
            let busy = format!(
                "{name} is busy: a {} is in flight",
                command_name(op.command)
            );
            self.enter(shell, Stage::Vm { id, op: Some(op) }, deadline);
            return self.reply(from, error(busy));
        }
        let posted = match self.shells.get(&shell) {
            Some(s) => s.proc.post(command),
            None => return,
        };
        match posted {
            Ok(seq) => {
                let op = Some(VmOp {
                    from,
                    command,
                    seq,
                    killed: false,
                });
                let deadline = Some(Instant::now() + COMMAND_TIMEOUT);
                self.enter(shell, Stage::Vm { id, op }, deadline);
            }
            Err(e) => {
                self.enter(shell, Stage::Vm { id, op: None }, None);
                self.reply(from, error(e));
            }
        }
    }

    pub(crate) fn list(&self) -> CtlResponse {
        let vms = self
            .vms
            .iter()
            .map(|(id, vm)| {
                let proc = vm.shell.and_then(|s| self.shells.get(&s)).map(|s| &s.proc);
                summary(*id, vm, proc)
            })
            .collect();
        CtlResponse::Vms { vms }
    }

    pub(crate) fn status(&self) -> CtlResponse {
        CtlResponse::Status {
            prepared: self.ready.len(),
            running: self.vms.values().filter(|v| v.shell.is_some()).count(),
        }
    }

    pub(crate) fn console(&self, name: &str) -> CtlResponse {
        let Some(vm) = parse_vm(name).and_then(|n| self.vms.get(&n)) else {
            return error(format!("no VM {name}"));
        };
        let Some(shell) = vm.shell.and_then(|s| self.shells.get(&s)) else {
            return CtlResponse::Console {
                text: vm.console.clone(),
            };
        };
        match shell.proc.console_tail(CONSOLE_TAIL) {
            Ok(text) => CtlResponse::Console { text },
            Err(e) => error(format!("cannot read the console of {name}: {e}")),
        }
    }
}
