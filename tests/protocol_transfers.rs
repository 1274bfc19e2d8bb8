// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Protocol tier: data transfers through the real daemon, checked byte for
//! byte on both sides.

mod common;

use std::thread;

use common::*;
use serde_json::json;
use udc_harness::wire::*;
use udc_harness::{BufferSpec, EndpointSpec, FakeGadget};

/// (bytes, segments): 1 byte to 16 MiB, 1 segment to the 16384 minimum.
const CASES: &[(usize, usize)] = &[
    (1, 1),
    (511, 1),
    (512, 1),
    (513, 2),
    (4096, 3),
    (65536 + 7, 7),
    (1 << 20, 256),
    (16 << 20, 4096),
    (16 << 20, 16384),
];

#[test]
fn in_transfers_reach_the_host_intact() {
    let d = Daemon::start(&["--speed", "high"]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    for (i, &(len, segs)) in CASES.iter().enumerate() {
        let buf = h.alloc_buffer(&BufferSpec::scattered(len as u64, segs)).unwrap();
        let payload = data(len, i as u64);
        h.write_buffer(&buf, &payload).unwrap();
        let x = h.submit_buffer(0x81, 0, &buf, 100 + i as u64).unwrap();
        // The host asks for exactly `len`: a transfer that is a multiple of
        // the packet size ends when the host's buffer is full.
        let (r, got) = ctl.read_in("ep1in", len);
        assert_eq!(r["status"], "ok", "{len} bytes in {segs} segments: {r}");
        assert_eq!(got.len(), len);
        assert!(got == payload, "{len} bytes in {segs} segments: data differs");
        let c = h.wait_completion(x, T).unwrap();
        assert_eq!(c.result(), Ok(len as u32), "{len} bytes in {segs} segments");
        h.free_buffer(buf).unwrap();
    }
}

#[test]
fn out_transfers_reach_the_guest_intact_and_nothing_else() {
    let d = Daemon::start(&["--speed", "super"]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    for (i, &(len, segs)) in CASES.iter().enumerate() {
        // Scattered segments with guard bytes between them: the device must
        // write the segments and not one byte beside them.
        let buf = h.alloc_buffer(&BufferSpec::scattered(len as u64, segs)).unwrap();
        let x = h.submit_buffer(0x02, 0, &buf, 200 + i as u64).unwrap();
        let payload = data(len, 1000 + i as u64);
        let r = ctl.write_out("ep2out", &payload, false);
        assert_eq!(r["status"], "ok", "{len} bytes in {segs} segments: {r}");
        assert_eq!(r["actual"], len);
        let c = h.wait_completion(x, T).unwrap();
        assert_eq!(c.result(), Ok(len as u32), "{len} bytes in {segs} segments");
        assert!(
            h.read_buffer(&buf).unwrap() == payload,
            "{len} bytes in {segs} segments: data differs"
        );
        assert!(
            h.guards_intact(&buf).unwrap(),
            "{len} bytes: the device wrote outside the segments"
        );
        h.free_buffer(buf).unwrap();
    }
}

#[test]
fn short_transfers_and_zero_length_packets() {
    let d = Daemon::start(&["--speed", "high"]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();

    // OUT: a short host transfer ends a long guest request early.
    let buf = h.buffer(8192).unwrap();
    let x = h.submit_buffer(0x02, 0, &buf, 1).unwrap();
    assert_eq!(ctl.write_out("ep2out", &data(700, 1), false)["status"], "ok");
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(700));

    // OUT: a multiple of the packet size followed by a ZLP ends it too.
    let x = h.submit_buffer(0x02, 0, &buf, 2).unwrap();
    assert_eq!(ctl.write_out("ep2out", &data(1024, 2), true)["status"], "ok");
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(1024));

    // OUT: a zero-length host transfer completes a request with 0 bytes.
    let x = h.submit_buffer(0x02, 0, &buf, 3).unwrap();
    assert_eq!(ctl.write_out("ep2out", &[], false)["status"], "ok");
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(0));

    // IN: a zero-length request is a ZLP: the host's transfer ends empty.
    let x = h.submit(0x81, 0, 0, &[], 4).unwrap();
    let (r, got) = ctl.read_in("ep1in", 4096);
    assert_eq!((r["status"].as_str(), got.len()), (Some("ok"), 0));
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(0));

    // IN: 1024 bytes with ZERO: the host reading 4096 gets 1024, ended by the ZLP.
    let b = h.buffer(1024).unwrap();
    h.write_buffer(&b, &data(1024, 5)).unwrap();
    let x = h.submit_buffer(0x81, VIRTIO_UDC_XFER_F_ZERO, &b, 5).unwrap();
    let (r, got) = ctl.read_in("ep1in", 4096);
    assert_eq!(r["status"], "ok");
    assert_eq!(got, data(1024, 5));
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(1024));

    // IN: without ZERO, the host's transfer goes on into the next request.
    let x1 = h.submit_buffer(0x81, 0, &b, 6).unwrap();
    let small = h.buffer(10).unwrap();
    h.write_buffer(&small, &[7u8; 10]).unwrap();
    let x2 = h.submit_buffer(0x81, 0, &small, 7).unwrap();
    let (_, got) = ctl.read_in("ep1in", 4096);
    assert_eq!(got.len(), 1034);
    assert_eq!(&got[1024..], &[7u8; 10]);
    assert_eq!(h.wait_completion(x1, T).unwrap().result(), Ok(1024));
    assert_eq!(h.wait_completion(x2, T).unwrap().result(), Ok(10));

    // OUT babble: a full packet into a 100-byte request overflows it.
    let x = h.submit(0x02, 0, 100, &[(buf.segments[0].0, 100)], 8).unwrap();
    ctl.write_out("ep2out", &data(512, 8), false);
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Err(-libc::EOVERFLOW));
}

