//! Host files: kernel, initrd, config file, drive backing files, log and metrics files.
//!
//! Every open goes in two steps. First an `O_PATH` descriptor (which opens nothing: no FIFO
//! rendezvous, no device driver's `open`) is taken without following any symbolic link and
//! its type checked against the use's [`FileKind`]. Then the real open, non-blocking and
//! again without links, and its `(dev, ino)` compared with the checked one, so a file swapped
//! in between is refused instead of used. `O_NONBLOCK` is cleared once the type is known.

use crate::resolve::{c_path, fstat, is_type, kind_name, open_dir, openat2, split};
use crate::HostFsError;
use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Mode of files this crate creates (log and metrics files): the owner's only.
pub const FILE_CREATE_MODE: u32 = 0o600;

/// Which file types a use accepts; everything else (FIFOs, sockets, directories, character
/// devices) is refused before it is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Kernel, initrd, config, log and metrics files.
    Regular,
    /// A drive's backing store: a regular file or a block device.
    RegularOrBlockDevice,
}

impl FileKind {
    fn allows(self, mode: libc::mode_t) -> bool {
        match self {
            FileKind::Regular => is_type(mode, libc::S_IFREG),
            FileKind::RegularOrBlockDevice => {
                is_type(mode, libc::S_IFREG) || is_type(mode, libc::S_IFBLK)
            }
        }
    }

    fn wanted(self) -> &'static str {
        match self {
            FileKind::Regular => "a regular file",
            FileKind::RegularOrBlockDevice => "a regular file or a block device",
        }
    }
}

/// Opens `path` read-only if it is of kind `kind`.
pub fn open_read(path: &Path, kind: FileKind) -> Result<File, HostFsError> {
    open_checked(&c_path(path)?, kind, libc::O_RDONLY)
}

/// Opens `path` for reading and writing if it is of kind `kind`.
pub fn open_read_write(path: &Path, kind: FileKind) -> Result<File, HostFsError> {
    open_checked(&c_path(path)?, kind, libc::O_RDWR)
}

