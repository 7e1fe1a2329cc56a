//! Tinyx application images from Debian packages, serving from a Linux guest under wisp on
//! real KVM inside the test host (tests/testhost): QEMU/TCG → Debian kernel with kvm_amd (L1)
//! → `wisp run --net tap=tap0` → Tinyx kernel + application image (L2).
//!
//! The test process builds the images with `tinyx image` (nginx-light and redis-server from
//! the Debian archive) and the default Tinyx kernel (configs/server.config is part of it); one L1 boot serves both
//! applications in turn on the same tap. L1 talks to them with the real clients (curl and
//! redis-cli, copied in with their libraries): nginx's default page, 100 sequential requests
//! and one more; redis PING, SET/GET. Bad input (a package that does not exist, a command that
//! exits at once) is checked on the build host: a clear error and no cache entry.

mod testhost;

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use testhost::{check_failed, shared_host, value, CommandRun, TestHost, TestHostError};
use wisp_tinyx::app_image::{build_image, ImageError, ImageReport, ImageSpec};
use wisp_tinyx::image_min::{minimize_image, ImageMinReport};

/// What L1 runs per application (busybox sh): boot the image under wisp on tap0, wait until
/// the application answers, then the checks; prints `key=value` facts and the guest console.
const APP_SCRIPT: &str = r#"# L1's PATH is /bin: the host programs are at their host paths.
app=$1
image=$2
vmm=$3
guest=10.0.2.15
cmdline="console=ttyS0 quiet panic=-1 reboot=k pci=off ip=$guest::10.0.2.1:255.255.255.0::eth0:off"
uptime_s() { cut -d' ' -f1 /proc/uptime; }
if [ "$vmm" = firecracker ]; then
    cat > /tmp/fc.json <<FC_EOF
{"boot-source": {"kernel_image_path": "/guest/vmlinux", "initrd_path": "$image",
  "boot_args": "$cmdline"},
 "drives": [],
 "machine-config": {"vcpu_count": 1, "mem_size_mib": 512},
 "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
  "guest_mac": "02:00:00:00:00:02"}]}
FC_EOF
fi
start=$(uptime_s)
case "$vmm" in
firecracker) "$FIRECRACKER" --level Error --no-api --config-file /tmp/fc.json ;;
*) wisp run --kernel /guest/vmlinux --initrd "$image" --mem 512 --vcpus 1 --cmdline "$cmdline" \
    --net tap=tap0,mac=02:00:00:00:00:02 ;;
esac > "/tmp/$app-$vmm-vm.log" 2>&1 &
vm=$!
ready=
give_up=$(awk "BEGIN { print $start + 240 }")
while kill -0 "$vm" 2>/dev/null && awk "BEGIN { exit !($(uptime_s) < $give_up) }"; do
    case "$app" in
    nginx) /usr/bin/curl -s -m 2 -o /tmp/page.html http://$guest/ && ready=1 ;;
    redis) [ "$(/usr/bin/redis-cli -h $guest PING 2>/dev/null)" = PONG ] && ready=1 ;;
    esac
    [ -n "$ready" ] && break
    sleep 0.2
done
end=$(uptime_s)
echo "ready=${ready:-no}"
echo "first-answer-s=$(awk "BEGIN { print $end - $start }")"
case "$app" in
nginx)
    echo "welcome=$(grep -c '<h1>Welcome to nginx!</h1>' /tmp/page.html 2>/dev/null)"
    if [ "$vmm" = wisp ]; then
        ok=0
        n=0
        while [ "$n" -lt 100 ]; do
            code=$(/usr/bin/curl -s -m 5 -o /dev/null -w '%{http_code}' http://$guest/)
            [ "$code" = 200 ] && ok=$((ok + 1))
            n=$((n + 1))
        done
        echo "sequential-200=$ok"
        echo "after-100=$(/usr/bin/curl -s -m 5 http://$guest/ | grep -c '<h1>Welcome to nginx!</h1>')"
        echo "missing-404=$(/usr/bin/curl -s -m 5 -o /dev/null -w '%{http_code}' http://$guest/no-such-page)"
    fi
    ;;
redis)
    echo "ping=$(/usr/bin/redis-cli -h $guest PING)"
    echo "set=$(/usr/bin/redis-cli -h $guest SET wisp-key "$4")"
    echo "get=$(/usr/bin/redis-cli -h $guest GET wisp-key)"
    ;;
