//! The VM state file: a fixed header, then a postcard-encoded payload (docs/snapshot-format.md).
//!
//! ```text
//! offset  size  field
//!      0     8  magic "WISPSNAP"
//!      8     4  format version (u32 LE), FORMAT_VERSION
//!     12     4  CRC-32 (IEEE) of the payload (u32 LE)
//!     16     8  payload length in bytes (u64 LE)
//!     24     n  payload: postcard encoding of `T`
//! ```
//!
//! A file is read whole and checked (magic, version, length, CRC) before a single byte of the
//! payload is decoded, so a file from another version, a truncated or a corrupt one is refused
//! with its reason and nothing is half-loaded.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// "WISPSNAP".
pub const MAGIC: [u8; 8] = *b"WISPSNAP";
/// Bumped whenever the payload's layout changes; older or newer files are refused.
pub const FORMAT_VERSION: u32 = 2;
/// Header size in bytes.
pub const HEADER_LEN: usize = 24;
/// A state file is a few hundred KiB at most (vCPU states, device registers); anything much
/// larger is not one, and is refused before it is read into memory.
pub const MAX_PAYLOAD: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read the snapshot file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the snapshot file {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Wisp snapshot (bad magic)")]
    Magic { path: String },
    #[error(
        "{path} is a snapshot of format version {found}; this Wisp reads version {FORMAT_VERSION}"
    )]
    Version { path: String, found: u32 },
    #[error("{path} is truncated: {have} bytes of payload, the header says {want}")]
    Truncated { path: String, have: u64, want: u64 },
    #[error("{path} has {extra} bytes after its payload")]
    Trailing { path: String, extra: u64 },
    #[error("{path} is corrupt: CRC-32 {found:#010x}, the header says {want:#010x}")]
    Checksum { path: String, found: u32, want: u32 },
    #[error("{path}: the payload does not decode: {source}")]
    Decode {
        path: String,
        #[source]
        source: postcard::Error,
    },
    #[error("cannot encode the snapshot: {0}")]
    Encode(#[source] postcard::Error),
}

/// Encodes `value` with its header.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FormatError> {
    let payload = postcard::to_stdvec(value).map_err(FormatError::Encode)?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Checks and decodes a whole file's bytes; `path` only names it in errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], path: &str) -> Result<T, FormatError> {
    let path = path.to_string();
    let field = |at: usize, len: usize| bytes.get(at..at + len);
    let (Some(magic), Some(version), Some(crc), Some(len)) =
        (field(0, 8), field(8, 4), field(12, 4), field(16, 8))
    else {
        return match field(0, 8) {
            Some(m) if m != MAGIC => Err(FormatError::Magic { path }),
            _ => Err(FormatError::Truncated {
                path,
                have: 0,
                want: HEADER_LEN as u64,
            }),
        };
    };
    if magic != MAGIC {
        return Err(FormatError::Magic { path });
    }
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let found = le32(version);
    if found != FORMAT_VERSION {
        return Err(FormatError::Version { path, found });
    }
    let want_crc = le32(crc);
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(len);
    let want = u64::from_le_bytes(len8);
    let payload = &bytes[HEADER_LEN..];
    let have = payload.len() as u64;
    if have < want {
        return Err(FormatError::Truncated { path, have, want });
    }
    if have > want {
        return Err(FormatError::Trailing {
            path,
            extra: have - want,
        });
    }
    let found = crc32fast::hash(payload);
    if found != want_crc {
        return Err(FormatError::Checksum {
            path,
            found,
            want: want_crc,
        });
    }
    postcard::from_bytes(payload).map_err(|source| FormatError::Decode { path, source })
}

/// Writes `value` to `path` (created or truncated, then synced).
pub fn write_file<T: Serialize>(path: &Path, value: &T) -> Result<u64, FormatError> {
    let bytes = encode(value)?;
    let err = |source| FormatError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(err)?;
    file.write_all(&bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    Ok(bytes.len() as u64)
}

/// Reads and decodes the state file at `path`.
pub fn read_file<T: DeserializeOwned>(path: &Path) -> Result<T, FormatError> {
    let name = path.display().to_string();
    let err = |source| FormatError::Read {
        path: name.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if meta.len() > MAX_PAYLOAD + HEADER_LEN as u64 {
        return Err(FormatError::Read {
            path: name.clone(),
            source: std::io::Error::other(format!("{} bytes is too large", meta.len())),
        });
    }
    let bytes = std::fs::read(path).map_err(err)?;
    decode(&bytes, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        name: String,
        words: Vec<u64>,
    }

    fn sample() -> Sample {
        Sample {
            name: "vm".into(),
            words: vec![1, 2, u64::MAX],
        }
    }

    #[test]
    fn a_state_round_trips() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(&bytes[..8], b"WISPSNAP");
        assert_eq!(decode::<Sample>(&bytes, "f").unwrap(), sample());
    }

    #[test]
    fn another_version_is_refused_by_name() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
        let e = decode::<Sample>(&bytes, "f").unwrap_err();
        assert!(matches!(e, FormatError::Version { found: 7, .. }), "{e}");
        assert!(e.to_string().contains("version 7"), "{e}");
    }

    #[test]
    fn truncation_anywhere_is_refused() {
        let bytes = encode(&sample()).unwrap();
        for cut in 0..bytes.len() {
            let e = decode::<Sample>(&bytes[..cut], "f").unwrap_err();
            assert!(matches!(e, FormatError::Truncated { .. }), "cut {cut}: {e}");
        }
    }

    #[test]
    fn a_flipped_bit_is_refused_by_the_checksum() {
        let bytes = encode(&sample()).unwrap();
        for at in HEADER_LEN..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            let e = decode::<Sample>(&bad, "f").unwrap_err();
            assert!(matches!(e, FormatError::Checksum { .. }), "byte {at}: {e}");
        }
    }

    #[test]
    fn other_files_are_refused() {
        let e = decode::<Sample>(b"#!/bin/sh\necho this is not a snapshot\n", "f").unwrap_err();
        assert!(matches!(e, FormatError::Magic { .. }), "{e}");
        let mut long = encode(&sample()).unwrap();
        long.push(0);
        assert!(matches!(
            decode::<Sample>(&long, "f"),
            Err(FormatError::Trailing { extra: 1, .. })
        ));
    }
}
