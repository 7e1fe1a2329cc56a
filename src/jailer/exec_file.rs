//! The exec file: an executable regular file, and, when it is dynamically linked, one whose
//! loader the jail will have. A jail holds only what it is given, so a dynamic binary without
//! its loader would fail at exec with a bare "No such file or directory"; this says why first.

use crate::cli::Bind;
use crate::error::JailError;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// ELF program header type of the interpreter (loader) path (ELF spec, "Program Header").
const PT_INTERP: u32 = 3;

/// Checks the exec file and returns its name (the binary's name inside the jail).
pub fn check(path: &Path, binds: &[Bind]) -> Result<OsString, JailError> {
    let meta = std::fs::metadata(path).map_err(|err| JailError::ExecFile {
        path: path.to_path_buf(),
        err,
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(JailError::ExecNotExecutable(path.to_path_buf()));
    }
    let name = path
        .file_name()
        .map(|n| n.to_os_string())
        .ok_or_else(|| JailError::ExecNotExecutable(path.to_path_buf()))?;
    let head = read_head(path).map_err(|err| JailError::ExecFile {
        path: path.to_path_buf(),
        err,
    })?;
    if let Some(loader) = interpreter(&head) {
        let provided = binds.iter().any(|b| {
            Path::new("/").join(&b.target).starts_with(&loader)
                || loader.starts_with(Path::new("/").join(&b.target))
        });
        if !provided {
            return Err(JailError::DynamicExec {
                path: path.to_path_buf(),
                loader,
            });
        }
    }
    Ok(name)
}

/// How much of the exec file is read to find its loader: linkers put the program headers and
/// the interpreter path right after the ELF header, within the first page.
const HEAD_BYTES: u64 = 64 * 1024;

/// The first [`HEAD_BYTES`] of the file (the whole file when smaller).
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(HEAD_BYTES)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// The loader path of a 64-bit little-endian ELF executable, if it names one.
fn interpreter(elf: &[u8]) -> Option<PathBuf> {
    if elf.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| {
        let v = u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?);
        usize::try_from(v).ok()
    };
    // ELF-64 header: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    let (phoff, phentsize, phnum) = (
        u64_at(0x20)?,
        usize::from(u16_at(0x36)?),
        usize::from(u16_at(0x38)?),
    );
    (0..phnum).find_map(|i| {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        // Program header: p_type at 0, p_offset at 8, p_filesz at 32.
        if u32_at(ph)? != PT_INTERP {
            return None;
        }
        let (offset, size) = (u64_at(ph + 8)?, u64_at(ph + 32)?);
        let bytes = elf.get(offset..offset.checked_add(size)?)?;
        let bytes = bytes.split(|&b| b == 0).next()?;
        Some(PathBuf::from(std::str::from_utf8(bytes).ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_names_its_loader_and_other_files_name_none() {
        let this = std::fs::read(std::env::current_exe().unwrap_or_default()).unwrap_or_default();
        // Test binaries are dynamically linked (no crt-static in test builds).
        let loader = interpreter(&this);
        assert!(loader.is_some_and(|l| l.is_absolute() && l.to_string_lossy().contains("ld-")));
        assert_eq!(interpreter(b"#!/bin/sh\n"), None);
        assert_eq!(interpreter(b"\x7fELF\x02\x01"), None);
    }
}
