//! `ControlPage`: the mapping, its seals and its typed, validated accessors.

use super::layout::*;
use super::{ControlCommand, ShellState, Timestamp};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// The seals a page must carry before it is shared: its size can never change (a shell that
/// shrank it would make `wispd` take SIGBUS on its next access), and the seals themselves are
/// final.
const REQUIRED_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

#[derive(Debug, thiserror::Error)]
pub enum ControlPageError {
    #[error("cannot create the control page memfd: {0}")]
    Create(#[source] std::io::Error),
    #[error("cannot seal the control page memfd: {0}")]
    Seal(#[source] std::io::Error),
    #[error("cannot map the control page: {0}")]
    Map(#[source] std::io::Error),
    #[error(
        "the control page is not sealed against resizing (seals {0:#x}): \
         refusing a page its peer could shrink"
    )]
    NotSealed(libc::c_int),
    #[error("the control page is {0} bytes, not {REGION_SIZE}")]
    BadSize(u64),
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
    #[error(
        "the configuration has {0} virtio devices (drives, network interfaces, vsock, \
         entropy and fs together); a VM has at most {DEVICES_MAX}, one IRQ each"
    )]
    TooManyDevices(usize),
    #[error("the device table lists more than one {0} device")]
    Duplicate(&'static str),
    #[error(
        "{0} cannot be carried by the control page (wispd's prepared shells); \
         configure it over the VM's own API socket (wisp --api-sock)"
    )]
    NotCarried(&'static str),
    #[error("guest MAC `{0}` is not a MAC address like 06:00:ac:10:00:02")]
    BadMac(String),
    #[error("fs tag {0:?} is empty or holds a NUL byte")]
    BadFsTag(String),
    #[error("request id {0:?} is not printable ASCII")]
    BadRequestId(String),
    #[error("{device}: {source}")]
    Device {
        /// Which device: "drive `root`" when writing, "device table entry 3" when reading.
        device: String,
        #[source]
        source: Box<ControlPageError>,
    },
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
    /// `wispd`'s side: a new zeroed page in a fresh memfd, sized and sealed so that neither
    /// side can ever resize it.
    pub fn create() -> Result<ControlPage, ControlPageError> {
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        // SAFETY: the name is a valid NUL-terminated string; the flags are plain bits.
        let fd = unsafe { libc::memfd_create(c"wisp-control".as_ptr(), flags) };
        if fd < 0 {
            return Err(ControlPageError::Create(std::io::Error::last_os_error()));
        }
        // SAFETY: memfd_create returned a fresh fd that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(REGION_SIZE as u64)
            .map_err(ControlPageError::Create)?;
        // SAFETY: fcntl on an fd we own, with an int argument, as F_ADD_SEALS takes.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, REQUIRED_SEALS) } < 0 {
            return Err(ControlPageError::Seal(std::io::Error::last_os_error()));
        }
        let page = ControlPage::map(file)?;
        page.store64(OFF_MAGIC, MAGIC);
        page.store32(OFF_VERSION, VERSION);
        Ok(page)
    }

    /// The shell's side: maps the page passed as `fd` after checking that it is sealed against
    /// resizing and has the right size, then checks magic and version.
    pub fn open(fd: OwnedFd) -> Result<ControlPage, ControlPageError> {
        // SAFETY: fcntl on an fd we own; F_GET_SEALS takes no argument.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & REQUIRED_SEALS != REQUIRED_SEALS {
            return Err(ControlPageError::NotSealed(seals.max(0)));
        }
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
        if len != REGION_SIZE as u64 {
            return Err(ControlPageError::BadSize(len));
        }
        // SAFETY: maps REGION_SIZE bytes of a file we hold open, whose size is sealed at
        // exactly that (checked above); the result is checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                REGION_SIZE,
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
        assert!(off < REGION_SIZE);
        // SAFETY: `off` is inside the live, page-aligned mapping; AtomicU8 has no alignment
        // requirement, and all accesses to the page are atomic.
        unsafe { AtomicU8::from_ptr(self.base.add(off)) }
    }

    fn atomic32(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= REGION_SIZE);
        // SAFETY: in bounds and 4-byte aligned (the mapping is page-aligned, `off` a multiple
        // of 4); all accesses to the page are atomic.
        unsafe { AtomicU32::from_ptr(self.base.add(off).cast()) }
    }

    fn atomic64(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= REGION_SIZE);
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

    /// Stores `bytes` in the field at `off` (at most `max` bytes) and its length at `len_off`.
    fn write_field(
        &self,
        what: &'static str,
        off: usize,
        max: usize,
        len_off: usize,
        bytes: &[u8],
    ) -> Result<(), ControlPageError> {
        if bytes.len() > max {
            return Err(ControlPageError::TooLong {
                what,
                len: bytes.len(),
                max,
            });
        }
        self.write_bytes(off, bytes);
        self.store32(len_off, bytes.len() as u32);
        Ok(())
    }

    /// The bytes of the field at `off`, after checking its length word against `max`.
    fn read_field(
        &self,
        field: &'static str,
        off: usize,
        max: usize,
        len_off: usize,
    ) -> Result<Vec<u8>, ControlPageError> {
        let len = self.load32(len_off) as usize;
        if len > max {
            return Err(ControlPageError::OutOfRange {
                field,
                value: len as u64,
            });
        }
        Ok(self.read_bytes(off, len))
    }

    fn read_str(
        &self,
        field: &'static str,
        off: usize,
        max: usize,
        len_off: usize,
    ) -> Result<String, ControlPageError> {
        let bytes = self.read_field(field, off, max, len_off)?;
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

    /// Stores the message of a failed command, cut at `ERROR_MAX` bytes (on a char boundary).
    pub fn set_error(&self, message: &str) {
        let mut end = message.len().min(ERROR_MAX);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let _ = self.write_field(
            "error",
            OFF_ERROR,
            ERROR_MAX,
            OFF_ERROR_LEN,
            &message.as_bytes()[..end],
        );
    }

    pub fn error(&self) -> String {
        self.read_str("error", OFF_ERROR, ERROR_MAX, OFF_ERROR_LEN)
            .unwrap_or_else(|e| e.to_string())
    }

    /// `wispd`: the id of the request a Create serves (from `wisp ctl`, for the shell's logs):
    /// printable ASCII, at most `REQUEST_ID_MAX` bytes; anything else is refused.
    pub fn set_request_id(&self, id: &str) -> Result<(), ControlPageError> {
        if !is_printable_ascii(id.as_bytes()) {
            return Err(ControlPageError::BadRequestId(id.to_string()));
        }
        self.write_field(
            "request id",
            OFF_REQUEST_ID,
            REQUEST_ID_MAX,
            OFF_REQUEST_ID_LEN,
            id.as_bytes(),
        )
    }

    /// The shell: the request id `wispd` stored, or an empty string when there is none or the
    /// field holds something other than a printable ASCII id (a peer's garbage never reaches
    /// a log line).
    pub fn request_id(&self) -> String {
        match self.read_str(
            "request id",
            OFF_REQUEST_ID,
            REQUEST_ID_MAX,
            OFF_REQUEST_ID_LEN,
        ) {
            Ok(id) if is_printable_ascii(id.as_bytes()) => id,
            Ok(_) => {
                log::warn!("control page: the request id is not printable ASCII; ignored");
                String::new()
            }
            Err(e) => {
                log::warn!("control page: {e}; request id ignored");
                String::new()
            }
        }
    }
}

fn is_printable_ascii(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| (0x20..=0x7e).contains(b))
}

impl Drop for ControlPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference into it outlives self.
        unsafe { libc::munmap(self.base.cast(), REGION_SIZE) };
    }
}

mod config_io;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
