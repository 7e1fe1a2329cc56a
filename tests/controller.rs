//! The controller in-process, on /dev/kvm with the Wisp unikernel: the whole lifecycle through
//! `VmmAction`s, pause/resume racing guest exits and other requests, and teardown order
//! (vCPUs joined and memory slots gone before guest memory can be unmapped).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};
use wisp_api::{
    api_channel, ApiSender, BootSource, HostLimits, MachineConfig, VmConfig, VmResources, VmState,
    VmmAction, VmmActionError, VmmData,
};
use wisp_vmm::{ApiFrontEnd, Controller, ControllerHooks, MicroVm, MicroVmOptions, Outcome};
use wisp_vmm::{VmExit, VmmLoop};

fn unikernel() -> PathBuf {
    PathBuf::from(env!("WISP_UNIKERNEL"))
}

fn config(cmdline: &str, vcpus: u8) -> VmConfig {
    VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: unikernel(),
            initrd_path: None,
            boot_args: Some(cmdline.to_string()),
        }),
        machine_config: MachineConfig {
            vcpu_count: vcpus,
            mem_size_mib: 32,
            smt: false,
            mem_shared: false,
        },
        ..Default::default()
    }
}

/// The guest's console, shared with the test, which can wait for a line.
#[derive(Clone, Default)]
struct Console(Arc<(Mutex<Vec<u8>>, Condvar)>);

impl Console {
    fn wait_for(&self, text: &str, timeout: Duration) -> String {
        let (lock, cond) = &*self.0;
        let deadline = Instant::now() + timeout;
        let mut buf = lock.lock().unwrap();
        loop {
            let s = String::from_utf8_lossy(&buf).to_string();
            if s.contains(text) {
                return s;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {text:?} on the console: {s:?}");
            buf = cond.wait_timeout(buf, left).unwrap().0;
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0 .0.lock().unwrap()).to_string()
    }
}

impl Write for Console {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 .0.lock().unwrap().extend_from_slice(b);
        self.0 .1.notify_all();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn options(console: &Console) -> MicroVmOptions {
    MicroVmOptions {
        start: Instant::now(),
        console_out: Box::new(console.clone()),
        console_in: None,
        on_boot: None,
        on_first_entry: None,
        legacy_console_lifecycle: false,
    }
}

/// A controller on its own VMM thread, reached through the API channel as REST reaches it;
/// `states` records every state change the controller announced.
struct Running {
    api: ApiSender,
    states: Arc<Mutex<Vec<VmState>>>,
    thread: thread::JoinHandle<Outcome>,
    console: Console,
}

impl Running {
    fn spawn() -> Running {
        let console = Console::default();
        let mut controller = Controller::new(
            VmResources::new(HostLimits::default()),
            options(&console),
            ControllerHooks::default(),
        );
        let states = Arc::new(Mutex::new(Vec::new()));
        let seen = states.clone();
        controller.add_state_listener(Box::new(move |s| seen.lock().unwrap().push(s)));
        let (api, receiver) = api_channel().unwrap();
        let thread = thread::spawn(move || {
            let mut vmm = VmmLoop::new(controller).unwrap();
            let front = ApiFrontEnd::new(receiver, vmm.controller());
            vmm.add_subscriber(Arc::new(Mutex::new(front)));
            vmm.run().unwrap()
        });
        Running {
            api,
            states,
            thread,
            console,
        }
    }

    fn call(&self, action: VmmAction) -> Result<VmmData, VmmActionError> {
        self.api.call(action, "test".into())
    }

    fn state(&self) -> VmState {
        match self.call(VmmAction::GetVmInfo) {
            Ok(VmmData::InstanceInfo(info)) => info.state,
            other => panic!("GET / answered {other:?}"),
        }
    }

