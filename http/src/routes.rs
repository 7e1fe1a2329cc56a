//! The REST surface: which paths exist, which methods each accepts, and how a request's method,
//! path and body become a `VmmAction`. Pure functions over bytes, so they can be fuzzed without
//! a server. Resource names and JSON fields are Firecracker's.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wisp_api::action::VmmAction;
use wisp_api::config::{
    Balloon, BalloonStatsUpdate, BalloonUpdate, BootSource, Drive, DriveUpdate, Entropy, Fs,
    Logger, MachineConfig, MachineConfigUpdate, Metrics, NetworkInterface, NetworkInterfaceUpdate,
    Serial, Vsock,
};

/// The HTTP methods the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    Get,
    Put,
    Patch,
}

impl HttpMethod {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "GET" => Some(HttpMethod::Get),
            "PUT" => Some(HttpMethod::Put),
            "PATCH" => Some(HttpMethod::Patch),
            _ => None,
        }
    }
}

/// Which resource a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Root,
    Version,
    VmConfig,
    BootSource,
    MachineConfig,
    Drives,
    NetworkInterfaces,
    Vsock,
    Entropy,
    Fs,
    Logger,
    Metrics,
    Actions,
    Vm,
    // Firecracker-compatibility resources (issue 19).
    Balloon,
    BalloonStatistics,
    Serial,
    SnapshotCreate,
    SnapshotLoad,
    /// A Firecracker resource Wisp refuses on purpose: every request gets a 400 saying so.
    Refused(RefusedResource),
}

/// Why a Firecracker resource is refused (the reason goes into the 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusedResource {
    Mmds,
    CpuConfig,
    Pmem,
    MemoryHotplug,
    BalloonHinting,
}

impl RefusedResource {
    /// The resource and the reason, for "<what> is not supported by Wisp: <reason>".
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            RefusedResource::Mmds => (
                "MMDS",
                "the microVM metadata service is out of scope for now",
            ),
            RefusedResource::CpuConfig => (
                "/cpu-config",
                "custom CPU templates (Wisp passes the host's CPUID through, filtered)",
            ),
            RefusedResource::Pmem => ("/pmem", "virtio-pmem devices are not implemented"),
            RefusedResource::MemoryHotplug => (
                "/hotplug/memory",
                "virtio-mem memory hotplug is not implemented",
            ),
            RefusedResource::BalloonHinting => (
                "balloon free page hinting",
                "not implemented; free_page_reporting is",
            ),
        }
    }
}

/// One path template (OpenAPI style, `{id}` for a path parameter) and its methods.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    pub resource: Resource,
    pub template: &'static str,
    /// Short name used in metrics keys, e.g. `put_machine_config`.
    pub name: &'static str,
    pub methods: &'static [HttpMethod],
}

use HttpMethod::{Get, Patch, Put};

