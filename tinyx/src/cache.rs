//! The artifact cache: `$WISP_CACHE/tinyx` (default `~/.cache/wisp/tinyx`).
//!
//! Entries are directories named by a content hash and appear atomically: they are
//! written under a temporary name and renamed into place, so a failed or interrupted
//! build never leaves a half-written entry. Builds take an exclusive `flock` on
//! `tinyx/lock`, so concurrent tests and CLI runs build once and share the result.

use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bump when the recipe changes in a way that changes artifacts for the same inputs.
const RECIPE_VERSION: &str = "tinyx-recipe-1";

/// Errors managing the cache directory.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot use cache directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot publish cache entry {path}: {source}")]
    Publish {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("neither WISP_CACHE nor HOME is set: no place for the cache")]
    NoHome,
}

/// `$WISP_CACHE/tinyx`, created if missing.
pub fn tinyx_dir() -> Result<PathBuf, CacheError> {
    let root = match std::env::var_os("WISP_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home = std::env::var_os("HOME").ok_or(CacheError::NoHome)?;
            PathBuf::from(home).join(".cache").join("wisp")
        }
    };
    let dir = root.join("tinyx");
    std::fs::create_dir_all(&dir).map_err(|source| CacheError::Dir {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// A short, stable hash of the recipe version and the given inputs (each
/// length-prefixed, so that moving bytes between inputs changes the hash).
pub fn content_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(RECIPE_VERSION.as_bytes());
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An exclusive lock on the cache, released on drop.
pub struct CacheLock {
    _file: File,
}

/// Takes the cache-wide build lock (blocking while another process builds).
pub fn lock(dir: &Path) -> Result<CacheLock, CacheError> {
    let path = dir.join("lock");
    let lock_err = |source| CacheError::Lock {
        path: path.clone(),
        source,
    };
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(lock_err)?;
    file.lock().map_err(lock_err)?;
    Ok(CacheLock { _file: file })
}

/// A fresh staging directory next to `entry` (same filesystem, so rename is atomic).
pub fn staging_dir(entry: &Path) -> Result<PathBuf, CacheError> {
    let name = entry
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = entry.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|source| CacheError::Dir {
        path: tmp.clone(),
        source,
    })?;
    Ok(tmp)
}

/// Moves a completed staging directory into place as `entry`.
pub fn publish(staging: &Path, entry: &Path) -> Result<(), CacheError> {
    if entry.exists() {
        // Another builder finished first; its entry has the same content.
        let _ = std::fs::remove_dir_all(staging);
        return Ok(());
    }
    std::fs::rename(staging, entry).map_err(|source| CacheError::Publish {
        path: entry.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_input_and_its_boundaries() {
        let a = content_hash(&[b"6.12", b"CONFIG_A=y\n"]);
        assert_eq!(a, content_hash(&[b"6.12", b"CONFIG_A=y\n"]));
        assert_eq!(a.len(), 16);
        assert_ne!(a, content_hash(&[b"6.13", b"CONFIG_A=y\n"]));
        assert_ne!(a, content_hash(&[b"6.12", b"CONFIG_A=n\n"]));
        assert_ne!(content_hash(&[b"ab", b"c"]), content_hash(&[b"a", b"bc"]));
    }

    #[test]
    fn staged_entry_appears_only_when_published() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("kernel-x");
        let tmp = staging_dir(&entry).unwrap();
        std::fs::write(tmp.join("vmlinux"), b"k").unwrap();
        assert!(!entry.exists());
        publish(&tmp, &entry).unwrap();
        assert_eq!(std::fs::read(entry.join("vmlinux")).unwrap(), b"k");
        assert!(!tmp.exists());
        // A second publisher of the same entry leaves the first in place.
        let tmp2 = staging_dir(&entry).unwrap();
        std::fs::write(tmp2.join("vmlinux"), b"other").unwrap();
        publish(&tmp2, &entry).unwrap();
        assert_eq!(std::fs::read(entry.join("vmlinux")).unwrap(), b"k");
        assert!(!tmp2.exists());
    }
}
