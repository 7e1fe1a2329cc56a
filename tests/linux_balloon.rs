//! virtio-balloon with a Linux guest on real KVM, inside the test host (tests/testhost): QEMU/TCG
//! → Debian kernel with kvm_amd (L1) → `wisp --api-sock` → Tinyx Linux (L2), whose default
//! recipe has tinyx/configs/balloon.config (the virtio_balloon driver).
//!
//! Inside L1, tests/testhost/l1_balloon.sh configures the balloon through the REST API with the
//! host's curl and drives it; the guest's /init (l2_balloon_init.sh) first touches most of its
//! memory and frees it, so the pages Linux hands to the balloon are resident on the host. The
//! checks: inflating by 64 MiB lowers the VMM's RSS in L1, `GET /balloon/statistics` carries
//! the guest's own figures (free, total, available memory) and follows the balloon, deflating
//! gives the memory back to the guest, and with `deflate_on_oom` a guest that needs more than
//! the balloon left it takes pages back (the balloon ends below its target).

mod testhost;

use std::path::PathBuf;
use std::sync::Mutex;
use testhost::{
    check_failed, initramfs_with_init, shared_host, value, CommandRun, L2Guest, TestHost,
    TestHostError,
};

const CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=k pci=off";
/// The guard for the scenario inside L1: one Linux boot under TCG and the balloon's moves.
const SCENARIO_TIMEOUT_S: u32 = 600;
const L1_SCRIPT: &str = include_str!("testhost/l1_balloon.sh");
const L2_INIT: &str = include_str!("testhost/l2_balloon_init.sh");
const CURL: &str = "/usr/bin/curl";
const MIB_KIB: f64 = 1024.0;

/// The guest's initramfs, from its cache; one build at a time (tests boot L1 concurrently and
/// would race on the cache entry).
fn balloon_initramfs() -> Result<PathBuf, TestHostError> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(initramfs_with_init("balloon", L2_INIT, &[])?)
}

fn builder() -> Result<testhost::TestHostBuilder, TestHostError> {
    let guest = L2Guest::tinyx()?;
    let initrd = balloon_initramfs()?;
    Ok(TestHost::builder()
        .file(&guest.vmlinux, "/guest/vmlinux")
        .file(&initrd, "/guest/balloon.cpio")
        .host_program(CURL))
}

fn boot_shared_host() -> Result<TestHost, TestHostError> {
    builder()?
        .script(&format!(
            "cat > /tmp/balloon.sh <<'WISP_BALLOON_SCENARIO'\n{L1_SCRIPT}WISP_BALLOON_SCENARIO\n\
             run balloon {SCENARIO_TIMEOUT_S} sh /tmp/balloon.sh \"{CMDLINE}\"\n"
        ))
        .boot()
}

fn scenario() -> Result<&'static CommandRun, TestHostError> {
    let run = shared_host(boot_shared_host).run("balloon")?;
    Ok(run)
}

fn kib(run: &CommandRun, key: &str) -> Result<f64, TestHostError> {
    let text = value(run, key)?;
    text.parse()
        .map_err(|_| check_failed(run, format!("{key}={text} is not a number")))
}

/// The JSON body of request `step` (`BALLOON step=NAME http=200 body=JSON`).
fn body(run: &CommandRun, step: &str, status: &str) -> Result<serde_json::Value, TestHostError> {
    let prefix = format!("BALLOON step={step} http=");
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .ok_or_else(|| check_failed(run, format!("no request {step}")))?;
    let (got, body) = line.split_once(" body=").unwrap_or((line, ""));
    if got != status {
        return Err(check_failed(
            run,
            format!("{step}: HTTP {got}, expected {status}"),
        ));
    }
    if body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(body)
        .map_err(|e| check_failed(run, format!("{step}: body is not JSON ({e})")))
}

fn number(
    run: &CommandRun,
    v: &serde_json::Value,
    step: &str,
    key: &str,
) -> Result<u64, TestHostError> {
    v[key]
        .as_u64()
        .ok_or_else(|| check_failed(run, format!("{step}: no {key} in {v}")))
}

fn ready(run: &CommandRun) -> Result<(), TestHostError> {
    for step in ["boot-source", "machine-config", "balloon", "start"] {
        body(run, step, "204")?;
    }
    if run.value("balloon-bound") != Some("1") {
        return Err(check_failed(
            run,
            "the guest's virtio_balloon driver did not bind",
        ));
    }
    if !run.stdout.contains("BALLOON event guest-ready") {
        return Err(check_failed(run, "the guest never printed `WISP-L2 ready`"));
    }
    Ok(())
}

