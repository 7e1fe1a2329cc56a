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
    /// New host tap devices for the snapshot's interfaces (by `iface_id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
    /// A new host socket path for the snapshot's vsock device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
    /// Firecracker's: advance kvmclock by the wall-clock time since the snapshot. Refused
    /// when true: Wisp's restore puts the saved clock back as it was.
    #[serde(default)]
    pub clock_realtime: bool,
    /// Firecracker's huge page choice for the restored guest; only `Snapshot` (the default:
    /// as the snapshot's configuration says) is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<LoadHugePages>,
}

/// One entry of `network_overrides`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// `vsock_override`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    pub uds_path: PathBuf,
}

/// `huge_pages` of `PUT /snapshot/load`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadHugePages {
    Snapshot,
    None,
    Transparent,
    #[serde(rename = "2M")]
    Huge2M,
}

/// The 400 text for a load field Wisp refuses on purpose.
fn not_supported(what: &str, reason: &str) -> String {
    format!("{what} is not supported by Wisp: {reason}")
}

impl SnapshotLoadParams {
    /// Whether the restored VM logs dirty pages (either spelling).
    pub fn dirty_pages(&self) -> bool {
        self.track_dirty_pages || self.enable_diff_snapshots
    }

    /// The memory file: `mem_backend` (type File) or `mem_file_path`, exactly one.
    pub fn mem_file(&self) -> Result<&PathBuf, String> {
        if self.clock_realtime {
            return Err(not_supported(
                "clock_realtime",
                "kvmclock resumes from its saved value; the guest steps its clock itself",
            ));
        }
        if let Some(pages) = self.huge_pages.filter(|p| *p != LoadHugePages::Snapshot) {
            return Err(not_supported(
                &format!("huge_pages {pages:?} on load"),
                "the restored guest's memory is the memory file mapped privately, with the \
                 snapshot's own huge_pages; use Snapshot or leave it out",
            ));
        }
        match (&self.mem_backend, &self.mem_file_path) {
            (Some(_), Some(_)) => Err("give either mem_backend or mem_file_path, not both".into()),
            (None, None) => Err("mem_backend (or mem_file_path) is required".into()),
            (Some(b), None) if b.backend_type == MemBackendType::Uffd => Err(not_supported(
                "the Uffd memory backend",
                "guest memory is restored by mapping the memory file; use File",
            )),
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
    fn firecracker_load_fields_parse_and_refusals_name_the_field() {
        let p: SnapshotLoadParams = serde_json::from_str(
            r#"{"snapshot_path":"s","mem_file_path":"m","network_overrides":[{"iface_id":"eth0","host_dev_name":"tap1"}],"vsock_override":{"uds_path":"v"},"clock_realtime":false,"huge_pages":"Snapshot"}"#,
        )
        .unwrap();
        assert_eq!(p.network_overrides[0].host_dev_name, "tap1");
        assert_eq!(
            p.vsock_override.as_ref().unwrap().uds_path,
            PathBuf::from("v")
        );
        assert!(p.mem_file().is_ok());
        for (field, value) in [("clock_realtime", "true"), ("huge_pages", "\"2M\"")] {
            let body = format!(r#"{{"snapshot_path":"s","mem_file_path":"m","{field}":{value}}}"#);
            let p: SnapshotLoadParams = serde_json::from_str(&body).unwrap();
            let err = p.mem_file().unwrap_err();
            assert!(
                err.contains(field) && err.contains("not supported by Wisp: "),
                "{err}"
            );
        }
    }

    #[test]
    fn create_defaults_to_full() {
        let p: SnapshotCreateParams =
            serde_json::from_str(r#"{"snapshot_path":"s","mem_file_path":"m"}"#).unwrap();
        assert_eq!(p.snapshot_type, SnapshotType::Full);
        assert!(serde_json::from_str::<SnapshotCreateParams>(r#"{"snapshot_path":"s"}"#).is_err());
    }
}
