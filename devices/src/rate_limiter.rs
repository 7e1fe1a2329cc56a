//! Token-bucket rate limiters for guest I/O, with the semantics of Firecracker's `rate_limiter`
//! objects: a bucket holds at most `size` tokens, refills at `size` tokens per `refill_time`
//! milliseconds, starts full and may add a one-time `one_time_burst` of extra tokens that is
//! spent first and never refilled. A [`RateLimiter`] has up to two buckets: bandwidth (one
//! token per byte) and ops (one token per request).
//!
//! A request that does not fit is never dropped and the event loop never sleeps: the device
//! stops serving that queue, [`RateLimiter::request`] arms a timerfd for the moment enough
//! tokens are back, and the device resumes when the event loop reports the timer.
//!
//! A request larger than the bucket (`tokens > size`) could never fit. It passes when the
//! bucket is full and leaves it in debt (below zero), so the following requests wait until the
//! debt is refilled: the long-run rate stays `size / refill_time` whatever the request sizes.
//!
//! Arithmetic is exact: the budget is kept in token-nanoseconds (`tokens * refill_ns`), and
//! `elapsed_ns * size` of them come back per refill, so no rounding accumulates.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events};
use vmm_sys_util::timerfd::TimerFd;

/// Shortest timer the limiter arms: a zero timerfd would disarm instead of firing.
const MIN_WAIT: Duration = Duration::from_micros(100);

/// Which bucket a consumption applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// One token per byte.
    Bytes,
    /// One token per request.
    Ops,
}

/// One token bucket (Firecracker's `TokenBucket` object).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    size: u64,
    refill_ns: u128,
    one_time_burst: u64,
    /// Tokens times `refill_ns`; negative while a request larger than `size` is paid off.
    budget: i128,
    last_refill: Instant,
}

impl TokenBucket {
    /// A full bucket of `size` tokens refilled over `refill_time_ms`, plus `one_time_burst`.
    /// `None` when the bucket would be meaningless (`size` or `refill_time_ms` is 0): the
    /// caller treats that as "no limit", as Firecracker does.
    pub fn new(size: u64, one_time_burst: u64, refill_time_ms: u64) -> Option<Self> {
        Self::new_at(size, one_time_burst, refill_time_ms, Instant::now())
    }

    fn new_at(size: u64, one_time_burst: u64, refill_time_ms: u64, now: Instant) -> Option<Self> {
        if size == 0 || refill_time_ms == 0 {
            return None;
        }
        let refill_ns = u128::from(refill_time_ms) * 1_000_000;
        Some(TokenBucket {
            size,
            refill_ns,
            one_time_burst,
            budget: capacity(size, refill_ns),
            last_refill: now,
        })
    }

    /// Tokens the bucket holds when full.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What remains of the one-time burst.
    pub fn one_time_burst(&self) -> u64 {
        self.one_time_burst
    }

    /// Whole tokens available now (the burst not included; 0 while in debt).
    pub fn budget(&self) -> u64 {
        u64::try_from(self.budget.max(0) / self.refill_ns as i128).unwrap_or(u64::MAX)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_refill).as_nanos();
        self.last_refill = now;
        let cap = capacity(self.size, self.refill_ns);
        let gained = elapsed.saturating_mul(u128::from(self.size));
        let gained = i128::try_from(gained).unwrap_or(i128::MAX);
        self.budget = self.budget.saturating_add(gained).min(cap);
    }

    /// Takes `tokens` now if they fit (burst first), else leaves the bucket as it was; for
    /// callers that drop what does not fit rather than wait (the serial console's output).
    pub fn try_consume(&mut self, tokens: u64) -> bool {
        self.consume_at(tokens, Instant::now())
    }

    /// Takes `tokens` if they fit (burst first), else leaves the bucket as it was.
    fn consume_at(&mut self, tokens: u64, now: Instant) -> bool {
        self.refill(now);
        let from_burst = tokens.min(self.one_time_burst);
        let rest = tokens - from_burst;
        let cost = i128::from(rest) * self.refill_ns as i128;
        let fits = cost <= self.budget
            // Larger than the whole bucket: it can only ever pass from a full bucket.
            || (rest > self.size && self.budget >= capacity(self.size, self.refill_ns));
        if fits {
            self.one_time_burst -= from_burst;
            self.budget -= cost;
        }
        fits
    }

    /// Gives back tokens taken by a request that did not go ahead after all.
    fn replenish(&mut self, tokens: u64) {
        let cap = capacity(self.size, self.refill_ns);
        let add = i128::from(tokens) * self.refill_ns as i128;
        self.budget = self.budget.saturating_add(add).min(cap);
    }

    /// How long until `tokens` would fit (zero if they fit now).
    fn wait_for(&self, tokens: u64, now: Instant) -> Duration {
        let rest = tokens.saturating_sub(self.one_time_burst).min(self.size);
        let elapsed = now.saturating_duration_since(self.last_refill).as_nanos();
        let have = self
            .budget
            .saturating_add(i128::try_from(elapsed * u128::from(self.size)).unwrap_or(i128::MAX));
        let deficit = i128::from(rest) * self.refill_ns as i128 - have;
        if deficit <= 0 {
            return Duration::ZERO;
        }
        // Ceiling division: the bucket gains `size` token-ns per ns.
        let ns = (deficit as u128).div_ceil(u128::from(self.size));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

fn capacity(size: u64, refill_ns: u128) -> i128 {
    i128::try_from(u128::from(size) * refill_ns).unwrap_or(i128::MAX)
}

/// A device queue's limiter: optional bandwidth and ops buckets and the timer that says when a
/// blocked queue may go on.
#[derive(Debug, Default)]
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    /// Created with the first bucket; kept across updates so its event-loop registration
    /// stays valid.
    timer: Option<TimerFd>,
    registered: bool,
    blocked: bool,
}