/// Every route the server serves; `http/openapi.yaml` must list exactly these.
pub static ROUTES: &[Route] = &[
    route(Resource::Root, "/", "root", &[Get]),
    route(Resource::Version, "/version", "version", &[Get]),
    route(Resource::VmConfig, "/vm/config", "vm_config", &[Get]),
    route(Resource::BootSource, "/boot-source", "boot_source", &[Put]),
    route(
        Resource::MachineConfig,
        "/machine-config",
        "machine_config",
        &[Get, Put, Patch],
    ),
    route(
        Resource::Drives,
        "/drives/{drive_id}",
        "drives",
        &[Put, Patch],
    ),
    route(
        Resource::NetworkInterfaces,
        "/network-interfaces/{iface_id}",
        "network_interfaces",
        &[Put, Patch],
    ),
    route(Resource::Vsock, "/vsock", "vsock", &[Put]),
    route(Resource::Entropy, "/entropy", "entropy", &[Put]),
    route(Resource::Fs, "/fs/{fs_id}", "fs", &[Put]),
    route(Resource::Logger, "/logger", "logger", &[Put]),
    route(Resource::Metrics, "/metrics", "metrics", &[Put]),
    route(Resource::Actions, "/actions", "actions", &[Put]),
    route(Resource::Vm, "/vm", "vm", &[Patch]),
    // Firecracker-compatibility resources (issue 19).
    route(Resource::Balloon, "/balloon", "balloon", &[Get, Put, Patch]),
    route(
        Resource::BalloonStatistics,
        "/balloon/statistics",
        "balloon_statistics",
        &[Get, Patch],
    ),
    route(Resource::Serial, "/serial", "serial", &[Put]),
    route(
        Resource::Refused(RefusedResource::BalloonHinting),
        "/balloon/hinting/start",
        "balloon_hinting_start",
        &[Patch],
    ),
    route(
        Resource::Refused(RefusedResource::BalloonHinting),
        "/balloon/hinting/status",
        "balloon_hinting_status",
        &[Get],
    ),
    route(
        Resource::Refused(RefusedResource::BalloonHinting),
        "/balloon/hinting/stop",
        "balloon_hinting_stop",
        &[Patch],
    ),
    route(
        Resource::Refused(RefusedResource::Mmds),
        "/mmds",
        "mmds",
        &[Get, Put, Patch],
    ),
    route(
        Resource::Refused(RefusedResource::Mmds),
        "/mmds/config",
        "mmds_config",
        &[Put],
    ),
    route(
        Resource::Refused(RefusedResource::CpuConfig),
        "/cpu-config",
        "cpu_config",
        &[Put],
    ),
    route(
        Resource::Refused(RefusedResource::Pmem),
        "/pmem/{id}",
        "pmem",
        &[Put, Patch],
    ),
    route(
        Resource::Refused(RefusedResource::MemoryHotplug),
        "/hotplug/memory",
        "hotplug_memory",
        &[Get, Put, Patch],
    ),
    // Snapshots (Firecracker's paths and bodies).
    route(
        Resource::SnapshotCreate,
        "/snapshot/create",
        "snapshot_create",
        &[Put],
    ),
    route(
        Resource::SnapshotLoad,
        "/snapshot/load",
        "snapshot_load",
        &[Put],
    ),
];

const fn route(
    resource: Resource,
    template: &'static str,
    name: &'static str,
    methods: &'static [HttpMethod],
) -> Route {
    Route {
        resource,
        template,
        name,
        methods,
    }
}

/// A matched route and method: the unit that metrics count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub route: &'static Route,
    pub method: HttpMethod,
}

impl Endpoint {
    /// Metrics key, e.g. `patch_machine_config`.
    pub fn key(&self) -> String {
        format!(
            "{}_{}",
            self.method.as_str().to_ascii_lowercase(),
            self.route.name
        )
    }
}

/// `PUT /actions` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    pub action_type: ActionType,
}

/// The actions `PUT /actions` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

/// `PATCH /vm` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateBody {
    pub state: RequestedVmState,
}

/// The states `PATCH /vm` can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestedVmState {
    Paused,
    Resumed,
}

/// Why a request could not become an action. Each maps to one HTTP status (see `response`).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no resource at {path}")]
    NotFound { path: String },
    #[error("{method} is not allowed on {template}; allowed: {}", allowed_list(.allowed))]
    MethodNotAllowed {
        method: String,
        template: &'static str,
        allowed: &'static [HttpMethod],
    },
    #[error("{endpoint} needs a JSON body, and the request has none")]
    EmptyBody { endpoint: String },
    #[error("invalid body for {endpoint}: {source}")]
    InvalidBody {
        endpoint: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} is not supported by Wisp: {reason}")]
    NotSupported {
        what: &'static str,
        reason: &'static str,
    },
    #[error("{field} `{in_body}` in the body does not match `{in_path}` in the path")]
    IdMismatch {
        field: &'static str,
        in_body: String,
        in_path: String,
    },
}

fn allowed_list(methods: &[HttpMethod]) -> String {
    let names: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
    names.join(", ")
}

/// Finds the route for `path` and checks `method` against it. Returns the path parameter
/// (`{drive_id}`, `{iface_id}`) when the template has one. A query string is ignored.
pub fn resolve<'p>(method: &str, path: &'p str) -> Result<(Endpoint, Option<&'p str>), RouteError> {
    let path_only = path.split_once('?').map_or(path, |(p, _)| p);
    let (route, param) = ROUTES
        .iter()
        .find_map(|r| match_template(r.template, path_only).map(|param| (r, param)))
        .ok_or_else(|| RouteError::NotFound {
            path: path_only.to_string(),
        })?;
    match HttpMethod::parse(method).filter(|m| route.methods.contains(m)) {
        Some(method) => Ok((Endpoint { route, method }, param)),
        None => Err(RouteError::MethodNotAllowed {
            method: method.to_string(),
            template: route.template,
            allowed: route.methods,
        }),
    }
}

