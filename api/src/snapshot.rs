//! Bodies of `PUT /snapshot/create` and `PUT /snapshot/load` (Firecracker's fields), checked
//! before they become actions.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `Full` writes all of guest memory; `Diff` only the pages the guest wrote since the last
/// snapshot (the VM needs `machine-config.track_dirty_pages`), at their offsets in a sparse
/// file meant to be laid over the previous memory file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    #[default]
    Full,
    Diff,
}

/// `PUT /snapshot/create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    #[serde(default)]
    pub snapshot_type: SnapshotType,
    /// Where the VM state file goes.
    pub snapshot_path: PathBuf,
    /// Where guest memory goes.
    pub mem_file_path: PathBuf,
}

/// How guest memory is restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemBackendType {
    /// Map the memory file `MAP_PRIVATE`.
    File,
    /// userfaultfd (refused: not implemented).
    Uffd,
}

/// `mem_backend` of `PUT /snapshot/load`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemBackend {
    pub backend_type: MemBackendType,
    pub backend_path: PathBuf,
}

/// `PUT /snapshot/load`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoadParams {
    pub snapshot_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_backend: Option<MemBackend>,
    /// The older spelling of a File backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_file_path: Option<PathBuf>,
    /// Resume the guest once restored (default: stay Paused).
    #[serde(default)]
    pub resume_vm: bool,
    /// Firecracker's older name of `track_dirty_pages`.
    #[serde(default)]
    pub enable_diff_snapshots: bool,
    /// Log the restored guest's dirty pages, so Diff snapshots can be taken of it (on top
    /// of this memory file).
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Wisp: the VM generation the guest reads on its noxs page; default a random one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_generation: Option<u64>,
    /// Wisp: the host-side vsock socket of the restored VM instead of the saved one (each
    /// clone of one snapshot needs its own: guest connections to host port P then land on
    /// `<vsock_uds_path>_P`). Refused when the snapshot has no vsock device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_uds_path: Option<PathBuf>,
}

impl SnapshotLoadParams {
    /// Whether the restored VM logs dirty pages (either spelling).
    pub fn dirty_pages(&self) -> bool {
        self.track_dirty_pages || self.enable_diff_snapshots
    }

    /// The memory file: `mem_backend` (type File) or `mem_file_path`, exactly one.
    pub fn mem_file(&self) -> Result<&PathBuf, String> {
        match (&self.mem_backend, &self.mem_file_path) {
            (Some(_), Some(_)) => Err("give either mem_backend or mem_file_path, not both".into()),
            (None, None) => Err("mem_backend (or mem_file_path) is required".into()),
            (Some(b), None) if b.backend_type == MemBackendType::Uffd => {
                Err("the Uffd memory backend is not supported; use File".into())
            }
            (Some(b), None) => Ok(&b.backend_path),
            (None, Some(path)) => Ok(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_takes_either_memory_spelling_and_refuses_both_or_none() {
        let new: SnapshotLoadParams = serde_json::from_str(
            r#"{"snapshot_path":"s","mem_backend":{"backend_type":"File","backend_path":"m"},"resume_vm":true}"#,
        )
        .unwrap();
        assert_eq!(new.mem_file().unwrap(), &PathBuf::from("m"));
        assert!(new.resume_vm);
        let old: SnapshotLoadParams =
            serde_json::from_str(r#"{"snapshot_path":"s","mem_file_path":"m"}"#).unwrap();
        assert_eq!(old.mem_file().unwrap(), &PathBuf::from("m"));
        let none: SnapshotLoadParams = serde_json::from_str(r#"{"snapshot_path":"s"}"#).unwrap();
        assert!(none.mem_file().unwrap_err().contains("required"));
        let uffd: SnapshotLoadParams = serde_json::from_str(
            r#"{"snapshot_path":"s","mem_backend":{"backend_type":"Uffd","backend_path":"u"}}"#,
        )
        .unwrap();
        assert!(uffd.mem_file().unwrap_err().contains("Uffd"));
    }

    #[test]
    fn create_defaults_to_full() {
        let p: SnapshotCreateParams =
            serde_json::from_str(r#"{"snapshot_path":"s","mem_file_path":"m"}"#).unwrap();
        assert_eq!(p.snapshot_type, SnapshotType::Full);
        assert!(serde_json::from_str::<SnapshotCreateParams>(r#"{"snapshot_path":"s"}"#).is_err());
    }
}
