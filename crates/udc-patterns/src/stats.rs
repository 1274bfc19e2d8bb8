// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Traffic counters and a latency histogram.

use std::fmt;
use std::time::{Duration, Instant};

/// Values below this are counted exactly; above it each power of two is
/// split into this many equal sub-buckets.
const SUB_BUCKETS: u64 = 32;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// Buckets 0..32 hold 0..32 exactly; then 32 sub-buckets for each exponent 5..=63.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB_BUCKETS as usize;

const MIB: f64 = 1024.0 * 1024.0;

fn bucket_of(v: u64) -> usize {
    if v < SUB_BUCKETS {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = e - SUB_BITS;
    let m = (v >> shift) - SUB_BUCKETS; // 0..SUB_BUCKETS
    ((u64::from(shift) + 1) * SUB_BUCKETS + m) as usize
}

/// Highest value that falls into bucket `idx`.
fn bucket_high(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < SUB_BUCKETS {
        return idx;
    }
    let shift = idx / SUB_BUCKETS - 1;
    let m = idx % SUB_BUCKETS;
    let low = (SUB_BUCKETS + m) << shift;
    low + ((1u64 << shift) - 1)
}

/// A latency histogram over `u64` nanoseconds, HDR-like: values below 32 are
/// exact, larger ones fall into buckets 1/32 of their power of two wide, so
/// any reported percentile is within about 3 % of the true value (and never
/// outside the recorded min..=max). Fixed size (about 15 KiB, on the heap),
/// no allocation when recording.
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Box<[u64]>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count)
            .field("min", &self.min())
            .field("max", &self.max())
            .field("mean", &self.mean())
            .finish_non_exhaustive()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        LatencyHistogram {
            counts: vec![0u64; BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Add one sample, in nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        self.counts[bucket_of(ns)] += 1;
        self.count += 1;
        self.sum += u128::from(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Add one sample (saturating at `u64::MAX` nanoseconds, ~584 years).
    pub fn record(&mut self, latency: Duration) {
        self.record_ns(duration_ns(latency));
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest sample in ns (0 if empty).
    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min
        }
    }

    /// Largest sample in ns (0 if empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Exact mean in ns (0.0 if empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0.0..=1.0, e.g. 0.99 for p99), by nearest
    /// rank: the smallest recorded value such that at least `q` of the
    /// samples are at or below it, rounded up to its bucket's highest value
    /// and clamped to min..=max. 0 if empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(idx).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Add all samples of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Forget all samples.
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.count = 0;
        self.sum = 0;
        self.min = u64::MAX;
        self.max = 0;
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Traffic statistics for one direction, endpoint or run.
///
/// Call [`record`](Stats::record) when a transfer completes, with its size
/// and latency (submission to completion). The measured interval runs from
/// the start of the earliest recorded transfer (its completion time minus
/// its latency) to the latest completion.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    bytes: u64,
    transfers: u64,
    errors: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    latency: LatencyHistogram,
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// A transfer of `bytes` that took `latency` completed just now.
    pub fn record(&mut self, bytes: u64, latency: Duration) {
        self.record_at(bytes, latency, Instant::now());
    }

    /// A transfer of `bytes` that took `latency` completed at `completed`.
    pub fn record_at(&mut self, bytes: u64, latency: Duration, completed: Instant) {
        self.bytes = self.bytes.wrapping_add(bytes);
        self.transfers += 1;
        self.latency.record(latency);
        let started = completed.checked_sub(latency).unwrap_or(completed);
        self.first = Some(self.first.map_or(started, |f| f.min(started)));
        self.last = Some(self.last.map_or(completed, |l| l.max(completed)));
    }

    /// A transfer failed (data mismatch, I/O error, ...).
    pub fn record_error(&mut self) {
        self.errors += 1;
    }

    /// Total bytes recorded.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of successful transfers recorded.
    pub fn transfers(&self) -> u64 {
        self.transfers
    }

    /// Number of errors recorded.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Start of the earliest recorded transfer.
    pub fn first(&self) -> Option<Instant> {
        self.first
    }

    /// Completion of the latest recorded transfer.
    pub fn last(&self) -> Option<Instant> {
        self.last
    }

    /// Time from [`first`](Stats::first) to [`last`](Stats::last) (zero if
    /// nothing was recorded).
    pub fn elapsed(&self) -> Duration {
        match (self.first, self.last) {
            (Some(f), Some(l)) => l.saturating_duration_since(f),
            _ => Duration::ZERO,
        }
    }

    /// The latency histogram.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// Throughput in MiB/s (2^20 bytes) over [`elapsed`](Stats::elapsed);
    /// 0.0 if no time has elapsed.
    pub fn throughput_mib_s(&self) -> f64 {
        let secs = self.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.bytes as f64 / MIB / secs
        } else {
            0.0
        }
    }

    /// Add everything recorded in `other` (e.g. to sum several endpoints).
    pub fn merge(&mut self, other: &Stats) {
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.transfers += other.transfers;
        self.errors += other.errors;
        self.first = match (self.first, other.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = match (self.last, other.last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.latency.merge(&other.latency);
    }

    /// Forget everything.
    pub fn reset(&mut self) {
        self.bytes = 0;
        self.transfers = 0;
        self.errors = 0;
        self.first = None;
        self.last = None;
        self.latency.clear();
    }

    /// The current numbers as plain data.
    pub fn snapshot(&self) -> StatsSnapshot {
        let elapsed_s = self.elapsed().as_secs_f64();
        let h = &self.latency;
        StatsSnapshot {
            bytes: self.bytes,
            transfers: self.transfers,
            errors: self.errors,
            elapsed_s,
            throughput_mib_s: self.throughput_mib_s(),
            transfers_per_s: if elapsed_s > 0.0 {
                self.transfers as f64 / elapsed_s
            } else {
                0.0
            },
            latency_min_ns: h.min(),
            latency_max_ns: h.max(),
            latency_mean_ns: h.mean(),
            latency_p50_ns: h.quantile(0.50),
            latency_p90_ns: h.quantile(0.90),
            latency_p99_ns: h.quantile(0.99),
            latency_p999_ns: h.quantile(0.999),
        }
    }
}

/// A plain-data copy of [`Stats`], all numbers (latencies in nanoseconds,
/// zero when there are no samples). Serialisable with the `serde` feature.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StatsSnapshot {
    /// Total bytes transferred.
    pub bytes: u64,
    /// Successful transfers.
    pub transfers: u64,
    /// Failed transfers.
    pub errors: u64,
    /// Seconds from the start of the first transfer to the end of the last.
    pub elapsed_s: f64,
    /// `bytes / 2^20 / elapsed_s` (0 if `elapsed_s` is 0).
    pub throughput_mib_s: f64,
    /// `transfers / elapsed_s` (0 if `elapsed_s` is 0).
    pub transfers_per_s: f64,
    /// Smallest latency.
    pub latency_min_ns: u64,
    /// Largest latency.
    pub latency_max_ns: u64,
    /// Mean latency (exact).
    pub latency_mean_ns: f64,
    /// Median latency (histogram, within ~3 %).
    pub latency_p50_ns: u64,
    /// 90th percentile latency.
    pub latency_p90_ns: u64,
    /// 99th percentile latency.
    pub latency_p99_ns: u64,
    /// 99.9th percentile latency.
    pub latency_p999_ns: u64,
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |ns: u64| ns as f64 / 1000.0;
        write!(
            f,
            "{} bytes in {} transfers over {:.3} s: {:.1} MiB/s, {:.0} transfers/s, {} errors; \
             latency us min {:.1} mean {:.1} p50 {:.1} p99 {:.1} max {:.1}",
            self.bytes,
            self.transfers,
            self.elapsed_s,
            self.throughput_mib_s,
            self.transfers_per_s,
            self.errors,
            us(self.latency_min_ns),
            self.latency_mean_ns / 1000.0,
            us(self.latency_p50_ns),
            us(self.latency_p99_ns),
            us(self.latency_max_ns),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_high(BUCKETS - 1), u64::MAX);
        for idx in 0..BUCKETS - 1 {
            let hi = bucket_high(idx);
            assert_eq!(bucket_of(hi), idx, "high of {idx}");
            assert_eq!(bucket_of(hi + 1), idx + 1, "after {idx}");
        }
    }

    #[test]
    fn bucket_width_is_within_3_percent() {
        for v in [32u64, 33, 100, 1000, 12_345, 1 << 40, u64::MAX / 3] {
            let hi = bucket_high(bucket_of(v));
            assert!(hi >= v);
            assert!((hi - v) as f64 <= v as f64 / 32.0, "{v} -> {hi}");
        }
    }

    #[test]
    fn empty_histogram() {
        let h = LatencyHistogram::new();
        assert_eq!((h.count(), h.min(), h.max(), h.quantile(0.5)), (0, 0, 0, 0));
        assert_eq!(h.mean(), 0.0);
    }

    #[test]
    fn exact_small_values() {
        let mut h = LatencyHistogram::new();
        for v in 1..=20u64 {
            h.record_ns(v);
        }
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 20);
        assert_eq!(h.mean(), 10.5);
        assert_eq!(h.quantile(0.5), 10);
        assert_eq!(h.quantile(0.99), 20);
        assert_eq!(h.quantile(0.0), 1);
        assert_eq!(h.quantile(1.0), 20);
    }

    #[test]
    fn percentiles_of_uniform_range() {
        let mut h = LatencyHistogram::new();
        for v in 1..=10_000u64 {
            h.record_ns(v * 1000); // 1 us .. 10 ms
        }
        let close = |got: u64, want: u64| {
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(got >= want && err <= 1.0 / 32.0, "got {got}, want {want}");
        };
        close(h.quantile(0.5), 5_000_000);
        close(h.quantile(0.99), 9_900_000);
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(h.min(), 1000);
        assert_eq!(h.mean(), 5_000_500.0);
    }

    #[test]
    fn percentiles_with_outliers() {
        let mut h = LatencyHistogram::new();
        for _ in 0..990 {
            h.record(Duration::from_micros(10));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(5));
        }
        // 10 us lands in a bucket [9984, 10239]; p50 reports the bucket top.
        let p50 = h.quantile(0.5);
        assert!((10_000..=10_239).contains(&p50), "{p50}");
        assert!(h.quantile(0.99) <= 10_239);
        assert_eq!(h.quantile(0.991), 5_000_000);
        assert_eq!(h.max(), 5_000_000);
    }

    #[test]
    fn constant_samples_are_exact() {
        let mut h = LatencyHistogram::new();
        for _ in 0..100 {
            h.record_ns(123_456);
        }
        assert_eq!(h.quantile(0.5), 123_456);
        assert_eq!(h.quantile(0.99), 123_456);
    }

    #[test]
    fn merge_histograms() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record_ns(5);
        b.record_ns(7);
        b.record_ns(3);
        a.merge(&b);
        assert_eq!((a.count(), a.min(), a.max()), (3, 3, 7));
        assert_eq!(a.quantile(0.5), 5);
        a.clear();
        assert_eq!(a, LatencyHistogram::new());
    }

    #[test]
    fn stats_throughput_and_snapshot() {
        let t0 = Instant::now();
        let mut s = Stats::new();
        assert_eq!(s.throughput_mib_s(), 0.0);
        // Transfer 1 runs t0 .. t0+100ms, transfer 2 ends at t0+1s.
        s.record_at(
            512 * 1024,
            Duration::from_millis(100),
            t0 + Duration::from_millis(100),
        );
        s.record_at(
            512 * 1024,
            Duration::from_millis(200),
            t0 + Duration::from_secs(1),
        );
        s.record_error();
        assert_eq!(s.elapsed(), Duration::from_secs(1));
        assert!((s.throughput_mib_s() - 1.0).abs() < 1e-9);
        let snap = s.snapshot();
        assert_eq!(snap.bytes, 1 << 20);
        assert_eq!(snap.transfers, 2);
        assert_eq!(snap.errors, 1);
        assert_eq!(snap.latency_min_ns, 100_000_000);
        assert_eq!(snap.latency_max_ns, 200_000_000);
        assert_eq!(snap.latency_mean_ns, 150_000_000.0);
        // Rank 1 of 2: 100 ms, reported as its bucket's top (within 1/32).
        assert!((100_000_000..=103_125_000).contains(&snap.latency_p50_ns));
        assert_eq!(snap.latency_p99_ns, 200_000_000);
        assert!((snap.transfers_per_s - 2.0).abs() < 1e-9);
        let text = snap.to_string();
        assert!(text.contains("1.0 MiB/s"), "{text}");

        let mut total = Stats::new();
        total.merge(&s);
        total.merge(&s);
        assert_eq!(total.bytes(), 2 << 20);
        assert_eq!(total.latency().count(), 4);
        assert_eq!(total.elapsed(), Duration::from_secs(1));

        total.reset();
        assert_eq!(total.snapshot(), StatsSnapshot::default());
    }
}