#[test]
fn many_requests_on_several_endpoints_complete_in_fifo_order() {
    const N: u64 = 48;
    let d = Daemon::start(&["--speed", "high"]);
    let mut h = d.harness();
    let mut g = FakeGadget::new().with_endpoints(vec![
        EndpointSpec::bulk(0x81),
        EndpointSpec::bulk(0x02),
        EndpointSpec::bulk(0x83),
        EndpointSpec::bulk(0x04),
    ]);
    g.connect_and_configure(&mut h, T).unwrap();

    // Every request queued before the host moves anything.
    let mut handles = Vec::new();
    let mut out_bufs = Vec::new();
    for t in 0..N {
        for ep in [0x81u8, 0x83] {
            let len = 100 + (t as usize * 37) % 3000;
            let b = h
                .alloc_buffer(&BufferSpec::scattered(len as u64, 1 + t as usize % 5))
                .unwrap();
            h.write_buffer(&b, &data(len, u64::from(ep) << 32 | t)).unwrap();
            handles.push((ep, t, h.submit_buffer(ep, 0, &b, t).unwrap()));
        }
        for ep in [0x02u8, 0x04] {
            let b = h.buffer(4096).unwrap();
            handles.push((ep, t, h.submit_buffer(ep, 0, &b, t).unwrap()));
            out_bufs.push((ep, t, b));
        }
    }
    // The host works all four endpoints at once, one thread each.
    let mut threads = Vec::new();
    for ep in ["ep1in", "ep3in", "ep2out", "ep4out"] {
        let mut ctl = d.ctl();
        threads.push(thread::spawn(move || {
            let num: u64 = if ep.starts_with("ep1") {
                0x81
            } else if ep.starts_with("ep3") {
                0x83
            } else if ep.starts_with("ep2") {
                2
            } else {
                4
            };
            for t in 0..N {
                if ep.ends_with("in") {
                    let len = 100 + (t as usize * 37) % 3000;
                    let (r, got) = ctl.read_in(ep, 8192);
                    assert_eq!(r["status"], "ok", "{ep} #{t}: {r}");
                    assert!(
                        got == data(len, num << 32 | t),
                        "{ep}: transfer {t} out of order or corrupt"
                    );
                } else {
                    let r = ctl.write_out(ep, &data(600 + t as usize, num << 32 | t), false);
                    assert_eq!(r["status"], "ok", "{ep} #{t}: {r}");
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let mut last_seq = std::collections::HashMap::new();
    for (ep, t, x) in &handles {
        let c = h
            .wait_completion(*x, T)
            .unwrap_or_else(|e| panic!("{ep:#x} tag {t}: {e}"));
        assert!(c.is_ok(), "{ep:#x} tag {t}: {c:?}");
        let prev = last_seq.insert(*ep, c.seq);
        assert!(
            prev.is_none_or(|p| p < c.seq),
            "{ep:#x}: tag {t} completed before an earlier request"
        );
    }
    for (ep, t, b) in &out_bufs {
        let got = h.read_buffer_prefix(b, 600 + *t).unwrap();
        assert!(
            got == data(600 + *t as usize, u64::from(*ep) << 32 | *t),
            "{ep:#x} #{t}: data differs"
        );
    }
}

#[test]
fn cancelled_requests_complete_with_cancelled_and_the_rest_go_on() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    let mut xs = Vec::new();
    for t in 1..=3u64 {
        let b = h.buffer(100).unwrap();
        h.write_buffer(&b, &[t as u8; 100]).unwrap();
        xs.push(h.submit_buffer(0x81, 0, &b, t).unwrap());
    }
    assert_eq!(u32::from(h.cancel(0x81, 2).unwrap().status), VIRTIO_UDC_S_OK);
    // The spec: the cancelled request's completion is on the used ring
    // before the command's response.
    let c = h
        .try_completion(xs[1])
        .unwrap()
        .expect("completion before the CANCEL response");
    assert_eq!(c.result(), Err(-libc::ECONNRESET));
    assert_eq!(
        u32::from(h.cancel(0x81, 2).unwrap().status),
        VIRTIO_UDC_S_NOT_FOUND
    );
    assert_eq!(ctl.read_in("ep1in", 4096).1, vec![1u8; 100]);
    assert_eq!(ctl.read_in("ep1in", 4096).1, vec![3u8; 100]);
    assert!(h.wait_completion(xs[0], T).unwrap().is_ok());
    assert!(h.wait_completion(xs[2], T).unwrap().is_ok());

    // A request cancelled half-way reports the bytes already moved.
    let b = h.buffer(65536).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 9).unwrap();
    assert_eq!(ctl.read_in("ep1in", 1024).1.len(), 1024);
    h.cancel(0x81, 9).unwrap();
    let c = h.wait_completion(x, T).unwrap();
    assert_eq!((c.status, c.actual), (VIRTIO_UDC_S_CANCELLED, 1024));

    // Disabling an endpoint ends its queue with SHUTDOWN.
    let x = h.submit_buffer(0x02, 0, &b, 10).unwrap();
    assert_eq!(u32::from(h.ep_disable(0x02).unwrap().status), VIRTIO_UDC_S_OK);
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Err(-libc::ESHUTDOWN));
    let r = ctl.write_out("ep2out", b"x", false);
    assert_eq!(r["status"], "shutdown", "{r}");
}

#[test]
fn streams_verify_every_byte_and_report_statistics() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    // The guest sends the prbs:9 pattern in 64 KiB requests; the host's IN
    // stream checks it.
    ctl.ok(json!({"op": "stream_start", "ep": "ep1in", "pattern": "prbs:9", "transfer_size": 65536, "depth": 4, "count": 32}));
    let b = h.buffer(65536).unwrap();
    for i in 0..32u64 {
        let mut chunk = vec![0u8; 65536];
        udc_patterns::Pattern::Prbs { seed: 9 }.fill(i * 65536, &mut chunk);
        h.write_buffer(&b, &chunk).unwrap();
        let x = h.submit_buffer(0x81, 0, &b, i).unwrap();
        assert!(h.wait_completion(x, T).unwrap().is_ok());
    }
    let s = wait_stream_done(&mut ctl, "ep1in");
    assert_eq!(s["stats"]["bytes"], 32 * 65536, "{s}");
    assert_eq!(s["last_error"], serde_json::Value::Null, "{s}");

    // A corrupted byte is caught and located.
    ctl.ok(
        json!({"op": "stream_start", "ep": "ep1in", "pattern": "counter", "transfer_size": 4096, "count": 2}),
    );
    let mut chunk = vec![0u8; 4096];
    udc_patterns::Pattern::Counter.fill(0, &mut chunk);
    chunk[1234] ^= 0xff;
    h.write_buffer(&b, &chunk).unwrap();
    let x = h.submit(0x81, 0, 4096, &b.segments, 99).unwrap();
    assert!(h.wait_completion(x, T).unwrap().is_ok());
    let s = wait_stream_done(&mut ctl, "ep1in");
    let err = s["last_error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("offset 1234"), "{s}");

    // An OUT stream delivers the pattern into the guest's buffers.
    ctl.ok(
        json!({"op": "stream_start", "ep": "ep2out", "pattern": "prbs:3", "transfer_size": 3000, "count": 4}),
    );
    for i in 0..4u64 {
        let x = h.submit_buffer(0x02, 0, &b, i).unwrap();
        assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(3000));
        let mut want = vec![0u8; 3000];
        udc_patterns::Pattern::Prbs { seed: 3 }.fill(i * 3000, &mut want);
        assert!(
            h.read_buffer_prefix(&b, 3000).unwrap() == want,
            "OUT stream chunk {i}"
        );
    }
    wait_stream_done(&mut ctl, "ep2out");
}

fn wait_stream_done(ctl: &mut Ctl, ep: &str) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let r = ctl.ok(json!({"op": "streams"}));
        let s = r["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["endpoint"] == ep)
            .cloned()
            .unwrap();
        if s["running"] == false {
            return s;
        }
        assert!(start.elapsed() < T, "stream on {ep} did not end: {s}");
        thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn file_streams_send_a_file_and_check_against_it() {
    let files = tempfile::tempdir().unwrap();
    let d = Daemon::start(&["--control-file-dir", files.path().to_str().unwrap()]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    let file = files.path().join("payload.bin");
    let content = data(10_000, 42);
    std::fs::write(&file, &content).unwrap();
    let src = format!("file:{}", file.display());

    // OUT: the file in 4096-byte transfers; the last one is short and ends
    // the stream.
    ctl.ok(json!({"op": "stream_start", "ep": "ep2out", "pattern": src, "transfer_size": 4096}));
    let b = h.buffer(4096).unwrap();
    let mut got = Vec::new();
    for want in [4096u32, 4096, 1808] {
        let x = h.submit_buffer(0x02, 0, &b, 1).unwrap();
        assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(want));
        got.extend(h.read_buffer_prefix(&b, u64::from(want)).unwrap());
    }
    assert!(got == content, "the guest did not receive the file");
    let s = wait_stream_done(&mut ctl, "ep2out");
    assert_eq!(s["stats"]["bytes"], 10_000, "{s}");

    // IN: the guest sends the file back and the host checks it; one byte
    // more than the file holds is reported.
    ctl.ok(json!({"op": "stream_start", "ep": "ep1in", "pattern": src, "transfer_size": 4096}));
    for chunk in content.chunks(4096) {
        let b = h.buffer(chunk.len() as u64).unwrap();
        h.write_buffer(&b, chunk).unwrap();
        let x = h.submit_buffer(0x81, 0, &b, 2).unwrap();
        assert!(h.wait_completion(x, T).unwrap().is_ok());
    }
    let b = h.buffer(1).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 3).unwrap();
    assert!(h.wait_completion(x, T).unwrap().is_ok());
    let s = wait_stream_done(&mut ctl, "ep1in");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("past the end"),
        "{s}"
    );
    assert_eq!(s["offset"], 10_000, "{s}");
}

/// Streams of zero-length transfers (the floor of a latency measurement):
/// each meets a zero-length guest request and both end with 0 bytes; a
/// file source cannot make them (it would never reach its end).
#[test]
fn zero_length_streams_both_ways() {
    let files = tempfile::tempdir().unwrap();
    let d = Daemon::start(&["--control-file-dir", files.path().to_str().unwrap()]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    for (ep, addr) in [("ep1in", 0x81u8), ("ep2out", 0x02u8)] {
        ctl.ok(json!({"op": "stream_start", "ep": ep, "pattern": "zeros", "verify": false, "transfer_size": 0, "count": 3}));
        for i in 0..3u64 {
            let x = h.submit(addr, 0, 0, &[], i).unwrap();
            assert_eq!(
                h.wait_completion(x, T).unwrap().result(),
                Ok(0),
                "{ep} transfer {i}"
            );
        }
        let s = wait_stream_done(&mut ctl, ep);
        assert_eq!(s["stats"]["transfers"], 3, "{s}");
        assert!(s["last_error"].is_null(), "{s}");
    }
    let file = files.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let r = ctl.req(json!({"op": "stream_start", "ep": "ep1in", "pattern": format!("file:{}", file.display()), "transfer_size": 0}));
    assert_eq!(r["ok"], false);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("takes a pattern, not a file"),
        "{r}"
    );
}

/// An OUT stream of zeros sends zeros in every transfer, also from the
/// buffers it reuses (it does not fill them again: the device only reads
/// them).
#[test]
fn a_zeros_stream_sends_zeros_from_reused_buffers() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    ctl.ok(json!({"op": "stream_start", "ep": "ep2out", "pattern": "zeros", "transfer_size": 8192, "depth": 2, "count": 6}));
    let b = h.buffer(8192).unwrap();
    for i in 0..6u64 {
        h.write_buffer(&b, &[0xff; 8192]).unwrap();
        let x = h.submit_buffer(0x02, 0, &b, i).unwrap();
        assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(8192));
        assert!(
            h.read_buffer(&b).unwrap().iter().all(|&v| v == 0),
            "transfer {i} is not all zeros"
        );
    }
    wait_stream_done(&mut ctl, "ep2out");
}

