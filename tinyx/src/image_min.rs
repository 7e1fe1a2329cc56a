//! Trimming an application image by trial runs (`tinyx minimize-image --check CMD`), the
//! image-side half of LightVM's Tinyx minimisation: run the application once from the image
//! tree under `strace -f -e trace=%file,execve` until its health check passes, remove every
//! file and symlink it never touched, and keep the result only if a second, untraced trial of
//! the trimmed tree still passes the check. The result is its own cache entry
//! (`app-<hash>-min-<hash>`), published atomically like every other.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::app_image::{
    build_image, tree_bytes, write_initramfs, ImageError, ImageReport, ImageSpec,
};
use crate::cache;
use crate::trial::{self, TrialOutcome};

/// How long a trial waits for the check to pass.
const TRIAL_SECONDS: u32 = 60;

/// Errors trimming an image by trial runs.
#[derive(Debug, thiserror::Error)]
pub enum ImageMinError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("the check fails on the untrimmed image, so the trial teaches nothing: {0}")]
    BaselineFails(String),
    #[error("the image trimmed to the files the trial opened fails the check (nothing kept): {0}")]
    TrimmedFails(String),
    #[error("cannot copy the image tree to {path}: {detail}")]
    Copy { path: PathBuf, detail: String },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The trimmed image and what trimming removed.
#[derive(Debug, Clone)]
pub struct ImageMinReport {
    /// The image it started from.
    pub base: ImageReport,
    /// The trimmed image (its `trimmed_bytes` and `initramfs_bytes` are the new sizes).
    pub trimmed: ImageReport,
    pub files_removed: u64,
    pub files_kept: u64,
}

fn outcome_text(o: &TrialOutcome) -> String {
    match o {
        TrialOutcome::Ready { .. } => "passed".into(),
        TrialOutcome::Exited { status, output } => {
            format!("the application exited (status {status}):\n{output}")
        }
        TrialOutcome::NotReady { output } => {
            format!("the check never passed within {TRIAL_SECONDS} s:\n{output}")
        }
    }
}

/// Builds (or takes from the cache) the image of `spec`, then trims it by trial runs against
/// `check` (a host shell command; `$TINYX_GUEST` is the application's address).
pub fn minimize_image(spec: &ImageSpec, check: &str) -> Result<ImageMinReport, ImageMinError> {
    let base = build_image(spec)?;
    let base_name = base
        .entry
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entry = base.entry.with_file_name(format!(
        "{base_name}-min-{}",
        cache::content_hash(&[
            check.as_bytes(),
            include_str!("../scripts/trial.sh").as_bytes()
        ])
    ));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageMinError::Io { path, source }
    };
    if entry.join("report.txt").is_file() {
        return finish(base, &entry);
    }
    let debs = cache::tinyx_dir().map_err(ImageError::from)?.join("debs");
    let _lock = cache::lock(&debs).map_err(ImageError::from)?;
    let staging = Staging(cache::staging_dir(&entry).map_err(ImageError::from)?);
    let root = staging.0.join("rootfs");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(base.root_tree())
        .arg(&root)
        .output()
        .map_err(io(&root))?;
    if !copied.status.success() {
        return Err(ImageMinError::Copy {
            path: root,
            detail: String::from_utf8_lossy(&copied.stderr).trim().to_string(),
        });
    }

    let trace = staging.0.join("trace.txt");
    let traced = trial::run(&trial::Trial {
        root: &root,
        command: &base.command,
        port: None,
        check: Some(check),
        trace: Some(&trace),
        seconds: TRIAL_SECONDS,
    })
    .map_err(ImageError::from)?;
    if !matches!(traced, TrialOutcome::Ready { .. }) {
        return Err(ImageMinError::BaselineFails(outcome_text(&traced)));
    }
    let text = std::fs::read_to_string(&trace).map_err(io(&trace))?;
    let keep = kept_paths(&root, &text);
    let (removed, kept) = remove_untouched(&root, &keep).map_err(io(&root))?;
    log::info!(
        "trace: {} lines, {} paths kept; removed {removed} files, kept {kept}",
        text.lines().count(),
        keep.len()
    );

    let again = trial::run(&trial::Trial {
        root: &root,
        command: &base.command,
        port: None,
        check: Some(check),
        trace: None,
        seconds: TRIAL_SECONDS,
    })
    .map_err(ImageError::from)?;
    if !matches!(again, TrialOutcome::Ready { .. }) {
        return Err(ImageMinError::TrimmedFails(outcome_text(&again)));
    }
    let _ = std::fs::remove_file(&trace);
    let initramfs = staging.0.join("initramfs.cpio.gz");
    write_initramfs(&root, &initramfs)?;
    let note = staging.0.join("minimized.txt");
    std::fs::write(
        &note,
        format!("check {check}\nfiles_removed {removed}\nfiles_kept {kept}\n"),
    )
    .map_err(io(&note))?;
    let mut report = base.clone();
    report.entry = entry.clone();
    report.trimmed_bytes = tree_bytes(&root);
    report.initramfs_bytes = std::fs::metadata(&initramfs).map_or(0, |m| m.len());
    let report_path = staging.0.join("report.txt");
    std::fs::write(&report_path, report.to_text()).map_err(io(&report_path))?;
    cache::publish(&staging.0, &entry).map_err(ImageError::from)?;
    finish(base, &entry)
}