/// Matches `/a/{x}` against `/a/value`; `Some(Some("value"))` on a match with a parameter.
fn match_template<'p>(template: &str, path: &'p str) -> Option<Option<&'p str>> {
    let mut param = None;
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(param),
            (Some(ts), Some(ps)) if ts.starts_with('{') && !ps.is_empty() => param = Some(ps),
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

/// Turns a resolved request and its body into the action for the VMM thread.
pub fn parse_action(
    endpoint: Endpoint,
    param: Option<&str>,
    body: &[u8],
) -> Result<VmmAction, RouteError> {
    use HttpMethod as M;
    use Resource as R;
    let id = param.unwrap_or_default();
    let action = match (endpoint.route.resource, endpoint.method) {
        (R::Root, M::Get) => VmmAction::GetVmInfo,
        (R::Version, M::Get) => VmmAction::GetVersion,
        (R::VmConfig, M::Get) => VmmAction::GetVmConfig,
        (R::MachineConfig, M::Get) => VmmAction::GetMachineConfig,
        (R::BootSource, _) => {
            VmmAction::ConfigureBootSource(body_as::<BootSource>(endpoint, body)?)
        }
        (R::MachineConfig, M::Put) => {
            VmmAction::PutMachineConfig(body_as::<MachineConfig>(endpoint, body)?)
        }
        (R::MachineConfig, _) => {
            VmmAction::PatchMachineConfig(body_as::<MachineConfigUpdate>(endpoint, body)?)
        }
        (R::Drives, M::Put) => {
            let drive: Drive = body_as(endpoint, body)?;
            same_id("drive_id", &drive.drive_id, id)?;
            VmmAction::InsertBlockDevice(drive)
        }
        (R::Drives, _) => {
            let update: DriveUpdate = body_as(endpoint, body)?;
            same_id("drive_id", &update.drive_id, id)?;
            VmmAction::UpdateBlockDevice(update)
        }
        (R::NetworkInterfaces, M::Patch) => {
            let update: NetworkInterfaceUpdate = body_as(endpoint, body)?;
            same_id("iface_id", &update.iface_id, id)?;
            VmmAction::UpdateNetworkInterface(update)
        }
        (R::NetworkInterfaces, _) => {
            let iface: NetworkInterface = body_as(endpoint, body)?;
            same_id("iface_id", &iface.iface_id, id)?;
            VmmAction::InsertNetworkDevice(iface)
        }
        (R::Vsock, _) => VmmAction::SetVsock(body_as::<Vsock>(endpoint, body)?),
        (R::Entropy, _) => VmmAction::SetEntropy(body_as::<Entropy>(endpoint, body)?),
        (R::Fs, _) => {
            let fs: Fs = body_as(endpoint, body)?;
            same_id("fs_id", &fs.fs_id, id)?;
            VmmAction::InsertFs(fs)
        }
        (R::Logger, _) => VmmAction::ConfigureLogger(body_as::<Logger>(endpoint, body)?),
        (R::Metrics, _) => VmmAction::ConfigureMetrics(body_as::<Metrics>(endpoint, body)?),
        (R::Actions, _) => match body_as::<ActionBody>(endpoint, body)?.action_type {
            ActionType::InstanceStart => VmmAction::StartMicroVm,
            ActionType::SendCtrlAltDel => VmmAction::SendCtrlAltDel,
            ActionType::FlushMetrics => VmmAction::FlushMetrics,
        },
        (R::Vm, _) => match body_as::<VmStateBody>(endpoint, body)?.state {
            RequestedVmState::Paused => VmmAction::Pause,
            RequestedVmState::Resumed => VmmAction::Resume,
        },
        (R::Balloon, M::Get) => VmmAction::GetBalloon,
        (R::Balloon, M::Put) => VmmAction::SetBalloon(body_as::<Balloon>(endpoint, body)?),
        (R::Balloon, _) => VmmAction::UpdateBalloon(body_as::<BalloonUpdate>(endpoint, body)?),
        (R::BalloonStatistics, M::Get) => VmmAction::GetBalloonStats,
        (R::BalloonStatistics, _) => {
            VmmAction::UpdateBalloonStats(body_as::<BalloonStatsUpdate>(endpoint, body)?)
        }
        (R::Serial, _) => VmmAction::SetSerial(body_as::<Serial>(endpoint, body)?),
        (R::Refused(refusal), _) => {
            let (what, reason) = refusal.describe();
            return Err(RouteError::NotSupported { what, reason });
        }
        (R::SnapshotCreate, _) => VmmAction::CreateSnapshot(body_as(endpoint, body)?),
        (R::SnapshotLoad, _) => VmmAction::LoadSnapshot(body_as(endpoint, body)?),
        // `resolve` only yields methods listed in ROUTES: these resources are GET-only.
        (R::Root | R::Version | R::VmConfig, _) => {
            return Err(RouteError::MethodNotAllowed {
                method: endpoint.method.as_str().to_string(),
                template: endpoint.route.template,
                allowed: endpoint.route.methods,
            })
        }
    };
    Ok(action)
}

