//! `wisp-jailer` on a real Linux host with real KVM: inside the test host (tests/testhost), a
//! jailed static `wisp` boots a Linux guest (Tinyx kernel, probe initramfs), running as an
//! unprivileged uid with no capabilities, in a root holding only its files and in its own
//! cgroup v2 with the given limits (the test host's kernel has its controllers on cgroup v2,
//! unlike this machine's hybrid layout, so this is also where the v2 path runs for real).
//!
//! L1 runs from its initramfs, where pivot_root is impossible (pivot_root(2): EINVAL when the
//! current root is rootfs), so the L1 script first builds a tmpfs root of the host's
//! directories and runs the jailer chrooted there, as a host that booted normally would.

mod testhost;

use testhost::{check_failed, shared_host, value, L2Guest, TestHost, TestHostError};

const JAILER: &str = env!("CARGO_BIN_EXE_wisp-jailer");

/// As tests/linux_guest.rs: quiet (console bytes are slow under TCG), reset through the i8042.
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=k pci=off";

/// The L1 script: a tmpfs root with the host's programs and the guest bound in, cgroup v2,
/// then the jailer in the background; while the VM runs, its credentials, root and cgroup
/// are printed as `WISP-JAIL key=value` lines.
fn script() -> String {
    // The jailer sits at its build path in L1 (/work/..., /check/... in CI): bind its top
    // directory into the new root beside the host's programs.
    let top = std::path::Path::new(JAILER)
        .components()
        .nth(1)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        r#"cat > /tmp/jailed.sh <<'EOF'
mkdir -p /newroot && mount -t tmpfs tmpfs /newroot || exit 90
for d in bin sbin lib lib64 usr guest {top}; do
    [ -d /$d ] || continue
    mkdir -p /newroot/$d && mount --bind /$d /newroot/$d || exit 91
done
mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/srv /newroot/tmp
mount -t proc proc /newroot/proc && mount -t sysfs sysfs /newroot/sys &&
    mount -t devtmpfs devtmpfs /newroot/dev || exit 92
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || exit 93
chroot /newroot {JAILER} --id l2 --exec-file /bin/wisp --uid 1000 --gid 1001 \
    --bind /guest:/guest:ro --cgroup memory.max=536870912 --cgroup pids.max=64 \
    -- run --kernel /guest/vmlinux --initrd /guest/probe.cpio --mem 256 \
    --cmdline "{CMDLINE}" &
jailer=$!
jail=/newroot/srv/wisp-jail/wisp/l2
i=0
while [ ! -s $jail/wisp.pid ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
pid=$(cat $jail/wisp.pid)
echo "WISP-JAIL pid=$pid"
# Each thread installs its filter before it handles guest or client input, i.e. a moment after
# the process appears: wait (bounded) until the VMM and vCPU threads are there and filtered.
i=0
while [ $i -lt 300 ]; do
    modes=$(cat /proc/$pid/task/*/status 2>/dev/null | grep '^Seccomp:' | cut -f2 | sort -u | tr '\n' ',')
    [ "$modes" = "2," ] && [ $(ls /proc/$pid/task | wc -l) -ge 2 ] && break
    sleep 0.1; i=$((i + 1))
done
for f in Uid Gid CapPrm CapEff CapBnd NoNewPrivs; do
    echo "WISP-JAIL $f=$(grep "^$f:" /proc/$pid/status | cut -f2- | tr '\t' ',')"
done
echo "WISP-JAIL seccomp=$(cat /proc/$pid/task/*/status | grep '^Seccomp:' | cut -f2 | sort -u | tr '\n' ',')"
echo "WISP-JAIL threads=$(ls /proc/$pid/task | wc -l)"
echo "WISP-JAIL root=$(ls /proc/$pid/root | tr '\n' ',')"
echo "WISP-JAIL cgroup=$(cat /proc/$pid/cgroup)"
echo "WISP-JAIL memory.max=$(cat /newroot/sys/fs/cgroup/wisp/l2/memory.max)"
echo "WISP-JAIL pids.max=$(cat /newroot/sys/fs/cgroup/wisp/l2/pids.max)"
wait $jailer
echo "WISP-JAIL jailer-rc=$?"
echo "WISP-JAIL left=$(ls /newroot/srv/wisp-jail/wisp/ | tr '\n' ',')"
EOF
run jailed 240 sh /tmp/jailed.sh
"#
    )
}

fn boot_host() -> Result<TestHost, TestHostError> {
    let guest = L2Guest::tinyx()?;
    TestHost::builder()
        .file(&guest.vmlinux, "/guest/vmlinux")
        .file(&guest.probe_initramfs, "/guest/probe.cpio")
        .host_program(JAILER)
        .script(&script())
        .boot()
}

#[test]
fn jailed_wisp_boots_linux_unprivileged_in_its_root_and_cgroup_v2() -> Result<(), TestHostError> {
    let run = shared_host(boot_host).run("jailed")?;
    if !run.stdout.contains("WISP-L2 init") {
        return Err(check_failed(run, "the jailed guest never reached /init"));
    }
    let expect = |key: &str, want: &str| -> Result<(), TestHostError> {
        let got = value(run, key)?;
        if got == want {
            Ok(())
        } else {
            Err(check_failed(run, format!("{key} is {got:?}, not {want:?}")))
        }
    };
    expect("Uid", "1000,1000,1000,1000")?;
    expect("Gid", "1001,1001,1001,1001")?;
    for caps in ["CapPrm", "CapEff", "CapBnd"] {
        expect(caps, "0000000000000000")?;
    }
    expect("NoNewPrivs", "1")?;
    // Every thread (VMM, API, each vCPU) runs under its seccomp filter (mode 2).
    expect("seccomp", "2,")?;
    let threads: u32 = value(run, "threads")?.parse().unwrap_or(0);
    if threads < 2 {
        return Err(check_failed(run, format!("only {threads} threads seen")));
    }
    // A static wisp needs nothing but itself, its devices and what it was given.
    expect("root", "dev,guest,wisp,")?;
    expect("cgroup", "0::/wisp/l2")?;
    expect("memory.max", "536870912")?;
    expect("pids.max", "64")?;
    expect("jailer-rc", "0")?;
    expect("left", "")?;
    Ok(())
}
