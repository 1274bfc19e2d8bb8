// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Protocol tier: the device behind a vIOMMU. The fake guest acks
//! ACCESS_PLATFORM and plays QEMU's part of the IOTLB protocol (updates,
//! invalidations, misses answered from its model of the guest's mappings);
//! the daemon must translate every access, rings included, refuse what the
//! mappings do not allow and say why.

mod common;

use std::thread;

use common::*;
use serde_json::Value;
use udc_harness::{
    BufferSpec, FakeGadget, Harness, HarnessOptions, PERM_RO, PERM_RW, PERM_WO, RING_IOVA_OFFSET,
};

/// IOVAs the tests map buffers at: above guest memory, so only the
/// mappings a test makes reach them.
const IOVA: u64 = 0x5000_0000_0000;

fn iommu_harness(d: &Daemon) -> (Harness, FakeGadget) {
    let opts = HarnessOptions {
        iommu: true,
        ..HarnessOptions::default()
    };
    let mut h = d.harness_with(opts);
    let mut g = FakeGadget::new();
    g.connect_and_configure(&mut h, T)
        .expect("enumeration behind the IOMMU");
    (h, g)
}

fn status(ctl: &mut Ctl) -> Value {
    ctl.ok(serde_json::json!({"op": "status"}))
}

fn ep_stat(st: &Value, ep: &str, key: &str) -> u64 {
    st["device"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == ep)
        .unwrap_or_else(|| panic!("no {ep} in {st}"))["stats"][key]
        .as_u64()
        .unwrap()
}

/// Maps `buf`'s segments at consecutive pages from `iova` with `perm`;
/// returns the segments as IOVAs.
fn map_segments(h: &mut Harness, buf: &udc_harness::DmaBuffer, iova: u64, perm: u8) -> Vec<(u64, u32)> {
    let mut at = iova;
    let mut out = Vec::new();
    for &(gpa, len) in &buf.segments {
        let page = gpa & !0xfff;
        let span = (gpa + u64::from(len) - page).div_ceil(4096) * 4096;
        h.iommu().unwrap().map(at, page, span, perm);
        out.push((at + (gpa - page), len));
        at += span + 4096;
    }
    out
}