esac
kill "$vm" 2>/dev/null
wait "$vm" 2>/dev/null
echo "app-started=$(grep -c 'tinyx: starting the application' "/tmp/$app-$vmm-vm.log")"
echo "--- guest console (tail) ---"
tail -n 25 "/tmp/$app-$vmm-vm.log"
"#;

/// Firecracker for the comparison: `$FIRECRACKER` (as wisp-bench reads it), else
/// `$WISP_CACHE/firecracker/bin/firecracker` (default cache ~/.cache/wisp), if it exists.
fn firecracker() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FIRECRACKER") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let cache = std::env::var_os("WISP_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wisp")))?;
    Some(cache.join("firecracker/bin/firecracker")).filter(|p| p.is_file())
}

/// The guard for one application scenario inside L1 (boot, checks, 100 requests); TCG is slow.
const APP_TIMEOUT_S: u32 = 400;

/// A value only this run's redis guest can return.
fn marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("wisp-redis-{}-{nanos}", std::process::id())
    })
}

fn nginx_spec() -> ImageSpec {
    ImageSpec {
        packages: vec!["nginx-light".into()],
        run: Some("nginx -g 'daemon off;'".into()),
        port: Some(80),
        rootfs: false,
    }
}

fn redis_spec() -> ImageSpec {
    ImageSpec {
        packages: vec!["redis-server".into()],
        run: Some("redis-server --bind 0.0.0.0 --protected-mode no --save ''".into()),
        port: Some(6379),
        rootfs: false,
    }
}

/// Builds in this process one at a time, so that a test comparing the cache before and after
/// its build sees only its own changes.
static BUILDS: Mutex<()> = Mutex::new(());

/// The health checks `tinyx minimize-image` trims against (run on the build host).
const NGINX_CHECK: &str = "curl -sf http://$TINYX_GUEST/ | grep -q 'Welcome to nginx'";
const REDIS_CHECK: &str = "redis-cli -h $TINYX_GUEST PING | grep -q PONG && \
     redis-cli -h $TINYX_GUEST SET k v | grep -q OK && redis-cli -h $TINYX_GUEST GET k | grep -qx v";

/// The images: nginx and redis as `tinyx image` builds them, and each trimmed by trial runs.
struct Images {
    nginx: ImageReport,
    redis: ImageReport,
    nginx_min: ImageMinReport,
    redis_min: ImageMinReport,
}

/// The images, built once per process.
fn images() -> &'static Result<Images, String> {
    static IMAGES: OnceLock<Result<Images, String>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        let nginx = build_image(&nginx_spec()).map_err(|e| format!("nginx image: {e}"))?;
        let redis = build_image(&redis_spec()).map_err(|e| format!("redis image: {e}"))?;
        let nginx_min = minimize_image(&nginx_spec(), NGINX_CHECK)
            .map_err(|e| format!("nginx image trimmed by trial runs: {e}"))?;
        let redis_min = minimize_image(&redis_spec(), REDIS_CHECK)
            .map_err(|e| format!("redis image trimmed by trial runs: {e}"))?;
        Ok(Images {
            nginx,
            redis,
            nginx_min,
            redis_min,
        })
    })
}

fn boot_shared_host() -> Result<TestHost, TestHostError> {
    // The static wisp first: it builds while another process may hold the kernel cache lock.
    testhost::static_wisp()?;
    let images = images().as_ref().map_err(|e| TestHostError::Check {
        check: e.clone(),
        run: String::new(),
    })?;
    let kernel = wisp_tinyx::kernel::build_kernel_from(&wisp_tinyx::kernel::default_fragments())
        .map_err(|e| TestHostError::Check {
            check: format!("cannot build the Tinyx kernel: {e}"),
            run: String::new(),
        })?;
    let mut script = format!(
        "cat > /tmp/app.sh <<'APP_EOF'\n{APP_SCRIPT}APP_EOF\n\
         run tap 30 sh -c 'tunctl -t tap0 && ip addr add 10.0.2.1/24 dev tap0 && \
         ip link set tap0 up'\n\
         run nginx {APP_TIMEOUT_S} sh /tmp/app.sh nginx /guest/nginx.cpio.gz wisp\n\
         run redis {APP_TIMEOUT_S} sh /tmp/app.sh redis /guest/redis.cpio.gz wisp {marker}\n\n",
        marker = marker()
    );
    let mut builder = TestHost::builder();
    if let Some(fc) = firecracker() {
        script.push_str(&format!(
            "export FIRECRACKER={fc}\nrun nginx-firecracker {APP_TIMEOUT_S} sh /tmp/app.sh nginx \
             /guest/nginx.cpio.gz firecracker\n\
             run nginx-wisp-again {APP_TIMEOUT_S} sh /tmp/app.sh nginx /guest/nginx.cpio.gz \
             first-answer-only\n",
            fc = fc.display()
        ));
        builder = builder.host_program(fc);
    }
    script.push_str(&format!(
        "run nginx-min {APP_TIMEOUT_S} sh /tmp/app.sh nginx /guest/nginx-min.cpio.gz \
         first-answer-only\n\
         run redis-min {APP_TIMEOUT_S} sh /tmp/app.sh redis /guest/redis-min.cpio.gz wisp \
         {marker}-min\n",
        marker = marker()
    ));
    builder
        .kernel_module("tun")
        .file(&kernel.vmlinux, "/guest/vmlinux")
        .file(images.nginx.initramfs(), "/guest/nginx.cpio.gz")
        .file(images.redis.initramfs(), "/guest/redis.cpio.gz")
        .file(
            images.nginx_min.trimmed.initramfs(),
            "/guest/nginx-min.cpio.gz",
        )
        .file(
            images.redis_min.trimmed.initramfs(),
            "/guest/redis-min.cpio.gz",
        )
        .host_program("/usr/bin/curl")
        .host_program("/usr/bin/redis-cli")
        .timeout(std::time::Duration::from_secs(1800))
        .script(&script)
        .boot()
}