impl RateLimiter {
    /// A limiter with the given buckets (none: unlimited, and no timer is made).
    pub fn new(bandwidth: Option<TokenBucket>, ops: Option<TokenBucket>) -> std::io::Result<Self> {
        let mut limiter = RateLimiter::default();
        limiter.update(bandwidth, ops)?;
        Ok(limiter)
    }

    /// Replaces the buckets (PATCH of a running device). A queue blocked on the old buckets is
    /// woken at once to re-check against the new ones.
    pub fn update(
        &mut self,
        bandwidth: Option<TokenBucket>,
        ops: Option<TokenBucket>,
    ) -> std::io::Result<()> {
        if self.timer.is_none() && (bandwidth.is_some() || ops.is_some()) {
            self.timer = Some(TimerFd::new()?);
        }
        self.bandwidth = bandwidth;
        self.ops = ops;
        if self.blocked {
            self.arm(MIN_WAIT);
        }
        Ok(())
    }

    /// The bucket of `kind`, if that kind is limited.
    pub fn bucket(&self, kind: TokenKind) -> Option<&TokenBucket> {
        match kind {
            TokenKind::Bytes => self.bandwidth.as_ref(),
            TokenKind::Ops => self.ops.as_ref(),
        }
    }

    fn bucket_mut(&mut self, kind: TokenKind) -> Option<&mut TokenBucket> {
        match kind {
            TokenKind::Bytes => self.bandwidth.as_mut(),
            TokenKind::Ops => self.ops.as_mut(),
        }
    }

    /// Whether any bucket is configured.
    pub fn is_limited(&self) -> bool {
        self.bandwidth.is_some() || self.ops.is_some()
    }

    /// Takes `tokens` of `kind` if they fit (always, for a kind without a bucket).
    pub fn consume(&mut self, tokens: u64, kind: TokenKind) -> bool {
        self.consume_at(tokens, kind, Instant::now())
    }

    fn consume_at(&mut self, tokens: u64, kind: TokenKind, now: Instant) -> bool {
        match self.bucket_mut(kind) {
            Some(bucket) => bucket.consume_at(tokens, now),
            None => true,
        }
    }

    /// Gives back `tokens` of `kind`.
    pub fn replenish(&mut self, tokens: u64, kind: TokenKind) {
        if let Some(bucket) = self.bucket_mut(kind) {
            bucket.replenish(tokens);
        }
    }

    /// Whether a queue served by this limiter must wait for its timer.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// One request of `bytes` bytes: takes one op and `bytes` bandwidth tokens, or neither.
    /// When it does not fit, the limiter is blocked and its timer armed for when it will;
    /// the caller stops serving the queue and puts the request back.
    pub fn request(&mut self, bytes: u64) -> bool {
        self.request_at(bytes, Instant::now())
    }

    fn request_at(&mut self, bytes: u64, now: Instant) -> bool {
        if self.blocked {
            return false;
        }
        if !self.consume_at(1, TokenKind::Ops, now) {
            return self.block(1, TokenKind::Ops, now);
        }
        if !self.consume_at(bytes, TokenKind::Bytes, now) {
            self.replenish(1, TokenKind::Ops);
            return self.block(bytes, TokenKind::Bytes, now);
        }
        true
    }

    fn block(&mut self, tokens: u64, kind: TokenKind, now: Instant) -> bool {
        let wait = self
            .bucket(kind)
            .map_or(Duration::ZERO, |b| b.wait_for(tokens, now));
        self.blocked = true;
        self.arm(wait.max(MIN_WAIT));
        false
    }

    fn arm(&mut self, wait: Duration) {
        match self.timer.as_mut() {
            Some(timer) => {
                if let Err(e) = timer.reset(wait, None) {
                    // Without the timer the queue would stall forever: stay unblocked instead
                    // (the limit is not enforced for this request, nothing is lost).
                    log::error!("rate limiter: cannot arm timerfd: {e}");
                    self.blocked = false;
                }
            }
            None => self.blocked = false,
        }
    }

    /// Registers the timer with the event loop (idempotent). Devices call it when they are
    /// activated and before serving a queue, so a limiter added at run time gets registered.
    pub fn register(&mut self, ops: &mut EventOps) {
        let Some(timer) = &self.timer else { return };
        if self.registered {
            return;
        }
        match ops.add(Events::new(timer, EventSet::IN)) {
            Ok(()) => self.registered = true,
            Err(e) => log::error!("rate limiter: cannot register timerfd: {e}"),
        }
    }

    /// Removes the timer from the event loop (device reset) and forgets a blocked state.
    pub fn unregister(&mut self, ops: &mut EventOps) {
        self.blocked = false;
        let Some(timer) = &mut self.timer else { return };
        let _ = timer.clear();
        if self.registered {
            let _ = ops.remove(Events::new(timer, EventSet::IN));
            self.registered = false;
        }
    }

    /// If `fd` is this limiter's timer: consumes the expiry and unblocks; the caller then
    /// serves its queue again. Disarming (not `read`) clears the readiness, so this never
    /// blocks even if the timer was re-armed since epoll reported it.
    pub fn on_timer(&mut self, fd: i32) -> bool {
        let Some(timer) = &mut self.timer else {
            return false;
        };
        if timer.as_raw_fd() != fd {
            return false;
        }
        if let Err(e) = timer.clear() {
            log::error!("rate limiter: cannot disarm timerfd: {e}");
        }
        self.blocked = false;
        true
    }
}

#[cfg(test)]
#[path = "rate_limiter_tests.rs"]
mod tests;
