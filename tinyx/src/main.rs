//! `tinyx`: build minimal guest kernels and initramfs images.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use wisp_tinyx::app_image::{build_image, ImageReport, ImageSpec, APP_START_MARKER};
use wisp_tinyx::image_min::minimize_image;
use wisp_tinyx::initramfs::{build_initramfs, InitramfsSpec, INIT_MARKER};
use wisp_tinyx::kernel::{build_kernel, build_kernel_from, keyboard_fragments};
use wisp_tinyx::minimize::{minimize, MinimizeRequest, Strategy};
use wisp_tinyx::qemu::{boot, QemuBoot};
use wisp_tinyx::{default_guest, GuestError};

const USAGE: &str = "usage:
  tinyx kernel [--fragment FILE]... [--keyboard] [--out DIR]
      build (or take from the cache) vmlinux + bzImage; default fragments:
      microvm.config + app.config + acpi.config + fs.config + balloon.config + server.config (IPv6,
      for application images) + container.config; --keyboard adds keyboard.config (i8042
      keyboard and VT, so the guest acts on the API's SendCtrlAltDel)
  tinyx initramfs [--app BIN] [--init SCRIPT] [--add SRC:DST]... --out FILE
  tinyx guest
      build (or take from the cache) the default kernel + initramfs; print paths
  tinyx boot --kernel FILE --initramfs FILE [--marker TEXT] [--timeout SECS]
             [--check CMD --port N]
      boot under QEMU (-M microvm, TCG); exit 0 when the marker is printed; with --check (an
      application image): guest 10.0.2.15 (ip=), port N forwarded, exit 0 once CMD passes
      ($TINYX_GUEST is the forwarded host:port)
  tinyx minimize --fragment FILE [--base FILE]... --boot-check CMD
                 [--initramfs FILE] [--only OPT,OPT...] [--one-by-one] [--out FILE]
  tinyx minimize --fragment FILE [--base FILE]... --app-check CMD --port N --initramfs IMAGE ...
      turn options of FILE off while CMD still succeeds; CMD gets TINYX_KERNEL,
      TINYX_BZIMAGE, TINYX_CONFIG and TINYX_INITRAMFS; --app-check makes the oracle a boot of
      the application image IMAGE whose health check CMD must pass (tinyx boot --check)
  tinyx image --deb PKG [--deb PKG]... [--run CMD] [--port N] [--rootfs] [--out DIR]
      an application image from Debian packages: their dependency closure (apt), unpacked and
      configured (maintainer scripts in a chroot: needs root), trimmed, with an /init that
      configures the network from ip= and runs CMD (default: the first package's name) in the
      foreground; the build runs CMD once in a private namespace and fails if it exits at once
      (or never listens on N). Prints the packages and the sizes; --out copies the image there
  tinyx minimize-image --deb PKG... [--run CMD] [--port N] --check CHECK [--out DIR]
      the image above, trimmed by trial runs: CMD runs from the image tree (chroot, private
      namespaces) under strace until CHECK (a host shell command; $TINYX_GUEST is the
      application's address) passes; files it never touched are removed, and the result is
      kept only if CHECK passes again on the trimmed tree
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
    #[error(transparent)]
    ImageMin(#[from] wisp_tinyx::image_min::ImageMinError),
    #[error(transparent)]
    Image(#[from] wisp_tinyx::app_image::ImageError),
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
    let check = args.one("--check");
    let marker = if check.is_some() && args.one("--marker").is_none() {
        APP_START_MARKER.to_string()
    } else {
        marker
    };
    let mut spec = QemuBoot::new(&kernel, &initramfs, &marker);
    if let Some(check) = check {
        let port = args.required("--port")?;
        spec.guest_port = port
            .parse()
            .map_err(|_| CliError::Usage(format!("--port wants a TCP port, got {port:?}")))?;
        spec.check = Some(check);
        spec.memory_mib = 512;
    }
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
    if spec.check.is_some() {
        println!(
            "health check {}",
            ms(outcome.time_to_check).replace("never", "never passed")
        );
        if outcome.time_to_check.is_none() && !args.flag("--verbose") {
            let lines: Vec<&str> = outcome.console.lines().collect();
            eprintln!("{}", lines[lines.len().saturating_sub(20)..].join("\n"));
        }
        return Ok(outcome.time_to_check.is_some());
    }
    if !outcome.reached_marker() && !args.flag("--verbose") {
        let lines: Vec<&str> = outcome.console.lines().collect();
        eprintln!("{}", lines[lines.len().saturating_sub(20)..].join("\n"));
    }
    Ok(outcome.reached_marker())
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
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
        boot_check: match args.one("--app-check") {
            Some(check) => {
                let port = args.required("--port")?;
                if args.one("--initramfs").is_none() {
                    return Err(CliError::Usage(
                        "--app-check needs --initramfs (an application image)".into(),
                    ));
                }
                let exe = std::env::current_exe().map_err(|source| CliError::Read {
                    path: "/proc/self/exe".into(),
                    source,
                })?;
                format!(
                    "{} boot --kernel \"$TINYX_KERNEL\" --initramfs \"$TINYX_INITRAMFS\" \
                     --port {} --check {}",
                    shell_quote(&exe.to_string_lossy()),
                    shell_quote(&port),
                    shell_quote(&check)
                )
            }
            None => args.required("--boot-check")?,
        },
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

fn image_spec(args: &Args) -> Result<ImageSpec, CliError> {
    let port = match args.one("--port") {
        Some(p) => Some(
            p.parse()
                .map_err(|_| CliError::Usage(format!("--port wants a TCP port, got {p:?}")))?,
        ),
        None => None,
    };
    Ok(ImageSpec {
        packages: args.all("--deb"),
        run: args.one("--run"),
        port,
        rootfs: args.flag("--rootfs"),
    })
}

fn print_image(r: &ImageReport) {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
    println!("packages ({}): {}", r.packages.len(), r.packages.join(" "));
    println!("command {}", r.command);
    println!(
        "size: Debian installed {} ({} B), unpacked {} ({} B), trimmed {} ({} B), \
         initramfs.cpio.gz {} ({} B)",
        mib(r.installed_bytes),
        r.installed_bytes,
        mib(r.unpacked_bytes),
        r.unpacked_bytes,
        mib(r.trimmed_bytes),
        r.trimmed_bytes,
        mib(r.initramfs_bytes),
        r.initramfs_bytes
    );
}

/// Copies an image entry's artifacts into `out` (a directory).
fn copy_out(r: &ImageReport, out: &std::path::Path) -> Result<(), CliError> {
    let copy_err = |path: PathBuf| move |source| CliError::Copy { path, source };
    std::fs::create_dir_all(out).map_err(copy_err(out.to_path_buf()))?;
    for name in ["initramfs.cpio.gz", "rootfs.ext4", "report.txt"] {
        let from = r.entry.join(name);
        if from.is_file() {
            let to = out.join(name);
            std::fs::copy(&from, &to).map_err(copy_err(to.clone()))?;
        }
    }
    Ok(())
}

fn cmd_image(args: &Args) -> Result<(), CliError> {
    let r = build_image(&image_spec(args)?)?;
    print_image(&r);
    println!("entry {}", r.entry.display());
    println!("initramfs {}", r.initramfs().display());
    if r.rootfs_image().is_file() {
        println!("rootfs {}", r.rootfs_image().display());
    }
    if let Some(out) = args.one("--out") {
        copy_out(&r, std::path::Path::new(&out))?;
        println!("copied to {out}");
    }
    Ok(())
}

fn cmd_minimize_image(args: &Args) -> Result<(), CliError> {
    let check = args.required("--check")?;
    let r = minimize_image(&image_spec(args)?, &check)?;
    println!("untrimmed:");
    print_image(&r.base);
    println!(
        "trimmed by trial runs: {} files removed, {} kept",
        r.files_removed, r.files_kept
    );
    print_image(&r.trimmed);
    println!("entry {}", r.trimmed.entry.display());
    println!("initramfs {}", r.trimmed.initramfs().display());
    if let Some(out) = args.one("--out") {
        copy_out(&r.trimmed, std::path::Path::new(&out))?;
        println!("copied to {out}");
    }
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
            &[
                "--kernel",
                "--initramfs",
                "--marker",
                "--timeout",
                "--check",
                "--port",
            ],
        )?),
        "minimize" => cmd_minimize(&Args::parse(
            rest,
            &["--one-by-one"],
            &[
                "--fragment",
                "--base",
                "--boot-check",
                "--app-check",
                "--port",
                "--initramfs",
                "--only",
                "--out",
            ],
        )?)
        .map(|_| true),
        "image" => cmd_image(&Args::parse(
            rest,
            &["--rootfs"],
            &["--deb", "--run", "--port", "--out"],
        )?)
        .map(|_| true),
        "minimize-image" => cmd_minimize_image(&Args::parse(
            rest,
            &[],
            &["--deb", "--run", "--port", "--check", "--out"],
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