    fn join(self) -> (Outcome, Vec<VmState>) {
        let outcome = self.thread.join().unwrap();
        let states = self.states.lock().unwrap().clone();
        (outcome, states)
    }
}

#[test]
fn the_controller_configures_starts_pauses_resumes_and_stops_the_unikernel() {
    let vm = Running::spawn();
    assert_eq!(vm.state(), VmState::NotStarted);
    // Configuration is validated before anything touches KVM: two root drives are refused.
    let disk = tempfile::NamedTempFile::new().unwrap();
    let mut bad = config("count", 2);
    for id in ["a", "b"] {
        bad.drives.push(wisp_api::Drive {
            drive_id: id.into(),
            path_on_host: disk.path().to_path_buf(),
            is_root_device: true,
            is_read_only: true,
            rate_limiter: None,
        });
    }
    let refused = vm.call(VmmAction::ConfigureAll(Box::new(bad))).unwrap_err();
    assert!(refused.to_string().contains("root device"), "{refused}");
    assert_eq!(vm.state(), VmState::NotStarted);

    vm.call(VmmAction::ConfigureAll(Box::new(config("count", 2))))
        .unwrap();
    vm.call(VmmAction::StartMicroVm).unwrap();
    vm.console.wait_for("count: 2\n", Duration::from_secs(20));
    assert_eq!(vm.state(), VmState::Running);

    vm.call(VmmAction::Pause).unwrap();
    assert_eq!(vm.state(), VmState::Paused);
    // Paused means no vCPU runs: the console stops growing.
    let before = vm.console.text();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(vm.console.text(), before, "the guest ran while paused");

    vm.call(VmmAction::Resume).unwrap();
    assert_eq!(vm.state(), VmState::Running);
    let n = before.matches("count: ").count();
    vm.console
        .wait_for(&format!("count: {}\n", n + 1), Duration::from_secs(20));

    let second = vm.call(VmmAction::StartMicroVm).unwrap_err();
    assert!(matches!(second, VmmActionError::NotAllowed(_)), "{second}");
    vm.call(VmmAction::StopMicroVm).unwrap();
    let (outcome, states) = vm.join();
    assert_eq!(outcome, Outcome::Exited(VmExit::Stopped));
    assert_eq!(
        states,
        [
            VmState::NotStarted,
            VmState::Running,
            VmState::Paused,
            VmState::Running,
            VmState::Halted
        ]
    );
}

/// 1000 pause/resume cycles while the guest exits to the VMM all the time, another client
/// reads the state, and guests end on their own in between: every request is answered, no
/// vCPU is left behind, nothing hangs.
#[test]
fn a_thousand_pause_resume_cycles_race_guest_exits_and_requests() {
    let cycles: usize = std::env::var("WISP_PAUSE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut done = 0;
    let mut vms = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while done < cycles {
        assert!(Instant::now() < deadline, "only {done} cycles in 240 s");
        vms += 1;
        let vm = Arc::new(Running::spawn());
        // Every third guest ends on its own mid-way (greets, then resets): the cycles race its
        // exit; the others count until stopped.
        let cmdline = if vms % 3 == 0 { "smp mem" } else { "smp count" };
        vm.call(VmmAction::ConfigureAll(Box::new(config(cmdline, 2))))
            .unwrap();
        vm.call(VmmAction::StartMicroVm).unwrap();
        let reader = {
            let vm = vm.clone();
            thread::spawn(move || {
                let mut answered = 0;
                while answered < 200 {
                    match vm.call(VmmAction::GetVmInfo) {
                        Ok(VmmData::InstanceInfo(info)) if !info.state.has_ended() => {}
                        // The VM ended (or its loop did, and the channel with it).
                        Ok(VmmData::InstanceInfo(_)) | Err(VmmActionError::VmmGone) => break,
                        other => panic!("GET / answered {other:?}"),
                    }
                    answered += 1;
                }
                answered
            })
        };
        let mut ended = false;
        for _ in 0..100 {
            match vm.call(VmmAction::Pause) {
                Ok(_) => {}
                // The guest ended between two cycles: refused, not hung.
                Err(VmmActionError::NotAllowed(_)) | Err(VmmActionError::VmmGone) => {
                    ended = true;
                    break;
                }
                Err(e) => panic!("pause: {e}"),
            }
            match vm.call(VmmAction::Resume) {
                Ok(_) => done += 1,
                Err(VmmActionError::NotAllowed(_)) | Err(VmmActionError::VmmGone) => {
                    ended = true;
                    break;
                }
                Err(e) => panic!("resume: {e}"),
            }
        }
        if !ended {
            vm.call(VmmAction::StopMicroVm).unwrap();
        }
        reader.join().unwrap();
        let vm = Arc::try_unwrap(vm).ok().unwrap();
        let (outcome, _) = vm.join();
        assert!(
            matches!(outcome, Outcome::Exited(VmExit::Stopped | VmExit::Reset)),
            "{outcome:?}"
        );
    }
    eprintln!("{done} pause/resume cycles over {vms} VMs");
}

/// Teardown order: after `shutdown` every vCPU thread is joined (the guest's counter stands
/// still) and KVM no longer holds the guest's memory slots (a new slot over the same guest
/// range is accepted, which KVM refuses while an old one overlaps it) — while the mapping
/// itself is still there. Only then may the mapping go.
#[test]
fn after_shutdown_no_vcpu_runs_and_the_memory_slots_are_gone_before_the_mapping() {
    let console = Console::default();
    let mut vm = MicroVm::build(&config("count", 1)).unwrap();
    vm.attach_host(options(&console));
    vm.start().unwrap();
    let text = console.wait_for("count: 1\n", Duration::from_secs(20));
    let addr = text
        .lines()
        .find_map(|l| l.strip_prefix("count: at 0x"))
        .map(|hex| u64::from_str_radix(hex, 16).unwrap())
        .unwrap();
    let read = |vm: &MicroVm| vm.memory().read_obj::<u64>(GuestAddress(addr)).unwrap();
    let running = read(&vm);
    thread::sleep(Duration::from_millis(50));
    assert_ne!(
        read(&vm),
        running,
        "the counter does not move while running"
    );
    assert_eq!(vm.live_vcpus(), 1);

    vm.shutdown();
    assert_eq!(vm.live_vcpus(), 0);
    let stopped = read(&vm);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(read(&vm), stopped, "a vCPU still runs after shutdown");

    // A fresh mapping registered over guest-physical 0..1 MiB in a new slot: KVM refuses it
    // (EEXIST) if slot 0 still covered that range.
    let fresh =
        vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let host = {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
        let region = fresh.iter().next().unwrap();
        region.get_host_address(MemoryRegionAddress(0)).unwrap() as u64
    };
    let slot = kvm_bindings::kvm_userspace_memory_region {
        slot: 7,
        guest_phys_addr: 0,
        memory_size: 1 << 20,
        userspace_addr: host,
        flags: 0,
    };
    // SAFETY: `fresh` outlives the slot (deleted right below) and no vCPU of this VM runs.
    unsafe { vm.vm().fd().set_user_memory_region(slot) }
        .expect("an old slot still covers guest-physical 0");
    let delete = kvm_bindings::kvm_userspace_memory_region {
        memory_size: 0,
        userspace_addr: 0,
        ..slot
    };
    // SAFETY: deleting the slot hands KVM no memory.
    unsafe { vm.vm().fd().set_user_memory_region(delete) }.unwrap();
    drop(vm);
}