/// Opens the regular file `path` for appending, creating it with mode 0600 when missing.
pub fn open_append_create(path: &Path) -> Result<File, HostFsError> {
    let c = c_path(path)?;
    let flags = libc::O_WRONLY | libc::O_APPEND;
    // Missing: create it exclusively (never through a link, never over a file that appeared
    // meanwhile). Present, or created by someone else since: the checked open.
    for _ in 0..2 {
        match open_checked(&c, FileKind::Regular, flags) {
            Err(HostFsError::Io { err, .. }) if err.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        let create = flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY;
        match openat2(libc::AT_FDCWD, &c, create, FILE_CREATE_MODE) {
            Ok(fd) => return Ok(File::from(fd)),
            Err(HostFsError::Io { err, .. }) if err.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Err(HostFsError::Replaced)
}

/// Checks, opening nothing but `O_PATH` descriptors, that [`open_append_create`] could open
/// `path`: an existing regular file, or a missing one in an existing directory, with no
/// symbolic link on the way.
pub fn check_appendable(path: &Path) -> Result<(), HostFsError> {
    match openat2(libc::AT_FDCWD, &c_path(path)?, libc::O_PATH, 0) {
        Ok(fd) => {
            let st = fstat(&fd)?;
            if FileKind::Regular.allows(st.st_mode) {
                Ok(())
            } else {
                Err(HostFsError::WrongType {
                    found: kind_name(st.st_mode),
                    wanted: FileKind::Regular.wanted(),
                })
            }
        }
        Err(HostFsError::Io { err, .. }) if err.raw_os_error() == Some(libc::ENOENT) => {
            let (dir, _) = split(path)?;
            open_dir(&dir).map(drop)
        }
        Err(e) => Err(e),
    }
}

/// Reads the whole regular file `path`, refusing one larger than `limit` bytes (a config file
/// must not make us hold gigabytes).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, HostFsError> {
    let file = open_read(path, FileKind::Regular)?;
    let size = file
        .metadata()
        .map_err(|err| HostFsError::Io { op: "fstat", err })?
        .len();
    if size > limit {
        return Err(HostFsError::TooLarge { limit });
    }
    // The size can grow after the fstat: read at most one byte past the limit to tell.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|err| HostFsError::Io { op: "read", err })?;
    if bytes.len() as u64 > limit {
        return Err(HostFsError::TooLarge { limit });
    }
    Ok(bytes)
}

/// The two-step open described in the module docs; `access` is `O_RDONLY`, `O_RDWR` or
/// `O_WRONLY | O_APPEND`.
fn open_checked(path: &CStr, kind: FileKind, access: i32) -> Result<File, HostFsError> {
    let probe = openat2(libc::AT_FDCWD, path, libc::O_PATH, 0)?;
    let checked = fstat(&probe)?;
    if !kind.allows(checked.st_mode) {
        return Err(HostFsError::WrongType {
            found: kind_name(checked.st_mode),
            wanted: kind.wanted(),
        });
    }
    let flags = access | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW;
    let fd = openat2(libc::AT_FDCWD, path, flags, 0)?;
    let opened = fstat(&fd)?;
    if (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino) {
        return Err(HostFsError::Replaced);
    }
    clear_nonblocking(&fd)?;
    Ok(File::from(fd))
}

/// Drops `O_NONBLOCK`, which was there only so that the open itself could not block.
fn clear_nonblocking(fd: &OwnedFd) -> Result<(), HostFsError> {
    let io_err = |op| HostFsError::Io {
        op,
        err: std::io::Error::last_os_error(),
    };
    // SAFETY: F_GETFL on an open descriptor takes no pointer.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io_err("fcntl(F_GETFL)"));
    }
    // SAFETY: F_SETFL with an integer argument on an open descriptor.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io_err("fcntl(F_SETFL)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mkfifo(path: &Path) {
        let c = c_path(path).unwrap();
        // SAFETY: a valid C string; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_fifo_is_refused_for_every_use_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        for result in [
            open_read(&fifo, FileKind::Regular).map(drop),
            open_read_write(&fifo, FileKind::RegularOrBlockDevice).map(drop),
            open_append_create(&fifo).map(drop),
            read_bounded(&fifo, 1 << 20).map(drop),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(
                    err,
                    HostFsError::WrongType {
                        found: "a FIFO",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn directories_sockets_and_character_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        for (path, found) in [
            (dir.path(), "a directory"),
            (sock.as_path(), "a socket"),
            (Path::new("/dev/null"), "a character device"),
        ] {
            let err = open_read(path, FileKind::RegularOrBlockDevice).unwrap_err();
            assert!(
                matches!(err, HostFsError::WrongType { found: f, .. } if f == found),
                "{err}"
            );
        }
    }

    #[test]
    fn a_symlink_anywhere_in_the_path_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"secret").unwrap();
        let link = dir.path().join("link");
        symlink(&target, &link).unwrap();
        let err = open_append_create(&link).unwrap_err();
        assert!(matches!(err, HostFsError::Symlink), "{err}");
        let real_dir = dir.path().join("real");
        std::fs::create_dir(&real_dir).unwrap();
        std::fs::write(real_dir.join("f"), b"x").unwrap();
        symlink(&real_dir, dir.path().join("via")).unwrap();
        let err = open_read(&dir.path().join("via/f"), FileKind::Regular).unwrap_err();
        assert!(matches!(err, HostFsError::Symlink), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"secret");
    }

    #[test]
    fn append_create_makes_an_owner_only_file_and_appends_to_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        open_append_create(&log).unwrap().write_all(b"a\n").unwrap();
        let mode = std::fs::metadata(&log).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, FILE_CREATE_MODE);
        open_append_create(&log).unwrap().write_all(b"b\n").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"a\nb\n");
        let err = open_append_create(&dir.path().join("no/such/dir/log")).unwrap_err();
        assert!(matches!(err, HostFsError::Io { .. }), "{err}");
    }

    #[test]
    fn opened_files_are_blocking_again_and_writable_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        std::fs::write(&disk, [0u8; 512]).unwrap();
        let file = open_read_write(&disk, FileKind::RegularOrBlockDevice).unwrap();
        // SAFETY: F_GETFL on an open descriptor.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDWR);
        let ro = open_read(&disk, FileKind::Regular).unwrap();
        assert!((&ro).write_all(b"x").is_err());
    }

    #[test]
    fn bounded_reads_refuse_a_file_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("vm.json");
        std::fs::write(&cfg, vec![b' '; 4097]).unwrap();
        assert_eq!(read_bounded(&cfg, 4097).unwrap().len(), 4097);
        let err = read_bounded(&cfg, 4096).unwrap_err();
        assert!(
            matches!(err, HostFsError::TooLarge { limit: 4096 }),
            "{err}"
        );
        assert!(matches!(
            read_bounded(Path::new(""), 1),
            Err(HostFsError::EmptyPath)
        ));
    }
}
