// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Protocol tier: malformed requests from the guest get an error status, the
//! daemon touches nothing outside guest memory, and it keeps serving.

mod common;

use common::*;
use udc_harness::harness::ctrl_req;
use udc_harness::wire::*;
use udc_harness::{seg, xfer_bytes, xfer_req, BufferSpec, Harness, HarnessOptions, RawDesc};

/// A good IN transfer right after a bad one: the daemon still serves.
fn still_serving(h: &mut Harness, ctl: &mut Ctl, what: &str) {
    let b = h.buffer(300).unwrap();
    h.write_buffer(&b, &data(300, 77)).unwrap();
    let x = h.submit_buffer(0x81, 0, &b, 7777).unwrap();
    let (r, got) = ctl.read_in("ep1in", 4096);
    assert_eq!(r["status"], "ok", "after {what}: {r}");
    assert!(got == data(300, 77), "after {what}: data differs");
    assert!(h.wait_completion(x, T).unwrap().is_ok(), "after {what}");
    h.free_buffer(b).unwrap();
}

#[test]
fn malformed_transfers_get_their_status_and_the_daemon_goes_on() {
    let d = Daemon::start(&[]);
    let mut h = d.harness_with(HarnessOptions::default().with_hole(0x1000_0000, 0x1000_0000));
    let mut g = udc_harness::FakeGadget::new();
    g.connect_and_configure(&mut h, T).unwrap();
    let mut ctl = d.ctl();
    let max = u32::from(h.config().max_segments);
    let b = h.alloc_buffer(&BufferSpec::contiguous(4096)).unwrap();
    let good = b.segments[0].0;
    let hole = 0x1000_0000 + 0x1000;

    let mut unknown_op = xfer_req(0x81, 0, 16, 1, 1);
    unknown_op.opcode = 0x77.into();
    let mut reserved = xfer_req(0x81, 0, 16, 1, 1);
    reserved.flags = 0x80;
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "a truncated header",
            vec![1, 0, 0x81, 0, 16, 0, 0, 0, 1, 0],
            VIRTIO_UDC_S_INVALID,
        ),
        (
            "an unknown opcode",
            xfer_bytes(&unknown_op, &[seg(good, 16)]),
            VIRTIO_UDC_S_UNSUPPORTED,
        ),
        (
            "reserved flags",
            xfer_bytes(&reserved, &[seg(good, 16)]),
            VIRTIO_UDC_S_INVALID,
        ),
        (
            "too many segments",
            xfer_bytes(&xfer_req(0x81, 0, 16, max + 1, 1), &[]),
            VIRTIO_UDC_S_INVALID,
        ),
        (
            "a truncated segment list",
            xfer_bytes(&xfer_req(0x81, 0, 32, 4, 1), &[seg(good, 16), seg(good, 16)]),
            VIRTIO_UDC_S_INVALID,
        ),
        (
            "segments shorter than the length",
            xfer_bytes(&xfer_req(0x81, 0, 4096, 1, 1), &[seg(good, 16)]),
            VIRTIO_UDC_S_INVALID,
        ),
        (
            "no segments for data",
            xfer_bytes(&xfer_req(0x81, 0, 16, 0, 1), &[]),
            VIRTIO_UDC_S_INVALID,
        ),
        (
            "an address in the memory hole",
            xfer_bytes(&xfer_req(0x81, 0, 16, 1, 1), &[seg(hole, 16)]),
            VIRTIO_UDC_S_DMA_FAULT,
        ),
        (
            "an OUT address in the memory hole",
            xfer_bytes(&xfer_req(0x02, 0, 16, 1, 1), &[seg(hole, 16)]),
            VIRTIO_UDC_S_DMA_FAULT,
        ),
        (
            "a segment running off the end of memory",
            xfer_bytes(&xfer_req(0x81, 0, 16, 1, 1), &[seg(0x1000_0000 - 8, 16)]),
            VIRTIO_UDC_S_DMA_FAULT,
        ),
        (
            "an address that wraps around",
            xfer_bytes(&xfer_req(0x02, 0, 4096, 1, 1), &[seg(u64::MAX - 100, 4096)]),
            VIRTIO_UDC_S_DMA_FAULT,
        ),
        (
            "a far-away address",
            xfer_bytes(&xfer_req(0x02, 0, 16, 1, 1), &[seg(1 << 60, 16)]),
            VIRTIO_UDC_S_DMA_FAULT,
        ),
        (
            "an endpoint the controller lacks",
            xfer_bytes(&xfer_req(0x70, 0, 16, 1, 1), &[seg(good, 16)]),
            VIRTIO_UDC_S_INVALID,
        ),
        (
            "a disabled endpoint",
            xfer_bytes(&xfer_req(0x83, 0, 16, 1, 1), &[seg(good, 16)]),
            VIRTIO_UDC_S_SHUTDOWN,
        ),
    ];
    for (what, bytes, want) in cases {
        let x = h.submit_bytes(&bytes, 8).unwrap();
        let c = h.wait_completion(x, T).unwrap();
        assert_eq!(c.status, want, "{what}: {c:?}");
        assert_eq!(c.actual, 0, "{what}");
        assert_eq!(c.used_len, 8, "{what}");
        still_serving(&mut h, &mut ctl, what);
    }

    // The header split over three descriptors is still one request.
    let bytes = xfer_bytes(&xfer_req(0x81, 0, 16, 1, 5), &[seg(good, 16)]);
    h.write_buffer(&b, &[0xaa; 16]).unwrap();
    let x = h
        .submit_raw(&[
            RawDesc::Readable(bytes[..5].to_vec()),
            RawDesc::Readable(bytes[5..30].to_vec()),
            RawDesc::Readable(bytes[30..].to_vec()),
            RawDesc::Writable(8),
        ])
        .unwrap();
    assert_eq!(ctl.read_in("ep1in", 4096).1, vec![0xaa; 16]);
    assert!(h.wait_completion(x, T).unwrap().is_ok());

    // No room for the status: returned with used length 0, nothing written.
    for room in [0u32, 4] {
        let mut parts = vec![RawDesc::Readable(xfer_bytes(
            &xfer_req(0x81, 0, 16, 1, 6),
            &[seg(good, 16)],
        ))];
        if room > 0 {
            parts.push(RawDesc::Writable(room));
        }
        let x = h.submit_raw(&parts).unwrap();
        let c = h.wait_completion(x, T).unwrap();
        assert_eq!(c.used_len, 0, "status room {room}");
        assert_eq!(c.result(), Err(-libc::EIO));
        still_serving(&mut h, &mut ctl, "a chain without room for its status");
    }

    // A descriptor that points outside guest memory.
    let x = h
        .submit_raw(&[
            RawDesc::At {
                gpa: hole,
                len: 24,
                writable: false,
            },
            RawDesc::Writable(8),
        ])
        .unwrap();
    assert_eq!(h.wait_completion(x, T).unwrap().status, VIRTIO_UDC_S_DMA_FAULT);
    still_serving(&mut h, &mut ctl, "a descriptor outside guest memory");
    assert!(
        d.log_text().contains("is not inside guest memory"),
        "the log names DMA faults"
    );
}

