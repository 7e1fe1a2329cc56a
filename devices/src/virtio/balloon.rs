//! virtio-balloon (virtio 1.2 §5.5): the host asks the guest to give memory back.
//!
//! The host sets a target (`num_pages`, 4 KiB pages) in config space and raises a config
//! interrupt; the driver puts page frame numbers on the inflate queue and the device drops
//! those pages from the VMM's mapping (`madvise(MADV_DONTNEED)`, or `MADV_REMOVE` for a
//! file-backed region), so the host's RSS of the VM falls by as much. Deflated pages need no
//! work: the guest's next touch faults in a fresh zero page. The driver reports its balloon
//! size in `actual`.
//!
//! Optional parts, each a feature bit: DEFLATE_ON_OOM (the guest may deflate under memory
//! pressure), STATS_VQ (the device keeps the driver's statistics buffer and hands it back
//! every `stats_polling_interval_s` for fresh numbers) and REPORTING (free page reporting:
//! the driver lends free page ranges, the device drops them and returns the buffers).
//! Queues are numbered in order of the optional queues that exist (virtio-mmio drivers skip
//! absent ones), decided from the features the driver accepted.
//!
//! Guest input is never trusted: a page frame outside guest memory is counted and skipped,
//! a malformed chain is refused alone, the statistics buffer is read with bounds.

use std::any::Any;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use event_manager::{EventOps, EventSet, Events};
use virtio_queue::Queue;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::timerfd::TimerFd;

use super::chain::{self, GuestBuf};
use super::device::{Interrupt, QueueContext, VirtioDevice};
use super::metrics::DeviceMetrics;
use super::{device_id, VIRTIO_F_VERSION_1};

/// Feature bits, §5.5.3.
pub const F_STATS_VQ: u32 = 1;
pub const F_DEFLATE_ON_OOM: u32 = 2;
pub const F_REPORTING: u32 = 5;

/// The balloon's page size, whatever the guest's (§5.5.6: "4096 bytes").
pub const PAGE_SIZE: u64 = 4096;
const QUEUE_SIZE: u16 = 256;
/// Bytes of one statistic: le16 tag, le64 value (§5.5.6.3).
const STAT_LEN: usize = 10;
/// Statistic tags the device keeps (0..=15, §5.5.6.3 and Linux's later additions).
pub const STAT_TAGS: usize = 16;
/// Most statistics read from one buffer (a hostile length is bounded).
const MAX_STATS: usize = 64;

/// Log prefix.
const WHO: &str = "virtio-balloon";

/// What the balloon reports to the API (`GET /balloon/statistics`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BalloonReport {
    pub target_pages: u32,
    pub actual_pages: u32,
    /// The driver's last statistics, by tag (§5.5.6.3); `None`: never sent.
    pub stats: [Option<u64>; STAT_TAGS],
    /// Pages dropped from the host mapping, inflate and free page reporting together.
    pub pages_released: u64,
}

/// Which queue does what, once the driver's features are known.
#[derive(Clone, Copy, Debug, Default)]
struct QueueRoles {
    stats: Option<usize>,
    reporting: Option<usize>,
}

/// A virtio-balloon device.
pub struct Balloon {
    deflate_on_oom: bool,
    stats_interval_s: u16,
    free_page_reporting: bool,
    queue_sizes: Vec<u16>,
    target_pages: u32,
    actual_pages: u32,
    acked: u64,
    roles: QueueRoles,
    /// The driver's statistics buffer, kept until the next poll (§5.5.6.3).
    stats_head: Option<u16>,
    /// Created with the device (the VMM thread's seccomp filter has no timerfd_create once
    /// the guest runs), armed and registered when the driver accepts the statistics queue.
    stats_timer: Option<TimerFd>,
    stats_registered: bool,
    report: BalloonReport,
    interrupt: Option<Arc<Interrupt>>,
    metrics: Arc<DeviceMetrics>,
}