/// Inflating the balloon by 64 MiB lowers the VMM's RSS in L1 by most of that; the statistics
/// show the balloon at 64 MiB and the guest's free memory down by about as much; deflating
/// gives the guest its memory back.
#[test]
fn inflating_a_linux_guests_balloon_lowers_the_vmms_rss_and_deflating_gives_it_back(
) -> Result<(), TestHostError> {
    let run = scenario()?;
    for line in run.stdout.lines().filter(|l| l.starts_with("BALLOON ")) {
        eprintln!("{line}");
    }
    ready(run)?;
    let before = kib(run, "rss-before-kib")?;
    let inflated = kib(run, "rss-inflated-kib")?;
    let deflated = kib(run, "rss-deflated-kib")?;
    eprintln!(
        "Linux guest, balloon 64 MiB: VMM RSS {:.1} → {:.1} MiB (deflated: {:.1} MiB)",
        before / MIB_KIB,
        inflated / MIB_KIB,
        deflated / MIB_KIB
    );
    if before - inflated < 48.0 * MIB_KIB {
        return Err(check_failed(
            run,
            format!(
                "inflating 64 MiB lowered the VMM's RSS by only {} KiB",
                before - inflated
            ),
        ));
    }
    body(run, "inflate", "204")?;
    let stats_before = body(run, "stats-before", "200")?;
    let stats = body(run, "stats-inflated-later", "200")?;
    if number(run, &stats, "stats-inflated-later", "actual_mib")? != 64
        || number(run, &stats, "stats-inflated-later", "target_mib")? != 64
    {
        return Err(check_failed(run, format!("balloon not at 64 MiB: {stats}")));
    }
    // The guest's own figures: its total memory is its 128 MiB less the kernel's reserve, and
    // its free memory fell by about the balloon's size.
    let total = number(run, &stats, "stats-inflated-later", "total_memory")?;
    if !(96 << 20..=128 << 20).contains(&total) {
        return Err(check_failed(run, format!("total_memory {total}")));
    }
    number(run, &stats, "stats-inflated-later", "available_memory")?;
    let free_before = number(run, &stats_before, "stats-before", "free_memory")?;
    let free_inflated = number(run, &stats, "stats-inflated-later", "free_memory")?;
    if free_before.saturating_sub(free_inflated) < 56 << 20 {
        return Err(check_failed(
            run,
            format!("free_memory {free_before} → {free_inflated}: the guest did not give 64 MiB"),
        ));
    }
    body(run, "deflate", "204")?;
    let deflated_stats = body(run, "stats-deflated-later", "200")?;
    let free_deflated = number(run, &deflated_stats, "stats-deflated-later", "free_memory")?;
    if number(run, &deflated_stats, "stats-deflated-later", "actual_mib")? != 0
        || free_deflated < free_inflated + (56 << 20)
    {
        return Err(check_failed(
            run,
            format!("deflate not seen in the statistics: {deflated_stats}"),
        ));
    }
    Ok(())
}

/// With deflate_on_oom, the balloon over all but 12 MiB of the guest's free memory, the guest
/// writes 48 MiB to a tmpfs: Linux's OOM notifier takes balloon pages back, the write
/// completes, nothing is killed and the balloon ends below its target.
#[test]
fn a_linux_guest_deflates_its_balloon_on_oom() -> Result<(), TestHostError> {
    let run = scenario()?;
    ready(run)?;
    body(run, "oom-inflate", "204")?;
    let target: u64 = value(run, "oom-target-mib")?
        .parse()
        .map_err(|_| check_failed(run, "oom-target-mib is not a number"))?;
    if target < 48 {
        return Err(check_failed(
            run,
            format!("oom target {target} MiB: too small a test"),
        ));
    }
    if !run.stdout.contains("BALLOON event oom-alloc-done") {
        return Err(check_failed(
            run,
            "the guest's 48 MiB write never completed",
        ));
    }
    if !run
        .stdout
        .contains("WISP-L2 oom-alloc rc=0 written-kib=49152 ")
    {
        return Err(check_failed(run, "the guest's 48 MiB write failed"));
    }
    let stats = body(run, "stats-oom", "200")?;
    let actual = number(run, &stats, "stats-oom", "actual_mib")?;
    let target_now = number(run, &stats, "stats-oom", "target_mib")?;
    eprintln!("deflate on OOM: balloon target {target_now} MiB, actual {actual} MiB");
    if target_now != target || actual + 24 > target {
        return Err(check_failed(
            run,
            format!("the balloon did not deflate on OOM: target {target_now}, actual {actual}"),
        ));
    }
    if run.stdout.contains("Out of memory: Killed process") {
        return Err(check_failed(run, "the OOM killer ran"));
    }
    Ok(())
}
