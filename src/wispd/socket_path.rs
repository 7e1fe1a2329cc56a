//! The path wispd serves on. Claiming it never deletes what is not a dead socket: a regular file,
//! a directory, a symbolic link or a socket something still answers on is refused. Releasing it
//! removes it only if it is still the socket wispd bound, so a socket another wispd bound there
//! since is left alone. wispd holds an O_PATH fd on its socket's inode meanwhile: while it is
//! open the inode number cannot be given to another file, so comparing device and inode is exact.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use wisp_api::seqpacket::{SeqpacketConn, SeqpacketListener};

#[derive(Debug, thiserror::Error)]
pub enum SocketPathError {
    #[error("{} exists and is {kind}, not a socket; refusing to replace it", path.display())]
    NotASocket { path: PathBuf, kind: &'static str },
    #[error("{} is in use: something answers on it (another wispd?)", path.display())]
    InUse { path: PathBuf },
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The socket inode wispd bound at `path`.
pub struct ClaimedSocket {
    path: PathBuf,
    /// O_PATH: pins the inode (and so its number) without being able to read or write it.
    inode: File,
}

fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else {
        "a device"
    }
}

/// Binds a listener at `path`. Only a socket nobody answers on (ECONNREFUSED: the wispd that
/// bound it is gone) is removed to make room.
pub fn claim(path: &Path) -> Result<(SeqpacketListener, ClaimedSocket), SocketPathError> {
    let bind_error = |source| SocketPathError::Bind {
        path: path.to_path_buf(),
        source,
    };
    // Twice at most: once more after removing a dead socket.
    for _ in 0..2 {
        match SeqpacketListener::bind(path) {
            Ok(listener) => {
                let inode = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
                    .open(path)
                    .map_err(bind_error)?;
                let claimed = ClaimedSocket {
                    path: path.to_path_buf(),
                    inode,
                };
                return Ok((listener, claimed));
            }
            Err(e) if e.kind() == ErrorKind::AddrInUse => {}
            Err(e) => return Err(bind_error(e)),
        }
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            // Removed meanwhile: try again.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(bind_error(e)),
        };
        if !meta.file_type().is_socket() {
            return Err(SocketPathError::NotASocket {
                path: path.to_path_buf(),
                kind: kind_of(meta.file_type()),
            });
        }
        match SeqpacketConn::connect(path) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                log::info!("wispd: removing the dead socket {}", path.display());
                std::fs::remove_file(path).map_err(bind_error)?;
            }
            // It answered, or is a live socket of another type (EPROTOTYPE), or is busy.
            _ => {
                return Err(SocketPathError::InUse {
                    path: path.to_path_buf(),
                })
            }
        }
    }
    Err(SocketPathError::InUse {
        path: path.to_path_buf(),
    })
}

impl ClaimedSocket {
    /// Removes the socket if `path` still names the inode wispd bound.
    pub fn release(self) {
        let ours = self.inode.metadata();
        match (std::fs::symlink_metadata(&self.path), ours) {
            (Ok(now), Ok(ours)) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::warn!("wispd: cannot remove {}: {e}", self.path.display());
                }
            }
            _ => log::info!(
                "wispd: {} is no longer our socket; left alone",
                self.path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wispd-sock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_regular_file_or_a_live_socket_is_refused_and_a_dead_one_replaced() {
        let dir = scratch("claim");
        let file = dir.join("file");
        std::fs::write(&file, b"keep me").unwrap();
        let err = claim(&file).err().unwrap();
        assert!(matches!(err, SocketPathError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

        let sock = dir.join("sock");
        let (live, first) = claim(&sock).unwrap();
        let err = claim(&sock).err().unwrap();
        assert!(matches!(err, SocketPathError::InUse { .. }), "{err}");
        drop(live);
        // Dead now: a new claim replaces it, and the first owner's release leaves it alone.
        let (_listener, second) = claim(&sock).unwrap();
        first.release();
        assert!(sock.exists());
        second.release();
        assert!(!sock.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