impl Balloon {
    /// A balloon asking for `target_mib` MiB at first; statistics every `stats_interval_s`
    /// seconds (0: no statistics queue).
    pub fn new(
        target_mib: u32,
        deflate_on_oom: bool,
        stats_interval_s: u16,
        free_page_reporting: bool,
    ) -> std::io::Result<Self> {
        let stats_timer = if stats_interval_s > 0 {
            let timer = TimerFd::new().map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
            // Non-blocking, so consuming an expiry never blocks the event loop even if the
            // timer was re-armed (and its expiry cleared) after epoll reported it.
            // SAFETY: F_SETFL with O_NONBLOCK on a timerfd this device owns.
            let rc = unsafe { libc::fcntl(timer.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Some(timer)
        } else {
            None
        };
        let mut queue_sizes = vec![QUEUE_SIZE, QUEUE_SIZE];
        if stats_interval_s > 0 {
            queue_sizes.push(QUEUE_SIZE);
        }
        if free_page_reporting {
            queue_sizes.push(QUEUE_SIZE);
        }
        Ok(Balloon {
            deflate_on_oom,
            stats_interval_s,
            free_page_reporting,
            queue_sizes,
            target_pages: mib_to_pages(target_mib),
            actual_pages: 0,
            acked: 0,
            roles: QueueRoles::default(),
            stats_head: None,
            stats_timer,
            stats_registered: false,
            report: BalloonReport::default(),
            interrupt: None,
            metrics: Arc::new(DeviceMetrics::default()),
        })
    }

    /// A new target (PATCH /balloon): config space changes and the driver is told.
    pub fn set_target_mib(&mut self, mib: u32) {
        self.target_pages = mib_to_pages(mib);
        if let Some(interrupt) = &self.interrupt {
            interrupt.signal_config_change();
        }
    }

    /// A new statistics interval (PATCH /balloon/statistics); statistics stay on. The next
    /// poll is at once, then every `seconds`.
    pub fn set_stats_interval(&mut self, seconds: u16) -> Result<(), String> {
        if self.stats_interval_s == 0 || seconds == 0 {
            return Err("statistics cannot be turned on or off after boot".into());
        }
        self.stats_interval_s = seconds;
        if let (Some(timer), true) = (&mut self.stats_timer, self.stats_registered) {
            arm(timer, Duration::from_millis(1), seconds)
                .map_err(|e| format!("cannot re-arm the statistics timer: {e}"))?;
        }
        Ok(())
    }

    /// The target, the driver's size and its last statistics.
    pub fn report(&self) -> BalloonReport {
        BalloonReport {
            target_pages: self.target_pages,
            actual_pages: self.actual_pages,
            ..self.report.clone()
        }
    }

    fn inflate(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap, interrupt: &Interrupt) {
        let mut used = false;
        while let Some((head, c)) = chain::pop_chain(queue, mem) {
            used = true;
            self.metrics.request();
            match c {
                Ok(c) => {
                    for buf in &c.readable {
                        self.release_pfns(mem, *buf);
                    }
                }
                Err(e) => {
                    chain::refuse(&self.metrics, WHO, e);
                }
            }
            chain::add_used(queue, mem, head, 0);
        }
        if used {
            chain::notify_used(queue, mem, interrupt);
        }
    }

    /// Reads the le32 page frame numbers of one buffer and drops each page, merging runs of
    /// contiguous frames into one madvise.
    fn release_pfns(&mut self, mem: &GuestMemoryMmap, buf: GuestBuf) {
        let count = buf.len as usize / 4;
        let mut raw = vec![0u8; count * 4];
        if let Err(e) = chain::read_at(mem, &[buf], 0, &mut raw) {
            chain::refuse(&self.metrics, WHO, e);
            return;
        }
        let mut run: Option<(u64, u64)> = None;
        for pfn in raw.chunks_exact(4) {
            let pfn = u64::from(u32::from_le_bytes([pfn[0], pfn[1], pfn[2], pfn[3]]));
            run = match run {
                Some((start, n)) if start + n == pfn => Some((start, n + 1)),
                Some((start, n)) => {
                    self.release(mem, start * PAGE_SIZE, n * PAGE_SIZE);
                    Some((pfn, 1))
                }
                None => Some((pfn, 1)),
            };
        }
        if let Some((start, n)) = run {
            self.release(mem, start * PAGE_SIZE, n * PAGE_SIZE);
        }
    }

    /// Drops guest-physical `[addr, addr + len)` from the host mapping, region by region.
    fn release(&mut self, mem: &GuestMemoryMmap, addr: u64, len: u64) {
        let mut at = addr;
        let end = addr.saturating_add(len);
        while at < end {
            let Some(region) = mem.find_region(GuestAddress(at)) else {
                crate::guest_log!(
                    log::Level::Warn,
                    Some(&*self.metrics),
                    "{WHO}: page at {at:#x} is outside guest memory"
                );
                self.metrics.error();
                return;
            };
            let offset = at - region.start_addr().raw_value();
            let n = (region.len() - offset).min(end - at);
            let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(offset)) else {
                self.metrics.error();
                return;
            };
            // MADV_DONTNEED frees private anonymous pages; a file-backed (shared) region keeps
            // its pages in the file, so they are punched out with MADV_REMOVE.
            let advice = if region.file_offset().is_some() {
                libc::MADV_REMOVE
            } else {
                libc::MADV_DONTNEED
            };
            // SAFETY: `[host, host + n)` lies inside one live mapping owned by `mem` (the
            // region was found for `at` and `n` is bounded by its end). Dropping pages the
            // guest gave up only makes later reads see zeros; Rust holds no references into
            // guest memory.
            let rc = unsafe { libc::madvise(host.cast(), n as usize, advice) };
            if rc != 0 {
                // E.g. EINVAL for 4 KiB of a hugetlb-backed region: the page stays backed.
                let e = std::io::Error::last_os_error();
                crate::guest_log!(
                    log::Level::Warn,
                    Some(&*self.metrics),
                    "{WHO}: madvise of {n} bytes at guest {at:#x} failed: {e}"
                );
                self.metrics.error();
            } else {
                self.report.pages_released += n / PAGE_SIZE;
            }
            at += n;
        }
    }

    /// Deflate: the pages are the guest's again; nothing to do but give the buffers back.
    fn deflate(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap, interrupt: &Interrupt) {
        let mut used = false;
        while let Some((head, c)) = chain::pop_chain(queue, mem) {
            used = true;
            self.metrics.request();
            if let Err(e) = c {
                chain::refuse(&self.metrics, WHO, e);
            }
            chain::add_used(queue, mem, head, 0);
        }
        if used {
            chain::notify_used(queue, mem, interrupt);
        }
    }

    /// The driver's statistics buffer: read it and keep it until the next poll.
    fn take_stats(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap, interrupt: &Interrupt) {
        while let Some((head, c)) = chain::pop_chain(queue, mem) {
            if let Some(old) = self.stats_head.replace(head) {
                // A second buffer while one is held: give the older one back.
                chain::add_used(queue, mem, old, 0);
                chain::notify_used(queue, mem, interrupt);
            }
            let c = match c {
                Ok(c) => c,
                Err(e) => {
                    chain::refuse(&self.metrics, WHO, e);
                    continue;
                }
            };
            let len = chain::total_len(&c.readable).min(MAX_STATS * STAT_LEN);
            let mut raw = vec![0u8; len - len % STAT_LEN];
            if let Err(e) = chain::read_at(mem, &c.readable, 0, &mut raw) {
                chain::refuse(&self.metrics, WHO, e);
                continue;
            }
            for stat in raw.chunks_exact(STAT_LEN) {
                let tag = usize::from(u16::from_le_bytes([stat[0], stat[1]]));
                let mut value = [0u8; 8];
                value.copy_from_slice(&stat[2..10]);
                if let Some(slot) = self.report.stats.get_mut(tag) {
                    *slot = Some(u64::from_le_bytes(value));
                }
            }
        }
    }

    /// Free page reporting: every buffer is a free range of guest memory, lent to the host.
    fn reported(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap, interrupt: &Interrupt) {
        let mut used = false;
        while let Some((head, c)) = chain::pop_chain(queue, mem) {
            used = true;
            match c {
                Ok(c) => {
                    for buf in c.readable.iter().chain(c.writable.iter()) {
                        self.release(mem, buf.addr.raw_value(), u64::from(buf.len));
                    }
                }
                Err(e) => {
                    chain::refuse(&self.metrics, WHO, e);
                }
            }
            chain::add_used(queue, mem, head, 0);
        }
        if used {
            chain::notify_used(queue, mem, interrupt);
        }
    }
}

/// What a snapshot keeps of a balloon beyond its transport: the target (PATCH /balloon may
/// have moved it from the configured one), the driver's `actual`, the statistics interval and
/// last numbers, and the statistics buffer the device holds until its next poll (the timer
/// is armed again when the restored transport activates the device).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BalloonState {
    pub target_pages: u32,
    pub actual_pages: u32,
    pub stats_interval_s: u16,
    pub stats_head: Option<u16>,
    pub stats: [Option<u64>; STAT_TAGS],
    pub pages_released: u64,
}

