// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Protocol tier: descriptor chains a hostile guest writes by hand. Loops,
//! links past the table, an indirect table inside another or of a length
//! that is not a whole number of descriptors, eventq buffers too short for
//! an event or not writable: each is refused, nothing is written outside
//! the buffers the guest named, and the daemon serves the next good
//! request.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use udc_harness::wire::*;
use udc_harness::{
    seg, xfer_bytes, xfer_req, FakeGadget, Harness, HarnessOptions, RawChain, RawNext, RawRingDesc, SENTINEL,
    VIRTIO_RING_F_INDIRECT_DESC,
};

/// A daemon and a configured gadget whose driver negotiated indirect
/// descriptors (the device offers them; tables are then the driver's to
/// write).
fn configured_with_indirect(d: &Daemon) -> (Harness, FakeGadget) {
    let mut h = d.harness_with(HarnessOptions {
        extra_features: VIRTIO_RING_F_INDIRECT_DESC,
        ..HarnessOptions::default()
    });
    let mut g = FakeGadget::new();
    g.connect_and_configure(&mut h, T).expect("enumeration");
    (h, g)
}

/// A good IN transfer right after a bad chain: the daemon still serves,
/// and what the host reads is this request's data, so a bad chain the
/// device had queued on ep1in instead of refusing would show here.
fn still_serving(h: &mut Harness, ctl: &mut Ctl, what: &str) {
    let b = h.buffer(300).unwrap();
    h.write_buffer(&b, &data(300, 77)).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 7777).unwrap();
    let (r, got) = ctl.read_in("ep1in", 4096);
    assert_eq!(r["status"], "ok", "after {what}: {r}");
    assert!(
        got == data(300, 77),
        "after {what}: the host read {} other bytes",
        got.len()
    );
    assert!(h.wait_completion(x, T).unwrap().is_ok(), "after {what}");
    h.free_buffer(b).unwrap();
}

/// The guest memory one hand-made request uses: its header (an IN request
/// on ep1in for 16 bytes of `data`), a status buffer, a second status
/// buffer and room for two indirect tables. Status buffers start as
/// [`SENTINEL`].
struct Parts {
    hdr: u64,
    status: u64,
    status2: u64,
    table: u64,
    table2: u64,
}

const HDR_LEN: u32 = 24 + 16;

impl Parts {
    fn new(h: &mut Harness) -> Parts {
        let data = h.alloc(16, 16).unwrap();
        h.memory().write(data, &[0x3c; 16]).unwrap();
        let hdr = h.alloc(u64::from(HDR_LEN), 16).unwrap();
        let bytes = xfer_bytes(&xfer_req(0x81, 0, 16, 1, 0xbad), &[seg(data, 16)]);
        h.memory().write(hdr, &bytes).unwrap();
        let p = Parts {
            hdr,
            status: h.alloc(8, 16).unwrap(),
            status2: h.alloc(8, 16).unwrap(),
            table: h.alloc(16 * 8, 16).unwrap(),
            table2: h.alloc(16 * 8, 16).unwrap(),
        };
        p.reset_status(h);
        p
    }

    fn reset_status(&self, h: &Harness) {
        h.memory().write(self.status, &[SENTINEL; 8]).unwrap();
        h.memory().write(self.status2, &[SENTINEL; 8]).unwrap();
    }

    fn chain(&self, ring: Vec<RawRingDesc>, tables: Vec<(u64, Vec<RawRingDesc>)>) -> RawChain {
        RawChain {
            ring,
            tables,
            status_at: Some(self.status),
        }
    }
}

/// How a refused chain must come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Status INVALID in the chain's status buffer, used length 8.
    Invalid,
    /// Used length 0 and the status buffer untouched: the chain as the
    /// device can walk it has no room for a status.
    NoRoom,
}

