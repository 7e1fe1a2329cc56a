//! `ControlPage`: the mapping and its typed, validated accessors.

use super::layout::*;
use super::{ControlCommand, ShellState, Timestamp};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum ControlPageError {
    #[error("cannot create the control page memfd: {0}")]
    Create(#[source] std::io::Error),
    #[error("cannot map the control page: {0}")]
    Map(#[source] std::io::Error),
    #[error("control page has a wrong magic {0:#x} (not a Wisp control page)")]
    BadMagic(u64),
    #[error("control page version {0} is not supported (this shell speaks {VERSION})")]
    BadVersion(u32),
    #[error("control page field {field} is out of range: {value}")]
    OutOfRange { field: &'static str, value: u64 },
    #[error("control page field {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("{what} does not fit in the control page ({len} bytes, at most {max})")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("the control page holds at most {DEVICES_MAX} devices")]
    TooManyDevices,
    #[error("guest MAC `{0}` is not a MAC address like 06:00:ac:10:00:02")]
    BadMac(String),
}

/// One mapped control page (either side).
pub struct ControlPage {
    base: *mut u8,
    file: File,
}

// SAFETY: the mapping is shared memory accessed only through atomics, so it may be used from
// any thread; the raw pointer stays valid until `Drop` unmaps it.
unsafe impl Send for ControlPage {}
// SAFETY: as above: every access goes through atomic operations.
unsafe impl Sync for ControlPage {}

impl ControlPage {
    /// `wispd`'s side: a new zeroed page in a fresh memfd.
    pub fn create() -> Result<ControlPage, ControlPageError> {
        // SAFETY: the name is a valid NUL-terminated string; the flags are plain bits.
        let fd = unsafe { libc::memfd_create(c"wisp-control".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(ControlPageError::Create(std::io::Error::last_os_error()));
        }
        // SAFETY: memfd_create returned a fresh fd that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(PAGE_SIZE as u64)
            .map_err(ControlPageError::Create)?;
        let page = ControlPage::map(file)?;
        page.store64(OFF_MAGIC, MAGIC);
        page.store32(OFF_VERSION, VERSION);
        Ok(page)
    }

    /// The shell's side: maps the page passed as `fd` and checks magic and version.
    pub fn open(fd: OwnedFd) -> Result<ControlPage, ControlPageError> {
        let page = ControlPage::map(File::from(fd))?;
        let magic = page.load64(OFF_MAGIC);
        if magic != MAGIC {
            return Err(ControlPageError::BadMagic(magic));
        }
        let version = page.load32(OFF_VERSION);
        if version != VERSION {
            return Err(ControlPageError::BadVersion(version));
        }
        Ok(page)
    }

    fn map(file: File) -> Result<ControlPage, ControlPageError> {
        let len = file.metadata().map_err(ControlPageError::Map)?.len();
        if len < PAGE_SIZE as u64 {
            return Err(ControlPageError::OutOfRange {
                field: "page size",
                value: len,
            });
        }
        // SAFETY: maps PAGE_SIZE bytes of a file we hold open; the result is checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(ControlPageError::Map(std::io::Error::last_os_error()));
        }
        Ok(ControlPage {
            base: base.cast(),
            file,
        })
    }

    /// The memfd, to pass to a shell.
    pub fn file(&self) -> &File {
        &self.file
    }

    fn atomic8(&self, off: usize) -> &AtomicU8 {
        assert!(off < PAGE_SIZE);
        // SAFETY: `off` is inside the live, page-aligned mapping; AtomicU8 has no alignment
        // requirement, and all accesses to the page are atomic.
        unsafe { AtomicU8::from_ptr(self.base.add(off)) }
    }

    fn atomic32(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= PAGE_SIZE);
        // SAFETY: in bounds and 4-byte aligned (the mapping is page-aligned, `off` a multiple
        // of 4); all accesses to the page are atomic.
        unsafe { AtomicU32::from_ptr(self.base.add(off).cast()) }
    }

    fn atomic64(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= PAGE_SIZE);
        // SAFETY: in bounds and 8-byte aligned; all accesses to the page are atomic.
        unsafe { AtomicU64::from_ptr(self.base.add(off).cast()) }
    }

    fn load32(&self, off: usize) -> u32 {
        self.atomic32(off).load(Ordering::Acquire)
    }

    fn store32(&self, off: usize, v: u32) {
        self.atomic32(off).store(v, Ordering::Release)
    }

    fn load64(&self, off: usize) -> u64 {
        self.atomic64(off).load(Ordering::Acquire)
    }

    fn store64(&self, off: usize, v: u64) {
        self.atomic64(off).store(v, Ordering::Release)
    }

    fn write_bytes(&self, off: usize, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.atomic8(off + i).store(*b, Ordering::Relaxed);
        }
    }

    fn read_bytes(&self, off: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| self.atomic8(off + i).load(Ordering::Relaxed))
            .collect()
    }

    fn write_str(
        &self,
        what: &'static str,
        off: usize,
        max: usize,
        len_off: Option<usize>,
        s: &str,
    ) -> Result<(), ControlPageError> {
        if s.len() > max {
            return Err(ControlPageError::TooLong {
                what,
                len: s.len(),
                max,
            });
        }
        self.write_bytes(off, s.as_bytes());
        match len_off {
            Some(l) => self.store32(l, s.len() as u32),
            // NUL-padded field.
            None => self.write_bytes(off + s.len(), &vec![0; max - s.len()]),
        }
        Ok(())
    }

    fn read_str(
        &self,
        field: &'static str,
        off: usize,
        max: usize,
        len_off: Option<usize>,
    ) -> Result<String, ControlPageError> {
        let bytes = match len_off {
            Some(l) => {
                let len = self.load32(l) as usize;
                if len > max {
                    return Err(ControlPageError::OutOfRange {
                        field,
                        value: len as u64,
                    });
                }
                self.read_bytes(off, len)
            }
            None => {
                let mut b = self.read_bytes(off, max);
                if let Some(end) = b.iter().position(|c| *c == 0) {
                    b.truncate(end);
                }
                b
            }
        };
        String::from_utf8(bytes).map_err(|_| ControlPageError::NotUtf8(field))
    }

    pub fn state(&self) -> Option<ShellState> {
        ShellState::from_u32(self.load32(OFF_STATE))
    }

    pub fn set_state(&self, state: ShellState) {
        self.store32(OFF_STATE, state as u32)
    }

    /// `wispd`: posts `command` (its data already written); returns the sequence number the
    /// shell will acknowledge. The Release store of the sequence publishes everything before.
    pub fn post_command(&self, command: ControlCommand) -> u32 {
        self.store32(OFF_COMMAND, command as u32);
        let seq = self.load32(OFF_SEQ).wrapping_add(1);
        self.store32(OFF_SEQ, seq);
        seq
    }

    /// The shell: the pending command, if any (sequence not yet acknowledged).
    pub fn pending_command(&self) -> Option<(u32, Option<ControlCommand>)> {
        let seq = self.load32(OFF_SEQ);
        if seq == self.load32(OFF_ACK) {
            return None;
        }
        Some((seq, ControlCommand::from_u32(self.load32(OFF_COMMAND))))
    }

    /// The shell: acknowledges `seq` with `result` (0 = success).
    pub fn acknowledge(&self, seq: u32, result: i32) {
        self.store32(OFF_RESULT, result as u32);
        self.store32(OFF_ACK, seq);
    }

    /// `wispd`: whether `seq` has been acknowledged, and with what result.
    pub fn acknowledged(&self, seq: u32) -> Option<i32> {
        (self.load32(OFF_ACK) == seq).then(|| self.load32(OFF_RESULT) as i32)
    }

    pub fn set_time(&self, which: Timestamp, ns: u64) {
        self.store64(which.offset(), ns)
    }

    /// 0 when not yet recorded.
    pub fn time(&self, which: Timestamp) -> u64 {
        self.load64(which.offset())
    }

    pub fn set_shell_info(&self, pid: u32, mem_mib: u32, vcpus: u32) {
        self.store32(OFF_SHELL_PID, pid);
        self.store32(OFF_SHELL_MEM_MIB, mem_mib);
        self.store32(OFF_SHELL_VCPUS, vcpus);
    }

    /// (pid, memory MiB, vCPUs) of the shell.
    pub fn shell_info(&self) -> (u32, u32, u32) {
        (
            self.load32(OFF_SHELL_PID),
            self.load32(OFF_SHELL_MEM_MIB),
            self.load32(OFF_SHELL_VCPUS),
        )
    }

    pub fn set_error(&self, message: &str) {
        let mut end = message.len().min(ERROR_MAX);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let _ = self.write_str(
            "error",
            OFF_ERROR,
            ERROR_MAX,
            Some(OFF_ERROR_LEN),
            &message[..end],
        );
    }

    pub fn error(&self) -> String {
        self.read_str("error", OFF_ERROR, ERROR_MAX, Some(OFF_ERROR_LEN))
            .unwrap_or_else(|e| e.to_string())
    }
}

impl Drop for ControlPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference into it outlives self.
        unsafe { libc::munmap(self.base.cast(), PAGE_SIZE) };
    }
}

mod config_io;
