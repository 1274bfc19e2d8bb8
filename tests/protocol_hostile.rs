// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Protocol tier: a hostile guest. The daemon must bound what a guest can
//! make it keep and keep serving the next good request.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

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
    // One more after a quiet second: its line says how many were left out.
    std::thread::sleep(Duration::from_millis(1100));
    h.xferq().republish(x.head).unwrap();
    h.xferq().force_kick().unwrap();
    let deadline = Instant::now() + T;
    while h.xferq().take_used_raw().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the last repost came back");
    }
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

/// The bytes of the xferq's used ring.
fn used_ring(h: &mut udc_harness::Harness) -> Vec<u8> {
    let (_, _, used) = h.xferq().ring_addrs();
    let len = 4 + 8 * usize::from(h.xferq().size()) + 2;
    h.memory().read(used, len).unwrap()
}

/// After GET_VRING_BASE nothing of the device touches guest memory: host
/// data for a queued OUT request waits, the used ring stays as it was. When
/// the frontend starts the ring again, the transfer completes.
#[test]
fn a_stopped_queue_is_not_touched_until_it_runs_again() {
    const XFERQ: usize = 2;
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let b = h.buffer(4096).unwrap();
    h.write_buffer(&b, &[0xaa; 4096]).unwrap();
    let x = h.submit_buffer(0x02, 0, &b, 1).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let base = h.stop_queue(XFERQ).unwrap();
    let used_before = used_ring(&mut h);

    let mut ctl = d.ctl();
    let r = ctl.req(json!({"op": "transfer", "ep": "ep2out", "data": "AQIDBA==", "timeout_ms": 1000}));
    assert_eq!(
        r["ok"], false,
        "host data cannot move while the ring is stopped: {r}"
    );
    assert_eq!(
        h.read_buffer(&b).unwrap(),
        vec![0xaa; 4096],
        "the buffer was written"
    );
    assert_eq!(used_ring(&mut h), used_before, "the used ring was written");
    assert!(h.is_in_flight(x));
    ctl.ok(json!({"op": "status"}));

    h.restart_queue(XFERQ, base).unwrap();
    h.xferq().force_kick().unwrap();
    let want = data(4096, 5);
    let r = ctl.write_out("ep2out", &want, false);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(4096));
    assert!(h.read_buffer(&b).unwrap() == want);
}

/// When the frontend goes, the daemon unmaps its memory.
#[test]
fn the_frontend_s_memory_is_unmapped_when_it_goes() {
    let d = Daemon::start(&[]);
    let mapped = || {
        std::fs::read_to_string(format!("/proc/{}/maps", d.pid()))
            .unwrap()
            .lines()
            .filter(|l| l.contains("udc-harness-guest-ram"))
            .count()
    };
    let (mut h, _g) = d.configured();
    assert!(
        mapped() > 0,
        "the daemon maps the guest's memory while it is connected"
    );
    h.disconnect().unwrap();
    let start = Instant::now();
    while mapped() > 0 {
        assert!(
            start.elapsed() < T,
            "the guest's memory is still mapped after the frontend went"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.ctl().ok(json!({"op": "status"}));
}

/// An available index more than a queue's worth ahead names entries that
/// do not exist: the device takes nothing more from that ring, says so, and
/// serves the other queues and the control socket; a new connection (the
/// driver's reset) works again.
#[test]
fn an_avail_index_past_the_queue_stops_only_that_ring() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let size = h.xferq().size();
    let next = h.xferq().avail_idx();
    h.xferq().set_avail_idx_raw(next.wrapping_add(size + 10)).unwrap();
    h.xferq().force_kick().unwrap();
    let start = Instant::now();
    while !d.log_text().contains("the driver's ring is broken") {
        assert!(start.elapsed() < T, "the daemon did not say the ring is broken");
        std::thread::sleep(Duration::from_millis(20));
    }
    h.command_ok(udc_harness::ctrl_req(udc_harness::wire::VIRTIO_UDC_CMD_GET_FRAME))
        .unwrap();
    d.ctl().ok(json!({"op": "status"}));

    h.disconnect().unwrap();
    let (mut h, _g) = d.configured();
    let b = h.buffer(512).unwrap();
    h.write_buffer(&b, &data(512, 4)).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 1).unwrap();
    assert!(d.ctl().read_in("ep1in", 512).1 == data(512, 4));
    assert!(h.wait_completion(x, T).unwrap().is_ok());
}