fn host() -> &'static TestHost {
    shared_host(boot_shared_host)
}

fn expect_value(run: &CommandRun, key: &str, want: &str) -> Result<(), TestHostError> {
    let got = value(run, key)?;
    if got == want {
        Ok(())
    } else {
        Err(check_failed(run, format!("{key}={got}, expected {want}")))
    }
}

/// The application answered, and the guest console shows Tinyx's init started it.
fn served(name: &str) -> Result<&'static CommandRun, TestHostError> {
    let tap = host().run("tap")?;
    if tap.exit_code != Some(0) {
        return Err(check_failed(tap, "L1 could not create and configure tap0"));
    }
    let run = host().run(name)?;
    if run.timed_out() {
        return Err(check_failed(
            run,
            "the scenario was killed by its L1 timeout",
        ));
    }
    expect_value(run, "ready", "1")?;
    // /init's line before it starts the application (wisp_tinyx::app_image::APP_START_MARKER).
    expect_value(run, "app-started", "1")?;
    eprintln!(
        "{name}: VMM start -> first answer {} s (L1 uptime clock, nested TCG)",
        value(run, "first-answer-s")?
    );
    Ok(run)
}

/// nginx-light from Debian serves its default page to curl in L1, and still does after 100
/// sequential requests; an unknown path gets nginx's 404.
#[test]
fn nginx_image_serves_its_default_page() -> Result<(), TestHostError> {
    let run = served("nginx")?;
    expect_value(run, "welcome", "1")?;
    expect_value(run, "sequential-200", "100")?;
    expect_value(run, "after-100", "1")?;
    expect_value(run, "missing-404", "404")?;
    Ok(())
}

/// redis-server from Debian answers redis-cli in L1: PING, and a SET/GET round trip of a value
/// unique to this run.
#[test]
fn redis_image_answers_ping_and_set_get() -> Result<(), TestHostError> {
    let run = served("redis")?;
    expect_value(run, "ping", "PONG")?;
    expect_value(run, "set", "OK")?;
    expect_value(run, "get", marker())?;
    Ok(())
}

/// The images trimmed by trial runs (only the files the application opened on the build
/// host) still serve inside the guest.
#[test]
fn images_trimmed_by_trial_runs_still_serve() -> Result<(), TestHostError> {
    let run = served("nginx-min")?;
    expect_value(run, "welcome", "1")?;
    let run = served("redis-min")?;
    expect_value(run, "ping", "PONG")?;
    expect_value(run, "get", &format!("{}-min", marker()))?;
    Ok(())
}

