//! The VM's own cgroup: limits on CPU time, memory and processes that a compromised VMM cannot
//! raise (the files belong to root) and that end with the VM.
//!
//! Limits are named as in cgroup v2 (`cpu.max`, `memory.max`, `pids.max`). Each controller is
//! taken from the hierarchy that has it: the cgroup v2 hierarchy when the controller is
//! available there, else the controller's cgroup v1 hierarchy (hybrid hosts, such as ones
//! with systemd's legacy layout), with the value translated to the v1 file.
//!
//! Where the VM's cgroup goes:
//! - v2: `<cgroup2 mount>/<parent>/<id>`, with the controllers enabled on the way down (the
//!   parent holds no processes, so v2's "no internal processes" rule is met).
//! - v1: `<controller mount>/<the jailer's own cgroup>/<parent>/<id>`: nested under the
//!   jailer's cgroup, so a jailer that is itself confined keeps its VMs inside its limits.

use crate::error::JailError;
use std::fs;
use std::path::{Path, PathBuf};

/// One limit asked for with `--cgroup FILE=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// `cpu`, `memory` or `pids`.
    pub controller: &'static str,
    /// The v2 file name (`memory.max`).
    pub file: &'static str,
    /// The value as cgroup v2 writes it.
    pub value: String,
}

impl Limit {
    /// Parses `cpu.max=QUOTA [PERIOD]`, `memory.max=BYTES`, `pids.max=N` (each may be `max`).
    pub fn parse(spec: &str) -> Result<Limit, JailError> {
        let bad = |why| JailError::BadCgroup(spec.to_string(), why);
        let (file, value) = spec.split_once('=').ok_or(bad("expected FILE=VALUE"))?;
        let number_or_max = |v: &str| v == "max" || v.parse::<u64>().is_ok();
        let (controller, file) = match file {
            "memory.max" => ("memory", "memory.max"),
            "pids.max" => ("pids", "pids.max"),
            "cpu.max" => ("cpu", "cpu.max"),
            _ => return Err(bad("known files are cpu.max, memory.max and pids.max")),
        };
        let ok = if controller == "cpu" {
            let mut parts = value.split(' ');
            let quota = parts.next().is_some_and(number_or_max);
            let period = parts.next().is_none_or(|p| p.parse::<u64>().is_ok());
            quota && period && parts.next().is_none()
        } else {
            number_or_max(value)
        };
        if !ok {
            return Err(bad(
                "the value must be a number or max (cpu.max: QUOTA [PERIOD])",
            ));
        }
        Ok(Limit {
            controller,
            file,
            value: value.to_string(),
        })
    }

    /// The (file, value) writes that set this limit on a cgroup v1 hierarchy, in order.
    fn v1_writes(&self) -> Vec<(&'static str, String)> {
        let unlimited = |v: &str| {
            if v == "max" {
                "-1".to_string()
            } else {
                v.to_string()
            }
        };
        match self.controller {
            "memory" => vec![("memory.limit_in_bytes", unlimited(&self.value))],
            "cpu" => {
                let mut parts = self.value.split(' ');
                let quota = unlimited(parts.next().unwrap_or("max"));
                let mut writes = Vec::new();
                // The period first: a quota is checked against the period in force.
                if let Some(period) = parts.next() {
                    writes.push(("cpu.cfs_period_us", period.to_string()));
                }
                writes.push(("cpu.cfs_quota_us", quota));
                writes
            }
            _ => vec![(self.file, self.value.clone())],
        }
    }
}

