//! Order statistics over benchmark samples: min, median, p99, max, and the Wisp/peer ratio.
//!
//! p99 is the nearest-rank percentile (the smallest sample with at least 99% of the samples at
//! or below it), so with fewer than 100 runs it is the maximum: no interpolation invents a
//! value that was never measured.

use serde::{Deserialize, Serialize};

/// The summary of one metric over the runs of one VMM.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// `None` when there are no samples (or only NaNs, which no measurement here produces).
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| !v.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            n,
            min: sorted[0],
            median,
            p99: nearest_rank(&sorted, 99),
            max: sorted[n - 1],
        })
    }
}

/// The nearest-rank `pct`th percentile of an ascending, non-empty slice.
fn nearest_rank(sorted: &[f64], pct: usize) -> f64 {
    // rank = ceil(pct/100 * n), 1-based; integer arithmetic avoids 0.99*100 rounding up to 100.
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// `wisp / peer`: below 1 means Wisp is faster (or smaller). `None` when the peer's value is 0.
pub fn ratio(wisp: f64, peer: f64) -> Option<f64> {
    (peer != 0.0).then(|| wisp / peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_count_takes_middle_sample_as_median() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!(s.n, 3);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.median, 3.0);
        assert_eq!(s.max, 5.0);
        assert_eq!(s.p99, 5.0);
    }

    #[test]
    fn summary_of_even_count_averages_the_two_middle_samples() {
        let s = Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn p99_is_nearest_rank() {
        // 1..=200: rank ceil(0.99 * 200) = 198.
        let samples: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        assert_eq!(Summary::of(&samples).unwrap().p99, 198.0);
        // 1..=100: rank 99.
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Summary::of(&samples).unwrap().p99, 99.0);
        // Fewer than 100 samples: the maximum.
        let samples: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(Summary::of(&samples).unwrap().p99, 20.0);
    }

    #[test]
    fn summary_of_nothing_is_none() {
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn single_sample_is_every_statistic() {
        let s = Summary::of(&[7.5]).unwrap();
        assert_eq!((s.min, s.median, s.p99, s.max), (7.5, 7.5, 7.5, 7.5));
    }

    #[test]
    fn ratio_is_wisp_over_peer() {
        assert_eq!(ratio(40.0, 100.0), Some(0.4));
        assert_eq!(ratio(1.0, 0.0), None);
    }
}
