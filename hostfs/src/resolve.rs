//! Path resolution that never follows a symbolic link: openat2(2) with `RESOLVE_NO_SYMLINKS`
//! (Linux 5.6+) refuses a link in any component, not only the last one as `O_NOFOLLOW` does,
//! so a user who owns some directory on the way cannot redirect the VMM by swapping in a link
//! between a check and the use. Also the small `stat` helpers the file and socket halves share.

use crate::HostFsError;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `struct open_how` (include/uapi/linux/openat2.h); libc's is `non_exhaustive`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// How often an open interrupted by a signal or a concurrent rename (EAGAIN) is retried.
const RETRIES: usize = 8;

/// `path` as a C string; empty paths and NUL bytes are refused.
pub(crate) fn c_path(path: &Path) -> Result<CString, HostFsError> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(HostFsError::EmptyPath);
    }
    CString::new(bytes).map_err(|_| HostFsError::Nul)
}

/// The directory part and the file name of `path` ("." when there is no directory part).
pub(crate) fn split(path: &Path) -> Result<(CString, CString), HostFsError> {
    c_path(path)?;
    let name = path.file_name().ok_or(HostFsError::NoFileName)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = CString::new(name.as_bytes()).map_err(|_| HostFsError::Nul)?;
    Ok((c_path(dir)?, name))
}

/// openat2(`dirfd`, `path`, `flags`, `mode`) with no symbolic link allowed on the way.
pub(crate) fn openat2(
    dirfd: RawFd,
    path: &CStr,
    flags: i32,
    mode: u32,
) -> Result<OwnedFd, HostFsError> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve: libc::RESOLVE_NO_SYMLINKS,
    };
    for _ in 0..RETRIES {
        // SAFETY: `path` is a valid C string and `how` a valid open_how of the size passed;
        // the kernel only reads both. The result is checked before use.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            let fd = RawFd::try_from(fd).map_err(|_| HostFsError::from_io("open", einval()))?;
            // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
            _ => return Err(HostFsError::from_io("open", err)),
        }
    }
    Err(HostFsError::from_io(
        "open",
        io::Error::from_raw_os_error(libc::EAGAIN),
    ))
}

/// An `O_PATH` descriptor on the directory `dir`, reached without symbolic links.
pub(crate) fn open_dir(dir: &CStr) -> Result<OwnedFd, HostFsError> {
    openat2(libc::AT_FDCWD, dir, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(|e| match e {
        HostFsError::Io { err, .. } => HostFsError::Io {
            op: "open its directory",
            err,
        },
        other => other,
    })
}

/// fstat(2).
pub(crate) fn fstat(fd: &OwnedFd) -> Result<libc::stat, HostFsError> {
    // SAFETY: stat is plain old data; all-zero is a valid value for the kernel to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor and `st` a writable stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(HostFsError::from_io("fstat", io::Error::last_os_error()));
    }
    Ok(st)
}

/// fstatat(`dir`, `name`) on the entry itself (a link is reported as a link); `None` when
/// nothing is there.
pub(crate) fn lstat_at(dir: &OwnedFd, name: &CStr) -> Result<Option<libc::stat>, HostFsError> {
    // SAFETY: as in `fstat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is an open directory descriptor, `name` a C string, `st` writable.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(HostFsError::Io { op: "stat", err });
    }
    Ok(Some(st))
}

/// What a `st_mode` names, for messages ("a FIFO", "a directory", …).
pub(crate) fn kind_name(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFBLK => "a block device",
        libc::S_IFCHR => "a character device",
        libc::S_IFLNK => "a symbolic link",
        _ => "a file of unknown type",
    }
}

/// Whether `st_mode` is of file type `ifmt`.
pub(crate) fn is_type(mode: libc::mode_t, ifmt: libc::mode_t) -> bool {
    mode & libc::S_IFMT == ifmt
}

/// The name through which the kernel reaches `fd` itself, `/proc/self/fd/N` (followed with
/// `name` appended when given): a Unix socket address that needs no second lookup of the
/// caller's path. `None` when /proc is not mounted (in a jail without it).
pub(crate) fn proc_fd_path(fd: &OwnedFd, name: Option<&CStr>) -> Option<Vec<u8>> {
    let mut path = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if !Path::new(std::ffi::OsStr::from_bytes(&path)).exists() {
        return None;
    }
    if let Some(name) = name {
        path.push(b'/');
        path.extend_from_slice(name.to_bytes());
    }
    Some(path)
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}