/// A cgroup the jailer created for the VM, with what it writes there.
#[derive(Debug)]
pub struct VmCgroup {
    pub dir: PathBuf,
    /// The v2 mount, when this cgroup is on v2: the controllers must be enabled from there down.
    v2_root: Option<PathBuf>,
    /// The controllers to enable above a v2 cgroup.
    controllers: Vec<&'static str>,
    writes: Vec<(&'static str, String)>,
}

/// The hierarchies mounted on this host, from /proc/self/mounts.
#[derive(Clone)]
struct Hierarchies {
    /// The cgroup v2 mount and the controllers available at its root.
    v2: Option<(PathBuf, Vec<String>)>,
    /// Each cgroup v1 mount with its controllers.
    v1: Vec<(PathBuf, Vec<String>)>,
}

impl Hierarchies {
    fn read() -> Result<Hierarchies, JailError> {
        let mounts = fs::read_to_string("/proc/self/mounts")
            .map_err(JailError::path("read", "/proc/self/mounts"))?;
        let mut found = Hierarchies {
            v2: None,
            v1: Vec::new(),
        };
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let (Some(dir), Some(fstype), Some(options)) =
                (fields.get(1), fields.get(2), fields.get(3))
            else {
                continue;
            };
            let dir = PathBuf::from(dir);
            match *fstype {
                "cgroup2" if found.v2.is_none() => {
                    let controllers = fs::read_to_string(dir.join("cgroup.controllers"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    found.v2 = Some((dir, controllers));
                }
                "cgroup" => {
                    let controllers = options.split(',').map(str::to_string).collect();
                    found.v1.push((dir, controllers));
                }
                _ => {}
            }
        }
        Ok(found)
    }
}

/// The cgroup in the v1 hierarchy holding `controller`, from a /proc/PID/cgroup text.
fn own_v1_cgroup(own: &str, controller: &str) -> PathBuf {
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == controller) {
            return PathBuf::from(path.trim_start_matches('/'));
        }
    }
    PathBuf::new()
}

/// Works out the VM's cgroup directories and what to write in each; creates nothing.
pub fn plan(limits: &[Limit], parent: &Path, id: &str) -> Result<Vec<VmCgroup>, JailError> {
    if limits.is_empty() {
        return Ok(Vec::new());
    }
    let hierarchies = Hierarchies::read()?;
    let own = fs::read_to_string("/proc/self/cgroup")
        .map_err(JailError::path("read", "/proc/self/cgroup"))?;
    plan_in(&hierarchies, &own, limits, parent, id)
}

/// [`plan`] on the given hierarchies, for a process whose /proc/PID/cgroup reads `own`.
fn plan_in(
    hierarchies: &Hierarchies,
    own: &str,
    limits: &[Limit],
    parent: &Path,
    id: &str,
) -> Result<Vec<VmCgroup>, JailError> {
    let mut cgroups: Vec<VmCgroup> = Vec::new();
    for limit in limits {
        let on_v2 = hierarchies
            .v2
            .as_ref()
            .filter(|(_, controllers)| controllers.iter().any(|c| c == limit.controller));
        let (dir, v2_root, writes) = match on_v2 {
            Some((mount, _)) => (
                mount.join(parent).join(id),
                Some(mount.clone()),
                vec![(limit.file, limit.value.clone())],
            ),
            None => {
                let (mount, _) = hierarchies
                    .v1
                    .iter()
                    .find(|(_, controllers)| controllers.iter().any(|c| c == limit.controller))
                    .ok_or_else(|| JailError::NoController(limit.controller.to_string()))?;
                let own = own_v1_cgroup(own, limit.controller);
                (
                    mount.join(own).join(parent).join(id),
                    None,
                    limit.v1_writes(),
                )
            }
        };
        let index = match cgroups.iter().position(|c| c.dir == dir) {
            Some(index) => index,
            None => {
                if dir.exists() {
                    return Err(JailError::CgroupExists(dir));
                }
                cgroups.push(VmCgroup {
                    dir,
                    v2_root,
                    controllers: Vec::new(),
                    writes: Vec::new(),
                });
                cgroups.len() - 1
            }
        };
        let cgroup = &mut cgroups[index];
        if cgroup.v2_root.is_some() && !cgroup.controllers.contains(&limit.controller) {
            cgroup.controllers.push(limit.controller);
        }
        cgroup.writes.extend(writes);
    }
    Ok(cgroups)
}

/// Creates the VM's cgroups and writes its limits. On failure, removes what it created.
pub fn create(cgroups: &[VmCgroup]) -> Result<(), JailError> {
    for (done, cgroup) in cgroups.iter().enumerate() {
        if let Err(e) = create_one(cgroup) {
            remove(&cgroups[..=done]);
            return Err(e);
        }
    }
    Ok(())
}