fn submit_and_check(h: &mut Harness, ctl: &mut Ctl, p: &Parts, what: &str, chain: RawChain, want: Refused) {
    p.reset_status(h);
    let x = h.submit_raw_chain(&chain).unwrap();
    let c = h.wait_completion(x, T).unwrap();
    match want {
        Refused::Invalid => {
            assert_eq!(
                (c.status, c.actual, c.used_len),
                (VIRTIO_UDC_S_INVALID, 0, 8),
                "{what}: {c:?}"
            )
        }
        Refused::NoRoom => {
            assert_eq!(c.used_len, 0, "{what}: {c:?}");
            assert_eq!(
                h.memory().read(p.status, 8).unwrap(),
                vec![SENTINEL; 8],
                "{what}: status written"
            );
        }
    }
    assert_eq!(
        h.memory().read(p.status2, 8).unwrap(),
        vec![SENTINEL; 8],
        "{what}: a second writable buffer was written"
    );
    still_serving(h, ctl, what);
}

/// Chains whose `next` links never end: a writable descriptor linked to
/// itself after a good header, the whole chain linked back to its head, a
/// readable descriptor linked to itself, and a link past the descriptor
/// table. The device walks at most a queue's worth of descriptors, sees
/// the chain does not end, and refuses it; the request in it never reaches
/// the endpoint.
#[test]
fn descriptor_loops_and_dangling_links_are_refused() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    let p = Parts::new(&mut h);
    let size = h.xferq().size();
    let (r, w) = (RawRingDesc::readable, RawRingDesc::writable);

    let cases = [
        (
            "a status descriptor linked to itself",
            vec![
                r(p.hdr, HDR_LEN, RawNext::Desc(1)),
                w(p.status, 8, RawNext::Desc(1)),
            ],
            Refused::Invalid,
        ),
        (
            "a chain linked back to its head",
            vec![
                r(p.hdr, HDR_LEN, RawNext::Desc(1)),
                w(p.status, 8, RawNext::Desc(0)),
            ],
            Refused::Invalid,
        ),
        (
            "a header descriptor linked to itself",
            vec![r(p.hdr, HDR_LEN, RawNext::Desc(0))],
            Refused::NoRoom,
        ),
        (
            "a link past the descriptor table",
            vec![
                r(p.hdr, HDR_LEN, RawNext::Desc(1)),
                w(p.status, 8, RawNext::Index(size + 3)),
            ],
            Refused::Invalid,
        ),
    ];
    for (what, ring, want) in cases {
        submit_and_check(&mut h, &mut ctl, &p, what, p.chain(ring, vec![]), want);
    }
    // A command in a loop gets its INVALID response and the controlq goes on.
    let cmd = h.alloc(24, 16).unwrap();
    h.memory()
        .write(
            cmd,
            vm_memory::ByteValued::as_slice(&udc_harness::ctrl_req(VIRTIO_UDC_CMD_GET_FRAME)),
        )
        .unwrap();
    p.reset_status(&h);
    let head = h
        .controlq()
        .add_raw_chain(
            &[r(cmd, 24, RawNext::Desc(1)), w(p.status, 8, RawNext::Desc(1))],
            8,
        )
        .unwrap();
    h.controlq().force_kick().unwrap();
    let used = h.controlq().wait_used(T).unwrap();
    assert_eq!(used, vec![(head, 8)], "the looping command comes back");
    assert_eq!(
        u32::from_le_bytes(h.memory().read(p.status, 4).unwrap().try_into().unwrap()),
        VIRTIO_UDC_S_INVALID,
        "a looping command is answered INVALID"
    );
    h.command_ok(udc_harness::ctrl_req(VIRTIO_UDC_CMD_GET_FRAME))
        .unwrap();
    assert!(
        d.log_text().contains("does not end"),
        "the log names the broken chain"
    );
}