impl Balloon {
    /// The device's own state (the vCPUs paused, so the driver changes nothing meanwhile).
    pub fn save_state(&self) -> BalloonState {
        BalloonState {
            target_pages: self.target_pages,
            actual_pages: self.actual_pages,
            stats_interval_s: self.stats_interval_s,
            stats_head: self.stats_head,
            stats: self.report.stats,
            pages_released: self.report.pages_released,
        }
    }

    /// Puts a fresh balloon (made from the saved configuration, not yet activated) into
    /// `state`. Statistics must be on in both or off in both: they decide the queues.
    pub fn restore_state(&mut self, state: &BalloonState) -> Result<(), String> {
        if (state.stats_interval_s == 0) != (self.stats_interval_s == 0) {
            return Err(format!(
                "statistics every {} s were saved; this balloon has them {}",
                state.stats_interval_s,
                if self.stats_interval_s == 0 {
                    "off"
                } else {
                    "on"
                }
            ));
        }
        if state
            .stats_head
            .is_some_and(|h| self.queue_sizes.get(2).is_none_or(|&size| h >= size))
        {
            return Err("the held statistics buffer is outside its queue".into());
        }
        self.target_pages = state.target_pages;
        self.actual_pages = state.actual_pages;
        self.stats_interval_s = state.stats_interval_s;
        self.stats_head = state.stats_head;
        self.report.stats = state.stats;
        self.report.pages_released = state.pages_released;
        Ok(())
    }
}