/// The frontend dies in the middle of DMA with a host stream running: the
/// daemon stops the stream, forgets the requests, and serves the next
/// frontend from a clean state.
#[test]
fn the_frontend_dying_mid_stream_leaves_a_clean_daemon() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    ctl.ok(json!({"op": "stream_start", "ep": "ep2out", "pattern": "prbs:5", "transfer_size": 65536, "depth": 4}));
    let bufs: Vec<_> = (0..4).map(|_| h.buffer(65536).unwrap()).collect();
    for (k, b) in bufs.iter().enumerate() {
        h.submit_buffer(0x02, 0, b, k as u64).unwrap();
    }
    // Some data has moved; more is queued on both sides.
    std::thread::sleep(Duration::from_millis(50));
    drop(bufs);
    h.disconnect().unwrap();

    let start = Instant::now();
    loop {
        let r = ctl.ok(json!({"op": "streams"}));
        let running = r["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["running"] == true);
        if !running {
            break;
        }
        assert!(
            start.elapsed() < T,
            "the stream still runs after the frontend died: {r}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut h, _g) = d.configured();
    let b = h.buffer(4096).unwrap();
    let x = h.submit_buffer(0x02, 0, &b, 1).unwrap();
    let want = data(4096, 8);
    assert_eq!(ctl.write_out("ep2out", &want, false)["ok"], true);
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(4096));
    assert!(h.read_buffer(&b).unwrap() == want);
}

/// Whether the daemon maps the memfd whose inode is `ino`.
fn maps_inode(pid: u32, ino: u64) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .any(|l| l.split_whitespace().nth(4).and_then(|f| f.parse::<u64>().ok()) == Some(ino))
}

/// FNV-1a of guest memory `[gpa, gpa + len)`, read in 1 MiB pieces.
fn memory_hash(mem: &udc_harness::GuestMemory, gpa: u64, len: u64) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        mem.read_into(gpa + at, &mut buf[..n]).unwrap();
        for &b in &buf[..n] {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        at += n as u64;
    }
    hash
}

/// SET_MEM_TABLE with a new region layout (another memfd, the high region
/// gone) while requests are queued and one is half done. The daemon moves
/// every byte from then on through the new table: the half-done request
/// finishes in the new memory, a queued IN request sends what the new
/// memory holds, a queued request whose buffer the new table no longer
/// backs completes with DMA_FAULT, the next one is served. The old memfd is
/// never written again and leaves the daemon's mappings.
#[test]
fn a_new_memory_table_mid_transfer_is_used_and_the_old_one_never_touched() {
    const LOW: u64 = 32 << 20;
    const HIGH: u64 = 8 << 20;
    let d = Daemon::start(&[]);
    let mut h = d.harness_with(udc_harness::HarnessOptions::default().with_hole(LOW, HIGH));
    let mut g = udc_harness::FakeGadget::new();
    g.connect_and_configure(&mut h, T).unwrap();
    let mut ctl = d.ctl();
    let spec = |len, region| udc_harness::BufferSpec::contiguous(len).in_region(region);

    // ep2out: one request half done, one whose buffer is in the region that
    // goes, one after it. ep1in: one queued that the host has not read.
    let half = h.alloc_buffer(&spec(8192, 0)).unwrap();
    let gone = h.alloc_buffer(&spec(4096, 1)).unwrap();
    let after = h.alloc_buffer(&spec(4096, 0)).unwrap();
    let in_buf = h.alloc_buffer(&spec(4096, 0)).unwrap();
    let x_half = h.submit_buffer(0x02, 0, &half, 1).unwrap();
    let x_gone = h.submit_buffer(0x02, 0, &gone, 2).unwrap();
    let x_after = h.submit_buffer(0x02, 0, &after, 3).unwrap();
    h.write_buffer(&in_buf, &data(4096, 40)).unwrap();
    let x_in = h.submit_buffer(0x81, 0, &in_buf, 4).unwrap();
    let first = data(4096, 41);
    assert_eq!(ctl.write_out("ep2out", &first, false)["status"], "ok");
    std::thread::sleep(Duration::from_millis(50));
    assert!(h.is_in_flight(x_half), "8192 bytes asked for, 4096 sent");

    let old = h.replace_memory(&udc_harness::MemoryLayout::single(LOW)).unwrap();
    let old_ino = old.inode().unwrap();
    let new_ino = h.memory().inode().unwrap();
    let old_low = memory_hash(&old, 0, LOW);
    let old_high = memory_hash(&old, udc_harness::HIGH_REGION_GPA, HIGH);
    // What the host reads must come from the new memory: change it there.
    h.write_buffer(&in_buf, &data(4096, 42)).unwrap();

    let second = data(4096, 43);
    assert_eq!(ctl.write_out("ep2out", &second, false)["status"], "ok");
    assert_eq!(h.wait_completion(x_half, T).unwrap().result(), Ok(8192));
    let got = h.read_buffer(&half).unwrap();
    assert!(
        got[..4096] == first[..] && got[4096..] == second[..],
        "the half-done request's data"
    );

    let r = ctl.write_out("ep2out", &data(4096, 44), false);
    eprintln!("host write into the unmapped buffer: {r}");
    let c = h.wait_completion(x_gone, T).unwrap();
    assert_eq!(
        (c.status, c.actual),
        (udc_harness::wire::VIRTIO_UDC_S_DMA_FAULT, 0),
        "{c:?}"
    );

    let last = data(4096, 45);
    assert_eq!(ctl.write_out("ep2out", &last, false)["status"], "ok");
    assert_eq!(h.wait_completion(x_after, T).unwrap().result(), Ok(4096));
    assert!(h.read_buffer(&after).unwrap() == last);

    let (r, got) = ctl.read_in("ep1in", 4096);
    assert_eq!(r["status"], "ok", "{r}");
    assert!(got == data(4096, 42), "the host read the old memory's bytes");
    assert!(h.wait_completion(x_in, T).unwrap().is_ok());

    assert_eq!(
        memory_hash(&old, 0, LOW),
        old_low,
        "the old memory's low region was written"
    );
    assert_eq!(
        memory_hash(&old, udc_harness::HIGH_REGION_GPA, HIGH),
        old_high,
        "the old memory's high region was written"
    );
    let start = Instant::now();
    while maps_inode(d.pid(), old_ino) {
        assert!(start.elapsed() < T, "the daemon still maps the old memory");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(maps_inode(d.pid(), new_ino), "the daemon maps the new memory");

    // Commands, events and transfers go on.
    h.command_ok(udc_harness::ctrl_req(udc_harness::wire::VIRTIO_UDC_CMD_GET_FRAME))
        .unwrap();
    ctl.ok(json!({"op": "bus", "action": "suspend"}));
    h.expect_event(udc_harness::wire::VIRTIO_UDC_EVT_SUSPEND, T)
        .unwrap();
    ctl.ok(json!({"op": "bus", "action": "resume"}));
    h.expect_event(udc_harness::wire::VIRTIO_UDC_EVT_RESUME, T)
        .unwrap();
    let b = h.buffer(512).unwrap();
    h.write_buffer(&b, &data(512, 46)).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 9).unwrap();
    assert!(ctl.read_in("ep1in", 512).1 == data(512, 46));
    assert!(h.wait_completion(x, T).unwrap().is_ok());
}