/// Indirect tables the virtio specification forbids: a loop inside one,
/// one inside another (VIRTQ_DESC_F_INDIRECT in a table), and tables whose
/// length is not a multiple of 16, at the head and at the end of a direct
/// chain. Each is refused; the daemon serves on.
#[test]
fn bad_indirect_tables_are_refused() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = configured_with_indirect(&d);
    let mut ctl = d.ctl();
    let p = Parts::new(&mut h);
    let (r, w, ind) = (
        RawRingDesc::readable,
        RawRingDesc::writable,
        RawRingDesc::indirect,
    );

    // Sanity: the same parts, well formed, are a request the device serves.
    p.reset_status(&h);
    let good = p.chain(
        vec![ind(p.table, 32, RawNext::End)],
        vec![(
            p.table,
            vec![r(p.hdr, HDR_LEN, RawNext::Desc(1)), w(p.status, 8, RawNext::End)],
        )],
    );
    let x = h.submit_raw_chain(&good).unwrap();
    assert_eq!(ctl.read_in("ep1in", 4096).1, vec![0x3c; 16]);
    assert!(h.wait_completion(x, T).unwrap().is_ok());

    let cases = [
        (
            "a loop inside an indirect table",
            vec![ind(p.table, 32, RawNext::End)],
            vec![(
                p.table,
                vec![
                    r(p.hdr, HDR_LEN, RawNext::Desc(1)),
                    w(p.status, 8, RawNext::Desc(1)),
                ],
            )],
            Refused::Invalid,
        ),
        (
            "an indirect table inside an indirect table, after the status",
            vec![ind(p.table, 48, RawNext::End)],
            vec![
                (
                    p.table,
                    vec![
                        r(p.hdr, HDR_LEN, RawNext::Desc(1)),
                        w(p.status, 8, RawNext::Desc(2)),
                        ind(p.table2, 16, RawNext::End),
                    ],
                ),
                (p.table2, vec![w(p.status2, 8, RawNext::End)]),
            ],
            Refused::Invalid,
        ),
        (
            "an indirect table inside an indirect table, holding the status",
            vec![ind(p.table, 32, RawNext::End)],
            vec![
                (
                    p.table,
                    vec![
                        r(p.hdr, HDR_LEN, RawNext::Desc(1)),
                        ind(p.table2, 16, RawNext::End),
                    ],
                ),
                (p.table2, vec![w(p.status2, 8, RawNext::End)]),
            ],
            Refused::NoRoom,
        ),
        (
            "an indirect table of 40 bytes at the head",
            vec![ind(p.table, 40, RawNext::End)],
            vec![(
                p.table,
                vec![
                    r(p.hdr, HDR_LEN, RawNext::Desc(1)),
                    w(p.status, 8, RawNext::End),
                    w(p.status2, 8, RawNext::End),
                ],
            )],
            Refused::NoRoom,
        ),
        (
            "an indirect table of 24 bytes after the status",
            vec![
                r(p.hdr, HDR_LEN, RawNext::Desc(1)),
                w(p.status, 8, RawNext::Desc(2)),
                ind(p.table, 24, RawNext::End),
            ],
            vec![(
                p.table,
                vec![w(p.status2, 8, RawNext::End), w(p.status2, 8, RawNext::End)],
            )],
            Refused::Invalid,
        ),
    ];
    for (what, ring, tables, want) in cases {
        submit_and_check(&mut h, &mut ctl, &p, what, p.chain(ring, tables), want);
    }
}

/// Which bus event the control socket makes next: suspend and resume in
/// turn, each one event.
struct Toggle {
    suspended: bool,
}

impl Toggle {
    /// Makes the next event happen and returns its type.
    fn next(&mut self, ctl: &mut Ctl) -> u16 {
        self.suspended = !self.suspended;
        if self.suspended {
            ctl.ok(json!({"op": "bus", "action": "suspend"}));
            VIRTIO_UDC_EVT_SUSPEND
        } else {
            ctl.ok(json!({"op": "bus", "action": "resume"}));
            VIRTIO_UDC_EVT_RESUME
        }
    }
}

