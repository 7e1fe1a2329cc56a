//! `balloon`: a virtio-balloon driver (virtio 1.2 §5.5) that serves the host's target forever.
//!
//! The guest's "memory" for the balloon is an arena of RAM from [`ARENA_START`] to the end of
//! RAM below the MMIO gap. The command first writes every arena page (so the host really backs
//! them: its RSS of the VM grows by the arena), prints `balloon: touched=N MiB`, then loops:
//! it reads the target `num_pages` from config space, inflates (gives the host the highest
//! arena pages, 256 frame numbers per request) or deflates (takes the most recently given
//! pages back) until `actual` matches, and prints `balloon: actual=N pages` each time it
//! settles. With the statistics queue it answers every poll with MEMTOT, MEMFREE and AVAIL.
//!
//! Deflate on OOM: with `balloon_need_mib=N` on the command line the guest's workload needs N
//! MiB of the arena. A target that leaves less is an out-of-memory condition: with
//! VIRTIO_BALLOON_F_DEFLATE_ON_OOM negotiated the driver deflates until the workload fits
//! (`balloon: oom: deflated=P actual=A pages`) and does not inflate again until the target
//! changes; without it, it must not touch the balloon's pages and says so
//! (`balloon: oom: no deflate_on_oom, holding actual=A pages`).
//!
//! Interrupts stay off: config changes and used buffers are polled every [`POLL_MS`].

use super::dma::{self, DmaRegion};
use super::mmio::MmioTransport;
use super::queue::{Buffer, Virtqueue};
use super::{setup_queue, Slots, VirtioError, DEVICE_BALLOON};
use crate::deadline::Deadline;
use crate::serial::println;

const F_STATS_VQ: u64 = 1 << 1;
const F_DEFLATE_ON_OOM: u64 = 1 << 2;
/// Balloon page size (§5.5.6: always 4096).
const PAGE: u64 = 4096;
/// First byte of the arena: above the image, its DMA arena and the bench window at 16 MiB.
const ARENA_START: u64 = 32 << 20;
/// Frame numbers per inflate or deflate request.
const BATCH: usize = 256;
const POLL_MS: u64 = 20;
const REQUEST_TIMEOUT_MS: u64 = 5000;
/// Config space offsets (§5.5.4).
const CONFIG_NUM_PAGES: usize = 0;
const CONFIG_ACTUAL: usize = 4;
/// Statistic tags (§5.5.6.3).
const TAG_MEMFREE: u16 = 4;
const TAG_MEMTOT: u16 = 5;
const TAG_AVAIL: u16 = 6;
const STATS_LEN: usize = 3 * 10;

struct Driver {
    transport: MmioTransport,
    inflate: Virtqueue,
    deflate: Virtqueue,
    stats: Option<(Virtqueue, DmaRegion)>,
    pfns: DmaRegion,
    /// Arena frames, `[first, end)`; the balloon holds the top `inflated` of them.
    first: u64,
    end: u64,
    inflated: u64,
    oom_ok: bool,
    need_pages: u64,
    ram_bytes: u64,
}

/// The `balloon` command; returns only on a device error.
pub fn run(slots: &Slots, cmdline: &[u8], ram_bytes: Option<u64>) -> Result<(), VirtioError> {
    let ram_bytes = ram_bytes.unwrap_or(0);
    let arena_end = ram_bytes.min(super::MMIO_WINDOW_START);
    if arena_end <= ARENA_START {
        println!("balloon: error: needs more than {} MiB of RAM", ARENA_START >> 20);
        return Ok(());
    }
    let (transport, features) =
        slots.open("balloon", DEVICE_BALLOON, F_STATS_VQ | F_DEFLATE_ON_OOM)?;
    let inflate = setup_queue(&transport, 0)?;
    let deflate = setup_queue(&transport, 1)?;
    let stats = if features & F_STATS_VQ != 0 {
        let queue = setup_queue(&transport, 2)?;
        let buffer = dma::alloc(STATS_LEN, 8).ok_or(VirtioError::OutOfDma)?;
        Some((queue, buffer))
    } else {
        None
    };
    transport.driver_ok()?;
    let pfns = dma::alloc(BATCH * 4, 4).ok_or(VirtioError::OutOfDma)?;
    let mut driver = Driver {
        transport,
        inflate,
        deflate,
        stats,
        pfns,
        first: ARENA_START / PAGE,
        end: arena_end / PAGE,
        inflated: 0,
        oom_ok: features & F_DEFLATE_ON_OOM != 0,
        need_pages: need_mib(cmdline) * ((1 << 20) / PAGE),
        ram_bytes,
    };
    driver.touch_arena();
    println!(
        "balloon: touched={} MiB deflate_on_oom={} stats={}",
        (arena_end - ARENA_START) >> 20,
        driver.oom_ok,
        driver.stats.is_some()
    );
    driver.send_stats()?;
    driver.serve()
}

