//! Unix socket paths: the API socket, the vsock listener and the `<uds>_PORT` sockets the
//! guest's connections are forwarded to.
//!
//! Binding never takes a path from someone else: a live socket there (a connect succeeds or
//! its backlog is full) is "in use"; something that is not a socket is refused and left
//! alone; only a socket nobody answers on (left by a dead process) is removed. The new socket
//! gets its mode (0600, or 0660 with a group) *before* `listen`, and until `listen` nobody can
//! connect, so there is no moment when others can reach it whatever the umask. The
//! [`BoundSocket`] guard removes the path on drop only while it still names the inode bound.
//!
//! Paths are reached without symbolic links: the directory through openat2
//! `RESOLVE_NO_SYMLINKS`, and the kernel is handed `/proc/self/fd/<dir>/<name>` (bind) or
//! `/proc/self/fd/<socket>` (connect), so no second lookup of the caller's path happens. When
//! /proc is not mounted the original path is used after the same checks, which leaves a
//! window between check and use (docs/threat-model.md).

use crate::resolve::{
    c_path, fstat, is_type, kind_name, lstat_at, open_dir, openat2, proc_fd_path, split,
};
use crate::HostFsError;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Mode of a socket with no group: only its owner may connect.
pub const SOCKET_MODE: u32 = 0o600;
/// Mode of a socket shared with a group.
pub const GROUP_SOCKET_MODE: u32 = 0o660;
/// Pending connections a listener queues.
const BACKLOG: i32 = 128;

/// Who may connect to a socket this crate binds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// `None`: the owner only (0600). `Some(gid)`: the owner and group `gid` (0660).
    pub group: Option<u32>,
}

impl SocketOptions {
    /// The permission bits the socket gets.
    pub fn mode(&self) -> u32 {
        if self.group.is_some() {
            GROUP_SOCKET_MODE
        } else {
            SOCKET_MODE
        }
    }
}

/// The path of a socket this process bound. Dropping it unlinks the path, but only if the
/// entry there is still the socket inode created by the bind: a file put in its place since
/// (by a user, or by another wisp that took over a path we no longer serve) is left alone.
#[derive(Debug)]
pub struct BoundSocket {
    dir: OwnedFd,
    name: CString,
    path: PathBuf,
    /// An `O_PATH` descriptor on the socket inode, kept so that the inode outlives any unlink.
    _inode: OwnedFd,
    dev: u64,
    ino: u64,
}

impl BoundSocket {
    /// The path as given to [`bind_listener`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path still names the socket we bound.
    pub fn still_ours(&self) -> bool {
        matches!(
            lstat_at(&self.dir, &self.name),
            Ok(Some(st)) if is_type(st.st_mode, libc::S_IFSOCK)
                && (st.st_dev, st.st_ino) == (self.dev, self.ino)
        )
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if !self.still_ours() {
            log::debug!(
                "{} no longer names our socket; leaving it",
                self.path.display()
            );
            return;
        }
        // SAFETY: `dir` is an open directory descriptor and `name` a C string.
        if unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.name.as_ptr(), 0) } < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOENT) {
                log::warn!("cannot remove socket {}: {err}", self.path.display());
            }
        }
    }
}

/// The kind of Unix socket to bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketType {
    /// `SOCK_STREAM` (the API socket, vsock).
    Stream,
    /// `SOCK_SEQPACKET` (wispd's control socket).
    Seqpacket,
}

impl SocketType {
    fn raw(self) -> i32 {
        match self {
            SocketType::Stream => libc::SOCK_STREAM,
            SocketType::Seqpacket => libc::SOCK_SEQPACKET,
        }
    }
}

/// Binds and listens on the stream socket `path` (see the module docs for what is refused and
/// what is removed). The listener is blocking; the guard removes the path on drop.
pub fn bind_listener(
    path: &Path,
    opts: &SocketOptions,
) -> Result<(UnixListener, BoundSocket), HostFsError> {
    let (fd, guard) = bind_socket(path, opts, SocketType::Stream)?;
    Ok((UnixListener::from(fd), guard))
}

