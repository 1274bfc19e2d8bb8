// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Prints fill and verify throughput for each pattern.
//!
//! `cargo run --release --example throughput [buffer-bytes] [total-MiB]`

use std::hint::black_box;
use std::time::Instant;

use udc_patterns::{Pattern, Verifier};

fn main() {
    let mut args = std::env::args().skip(1);
    let buf_len: usize = args
        .next()
        .map_or(64 * 1024, |a| a.parse().expect("buffer bytes"));
    let total_mib: u64 = args.next().map_or(2048, |a| a.parse().expect("total MiB"));
    let total = total_mib << 20;
    let mut buf = vec![0u8; buf_len];
    println!("buffer {buf_len} bytes, {total_mib} MiB per measurement");
    for pattern in [Pattern::Counter, Pattern::Prbs { seed: 42 }, Pattern::Zeros] {
        // Odd start offset so the unaligned head/tail paths are exercised.
        for (label, start) in [("aligned", 0u64), ("unaligned", 3)] {
            let t = Instant::now();
            let mut off = start;
            while off - start < total {
                pattern.fill(off, black_box(&mut buf));
                off += buf_len as u64;
            }
            let fill = gib_s(off - start, t);

            let verifier = Verifier::new(pattern);
            pattern.fill(start, &mut buf);
            let t = Instant::now();
            let mut n = 0u64;
            while n < total {
                verifier.verify(start, black_box(&buf)).expect("verify failed");
                n += buf_len as u64;
            }
            let verify = gib_s(n, t);
            println!(
                "{:<10} {label:<9} fill {fill:6.2} GiB/s   verify {verify:6.2} GiB/s",
                pattern.to_string()
            );
        }
    }
}

fn gib_s(bytes: u64, since: Instant) -> f64 {
    bytes as f64 / (1u64 << 30) as f64 / since.elapsed().as_secs_f64()
}
