// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What one measurement is and how it is taken: guest CPU time from
//! /proc/stat, the length of each measurement, the pipeline of transfers in
//! flight, the cheap check of OUT data, and the report line.

use std::time::Instant;

use udc_patterns::Pattern;

use super::Dir;
use crate::error::Error;

/// One measurement's result.
pub(super) struct Measured {
    pub(super) bytes: u64,
    pub(super) seconds: f64,
    pub(super) cpu_seconds: f64,
}

/// Busy jiffies of all CPUs from /proc/stat's `cpu` line: everything but
/// idle and iowait. guest and guest_nice are left out too, as the kernel
/// already counts them in user and nice.
fn busy_jiffies(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    if f.len() < 8 {
        return None;
    }
    Some(f[0] + f[1] + f[2] + f[5] + f[6] + f[7])
}

/// Wall time and guest CPU time across a measurement.
pub(super) struct Meter {
    start: Instant,
    busy: u64,
}

impl Meter {
    fn read_busy() -> Result<u64, Error> {
        let stat =
            std::fs::read_to_string("/proc/stat").map_err(|e| Error::Setup(format!("/proc/stat: {e}")))?;
        busy_jiffies(&stat).ok_or_else(|| Error::Setup("/proc/stat has no cpu line as expected".into()))
    }

    pub(super) fn start() -> Result<Meter, Error> {
        Ok(Meter {
            busy: Meter::read_busy()?,
            start: Instant::now(),
        })
    }

    pub(super) fn stop(self, bytes: u64) -> Result<Measured, Error> {
        let seconds = self.start.elapsed().as_secs_f64();
        let busy = Meter::read_busy()? - self.busy;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(Measured {
            bytes,
            seconds,
            cpu_seconds: busy as f64 / hz.max(1) as f64,
        })
    }
}

/// How long each measurement is.
pub(super) struct Plan {
    pub(super) seconds: f64,
    pub(super) bytes: Option<u64>,
    pub(super) inflight: usize,
}

impl Plan {
    /// Transfers of `size` for one measurement: the fixed byte count, or
    /// what `rate` (bytes/s) moves in the target time, with the pipeline
    /// filled twice over at least.
    fn count(&self, size: usize, rate: f64) -> u64 {
        match self.bytes {
            Some(b) => b.div_ceil(size as u64).max(1),
            None => ((self.seconds * rate) as u64 / size as u64).max(2 * self.inflight as u64),
        }
    }

    /// Runs `f` with the count for `rate`; runs it again, with the count
    /// for the rate it measured, while it was much shorter than the target
    /// (the first guess, or the previous size's rate, was far too low).
    /// With `prime`, a short untimed run comes first: under TCG the first
    /// pass through a code path also translates it.
    pub(super) fn measure(
        &self,
        size: usize,
        rate: f64,
        prime: bool,
        mut f: impl FnMut(u64) -> Result<Measured, Error>,
    ) -> Result<Measured, Error> {
        if prime {
            f(2 * self.inflight as u64)?;
        }
        let mut m = f(self.count(size, rate))?;
        for _ in 0..2 {
            if self.bytes.is_some() || m.seconds >= self.seconds / 2.0 {
                break;
            }
            m = f(self.count(size, m.bytes as f64 / m.seconds))?;
        }
        Ok(m)
    }
}

pub(super) fn report(udc: &str, method: &str, dir: Dir, size: usize, inflight: usize, m: &Measured) {
    println!(
        "bench: udc={udc} method={method} dir={} size={size} inflight={inflight} bytes={} seconds={:.6} cpu_seconds={:.3}",
        dir.name(),
        m.bytes,
        m.seconds,
        m.cpu_seconds
    );
    let gib = m.bytes as f64 / (1u64 << 30) as f64;
    eprintln!(
        "udc-gadget bench: {udc} {method} {} {} KiB: {} MiB in {:.2} s = {:.1} MiB/s, {:.2} CPU s/GiB",
        dir.name(),
        size >> 10,
        m.bytes >> 20,
        m.seconds,
        m.bytes as f64 / (1 << 20) as f64 / m.seconds,
        m.cpu_seconds / gib
    );
}