#[test]
fn rings_and_enumeration_run_through_the_iotlb() {
    let d = Daemon::start(&["--speed", "high"]);
    let (mut h, _g) = iommu_harness(&d);
    let misses = h.iommu().unwrap().misses.clone();
    // The rings are only reachable at their IOVAs: the device asked for them.
    assert!(
        misses.iter().any(|m| m.iova >= RING_IOVA_OFFSET && m.granted),
        "no miss on a ring IOVA: {misses:?}"
    );
    let mut ctl = d.ctl();
    let st = status(&mut ctl);
    assert_eq!(st["iommu"]["enabled"], true, "{st}");
    assert!(st["iommu"]["misses"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["iommu"]["faults"], 0, "{st}");
}

#[test]
fn transfers_across_several_iotlb_entries_both_ways() {
    let d = Daemon::start(&["--speed", "high"]);
    let (mut h, _g) = iommu_harness(&d);
    let len = 17 * 4096 - 100;
    // IN: the device reads 17 pages mapped to the device (DMA_TO_DEVICE).
    let buf = h.alloc_buffer(&BufferSpec::scattered(len as u64, 5)).unwrap();
    let payload = data(len, 7);
    h.write_buffer(&buf, &payload).unwrap();
    let segs = map_segments(&mut h, &buf, IOVA, PERM_RO);
    let x = h.submit(0x81, 0, len as u32, &segs, 1).unwrap();
    let host = {
        let mut ctl = d.ctl();
        thread::spawn(move || ctl.read_in("ep1in", len))
    };
    let c = h.wait_completion(x, T).unwrap();
    let (r, got) = host.join().unwrap();
    assert_eq!(r["status"], "ok", "{r}");
    assert!(got == payload, "IN data differs");
    assert_eq!(c.result(), Ok(len as u32));

    // OUT: the device writes 17 pages mapped from the device.
    let out = h.alloc_buffer(&BufferSpec::scattered(len as u64, 3)).unwrap();
    let segs = map_segments(&mut h, &out, IOVA + 0x100_0000, PERM_WO);
    let x = h.submit(0x02, 0, len as u32, &segs, 2).unwrap();
    let payload = data(len, 8);
    let host = {
        let mut ctl = d.ctl();
        let p = payload.clone();
        thread::spawn(move || ctl.write_out("ep2out", &p, false))
    };
    let c = h.wait_completion(x, T).unwrap();
    let r = host.join().unwrap();
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(c.result(), Ok(len as u32));
    assert!(h.read_buffer(&out).unwrap() == payload, "OUT data differs");
    assert!(h.guards_intact(&out).unwrap());
    let granted = h
        .iommu()
        .unwrap()
        .misses
        .iter()
        .filter(|m| m.iova >= IOVA && m.granted)
        .count();
    assert!(granted >= 34, "one miss per page, {granted} granted");
}

/// One wrong-direction access: the request fails with DMA_FAULT (-EIO),
/// the log names it, the endpoint counts it.
fn fault_case(ep: u8, ep_name: &str, perm: u8, expect: &str) {
    let d = Daemon::start(&["--speed", "high"]);
    let (mut h, _g) = iommu_harness(&d);
    let buf = h.alloc_buffer(&BufferSpec::contiguous(4096)).unwrap();
    let segs = map_segments(&mut h, &buf, IOVA, perm);
    let before = h.read_buffer(&buf).unwrap();
    let x = h.submit(ep, 0, 4096, &segs, 0x77).unwrap();
    let host = {
        let mut ctl = d.ctl();
        let name = ep_name.to_string();
        thread::spawn(move || {
            if ep & 0x80 != 0 {
                ctl.read_in(&name, 4096).0
            } else {
                ctl.write_out(&name, &data(4096, 3), false)
            }
        })
    };
    let c = h.wait_completion(x, T).unwrap();
    let _ = host.join().unwrap();
    assert_eq!(c.result(), Err(-5), "{ep_name} with perm {perm}: {c:?}");
    assert_eq!(h.read_buffer(&buf).unwrap(), before, "nothing written");
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("IOMMU fault"))
        .unwrap_or_else(|| panic!("no fault line in\n{log}"));
    assert!(line.contains(ep_name), "{line}");
    assert!(line.contains(&format!("iova {:#x}+0x1000", segs[0].0)), "{line}");
    assert!(line.contains(expect), "{line}");
    if ep & 0x80 == 0 && perm == PERM_RO {
        assert!(
            line.contains("write to a mapping the device may only read (DMA_TO_DEVICE)"),
            "{line}"
        );
    }
    assert!(line.contains("request tag 0x77"), "{line}");
    let st = status(&mut d.ctl());
    assert_eq!(ep_stat(&st, ep_name, "dma_faults"), 1, "{st}");
    // The control socket gives the same report line as the log, for a
    // guest that wants to say why its transfer failed.
    let ep = st["device"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == ep_name)
        .unwrap();
    let last = ep["last_dma_fault"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_dma_fault: {ep}"));
    assert!(line.ends_with(last), "log {line:?}, status {last:?}");
}

#[test]
fn a_write_to_a_dma_to_device_mapping_is_a_permission_fault() {
    fault_case(0x02, "ep2out", PERM_RO, "device write at");
}

#[test]
fn a_read_of_a_dma_from_device_mapping_is_a_permission_fault() {
    fault_case(
        0x81,
        "ep1in",
        PERM_WO,
        "read from a mapping the device may only write (DMA_FROM_DEVICE)",
    );
}

#[test]
fn an_unmapped_iova_is_a_fault() {
    fault_case(0x81, "ep1in", 0, "no mapping (unmapped IOVA)");
}

#[test]
fn updates_and_invalidations_from_the_front_end() {
    let d = Daemon::start(&["--speed", "high"]);
    let (mut h, _g) = iommu_harness(&d);
    let buf = h.alloc_buffer(&BufferSpec::contiguous(4096)).unwrap();
    let gpa = buf.segments[0].0 & !0xfff;
    let off = buf.segments[0].0 - gpa;
    // An update before the access: no miss.
    h.iommu().unwrap().map(IOVA, gpa, 8192, PERM_RW);
    assert_eq!(h.iommu().unwrap().update(IOVA, gpa, 8192, PERM_RW).unwrap(), 0);
    let misses = h.iommu().unwrap().misses.len();
    let payload = data(4096, 9);
    h.write_buffer(&buf, &payload).unwrap();
    let x = h.submit(0x81, 0, 4096, &[(IOVA + off, 4096)], 1).unwrap();
    let host = {
        let mut ctl = d.ctl();
        thread::spawn(move || ctl.read_in("ep1in", 4096))
    };
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(4096));
    assert!(host.join().unwrap().1 == payload);
    assert!(
        !h.iommu().unwrap().misses[misses..].iter().any(|m| m.iova >= IOVA),
        "the update made a miss unneeded"
    );

    // Unmapped while its request is queued: the request fails, nothing is
    // written.
    let x = h.submit(0x02, 0, 4096, &[(IOVA + off, 4096)], 2).unwrap();
    let before = h.read_buffer(&buf).unwrap();
    assert_eq!(h.iommu().unwrap().unmap(IOVA, 8192).unwrap(), 0);
    let host = {
        let mut ctl = d.ctl();
        thread::spawn(move || ctl.write_out("ep2out", &data(4096, 10), false))
    };
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Err(-5));
    let _ = host.join();
    assert_eq!(h.read_buffer(&buf).unwrap(), before);
    assert!(d.log_text().contains("no mapping (unmapped IOVA)"));

    // An update naming memory the front end never gave is refused.
    assert_eq!(
        h.iommu().unwrap().update_raw(IOVA, 4096, 0x10, PERM_RW).unwrap(),
        1
    );
    // A domain-wide invalidation is taken.
    assert_eq!(h.iommu().unwrap().invalidate(0, u64::MAX).unwrap(), 0);
    let st = status(&mut d.ctl());
    assert!(st["iommu"]["updates"].as_u64().unwrap() >= 2, "{st}");
    assert!(st["iommu"]["invalidations"].as_u64().unwrap() >= 2, "{st}");
}