#[test]
fn malformed_commands_get_their_status() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    let st = |r: &udc_harness::RawCompletion| u32::from(r.response().expect("a response").status);
    assert_eq!(st(&h.raw_command(&[1, 0, 0]).unwrap()), VIRTIO_UDC_S_INVALID);
    let mut bad = [0u8; 24];
    bad[0] = 0x99;
    assert_eq!(st(&h.raw_command(&bad).unwrap()), VIRTIO_UDC_S_UNSUPPORTED);
    assert_eq!(
        u32::from(h.ep_enable(0x00, USB_XFER_BULK, 512).unwrap().status),
        VIRTIO_UDC_S_INVALID
    );
    assert_eq!(
        u32::from(h.ep_enable(0x85, USB_XFER_BULK, 0).unwrap().status),
        VIRTIO_UDC_S_INVALID
    );
    assert_eq!(
        u32::from(h.ep_enable(0x85, USB_XFER_BULK, 2048).unwrap().status),
        VIRTIO_UDC_S_INVALID
    );
    assert_eq!(
        u32::from(h.ep_enable(0x81, USB_XFER_BULK, 512).unwrap().status),
        VIRTIO_UDC_S_INVALID,
        "already enabled"
    );
    assert_eq!(
        u32::from(h.ep_disable(0x85).unwrap().status),
        VIRTIO_UDC_S_OK,
        "not enabled: a no-op"
    );
    assert_eq!(
        u32::from(h.ep_disable(0x70).unwrap().status),
        VIRTIO_UDC_S_INVALID
    );
    assert_eq!(
        u32::from(h.ep_disable(0x00).unwrap().status),
        VIRTIO_UDC_S_INVALID
    );
    assert_eq!(
        u32::from(h.set_halt(0x81, 7).unwrap().status),
        VIRTIO_UDC_S_INVALID
    );
    assert_eq!(
        u32::from(h.cancel(0x81, 12345).unwrap().status),
        VIRTIO_UDC_S_NOT_FOUND
    );
    assert_eq!(
        u32::from(h.wakeup().unwrap().status),
        VIRTIO_UDC_S_INVALID,
        "not suspended"
    );
    still_serving(&mut h, &mut ctl, "malformed commands");
}