/// The figures of the builds: Debian's closure as installed vs the trimmed tree vs the
/// compressed image, then after trial trimming; each step is smaller.
#[test]
fn images_are_smaller_than_the_debian_closure() -> Result<(), String> {
    let images = images().as_ref().map_err(Clone::clone)?;
    for (r, min) in [
        (&images.nginx, &images.nginx_min),
        (&images.redis, &images.redis_min),
    ] {
        eprintln!(
            "{}: trial trimming removed {} files, kept {}: tree {} B, initramfs {} B",
            r.command,
            min.files_removed,
            min.files_kept,
            min.trimmed.trimmed_bytes,
            min.trimmed.initramfs_bytes
        );
        assert!(min.trimmed.initramfs_bytes < r.initramfs_bytes, "{min:?}");
        assert!(min.files_removed > 0, "{min:?}");
        eprintln!(
            "{}: {} packages, installed {} B, unpacked {} B, trimmed {} B, initramfs {} B",
            r.command,
            r.packages.len(),
            r.installed_bytes,
            r.unpacked_bytes,
            r.trimmed_bytes,
            r.initramfs_bytes
        );
        assert!(r.trimmed_bytes < r.unpacked_bytes, "{r:?}");
        assert!(r.initramfs_bytes < r.trimmed_bytes, "{r:?}");
        assert!(r.packages.iter().any(|p| p.starts_with("libc6=")), "{r:?}");
        assert!(!r.packages.iter().any(|p| p.starts_with("dpkg=")), "{r:?}");
    }
    Ok(())
}

/// The same Tinyx kernel and nginx image under Firecracker (its `--config-file` document,
/// virtio-net on the same tap): nginx serves its page there too, and the test prints wisp
/// start → first answer for both VMMs (wisp measured again right after Firecracker, under the
/// same L1 conditions) and their ratio. A figure rather than a check of wisp, and it needs a
/// Firecracker binary (`$FIRECRACKER` or `$WISP_CACHE/firecracker/bin/firecracker`), hence
/// ignored by default: `cargo test --test linux_tinyx_app -- --include-ignored`.
#[test]
#[ignore = "needs a Firecracker binary; prints the Wisp/Firecracker first-answer figure"]
fn firecracker_serves_the_same_image_for_comparison() -> Result<(), TestHostError> {
    if firecracker().is_none() {
        return Err(TestHostError::Check {
            check: "no Firecracker: set FIRECRACKER or put it at \
                    $WISP_CACHE/firecracker/bin/firecracker"
                .into(),
            run: String::new(),
        });
    }
    let fc = served("nginx-firecracker")?;
    expect_value(fc, "welcome", "1")?;
    let wisp = served("nginx-wisp-again")?;
    expect_value(wisp, "welcome", "1")?;
    let secs = |run: &CommandRun| -> Result<f64, TestHostError> {
        value(run, "first-answer-s")?
            .parse()
            .map_err(|_| check_failed(run, "first-answer-s is not a number"))
    };
    let (w, f) = (secs(wisp)?, secs(fc)?);
    eprintln!(
        "start -> first HTTP answer (L1 uptime clock, nested TCG): wisp {w:.2} s, \
         firecracker {f:.2} s, wisp/firecracker {:.2}",
        w / f
    );
    Ok(())
}

/// The application entries of the tinyx cache, and any staging directories of theirs.
fn app_entries() -> Vec<PathBuf> {
    let dir = wisp_tinyx::cache::tinyx_dir().expect("tinyx cache directory");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the tinyx cache")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("app-"))
        })
        .collect();
    v.sort();
    v
}

/// A package that does not exist is named in the error, and nothing enters the cache.
#[test]
fn unknown_package_is_refused_by_name() {
    let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let before = app_entries();
    let err = build_image(&ImageSpec {
        packages: vec!["wisp-no-such-package".into()],
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, ImageError::Debian(_)) && err.to_string().contains("wisp-no-such-package"),
        "{err}"
    );
    assert_eq!(app_entries(), before);
}

/// A command that exits at once fails the build with its status and output, and leaves no
/// cache entry (nor a staging directory).
#[test]
fn command_that_exits_at_once_fails_the_build() {
    let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let before = app_entries();
    let err = build_image(&ImageSpec {
        packages: vec!["nginx-light".into()],
        run: Some("nginx -t -c /etc/nginx/no-such.conf".into()),
        port: None,
        rootfs: false,
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ImageError::ExitedAtOnce { .. }) && text.contains("no-such.conf"),
        "{text}"
    );
    assert_eq!(app_entries(), before);
}

/// Debian's nginx packages form a dependency loop (nginx → libnginx-mod-http-echo → the
/// virtual nginx-abi-* that nginx provides): resolution takes each package once.
#[test]
fn dependency_loop_resolves_each_package_once() {
    let pkgs = wisp_tinyx::debian::resolve(&["nginx-light".to_string()]).expect("resolve");
    let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
    for n in ["nginx", "libnginx-mod-http-echo", "nginx-light", "libc6"] {
        assert_eq!(names.iter().filter(|x| **x == n).count(), 1, "{names:?}");
    }
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("libc6") < pos("nginx"), "{names:?}");
}