/// [`bind_listener`] for any [`SocketType`]: a listening, blocking, close-on-exec socket.
pub fn bind_socket(
    path: &Path,
    opts: &SocketOptions,
    ty: SocketType,
) -> Result<(OwnedFd, BoundSocket), HostFsError> {
    let (dir_name, name) = split(path)?;
    let dir = open_dir(&dir_name)?;
    clear_stale(path, &dir, &name, ty)?;
    let addr_path = proc_fd_path(&dir, Some(&name)).unwrap_or_else(|| path_bytes(path));
    let addr = SocketAddr::new(&addr_path)?;
    let sock = new_socket(ty.raw(), false)?;
    // SAFETY: `addr` is an initialised sockaddr_un of length `addr.len`; bind(2) only reads it.
    if unsafe { libc::bind(sock.as_raw_fd(), addr.as_ptr(), addr.len) } < 0 {
        return Err(HostFsError::from_io("bind", io::Error::last_os_error()));
    }
    // Hold the inode we created: while this descriptor is open the inode cannot be freed, so
    // its number cannot be handed to a file created after ours is gone, and (dev, ino) stays
    // a true identity for the drop-time comparison.
    let inode = openat2(dir.as_raw_fd(), &name, libc::O_PATH, 0)?;
    let created = fstat(&inode)?;
    if !is_type(created.st_mode, libc::S_IFSOCK) {
        return Err(HostFsError::Replaced);
    }
    let guard = BoundSocket {
        dir,
        name,
        path: path.to_path_buf(),
        _inode: inode,
        dev: created.st_dev,
        ino: created.st_ino,
    };
    // From here an error drops `guard`, which removes the half-made socket.
    restrict(&guard, opts)?;
    if !guard.still_ours() {
        return Err(HostFsError::Replaced);
    }
    // SAFETY: listen(2) on our bound socket; no pointers.
    if unsafe { libc::listen(sock.as_raw_fd(), BACKLOG) } < 0 {
        return Err(HostFsError::from_io("listen", io::Error::last_os_error()));
    }
    Ok((sock, guard))
}

/// Checks that [`bind_listener`] could bind `path` as far as its type goes: the directory is
/// reached without symbolic links and whatever is at the path is a socket (whether it is
/// live is decided at bind time).
pub fn check_bindable(path: &Path) -> Result<(), HostFsError> {
    let (dir_name, name) = split(path)?;
    let dir = open_dir(&dir_name)?;
    match lstat_at(&dir, &name)? {
        Some(st) if !is_type(st.st_mode, libc::S_IFSOCK) => Err(HostFsError::NotASocket {
            found: kind_name(st.st_mode),
        }),
        _ => Ok(()),
    }
}

/// Connects a stream to the listening socket `path`, which must be a socket reached without
/// symbolic links. With `nonblocking`, a listener whose backlog is full answers EAGAIN
/// instead of parking the caller until the other side calls accept().
pub fn connect_stream(path: &Path, nonblocking: bool) -> Result<UnixStream, HostFsError> {
    connect_typed(path, libc::SOCK_STREAM, nonblocking).map(UnixStream::from)
}

fn connect_typed(path: &Path, ty: i32, nonblocking: bool) -> Result<OwnedFd, HostFsError> {
    let target = open_socket_inode(path)?;
    let addr_path = proc_fd_path(&target, None).unwrap_or_else(|| path_bytes(path));
    let addr = SocketAddr::new(&addr_path)?;
    let sock = new_socket(ty, nonblocking)?;
    // SAFETY: `addr` is an initialised sockaddr_un of length `addr.len`; connect(2) only
    // reads it.
    if unsafe { libc::connect(sock.as_raw_fd(), addr.as_ptr(), addr.len) } < 0 {
        return Err(HostFsError::from_io("connect", io::Error::last_os_error()));
    }
    Ok(sock)
}

/// An `O_PATH` descriptor on the socket file `path`, refusing links and other file types.
fn open_socket_inode(path: &Path) -> Result<OwnedFd, HostFsError> {
    let fd = openat2(libc::AT_FDCWD, &c_path(path)?, libc::O_PATH, 0)?;
    let st = fstat(&fd)?;
    if !is_type(st.st_mode, libc::S_IFSOCK) {
        return Err(HostFsError::WrongType {
            found: kind_name(st.st_mode),
            wanted: "a socket",
        });
    }
    Ok(fd)
}

