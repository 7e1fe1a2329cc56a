//! vCPU threads, owned: spawned ahead of time (a prepared shell parks them until a create),
//! driven by `VcpuEvent`s that each thread acknowledges, kicked out of KVM_RUN through
//! `vcpu_control`, and joined before the VM they run can go away.
//!
//! Ownership carries the lifetimes: `Vcpus` holds every thread's `JoinHandle`, so a kick
//! (`pthread_kill`) only ever names a thread that has not been joined yet — its `pthread_t`
//! is valid even if the thread has already returned — and `Vcpus::finish` (also run on drop)
//! tells every thread to finish, kicks it, and joins it. `MicroVm` keeps its `Vcpus` first in
//! drop order and finishes them before it removes the memory slots and unmaps guest memory.

use crate::exit::{VmExit, VmExitSignal};
use crate::snapshot::kvm_state::VcpuState;
use crate::vcpu::{Vcpu, VcpuError};
use crate::vcpu_control::{kick_signal, FirstEntryHook};
use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vm_device::device_manager::IoManager;

/// What the owner asks of a running vCPU thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuEvent {
    /// Leave KVM_RUN and wait for `Resume` or `Finish`; answered with `Paused`.
    Pause,
    /// Enter the guest again; answered with `Resumed`.
    Resume,
    /// Return from the thread; it is then joined.
    Finish,
    /// Save the (paused) vCPU's state, these MSRs included; answered with `Saved`.
    SaveState(Arc<Vec<u32>>),
}

/// A vCPU thread's acknowledgement of an event.
#[derive(Debug)]
pub enum VcpuResponse {
    Paused,
    Resumed,
    /// The vCPU's state, or why it could not be read.
    Saved(Box<Result<VcpuState, String>>),
}

impl VcpuResponse {
    fn same_kind(&self, other: &VcpuResponse) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    /// A response of the same kind, for waiting on (`Paused` and `Resumed` carry nothing).
    fn same(want: &VcpuResponse) -> VcpuResponse {
        match want {
            VcpuResponse::Paused => VcpuResponse::Paused,
            VcpuResponse::Resumed => VcpuResponse::Resumed,
            VcpuResponse::Saved(_) => VcpuResponse::Saved(Box::new(Err(String::new()))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VcpuThreadError {
    #[error("vCPU {id} did not acknowledge {event:?} within {timeout:?}")]
    NoAck {
        id: u8,
        event: VcpuEvent,
        timeout: Duration,
    },
    #[error("cannot save the state of vCPU {id}: {reason}")]
    SaveState { id: u8, reason: String },
}

/// What a parked thread is given to run.
struct Launch {
    vcpu: Vcpu,
    io: Arc<IoManager>,
    exit: VmExitSignal,
    events: Receiver<VcpuEvent>,
    responses: Sender<VcpuResponse>,
    first_entry: Option<FirstEntryHook>,
}

/// A vCPU thread started ahead of time, parked until it is given a vCPU to run: a prepared
/// shell spawns its threads while preparing, so the create path pays a wake-up, not a clone
/// and a first scheduling. Dropped unlaunched, it ends and is joined.
pub struct VcpuThread {
    id: u8,
    launch: Option<mpsc::SyncSender<Launch>>,
    handle: Option<JoinHandle<()>>,
}

impl VcpuThread {
    pub fn spawn(id: u8) -> Result<VcpuThread, VcpuError> {
        let (launch, parked) = mpsc::sync_channel::<Launch>(1);
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                // The vCPU filter goes on before this thread can be handed a vCPU (the guest's
                // input); a thread that could not install it never runs one.
                let filtered = wisp_seccomp::enter(wisp_seccomp::ThreadKind::Vcpu);
                // A shell destroyed before any create drops the sender: the thread just ends.
                if let Ok(launch) = parked.recv() {
                    let Launch {
                        vcpu,
                        io,
                        exit,
                        events,
                        responses,
                        first_entry,
                    } = launch;
                    if let Err(e) = filtered {
                        exit.send(VmExit::Error(format!("vCPU {id} not started: {e}")));
                        return;
                    }
                    if let Some(reason) = vcpu.run_loop(&io, &events, &responses, first_entry) {
                        exit.send(reason);
                    }
                }
            })
            .map_err(|source| VcpuError::Spawn { id, source })?;
        Ok(VcpuThread {
            id,
            launch: Some(launch),
            handle: Some(handle),
        })
    }

    /// Hands `vcpu` to this thread, which runs it until the guest ends the VM or the returned
    /// handle finishes it. `first_entry` runs on the thread just before its first KVM_RUN;
    /// `paused`: the thread waits for a `Resume` before it enters the guest.
    pub fn launch(
        mut self,
        vcpu: Vcpu,
        io: Arc<IoManager>,
        exit: VmExitSignal,
        first_entry: Option<FirstEntryHook>,
        paused: bool,
    ) -> Result<VcpuHandle, VcpuError> {
        let id = self.id;
        let gone = || VcpuError::Spawn {
            id,
            source: std::io::Error::other("the vCPU thread is gone"),
        };
        let (event_tx, events) = mpsc::channel();
        let (responses, response_rx) = mpsc::channel();
        if paused {
            // Queued before the launch: the thread reads it before its first KVM_RUN, so a
            // restored guest does not run a single instruction until it is resumed.
            event_tx.send(VcpuEvent::Pause).map_err(|_| gone())?;
        }
        let launch = self.launch.take().ok_or_else(gone)?;
        launch
            .send(Launch {
                vcpu,
                io,
                exit,
                events,
                responses,
                first_entry,
            })
            .map_err(|_| gone())?;
        Ok(VcpuHandle {
            id,
            events: event_tx,
            responses: response_rx,
            thread: self.handle.take(),
        })
    }
}

impl Drop for VcpuThread {
    fn drop(&mut self) {
        // Closing the launch channel ends a parked thread; then it can be joined.
        self.launch.take();
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                log::error!("vCPU thread {} panicked", self.id);
            }
        }
    }
}