#[test]
fn halt_and_wedge_as_the_host_sees_them() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    assert_eq!(u32::from(h.set_halt(0x02, 1).unwrap().status), VIRTIO_UDC_S_OK);
    assert_eq!(ctl.write_out("ep2out", b"abc", false)["status"], "stall");
    // GET_STATUS(endpoint) shows the halt; the host's CLEAR_FEATURE clears it.
    let r = ctl.ok(
        serde_json::json!({"op": "control", "request_type": 0x82, "request": 0, "index": 2, "length": 2}),
    );
    assert_eq!(r["data"], "AQA=");
    ctl.ok(serde_json::json!({"op": "control", "request_type": 2, "request": 1, "value": 0, "index": 2}));
    let b = h.buffer(64).unwrap();
    let x = h.submit_buffer(0x02, 0, &b, 1).unwrap();
    assert_eq!(ctl.write_out("ep2out", b"abc", false)["status"], "ok");
    assert_eq!(h.wait_completion(x, T).unwrap().result(), Ok(3));
    // A wedged endpoint stays halted through CLEAR_FEATURE.
    assert_eq!(u32::from(h.set_halt(0x02, 2).unwrap().status), VIRTIO_UDC_S_OK);
    ctl.ok(serde_json::json!({"op": "control", "request_type": 2, "request": 1, "value": 0, "index": 2}));
    assert_eq!(ctl.write_out("ep2out", b"abc", false)["status"], "stall");
    // An IN endpoint with queued requests refuses to halt (-EAGAIN).
    let x = h.submit_buffer(0x81, 0, &b, 2).unwrap();
    // The daemon serves the xferq and the controlq in either order: the
    // request must be in the device before the halt asks about it.
    let deadline = std::time::Instant::now() + T;
    loop {
        let st = ctl.ok(serde_json::json!({"op": "status"}));
        let queued = st["device"]["endpoints"]
            .as_array()
            .and_then(|eps| eps.iter().find(|e| e["name"] == "ep1in"))
            .map_or(0, |e| e["guest_queued"].as_u64().unwrap_or(0));
        if queued == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ep1in never queued the request: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(u32::from(h.set_halt(0x81, 1).unwrap().status), VIRTIO_UDC_S_BUSY);
    ctl.read_in("ep1in", 64);
    assert!(h.wait_completion(x, T).unwrap().is_ok());
}

/// Chains in shapes the spec does not allow, and one it does through an
/// indirect table: each answered, and the daemon goes on.
#[test]
fn chains_of_the_wrong_shape_are_answered() {
    let d = Daemon::start(&[]);
    let (mut h, _g) = d.configured();
    let mut ctl = d.ctl();
    let b = h.alloc_buffer(&BufferSpec::contiguous(4096)).unwrap();
    let good = b.segments[0].0;
    let request = xfer_bytes(&xfer_req(0x81, 0, 16, 1, 3), &[seg(good, 16)]);

    // A readable descriptor after the writable part.
    let x = h
        .submit_raw(&[
            RawDesc::Readable(request.clone()),
            RawDesc::Writable(8),
            RawDesc::Readable(vec![0; 16]),
        ])
        .unwrap();
    let c = h.wait_completion(x, T).unwrap();
    assert_eq!(
        (c.status, c.used_len),
        (VIRTIO_UDC_S_INVALID, 8),
        "readable after writable: {c:?}"
    );
    still_serving(&mut h, &mut ctl, "readable after writable");

    // Nothing readable: no header at all.
    let x = h.submit_raw(&[RawDesc::Writable(64)]).unwrap();
    let c = h.wait_completion(x, T).unwrap();
    assert_eq!(
        (c.status, c.used_len),
        (VIRTIO_UDC_S_INVALID, 8),
        "all writable: {c:?}"
    );
    still_serving(&mut h, &mut ctl, "an all-writable chain");

    // Through an indirect table: a good request, served.
    h.write_buffer(&b, &[0x5a; 16]).unwrap();
    let x = h
        .submit_raw_indirect(&[RawDesc::Readable(request), RawDesc::Writable(8)])
        .unwrap();
    assert_eq!(ctl.read_in("ep1in", 4096).1, vec![0x5a; 16]);
    assert!(h.wait_completion(x, T).unwrap().is_ok());

    // A command without room for its response: returned with used length 0.
    let cmd = ctrl_req(VIRTIO_UDC_CMD_GET_FRAME);
    let r = h
        .raw_command_chain(
            &[RawDesc::Readable(vm_memory::ByteValued::as_slice(&cmd).to_vec())],
            T,
        )
        .unwrap();
    assert_eq!(r.used_len, 0, "a command without room for its response");
    let r = h
        .raw_command_chain(
            &[
                RawDesc::Readable(vm_memory::ByteValued::as_slice(&cmd).to_vec()),
                RawDesc::Writable(4),
            ],
            T,
        )
        .unwrap();
    assert_eq!(r.used_len, 0, "a command with 4 bytes for its 8-byte response");
    still_serving(&mut h, &mut ctl, "commands without room for their response");
}
