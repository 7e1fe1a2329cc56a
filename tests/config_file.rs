//! `wisp --config-file vm.json` through the real binary: one document with the API's schema
//! boots the Wisp unikernel, and every resource in it takes effect — the drive (the guest's
//! write reaches the host file), entropy, the logger (its file gets the VMM's lines) and
//! metrics (a JSON line with the devices' counters is appended when the VM ends). A bad
//! document is one `wisp: error:` line and exit status 1.

// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use wisp_test_support::{run_with_deadline, unikernel, Outcome, Scratch};

fn boot_from(dir: &Path, config: &Value) -> Outcome {
    let file = dir.join("vm.json");
    std::fs::write(&file, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wisp"));
    cmd.arg("--config-file").arg(&file);
    run_with_deadline(cmd, b"", Duration::from_secs(60))
}

fn has_line(out: &Outcome, line: &str) -> bool {
    out.stdout.lines().any(|l| l.trim_end() == line)
}

#[test]
fn a_config_file_boots_the_unikernel_with_every_resource_in_it() {
    let scratch = Scratch::new("config-full");
    let disk = scratch.join("disk.img");
    let mut image = vec![0u8; 1 << 20];
    image[..16].copy_from_slice(&(0x10u8..0x20).collect::<Vec<_>>());
    std::fs::write(&disk, &image).unwrap();
    let log = scratch.join("wisp.log");
    let metrics = scratch.join("metrics.json");
    let config = json!({
        "boot-source": {
            "kernel_image_path": unikernel(),
            "boot_args": "noxs blk rng"
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
        "drives": [{
            "drive_id": "data",
            "path_on_host": disk,
            "is_root_device": false,
            "is_read_only": false
        }],
        "entropy": {},
        "logger": {"log_path": log, "level": "Info"},
        "metrics": {"metrics_path": metrics}
    });
    let out = boot_from(&scratch.0, &config);
    out.assert_success();
    for line in [
        "noxs: 2 devices",
        "blk: id=data",
        "blk: sector0=101112131415161718191a1b1c1d1e1f",
        "blk: write ok",
        "rng: ok",
    ] {
        assert!(has_line(&out, line), "missing {line:?}: {out:#?}");
    }
    let written = std::fs::read(&disk).unwrap();
    assert_eq!(&written[512..535], b"wisp-unikernel-was-here");

    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("guest booted"), "log file: {log_text:?}");

    let metrics_text = std::fs::read_to_string(&metrics).unwrap();
    let lines: Vec<&str> = metrics_text.lines().collect();
    assert_eq!(lines.len(), 1, "one line at exit: {metrics_text}");
    let line: Value = serde_json::from_str(lines[0]).unwrap();
    let block = &line["devices"]["block:data"];
    assert_eq!(block["bytes_written"], 512, "{line}");
    assert_eq!(block["errors"], 0, "{line}");
    assert!(block["bytes_read"].as_u64().unwrap() >= 512, "{line}");
    assert!(
        line["devices"]["rng:rng"]["bytes_read"].as_u64().unwrap() > 0,
        "{line}"
    );
}

#[test]
fn a_bad_config_file_is_one_clear_error() {
    let scratch = Scratch::new("config-bad");
    let missing = scratch.join("no-such-vmlinux");
    let cases = [
        (
            json!({"boot-source": {"kernel_image_path": missing}}),
            missing.display().to_string(),
        ),
        (
            json!({"boot-source": {"kernel_image_path": unikernel()}, "drivers": []}),
            "unknown field `drivers`".to_owned(),
        ),
        (
            json!({
                "boot-source": {"kernel_image_path": unikernel()},
                "machine-config": {"vcpu_count": 0, "mem_size_mib": 64}
            }),
            "vcpu_count 0".to_owned(),
        ),
    ];
    for (config, names) in cases {
        let out = boot_from(&scratch.0, &config);
        assert_eq!(out.code(), Some(1), "{config}: {out:#?}");
        let stderr = out.stderr.trim_end();
        assert_eq!(stderr.lines().count(), 1, "one line: {out:#?}");
        assert!(
            stderr.starts_with("wisp: error:") && stderr.contains(&names),
            "{config}: {stderr:?} should name {names:?}"
        );
        assert!(out.stdout.is_empty(), "no guest ran: {out:#?}");
    }
}
