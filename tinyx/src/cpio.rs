//! The "newc" cpio archive format, as the kernel's initramfs unpacker reads it
//! (Documentation/driver-api/early-userspace/buffer-format.rst, `init/initramfs.c`).
//!
//! Each entry is a 110-byte ASCII header (`070701` then thirteen 8-digit hex fields),
//! the NUL-terminated name padded to a multiple of 4, then the data padded to a
//! multiple of 4. The archive ends with an entry named `TRAILER!!!`.
//!
//! The writer creates device nodes, directories and symlinks as archive entries, so
//! building an initramfs needs neither root nor `mknod`.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

/// Magic of the newc format (no checksum).
const NEWC_MAGIC: &[u8; 6] = b"070701";
/// Name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";
/// Size of a newc header: 6 magic bytes and 13 fields of 8 hex digits.
const HEADER_LEN: usize = 6 + 13 * 8;

/// File-type bits of `st_mode` (`<sys/stat.h>`).
pub const S_IFMT: u32 = 0o170_000;
/// Regular file.
pub const S_IFREG: u32 = 0o100_000;
/// Directory.
pub const S_IFDIR: u32 = 0o040_000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120_000;
/// Character device.
pub const S_IFCHR: u32 = 0o020_000;

/// Errors reading or writing a cpio archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("cpio I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("cpio entry name {0:?} is empty, absolute after trimming, or contains NUL")]
    BadName(String),
    #[error("cpio entry {name:?}: {len} bytes does not fit the 32-bit size field")]
    TooLarge { name: String, len: usize },
    #[error("cpio header at offset {offset}: bad magic {magic:?} (only newc 070701 is read)")]
    BadMagic { offset: u64, magic: String },
    #[error("cpio header at offset {offset}: field {field} is not 8 hex digits: {text:?}")]
    BadField {
        offset: u64,
        field: &'static str,
        text: String,
    },
    #[error("cpio archive is truncated at offset {offset}: it ends without a {TRAILER} entry")]
    Truncated { offset: u64 },
}