/// Large requests pipelined both ways at once: their copies run outside the
/// device lock, two at a time, and land in order. Every byte arrives where
/// it belongs, in order, while a control client keeps asking for `status`
/// (which waits for every copy out and sees them done).
#[test]
fn pipelined_large_transfers_both_ways_arrive_whole_and_in_order() {
    const SIZE: usize = 512 << 10;
    const COUNT: u64 = 48;
    const DEPTH: usize = 6;
    let d = Daemon::start(&["--speed", "super"]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    ctl.ok(json!({"op": "stream_start", "ep": "ep1in", "pattern": "prbs:9", "transfer_size": SIZE, "depth": 4, "count": COUNT}));
    ctl.ok(json!({"op": "stream_start", "ep": "ep2out", "pattern": "prbs:5", "transfer_size": SIZE, "depth": 4, "count": COUNT}));
    let pattern_at = |seed: u64, i: u64| {
        let mut v = vec![0u8; SIZE];
        udc_patterns::Pattern::Prbs { seed }.fill(i * SIZE as u64, &mut v);
        v
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut probe = d.ctl();
    thread::scope(|s| {
        let prober = s.spawn(|| {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let st = probe.ok(json!({"op": "status"}));
                assert_eq!(st["ok"], true, "{st}");
                n += 1;
                thread::sleep(std::time::Duration::from_millis(2));
            }
            n
        });
        let bufs_in: Vec<_> = (0..DEPTH).map(|_| h.buffer(SIZE as u64).unwrap()).collect();
        let bufs_out: Vec<_> = (0..DEPTH).map(|_| h.buffer(SIZE as u64).unwrap()).collect();
        let mut ins = std::collections::VecDeque::new();
        let mut outs = std::collections::VecDeque::new();
        let (mut next_in, mut next_out) = (0u64, 0u64);
        let (mut done_in, mut done_out) = (0u64, 0u64);
        while done_in < COUNT || done_out < COUNT {
            while ins.len() < DEPTH && next_in < COUNT {
                let b = &bufs_in[next_in as usize % DEPTH];
                h.write_buffer(b, &pattern_at(9, next_in)).unwrap();
                ins.push_back(h.submit_buffer(0x81, 0, b, next_in).unwrap());
                next_in += 1;
            }
            while outs.len() < DEPTH && next_out < COUNT {
                let b = &bufs_out[next_out as usize % DEPTH];
                outs.push_back(h.submit_buffer(0x02, 0, b, 1000 + next_out).unwrap());
                next_out += 1;
            }
            if let Some(x) = ins.pop_front() {
                let c = h.wait_completion(x, T).unwrap();
                assert_eq!((c.tag, c.result()), (done_in, Ok(SIZE as u32)), "IN {done_in}");
                done_in += 1;
            }
            if let Some(x) = outs.pop_front() {
                let c = h.wait_completion(x, T).unwrap();
                assert_eq!(
                    (c.tag, c.result()),
                    (1000 + done_out, Ok(SIZE as u32)),
                    "OUT {done_out}"
                );
                let b = &bufs_out[done_out as usize % DEPTH];
                assert!(
                    h.read_buffer(b).unwrap() == pattern_at(5, done_out),
                    "OUT request {done_out}: not the stream's bytes at its offset"
                );
                done_out += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(prober.join().unwrap() > 0, "status was asked meanwhile");
    });
    let s = wait_stream_done(&mut ctl, "ep1in");
    assert_eq!(s["last_error"], serde_json::Value::Null, "IN stream: {s}");
    assert_eq!(s["stats"]["bytes"], COUNT * SIZE as u64, "{s}");
    let s = wait_stream_done(&mut ctl, "ep2out");
    assert_eq!(s["last_error"], serde_json::Value::Null, "OUT stream: {s}");
}

/// `--poll-us`: the worker watches a drained queue before it sleeps. Every
/// request of a one-at-a-time exchange (the case polling is for) is served
/// whole; a window past the limit is refused with the flag's range.
#[test]
fn a_polling_worker_serves_one_request_at_a_time() {
    let d = Daemon::start(&["--speed", "super", "--poll-us", "200"]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    let buf = h.buffer(4096).unwrap();
    for i in 0..50u64 {
        let payload = data(4096, i);
        h.write_buffer(&buf, &payload).unwrap();
        let x = h.submit_buffer(0x81, 0, &buf, i).unwrap();
        let (r, got) = ctl.read_in("ep1in", 4096);
        assert_eq!(r["status"], "ok", "request {i}: {r}");
        assert!(got == payload, "request {i}: data differs");
        assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(4096), "request {i}");
    }

    let out = std::process::Command::new(daemon_binary())
        .args(["--socket-path", "/nonexistent/x.sock", "--poll-us", "5000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad flag is a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--poll-us") && err.contains("0..=1000"),
        "the error names the flag and its range: {err}"
    );
}