/// The first and last 8 bytes of a `size`-byte transfer at stream offset
/// `offset` are those of `prbs:seed` there.
pub(super) fn check_ends(
    seed: u64,
    offset: u64,
    size: usize,
    head: &[u8],
    tail: &[u8],
    what: &str,
) -> Result<(), Error> {
    let p = Pattern::Prbs { seed };
    p.verify(offset, head)
        .and_then(|()| p.verify(offset + (size - tail.len()) as u64, tail))
        .map_err(|m| Error::Check(format!("{what}: data differs from prbs:{seed}: {m}")))
}

/// Keeps `n` transfers in flight: submits 0..n, then completes each in
/// order and submits the one `n` further on.
pub(super) fn pipeline(
    count: u64,
    n: usize,
    mut submit: impl FnMut(u64) -> Result<(), Error>,
    mut complete: impl FnMut(u64) -> Result<(), Error>,
) -> Result<(), Error> {
    let n = n as u64;
    for k in 0..count.min(n) {
        submit(k)?;
    }
    for k in 0..count {
        complete(k)?;
        if k + n < count {
            submit(k + n)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::pattern;

    #[test]
    fn busy_jiffies_leave_out_idle_iowait_and_guest() {
        let stat = "cpu  100 20 300 4000 50 6 7 8 900 90\n\
                    cpu0 50 10 150 2000 25 3 3 4 450 45\n\
                    intr 12345\n";
        assert_eq!(busy_jiffies(stat), Some(100 + 20 + 300 + 6 + 7 + 8));
        assert_eq!(
            busy_jiffies("cpu  1 2 3 4 5 6 7 8\n"),
            Some(1 + 2 + 3 + 6 + 7 + 8)
        );
        assert_eq!(
            busy_jiffies("cpu0 1 2 3 4 5 6 7 8\n"),
            None,
            "only the all-CPU line"
        );
        assert_eq!(busy_jiffies("cpu  1 2 3\n"), None);
        assert_eq!(busy_jiffies("cpu  1 x 3 4 5 6 7 8\n"), None);
    }

    #[test]
    fn counts_fill_the_target_time_or_the_byte_count() {
        let p = Plan {
            seconds: 1.0,
            bytes: None,
            inflight: 4,
        };
        assert_eq!(p.count(1 << 20, 100.0 * (1 << 20) as f64), 100);
        assert_eq!(
            p.count(16 << 20, 10.0 * (1 << 20) as f64),
            8,
            "the pipeline fills twice"
        );
        let p = Plan {
            bytes: Some(3 << 20),
            ..p
        };
        assert_eq!(p.count(1 << 20, 1.0), 3);
        assert_eq!(p.count(16 << 20, 1.0), 1);
    }

    #[test]
    fn pipeline_keeps_n_in_flight_in_order() {
        let log = std::cell::RefCell::new(Vec::new());
        pipeline(
            5,
            2,
            |k| {
                log.borrow_mut().push(format!("s{k}"));
                Ok(())
            },
            |k| {
                log.borrow_mut().push(format!("c{k}"));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(log.into_inner().join(" "), "s0 s1 c0 s2 c1 s3 c2 s4 c3 c4");
    }

    #[test]
    fn ends_are_checked_at_their_stream_offset() {
        let data = pattern(7, 4096, 4096);
        assert!(check_ends(7, 4096, 4096, &data[..8], &data[4088..], "t").is_ok());
        assert!(check_ends(7, 0, 4096, &data[..8], &data[4088..], "t").is_err());
        assert!(check_ends(8, 4096, 4096, &data[..8], &data[4088..], "t").is_err());
    }
}