/// Eventq buffers the device cannot put an event in: shorter than an event
/// (16 bytes), device-readable, short pieces, and a writable pair linked
/// in a loop. Each comes back unused and unwritten (nor a byte around it),
/// the event waits, and the next good buffer gets it.
#[test]
fn short_or_read_only_event_buffers_are_returned_unused() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    let mut toggle = Toggle { suspended: false };

    // Use up the harness's own event buffers, so the device meets only the
    // buffers this test posts.
    h.set_event_repost(false);
    while h.posted_event_buffers() > 0 {
        let ty = toggle.next(&mut ctl);
        assert_eq!(u16::from(h.next_event(T).unwrap().expect("an event").type_), ty);
    }

    // One arena, every buffer inside it with guard bytes around it.
    const GUARD: u8 = 0xee;
    let arena = h.alloc(4096, 4096).unwrap();
    h.memory().fill(arena, 4096, GUARD).unwrap();
    let at = |i: u64| arena + 256 * i + 64;
    let (r, w) = (RawRingDesc::readable, RawRingDesc::writable);
    let bad: Vec<(&str, Vec<RawRingDesc>)> = vec![
        ("8 writable bytes", vec![w(at(0), 8, RawNext::End)]),
        (
            "15 writable bytes",
            vec![w(at(1), EVENT_SIZE as u32 - 1, RawNext::End)],
        ),
        ("16 device-readable bytes", vec![r(at(2), 16, RawNext::End)]),
        (
            "a readable and a short writable",
            vec![r(at(3), 16, RawNext::Desc(1)), w(at(3) + 32, 8, RawNext::End)],
        ),
        (
            "a writable pair in a loop",
            vec![w(at(4), 8, RawNext::Desc(1)), w(at(4) + 32, 8, RawNext::Desc(0))],
        ),
        ("no bytes at all", vec![w(at(5), 0, RawNext::End)]),
    ];
    let mut heads = Vec::new();
    for (_, ring) in &bad {
        let chain = RawChain {
            ring: ring.clone(),
            ..RawChain::default()
        };
        heads.push(h.post_raw_event_chain(&chain).unwrap());
    }
    let want = toggle.next(&mut ctl);
    let back = h.raw_event_returns(bad.len(), T).unwrap();
    assert_eq!(back.len(), bad.len(), "every bad buffer comes back: {back:?}");
    for ((what, _), &(head, len)) in bad.iter().zip(&back) {
        assert_eq!(len, 0, "{what} (head {head}) came back with used length {len}");
    }
    assert_eq!(
        back.iter().map(|b| b.0).collect::<Vec<_>>(),
        heads,
        "in the order posted"
    );
    assert_eq!(
        h.memory().read(arena, 4096).unwrap(),
        vec![GUARD; 4096],
        "an event was written into or around a buffer too small for it"
    );
    assert!(h.try_event().unwrap().is_none(), "no event without a good buffer");

    // A good buffer posted later gets the event that waited.
    let good = h.alloc(EVENT_SIZE as u64, 16).unwrap();
    h.memory().fill(good, EVENT_SIZE, GUARD).unwrap();
    let chain = RawChain {
        ring: vec![w(good, EVENT_SIZE as u32, RawNext::End)],
        ..RawChain::default()
    };
    let head = h.post_raw_event_chain(&chain).unwrap();
    assert_eq!(
        h.raw_event_returns(1, T).unwrap(),
        vec![(head, EVENT_SIZE as u32)]
    );
    let ev: VirtioUdcEvent = h.memory().read_obj(good).unwrap();
    assert_eq!(u16::from(ev.type_), want, "the waiting event, in the good buffer");

    // And the eventq and the xferq go on as before.
    h.set_event_repost(true);
    h.post_event_buffers(16).unwrap();
    let ty = toggle.next(&mut ctl);
    assert_eq!(u16::from(h.next_event(T).unwrap().expect("an event").type_), ty);
    if toggle.suspended {
        let ty = toggle.next(&mut ctl);
        assert_eq!(u16::from(h.next_event(T).unwrap().expect("an event").type_), ty);
    }
    still_serving(&mut h, &mut ctl, "bad event buffers");
}

