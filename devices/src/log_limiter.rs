//! Rate-limited logging for messages a guest can trigger.
//!
//! A guest that does something wrong in a loop (bad MMIO accesses, malformed descriptor
//! chains) must not be able to flood the host's log or spend the VMM's time formatting lines.
//! Each call site of [`guest_log!`] gets its own [`LogLimiter`]: at most [`LINES_PER_SECOND`]
//! lines per second; the rest are counted (in the device's metrics when one is given), and the
//! first line let through afterwards is preceded by one summary, "suppressed K similar
//! messages".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Lines one call site may log per second.
pub const LINES_PER_SECOND: u32 = 5;

/// What [`LogLimiter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log the line; `suppressed` lines were dropped at this site since the last one logged.
    Yes {
        /// Lines dropped before this one.
        suppressed: u64,
    },
    /// Drop the line.
    No,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    lines: u32,
}

/// The state of one call site.
#[derive(Debug)]
pub struct LogLimiter {
    window: Mutex<Window>,
    suppressed: AtomicU64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLimiter {
    /// A limiter with an empty window (const, for a `static` per call site).
    pub const fn new() -> Self {
        LogLimiter {
            window: Mutex::new(Window {
                start: None,
                lines: 0,
            }),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now.
    pub fn admit(&self) -> Admit {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Admit {
        let Ok(mut w) = self.window.lock() else {
            return Admit::No;
        };
        let expired = w
            .start
            .is_none_or(|s| now.saturating_duration_since(s).as_secs() >= 1);
        if expired {
            w.start = Some(now);
            w.lines = 0;
        }
        if w.lines >= LINES_PER_SECOND {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return Admit::No;
        }
        w.lines += 1;
        Admit::Yes {
            suppressed: self.suppressed.swap(0, Ordering::Relaxed),
        }
    }
}

/// Logs a line a guest can trigger, through a per-call-site [`LogLimiter`]:
/// `guest_log!(log::Level::Warn, Some(&metrics), "virtio-blk: {e}")`. A suppressed line
/// counts in `metrics` (a `&DeviceMetrics`) when given.
#[macro_export]
macro_rules! guest_log {
    ($level:expr, $metrics:expr, $($arg:tt)+) => {{
        static SITE: $crate::log_limiter::LogLimiter = $crate::log_limiter::LogLimiter::new();
        let metrics: Option<&$crate::virtio::DeviceMetrics> = $metrics;
        match SITE.admit() {
            $crate::log_limiter::Admit::Yes { suppressed } => {
                if suppressed > 0 {
                    log::log!($level, "suppressed {suppressed} similar messages");
                }
                log::log!($level, $($arg)+);
            }
            $crate::log_limiter::Admit::No => {
                if let Some(m) = metrics {
                    m.log_suppressed();
                }
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_site_logs_a_few_lines_per_second_then_one_summary() {
        let site = LogLimiter::new();
        let t0 = Instant::now();
        for _ in 0..LINES_PER_SECOND {
            assert_eq!(site.admit_at(t0), Admit::Yes { suppressed: 0 });
        }
        for i in 0..1000 {
            let t = t0 + Duration::from_micros(i);
            assert_eq!(site.admit_at(t), Admit::No);
        }
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(site.admit_at(t1), Admit::Yes { suppressed: 1000 });
        assert_eq!(site.admit_at(t1), Admit::Yes { suppressed: 0 });
    }

    #[test]
    fn sites_are_independent() {
        let (a, b) = (LogLimiter::new(), LogLimiter::new());
        let t0 = Instant::now();
        for _ in 0..LINES_PER_SECOND {
            a.admit_at(t0);
        }
        assert_eq!(a.admit_at(t0), Admit::No);
        assert_eq!(b.admit_at(t0), Admit::Yes { suppressed: 0 });
    }

    #[test]
    fn the_macro_counts_suppressed_lines_in_the_metrics() {
        let m = crate::virtio::DeviceMetrics::default();
        for _ in 0..(LINES_PER_SECOND + 7) {
            crate::guest_log!(log::Level::Warn, Some(&m), "guest did {}", "something");
        }
        assert_eq!(m.snapshot().log_suppressed, 7);
    }
}
