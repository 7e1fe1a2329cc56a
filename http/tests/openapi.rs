//! `http/openapi.yaml` against the server: the same paths and methods both ways, the documented
//! answers, request examples (and every enum value) accepted by the real request parser, and
//! the real response bodies matching their documented schemas field for field.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use wisp_api::{
    BootSource, Drive, Entropy, InstanceInfo, LogLevel, Logger, MachineConfig, Metrics,
    NetworkInterface, RateLimiter, TokenBucket, VersionInfo, VmConfig, VmState, Vsock,
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
        .replace("{fs_id}", "rootfs")
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
        for key in props.keys() {
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
            mem_shared: true,
            ..MachineConfig::default()
        },
        drives: vec![Drive {
            drive_id: "rootfs".into(),
            path_on_host: p("/d"),
            is_root_device: true,
            is_read_only: false,
            rate_limiter: Some(limiter.clone()),
        }],
        network_interfaces: vec![NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: Some("06:00:00:00:00:01".into()),
            rx_rate_limiter: Some(limiter.clone()),
            tx_rate_limiter: Some(limiter.clone()),
        }],
        vsock: Some(Vsock {
            guest_cid: 3,
            uds_path: p("/v"),
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
        }),
        metrics: Some(Metrics {
            metrics_path: p("/m"),
        }),
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
    let fault = json!({"fault_message": "x"});
    check(&spec, &schemas["Error"], &fault, true, "Error");
}