/// The longest hold of the device lock so far, as `status` reports it.
fn longest_hold(ctl: &mut Ctl) -> Duration {
    let st = ctl.ok(json!({"op": "status"}));
    Duration::from_micros(
        st["lock"]["longest_hold_us"]
            .as_u64()
            .expect("lock figures in status"),
    )
}

/// Entries of the largest indirect table (its length is a u32 of bytes,
/// but virtio-queue counts entries in a u16).
const TABLE_ENTRIES: usize = 65_535;

/// Writes the largest indirect table whose entries (`len` bytes at `buf`)
/// are linked each to the next and the last back to the first, so a walk
/// never meets a descriptor without NEXT; `writable` picks the direction
/// of them all.
fn looping_table(h: &mut Harness, buf: u64, len: u32, writable: bool) -> RawRingDesc {
    let table = h.alloc(16 * TABLE_ENTRIES as u64, 16).unwrap();
    let entries: Vec<RawRingDesc> = (0..TABLE_ENTRIES)
        .map(|i| {
            let next = RawNext::Desc((i + 1) % TABLE_ENTRIES);
            if writable {
                RawRingDesc::writable(buf, len, next)
            } else {
                RawRingDesc::readable(buf, len, next)
            }
        })
        .collect();
    udc_harness::write_raw_indirect_table(h.memory().mmap(), table, &entries).unwrap();
    RawRingDesc::indirect(table, 16 * TABLE_ENTRIES as u32, RawNext::End)
}

/// The most descriptor walking a guest can ask of the xferq at once: a
/// queue's worth of heads, each naming the largest looping indirect table
/// of zero-length descriptors (a walk that reads no bytes, so spends
/// nothing of a hold's budget of guest-memory work).
/// Every one is refused, the control socket answers meanwhile and the
/// device lock is never held for long (before the walk was bounded per
/// hold: 1.3 s, with `status` waiting as long).
#[test]
fn a_queue_of_the_longest_indirect_loops_does_not_stall_the_device() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = configured_with_indirect(&d);
    let mut ctl = d.ctl();
    let p = Parts::new(&mut h);
    let head = looping_table(&mut h, p.hdr, 0, false);
    let n = usize::from(h.xferq().size());
    let chain = RawChain {
        ring: vec![head],
        ..RawChain::default()
    };
    h.set_auto_kick(false);
    for _ in 0..n {
        h.submit_raw_chain(&chain).unwrap();
    }
    let start = std::time::Instant::now();
    h.kick_xferq().unwrap();
    h.set_auto_kick(true);
    let mut slowest = Duration::ZERO;
    let mut refused = 0;
    while refused < n {
        let t = std::time::Instant::now();
        ctl.ok(json!({"op": "status"}));
        slowest = slowest.max(t.elapsed());
        for c in h.poll_completions().unwrap() {
            assert_eq!(c.used_len, 0, "a chain with nothing writable: {c:?}");
            refused += 1;
        }
        assert!(start.elapsed() < T, "{refused} of {n} chains came back");
    }
    let took = start.elapsed();
    let longest = longest_hold(&mut ctl);
    eprintln!("{n} looping tables of {TABLE_ENTRIES} in {took:?}; slowest status {slowest:?}; longest lock hold {longest:?}");
    assert!(
        longest < Duration::from_millis(250),
        "the device lock was held for {longest:?}"
    );
    assert!(slowest < Duration::from_millis(250), "status took {slowest:?}");
    still_serving(&mut h, &mut ctl, "a queue of the longest indirect loops");
}

