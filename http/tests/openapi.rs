//! `http/openapi.yaml` against the server: the same paths and methods both ways, the documented
//! answers, request examples (and every enum value) accepted by the real request parser, and
//! the real response bodies matching their documented schemas field for field.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use wisp_api::{
    Balloon, BalloonStats, BootSource, CacheType, Drive, Entropy, HugePages, InstanceInfo,
    IoEngine, LogLevel, Logger, MachineConfig, Metrics, NetworkInterface, RateLimiter, Serial,
    TokenBucket, VersionInfo, VmConfig, VmState, Vsock,
};
use wisp_http::routes::{parse_request, ROUTES};

const METHODS: [&str; 8] = [
    "get", "put", "patch", "post", "delete", "head", "options", "trace",
];

fn spec() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Follows a `$ref` to `#/components/...`.
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => spec
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {r}")),
        None => v,
    }
}

fn concrete(template: &str) -> String {
    template
        .replace("{drive_id}", "rootfs")
        .replace("{iface_id}", "eth0")
        .replace("{id}", "pmem0")
        .replace("{fs_id}", "rootfs")
}

/// Whether a spec object is marked as refused on purpose.
fn refused(v: &Value) -> bool {
    v.get("x-firecracker").and_then(Value::as_str) == Some("refused")
}

#[test]
fn spec_and_server_have_the_same_routes_and_methods() {
    let spec = spec();
    let paths = spec["paths"].as_object().unwrap();
    let served: BTreeSet<&str> = ROUTES.iter().map(|r| r.template).collect();
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    assert_eq!(served, documented);
    for r in ROUTES {
        let item = paths[r.template].as_object().unwrap();
        let in_spec: BTreeSet<String> = item
            .keys()
            .filter(|k| METHODS.contains(&k.as_str()))
            .cloned()
            .collect();
        let in_server: BTreeSet<String> = r
            .methods
            .iter()
            .map(|m| m.as_str().to_ascii_lowercase())
            .collect();
        assert_eq!(in_spec, in_server, "methods of {}", r.template);
    }
}

#[test]
fn every_operation_documents_its_answers() {
    let spec = spec();
    for r in ROUTES {
        for m in r.methods {
            let op = &spec["paths"][r.template][m.as_str().to_ascii_lowercase()];
            let responses = op["responses"].as_object().unwrap();
            let want: &[&str] = match m.as_str() {
                "GET" => &["200", "default"],
                _ => &["204", "400", "default"],
            };
            for code in want {
                assert!(
                    responses.contains_key(*code),
                    "{} {} lacks {code}",
                    m.as_str(),
                    r.template
                );
            }
        }
    }
}

#[test]
fn request_examples_and_enum_values_are_accepted_by_the_parser() {
    let spec = spec();
    let mut checked = 0;
    for r in ROUTES {
        for m in r.methods.iter().filter(|m| m.as_str() != "GET") {
            let op = &spec["paths"][r.template][m.as_str().to_ascii_lowercase()];
            if refused(op) {
                let err = parse_request(m.as_str(), &concrete(r.template), b"{}").unwrap_err();
                assert!(
                    err.to_string().contains("is not supported by Wisp: "),
                    "{} {}: {err}",
                    m.as_str(),
                    r.template
                );
                checked += 1;
                continue;
            }
            let media = &op["requestBody"]["content"]["application/json"];
            let example = &media["example"];
            let schema = resolve(&spec, &media["schema"]);
            let props = schema["properties"].as_object().unwrap();
            let given: BTreeSet<&String> = example.as_object().unwrap().keys().collect();
            assert_eq!(
                given,
                props.keys().collect(),
                "example of {} {} must use every field",
                m.as_str(),
                r.template
            );
            let path = concrete(r.template);
            let body = serde_json::to_vec(example).unwrap();
            if let Err(e) = parse_request(m.as_str(), &path, &body) {
                panic!("{} {path}: documented example refused: {e}", m.as_str());
            }
            for (name, prop) in props {
                for value in prop["enum"].as_array().into_iter().flatten() {
                    let mut variant = example.clone();
                    variant[name] = value.clone();
                    let body = serde_json::to_vec(&variant).unwrap();
                    if let Err(e) = parse_request(m.as_str(), &path, &body) {
                        panic!(
                            "{} {path}: documented {name}={value} refused: {e}",
                            m.as_str()
                        );
                    }
                }
            }
            checked += 1;
        }
    }
    let writes = ROUTES
        .iter()
        .flat_map(|r| r.methods)
        .filter(|m| m.as_str() != "GET");
    assert_eq!(checked, writes.count());
}

/// Checks `value` against an object schema: no undocumented field, every required one present,
/// and (when `complete`) every documented field present. Recurses through `$ref`s and arrays.
fn check(spec: &Value, schema: &Value, value: &Value, complete: bool, at: &str) {
    let schema = resolve(spec, schema);
    if let Some(items) = schema.get("items") {
        for (i, v) in value.as_array().unwrap().iter().enumerate() {
            check(spec, items, v, complete, &format!("{at}[{i}]"));
        }
        return;
    }
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("{at} is not an object"));
    for key in obj.keys() {
        let prop = props
            .get(key)
            .unwrap_or_else(|| panic!("{at}.{key} is not documented"));
        check(spec, prop, &obj[key], complete, &format!("{at}.{key}"));
        if let Some(values) = prop.get("enum").and_then(Value::as_array) {
            assert!(
                values.contains(&obj[key]),
                "{at}.{key}={} not in the documented enum",
                obj[key]
            );
        }
    }
    for req in schema["required"].as_array().into_iter().flatten() {
        assert!(
            obj.contains_key(req.as_str().unwrap()),
            "{at} lacks required {req}"
        );
    }
    if complete {
        for key in props.keys().filter(|k| !refused(&props[*k])) {
            assert!(
                obj.contains_key(key),
                "{at}.{key} is documented but never produced"
            );
        }
    }
}