/// `resolve` then `parse_action`: the whole request-to-action step.
pub fn parse_request(method: &str, path: &str, body: &[u8]) -> Result<VmmAction, RouteError> {
    let (endpoint, param) = resolve(method, path)?;
    parse_action(endpoint, param, body)
}

fn body_as<T: DeserializeOwned>(endpoint: Endpoint, body: &[u8]) -> Result<T, RouteError> {
    let describe = || format!("{} {}", endpoint.method.as_str(), endpoint.route.template);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RouteError::EmptyBody {
            endpoint: describe(),
        });
    }
    serde_json::from_slice(body).map_err(|source| RouteError::InvalidBody {
        endpoint: describe(),
        source,
    })
}

fn same_id(field: &'static str, in_body: &str, in_path: &str) -> Result<(), RouteError> {
    if in_body == in_path {
        return Ok(());
    }
    Err(RouteError::IdMismatch {
        field,
        in_body: in_body.to_string(),
        in_path: in_path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_resolves_for_each_of_its_methods() {
        for r in ROUTES {
            let path = r
                .template
                .replace("{drive_id}", "d1")
                .replace("{iface_id}", "e1")
                .replace("{id}", "p1");
            for m in r.methods {
                let (ep, _) = resolve(m.as_str(), &path).unwrap();
                assert_eq!(ep.route.template, r.template);
            }
        }
    }

    #[test]
    fn unknown_path_and_wrong_method_are_told_apart() {
        assert!(matches!(
            resolve("GET", "/nope"),
            Err(RouteError::NotFound { .. })
        ));
        assert!(matches!(
            resolve("GET", "/drives/"),
            Err(RouteError::NotFound { .. })
        ));
        assert!(matches!(
            resolve("GET", "/drives/a/b"),
            Err(RouteError::NotFound { .. })
        ));
        let err = resolve("DELETE", "/boot-source").unwrap_err();
        assert_eq!(
            err.to_string(),
            "DELETE is not allowed on /boot-source; allowed: PUT"
        );
    }

    #[test]
    fn drive_id_must_match_the_path() {
        let body = br#"{"drive_id":"b","path_on_host":"/x"}"#;
        let err = parse_request("PUT", "/drives/a", body).unwrap_err();
        assert!(matches!(err, RouteError::IdMismatch { .. }), "{err}");
        assert!(parse_request("PUT", "/drives/b", body).is_ok());
    }

    #[test]
    fn actions_and_vm_state_map_to_actions() {
        let start = parse_request("PUT", "/actions", br#"{"action_type":"InstanceStart"}"#);
        assert_eq!(start.unwrap(), VmmAction::StartMicroVm);
        let pause = parse_request("PATCH", "/vm", br#"{"state":"Paused"}"#);
        assert_eq!(pause.unwrap(), VmmAction::Pause);
        let bad = parse_request("PUT", "/actions", br#"{"action_type":"Reboot"}"#).unwrap_err();
        assert!(
            bad.to_string().contains("unknown variant `Reboot`"),
            "{bad}"
        );
    }

    #[test]
    fn empty_body_is_reported_as_such() {
        let err = parse_request("PUT", "/boot-source", b" \n").unwrap_err();
        assert!(matches!(err, RouteError::EmptyBody { .. }));
    }
}
