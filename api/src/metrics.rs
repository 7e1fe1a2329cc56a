//! The metrics file: one JSON line per flush (`FlushMetrics`, the periodic timer, the VM's
//! end), appended to a host file reached without symbolic links. What goes in the line is the
//! VMM's and the HTTP server's business (wisp-http's `ApiMetrics`).

use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors of writing a metrics line.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot serialise metrics: {0}")]
    Serialise(#[source] serde_json::Error),
    #[error("cannot open metrics file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: wisp_hostfs::HostFsError,
    },
    #[error("cannot append metrics to {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Appends `value` as one JSON line to `path` (a regular file, created 0600 if missing, reached
/// without symbolic links): the `FlushMetrics` format. One `write` per line, so a reader
/// following the file never sees half a line from us.
pub fn append_json_line(path: &Path, value: &impl Serialize) -> Result<(), MetricsError> {
    let mut line = serde_json::to_vec(value).map_err(MetricsError::Serialise)?;
    line.push(b'\n');
    let mut file = wisp_hostfs::open_append_create(path).map_err(|source| MetricsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    file.write_all(&line).map_err(|source| MetricsError::Write {
        path: path.to_path_buf(),
        source,
    })
}