/// Makes room for a bind at `dir`/`name`: nothing there is fine, a socket nobody answers on is
/// removed, anything else is an error and stays.
fn clear_stale(path: &Path, dir: &OwnedFd, name: &CStr, ty: SocketType) -> Result<(), HostFsError> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if !is_type(st.st_mode, libc::S_IFSOCK) {
        return Err(HostFsError::NotASocket {
            found: kind_name(st.st_mode),
        });
    }
    match connect_typed(path, ty.raw(), true) {
        Ok(_) => return Err(HostFsError::SocketInUse),
        Err(e) => match e.raw_os_error() {
            // Nobody listens: the socket file outlived its process.
            Some(libc::ECONNREFUSED) => {}
            // Backlog full, or a listener of another socket type: alive either way.
            Some(libc::EAGAIN) | Some(libc::EPROTOTYPE) => return Err(HostFsError::SocketInUse),
            // Gone since the stat: the path is free.
            Some(libc::ENOENT) => return Ok(()),
            _ => return Err(e),
        },
    }
    log::info!("removing stale socket {}", path.display());
    // SAFETY: `dir` is an open directory descriptor and `name` a C string.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOENT) {
            return Err(HostFsError::Io {
                op: "unlink the stale socket",
                err,
            });
        }
    }
    Ok(())
}

/// Gives the freshly bound socket its group and mode, on the entry itself (never through a
/// link swapped in meanwhile, where the kernel offers that: fchmodat2, Linux 6.6+).
fn restrict(sock: &BoundSocket, opts: &SocketOptions) -> Result<(), HostFsError> {
    let (dir, name) = (sock.dir.as_raw_fd(), sock.name.as_ptr());
    if let Some(gid) = opts.group {
        // SAFETY: `dir` is an open directory descriptor, `name` a C string; uid -1 keeps the
        // owner.
        let rc = unsafe { libc::fchownat(dir, name, u32::MAX, gid, libc::AT_SYMLINK_NOFOLLOW) };
        if rc < 0 {
            return Err(HostFsError::from_io("chown", io::Error::last_os_error()));
        }
    }
    let mode = opts.mode();
    // SAFETY: fchmodat2(dirfd, name, mode, flags): integer arguments and a C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir,
            name,
            mode,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(HostFsError::from_io("chmod", err));
    }
    // SAFETY: as above; before Linux 6.6 fchmodat has no AT_SYMLINK_NOFOLLOW.
    if unsafe { libc::fchmodat(dir, name, mode, 0) } < 0 {
        return Err(HostFsError::from_io("chmod", io::Error::last_os_error()));
    }
    Ok(())
}

