// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Protocol tier: a hostile guest. The daemon must bound what a guest can
//! make it keep and keep serving the next good request.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Resident memory of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// One descriptor head posted again and again while the device holds it:
/// each copy comes back at once with used length 0, the daemon's memory and
/// log stay small, the control socket keeps answering, and the request that
/// really owns the head completes normally at the end.
#[test]
fn a_head_posted_a_million_times_costs_nothing() {
    const REPOSTS: usize = 1_000_000;
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let data_in = data(4096, 7);
    let b = h.buffer(4096).unwrap();
    h.write_buffer(&b, &data_in).unwrap();
    // The host does not read yet: the request stays in the device.
    let x = h.submit_buffer(0x81, 0, &b, 1).unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let pid = d.pid();
    let rss_before = rss_kib(pid);
    let mut ctl = d.ctl();
    let mut slowest_status = Duration::ZERO;
    let mut returned = 0usize;
    let batch = usize::from(h.xferq().size()) / 2;
    let start = Instant::now();
    let mut posted = 0;
    while posted < REPOSTS {
        let n = batch.min(REPOSTS - posted);
        for _ in 0..n {
            h.xferq().republish(x.head).unwrap();
        }
        h.xferq().force_kick().unwrap();
        posted += n;
        // Every copy comes back before the next batch, so the ring never
        // holds more than the queue's worth.
        let deadline = Instant::now() + T;
        while returned < posted {
            for (id, len) in h.xferq().take_used_raw().unwrap() {
                assert_eq!(
                    (id, len),
                    (u32::from(x.head), 0),
                    "a reposted head comes back empty"
                );
                returned += 1;
            }
            assert!(
                Instant::now() < deadline,
                "{returned} of {posted} reposts came back"
            );
        }
        if posted % (batch * 200) == 0 {
            let t = Instant::now();
            ctl.ok(json!({"op": "status"}));
            slowest_status = slowest_status.max(t.elapsed());
        }
    }
    let took = start.elapsed();
    let rss_after = rss_kib(pid);
    let log_len = std::fs::metadata(d.dir.path().join("daemon.log")).unwrap().len();
    let st = ctl.ok(json!({"op": "status"}));
    eprintln!(
        "{REPOSTS} reposts of head {} in {took:?} ({:.0}/s); daemon RSS {rss_before} -> {rss_after} KiB; \
         slowest status {slowest_status:?}; daemon log {log_len} bytes; lock {}",
        x.head,
        REPOSTS as f64 / took.as_secs_f64(),
        st["lock"]
    );
    assert!(rss_after < 64 * 1024, "daemon RSS {rss_after} KiB");
    assert!(
        slowest_status < Duration::from_millis(100),
        "status took {slowest_status:?}"
    );
    assert!(
        log_len < 1 << 20,
        "the daemon logged {log_len} bytes for one repeated mistake"
    );
    assert!(
        d.log_text().contains("more like it suppressed"),
        "the log says what it left out"
    );

    // The request that owns the head is untouched and completes.
    let (r, got) = ctl.read_in("ep1in", 4096);
    assert_eq!(r["ok"], true, "{r}");
    assert!(got == data_in, "the held request's data");
    assert!(h.wait_completion(x, T).unwrap().is_ok());
}

/// A head past the queue's end cannot be returned at all: the device drops
/// it and goes on.
#[test]
fn a_head_outside_the_queue_is_dropped_and_the_device_goes_on() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let size = h.xferq().size();
    for head in [size, size + 5, u16::MAX] {
        h.xferq().republish(head).unwrap();
    }
    h.xferq().force_kick().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        h.xferq().take_used_raw().unwrap(),
        vec![],
        "nothing to return for them"
    );
    assert!(d.log_text().contains("is outside the queue"), "{}", d.log_text());

    let b = h.buffer(512).unwrap();
    h.write_buffer(&b, &data(512, 3)).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 9).unwrap();
    let (_, got) = d.ctl().read_in("ep1in", 512);
    assert!(got == data(512, 3));
    assert!(h.wait_completion(x, T).unwrap().is_ok());
}