/// The same on the eventq: a queue's worth of event buffers, each the
/// largest looping indirect table of writable descriptors. The device walks
/// at most 64 descriptors of an eventq chain, refuses them all when an
/// event comes, and the next good buffer gets the event.
#[test]
fn a_queue_of_looping_event_buffers_does_not_stall_the_device() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = configured_with_indirect(&d);
    let mut ctl = d.ctl();
    let mut toggle = Toggle { suspended: false };
    h.set_event_repost(false);
    while h.posted_event_buffers() > 0 {
        let ty = toggle.next(&mut ctl);
        assert_eq!(u16::from(h.next_event(T).unwrap().expect("an event").type_), ty);
    }
    let buf = h.alloc(16, 16).unwrap();
    h.memory().fill(buf, 16, 0xee).unwrap();
    let head = looping_table(&mut h, buf, 16, true);
    let n = usize::from(h.eventq().size()) - 1;
    let chain = RawChain {
        ring: vec![head],
        ..RawChain::default()
    };
    for _ in 0..n {
        h.post_raw_event_chain(&chain).unwrap();
    }
    let start = std::time::Instant::now();
    let want = toggle.next(&mut ctl);
    let back = h.raw_event_returns(n, T).unwrap();
    let took = start.elapsed();
    assert_eq!(back.len(), n, "every looping buffer comes back");
    assert!(back.iter().all(|&(_, len)| len == 0), "a looping buffer was used");
    assert_eq!(
        h.memory().read(buf, 16).unwrap(),
        vec![0xee; 16],
        "an event was written into a loop"
    );
    let longest = longest_hold(&mut ctl);
    eprintln!("{n} looping event buffers of {TABLE_ENTRIES} in {took:?}; longest lock hold {longest:?}");
    assert!(
        longest < Duration::from_millis(250),
        "the device lock was held for {longest:?}"
    );
    h.set_event_repost(true);
    h.post_event_buffers(16).unwrap();
    assert_eq!(
        u16::from(h.next_event(T).unwrap().expect("the waiting event").type_),
        want
    );
    if toggle.suspended {
        let ty = toggle.next(&mut ctl);
        assert_eq!(u16::from(h.next_event(T).unwrap().expect("an event").type_), ty);
    }
    still_serving(&mut h, &mut ctl, "a queue of looping event buffers");
}

/// RESET_DEVICE while the device is still walking a queue's worth of the
/// longest looping tables: the drain stops with the reset, and no used
/// entry is written after it (the rings are the reset driver's, no longer
/// the device's).
#[test]
fn reset_device_stops_a_drain_in_progress() {
    let d = Daemon::start(&[]);
    let mut opts = HarnessOptions {
        extra_features: VIRTIO_RING_F_INDIRECT_DESC,
        ..HarnessOptions::default()
    };
    opts.protocol_features |= vhost::vhost_user::VhostUserProtocolFeatures::RESET_DEVICE;
    let mut h = d.harness_with(opts);
    let mut g = FakeGadget::new();
    g.connect_and_configure(&mut h, T).unwrap();
    let mut ctl = d.ctl();
    let p = Parts::new(&mut h);
    let head = looping_table(&mut h, p.hdr, 0, false);
    let chain = RawChain {
        ring: vec![head],
        ..RawChain::default()
    };
    h.set_auto_kick(false);
    let n = usize::from(h.xferq().size());
    for _ in 0..n {
        h.submit_raw_chain(&chain).unwrap();
    }
    h.kick_xferq().unwrap();
    h.set_auto_kick(true);
    // Some are refused, most not yet (a queue's worth takes about a second).
    let start = std::time::Instant::now();
    while h.poll_completions().unwrap().is_empty() {
        assert!(start.elapsed() < T, "the device took none of the chains");
    }
    h.reset_device().unwrap();
    let (_, _, used) = h.xferq().ring_addrs();
    let used_len = 4 + 8 * n + 2;
    let after_reset = h.memory().read(used, used_len).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let idx = |b: &[u8]| u16::from_le_bytes([b[2], b[3]]);
    let later = h.memory().read(used, used_len).unwrap();
    assert_eq!(
        idx(&later),
        idx(&after_reset),
        "used entries written after RESET_DEVICE"
    );
    assert!(later == after_reset, "the used ring changed after RESET_DEVICE");

    h.reinitialize().unwrap();
    let mut g = FakeGadget::new();
    g.connect_and_configure(&mut h, T).unwrap();
    still_serving(&mut h, &mut ctl, "a reset in the middle of a drain");
}
