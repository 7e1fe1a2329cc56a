//! wispd's one helper thread, for the work that can stall on the scheduler or the disk and so
//! must not run on the event loop: starting a shell (fork, then waiting until the child has
//! exec'd, which on a loaded host takes milliseconds) and removing a finished shell's files
//! (unlinking a console file that holds data waits on the filesystem journal, again
//! milliseconds). The loop hands jobs over a channel; started shells come back over another,
//! with an eventfd the loop watches. The thread lives as long as wispd: shells set
//! PR_SET_PDEATHSIG, which fires when the thread that forked them ends.

use crate::shell_process::{ShellError, ShellProcess};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use vmm_sys_util::eventfd::EventFd;

enum Job {
    Spawn { id: u64, mem_mib: u32, vcpus: u8 },
    Remove(Vec<PathBuf>),
}

/// A shell the helper started (or why it could not), for the loop's shell `id`.
pub struct Spawned {
    pub id: u64,
    pub result: Result<ShellProcess, ShellError>,
}

pub struct Helper {
    jobs: Option<mpsc::Sender<Job>>,
    /// Set when wispd shuts down: shells still queued are not started.
    stopping: Arc<AtomicBool>,
    done: mpsc::Receiver<Spawned>,
    wake: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Helper {
    /// Starts the thread; shells are `wisp` processes with their files in `run_dir`.
    pub fn start(wisp: PathBuf, run_dir: PathBuf) -> std::io::Result<Helper> {
        let wake = EventFd::new(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)?;
        let ring = wake.try_clone()?;
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (outbox, done) = mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("wispd-helper".into())
            .spawn(move || {
                for job in inbox {
                    match job {
                        Job::Spawn { .. } if stop.load(Ordering::Relaxed) => {}
                        Job::Spawn { id, mem_mib, vcpus } => {
                            let result = ShellProcess::spawn(&wisp, &run_dir, mem_mib, vcpus);
                            // If wispd is shutting down the shell is dropped here, which ends it.
                            if outbox.send(Spawned { id, result }).is_ok() {
                                let _ = ring.write(1);
                            }
                        }
                        Job::Remove(paths) => remove_now(paths),
                    }
                }
            })?;
        Ok(Helper {
            jobs: Some(jobs),
            stopping,
            done,
            wake,
            thread: Some(thread),
        })
    }

    /// Asks for a shell for the loop's shell `id`; false if the helper is gone.
    pub fn spawn(&self, id: u64, mem_mib: u32, vcpus: u8) -> bool {
        let job = Job::Spawn { id, mem_mib, vcpus };
        self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok())
    }

    /// Removes `paths` (a finished shell's files), soon.
    pub fn remove(&self, paths: Vec<PathBuf>) {
        let Some(jobs) = &self.jobs else {
            return remove_now(paths);
        };
        if let Err(mpsc::SendError(Job::Remove(paths))) = jobs.send(Job::Remove(paths)) {
            // The helper is gone: remove them here rather than leave them.
            remove_now(paths);
        }
    }

    /// Readable when started shells are waiting in `finished`.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// The shells started since the last call.
    pub fn finished(&self) -> Vec<Spawned> {
        let _ = self.wake.read();
        self.done.try_iter().collect()
    }
}

impl Drop for Helper {
    /// Lets the thread finish the jobs already queued (so no file is left behind), then ends
    /// every shell it started that the loop never took.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        for spawned in self.done.try_iter() {
            drop(spawned);
        }
    }
}

fn remove_now(paths: Vec<PathBuf>) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}
