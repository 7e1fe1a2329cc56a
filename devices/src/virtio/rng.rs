//! virtio-rng, the entropy device (virtio 1.2 §5.4), fed by the host's getrandom(2).
//!
//! An optional [`RateLimiter`] (Firecracker's entropy `rate_limiter`) charges each request its
//! byte count; a request that does not fit goes back on the ring until the limiter's timer.

use std::any::Any;
use std::sync::Arc;

use event_manager::{EventOps, Events};

use super::chain;
use super::device::{QueueContext, VirtioDevice};
use super::metrics::DeviceMetrics;
use super::{device_id, VIRTIO_F_VERSION_1};
use crate::rate_limiter::{RateLimiter, TokenBucket};
use virtio_queue::QueueT;

const QUEUE_SIZE: u16 = 256;
/// Most bytes served per request: a driver asking for more gets a short (valid) answer.
const MAX_REQUEST: usize = 64 * 1024;

/// Log prefix.
const WHO: &str = "virtio-rng";

/// A virtio entropy device.
#[derive(Debug, Default)]
pub struct Rng {
    metrics: Arc<DeviceMetrics>,
    limiter: RateLimiter,
}

impl Rng {
    /// A new entropy device.
    pub fn new() -> Self {
        Rng::default()
    }

    /// Sets or replaces the limiter (`None` twice: no limit).
    pub fn set_rate_limiter(
        &mut self,
        bandwidth: Option<TokenBucket>,
        ops: Option<TokenBucket>,
    ) -> std::io::Result<()> {
        self.limiter.update(bandwidth, ops)
    }
}

/// Fills `buf` from getrandom(2) (blocking only until the host pool is initialised at boot).
fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, which is a valid,
        // exclusively borrowed buffer of that length.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_id::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn config_space(&self) -> Vec<u8> {
        Vec::new()
    }

    fn activate(&mut self, _ctx: &mut QueueContext, ops: &mut EventOps) -> Result<(), String> {
        self.limiter.register(ops);
        Ok(())
    }

    fn reset(&mut self, ops: &mut EventOps) {
        self.limiter.unregister(ops);
    }

    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext, ops: &mut EventOps) {
        self.limiter.register(ops);
        if self.limiter.is_blocked() {
            return;
        }
        let Some(queue) = ctx.queues.get_mut(index) else {
            return;
        };
        let mut used = false;
        while let Some((head, c)) = chain::pop_chain(queue, ctx.mem) {
            let cost = match &c {
                Ok(c) => chain::total_len(&c.writable).min(MAX_REQUEST) as u64,
                Err(_) => 0,
            };
            if !self.limiter.request(cost) {
                queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                self.metrics.throttled();
                break;
            }
            self.metrics.request();
            used = true;
            // §5.4.6.1: the driver only offers device-writable buffers.
            let len = match c {
                Ok(c) if c.readable.is_empty() && !c.writable.is_empty() => {
                    let n = chain::total_len(&c.writable).min(MAX_REQUEST);
                    let mut bytes = vec![0u8; n];
                    match fill_random(&mut bytes) {
                        Ok(()) => chain::fill_writable(ctx.mem, &c, &bytes, &self.metrics, WHO),
                        Err(e) => chain::refuse(&self.metrics, WHO, e),
                    }
                }
                Ok(_) => chain::refuse(
                    &self.metrics,
                    WHO,
                    "request with device-readable or no buffers",
                ),
                Err(e) => chain::refuse(&self.metrics, WHO, e),
            };
            chain::add_used(queue, ctx.mem, head, len);
        }
        if used {
            chain::notify_used(queue, ctx.mem, ctx.interrupt);
        }
    }

    fn process_backend(&mut self, events: Events, ctx: &mut QueueContext, ops: &mut EventOps) {
        if self.limiter.on_timer(events.fd()) {
            self.process_queue(0, ctx, ops);
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
mod tests {
    use super::*;
    use crate::virtio::test_driver::{TestGuest, F_NEXT, F_WRITE, MEM_SIZE};

    #[test]
    fn guest_buffers_are_filled_with_random_bytes() {
        let mut g = TestGuest::new(Box::new(Rng::new()));
        g.activate(1);
        let a = g.alloc(64);
        let b = g.alloc(64);
        g.add_chain(0, &[(a, 32, true), (a + 32, 32, true)]);
        g.add_chain(0, &[(b, 64, true)]);
        g.notify(0);
        let used = g.take_used(0);
        assert_eq!(used.iter().map(|u| u.1).collect::<Vec<_>>(), [64, 64]);
        let (x, y) = (g.read(a, 64), g.read(b, 64));
        assert_ne!(x, y, "two requests got the same 64 bytes");
        assert_ne!(x, vec![0u8; 64]);
        assert_eq!(
            g.transport.lock().unwrap().metrics().snapshot().bytes_read,
            128
        );
    }

    #[test]
    fn malformed_rng_requests_fail_and_the_device_keeps_working() {
        let mut g = TestGuest::new(Box::new(Rng::new()));
        g.activate(1);
        let a = g.alloc(64);
        // Device-readable buffer, buffer outside memory, descriptor loop.
        g.add_raw(0, 0, &[(a, 16, 0, 0)], 0);
        g.add_raw(0, 1, &[(MEM_SIZE as u64, 16, F_WRITE, 0)], 1);
        g.add_raw(
            0,
            2,
            &[(a, 16, F_WRITE | F_NEXT, 3), (a, 16, F_WRITE | F_NEXT, 2)],
            2,
        );
        g.notify(0);
        let used = g.take_used(0);
        assert_eq!(used, [(0, 0), (1, 0), (2, 0)]);
        assert_eq!(g.errors(), 3);
        g.add_raw(0, 4, &[(a, 16, F_WRITE, 0)], 4);
        g.notify(0);
        assert_eq!(g.take_used(0), [(4, 16)]);
    }

    #[test]
    fn a_bandwidth_limited_rng_serves_what_fits_and_the_rest_after_its_timer() {
        let mut rng = Rng::new();
        // 64 bytes per 50 ms, plus a one-time burst of 64.
        rng.set_rate_limiter(TokenBucket::new(64, 64, 50), None)
            .unwrap();
        let mut g = TestGuest::new(Box::new(rng));
        g.activate(1);
        for _ in 0..4 {
            let a = g.alloc(64);
            g.add_chain(0, &[(a, 64, true)]);
        }
        let start = std::time::Instant::now();
        g.notify(0);
        assert_eq!(g.take_used(0).len(), 2, "burst + full bucket");
        let mut done = 2;
        g.pump_until(|g| {
            done += g.take_used(0).len();
            done == 4
        });
        assert!(start.elapsed() >= std::time::Duration::from_millis(90));
        assert!(g.transport.lock().unwrap().metrics().snapshot().throttled >= 1);
    }
}
