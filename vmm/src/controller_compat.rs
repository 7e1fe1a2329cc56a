//! The VMM's half of the Firecracker-compatibility actions (issue 19): the balloon of a
//! running microVM, an interface's rate limiters after boot, the serial console's file and
//! limiter at start, and the extra fields of a metrics line. `VmResources` has already checked
//! each request; this applies it to the devices.

use crate::virtio_devices::{buckets, VirtioHandle};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wisp_api::{
    BalloonStats, Metrics, NetworkInterfaceUpdate, Serial, VmmActionError, VmmData, VmmResult,
};
use wisp_devices::rate_limiter::TokenBucket;
use wisp_devices::serial::RateLimitedOutput;
use wisp_devices::virtio::balloon::{BalloonReport, PAGE_SIZE};
use wisp_devices::virtio::{Balloon, MmioTransport, Net};

const PAGES_PER_MIB: u32 = (1 << 20) / PAGE_SIZE as u32;

fn transport_of(
    devices: &[VirtioHandle],
    kind: &str,
    id: &str,
) -> Result<Arc<Mutex<MmioTransport>>, VmmActionError> {
    devices
        .iter()
        .find(|h| h.kind == kind && h.id == id)
        .map(|h| h.transport.clone())
        .ok_or_else(|| VmmActionError::internal(format!("no {kind} `{id}` in the running microVM")))
}

/// Runs `f` on the running balloon device.
fn with_balloon<T>(
    devices: &[VirtioHandle],
    f: impl FnOnce(&mut Balloon) -> Result<T, String>,
) -> Result<T, VmmActionError> {
    let transport = transport_of(devices, "balloon", "balloon")?;
    let mut t = transport
        .lock()
        .map_err(|_| VmmActionError::internal("balloon state is poisoned"))?;
    let balloon = t
        .device_mut::<Balloon>()
        .ok_or_else(|| VmmActionError::internal("the balloon slot holds another device"))?;
    f(balloon).map_err(VmmActionError::bad_request)
}

/// `PATCH /balloon` on a running microVM.
pub fn set_balloon_target(devices: &[VirtioHandle], amount_mib: u32) -> VmmResult {
    with_balloon(devices, |b| {
        b.set_target_mib(amount_mib);
        Ok(VmmData::Empty)
    })
}

/// `PATCH /balloon/statistics` on a running microVM.
pub fn set_balloon_stats_interval(devices: &[VirtioHandle], seconds: u16) -> VmmResult {
    with_balloon(devices, |b| {
        b.set_stats_interval(seconds).map(|()| VmmData::Empty)
    })
}

/// `GET /balloon/statistics` on a running microVM.
pub fn balloon_stats(devices: &[VirtioHandle]) -> VmmResult {
    let report = with_balloon(devices, |b| Ok(b.report()))?;
    Ok(VmmData::BalloonStats(stats_from(&report)))
}

/// The API's statistics from the device's report (§5.5.6.3 tags, in order).
pub fn stats_from(r: &BalloonReport) -> BalloonStats {
    let s = &r.stats;
    BalloonStats {
        target_pages: r.target_pages,
        actual_pages: r.actual_pages,
        target_mib: r.target_pages / PAGES_PER_MIB,
        actual_mib: r.actual_pages / PAGES_PER_MIB,
        swap_in: s[0],
        swap_out: s[1],
        major_faults: s[2],
        minor_faults: s[3],
        free_memory: s[4],
        total_memory: s[5],
        available_memory: s[6],
        disk_caches: s[7],
        hugetlb_allocations: s[8],
        hugetlb_failures: s[9],
        oom_kill: s[10],
        alloc_stall: s[11],
        async_scan: s[12],
        direct_scan: s[13],
        async_reclaim: s[14],
        direct_reclaim: s[15],
    }
}

/// `PATCH /network-interfaces/{id}` on a running microVM: the new limiters apply at once.
pub fn update_net(devices: &[VirtioHandle], update: &NetworkInterfaceUpdate) -> VmmResult {
    let transport = transport_of(devices, "net", &update.iface_id)?;
    let mut t = transport
        .lock()
        .map_err(|_| VmmActionError::internal("interface state is poisoned"))?;
    let net = t
        .device_mut::<Net>()
        .ok_or_else(|| VmmActionError::internal("the interface slot holds another device"))?;
    let failed =
        |e: std::io::Error| VmmActionError::internal(format!("cannot set the rate limiter: {e}"));
    if let Some(l) = &update.rx_rate_limiter {
        let (bw, ops) = buckets(Some(l));
        net.set_rx_rate_limiter(bw, ops).map_err(failed)?;
    }
    if let Some(l) = &update.tx_rate_limiter {
        let (bw, ops) = buckets(Some(l));
        net.set_tx_rate_limiter(bw, ops).map_err(failed)?;
    }
    Ok(VmmData::Empty)
}

/// The console writer `PUT /serial` asks for: its file instead of `default`, through its
/// token bucket; `dropped` counts the bytes the bucket refused.
pub fn serial_output(
    serial: Option<&Serial>,
    default: Box<dyn Write + Send>,
    dropped: &Arc<AtomicU64>,
) -> Result<Box<dyn Write + Send>, VmmActionError> {
    let Some(serial) = serial else {
        return Ok(default);
    };
    let out: Box<dyn Write + Send> = match &serial.serial_out_path {
        Some(path) => Box::new(wisp_hostfs::open_append_create(path).map_err(|e| {
            VmmActionError::StartMicroVm(format!(
                "cannot open serial_out_path {}: {e}",
                path.display()
            ))
        })?),
        None => default,
    };
    let bucket = serial
        .rate_limiter
        .as_ref()
        .and_then(|b| TokenBucket::new(b.size, b.one_time_burst.unwrap_or(0), b.refill_time));
    Ok(match bucket {
        Some(bucket) => Box::new(RateLimitedOutput::new(out, bucket, dropped.clone())),
        None => out,
    })
}

/// Adds `id` (with `emit_id`), `properties` and the serial console's drops to a metrics line.
pub fn extend_metrics_line(
    line: &mut serde_json::Value,
    metrics: &Metrics,
    instance_id: &str,
    serial_dropped: &AtomicU64,
) {
    let Some(obj) = line.as_object_mut() else {
        return;
    };
    if metrics.emit_id {
        obj.insert("id".into(), instance_id.into());
    }
    if let Some(props) = &metrics.properties {
        obj.insert(
            "properties".into(),
            serde_json::to_value(props).unwrap_or_default(),
        );
    }
    obj.insert(
        "uart".into(),
        serde_json::json!({
            "rate_limiter_dropped_bytes": serial_dropped.load(Ordering::Relaxed),
        }),
    );
}