/// VHOST_USER_RESET_DEVICE with an OUT request half done, an IN request
/// held by the host and event buffers posted: from then on nothing in
/// guest memory changes (data buffers, statuses, used rings, event
/// buffers), whatever the host offers or releases and however the guest
/// kicks, until the driver sets the device up again; then it is served
/// from scratch.
#[test]
fn reset_device_mid_transfer_leaves_guest_memory_alone() {
    const MEM: u64 = 16 << 20;
    let d = Daemon::start(&[]);
    let mut opts = udc_harness::HarnessOptions::default().with_mem_size(MEM);
    opts.protocol_features |= vhost::vhost_user::VhostUserProtocolFeatures::RESET_DEVICE;
    let mut h = d.harness_with(opts);
    let mut g = udc_harness::FakeGadget::new();
    g.connect_and_configure(&mut h, T).unwrap();
    let mut ctl = d.ctl();

    let half = h.buffer(8192).unwrap();
    let x_half = h.submit_buffer(0x02, 0, &half, 1).unwrap();
    let queued = h.buffer(4096).unwrap();
    h.submit_buffer(0x02, 0, &queued, 2).unwrap();
    let in_buf = h.buffer(4096).unwrap();
    h.write_buffer(&in_buf, &data(4096, 50)).unwrap();
    h.submit_buffer(0x81, 0, &in_buf, 3).unwrap();
    assert_eq!(ctl.write_out("ep2out", &data(4096, 51), false)["status"], "ok");
    let held = ctl.ok(json!({"op": "hold", "ep": "ep1in"}));
    std::thread::sleep(Duration::from_millis(50));
    assert!(h.is_in_flight(x_half), "8192 bytes asked for, 4096 sent");

    h.reset_device().unwrap();
    let before = memory_hash(h.memory(), 0, MEM);

    // The host offers data, reads, releases what it held, changes the bus;
    // the guest kicks every queue.
    let r = ctl.req(json!({"op": "transfer", "ep": "ep2out", "data": "AQIDBA==", "timeout_ms": 500}));
    assert_ne!(r["status"], "ok", "host data went somewhere after the reset: {r}");
    let r = ctl.req(json!({"op": "transfer", "ep": "ep1in", "length": 4096, "timeout_ms": 500}));
    assert_ne!(r["status"], "ok", "the host read a request the reset forgot: {r}");
    let r = ctl.req(json!({"op": "release", "ep": "ep1in", "handle": held["handle"], "status": "proto"}));
    assert_eq!(r["ok"], false, "a held request survived the reset: {r}");
    for action in ["suspend", "resume", "reset"] {
        ctl.req(json!({"op": "bus", "action": action}));
    }
    h.controlq().force_kick().unwrap();
    h.eventq().force_kick().unwrap();
    h.xferq().force_kick().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        memory_hash(h.memory(), 0, MEM),
        before,
        "guest memory changed after RESET_DEVICE"
    );
    ctl.ok(json!({"op": "status"}));

    // The driver sets the device up again on the same connection: served.
    h.reinitialize().unwrap();
    let mut g = udc_harness::FakeGadget::new();
    g.connect_and_configure(&mut h, T).unwrap();
    let b = h.buffer(4096).unwrap();
    let x = h.submit_buffer(0x02, 0, &b, 1).unwrap();
    let want = data(4096, 52);
    assert_eq!(ctl.write_out("ep2out", &want, false)["status"], "ok");
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(4096));
    assert!(h.read_buffer(&b).unwrap() == want);
}