/// Writes a newc archive entry by entry. Parent directories are created on demand
/// so that the kernel unpacker, which does not create them, always finds them.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    dirs: BTreeSet<String>,
    owner: (u32, u32),
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
            dirs: BTreeSet::new(),
            owner: (0, 0),
        }
    }

    /// The (uid, gid) of the entries added from now on (root until set).
    pub fn set_owner(&mut self, uid: u32, gid: u32) {
        self.owner = (uid, gid);
    }

    /// Adds a directory (and any missing parents).
    pub fn add_dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        let name = normalise(path)?;
        self.add_parents(&name)?;
        if self.dirs.insert(name.clone()) {
            self.entry(&name, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])?;
        }
        Ok(())
    }

    /// Adds a regular file with the given contents.
    pub fn add_file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<(), CpioError> {
        let name = normalise(path)?;
        self.add_parents(&name)?;
        self.entry(&name, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// Adds a symbolic link; the target is stored as the entry's data.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        let name = normalise(path)?;
        self.add_parents(&name)?;
        self.entry(&name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Adds a character device node (e.g. `/dev/console`, 5:1).
    pub fn add_char_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let name = normalise(path)?;
        self.add_parents(&name)?;
        self.entry(&name, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.entry(TRAILER, 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn add_parents(&mut self, name: &str) -> Result<(), CpioError> {
        let mut prefix = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.dirs.insert(prefix.clone()) {
                let dir = prefix.clone();
                self.entry(&dir, S_IFDIR | 0o755, 2, (0, 0), &[])?;
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<(), CpioError> {
        let too_large = || CpioError::TooLarge {
            name: name.to_string(),
            len: data.len(),
        };
        let filesize = u32::try_from(data.len()).map_err(|_| too_large())?;
        let namesize = u32::try_from(name.len() + 1).map_err(|_| too_large())?;
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check. mtime 0 keeps images reproducible.
        let fields = [
            ino,
            mode,
            self.owner.0,
            self.owner.1,
            nlink,
            0,
            filesize,
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0,
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        header.extend_from_slice(NEWC_MAGIC);
        for f in fields {
            header.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        self.write(&header)?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<(), CpioError> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.write(&[0u8; 3][..pad])
    }
}

/// Archive names are relative ("bin/sh"); the kernel accepts both, `cpio -t` lists
/// relative names, and "." or empty components are not meaningful.
fn normalise(path: &str) -> Result<String, CpioError> {
    let name = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/");
    if name.is_empty() || name.contains('\0') || name == TRAILER {
        return Err(CpioError::BadName(path.to_string()));
    }
    Ok(name)
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    pub name: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// File contents, or the target of a symlink.
    pub data: Vec<u8>,
}

impl CpioEntry {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
    pub fn is_char_device(&self) -> bool {
        self.mode & S_IFMT == S_IFCHR
    }
}

/// Reads a newc archive (uncompressed; wrap a gzip decoder around compressed ones).
pub struct CpioReader<R: Read> {
    input: R,
    offset: u64,
    done: bool,
}

impl<R: Read> CpioReader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            offset: 0,
            done: false,
        }
    }

    /// Reads every entry up to the trailer.
    pub fn read_all(self) -> Result<Vec<CpioEntry>, CpioError> {
        self.collect()
    }

    /// Reads the next entry; `None` after the trailer.
    pub fn next_entry(&mut self) -> Result<Option<CpioEntry>, CpioError> {
        if self.done {
            return Ok(None);
        }
        let start = self.offset;
        let mut header = [0u8; HEADER_LEN];
        self.read_exact(&mut header)?;
        if &header[..6] != NEWC_MAGIC {
            return Err(CpioError::BadMagic {
                offset: start,
                magic: String::from_utf8_lossy(&header[..6]).into_owned(),
            });
        }
        const NAMES: [&str; 13] = [
            "ino",
            "mode",
            "uid",
            "gid",
            "nlink",
            "mtime",
            "filesize",
            "devmajor",
            "devminor",
            "rdevmajor",
            "rdevminor",
            "namesize",
            "check",
        ];
        let mut f = [0u32; 13];
        for (i, field) in NAMES.iter().enumerate() {
            let text = &header[6 + i * 8..6 + (i + 1) * 8];
            let bad = || CpioError::BadField {
                offset: start,
                field,
                text: String::from_utf8_lossy(text).into_owned(),
            };
            let s = std::str::from_utf8(text).map_err(|_| bad())?;
            f[i] = u32::from_str_radix(s, 16).map_err(|_| bad())?;
        }
        let mut name = vec![0u8; f[11] as usize];
        self.read_exact(&mut name)?;
        if name.last() == Some(&0) {
            name.pop();
        }
        self.skip_pad()?;
        let mut data = vec![0u8; f[6] as usize];
        self.read_exact(&mut data)?;
        self.skip_pad()?;
        let name = String::from_utf8_lossy(&name).into_owned();
        if name == TRAILER {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(CpioEntry {
            name,
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            rdev_major: f[9],
            rdev_minor: f[10],
            data,
        }))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), CpioError> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => CpioError::Truncated {
                offset: self.offset,
            },
            _ => CpioError::Io(e),
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn skip_pad(&mut self) -> Result<(), CpioError> {
        let pad = (4 - (self.offset % 4) as usize) % 4;
        let mut buf = [0u8; 3];
        self.read_exact(&mut buf[..pad])
    }
}

impl<R: Read> Iterator for CpioReader<R> {
    type Item = Result<CpioEntry, CpioError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_entry() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.add_dir("/dev", 0o755).unwrap();
        w.add_char_device("/dev/console", 0o600, 5, 1).unwrap();
        w.add_file("/bin/busybox", 0o755, b"\x7fELF not really")
            .unwrap();
        w.add_symlink("/bin/sh", "busybox").unwrap();
        w.add_file("/init", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
        w.add_file("/etc/empty", 0o644, b"").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn writer_output_reads_back_with_own_reader() {
        let entries = CpioReader::new(&sample()[..]).read_all().unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "bin",
                "bin/busybox",
                "bin/sh",
                "init",
                "etc",
                "etc/empty"
            ]
        );
        let console = &entries[1];
        assert!(console.is_char_device());
        assert_eq!((console.rdev_major, console.rdev_minor), (5, 1));
        assert_eq!(console.mode & 0o7777, 0o600);
        assert!(entries[2].is_dir());
        assert_eq!(entries[3].data, b"\x7fELF not really");
        assert!(entries[4].is_symlink());
        assert_eq!(entries[4].data, b"busybox");
        assert!(entries[5].is_file());
        assert_eq!(entries[5].mode & 0o7777, 0o755);
        assert!(entries[7].data.is_empty());
    }

    #[test]
    fn writer_output_lists_with_debian_cpio_tool() {
        let mut child = Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cpio(1) from Debian's cpio package");
        child.stdin.take().unwrap().write_all(&sample()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 8, "{listing}");
        assert!(
            lines[1].starts_with("crw-------")
                && lines[1].contains("5,")
                && lines[1].ends_with("dev/console"),
            "{listing}"
        );
        assert!(
            lines[3].starts_with("-rwxr-xr-x") && lines[3].ends_with("bin/busybox"),
            "{listing}"
        );
        assert!(
            lines[4].starts_with("lrwxrwxrwx") && lines[4].ends_with("bin/sh -> busybox"),
            "{listing}"
        );
        assert!(
            lines[6].starts_with("drwxr-xr-x") && lines[6].ends_with("etc"),
            "{listing}"
        );
    }

    #[test]
    fn every_entry_starts_on_a_four_byte_boundary() {
        let bytes = sample();
        assert_eq!(bytes.len() % 4, 0);
        // Each header begins with the magic; find them all and check alignment.
        let starts: Vec<usize> = (0..bytes.len() - 6)
            .filter(|&i| &bytes[i..i + 6] == NEWC_MAGIC)
            .collect();
        assert_eq!(starts.len(), 9, "8 entries and the trailer");
        assert!(starts.iter().all(|s| s % 4 == 0));
    }

    #[test]
    fn reader_rejects_truncated_and_foreign_archives() {
        let bytes = sample();
        for cut in [
            &bytes[..bytes.len() - 130],
            &bytes[..bytes.len() - 4],
            &bytes[..0],
        ] {
            assert!(
                matches!(
                    CpioReader::new(cut).read_all(),
                    Err(CpioError::Truncated { .. })
                ),
                "cut to {} bytes",
                cut.len()
            );
        }
        let mut odc = bytes.clone();
        odc[..6].copy_from_slice(b"070707");
        assert!(matches!(
            CpioReader::new(&odc[..]).read_all(),
            Err(CpioError::BadMagic { offset: 0, .. })
        ));
    }

    #[test]
    fn names_are_relative_and_validated() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(matches!(
            w.add_file("/", 0o644, b""),
            Err(CpioError::BadName(_))
        ));
        assert!(matches!(
            w.add_file("a\0b", 0o644, b""),
            Err(CpioError::BadName(_))
        ));
        w.add_file("//./usr//bin/x", 0o755, b"x").unwrap();
        let entries = CpioReader::new(&w.finish().unwrap()[..])
            .read_all()
            .unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["usr", "usr/bin", "usr/bin/x"]);
    }
}