/// `balloon_need_mib=N` from the command line (0 when absent).
fn need_mib(cmdline: &[u8]) -> u64 {
    cmdline
        .split(|b| b.is_ascii_whitespace())
        .find_map(|w| w.strip_prefix(b"balloon_need_mib="))
        .and_then(|n| core::str::from_utf8(n).ok()?.parse().ok())
        .unwrap_or(0)
}

impl Driver {
    /// Writes one word in every arena page, so the host backs it.
    fn touch_arena(&self) {
        for pfn in self.first..self.end {
            // SAFETY: the arena is guest RAM (from the PVH memory map, below the MMIO gap)
            // that nothing else in the unikernel uses; the page tables identity-map it.
            unsafe { core::ptr::write_volatile((pfn * PAGE) as *mut u64, pfn) };
        }
    }

    fn arena_pages(&self) -> u64 {
        self.end - self.first
    }

    fn serve(&mut self) -> Result<(), VirtioError> {
        let mut seen_target = u64::MAX;
        let mut settled = u64::MAX;
        let mut oom_hold = false;
        let mut oom_reported = false;
        loop {
            let target = u64::from(self.transport.config_u32(CONFIG_NUM_PAGES))
                .min(self.arena_pages());
            if target != seen_target {
                seen_target = target;
                oom_hold = false;
                oom_reported = false;
            }
            let free = self.arena_pages() - self.inflated;
            if self.need_pages > 0 && free < self.need_pages && self.inflated > 0 && !oom_reported
            {
                if self.oom_ok {
                    let give_back = (self.need_pages - free).min(self.inflated);
                    self.move_pages(give_back, false)?;
                    println!(
                        "balloon: oom: deflated={give_back} actual={} pages",
                        self.inflated
                    );
                    oom_hold = true;
                } else {
                    println!(
                        "balloon: oom: no deflate_on_oom, holding actual={} pages",
                        self.inflated
                    );
                }
                oom_reported = true;
            } else if target > self.inflated && !oom_hold {
                let n = (target - self.inflated).min(BATCH as u64);
                self.move_pages(n, true)?;
                continue;
            } else if target < self.inflated {
                let n = (self.inflated - target).min(BATCH as u64);
                self.move_pages(n, false)?;
                continue;
            }
            if self.inflated != settled {
                settled = self.inflated;
                println!("balloon: actual={} pages", self.inflated);
            }
            self.answer_stats_poll()?;
            let pause = Deadline::after_ms(POLL_MS);
            while !pause.passed() {}
        }
    }

    /// Inflates (gives the host) or deflates (takes back) `n` pages, then updates `actual`.
    fn move_pages(&mut self, n: u64, inflate: bool) -> Result<(), VirtioError> {
        for i in 0..n {
            // The balloon holds the top `inflated` arena frames: inflate grows it downwards,
            // deflate returns the lowest of them first.
            let pfn = if inflate {
                self.end - 1 - self.inflated - i
            } else {
                self.end - self.inflated + i
            };
            self.pfns
                .write(i as usize * 4, &(pfn as u32).to_le_bytes());
        }
        let (queue, index) = if inflate {
            (&mut self.inflate, 0)
        } else {
            (&mut self.deflate, 1)
        };
        let head = queue.submit(&[Buffer::part(self.pfns, n as usize * 4, false)])?;
        self.transport.notify(index);
        let used = queue.wait_used(&Deadline::after_ms(REQUEST_TIMEOUT_MS))?;
        self.transport.ack_interrupts();
        if used.head != head {
            return Err(VirtioError::BadUsedId {
                index,
                id: u32::from(used.head),
            });
        }
        if inflate {
            self.inflated += n;
        } else {
            self.inflated -= n;
        }
        self.transport
            .config_write_u32(CONFIG_ACTUAL, self.inflated as u32);
        Ok(())
    }

    /// Fills the statistics buffer and hands it to the device.
    fn send_stats(&mut self) -> Result<(), VirtioError> {
        let free = (self.arena_pages() - self.inflated) * PAGE;
        let total = self.ram_bytes;
        let Some((queue, buffer)) = &mut self.stats else {
            return Ok(());
        };
        for (i, (tag, value)) in [(TAG_MEMTOT, total), (TAG_MEMFREE, free), (TAG_AVAIL, free)]
            .into_iter()
            .enumerate()
        {
            buffer.write(i * 10, &tag.to_le_bytes());
            buffer.write(i * 10 + 2, &value.to_le_bytes());
        }
        queue.submit(&[Buffer::readable(*buffer)])?;
        self.transport.notify(2);
        Ok(())
    }

    /// The device hands the statistics buffer back when it wants fresh numbers.
    fn answer_stats_poll(&mut self) -> Result<(), VirtioError> {
        let Some((queue, _)) = &mut self.stats else {
            return Ok(());
        };
        if queue.pop_used()?.is_some() {
            self.transport.ack_interrupts();
            self.send_stats()?;
        }
        Ok(())
    }
}