/// A new `AF_UNIX` socket of type `ty`, close-on-exec.
fn new_socket(ty: i32, nonblocking: bool) -> Result<OwnedFd, HostFsError> {
    let nb = if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd: RawFd = unsafe { libc::socket(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC | nb, 0) };
    if fd < 0 {
        return Err(HostFsError::from_io("socket", io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn path_bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

/// A filled-in `sockaddr_un` for a path.
struct SocketAddr {
    addr: libc::sockaddr_un,
    len: libc::socklen_t,
}

impl SocketAddr {
    fn new(path: &[u8]) -> Result<Self, HostFsError> {
        // SAFETY: sockaddr_un is plain old data; all-zero is a valid (empty) address.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        // The path and its terminating NUL must fit.
        if path.len() >= addr.sun_path.len() {
            return Err(HostFsError::NameTooLong {
                len: path.len() + 1,
                max: addr.sun_path.len(),
            });
        }
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (dst, src) in addr.sun_path.iter_mut().zip(path) {
            *dst = *src as libc::c_char;
        }
        let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + path.len() + 1;
        let len = libc::socklen_t::try_from(len).map_err(|_| HostFsError::NameTooLong {
            len: path.len() + 1,
            max: addr.sun_path.len(),
        })?;
        Ok(SocketAddr { addr, len })
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.addr as *const libc::sockaddr_un).cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    #[test]
    fn a_new_socket_is_owner_only_and_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let (listener, guard) = bind_listener(&path, &SocketOptions::default()).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, SOCKET_MODE);
        let mut client = connect_stream(&path, false).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        drop(guard);
        assert!(!path.exists(), "the guard removes its own socket");
    }

    #[test]
    fn a_group_socket_gets_the_group_and_0660() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sock");
        // SAFETY: getgid(2) cannot fail.
        let gid = unsafe { libc::getgid() };
        let opts = SocketOptions { group: Some(gid) };
        let (_l, _g) = bind_listener(&path, &opts).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, GROUP_SOCKET_MODE);
        assert_eq!(meta.gid(), gid);
    }

    #[test]
    fn a_live_socket_is_in_use_and_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.sock");
        let theirs = UnixListener::bind(&path).unwrap();
        let err = bind_listener(&path, &SocketOptions::default()).unwrap_err();
        assert!(matches!(err, HostFsError::SocketInUse), "{err}");
        // Our probe connection is queued first; then a real client still gets through.
        theirs.accept().unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        let (mut server, _) = theirs.accept().unwrap();
        client.write_all(b"ok").unwrap();
        let mut got = [0u8; 2];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ok");
    }

    #[test]
    fn a_stale_socket_is_replaced_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        drop(UnixListener::bind(&path).unwrap());
        let (_l, _g) = bind_listener(&path, &SocketOptions::default()).unwrap();
        connect_stream(&path, true).unwrap();

        let file = dir.path().join("file");
        std::fs::write(&file, b"keep").unwrap();
        let err = bind_listener(&file, &SocketOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                HostFsError::NotASocket {
                    found: "a regular file"
                }
            ),
            "{err}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
        let link = dir.path().join("link");
        symlink(&file, &link).unwrap();
        let err = bind_listener(&link, &SocketOptions::default()).unwrap_err();
        assert!(matches!(err, HostFsError::NotASocket { .. }), "{err}");
        assert!(std::fs::symlink_metadata(&link).is_ok());
    }

    #[test]
    fn seqpacket_sockets_get_the_same_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wispd.sock");
        let opts = SocketOptions::default();
        let (fd, guard) = bind_socket(&path, &opts, SocketType::Seqpacket).unwrap();
        let mode = std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, SOCKET_MODE);
        let err = bind_socket(&path, &opts, SocketType::Seqpacket).unwrap_err();
        assert!(matches!(err, HostFsError::SocketInUse), "{err}");
        // A stream bind over a live seqpacket listener is refused too (EPROTOTYPE: alive).
        let err = bind_listener(&path, &opts).unwrap_err();
        assert!(matches!(err, HostFsError::SocketInUse), "{err}");
        drop(fd);
        // Closed listener: its file is stale and a new bind replaces it.
        let (_fd2, _g2) = bind_socket(&path, &opts, SocketType::Seqpacket).unwrap();
        drop(guard);
        assert!(
            path.exists(),
            "the old guard does not remove the new socket"
        );
    }

    #[test]
    fn the_guard_leaves_a_file_that_replaced_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let (_l, guard) = bind_listener(&path, &SocketOptions::default()).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        assert!(!guard.still_ours());
        drop(guard);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    }

    #[test]
    fn connect_refuses_links_and_non_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.sock");
        let _l = UnixListener::bind(&real).unwrap();
        let link = dir.path().join("link.sock");
        symlink(&real, &link).unwrap();
        let err = connect_stream(&link, true).unwrap_err();
        assert!(matches!(err, HostFsError::Symlink), "{err}");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let _l2 = UnixListener::bind(sub.join("s")).unwrap();
        symlink(&sub, dir.path().join("via")).unwrap();
        let err = connect_stream(&dir.path().join("via/s"), true).unwrap_err();
        assert!(matches!(err, HostFsError::Symlink), "{err}");
        let err = connect_stream(dir.path(), true).unwrap_err();
        assert!(
            matches!(
                err,
                HostFsError::WrongType {
                    found: "a directory",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_long_directory_is_fine_when_the_name_is_short() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().to_path_buf();
        for _ in 0..6 {
            deep.push("a-directory-name-of-some-length");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("s");
        assert!(path.as_os_str().len() > 108);
        let (listener, _g) = bind_listener(&path, &SocketOptions::default()).unwrap();
        connect_stream(&path, false).unwrap();
        listener.accept().unwrap();
    }
}