/// QEMU answers no miss while it waits for a reply of its own, and
/// SET_VRING_ENABLE, which it sends synchronously when the driver starts
/// the device, takes the vring's lock. A ring given again must be
/// translated before the device takes that lock to use it, or both sides
/// wait until the miss times out.
#[test]
fn a_ring_given_again_is_translated_before_its_lock_is_taken() {
    const XFERQ: usize = 2;
    let d = Daemon::start(&["--speed", "high", "--iotlb-miss-timeout", "5000"]);
    let (mut h, _g) = iommu_harness(&d);
    let buf = h.alloc_buffer(&BufferSpec::contiguous(4096)).unwrap();
    let segs = map_segments(&mut h, &buf, IOVA, PERM_RW);
    h.write_buffer(&buf, &data(4096, 9)).unwrap();
    // The driver stops the xferq, its mappings go (strict mode unmaps
    // them), and it starts the queue again: the device's first use of the
    // ring must ask.
    let base = h.stop_queue(XFERQ).unwrap();
    assert_eq!(h.iommu().unwrap().invalidate(0, u64::MAX).unwrap(), 0);
    h.restart_queue(XFERQ, base).unwrap();
    h.iommu().unwrap().answer_misses = false;
    let x = h.submit(0x81, 0, 4096, &segs, 1).unwrap();
    // Give the kick time to reach the device and its misses to be asked.
    thread::sleep(std::time::Duration::from_millis(200));
    let asked = std::time::Instant::now();
    h.enable_queue(XFERQ, true).unwrap();
    let waited = asked.elapsed();
    assert!(
        waited < std::time::Duration::from_millis(2500),
        "SET_VRING_ENABLE waited {waited:?} for a ring miss (timeout 5 s)"
    );
    // Answered now, the request goes on as usual.
    h.iommu().unwrap().answer_misses = true;
    let host = {
        let mut ctl = d.ctl();
        thread::spawn(move || ctl.read_in("ep1in", 4096))
    };
    let c = h.wait_completion(x, T).unwrap();
    assert_eq!(c.result(), Ok(4096));
    let (r, got) = host.join().unwrap();
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(got, data(4096, 9));
    assert!(
        !d.log_text().contains("cannot read the used index"),
        "{}",
        d.log_text()
    );
}

#[test]
fn a_miss_nobody_answers_times_out_and_fails_only_its_request() {
    let d = Daemon::start(&["--speed", "high", "--iotlb-miss-timeout", "300"]);
    let (mut h, _g) = iommu_harness(&d);
    let buf = h.alloc_buffer(&BufferSpec::contiguous(4096)).unwrap();
    let segs = map_segments(&mut h, &buf, IOVA, PERM_RW);
    h.iommu().unwrap().answer_misses = false;
    let x = h.submit(0x81, 0, 4096, &segs, 1).unwrap();
    let host = {
        let mut ctl = d.ctl();
        thread::spawn(move || ctl.read_in("ep1in", 4096))
    };
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Err(-5));
    let _ = host.join();
    assert!(d.log_text().contains("IOTLB miss not answered within 300 ms"));
    // The device goes on: the next request, answered, works.
    h.iommu().unwrap().answer_misses = true;
    let payload = data(4096, 4);
    h.write_buffer(&buf, &payload).unwrap();
    let x = h.submit(0x81, 0, 4096, &segs, 2).unwrap();
    let host = {
        let mut ctl = d.ctl();
        thread::spawn(move || ctl.read_in("ep1in", 4096))
    };
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(4096));
    assert!(host.join().unwrap().1 == payload);
    let st = status(&mut d.ctl());
    assert!(st["iommu"]["miss_timeouts"].as_u64().unwrap() >= 1, "{st}");
}

#[test]
fn without_access_platform_nothing_is_translated() {
    let d = Daemon::start(&["--speed", "high"]);
    let (_h, _g) = d.configured();
    let st = status(&mut d.ctl());
    assert_eq!(st["iommu"]["enabled"], false, "{st}");
    assert_eq!(st["iommu"]["misses"], 0, "{st}");
}
