//! Trial-boot minimisation (LightVM §4.1, Tinyx): turn candidate options of a
//! fragment off, in halves and then one at a time (delta debugging), rebuild
//! incrementally, and keep the change when a boot check still succeeds.
//!
//! A trial whose `.config` does not honour the rest of the fragments (another
//! requested option depends on the one turned off, or something selects it) is
//! rejected without building.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::{self, CacheError};
use crate::fragment::{Fragment, FragmentError, OptionValue};
use crate::kernel::{KernelError, WorkTree};
use crate::source::{find_source, SourceError};

/// Errors during minimisation.
#[derive(Debug, thiserror::Error)]
pub enum MinimizeError {
    #[error(transparent)]
    Fragment(#[from] FragmentError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("candidate CONFIG_{0} is not set to y or m in the fragment being minimised")]
    NotACandidate(String),
    #[error("the boot check fails with the unminimised fragments, so nothing can be learned: {0}")]
    BaselineFails(String),
    #[error("cannot run boot check `{command}`: {source}")]
    Check {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How candidates are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Halves, then quarters, ... then single options.
    Halves,
    /// One option at a time.
    OneByOne,
}

/// A minimisation request.
#[derive(Debug, Clone)]
pub struct MinimizeRequest {
    /// The fragment to minimise.
    pub fragment: PathBuf,
    /// Fragments applied before it and left as they are.
    pub base: Vec<PathBuf>,
    /// A shell command; exit status 0 means the trial kernel is good. It gets
    /// `TINYX_KERNEL` (vmlinux), `TINYX_BZIMAGE`, `TINYX_CONFIG` and
    /// `TINYX_INITRAMFS` in its environment.
    pub boot_check: String,
    /// The initramfs handed to the boot check.
    pub initramfs: PathBuf,
    /// Options to try (without `CONFIG_`); `None`: every `=y`/`=m` of the fragment.
    pub candidates: Option<Vec<String>>,
    pub strategy: Strategy,
    /// Where the minimised fragment is written.
    pub out: PathBuf,
}

/// What a minimisation found.
#[derive(Debug, Clone, Default)]
pub struct MinimizeReport {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    /// Trials built and booted / rejected by the config check without a build.
    pub booted_trials: usize,
    pub rejected_trials: usize,
    /// (vmlinux, bzImage) sizes before and after.
    pub sizes_before: (u64, u64),
    pub sizes_after: (u64, u64),
}

/// Runs the minimisation; writes the minimised fragment to `req.out`.
pub fn minimize(req: &MinimizeRequest) -> Result<MinimizeReport, MinimizeError> {
    let target = Fragment::load(&req.fragment)?;
    let base = Fragment::merged(
        &req.base
            .iter()
            .map(|p| Fragment::load(p))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let on = |v: &OptionValue| matches!(v, OptionValue::Yes | OptionValue::Module);
    let candidates: Vec<String> = match &req.candidates {
        Some(list) => {
            for c in list {
                if !target.get(c).is_some_and(on) {
                    return Err(MinimizeError::NotACandidate(c.clone()));
                }
            }
            list.clone()
        }
        None => target
            .entries
            .iter()
            .filter(|(_, v)| on(v))
            .map(|(n, _)| n.clone())
            .collect(),
    };

    let src = find_source()?;
    let dir = cache::tinyx_dir()?;
    let _lock = cache::lock(&dir)?;
    let work = WorkTree::open(&src, &dir)?;
    let log = dir.join("logs").join("minimize.log");
    let mut report = MinimizeReport::default();

    let with_off = |off: &[String]| {
        let mut f = target.clone();
        for name in off {
            f.set(name, OptionValue::Off);
        }
        Fragment::merged(&[base.clone(), f])
    };
    let run_trial = |off: &[String],
                     report: &mut MinimizeReport|
     -> Result<Option<(u64, u64)>, MinimizeError> {
        let wanted = with_off(off);
        eprintln!(
            "tinyx: trial without {}",
            if off.is_empty() {
                "nothing (baseline)".into()
            } else {
                off.join(" ")
            }
        );
        let built = match work.build(&wanted, &log, true) {
            Ok(b) => b,
            Err(KernelError::Config(m)) => {
                report.rejected_trials += 1;
                eprintln!("tinyx:   rejected by config check: {}", m[0]);
                return Ok(None);
            }
            Err(KernelError::Make { tail, .. }) => {
                report.rejected_trials += 1;
                eprintln!(
                    "tinyx:   build fails: {}",
                    tail.lines().last().unwrap_or("")
                );
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        report.booted_trials += 1;
        let status = Command::new("sh")
            .arg("-c")
            .arg(&req.boot_check)
            .env("TINYX_KERNEL", &built.vmlinux)
            .env("TINYX_BZIMAGE", &built.bzimage)
            .env("TINYX_CONFIG", &built.config)
            .env("TINYX_INITRAMFS", &req.initramfs)
            .status()
            .map_err(|source| MinimizeError::Check {
                command: req.boot_check.clone(),
                source,
            })?;
        let sizes = (file_size(&built.vmlinux), file_size(&built.bzimage));
        eprintln!(
            "tinyx:   boot check {} (vmlinux {} B, bzImage {} B)",
            if status.success() { "passed" } else { "failed" },
            sizes.0,
            sizes.1
        );
        Ok(status.success().then_some(sizes))
    };

    // ddmin revisits some sets (a failed chunk of one is retried in the next
    // pass); each distinct set is built and booted once.
    let mut seen: BTreeMap<Vec<String>, Option<(u64, u64)>> = BTreeMap::new();
    let mut trial = |off: &[String],
                     report: &mut MinimizeReport|
     -> Result<Option<(u64, u64)>, MinimizeError> {
        let mut key = off.to_vec();
        key.sort();
        if let Some(known) = seen.get(&key) {
            return Ok(*known);
        }
        let result = run_trial(off, report)?;
        seen.insert(key, result);
        Ok(result)
    };

    report.sizes_before = trial(&[], &mut report)?
        .ok_or_else(|| MinimizeError::BaselineFails(req.boot_check.clone()))?;
    report.sizes_after = report.sizes_before;

    let mut remaining = candidates;
    let mut chunk = match req.strategy {
        Strategy::Halves => remaining.len().div_ceil(2).max(1),
        Strategy::OneByOne => 1,
    };
    loop {
        let mut i = 0;
        while i < remaining.len() {
            let end = (i + chunk).min(remaining.len());
            let mut off = report.removed.clone();
            off.extend_from_slice(&remaining[i..end]);
            match trial(&off, &mut report)? {
                Some(sizes) => {
                    report.sizes_after = sizes;
                    report.removed.extend(remaining.drain(i..end));
                }
                None => i = end,
            }
        }
        if chunk == 1 || remaining.is_empty() {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    report.kept = remaining;

    let text = std::fs::read_to_string(&req.fragment).map_err(|source| MinimizeError::Write {
        path: req.fragment.clone(),
        source,
    })?;
    let minimized = rewrite_fragment(&text, &report.removed);
    std::fs::write(&req.out, minimized).map_err(|source| MinimizeError::Write {
        path: req.out.clone(),
        source,
    })?;
    Ok(report)
}

/// The fragment text with each removed option turned off in place, with a note.
pub fn rewrite_fragment(text: &str, removed: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let name = line
            .trim()
            .strip_prefix("CONFIG_")
            .and_then(|r| r.split_once('='))
            .map(|(n, _)| n);
        match name {
            Some(n) if removed.iter().any(|r| r == n) => {
                out.push_str(&format!(
                    "# tinyx minimize: boots without {n}\n# CONFIG_{n} is not set\n"
                ));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_options_are_turned_off_in_place_with_a_note() {
        let text = "# net\nCONFIG_NET=y\nCONFIG_PACKET=y\n# CONFIG_IPV6 is not set\n";
        let out = rewrite_fragment(text, &["PACKET".to_string()]);
        assert_eq!(
            out,
            "# net\nCONFIG_NET=y\n# tinyx minimize: boots without PACKET\n# CONFIG_PACKET is not set\n# CONFIG_IPV6 is not set\n"
        );
        let f = Fragment::parse(&out, "min").unwrap();
        assert_eq!(f.get("PACKET"), Some(&OptionValue::Off));
        assert_eq!(f.get("NET"), Some(&OptionValue::Yes));
    }
}
