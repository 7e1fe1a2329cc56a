//! `tinyx`: build minimal guest kernels and initramfs images.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use wisp_tinyx::initramfs::{build_initramfs, InitramfsSpec, INIT_MARKER};
use wisp_tinyx::kernel::{build_kernel, build_kernel_from, keyboard_fragments};
use wisp_tinyx::minimize::{minimize, MinimizeRequest, Strategy};
use wisp_tinyx::qemu::{boot, QemuBoot};
use wisp_tinyx::{default_guest, GuestError};

const USAGE: &str = "usage:
  tinyx kernel [--fragment FILE]... [--keyboard] [--out DIR]
      build (or take from the cache) vmlinux + bzImage; default fragments:
      microvm.config + app.config + acpi.config + fs.config + balloon.config; --keyboard adds keyboard.config (i8042 keyboard
      and VT, so the guest acts on the API's SendCtrlAltDel)
  tinyx initramfs [--app BIN] [--init SCRIPT] [--add SRC:DST]... --out FILE
  tinyx guest
      build (or take from the cache) the default kernel + initramfs; print paths
  tinyx boot --kernel FILE --initramfs FILE [--marker TEXT] [--timeout SECS]
      boot under QEMU (-M microvm, TCG); exit 0 when the marker is printed
  tinyx minimize --fragment FILE [--base FILE]... --boot-check CMD
                 [--initramfs FILE] [--only OPT,OPT...] [--one-by-one] [--out FILE]
      turn options of FILE off while CMD still succeeds; CMD gets TINYX_KERNEL,
      TINYX_BZIMAGE, TINYX_CONFIG and TINYX_INITRAMFS
cache: $WISP_CACHE/tinyx (default ~/.cache/wisp/tinyx)";

/// Errors of the command line itself.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}\n\n{USAGE}")]
    Usage(String),
    #[error(transparent)]
    Kernel(#[from] wisp_tinyx::kernel::KernelError),
    #[error(transparent)]
    Initramfs(#[from] wisp_tinyx::initramfs::InitramfsError),
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error(transparent)]
    Minimize(#[from] wisp_tinyx::minimize::MinimizeError),
    #[error(transparent)]
    Qemu(#[from] wisp_tinyx::qemu::QemuError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot copy to {path}: {source}")]
    Copy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `--name value` pairs and bare `--flag`s, in order.
struct Args {
    pairs: Vec<(String, Option<String>)>,
}

impl Args {
    fn parse(args: &[String], flags: &[&str], valued: &[&str]) -> Result<Self, CliError> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if flags.contains(&a.as_str()) {
                pairs.push((a.clone(), None));
            } else if valued.contains(&a.as_str()) {
                let v = it
                    .next()
                    .ok_or_else(|| CliError::Usage(format!("{a} needs a value")))?;
                pairs.push((a.clone(), Some(v.clone())));
            } else {
                return Err(CliError::Usage(format!("unexpected argument {a:?}")));
            }
        }
        Ok(Self { pairs })
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }

    fn one(&self, name: &str) -> Option<String> {
        self.all(name).pop()
    }

    fn required(&self, name: &str) -> Result<String, CliError> {
        self.one(name)
            .ok_or_else(|| CliError::Usage(format!("{name} is required")))
    }

    fn flag(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n == name)
    }
}

fn cmd_kernel(args: &Args) -> Result<(), CliError> {
    let fragments: Vec<PathBuf> = args
        .all("--fragment")
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let k = if args.flag("--keyboard") {
        if !fragments.is_empty() {
            return Err(CliError::Usage(
                "--keyboard extends the default fragments; give keyboard.config as a \
                 --fragment after your own instead"
                    .into(),
            ));
        }
        build_kernel_from(&keyboard_fragments())?
    } else {
        build_kernel(&fragments)?
    };
    let (vmlinux, bzimage) = match args.one("--out") {
        Some(out) => {
            let out = PathBuf::from(out);
            let copy = |from: &PathBuf, name: &str| -> Result<PathBuf, CliError> {
                let to = out.join(name);
                std::fs::create_dir_all(&out)
                    .and_then(|_| std::fs::copy(from, &to))
                    .map_err(|source| CliError::Copy {
                        path: to.clone(),
                        source,
                    })?;
                Ok(to)
            };
            copy(&k.config, "config")?;
            (copy(&k.vmlinux, "vmlinux")?, copy(&k.bzimage, "bzImage")?)
        }
        None => (k.vmlinux, k.bzimage),
    };
    println!("vmlinux {}", vmlinux.display());
    println!("bzImage {}", bzimage.display());
    Ok(())
}

fn cmd_initramfs(args: &Args) -> Result<(), CliError> {
    let init_script = match args.one("--init") {
        Some(p) => Some(
            std::fs::read_to_string(&p).map_err(|source| CliError::Read {
                path: p.into(),
                source,
            })?,
        ),
        None => None,
    };
    let adds = args
        .all("--add")
        .into_iter()
        .map(|a| match a.split_once(':') {
            Some((src, dst)) => Ok((PathBuf::from(src), dst.to_string())),
            None => Err(CliError::Usage(format!("--add wants SRC:DST, got {a:?}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec = InitramfsSpec {
        app: args.one("--app").map(PathBuf::from),
        init_script,
        adds,
    };
    let out = PathBuf::from(args.required("--out")?);
    build_initramfs(&spec, &out)?;
    println!("initramfs {}", out.display());
    Ok(())
}

fn cmd_guest() -> Result<(), CliError> {
    let g = default_guest()?;
    println!("vmlinux {}", g.vmlinux.display());
    println!("bzImage {}", g.bzimage.display());
    println!("initramfs {}", g.initramfs.display());
    Ok(())
}

fn cmd_boot(args: &Args) -> Result<bool, CliError> {
    let kernel = PathBuf::from(args.required("--kernel")?);
    let initramfs = PathBuf::from(args.required("--initramfs")?);
    let marker = args
        .one("--marker")
        .unwrap_or_else(|| INIT_MARKER.to_string());
    let mut spec = QemuBoot::new(&kernel, &initramfs, &marker);
    if let Some(t) = args.one("--timeout") {
        let secs = t
            .parse()
            .map_err(|_| CliError::Usage(format!("--timeout wants seconds, got {t:?}")))?;
        spec.deadline = Duration::from_secs(secs);
    }
    let outcome = boot(&spec)?;
    if args.flag("--verbose") {
        eprint!("{}", outcome.console);
    }
    let ms =
        |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{} ms", d.as_millis()));
    println!(
        "banner after {}, marker after {}, guest {}",
        ms(outcome.time_to_banner),
        ms(outcome.time_to_marker),
        if outcome.exited {
            "reset"
        } else {
            "did not reset before the deadline"
        }
    );
    if !outcome.reached_marker() && !args.flag("--verbose") {
        let lines: Vec<&str> = outcome.console.lines().collect();
        eprintln!("{}", lines[lines.len().saturating_sub(20)..].join("\n"));
    }
    Ok(outcome.reached_marker())
}

fn cmd_minimize(args: &Args) -> Result<(), CliError> {
    let fragment = PathBuf::from(args.required("--fragment")?);
    let initramfs = match args.one("--initramfs") {
        Some(p) => PathBuf::from(p),
        None => default_guest()?.initramfs,
    };
    let out = args
        .one("--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| fragment.with_extension("min.config"));
    let req = MinimizeRequest {
        fragment,
        base: args.all("--base").into_iter().map(PathBuf::from).collect(),
        boot_check: args.required("--boot-check")?,
        initramfs,
        candidates: args.one("--only").map(|s| {
            s.split(',')
                .map(|o| o.trim().trim_start_matches("CONFIG_").to_string())
                .filter(|o| !o.is_empty())
                .collect()
        }),
        strategy: if args.flag("--one-by-one") {
            Strategy::OneByOne
        } else {
            Strategy::Halves
        },
        out: out.clone(),
    };
    let r = minimize(&req)?;
    println!("removed ({}): {}", r.removed.len(), r.removed.join(" "));
    println!("kept ({}): {}", r.kept.len(), r.kept.join(" "));
    println!(
        "trials: {} booted, {} rejected by config check or build",
        r.booted_trials, r.rejected_trials
    );
    println!(
        "vmlinux {} -> {} bytes, bzImage {} -> {} bytes",
        r.sizes_before.0, r.sizes_after.0, r.sizes_before.1, r.sizes_after.1
    );
    println!("minimized fragment {}", out.display());
    Ok(())
}

fn run(argv: &[String]) -> Result<bool, CliError> {
    let (cmd, rest) = argv
        .split_first()
        .ok_or_else(|| CliError::Usage("no command".into()))?;
    match cmd.as_str() {
        "kernel" => cmd_kernel(&Args::parse(
            rest,
            &["--keyboard"],
            &["--fragment", "--out"],
        )?)
        .map(|_| true),
        "initramfs" => cmd_initramfs(&Args::parse(
            rest,
            &[],
            &["--app", "--init", "--add", "--out"],
        )?)
        .map(|_| true),
        "guest" => {
            Args::parse(rest, &[], &[])?;
            cmd_guest().map(|_| true)
        }
        "boot" => cmd_boot(&Args::parse(
            rest,
            &["--verbose"],
            &["--kernel", "--initramfs", "--marker", "--timeout"],
        )?),
        "minimize" => cmd_minimize(&Args::parse(
            rest,
            &["--one-by-one"],
            &[
                "--fragment",
                "--base",
                "--boot-check",
                "--initramfs",
                "--only",
                "--out",
            ],
        )?)
        .map(|_| true),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(true)
        }
        other => Err(CliError::Usage(format!("unknown command {other:?}"))),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tinyx: {e}");
            ExitCode::from(2)
        }
    }
}
