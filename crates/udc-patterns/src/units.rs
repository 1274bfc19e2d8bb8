// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The units the daemon, the guest tool and the harness read from people:
//! sizes, durations and bandwidths, each with the one grammar the docs give.

use std::time::Duration;

/// USB 2.0 high speed's bulk ceiling: 13 packets of 512 bytes per 125 us
/// microframe (USB 2.0, table 5-10).
pub const HIGH_SPEED_BYTES_PER_SEC: u64 = 13 * 512 * 8000;
/// USB 3 SuperSpeed's line rate after 8b/10b coding (5 Gbit/s * 8/10), the
/// ceiling before packet overhead.
pub const SUPER_SPEED_BYTES_PER_SEC: u64 = 500_000_000;

/// One size: bytes, or with a binary K/M/G suffix (`64K`, `1M`, `16MiB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 65536, 64K, 1M)"))?;
    n.checked_mul(1 << shift)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("size {s:?} is zero or too large"))
}

/// "1ms", "250us", "2s", "1.5ms", "0".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("{t:?} has no unit: say ns, us, ms or s"))?;
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{t:?} is not a duration (say 250us, 1.5ms or 2s)"))?;
    let secs = match unit {
        "ns" => v / 1e9,
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        _ => return Err(format!("{t:?}: unit {unit:?} is not one of ns, us, ms, s")),
    };
    if secs > 3600.0 {
        return Err(format!("{t:?} is over an hour"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Prints a duration the way [`parse_duration`] reads it.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0".into()
    } else if ns % 1_000_000_000 == 0 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else if ns % 1_000 == 0 {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

/// "high-speed", "super-speed", "40MB/s", "40MiB/s", "320Mbit/s", "1000B/s".
pub fn parse_bandwidth(s: &str) -> Result<u64, String> {
    let t = s.trim();
    match t {
        "high-speed" => return Ok(HIGH_SPEED_BYTES_PER_SEC),
        "super-speed" => return Ok(SUPER_SPEED_BYTES_PER_SEC),
        _ => {}
    }
    let bad = || format!("{t:?} is not a bandwidth: say high-speed, super-speed, or e.g. 40MB/s, 320Mbit/s");
    let body = t.strip_suffix("/s").ok_or_else(bad)?;
    let split = body.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?;
    let (num, unit) = body.split_at(split);
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = match unit {
        "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "bit" => 1.0 / 8.0,
        "Kbit" => 1e3 / 8.0,
        "Mbit" => 1e6 / 8.0,
        "Gbit" => 1e9 / 8.0,
        _ => return Err(bad()),
    };
    let r = v * bytes;
    if !(1.0..1e12).contains(&r) {
        return Err(format!("{t:?}: a bandwidth is 1 B/s to 1 TB/s"));
    }
    Ok(r as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn units_parse() {
        assert_eq!(parse_duration("1.5ms").unwrap(), Duration::from_micros(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_bandwidth("40MB/s").unwrap(), 40_000_000);
        assert_eq!(parse_bandwidth("320Mbit/s").unwrap(), 40_000_000);
        assert_eq!(parse_bandwidth("1MiB/s").unwrap(), 1 << 20);
        assert_eq!(parse_bandwidth("super-speed").unwrap(), SUPER_SPEED_BYTES_PER_SEC);
        assert_eq!(fmt_duration(Duration::from_micros(1500)), "1500us");
    }
}