fn finish(base: ImageReport, entry: &Path) -> Result<ImageMinReport, ImageMinError> {
    let trimmed = ImageReport::load(entry)?;
    let note = std::fs::read_to_string(entry.join("minimized.txt")).unwrap_or_default();
    let field = |k: &str| {
        note.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(ImageMinReport {
        base,
        trimmed,
        files_removed: field("files_removed "),
        files_kept: field("files_kept "),
    })
}

/// Removes a staging directory unless it was published.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The absolute paths in an strace log (every quoted string starting with `/`).
pub fn traced_paths(trace: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in trace.lines() {
        let mut rest = line;
        while let Some(start) = rest.find("\"/") {
            let after = &rest[start + 1..];
            let Some(end) = after.find('"') else { break };
            out.insert(after[..end].to_string());
            rest = &after[end + 1..];
        }
    }
    out
}

/// Image-relative paths to keep: every traced path that exists in the tree, every symlink
/// met on the way to it (followed inside the tree), and what `/init` itself needs.
pub fn kept_paths(root: &Path, trace: &str) -> BTreeSet<PathBuf> {
    let mut keep: BTreeSet<PathBuf> = [
        "init",
        "bin/busybox",
        "etc/passwd",
        "etc/group",
        "etc/hosts",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    // Busybox's applet links: /init calls them.
    if let Ok(entries) = std::fs::read_dir(root.join("bin")) {
        for e in entries.flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new("busybox")) {
                keep.insert(Path::new("bin").join(e.file_name()));
            }
        }
    }
    for p in traced_paths(trace) {
        resolve_into(root, Path::new(&p), &mut keep);
    }
    // The kernel, not a system call strace sees, opens an executable's loader.
    let interpreters: BTreeSet<String> = keep
        .iter()
        .filter_map(|p| crate::elf::interpreter(&root.join(p)))
        .collect();
    for interp in interpreters {
        resolve_into(root, Path::new(&interp), &mut keep);
    }
    keep
}

/// Walks `path` inside `root` component by component, following symlinks within the tree,
/// and records each link and the final path.
fn resolve_into(root: &Path, path: &Path, keep: &mut BTreeSet<PathBuf>) {
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut hops = 0;
    while let Some(p) = pending.pop() {
        let mut cur = PathBuf::new();
        let comps: Vec<Component> = p.components().collect();
        for (i, c) in comps.iter().enumerate() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
                Component::ParentDir => {
                    cur.pop();
                    continue;
                }
                Component::Normal(n) => cur.push(n),
            }
            let on_disk = root.join(&cur);
            if let Ok(target) = std::fs::read_link(&on_disk) {
                keep.insert(cur.clone());
                hops += 1;
                if hops > 64 {
                    return;
                }
                let mut next = if target.is_absolute() {
                    target
                } else {
                    Path::new("/")
                        .join(cur.parent().unwrap_or(Path::new("")))
                        .join(target)
                };
                for rest in &comps[i + 1..] {
                    next.push(rest.as_os_str());
                }
                pending.push(next);
                break;
            }
            if i + 1 == comps.len() && on_disk.exists() {
                keep.insert(cur.clone());
            }
        }
    }
}

/// Removes regular files and symlinks not in `keep` (directories stay: they cost nothing and
/// applications create files in them). Returns (removed, kept) counts.
fn remove_untouched(root: &Path, keep: &BTreeSet<PathBuf>) -> std::io::Result<(u64, u64)> {
    let (mut removed, mut kept) = (0, 0);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel))? {
            let e = e?;
            let child = rel.join(e.file_name());
            let meta = std::fs::symlink_metadata(e.path())?;
            if meta.is_dir() {
                stack.push(child);
            } else if keep.contains(&child) {
                kept += 1;
            } else {
                std::fs::remove_file(e.path())?;
                removed += 1;
            }
        }
    }
    Ok((removed, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_absolute_paths_are_taken_from_strace_lines() {
        let t = "12 openat(AT_FDCWD, \"/etc/nginx/nginx.conf\", O_RDONLY) = 4\n\
                 12 execve(\"/usr/sbin/nginx\", [\"nginx\", \"-g\", \"daemon off;\"], 0x7ff /* 3 vars */) = 0\n\
                 13 newfstatat(AT_FDCWD, \"/var/www\", {st_mode=S_IFDIR}, 0) = 0\n";
        let p = traced_paths(t);
        assert_eq!(
            p.into_iter().collect::<Vec<_>>(),
            ["/etc/nginx/nginx.conf", "/usr/sbin/nginx", "/var/www"]
        );
    }

    #[test]
    fn links_on_the_way_are_kept_and_untouched_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "lib/x86_64-linux-gnu",
            "etc/nginx/sites-available",
            "etc/nginx/sites-enabled",
            "bin",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("lib/x86_64-linux-gnu/libz.so.1.2.13"), "z").unwrap();
        std::os::unix::fs::symlink("libz.so.1.2.13", r.join("lib/x86_64-linux-gnu/libz.so.1"))
            .unwrap();
        std::fs::write(r.join("etc/nginx/sites-available/default"), "site").unwrap();
        std::os::unix::fs::symlink(
            "/etc/nginx/sites-available/default",
            r.join("etc/nginx/sites-enabled/default"),
        )
        .unwrap();
        std::fs::write(r.join("etc/nginx/unused.conf"), "x").unwrap();
        std::fs::write(r.join("bin/busybox"), "bb").unwrap();
        std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
        let trace = "1 openat(AT_FDCWD, \"/lib/x86_64-linux-gnu/libz.so.1\", O_RDONLY) = 3\n\
                     1 openat(AT_FDCWD, \"/etc/nginx/sites-enabled/default\", O_RDONLY) = 3\n";
        let keep = kept_paths(r, trace);
        let (removed, kept) = remove_untouched(r, &keep).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(kept, 6);
        assert!(!r.join("etc/nginx/unused.conf").exists());
        assert!(r.join("lib/x86_64-linux-gnu/libz.so.1.2.13").exists());
        assert!(r.join("etc/nginx/sites-available/default").exists());
        assert!(r.join("bin/sh").exists());
    }
}