fn create_one(cgroup: &VmCgroup) -> Result<(), JailError> {
    let parent = cgroup.dir.parent().unwrap_or(&cgroup.dir);
    fs::create_dir_all(parent).map_err(JailError::path("create the cgroup", parent))?;
    if let Some(root) = &cgroup.v2_root {
        // cgroup v2 hands a controller to a child only when every cgroup above enables it in
        // its cgroup.subtree_control, so enable them from the root down.
        let chain: Vec<&Path> = parent
            .ancestors()
            .take_while(|a| a.starts_with(root))
            .collect();
        for above in chain.into_iter().rev() {
            let control = above.join("cgroup.subtree_control");
            let enabled =
                fs::read_to_string(&control).map_err(JailError::path("read", control.clone()))?;
            for controller in &cgroup.controllers {
                if !enabled.split_whitespace().any(|c| c == *controller) {
                    fs::write(&control, format!("+{controller}"))
                        .map_err(JailError::path("enable a controller in", control.clone()))?;
                }
            }
        }
    }
    fs::create_dir(&cgroup.dir).map_err(JailError::path("create the cgroup", &cgroup.dir))?;
    for (file, value) in &cgroup.writes {
        let path = cgroup.dir.join(file);
        fs::write(&path, value).map_err(JailError::path("set the limit", path))?;
    }
    Ok(())
}

/// rmdir of a cgroup, retried for a short while on EBUSY: the kernel may still be taking the
/// last exited task out of it just after the wait returned.
fn remove_dir_when_idle(dir: &Path) -> std::io::Result<()> {
    const TRIES: u32 = 50;
    let mut tries = 0;
    loop {
        match fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < TRIES => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            other => return other,
        }
    }
}

/// The one cgroup v2 directory a VM can be forked straight into, when that is all it needs.
pub fn fork_target(cgroups: &[VmCgroup]) -> Option<&Path> {
    match cgroups {
        [only] if only.v2_root.is_some() => Some(&only.dir),
        _ => None,
    }
}

/// Moves the calling process into the VM's cgroups (run by the child before it execs).
pub fn join(cgroups: &[VmCgroup]) -> Result<(), JailError> {
    let pid = crate::sys::getpid().to_string();
    for cgroup in cgroups {
        let procs = cgroup.dir.join("cgroup.procs");
        fs::write(&procs, &pid).map_err(JailError::path("join the cgroup", procs))?;
    }
    Ok(())
}

