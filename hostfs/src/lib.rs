//! Host paths named by API clients, config files and the command line, opened so that the
//! name cannot be turned against the host (docs/threat-model.md):
//!
//! - files: no symbolic link anywhere in the path (openat2 `RESOLVE_NO_SYMLINKS`), the type
//!   checked on an `O_PATH` descriptor before the real open (so a FIFO never blocks and a
//!   device never sees an open), the real open non-blocking and compared with what was
//!   checked, reads bounded where the size matters ([`file`]);
//! - Unix sockets: bound in a directory reached without symbolic links, never over a live
//!   socket or anything that is not a socket, created 0600 (or 0660 for a chosen group)
//!   before anyone can connect, and removed on drop only if the path still names the inode we
//!   created ([`socket`]).

pub mod file;
mod resolve;
pub mod socket;

pub use file::{
    check_appendable, open_append_create, open_read, open_read_write, read_bounded, FileKind,
    FILE_CREATE_MODE,
};
pub use socket::{
    bind_listener, bind_socket, check_bindable, connect_stream, BoundSocket, SocketOptions,
    SocketType,
};

/// Why a host path was refused or could not be used. Messages say why only: the caller names
/// the path and what it was for ("cannot use kernel image /k: it is a FIFO, …").
#[derive(Debug, thiserror::Error)]
pub enum HostFsError {
    /// An empty path names nothing.
    #[error("the path is empty")]
    EmptyPath,
    /// A path ending in `/`, `.` or `..` has no file name to create or open.
    #[error("the path does not end in a file name")]
    NoFileName,
    /// A path with a NUL byte cannot reach the kernel.
    #[error("the path contains a NUL byte")]
    Nul,
    /// Some component, the last or an earlier one, is a symbolic link.
    #[error("the path is or passes through a symbolic link, which is refused: name the real path")]
    Symlink,
    /// The file exists but is not of a kind this use allows.
    #[error("it is {found}, not {wanted}")]
    WrongType {
        /// What the path names ("a FIFO", "a directory", …).
        found: &'static str,
        /// What the use allows ("a regular file", …).
        wanted: &'static str,
    },
    /// Opening for write found a FIFO without a reader or a device without a driver (ENXIO).
    #[error("it is a FIFO or a device with nothing behind it")]
    NoReader,
    /// The path named another file between the type check and the open.
    #[error("it was replaced by another file while being opened")]
    Replaced,
    /// A bounded read found more than the bound.
    #[error("it is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: u64,
    },
    /// The kernel has no openat2 (Linux 5.6 and later do).
    #[error("openat2 is not available (Linux 5.6 or later is needed to refuse symbolic links)")]
    NoOpenat2,
    /// A live listener answers on the socket path.
    #[error("a live socket is there: another process answers on it")]
    SocketInUse,
    /// Something other than a socket is at the socket path; it is left alone.
    #[error("it is {found}, not a socket; refusing to replace it")]
    NotASocket {
        /// What the path names.
        found: &'static str,
    },
    /// The file name does not fit `sockaddr_un`.
    #[error("the socket name is {len} bytes; a Unix socket address holds at most {max}")]
    NameTooLong {
        /// Bytes the kernel would need.
        len: usize,
        /// Bytes it has room for.
        max: usize,
    },
    /// A system call failed.
    #[error("{op}: {err}")]
    Io {
        /// What was being done ("open", "bind", …).
        op: &'static str,
        /// The kernel's answer.
        err: std::io::Error,
    },
}

impl HostFsError {
    /// The error of system call `op` from `errno`, with ELOOP and ENXIO given their meaning.
    pub(crate) fn from_io(op: &'static str, err: std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ELOOP) => HostFsError::Symlink,
            Some(libc::ENXIO) => HostFsError::NoReader,
            Some(libc::ENOSYS) if op == "open" => HostFsError::NoOpenat2,
            _ => HostFsError::Io { op, err },
        }
    }

    /// The `errno` behind the error, when one is (callers that retry on EAGAIN need it).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            HostFsError::Io { err, .. } => err.raw_os_error(),
            HostFsError::Symlink => Some(libc::ELOOP),
            HostFsError::NoReader => Some(libc::ENXIO),
            _ => None,
        }
    }
}