fn mib_to_pages(mib: u32) -> u32 {
    mib.saturating_mul((1 << 20) / PAGE_SIZE as u32)
}

fn arm(timer: &mut TimerFd, first: Duration, every_s: u16) -> std::io::Result<()> {
    timer
        .reset(first, Some(Duration::from_secs(u64::from(every_s))))
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        device_id::BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        let mut f = 1u64 << VIRTIO_F_VERSION_1;
        if self.deflate_on_oom {
            f |= 1 << F_DEFLATE_ON_OOM;
        }
        if self.stats_interval_s > 0 {
            f |= 1 << F_STATS_VQ;
        }
        if self.free_page_reporting {
            f |= 1 << F_REPORTING;
        }
        f
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
        let mut next = 2;
        let mut take = |bit: u32| {
            (features & (1 << bit) != 0).then(|| {
                next += 1;
                next - 1
            })
        };
        let stats = take(F_STATS_VQ);
        let reporting = take(F_REPORTING);
        self.roles = QueueRoles { stats, reporting };
    }

    /// `struct virtio_balloon_config` (§5.5.4): num_pages, actual, free_page_hint_cmd_id,
    /// poison_val.
    fn config_space(&self) -> Vec<u8> {
        let mut c = Vec::with_capacity(16);
        c.extend_from_slice(&self.target_pages.to_le_bytes());
        c.extend_from_slice(&self.actual_pages.to_le_bytes());
        c.extend_from_slice(&[0u8; 8]);
        c
    }

    /// Only `actual` (offset 4) is the driver's to write.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if offset == 4 && data.len() == 4 {
            self.actual_pages = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            return;
        }
        crate::guest_log!(
            log::Level::Warn,
            Some(&*self.metrics),
            "{WHO}: ignored {}-byte config write at {offset:#x} (only `actual` is writable)",
            data.len()
        );
    }

    fn activate(&mut self, ctx: &mut QueueContext, ops: &mut EventOps) -> Result<(), String> {
        self.interrupt = Some(ctx.interrupt.clone());
        if let (Some(timer), Some(_)) = (&mut self.stats_timer, self.roles.stats) {
            let every = self.stats_interval_s;
            arm(timer, Duration::from_secs(u64::from(every)), every)
                .map_err(|e| format!("cannot arm the statistics timer: {e}"))?;
            if !self.stats_registered {
                ops.add(Events::new(timer, EventSet::IN))
                    .map_err(|e| format!("cannot register the statistics timer: {e}"))?;
                self.stats_registered = true;
            }
        }
        Ok(())
    }

    fn reset(&mut self, ops: &mut EventOps) {
        if let Some(timer) = &mut self.stats_timer {
            let _ = timer.clear();
            if self.stats_registered {
                let _ = ops.remove(Events::new(timer, EventSet::IN));
                self.stats_registered = false;
            }
        }
        self.stats_head = None;
        self.interrupt = None;
        self.actual_pages = 0;
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext, _ops: &mut EventOps) {
        let roles = self.roles;
        let interrupt = ctx.interrupt.clone();
        let Some(queue) = ctx.queues.get_mut(index) else {
            return;
        };
        match index {
            0 => self.inflate(queue, ctx.mem, &interrupt),
            1 => self.deflate(queue, ctx.mem, &interrupt),
            i if Some(i) == roles.stats => self.take_stats(queue, ctx.mem, &interrupt),
            i if Some(i) == roles.reporting => self.reported(queue, ctx.mem, &interrupt),
            _ => {}
        }
    }

    /// The statistics timer: hand the kept buffer back so the driver refills it.
    fn process_backend(&mut self, events: Events, ctx: &mut QueueContext, _ops: &mut EventOps) {
        let Some(timer) = &mut self.stats_timer else {
            return;
        };
        if timer.as_raw_fd() != events.fd() {
            return;
        }
        // Reading the expiry count clears the readiness.
        let _ = timer.wait();
        let (Some(index), Some(head)) = (self.roles.stats, self.stats_head.take()) else {
            return;
        };
        if let Some(queue) = ctx.queues.get_mut(index) {
            chain::add_used(queue, ctx.mem, head, 0);
            chain::notify_used(queue, ctx.mem, ctx.interrupt);
        }
    }

    fn metrics(&self) -> &Arc<DeviceMetrics> {
        &self.metrics
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
#[path = "balloon_tests.rs"]
mod tests;