/// Removes the VM's cgroups (once its processes are gone); failures are reported.
pub fn remove(cgroups: &[VmCgroup]) {
    for cgroup in cgroups {
        if let Err(e) = remove_dir_when_idle(&cgroup.dir) {
            report!(
                "wisp-jailer: warning: cannot remove the cgroup {}: {e}",
                cgroup.dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_with_v2_names_and_bad_ones_are_refused() {
        let memory = Limit::parse("memory.max=1048576").ok();
        assert_eq!(
            memory.map(|l| (l.controller, l.value)),
            Some(("memory", "1048576".into()))
        );
        assert!(Limit::parse("pids.max=max").is_ok());
        assert!(Limit::parse("cpu.max=max 100000").is_ok());
        assert!(Limit::parse("cpu.max=50000").is_ok());
        for bad in [
            "cpuset.cpus=0",
            "memory.max=1G",
            "cpu.max=1 2 3",
            "cpu.max=1 x",
            "pids.max",
            "memory.max=",
        ] {
            assert!(Limit::parse(bad).is_err(), "{bad}");
        }
    }

    /// A hybrid host: memory and pids on v1 (the process in a memory cgroup of its own), cpu
    /// on v2.
    fn hybrid() -> (Hierarchies, &'static str) {
        let hierarchies = Hierarchies {
            v2: Some(("/cg/unified".into(), vec!["cpu".into()])),
            v1: vec![
                ("/cg/memory".into(), vec!["rw".into(), "memory".into()]),
                ("/cg/pids".into(), vec!["rw".into(), "pids".into()]),
            ],
        };
        (hierarchies, "5:pids:/\n4:memory:/svc/a\n0::/\n")
    }

    #[test]
    fn each_controller_gets_its_cgroup_where_its_hierarchy_is() {
        let (hierarchies, own) = hybrid();
        let limits: Vec<Limit> = ["memory.max=8192", "pids.max=9", "cpu.max=1000 2000"]
            .iter()
            .filter_map(|l| Limit::parse(l).ok())
            .collect();
        let plan = plan_in(&hierarchies, own, &limits, Path::new("wisp"), "vm1");
        let plan = plan.unwrap_or_default();
        let dirs: Vec<&Path> = plan.iter().map(|c| c.dir.as_path()).collect();
        assert_eq!(
            dirs,
            [
                Path::new("/cg/memory/svc/a/wisp/vm1"),
                Path::new("/cg/pids/wisp/vm1"),
                Path::new("/cg/unified/wisp/vm1"),
            ]
        );
        assert_eq!(
            plan[0].writes,
            vec![("memory.limit_in_bytes", "8192".into())]
        );
        assert_eq!(plan[2].writes, vec![("cpu.max", "1000 2000".into())]);
        // Only the v2 cgroup needs controllers enabled above it, and only its own.
        assert!(plan[0].v2_root.is_none() && plan[0].controllers.is_empty());
        assert_eq!(plan[2].controllers, ["cpu"]);
    }

    #[test]
    fn a_controller_no_hierarchy_has_is_refused() {
        let (hierarchies, own) = hybrid();
        let hierarchies = Hierarchies {
            v1: hierarchies.v1[..1].to_vec(),
            ..hierarchies
        };
        let limits: Vec<Limit> = Limit::parse("pids.max=1").into_iter().collect();
        let plan = plan_in(&hierarchies, own, &limits, Path::new("wisp"), "vm1");
        assert!(matches!(plan, Err(JailError::NoController(c)) if c == "pids"));
    }

    #[test]
    fn controllers_are_enabled_from_the_v2_root_down_before_the_cgroup_is_made() {
        let root = std::env::temp_dir().join(format!("wisp-jailer-cg-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        // A stand-in for a cgroup2 mount: subtree_control files are plain files here.
        fs::create_dir_all(root.join("wisp")).unwrap_or_default();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap_or_default();
        fs::write(root.join("wisp/cgroup.subtree_control"), "").unwrap_or_default();
        let cgroup = VmCgroup {
            dir: root.join("wisp/vm1"),
            v2_root: Some(root.clone()),
            controllers: vec!["memory"],
            writes: vec![("memory.max", "4096".into())],
        };
        let created = create(std::slice::from_ref(&cgroup));
        let read = |p: &str| fs::read_to_string(root.join(p)).unwrap_or_default();
        let seen = (
            read("cgroup.subtree_control"),
            read("wisp/cgroup.subtree_control"),
        );
        let limit = read("wisp/vm1/memory.max");
        let _ = fs::remove_dir_all(&root);
        assert!(created.is_ok(), "{created:?}");
        assert_eq!(seen, ("+memory".into(), "+memory".into()));
        assert_eq!(limit, "4096");
    }

    #[test]
    fn v1_hierarchies_get_the_same_limits_under_their_own_names() {
        let writes = |spec| {
            Limit::parse(spec)
                .map(|l| l.v1_writes())
                .unwrap_or_default()
        };
        assert_eq!(
            writes("memory.max=4096"),
            vec![("memory.limit_in_bytes", "4096".into())]
        );
        assert_eq!(
            writes("memory.max=max"),
            vec![("memory.limit_in_bytes", "-1".into())]
        );
        assert_eq!(writes("pids.max=7"), vec![("pids.max", "7".into())]);
        assert_eq!(
            writes("cpu.max=50000 100000"),
            vec![
                ("cpu.cfs_period_us", "100000".into()),
                ("cpu.cfs_quota_us", "50000".into())
            ]
        );
        assert_eq!(
            writes("cpu.max=max"),
            vec![("cpu.cfs_quota_us", "-1".into())]
        );
    }
}
