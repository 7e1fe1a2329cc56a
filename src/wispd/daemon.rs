//! wispd's state: the pool of prepared shells and the VMs they became, and the handlers of
//! each control request. The pool refills in the background; create only takes a shell and
//! writes its control page.

use crate::shell_process::{ShellError, ShellProcess};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{mpsc, Condvar, Mutex};
use std::time::{Duration, Instant};
use wisp_api::control_page::{ControlCommand, ShellState, Timestamp};
use wisp_api::wispd_protocol::{CreateTimes, CtlRequest, CtlResponse, VmSummary};
use wisp_api::VmConfig;

const PREPARE_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
const BOOT_WAIT: Duration = Duration::from_secs(5);
/// Most console output returned by `console`.
const CONSOLE_TAIL: u64 = 32 * 1024;

pub struct Settings {
    pub wisp: PathBuf,
    pub run_dir: PathBuf,
    pub pool: usize,
    pub shell_mem: u32,
    pub shell_vcpus: u8,
}

struct Vm {
    shell: ShellProcess,
    config: VmConfig,
    /// Set once the monitor saw the shell exit.
    exited: Option<String>,
}

#[derive(Default)]
struct State {
    pool: VecDeque<ShellProcess>,
    vms: BTreeMap<u64, Vm>,
    next_id: u64,
}

/// A request to the spawner thread: the shell's size and where to send it.
type SpawnJob = (u32, u8, mpsc::Sender<Result<ShellProcess, ShellError>>);

pub struct Daemon {
    pub settings: Settings,
    /// Every shell is forked by one long-lived thread: PR_SET_PDEATHSIG fires when the forking
    /// *thread* exits, so a shell forked by a short-lived connection thread would die with it.
    spawner: Mutex<mpsc::Sender<SpawnJob>>,
    state: Mutex<State>,
    /// Signalled when a shell leaves the pool, to wake the refiller.
    pool_changed: Condvar,
}

/// "exit status N" or "signal N", from a waitpid status.
fn describe_status(status: libc::c_int) -> String {
    if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("exit status {}", libc::WEXITSTATUS(status))
    }
}

fn vm_id(n: u64) -> String {
    format!("vm-{n}")
}

fn parse_id(id: &str) -> Option<u64> {
    id.strip_prefix("vm-")?.parse().ok()
}

fn error(message: impl std::fmt::Display) -> CtlResponse {
    CtlResponse::Error {
        message: message.to_string(),
    }
}

fn us_between(from_ns: u64, to_ns: u64) -> Option<f64> {
    (from_ns != 0 && to_ns >= from_ns).then(|| (to_ns - from_ns) as f64 / 1000.0)
}

impl Daemon {
    pub fn new(settings: Settings) -> Daemon {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let (wisp, run_dir) = (settings.wisp.clone(), settings.run_dir.clone());
        std::thread::spawn(move || {
            for (mem, vcpus, reply) in rx {
                let _ = reply.send(ShellProcess::spawn(&wisp, &run_dir, mem, vcpus));
            }
        });
        Daemon {
            settings,
            spawner: Mutex::new(tx),
            state: Mutex::new(State::default()),
            pool_changed: Condvar::new(),
        }
    }

    fn spawn_shell(&self, mem: u32, vcpus: u8) -> Result<ShellProcess, ShellError> {
        let (reply, result) = mpsc::channel();
        let gone = || ShellError::Doorbell(std::io::Error::other("the spawner thread is gone"));
        self.spawner
            .lock()
            .map_err(|_| gone())?
            .send((mem, vcpus, reply))
            .map_err(|_| gone())?;
        let mut shell = result.recv().map_err(|_| gone())??;
        if let Err(e) = shell.wait_prepared(PREPARE_TIMEOUT) {
            shell.kill();
            return Err(e);
        }
        Ok(shell)
    }

