//! The shared-library closure of an ELF program: what the dynamic loader would map.
//!
//! Follows ld.so(8): for each `DT_NEEDED` name, search the requesting object's
//! `DT_RPATH` (only when it has no `DT_RUNPATH`), then its `DT_RUNPATH`, then the
//! directories of `/etc/ld.so.conf` (what `ld.so.cache` indexes), then the default
//! directories. `$ORIGIN`, `$LIB` and `$PLATFORM` are expanded. A candidate of the
//! wrong ELF class or machine is skipped, as the loader does. The `PT_INTERP` loader
//! is part of the closure.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use goblin::elf::Elf;

/// Errors finding a program's libraries.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read ELF file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid ELF file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: goblin::error::Error,
    },
    #[error("{needed}, needed by {by}, was not found in {searched:?}")]
    NotFound {
        needed: String,
        by: PathBuf,
        searched: Vec<PathBuf>,
    },
}

/// Directories the Debian x86_64 loader searches after the cache (multiarch first).
const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// What the loader needs to know about one object.
struct DynInfo {
    class64: bool,
    machine: u16,
    interpreter: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

fn read_info(path: &Path) -> Result<DynInfo, ElfError> {
    let bytes = std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let elf = Elf::parse(&bytes).map_err(|source| ElfError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(DynInfo {
        class64: elf.is_64,
        machine: elf.header.e_machine,
        interpreter: elf.interpreter.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
    })
}

/// The program interpreter (`PT_INTERP`) of an ELF file, if it is one and has one.
pub fn interpreter(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    if !bytes.starts_with(b"\x7fELF") {
        return None;
    }
    Elf::parse(&bytes).ok()?.interpreter.map(str::to_string)
}

/// The libraries `path` needs, recursively, plus its dynamic loader; empty for a
/// static program. Paths are as found (not canonicalised) so that the same path
/// works inside a guest that mirrors the host layout.
pub fn library_closure(path: &Path) -> Result<Vec<PathBuf>, ElfError> {
    let root = read_info(path)?;
    let conf_dirs = ld_so_conf_dirs(Path::new("/etc/ld.so.conf"));
    let mut out: Vec<PathBuf> = Vec::new();
    let mut seen_names: BTreeSet<String> = BTreeSet::new();
    let mut seen_paths: BTreeSet<PathBuf> = BTreeSet::new();
    if let Some(interp) = &root.interpreter {
        let p = PathBuf::from(interp);
        seen_paths.insert(p.clone());
        out.push(p);
    }
    // The executable's DT_RPATH applies to every object loaded for it (ld.so(8)).
    let exe_rpath = if root.runpath.is_empty() {
        expand_all(&root.rpath, path)
    } else {
        Vec::new()
    };
    let mut queue: VecDeque<(PathBuf, DynInfo)> = VecDeque::new();
    queue.push_back((path.to_path_buf(), root));
    while let Some((obj_path, info)) = queue.pop_front() {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if info.runpath.is_empty() {
            dirs.extend(expand_all(&info.rpath, &obj_path));
            dirs.extend(exe_rpath.iter().cloned());
        }
        dirs.extend(expand_all(&info.runpath, &obj_path));
        dirs.extend(conf_dirs.iter().cloned());
        dirs.extend(DEFAULT_DIRS.iter().map(PathBuf::from));
        for needed in &info.needed {
            if !seen_names.insert(needed.clone()) {
                continue;
            }
            let found = if needed.contains('/') {
                let p = PathBuf::from(needed);
                p.is_file().then_some(p)
            } else {
                dirs.iter()
                    .map(|d| d.join(needed))
                    .find(|p| compatible(p, info.class64, info.machine))
            };
            let lib = found.ok_or_else(|| ElfError::NotFound {
                needed: needed.clone(),
                by: obj_path.clone(),
                searched: dirs.clone(),
            })?;
            if seen_paths.insert(lib.clone()) {
                let lib_info = read_info(&lib)?;
                out.push(lib.clone());
                queue.push_back((lib, lib_info));
            }
        }
    }
    Ok(out)
}

fn compatible(path: &Path, class64: bool, machine: u16) -> bool {
    path.is_file()
        && read_info(path)
            .map(|i| i.class64 == class64 && i.machine == machine)
            .unwrap_or(false)
}

/// Expands the dynamic string tokens of ld.so(8) in search-path entries.
fn expand_all(entries: &[String], object: &Path) -> Vec<PathBuf> {
    let origin = object
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".to_string());
    entries
        .iter()
        .map(|e| {
            PathBuf::from(
                e.replace("${ORIGIN}", &origin)
                    .replace("$ORIGIN", &origin)
                    .replace("${LIB}", "lib/x86_64-linux-gnu")
                    .replace("$LIB", "lib/x86_64-linux-gnu")
                    .replace("${PLATFORM}", "x86_64")
                    .replace("$PLATFORM", "x86_64"),
            )
        })
        .collect()
}

/// Directories listed in ld.so.conf, following `include` globs of the form
/// `dir/*.conf` (the only form Debian uses).
fn ld_so_conf_dirs(conf: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let Ok(text) = std::fs::read_to_string(conf) else {
        return dirs;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            let pattern = pattern.trim();
            let (dir, suffix) = match pattern.rsplit_once("/*") {
                Some((d, s)) => (PathBuf::from(d), s.to_string()),
                None => {
                    dirs.extend(ld_so_conf_dirs(Path::new(pattern)));
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.to_string_lossy().ends_with(&suffix))
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            for f in files {
                dirs.extend(ld_so_conf_dirs(&f));
            }
        } else if line.starts_with('/') {
            dirs.push(PathBuf::from(line));
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_program_needs_libc_and_the_loader() {
        let libs = library_closure(Path::new("/bin/ls")).unwrap();
        let names: Vec<String> = libs
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(libs[0], Path::new("/lib64/ld-linux-x86-64.so.2"));
        assert!(names.contains(&"libc.so.6".to_string()), "{names:?}");
        // ls needs libselinux, which needs libpcre2: the closure is recursive.
        assert!(
            names.iter().any(|n| n.starts_with("libselinux")),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n.starts_with("libpcre2")), "{names:?}");
        assert!(libs.iter().all(|p| p.is_file()));
        let unique: BTreeSet<_> = libs.iter().collect();
        assert_eq!(unique.len(), libs.len(), "no duplicates: {libs:?}");
    }

    #[test]
    fn static_program_needs_nothing() {
        assert!(library_closure(Path::new("/bin/busybox"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn non_elf_input_is_an_error() {
        let err = library_closure(Path::new("/etc/ld.so.conf")).unwrap_err();
        assert!(matches!(err, ElfError::Parse { .. }), "{err}");
    }

    #[test]
    fn origin_is_expanded_relative_to_the_object() {
        let dirs = expand_all(
            &[
                "$ORIGIN/../lib".into(),
                "${ORIGIN}/x".into(),
                "/opt/$LIB".into(),
            ],
            Path::new("/opt/app/bin/tool"),
        );
        assert_eq!(
            dirs,
            [
                PathBuf::from("/opt/app/bin/../lib"),
                PathBuf::from("/opt/app/bin/x"),
                PathBuf::from("/opt/lib/x86_64-linux-gnu"),
            ]
        );
    }
}
