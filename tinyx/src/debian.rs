//! Debian packages for application images: the dependency closure of a set of packages from
//! the host's apt lists, their metadata, and the `.deb` files downloaded into the Tinyx cache.
//!
//! Nothing here changes the host's root filesystem: `apt-cache` only reads the lists,
//! `apt-get download` writes into the cache directory it runs in, and the packages are unpacked
//! by `dpkg-deb -x` into a directory of the caller's choice. `apt-get update` runs only when the
//! host has no package lists at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors resolving, downloading or unpacking packages.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no package named {0:?} in the apt lists (apt-cache knows no such package)")]
    NoSuchPackage(String),
    #[error("{0:?} is a virtual package that no real package provides here; name a real one")]
    Virtual(String),
    #[error("{package} depends on {wanted}, which no package in the apt lists provides")]
    Unsatisfiable { package: String, wanted: String },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("apt-get download did not produce {0}")]
    Missing(PathBuf),
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One package of a closure, as the apt lists describe its candidate version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// `Installed-Size`, KiB.
    pub installed_kib: u64,
    /// The `.deb` file name `apt-get download` writes.
    pub file_name: String,
}

/// Where the apt lists live; `apt-get update` fills it.
const APT_LISTS: &str = "/var/lib/apt/lists";

fn run(cmd: &mut Command) -> Result<String, DebianError> {
    let program = format!("{:?}", cmd.get_program());
    let out = cmd.output().map_err(|source| DebianError::Spawn {
        program: program.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(DebianError::Failed {
            command: format!(
                "{} {}",
                cmd.get_program().to_string_lossy(),
                cmd.get_args()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `apt-get update` when the host has no package lists at all (a fresh container).
fn ensure_lists() -> Result<(), DebianError> {
    let has_lists = std::fs::read_dir(APT_LISTS)
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(false);
    if !has_lists {
        log::info!("no apt lists in {APT_LISTS}: running apt-get update");
        run(Command::new("apt-get").args(["-q", "update"]))?;
    }
    Ok(())
}

/// Checks that every root names a real package: a clear error for a typo or a purely virtual
/// name, before any resolution.
fn check_roots(roots: &[String]) -> Result<(), DebianError> {
    for root in roots {
        let out = Command::new("apt-cache")
            .args(["show", "--no-all-versions", root])
            .output()
            .map_err(|source| DebianError::Spawn {
                program: "apt-cache".into(),
                source,
            })?;
        if !out.status.success() || out.stdout.is_empty() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(if stderr.contains("purely virtual") {
                DebianError::Virtual(root.clone())
            } else {
                DebianError::NoSuchPackage(root.clone())
            });
        }
    }
    Ok(())
}

/// One dependency as `apt-cache depends` lists it: a real package, or a virtual one with
/// its providers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Real(String),
    Virtual(String, Vec<String>),
}

/// `apt-cache depends --recurse` output: for each package, its dependencies as groups of
/// alternatives (`|Depends:` continues a group).
pub type DependsGraph = BTreeMap<String, Vec<Vec<String>>>;

/// Parses `apt-cache depends` output into, per package, one list of candidate packages per
/// dependency (the alternatives in order, a virtual package replaced by its providers).
/// An alternative group with no candidate at all is an error naming it.
pub fn parse_depends(text: &str) -> Result<DependsGraph, DebianError> {
    let mut graph: DependsGraph = BTreeMap::new();
    let mut current: Option<String> = None;
    // Alternatives of the group being read (a `|` line continues it).
    let mut group: Vec<Target> = Vec::new();
    let mut group_open = false;
    let flush = |graph: &mut DependsGraph,
                 current: &Option<String>,
                 group: &mut Vec<Target>|
     -> Result<(), DebianError> {
        if group.is_empty() {
            return Ok(());
        }
        let Some(pkg) = current else {
            group.clear();
            return Ok(());
        };
        let mut candidates = Vec::new();
        for t in group.iter() {
            match t {
                Target::Real(n) => candidates.push(n.clone()),
                Target::Virtual(_, providers) => candidates.extend(providers.iter().cloned()),
            }
        }
        if candidates.is_empty() {
            let wanted = group
                .iter()
                .map(|t| match t {
                    Target::Real(n) | Target::Virtual(n, _) => n.clone(),
                })
                .collect::<Vec<_>>()
                .join(" | ");
            return Err(DebianError::Unsatisfiable {
                package: pkg.clone(),
                wanted,
            });
        }
        graph.entry(pkg.clone()).or_default().push(candidates);
        group.clear();
        Ok(())
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') && !line.starts_with('|') {
            flush(&mut graph, &current, &mut group)?;
            let name = strip_arch(line.trim()).to_string();
            graph.entry(name.clone()).or_default();
            current = Some(name);
            group_open = false;
            continue;
        }
        let trimmed = line.trim_start();
        let (alternative, rest) = match trimmed.strip_prefix('|') {
            Some(r) => (true, r),
            None => (false, trimmed),
        };
        if let Some((kind, target)) = rest.split_once(": ") {
            if !matches!(kind, "Depends" | "PreDepends") {
                continue;
            }
            if !group_open {
                flush(&mut graph, &current, &mut group)?;
            }
            let target = target.trim();
            group.push(
                match target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
                    Some(v) => Target::Virtual(strip_arch(v).to_string(), Vec::new()),
                    None => Target::Real(strip_arch(target).to_string()),
                },
            );
            group_open = alternative;
        } else if let Some(Target::Virtual(_, providers)) = group.last_mut() {
            // A provider of the virtual package above (indented deeper, no "Kind:").
            providers.push(strip_arch(trimmed).to_string());
        }
    }
    flush(&mut graph, &current, &mut group)?;
    Ok(graph)
}

fn strip_arch(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

/// Packages that only installing needs (the package manager, its interpreters, the tools
/// maintainer scripts call, service-manager glue): Tinyx leaves them and what only they pull
/// in out of an image, like LightVM's Tinyx, unless they are asked for by name. The image
/// build's stand-ins (scripts/maint-stubs.sh) do their part of configuring.
pub const INSTALL_ONLY: &[&str] = &[
    "dpkg",
    "debconf",
    "cdebconf",
    "adduser",
    "passwd",
    "perl",
    "perl-base",
    "usrmerge",
    "init-system-helpers",
    "sysvinit-utils",
    "lsb-base",
    "ucf",
    "install-info",
    "sensible-utils",
];

/// True for a package [`INSTALL_ONLY`] lists (or a perl module set).
pub fn install_only(name: &str) -> bool {
    INSTALL_ONLY.contains(&name) || name.starts_with("perl-modules-")
}

/// The closure of `roots` in `graph`, dependencies before their dependents (the order in
/// which dpkg configures them). For each dependency the first candidate already chosen is
/// taken, else the first one. A loop (Debian has some, e.g. nginx and its modules through the
/// virtual `nginx-abi-*`) is cut where it closes: each package appears once.
pub fn closure(graph: &DependsGraph, roots: &[String]) -> Vec<String> {
    let mut chosen: BTreeSet<String> = roots.iter().cloned().collect();
    let mut order = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut on_path: BTreeSet<String> = BTreeSet::new();
    // A package asked for by name is never skipped as install-only.
    let asked: BTreeSet<String> = roots.iter().cloned().collect();
    #[allow(clippy::too_many_arguments)]
    fn visit(
        pkg: &str,
        asked: &BTreeSet<String>,
        graph: &DependsGraph,
        chosen: &mut BTreeSet<String>,
        done: &mut BTreeSet<String>,
        on_path: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if done.contains(pkg) || !on_path.insert(pkg.to_string()) {
            return;
        }
        if install_only(pkg) && !asked.contains(pkg) {
            on_path.remove(pkg);
            done.insert(pkg.to_string());
            return;
        }
        for candidates in graph.get(pkg).map(Vec::as_slice).unwrap_or(&[]) {
            let pick = candidates
                .iter()
                .find(|c| chosen.contains(*c))
                .or_else(|| candidates.first())
                .cloned();
            if let Some(dep) = pick {
                chosen.insert(dep.clone());
                visit(&dep, asked, graph, chosen, done, on_path, order);
            }
        }
        on_path.remove(pkg);
        done.insert(pkg.to_string());
        order.push(pkg.to_string());
    }
    for root in roots {
        visit(
            root,
            &asked,
            graph,
            &mut chosen,
            &mut done,
            &mut on_path,
            &mut order,
        );
    }
    order
}

/// Resolves the dependency closure of `roots` (Depends and Pre-Depends; no Recommends), in
/// configuration order, with each package's candidate version.
pub fn resolve(roots: &[String]) -> Result<Vec<Package>, DebianError> {
    ensure_lists()?;
    check_roots(roots)?;
    let text = run(Command::new("apt-cache")
        .args([
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ])
        .args(roots))?;
    let graph = parse_depends(&text)?;
    let names = closure(&graph, roots);
    let stanzas = run(Command::new("apt-cache")
        .args(["show", "--no-all-versions"])
        .args(&names))?;
    let mut by_name = parse_show(&stanzas);
    names
        .into_iter()
        .map(|n| by_name.remove(&n).ok_or(DebianError::NoSuchPackage(n)))
        .collect()
}

/// Parses `apt-cache show` stanzas (the first stanza of each package wins).
pub fn parse_show(text: &str) -> BTreeMap<String, Package> {
    let mut out = BTreeMap::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        let (Some(name), Some(version), Some(_pool_file)) =
            (field("Package"), field("Version"), field("Filename"))
        else {
            continue;
        };
        let architecture = field("Architecture").unwrap_or_default();
        // apt-get download's name: the pool file name lacks the epoch, apt's keeps it
        // (URL-escaped).
        let file_name = format!("{name}_{}_{architecture}.deb", version.replace(':', "%3a"));
        out.entry(name.clone()).or_insert(Package {
            name,
            version,
            architecture,
            installed_kib: field("Installed-Size")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            file_name,
        });
    }
    out
}

/// Downloads the packages' `.deb` files into `dir` (kept there as a cache; files already
/// present are not fetched again) and returns their paths, in the order of `packages`.
pub fn download(packages: &[Package], dir: &Path) -> Result<Vec<PathBuf>, DebianError> {
    let io = |source| DebianError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let missing: Vec<&Package> = packages
        .iter()
        .filter(|p| !dir.join(&p.file_name).is_file())
        .collect();
    if !missing.is_empty() {
        // Into a private directory, then renamed: an interrupted download leaves no partial
        // .deb under its final name.
        let tmp = dir.join(format!(".download-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io)?;
        let result = run(Command::new("apt-get")
            .current_dir(&tmp)
            // apt drops to the `_apt` user for downloads, who cannot write the cache.
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .args(missing.iter().map(|p| format!("{}={}", p.name, p.version))));
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        for p in &missing {
            let from = tmp.join(&p.file_name);
            if !from.is_file() {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(DebianError::Missing(from));
            }
            std::fs::rename(&from, dir.join(&p.file_name)).map_err(io)?;
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(packages.iter().map(|p| dir.join(&p.file_name)).collect())
}

/// Unpacks a package's files into `root` (`dpkg-deb -x`) and its control files (maintainer
/// scripts) into `control`.
pub fn unpack(deb: &Path, root: &Path, control: &Path) -> Result<(), DebianError> {
    for dir in [root, control] {
        std::fs::create_dir_all(dir).map_err(|source| DebianError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root))?;
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(control))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX: &str = "nginx-light
  Depends: libnginx-mod-http-echo
  Depends: nginx
libnginx-mod-http-echo
  Depends: <nginx-abi-1.22.1-7>
    nginx
  Depends: libc6
nginx
  Depends: libc6
  Depends: nginx-common
libc6
  Depends: libgcc-s1
nginx-common
 |Depends: debconf
  Depends: <debconf-2.0>
    cdebconf
    debconf
libgcc-s1
  Depends: libc6
debconf
cdebconf
  Depends: libc6
";

    #[test]
    fn alternatives_and_virtual_packages_become_candidate_lists() {
        let g = parse_depends(NGINX).unwrap();
        assert_eq!(
            g["nginx-common"],
            vec![vec![
                "debconf".to_string(),
                "cdebconf".to_string(),
                "debconf".to_string()
            ]]
        );
        assert_eq!(g["libnginx-mod-http-echo"][0], vec!["nginx".to_string()]);
        assert!(g["debconf"].is_empty());
    }

    #[test]
    fn closure_cuts_loops_and_puts_dependencies_first() {
        let g = parse_depends(NGINX).unwrap();
        let order = closure(&g, &["nginx-light".to_string()]);
        // nginx -> libnginx-mod-http-echo -> nginx (through nginx-abi) and libc6 <-> libgcc-s1
        // are loops: each package still appears exactly once.
        let set: BTreeSet<&String> = order.iter().collect();
        assert_eq!(set.len(), order.len(), "{order:?}");
        assert_eq!(
            set.into_iter().cloned().collect::<Vec<_>>(),
            [
                "libc6",
                "libgcc-s1",
                "libnginx-mod-http-echo",
                "nginx",
                "nginx-common",
                "nginx-light"
            ]
        );
        let pos = |n: &str| order.iter().position(|p| p == n).unwrap();
        assert!(pos("nginx-common") < pos("nginx"));
        // debconf is install-only: the build's stand-in answers its questions.
        assert!(!order.contains(&"debconf".to_string()));
        assert!(closure(&g, &["debconf".to_string()]).contains(&"debconf".to_string()));
        assert_eq!(order.last().map(String::as_str), Some("nginx-light"));
        assert!(!order.contains(&"cdebconf".to_string()));
    }

    #[test]
    fn a_virtual_dependency_without_providers_is_an_error() {
        let err = parse_depends("foo\n  Depends: <nothing-provides-this>\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("foo depends on nothing-provides-this"),
            "{err}"
        );
    }

    #[test]
    fn show_stanzas_give_versions_sizes_and_file_names() {
        let text =
            "Package: libc6\nVersion: 1:2.36-9\nInstalled-Size: 13001\nArchitecture: amd64\n\
                    Filename: pool/main/g/glibc/libc6_2.36-9_amd64.deb\n\nPackage: libc6\n\
                    Version: 2.35\nFilename: pool/x.deb\n";
        let p = &parse_show(text)["libc6"];
        assert_eq!(p.version, "1:2.36-9");
        assert_eq!(p.installed_kib, 13001);
        assert_eq!(p.file_name, "libc6_1%3a2.36-9_amd64.deb");
    }
}
