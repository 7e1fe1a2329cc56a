//! The distribution's kernel source: the newest `linux-source-X.Y` package, installed
//! with apt-get when missing, unpacked once into the cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::{self, CacheError};

/// Errors locating or unpacking the kernel source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("no linux-source-X.Y package is installed or available from apt")]
    NoPackage,
    #[error("package {package} has no source tarball at {path}")]
    NoTarball { package: String, path: PathBuf },
    #[error("tarball {tarball} did not unpack to a {dir} directory")]
    BadTarball { tarball: PathBuf, dir: String },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// An installed kernel source package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSource {
    /// e.g. `linux-source-6.12`
    pub package: String,
    /// e.g. `6.12.117-1~deb12u1`: part of the cache key.
    pub version: String,
    /// e.g. `/usr/src/linux-source-6.12.tar.xz`
    pub tarball: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String, SourceError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| SourceError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(SourceError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `linux-source-6.12` → `[6, 12]`; `None` for the unversioned metapackage.
fn series(package: &str) -> Option<Vec<u32>> {
    let v = package.strip_prefix("linux-source-")?;
    v.split('.').map(|p| p.parse().ok()).collect()
}

/// The newest `linux-source-X.Y` among `names`.
pub fn newest_package<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names
        .into_iter()
        .filter_map(|n| series(n).map(|s| (s, n)))
        .max()
        .map(|(_, n)| n)
}

fn installed() -> Result<Vec<(String, String)>, SourceError> {
    // dpkg-query exits 1 when nothing matches: treat as "none installed".
    let out = Command::new("dpkg-query")
        .args([
            "-W",
            "-f",
            "${Package}\t${Version}\t${db:Status-Abbrev}\n",
            "linux-source-*",
        ])
        .output()
        .map_err(|source| SourceError::Spawn {
            command: "dpkg-query".into(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (p, v, s) = (f.next()?, f.next()?, f.next()?);
            (s.starts_with("ii") && series(p).is_some()).then(|| (p.to_string(), v.to_string()))
        })
        .collect())
}

/// Finds the newest installed source package, installing the newest available one
/// with apt-get when none is installed.
pub fn find_source() -> Result<KernelSource, SourceError> {
    let mut have = installed()?;
    if have.is_empty() {
        let listing = run(Command::new("apt-cache").args([
            "search",
            "--names-only",
            "^linux-source-[0-9.]+$",
        ]))?;
        let names: Vec<&str> = listing
            .lines()
            .filter_map(|l| l.split(' ').next())
            .collect();
        let package = newest_package(names.iter().copied()).ok_or(SourceError::NoPackage)?;
        log::info!("installing {package}");
        eprintln!("tinyx: installing {package} with apt-get");
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        have = installed()?;
    }
    let newest =
        newest_package(have.iter().map(|(p, _)| p.as_str())).ok_or(SourceError::NoPackage)?;
    let (package, version) = have
        .iter()
        .find(|(p, _)| p == newest)
        .cloned()
        .ok_or(SourceError::NoPackage)?;
    let tarball = PathBuf::from(format!("/usr/src/{package}.tar.xz"));
    if !tarball.is_file() {
        return Err(SourceError::NoTarball {
            package,
            path: tarball,
        });
    }
    Ok(KernelSource {
        package,
        version,
        tarball,
    })
}

/// The unpacked tree `$cache/<package>_<version>`, unpacked on first use (into a
/// staging directory, renamed into place when complete).
pub fn unpacked_tree(src: &KernelSource, cache_dir: &Path) -> Result<PathBuf, SourceError> {
    let tree = cache_dir.join(format!("{}_{}", src.package, src.version));
    if tree.join("Makefile").is_file() {
        return Ok(tree);
    }
    eprintln!("tinyx: unpacking {} (once)", src.tarball.display());
    let staging = cache::staging_dir(&tree)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(&src.tarball)
        .arg("-C")
        .arg(&staging))?;
    let inner = staging.join(&src.package);
    if !inner.join("Makefile").is_file() {
        return Err(SourceError::BadTarball {
            tarball: src.tarball.clone(),
            dir: src.package.clone(),
        });
    }
    cache::publish(&inner, &tree)?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_series_wins_numerically() {
        let names = [
            "linux-source",
            "linux-source-6.1",
            "linux-source-6.12",
            "linux-source-6.9",
        ];
        assert_eq!(newest_package(names), Some("linux-source-6.12"));
        assert_eq!(newest_package(["linux-source"]), None);
    }

    #[test]
    fn installed_source_package_is_found_with_its_tarball() {
        let src = find_source().unwrap();
        assert!(src.package.starts_with("linux-source-"));
        assert!(!src.version.is_empty());
        assert!(src.tarball.is_file());
    }
}