#[test]
fn response_bodies_match_their_schemas() {
    let spec = spec();
    let schemas = &spec["components"]["schemas"];
    let p = PathBuf::from;
    let bucket = TokenBucket {
        size: 1 << 20,
        one_time_burst: Some(1 << 20),
        refill_time: 1000,
    };
    let limiter = RateLimiter {
        bandwidth: Some(bucket),
        ops: Some(bucket),
    };
    let full = VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: p("/k"),
            initrd_path: Some(p("/i")),
            boot_args: Some("console=ttyS0".into()),
        }),
        machine_config: MachineConfig {
            track_dirty_pages: true,
            huge_pages: HugePages::Transparent,
            cpu_template: Some("None".into()),
            mem_shared: true,
            ..Default::default()
        },
        drives: vec![Drive {
            drive_id: "rootfs".into(),
            path_on_host: p("/d"),
            is_root_device: true,
            is_read_only: false,
            rate_limiter: Some(limiter.clone()),
            partuuid: Some("0eaa91a0-01".into()),
            cache_type: Some(CacheType::Writeback),
            io_engine: Some(IoEngine::Sync),
            ..Default::default()
        }],
        network_interfaces: vec![NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: Some("06:00:00:00:00:01".into()),
            rx_rate_limiter: Some(limiter.clone()),
            tx_rate_limiter: Some(limiter.clone()),
            mtu: Some(1500),
        }],
        vsock: Some(Vsock {
            guest_cid: 3,
            uds_path: p("/v"),
            vsock_id: Some("v".into()),
        }),
        entropy: Some(Entropy {
            rate_limiter: Some(limiter),
        }),
        fs: vec![wisp_api::Fs {
            fs_id: "rootfs".into(),
            tag: "myfs".into(),
            socket: p("/s"),
            num_queues: 1,
            queue_size: 1024,
        }],
        logger: Some(Logger {
            log_path: p("/l"),
            level: LogLevel::Info,
            show_level: true,
            show_log_origin: true,
            module: Some("wisp_vmm".into()),
        }),
        metrics: Some(Metrics {
            metrics_path: p("/m"),
            emit_id: true,
            properties: Some([("k".to_string(), "v".to_string())].into()),
        }),
        balloon: Some(Balloon {
            amount_mib: 1,
            deflate_on_oom: true,
            stats_polling_interval_s: 1,
            free_page_hinting: false,
            free_page_reporting: true,
        }),
        serial: Some(Serial {
            serial_out_path: Some(p("/s")),
            rate_limiter: Some(bucket),
        }),
        ..Default::default()
    };
    check(
        &spec,
        &schemas["VmConfig"],
        &serde_json::to_value(&full).unwrap(),
        true,
        "VmConfig",
    );
    for state in [
        VmState::NotStarted,
        VmState::Running,
        VmState::Paused,
        VmState::Halted,
    ] {
        let info = InstanceInfo {
            id: "a".into(),
            state,
            vmm_version: "0".into(),
            app_name: "Wisp".into(),
        };
        check(
            &spec,
            &schemas["InstanceInfo"],
            &serde_json::to_value(&info).unwrap(),
            true,
            "InstanceInfo",
        );
    }
    let version = serde_json::to_value(VersionInfo {
        wisp_version: "0".into(),
    })
    .unwrap();
    check(&spec, &schemas["Version"], &version, true, "Version");
    let stats = BalloonStats {
        target_pages: 1,
        actual_pages: 1,
        target_mib: 0,
        actual_mib: 0,
        swap_in: Some(0),
        swap_out: Some(0),
        major_faults: Some(0),
        minor_faults: Some(0),
        free_memory: Some(0),
        total_memory: Some(0),
        available_memory: Some(0),
        disk_caches: Some(0),
        hugetlb_allocations: Some(0),
        hugetlb_failures: Some(0),
        oom_kill: Some(0),
        alloc_stall: Some(0),
        async_scan: Some(0),
        direct_scan: Some(0),
        async_reclaim: Some(0),
        direct_reclaim: Some(0),
    };
    let stats = serde_json::to_value(stats).unwrap();
    check(
        &spec,
        &schemas["BalloonStats"],
        &stats,
        true,
        "BalloonStats",
    );
    let fault = json!({"fault_message": "x"});
    check(&spec, &schemas["Error"], &fault, true, "Error");
}

/// Firecracker's own fields and paths (extracted from its swagger into
/// `tests/data/firecracker_fields.txt`): each is in `openapi.yaml`, as supported or as refused
/// on purpose, so no Firecracker client meets an "unknown field" or a 404.
#[test]
fn every_firecracker_field_and_path_is_listed_in_the_spec() {
    let spec = spec();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/firecracker_fields.txt"
    ))
    .unwrap();
    let (mut fields, mut paths) = (0, 0);
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["field", name, firecracker_definition] => {
                let (schema, field) = name.split_once('.').unwrap();
                let props = &spec["components"]["schemas"][schema]["properties"];
                assert!(
                    props.get(field).is_some(),
                    "Firecracker's {firecracker_definition}.{field} is not in openapi.yaml's \
                     {schema}"
                );
                fields += 1;
            }
            ["path", method, path] => {
                let op = &spec["paths"][path][method.to_ascii_lowercase()];
                assert!(
                    op.is_object(),
                    "Firecracker's {method} {path} is not in openapi.yaml"
                );
                paths += 1;
            }
            _ => panic!("bad line in firecracker_fields.txt: {line}"),
        }
    }
    assert!(fields > 100 && paths > 30, "{fields} fields, {paths} paths");
}