    /// Keeps the pool full; runs on its own thread.
    pub fn refill_forever(&self) {
        loop {
            {
                let Ok(mut state) = self.state.lock() else {
                    return;
                };
                while state.pool.len() >= self.settings.pool {
                    state = match self.pool_changed.wait(state) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                }
            }
            // Prepare outside the lock: creates go on meanwhile.
            match self.spawn_shell(self.settings.shell_mem, self.settings.shell_vcpus) {
                Ok(shell) => {
                    if let Ok(mut state) = self.state.lock() {
                        state.pool.push_back(shell);
                    }
                }
                Err(e) => {
                    log::error!("wispd: cannot prepare a shell: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Notices shells that died: pooled ones are replaced, VMs are marked. It reaps with
    /// `waitpid(-1)` and takes the lock only when a child died, so a thousand running VMs cost
    /// the create path nothing (polling each child would hold the lock for a thousand syscalls).
    pub fn monitor_forever(&self) {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            loop {
                let mut status: libc::c_int = 0;
                // SAFETY: waitpid writes one int, which `status` is.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                self.reaped(pid as u32, describe_status(status));
            }
        }
    }

    fn reaped(&self, pid: u32, how: String) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if let Some(i) = state.pool.iter().position(|s| s.pid() == pid) {
            log::warn!("wispd: prepared shell {pid} died ({how}); replacing it");
            state.pool.remove(i);
            self.pool_changed.notify_all();
        } else if let Some(vm) = state.vms.values_mut().find(|v| v.shell.pid() == pid) {
            let clean = vm.shell.page.state() == Some(ShellState::Halted);
            vm.exited = Some(if clean {
                "halted".into()
            } else {
                format!("failed ({how}): {}", vm.shell.page.error())
            });
        }
    }

    pub fn handle(&self, req: CtlRequest) -> CtlResponse {
        match req {
            CtlRequest::Create {
                config,
                sent_ns,
                wait_boot,
            } => self.create(*config, sent_ns, wait_boot),
            CtlRequest::List {} => self.list(),
            CtlRequest::Destroy { id } => self.destroy(&id),
            CtlRequest::Pause { id } => self.command(&id, ControlCommand::Pause),
            CtlRequest::Resume { id } => self.command(&id, ControlCommand::Resume),
            CtlRequest::Console { id } => self.console(&id),
            CtlRequest::Status {} => match self.state.lock() {
                Ok(s) => CtlResponse::Status {
                    prepared: s.pool.len(),
                    running: s.vms.values().filter(|v| v.exited.is_none()).count(),
                },
                Err(_) => error("wispd state is poisoned"),
            },
        }
    }

    fn summary(id: u64, vm: &Vm) -> VmSummary {
        let state = match &vm.exited {
            Some(how) => how.clone(),
            None => vm
                .shell
                .page
                .state()
                .map(|s| s.name().to_string())
                .unwrap_or_else(|| "unknown".into()),
        };
        VmSummary {
            id: vm_id(id),
            pid: vm.shell.pid(),
            state,
            mem_size_mib: vm.config.machine_config.mem_size_mib,
            vcpu_count: vm.config.machine_config.vcpu_count,
            api_socket: Some(vm.shell.api_socket.display().to_string()),
        }
    }

    fn create(&self, config: VmConfig, sent_ns: u64, wait_boot: bool) -> CtlResponse {
        let mc = config.machine_config.clone();
        let fits = |s: &ShellProcess| mc.mem_size_mib <= s.mem_mib && mc.vcpu_count <= s.vcpus;
        let taken = match self.state.lock() {
            Ok(mut state) => {
                let pos = state.pool.iter().position(fits);
                pos.and_then(|i| state.pool.remove(i))
            }
            Err(_) => return error("wispd state is poisoned"),
        };
        let (shell, cold) = match taken {
            Some(shell) => (shell, false),
            None => {
                // Nothing prepared fits (or the pool is empty): a cold start, said so.
                match self.spawn_shell(mc.mem_size_mib, mc.vcpu_count.max(1)) {
                    Ok(shell) => (shell, true),
                    Err(e) => return error(format!("cold start failed: {e}")),
                }
            }
        };
        if let Err(e) = shell.page.write_config(&config) {
            shell.kill();
            return error(e);
        }
        if let Err(e) = shell.command(ControlCommand::Create, COMMAND_TIMEOUT) {
            shell.kill();
            return error(e);
        }
        let page = &shell.page;
        // The boot vCPU stamps its first entry itself, just after the acknowledgement.
        let deadline = Instant::now() + Duration::from_millis(200);
        while page.time(Timestamp::FirstEntry) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(20));
        }
        let first = page.time(Timestamp::FirstEntry);
        if wait_boot {
            let deadline = Instant::now() + BOOT_WAIT;
            while page.time(Timestamp::BootTimer) == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let times = CreateTimes {
            request_to_first_entry_us: us_between(sent_ns, first),
            doorbell_to_first_entry_us: us_between(page.time(Timestamp::Command), first),
            request_to_boot_timer_us: us_between(sent_ns, page.time(Timestamp::BootTimer)),
        };
        // Refill only now: preparing a shell (fork, exec, KVM setup) would compete for the CPU
        // with the create it replaces.
        self.pool_changed.notify_all();
        let Ok(mut state) = self.state.lock() else {
            return error("wispd state is poisoned");
        };
        state.next_id += 1;
        let id = state.next_id;
        let vm = Vm {
            shell,
            config,
            exited: None,
        };
        let summary = Self::summary(id, &vm);
        state.vms.insert(id, vm);
        CtlResponse::Created {
            vm: summary,
            times,
            cold,
        }
    }

    fn list(&self) -> CtlResponse {
        match self.state.lock() {
            Ok(state) => CtlResponse::Vms {
                vms: state
                    .vms
                    .iter()
                    .map(|(id, vm)| Self::summary(*id, vm))
                    .collect(),
            },
            Err(_) => error("wispd state is poisoned"),
        }
    }

    fn destroy(&self, id: &str) -> CtlResponse {
        let vm = match (parse_id(id), self.state.lock()) {
            (Some(n), Ok(mut state)) => state.vms.remove(&n),
            _ => None,
        };
        let Some(vm) = vm else {
            return error(format!("no VM {id}"));
        };
        if vm.exited.is_none() {
            // Ask politely first so the shell records Halted; kill regardless.
            let _ = vm
                .shell
                .command(ControlCommand::Destroy, Duration::from_millis(500));
        }
        vm.shell.kill();
        CtlResponse::Done
    }

    fn command(&self, id: &str, command: ControlCommand) -> CtlResponse {
        let Ok(state) = self.state.lock() else {
            return error("wispd state is poisoned");
        };
        match parse_id(id).and_then(|n| state.vms.get(&n)) {
            Some(vm) if vm.exited.is_none() => match vm.shell.command(command, COMMAND_TIMEOUT) {
                Ok(()) => CtlResponse::Done,
                Err(e) => error(e),
            },
            Some(_) => error(format!("VM {id} is not running")),
            None => error(format!("no VM {id}")),
        }
    }

    fn console(&self, id: &str) -> CtlResponse {
        let path = match (parse_id(id), self.state.lock()) {
            (Some(n), Ok(state)) => state.vms.get(&n).map(|vm| vm.shell.console.clone()),
            _ => None,
        };
        let Some(path) = path else {
            return error(format!("no VM {id}"));
        };
        use std::io::{Read, Seek, SeekFrom};
        let text = std::fs::File::open(&path).and_then(|mut f| {
            let len = f.metadata()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(CONSOLE_TAIL)))?;
            let mut s = Vec::new();
            f.read_to_end(&mut s)?;
            Ok(String::from_utf8_lossy(&s).into_owned())
        });
        match text {
            Ok(text) => CtlResponse::Console { text },
            Err(e) => error(format!("cannot read the console of {id}: {e}")),
        }
    }
}
