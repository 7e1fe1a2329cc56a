//! The REST API driven by curl, the way users drive it: configure, read back, start, pause,
//! and every kind of bad input answered with its status and message and no change of state.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod harness;

use harness::{Harness, MAX_VCPUS};
use serde_json::json;

#[test]
fn configure_read_back_start_pause_resume() {
    let h = Harness::start();
    let (status, body) = h.curl("GET", "/", None);
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["state"], "Not started");
    assert_eq!(info["app_name"], "Wisp");

    let boot = json!({"kernel_image_path": h.kernel, "boot_args": "console=ttyS0"});
    assert_eq!(
        h.curl("PUT", "/boot-source", Some(&boot.to_string())),
        (204, String::new())
    );
    let mc = r#"{"vcpu_count": 2, "mem_size_mib": 256}"#;
    assert_eq!(h.curl("PUT", "/machine-config", Some(mc)).0, 204);
    assert_eq!(
        h.curl("PATCH", "/machine-config", Some(r#"{"mem_size_mib": 64}"#))
            .0,
        204
    );
    let disk = h.path("disk.img");
    std::fs::write(&disk, [0u8; 4096]).unwrap();
    let drive = json!({"drive_id": "root", "path_on_host": disk, "is_root_device": true});
    assert_eq!(
        h.curl("PUT", "/drives/root", Some(&drive.to_string())).0,
        204
    );
    let vsock = json!({"guest_cid": 3, "uds_path": h.path("v.sock")});
    assert_eq!(h.curl("PUT", "/vsock", Some(&vsock.to_string())).0, 204);
    assert_eq!(h.curl("PUT", "/entropy", Some("{}")).0, 204);
    let metrics = json!({"metrics_path": h.path("metrics.json")});
    assert_eq!(h.curl("PUT", "/metrics", Some(&metrics.to_string())).0, 204);
    let logger = json!({"log_path": h.path("wisp.log"), "level": "Info"});
    assert_eq!(h.curl("PUT", "/logger", Some(&logger.to_string())).0, 204);

    let cfg = h.config();
    assert_eq!(cfg["boot-source"]["kernel_image_path"], json!(h.kernel));
    assert_eq!(
        cfg["machine-config"],
        json!({"vcpu_count": 2, "mem_size_mib": 64, "smt": false})
    );
    assert_eq!(cfg["drives"][0]["drive_id"], "root");
    assert_eq!(cfg["vsock"]["guest_cid"], 3);
    assert_eq!(cfg["entropy"], json!({}));
    let (status, body) = h.curl("GET", "/machine-config", None);
    assert_eq!(
        (status, body.contains("\"mem_size_mib\":64")),
        (200, true),
        "{body}"
    );
    let (status, body) = h.curl("GET", "/version", None);
    assert_eq!(status, 200);
    assert!(body.contains("wisp_version"), "{body}");

    let start = r#"{"action_type": "InstanceStart"}"#;
    assert_eq!(h.curl("PUT", "/actions", Some(start)).0, 204);
    assert!(h.curl("GET", "/", None).1.contains("\"Running\""));
    let msg = h.expect_fault("PUT", "/actions", start, 400);
    assert!(msg.contains("already been started"), "{msg}");
    let msg = h.expect_fault("PUT", "/boot-source", &boot.to_string(), 400);
    assert!(
        msg.contains("not allowed after the microVM started"),
        "{msg}"
    );
    assert_eq!(h.config(), cfg);

    assert_eq!(
        h.curl("PATCH", "/vm", Some(r#"{"state": "Paused"}"#)).0,
        204
    );
    assert!(h.curl("GET", "/", None).1.contains("\"Paused\""));
    assert_eq!(
        h.curl("PATCH", "/vm", Some(r#"{"state": "Resumed"}"#)).0,
        204
    );
    assert!(h.curl("GET", "/", None).1.contains("\"Running\""));

    // After boot, PATCH /drives swaps the backing file and the config shows it.
    let disk2 = h.path("disk2.img");
    std::fs::write(&disk2, [0u8; 4096]).unwrap();
    let swap = json!({"drive_id": "root", "path_on_host": disk2});
    assert_eq!(
        h.curl("PATCH", "/drives/root", Some(&swap.to_string())).0,
        204
    );
    assert_eq!(h.config()["drives"][0]["path_on_host"], json!(disk2));

    // FlushMetrics writes one JSON line that counts the requests above.
    let flush = r#"{"action_type": "FlushMetrics"}"#;
    assert_eq!(h.curl("PUT", "/actions", Some(flush)).0, 204);
    let line = std::fs::read_to_string(h.path("metrics.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(
        m["endpoints"]["put_boot_source"],
        json!({"count": 2, "fails": 1})
    );
    assert_eq!(m["endpoints"]["patch_vm"]["count"], 2);
}

/// Each bad request gets its status and a message naming the problem, and changes nothing.
#[test]
fn bad_input_is_refused_without_changing_state() {
    let h = Harness::start();
    let boot = json!({"kernel_image_path": h.kernel}).to_string();
    assert_eq!(h.curl("PUT", "/boot-source", Some(&boot)).0, 204);
    let disk = h.path("disk.img");
    std::fs::write(&disk, [0u8; 512]).unwrap();
    let drive = json!({"drive_id": "a", "path_on_host": disk, "is_root_device": true});
    assert_eq!(h.curl("PUT", "/drives/a", Some(&drive.to_string())).0, 204);
    let before = h.config();

    let missing = h.path("no-such-vmlinux");
    let other = h.path("other.img");
    std::fs::write(&other, [0u8; 512]).unwrap();
    let cases: Vec<(&str, &str, String, u16, String)> = vec![
        (
            "PUT",
            "/machine-config",
            "{\"vcpu_count\": 1,".into(),
            400,
            "EOF while parsing".into(),
        ),
        (
            "PUT",
            "/boot-source",
            "not json".into(),
            400,
            "expected ident".into(),
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":1,"mem_size_mib":8,"cpus":2}"#.into(),
            400,
            "unknown field `cpus`".into(),
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":"two","mem_size_mib":8}"#.into(),
            400,
            "invalid type: string \"two\", expected u8".into(),
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":0,"mem_size_mib":8}"#.into(),
            400,
            "vcpu_count 0 is out of range".into(),
        ),
        (
            "PUT",
            "/machine-config",
            format!(r#"{{"vcpu_count":{},"mem_size_mib":8}}"#, MAX_VCPUS + 1),
            400,
            format!("between 1 and {MAX_VCPUS}"),
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":1,"mem_size_mib":0}"#.into(),
            400,
            "mem_size_mib must be greater than 0".into(),
        ),
        (
            "PATCH",
            "/machine-config",
            r#"{"vcpu_count":0}"#.into(),
            400,
            "out of range".into(),
        ),
        (
            "PATCH",
            "/machine-config",
            "{}".into(),
            400,
            "names no field".into(),
        ),
        (
            "PUT",
            "/boot-source",
            json!({"kernel_image_path": missing}).to_string(),
            400,
            format!("kernel image {}", missing.display()),
        ),
        (
            "PUT",
            "/boot-source",
            json!({"kernel_image_path": h.kernel, "initrd_path": missing}).to_string(),
            400,
            format!("initrd {}", missing.display()),
        ),
        (
            "PUT",
            "/drives/b",
            json!({"drive_id": "b", "path_on_host": disk}).to_string(),
            400,
            "which drive `a` already uses".into(),
        ),
        (
            "PUT",
            "/drives/c",
            json!({"drive_id": "c", "path_on_host": other,
            "is_root_device": true})
            .to_string(),
            400,
            "drive `a` already is".into(),
        ),
        (
            "PUT",
            "/drives/x",
            json!({"drive_id": "y", "path_on_host": other}).to_string(),
            400,
            "does not match `x` in the path".into(),
        ),
        (
            "PATCH",
            "/drives/zz",
            json!({"drive_id": "zz", "path_on_host": other}).to_string(),
            400,
            "no drive with id `zz`".into(),
        ),
        (
            "PUT",
            "/vsock",
            json!({"guest_cid": 2, "uds_path": h.path("v")}).to_string(),
            400,
            "guest_cid 2 is reserved".into(),
        ),
        (
            "PUT",
            "/network-interfaces/e",
            r#"{"iface_id":"e","host_dev_name":"tap0","guest_mac":"zz"}"#.into(),
            400,
            "guest_mac `zz`".into(),
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type":"Reboot"}"#.into(),
            400,
            "unknown variant `Reboot`".into(),
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type":"FlushMetrics"}"#.into(),
            400,
            "PUT /metrics first".into(),
        ),
        (
            "PATCH",
            "/vm",
            r#"{"state":"Paused"}"#.into(),
            400,
            "in state NotStarted".into(),
        ),
        (
            "PUT",
            "/logger",
            json!({"log_path": "/no/such/dir/log"}).to_string(),
            400,
            "directory /no/such/dir does not exist".into(),
        ),
        (
            "PUT",
            "/entropy",
            "".into(),
            400,
            "needs a JSON body".into(),
        ),
    ];
    for (method, path, body, status, want) in cases {
        let msg = h.expect_fault(method, path, &body, status);
        assert!(
            msg.contains(&want),
            "{method} {path} {body}: {msg:?} lacks {want:?}"
        );
        assert_eq!(
            h.config(),
            before,
            "{method} {path} {body} changed the configuration"
        );
    }
}

#[test]
fn instance_start_needs_a_boot_source() {
    let h = Harness::start();
    let msg = h.expect_fault("PUT", "/actions", r#"{"action_type":"InstanceStart"}"#, 400);
    assert!(msg.contains("no boot source"), "{msg}");
    assert!(h.curl("GET", "/", None).1.contains("Not started"));
}

#[test]
fn a_put_with_an_existing_drive_id_replaces_it_before_boot() {
    let h = Harness::start();
    let (d1, d2) = (h.path("d1"), h.path("d2"));
    std::fs::write(&d1, b"1").unwrap();
    std::fs::write(&d2, b"2").unwrap();
    for d in [&d1, &d2] {
        let body = json!({"drive_id": "data", "path_on_host": d, "is_read_only": true});
        assert_eq!(
            h.curl("PUT", "/drives/data", Some(&body.to_string())).0,
            204
        );
    }
    let drives = h.config()["drives"].clone();
    assert_eq!(drives.as_array().unwrap().len(), 1);
    assert_eq!(drives[0]["path_on_host"], json!(d2));
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405_with_a_message() {
    let h = Harness::start();
    let (status, body) = h.curl("GET", "/no-such-thing", None);
    assert_eq!(status, 404);
    assert!(body.contains("no resource at /no-such-thing"), "{body}");
    let msg = h.expect_fault("DELETE", "/boot-source", "{}", 405);
    assert_eq!(msg, "DELETE is not allowed on /boot-source; allowed: PUT");
    let msg = h.expect_fault("POST", "/machine-config", "{}", 405);
    assert!(msg.ends_with("allowed: GET, PUT, PATCH"), "{msg}");
}

#[test]
fn a_body_over_the_limit_is_refused() {
    let h = Harness::start();
    let big = format!(
        r#"{{"kernel_image_path": "{}", "boot_args": "{}"}}"#,
        h.kernel.display(),
        "x".repeat(60 * 1024)
    );
    let msg = h.expect_fault("PUT", "/boot-source", &big, 413);
    assert!(
        msg.contains("larger than the limit of 51200 bytes"),
        "{msg}"
    );
    assert!(h.config().get("boot-source").is_none());
    let metrics = h.server.as_ref().unwrap().metrics().snapshot();
    assert_eq!(metrics.body_too_large, 1);
}