/// The owner's side of one running vCPU thread.
pub struct VcpuHandle {
    id: u8,
    events: Sender<VcpuEvent>,
    responses: Receiver<VcpuResponse>,
    thread: Option<JoinHandle<()>>,
}

impl VcpuHandle {
    /// Whether the thread has returned (the guest ended the VM from it, or it was finished).
    pub fn has_exited(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Sends `event` and kicks the thread out of KVM_RUN. False if the thread has returned.
    fn send(&self, event: &VcpuEvent) -> bool {
        if self.events.send(event.clone()).is_err() {
            return false;
        }
        if let Some(thread) = &self.thread {
            // SAFETY: `thread` is not joined yet (we hold its JoinHandle), so its pthread_t
            // names a thread whose resources still exist even if it has returned; the kick
            // signal's handler is installed before any vCPU thread is launched and only sets
            // `immediate_exit` in that thread's own kvm_run page.
            let rc = unsafe { libc::pthread_kill(thread.as_pthread_t(), kick_signal()) };
            if rc != 0 && rc != libc::ESRCH {
                log::warn!("cannot kick vCPU {}: error {rc}", self.id);
            }
        }
        true
    }

    /// Waits for the acknowledgement of `event`. A thread that returned meanwhile needs none;
    /// a late answer to an earlier event (one that timed out) is skipped.
    fn await_ack(&self, event: &VcpuEvent, want: VcpuResponse, deadline: Instant) -> AckResult {
        self.await_response(event, &want, deadline).map(|_| ())
    }

    /// The thread's answer of the kind of `want`; `None` if the thread returned meanwhile.
    fn await_response(
        &self,
        event: &VcpuEvent,
        want: &VcpuResponse,
        deadline: Instant,
    ) -> Result<Option<VcpuResponse>, VcpuThreadError> {
        loop {
            let timeout = deadline.saturating_duration_since(Instant::now());
            match self.responses.recv_timeout(timeout) {
                Ok(got) if got.same_kind(want) => return Ok(Some(got)),
                Ok(_) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(VcpuThreadError::NoAck {
                        id: self.id,
                        event: event.clone(),
                        timeout,
                    })
                }
            }
        }
    }

    /// Tells the thread to finish, kicks it and joins it.
    fn finish(&mut self) {
        self.send(&VcpuEvent::Finish);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("vCPU thread {} panicked", self.id);
            }
        }
    }
}

type AckResult = Result<(), VcpuThreadError>;

/// Every running vCPU thread of one VM.
#[derive(Default)]
pub struct Vcpus {
    handles: Vec<VcpuHandle>,
}

impl Vcpus {
    pub fn new(handles: Vec<VcpuHandle>) -> Vcpus {
        Vcpus { handles }
    }

    /// Pauses every live vCPU and waits until each has acknowledged (or returned).
    pub fn pause(&self, timeout: Duration) -> AckResult {
        self.broadcast(VcpuEvent::Pause, VcpuResponse::Paused, timeout)
    }

    /// Resumes every paused vCPU and waits until each has acknowledged (or returned).
    pub fn resume(&self, timeout: Duration) -> AckResult {
        self.broadcast(VcpuEvent::Resume, VcpuResponse::Resumed, timeout)
    }

    fn broadcast(&self, event: VcpuEvent, want: VcpuResponse, timeout: Duration) -> AckResult {
        let deadline = Instant::now() + timeout;
        let sent: Vec<&VcpuHandle> = self.handles.iter().filter(|h| h.send(&event)).collect();
        for handle in sent {
            handle.await_ack(&event, VcpuResponse::same(&want), deadline)?;
        }
        Ok(())
    }

    /// Every vCPU's state, in id order; the vCPUs must be paused. `msrs`: the MSR indices to
    /// save (KVM's list).
    pub fn save_states(
        &self,
        msrs: Arc<Vec<u32>>,
        timeout: Duration,
    ) -> Result<Vec<VcpuState>, VcpuThreadError> {
        let deadline = Instant::now() + timeout;
        let event = VcpuEvent::SaveState(msrs);
        let want = VcpuResponse::Saved(Box::new(Err(String::new())));
        let mut states = Vec::with_capacity(self.handles.len());
        for handle in &self.handles {
            let gone = || VcpuThreadError::SaveState {
                id: handle.id,
                reason: "the vCPU thread has ended".into(),
            };
            if !handle.send(&event) {
                return Err(gone());
            }
            match handle.await_response(&event, &want, deadline)? {
                Some(VcpuResponse::Saved(result)) => match *result {
                    Ok(state) => states.push(state),
                    Err(reason) => {
                        return Err(VcpuThreadError::SaveState {
                            id: handle.id,
                            reason,
                        })
                    }
                },
                _ => return Err(gone()),
            }
        }
        Ok(states)
    }

    /// Finishes and joins every vCPU thread. Afterwards no vCPU of this VM can enter the guest.
    pub fn finish(&mut self) {
        for handle in self.handles.iter() {
            handle.send(&VcpuEvent::Finish);
        }
        for handle in self.handles.iter_mut() {
            handle.finish();
        }
        self.handles.clear();
    }

    /// How many vCPU threads have not returned yet.
    pub fn live(&self) -> usize {
        self.handles.iter().filter(|h| !h.has_exited()).count()
    }
}

impl Drop for Vcpus {
    fn drop(&mut self) {
        self.finish();
    }
}
