// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Unit tests of the device model: packetisation, FIFO order, ep0, the bus.

use std::sync::mpsc::{channel, Receiver};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::request::Segment;
use crate::usb::{SetupPacket, Speed};

const MEM: u64 = 0x40_0000;

fn dev() -> Device<u32> {
    let mut d = Device::new(ControllerConfig::default());
    let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
    d.set_memory(std::sync::Arc::new(
        crate::iommu::DeviceIommu::default().memory(m, false),
    ));
    d
}

fn write(d: &Device<u32>, addr: u64, data: &[u8]) {
    d.memory().unwrap().write_slice(data, GuestAddress(addr)).unwrap();
}

fn read(d: &Device<u32>, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    d.memory()
        .unwrap()
        .read_slice(&mut v, GuestAddress(addr))
        .unwrap();
    v
}

fn xfer(ep: u8, flags: u8, length: u32, tag: u64, segs: &[(u64, u32)]) -> XferRequest {
    XferRequest {
        ep,
        flags,
        length,
        tag,
        segments: segs.iter().map(|&(addr, len)| Segment { addr, len }).collect(),
    }
}

fn done(d: &mut Device<u32>) -> Vec<(u32, Status, u32)> {
    d.take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::XferDone {
                token,
                status,
                actual,
            } => Some((token, status, actual)),
            Output::Event(_) => None,
        })
        .collect()
}

fn events(d: &mut Device<u32>) -> Vec<u16> {
    d.take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(u16::from(e.type_)),
            _ => None,
        })
        .collect()
}

/// Pull-up, reset at `speed`, address, and SET_CONFIGURATION answered by a
/// zero-length status request, with bulk ep1in/ep2out enabled.
fn configured(speed: Speed, mps: u16) -> Device<u32> {
    let mut d = dev();
    d.command(Command::Pullup(true));
    assert_eq!(d.bus_reset(speed), Some(speed));
    let (tx, rx) = channel();
    d.start_control(
        SetupPacket {
            request_type: 0,
            request: usb::REQ_SET_ADDRESS,
            value: 5,
            index: 0,
            length: 0,
        },
        vec![],
        tx,
    );
    assert_eq!(rx.try_recv().unwrap(), Ok(vec![]));
    for ep in [0x81, 0x02] {
        let e = EpEnable {
            ep,
            ep_type: USB_XFER_BULK,
            max_packet: mps,
            interval: 0,
            max_burst: 0,
            mult: 0,
        };
        assert_eq!(d.command(Command::EpEnable(e)), (Status::Ok, 0));
    }
    let (tx, rx) = channel();
    d.start_control(
        SetupPacket {
            request_type: 0,
            request: usb::REQ_SET_CONFIGURATION,
            value: 1,
            index: 0,
            length: 0,
        },
        vec![],
        tx,
    );
    d.queue_xfer(999, xfer(0, 0, 0, 1, &[]));
    assert_eq!(rx.try_recv().unwrap(), Ok(vec![]));
    assert_eq!(d.state(), BusState::Configured);
    d.take_outputs();
    d
}

fn host_in(d: &mut Device<u32>, ep: u8, len: usize) -> Receiver<UrbResult> {
    let (tx, rx) = channel();
    d.submit_urb(ep, Urb::new(0, UrbKind::In { len }, tx));
    rx
}

fn host_out(d: &mut Device<u32>, ep: u8, data: Vec<u8>, zlp: bool) -> Receiver<UrbResult> {
    let (tx, rx) = channel();
    d.submit_urb(ep, Urb::new(0, UrbKind::Out { data, zlp }, tx));
    rx
}

#[test]
fn in_short_packet_ends_host_transfer() {
    let mut d = configured(Speed::High, 512);
    let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    write(&d, 0x1000, &data);
    d.queue_xfer(1, xfer(0x81, 0, 1000, 1, &[(0x1000, 600), (0x3000, 400)]));
    write(&d, 0x3000, &data[600..]);
    let rx = host_in(&mut d, 0x81, 4096);
    let r = rx.try_recv().unwrap();
    assert_eq!(r.status, UrbStatus::Ok);
    assert_eq!(r.data, data);
    assert_eq!(done(&mut d), vec![(1, Status::Ok, 1000)]);
}

#[test]
fn in_multiple_of_packet_continues_into_next_request_unless_zero_flag() {
    let mut d = configured(Speed::High, 512);
    write(&d, 0x1000, &[1u8; 512]);
    write(&d, 0x2000, &[2u8; 10]);
    let rx = host_in(&mut d, 0x81, 4096);
    d.queue_xfer(1, xfer(0x81, 0, 512, 1, &[(0x1000, 512)]));
    assert!(
        rx.try_recv().is_err(),
        "no short packet yet: the host transfer stays open"
    );
    d.queue_xfer(2, xfer(0x81, 0, 10, 2, &[(0x2000, 10)]));
    let r = rx.try_recv().unwrap();
    assert_eq!(r.actual, 522);
    assert_eq!(done(&mut d), vec![(1, Status::Ok, 512), (2, Status::Ok, 10)]);

    // With the ZERO flag, a ZLP ends the host transfer after 512 bytes.
    let rx = host_in(&mut d, 0x81, 4096);
    d.queue_xfer(3, xfer(0x81, VIRTIO_UDC_XFER_F_ZERO, 512, 3, &[(0x1000, 512)]));
    let r = rx.try_recv().unwrap();
    assert_eq!((r.status, r.actual), (UrbStatus::Ok, 512));
    assert_eq!(done(&mut d), vec![(3, Status::Ok, 512)]);
}

#[test]
fn in_zlp_after_full_host_transfer_goes_to_the_next() {
    let mut d = configured(Speed::High, 512);
    let rx1 = host_in(&mut d, 0x81, 512);
    let rx2 = host_in(&mut d, 0x81, 512);
    d.queue_xfer(1, xfer(0x81, VIRTIO_UDC_XFER_F_ZERO, 512, 1, &[(0x1000, 512)]));
    assert_eq!(rx1.try_recv().unwrap().actual, 512);
    let r2 = rx2.try_recv().unwrap();
    assert_eq!((r2.status, r2.actual), (UrbStatus::Ok, 0));
    assert_eq!(done(&mut d), vec![(1, Status::Ok, 512)]);
}

#[test]
fn in_zero_length_request_sends_a_zlp() {
    let mut d = configured(Speed::Super, 1024);
    let rx = host_in(&mut d, 0x81, 1024);
    d.queue_xfer(7, xfer(0x81, 0, 0, 7, &[]));
    let r = rx.try_recv().unwrap();
    assert_eq!((r.status, r.actual), (UrbStatus::Ok, 0));
    assert_eq!(done(&mut d), vec![(7, Status::Ok, 0)]);
}

#[test]
fn in_babble_when_host_buffer_is_not_a_packet_multiple() {
    let mut d = configured(Speed::High, 512);
    let rx = host_in(&mut d, 0x81, 100);
    d.queue_xfer(1, xfer(0x81, 0, 512, 1, &[(0x1000, 512)]));
    let r = rx.try_recv().unwrap();
    assert_eq!((r.status, r.actual), (UrbStatus::Overflow, 100));
    assert_eq!(done(&mut d), vec![(1, Status::Ok, 512)]);
}

#[test]
fn out_fills_requests_in_fifo_order_and_short_packet_completes() {
    let mut d = configured(Speed::High, 512);
    d.queue_xfer(1, xfer(0x02, 0, 1024, 1, &[(0x1000, 1024)]));
    d.queue_xfer(2, xfer(0x02, 0, 1024, 2, &[(0x2000, 1024)]));
    let data: Vec<u8> = (0..1500u32).map(|i| (i * 3) as u8).collect();
    let rx = host_out(&mut d, 0x02, data.clone(), false);
    let r = rx.try_recv().unwrap();
    assert_eq!((r.status, r.actual), (UrbStatus::Ok, 1500));
    assert_eq!(done(&mut d), vec![(1, Status::Ok, 1024), (2, Status::Ok, 476)]);
    assert_eq!(read(&d, 0x1000, 1024), data[..1024]);
    assert_eq!(read(&d, 0x2000, 476), data[1024..]);
}

#[test]
fn out_zlp_ends_a_request_short() {
    let mut d = configured(Speed::High, 512);
    d.queue_xfer(1, xfer(0x02, 0, 4096, 1, &[(0x1000, 4096)]));
    let rx = host_out(&mut d, 0x02, vec![5u8; 1024], true);
    assert_eq!(rx.try_recv().unwrap().actual, 1024);
    assert_eq!(done(&mut d), vec![(1, Status::Ok, 1024)]);
    // Without the ZLP the request would stay open.
    d.queue_xfer(2, xfer(0x02, 0, 4096, 2, &[(0x1000, 4096)]));
    let rx = host_out(&mut d, 0x02, vec![5u8; 1024], false);
    assert_eq!(rx.try_recv().unwrap().actual, 1024);
    assert!(done(&mut d).is_empty());
}

#[test]
fn out_babble_overflows_the_guest_request() {
    let mut d = configured(Speed::High, 512);
    d.queue_xfer(1, xfer(0x02, 0, 100, 1, &[(0x1000, 100)]));
    let rx = host_out(&mut d, 0x02, vec![9u8; 512], false);
    assert_eq!(rx.try_recv().unwrap().status, UrbStatus::Ok);
    assert_eq!(done(&mut d), vec![(1, Status::Overflow, 100)]);
}

#[test]
fn cancel_and_disable_complete_with_their_statuses() {
    let mut d = configured(Speed::High, 512);
    d.queue_xfer(1, xfer(0x81, 0, 10, 11, &[(0x1000, 10)]));
    d.queue_xfer(2, xfer(0x81, 0, 10, 12, &[(0x1000, 10)]));
    assert_eq!(
        d.command(Command::XferCancel { ep: 0x81, tag: 12 }),
        (Status::Ok, 0)
    );
    assert_eq!(
        d.command(Command::XferCancel { ep: 0x81, tag: 12 }),
        (Status::NotFound, 0)
    );
    assert_eq!(done(&mut d), vec![(2, Status::Cancelled, 0)]);
    assert_eq!(d.command(Command::EpDisable { ep: 0x81 }), (Status::Ok, 0));
    assert_eq!(done(&mut d), vec![(1, Status::Shutdown, 0)]);
    d.queue_xfer(3, xfer(0x81, 0, 10, 13, &[(0x1000, 10)]));
    assert_eq!(done(&mut d), vec![(3, Status::Shutdown, 0)]);
}

#[test]
fn halt_stalls_the_host_and_busy_in_endpoint_refuses() {
    let mut d = configured(Speed::High, 512);
    assert_eq!(
        d.command(Command::EpSetHalt {
            ep: 0x02,
            halt: HaltRequest::Halt
        }),
        (Status::Ok, 0)
    );
    let rx = host_out(&mut d, 0x02, vec![1], false);
    assert_eq!(rx.try_recv().unwrap().status, UrbStatus::Stall);
    d.queue_xfer(1, xfer(0x81, 0, 10, 1, &[(0x1000, 10)]));
    assert_eq!(
        d.command(Command::EpSetHalt {
            ep: 0x81,
            halt: HaltRequest::Halt
        }),
        (Status::Busy, 0)
    );
    // The host's CLEAR_FEATURE does not clear a wedge.
    assert_eq!(
        d.command(Command::EpSetHalt {
            ep: 0x02,
            halt: HaltRequest::Wedge
        }),
        (Status::Ok, 0)
    );
    let (tx, rx) = channel();
    d.start_control(
        SetupPacket {
            request_type: 2,
            request: usb::REQ_CLEAR_FEATURE,
            value: 0,
            index: 0x02,
            length: 0,
        },
        vec![],
        tx,
    );
    assert_eq!(rx.try_recv().unwrap(), Ok(vec![]));
    let (tx, rx) = channel();
    d.start_control(
        SetupPacket {
            request_type: 0x82,
            request: usb::REQ_GET_STATUS,
            value: 0,
            index: 0x02,
            length: 2,
        },
        vec![],
        tx,
    );
    assert_eq!(rx.try_recv().unwrap(), Ok(vec![1, 0]));
}

#[test]
fn ep0_in_out_and_stall() {
    let mut d = configured(Speed::High, 512);
    // IN data stage, longer than wLength: the host gets wLength bytes.
    let (tx, rx) = channel();
    d.start_control(
        SetupPacket {
            request_type: 0x80,
            request: 6,
            value: 0x100,
            index: 0,
            length: 18,
        },
        vec![],
        tx,
    );
    assert_eq!(events(&mut d), vec![VIRTIO_UDC_EVT_SETUP]);
    write(&d, 0x1000, &[0xab; 20]);
    d.queue_xfer(1, xfer(0x80, 0, 20, 1, &[(0x1000, 20)]));
    assert_eq!(rx.try_recv().unwrap(), Ok(vec![0xab; 18]));
    // OUT data stage.
    let (tx, rx) = channel();
    d.start_control(
        SetupPacket {
            request_type: 0x40,
            request: 1,
            value: 0,
            index: 0,
            length: 4,
        },
        vec![1, 2, 3, 4],
        tx,
    );
    d.queue_xfer(2, xfer(0x00, 0, 4, 2, &[(0x2000, 4)]));
    assert_eq!(rx.try_recv().unwrap(), Ok(vec![]));
    assert_eq!(read(&d, 0x2000, 4), vec![1, 2, 3, 4]);
    // Wrong direction is refused, the transfer stays pending; then a stall.
    let (tx, rx) = channel();
    d.start_control(
        SetupPacket {
            request_type: 0xc0,
            request: 2,
            value: 0,
            index: 0,
            length: 4,
        },
        vec![],
        tx,
    );
    d.queue_xfer(3, xfer(0x00, 0, 4, 3, &[(0x2000, 4)]));
    assert_eq!(
        d.command(Command::EpSetHalt {
            ep: 0,
            halt: HaltRequest::Halt
        }),
        (Status::Ok, 0)
    );
    assert_eq!(rx.try_recv().unwrap(), Err(UrbStatus::Stall));
    let outs = done(&mut d);
    assert_eq!(
        outs,
        vec![(1, Status::Ok, 18), (2, Status::Ok, 4), (3, Status::Invalid, 0)]
    );
    // No control transfer pending.
    d.queue_xfer(4, xfer(0x80, 0, 0, 4, &[]));
    assert_eq!(done(&mut d), vec![(4, Status::Invalid, 0)]);
}

#[test]
fn bus_reset_and_disconnect_end_the_session() {
    let mut d = configured(Speed::Super, 1024);
    d.queue_xfer(1, xfer(0x81, 0, 10, 1, &[(0x1000, 10)]));
    assert_eq!(d.bus_reset(Speed::High), Some(Speed::High));
    let outs = d.take_outputs();
    assert!(matches!(
        outs[0],
        Output::XferDone {
            token: 1,
            status: Status::Shutdown,
            ..
        }
    ));
    assert!(
        matches!(&outs[1], Output::Event(e) if u16::from(e.type_) == VIRTIO_UDC_EVT_BUS_RESET && u32::from(e.value) == 3)
    );
    assert_eq!(d.max_packet(0x81), None, "endpoints are disabled by the reset");
    d.set_host_attached(false);
    assert_eq!(events(&mut d), vec![VIRTIO_UDC_EVT_DISCONNECT]);
    assert_eq!(d.state(), BusState::Detached);
}

#[test]
fn reset_speed_is_capped_by_the_controller() {
    let mut d = Device::<u32>::new(ControllerConfig {
        max_speed: Speed::High,
        ..Default::default()
    });
    d.command(Command::Pullup(true));
    assert_eq!(d.bus_reset(Speed::Super), Some(Speed::High));
}

#[test]
fn many_requests_complete_in_fifo_order_per_endpoint() {
    let mut d = configured(Speed::High, 512);
    for t in 0..50u32 {
        d.queue_xfer(t, xfer(0x81, 0, 100 + t, u64::from(t), &[(0x1000, 200)]));
        d.queue_xfer(
            1000 + t,
            xfer(0x02, 0, 512, u64::from(t), &[(0x8000 + u64::from(t) * 512, 512)]),
        );
    }
    let mut rxs = Vec::new();
    for t in 0..50u32 {
        rxs.push(host_in(&mut d, 0x81, 4096));
        rxs.push(host_out(&mut d, 0x02, vec![t as u8; 100], false));
    }
    let outs = done(&mut d);
    let ins: Vec<u32> = outs.iter().filter(|o| o.0 < 1000).map(|o| o.0).collect();
    let outs_: Vec<u32> = outs.iter().filter(|o| o.0 >= 1000).map(|o| o.0 - 1000).collect();
    assert_eq!(ins, (0..50).collect::<Vec<_>>());
    assert_eq!(outs_, (0..50).collect::<Vec<_>>());
    for rx in rxs {
        assert_eq!(rx.try_recv().unwrap().status, UrbStatus::Ok);
    }
}

#[test]
fn config_space_describes_the_controller() {
    let c = ControllerConfig::default().to_wire();
    assert_eq!(c.num_eps, 30);
    assert_eq!(u32::from(c.max_segments), MIN_SG_SEGMENTS);
    assert_eq!(
        u32::from(c.flags) & VIRTIO_UDC_CONFIG_F_SG,
        VIRTIO_UDC_CONFIG_F_SG
    );
    assert_eq!(c.eps[0].caps, VIRTIO_UDC_EP_CAP_CONTROL);
    let nosg = ControllerConfig {
        sg: false,
        ..Default::default()
    }
    .to_wire();
    assert_eq!(u32::from(nosg.max_segments), 1);
    assert_eq!(u32::from(nosg.flags) & VIRTIO_UDC_CONFIG_F_SG, 0);
}

// ---- delay and fault injection -------------------------------------------

fn injecting(assignments: &[&str]) -> Device<u32> {
    let mut d = configured(Speed::High, 512);
    let mut cfg = InjectConfig::default();
    for a in assignments {
        cfg.apply_assignment(a).unwrap();
    }
    d.set_injection(cfg);
    d
}

/// Runs the device's timers to the end, as the daemon's timer thread does
/// but without waiting; returns the last deadline.
fn run_timers(d: &mut Device<u32>) -> Option<Instant> {
    let mut last = None;
    for _ in 0..100_000 {
        let Some(t) = d.next_deadline() else { return last };
        d.tick(t);
        last = Some(t);
    }
    panic!("timers never settle");
}

fn tags_in_completion_order(d: &mut Device<u32>) -> Vec<u32> {
    done(d).into_iter().map(|(t, _, _)| t).collect()
}

#[test]
fn latency_delays_the_completion_not_the_data() {
    let mut d = injecting(&["latency=5ms"]);
    let start = Instant::now();
    d.queue_xfer(1, xfer(0x02, 0, 512, 1, &[(0x1000, 512)]));
    let urb = host_out(&mut d, 0x02, vec![0xab; 512], false);
    assert_eq!(urb.try_recv().unwrap().status, UrbStatus::Ok);
    assert_eq!(read(&d, 0x1000, 512), vec![0xab; 512], "the data is in place");
    assert!(done(&mut d).is_empty(), "the completion waits");
    let due = d.next_deadline().expect("a completion is scheduled");
    assert!(due >= start + Duration::from_millis(5));
    d.tick(due);
    assert_eq!(done(&mut d), [(1, Status::Ok, 512)]);
    assert_eq!(d.next_deadline(), None);
}

#[test]
fn random_latency_keeps_fifo_order() {
    let mut d = injecting(&["seed=3", "latency=0..10ms"]);
    for t in 1..=20u32 {
        d.queue_xfer(
            t,
            xfer(0x02, 0, 512, u64::from(t), &[(0x1000 * u64::from(t), 512)]),
        );
        let _ = host_out(&mut d, 0x02, vec![t as u8; 512], false);
    }
    run_timers(&mut d);
    assert_eq!(tags_in_completion_order(&mut d), (1..=20).collect::<Vec<_>>());
}

#[test]
fn reorder_completes_the_next_request_first() {
    let mut d = injecting(&["reorder=nth:1"]);
    for t in 1..=3u32 {
        d.queue_xfer(
            t,
            xfer(0x02, 0, 512, u64::from(t), &[(0x1000 * u64::from(t), 512)]),
        );
        let _ = host_out(&mut d, 0x02, vec![1; 512], false);
    }
    run_timers(&mut d);
    assert_eq!(tags_in_completion_order(&mut d), [2, 1, 3]);
    let ev: Vec<String> = d.inject_log().events.iter().map(|e| e.event.clone()).collect();
    assert_eq!(ev, ["reorder"]);
}

#[test]
fn a_lone_reordered_request_completes_after_a_while() {
    let mut d = injecting(&["reorder=always"]);
    let start = Instant::now();
    d.queue_xfer(1, xfer(0x02, 0, 512, 1, &[(0x1000, 512)]));
    let _ = host_out(&mut d, 0x02, vec![1; 512], false);
    let last = run_timers(&mut d).unwrap();
    assert_eq!(done(&mut d), [(1, Status::Ok, 512)]);
    assert!(last >= start + REORDER_WAIT);
}

#[test]
fn held_completion_waits_for_release_or_cancel() {
    let mut d = injecting(&["hold=nth:1,2"]);
    for t in 1..=3u32 {
        d.queue_xfer(
            t,
            xfer(0x81, 0, 512, u64::from(t), &[(0x1000 * u64::from(t), 512)]),
        );
        let _ = host_in(&mut d, 0x81, 512);
    }
    assert_eq!(
        run_timers(&mut d),
        None,
        "nothing to wait for: held until released"
    );
    assert!(done(&mut d).is_empty(), "3 waits behind the held 1 and 2 (FIFO)");
    let st = d.status();
    let held = &st
        .endpoints
        .iter()
        .find(|e| e.address == 0x81)
        .unwrap()
        .held_completions;
    assert_eq!(held.len(), 2);
    assert_eq!(
        d.command(Command::XferCancel { ep: 0x81, tag: 1 }),
        (Status::Ok, 0)
    );
    assert_eq!(done(&mut d), [(1, Status::Cancelled, 512)]);
    assert_eq!(d.release_completion(0x81, 9999, None), Ok(false));
    assert_eq!(d.release_completion(0x81, held[1], Some(Status::Proto)), Ok(true));
    assert_eq!(done(&mut d), [(2, Status::Proto, 512), (3, Status::Ok, 512)]);
}

#[test]
fn faults_end_the_request_where_they_were_placed() {
    let mut offsets = Vec::new();
    for (fault, guest, host) in [
        ("stall", Status::Stall, UrbStatus::Stall),
        ("babble", Status::Overflow, UrbStatus::Overflow),
        ("short", Status::Ok, UrbStatus::Ok),
        ("proto_error", Status::Proto, UrbStatus::Proto),
        ("io_error", Status::DmaFault, UrbStatus::Proto),
    ] {
        let mut d = injecting(&["seed=11", &format!("ep2out.{fault}=nth:1")]);
        d.queue_xfer(1, xfer(0x02, 0, 8192, 1, &[(0x1000, 8192)]));
        let urb = host_out(&mut d, 0x02, vec![0x5a; 8192], false);
        let at = d.inject_log().events[0].event.clone();
        let offset: u32 = at.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(offset < 8192 && offset % 512 == 0, "{fault}: {at}");
        assert_eq!(done(&mut d), [(1, guest, offset)], "{fault}");
        let r = urb.try_recv().unwrap();
        assert_eq!((r.status, r.actual), (host, offset as usize), "{fault}");
        // Only the bytes before the fault reached the buffer.
        let mem = read(&d, 0x1000, 8192);
        assert!(mem[..offset as usize].iter().all(|&b| b == 0x5a), "{fault}");
        assert!(mem[offset as usize..].iter().all(|&b| b == 0), "{fault}");
        offsets.push(offset);
        // The endpoint keeps working.
        d.queue_xfer(2, xfer(0x02, 0, 512, 2, &[(0x9000, 512)]));
        let _ = host_out(&mut d, 0x02, vec![1; 512], false);
        assert_eq!(done(&mut d), [(2, Status::Ok, 512)], "{fault}: the next request");
    }
    assert!(
        offsets.iter().any(|&o| o > 0),
        "some fault struck mid-request: {offsets:?}"
    );
}

#[test]
fn released_hold_waits_behind_a_delayed_completion() {
    // Request 1 gets a latency; then injection goes off and the host holds
    // request 2 (the control socket's hold) and releases it.
    let mut d = injecting(&["ep2out.latency=50ms"]);
    d.queue_xfer(1, xfer(0x02, 0, 512, 1, &[(0x1000, 512)]));
    let _ = host_out(&mut d, 0x02, vec![1; 512], false);
    d.set_injection(InjectConfig::default());
    d.queue_xfer(2, xfer(0x02, 0, 512, 2, &[(0x2000, 512)]));
    let h = d.hold_front(0x02).unwrap().expect("request 2 is held");
    d.release_held(0x02, h.handle, Status::Ok, 512).unwrap();
    assert!(
        done(&mut d).is_empty(),
        "request 2 waits behind request 1's latency"
    );
    run_timers(&mut d);
    assert_eq!(tags_in_completion_order(&mut d), [1, 2]);
}

#[test]
fn chunking_turned_off_mid_request_finishes_it() {
    let mut d = injecting(&["chunk=1K,5ms"]);
    d.queue_xfer(1, xfer(0x02, 0, 4096, 1, &[(0x1000, 4096)]));
    let _ = host_out(&mut d, 0x02, vec![7; 4096], false);
    assert!(done(&mut d).is_empty());
    let mut cfg = d.injection().clone();
    cfg.set("chunk", "off").unwrap();
    d.update_injection(cfg);
    run_timers(&mut d);
    assert_eq!(done(&mut d), [(1, Status::Ok, 4096)]);
    assert_eq!(read(&d, 0x1000, 4096), vec![7; 4096]);
}

#[test]
fn waiting_and_held_completions_end_once_when_the_endpoint_goes() {
    let mut d = injecting(&["ep1in.hold=nth:1", "ep1in.latency=1s"]);
    for t in 1..=3u32 {
        d.queue_xfer(
            t,
            xfer(0x81, 0, 512, u64::from(t), &[(0x1000 * u64::from(t), 512)]),
        );
        let _ = host_in(&mut d, 0x81, 512);
    }
    d.queue_xfer(4, xfer(0x81, 0, 512, 4, &[(0x5000, 512)]));
    assert!(done(&mut d).is_empty());
    assert_eq!(d.command(Command::EpDisable { ep: 0x81 }), (Status::Ok, 0));
    let out = done(&mut d);
    assert_eq!(
        out,
        [
            (1, Status::Shutdown, 512),
            (2, Status::Shutdown, 512),
            (3, Status::Shutdown, 512),
            (4, Status::Shutdown, 0)
        ]
    );
    assert_eq!(run_timers(&mut d), None, "nothing left to deliver");
    assert!(done(&mut d).is_empty());
}

#[test]
fn injected_reset_and_disconnect_end_the_session() {
    let mut d = injecting(&["ep1in.reset=nth:1"]);
    d.queue_xfer(1, xfer(0x81, 0, 4096, 1, &[(0x1000, 4096)]));
    d.queue_xfer(2, xfer(0x02, 0, 512, 2, &[(0x2000, 512)]));
    let _ = host_in(&mut d, 0x81, 4096);
    assert_eq!(d.state(), BusState::Detached);
    assert!(d.wants_enumeration(), "the host thread enumerates again");
    let out = done(&mut d);
    assert!(out.iter().any(|o| o.0 == 1 && o.1 == Status::Shutdown), "{out:?}");
    assert!(out.contains(&(2, Status::Shutdown, 0)), "{out:?}");

    let mut d = injecting(&["ep1in.disconnect=nth:1", "reconnect_after=20ms"]);
    d.queue_xfer(1, xfer(0x81, 0, 4096, 1, &[(0x1000, 4096)]));
    let _ = host_in(&mut d, 0x81, 4096);
    assert!(!d.host_attached());
    assert!(events(&mut d).contains(&VIRTIO_UDC_EVT_DISCONNECT));
    let t = d.next_deadline().unwrap();
    d.tick(t);
    assert!(d.host_attached(), "the host is back after reconnect_after");
    assert!(d.wants_enumeration());
}

#[test]
fn chunked_dma_writes_part_of_the_buffer_before_completion() {
    let mut d = injecting(&["chunk=1K,2ms"]);
    d.queue_xfer(1, xfer(0x02, 0, 4096, 1, &[(0x1000, 4096)]));
    let _ = host_out(&mut d, 0x02, vec![0x77; 4096], false);
    let mem = read(&d, 0x1000, 4096);
    assert!(mem[..1024].iter().all(|&b| b == 0x77) && mem[1024..].iter().all(|&b| b == 0));
    assert!(done(&mut d).is_empty());
    let t = d.next_deadline().unwrap();
    d.tick(t);
    assert!(read(&d, 0x1000, 2048).iter().all(|&b| b == 0x77));
    run_timers(&mut d);
    assert_eq!(done(&mut d), [(1, Status::Ok, 4096)]);
}

#[test]
fn bandwidth_cap_paces_the_data() {
    // 1 MB/s: 20000 bytes take 20 ms.
    let mut d = injecting(&["ep2out.bandwidth=1MB/s"]);
    let start = Instant::now();
    d.queue_xfer(1, xfer(0x02, 0, 20480, 1, &[(0x1000, 20480)]));
    let _ = host_out(&mut d, 0x02, vec![3; 20480], false);
    assert!(done(&mut d).is_empty());
    let last = run_timers(&mut d).unwrap();
    assert_eq!(done(&mut d), [(1, Status::Ok, 20480)]);
    let took = last - start;
    assert!(took >= Duration::from_millis(19), "20 KB at 1 MB/s took {took:?}");
}

#[test]
fn nak_holds_the_data_back_for_its_time() {
    let mut d = injecting(&["nak=nth:1", "nak_time=3ms"]);
    d.queue_xfer(1, xfer(0x02, 0, 512, 1, &[(0x1000, 512)]));
    let urb = host_out(&mut d, 0x02, vec![9; 512], false);
    assert!(urb.try_recv().is_err(), "the host's transfer is NAKed");
    assert_eq!(read(&d, 0x1000, 512), vec![0; 512]);
    run_timers(&mut d);
    assert_eq!(urb.try_recv().unwrap().status, UrbStatus::Ok);
    assert_eq!(done(&mut d), [(1, Status::Ok, 512)]);
}

#[test]
fn in_checksum_reports_a_cpu_write_during_dma() {
    let mut d = injecting(&["ep1in.in_checksum=5ms"]);
    write(&d, 0x1000, &[1; 16384]);
    d.queue_xfer(1, xfer(0x81, 0, 16384, 0x77, &[(0x1000, 16384)]));
    let urb = host_in(&mut d, 0x81, 16384);
    // The DMA started (checksum taken) and waits: the guest CPU writes now.
    write(&d, 0x1000 + 8192 + 100, &[2]);
    run_timers(&mut d);
    assert_eq!(done(&mut d), [(1, Status::Ok, 16384)]);
    let r = urb.try_recv().unwrap();
    assert_eq!(r.data[8192 + 100], 2, "the device read the changed byte");
    let races = &d.inject_log().races;
    assert_eq!(races.len(), 1);
    assert_eq!(races[0].tag, 0x77);
    assert_eq!(races[0].changed_blocks, [8192]);
    // A request nobody touches reports nothing.
    d.queue_xfer(2, xfer(0x81, 0, 4096, 2, &[(0x1000, 4096)]));
    let _ = host_in(&mut d, 0x81, 4096);
    run_timers(&mut d);
    assert_eq!(d.inject_log().races.len(), 1);
}

#[test]
fn out_poison_fills_the_buffer_and_writes_the_data_late() {
    let mut d = injecting(&["ep2out.out_poison=5ms"]);
    d.queue_xfer(1, xfer(0x02, 0, 4096, 1, &[(0x1000, 4096)]));
    assert!(read(&d, 0x1000, 4096).chunks(8).all(|c| c == race::POISON));
    let _ = host_out(&mut d, 0x02, vec![0x42; 4096], false);
    assert!(read(&d, 0x1000, 8).eq(&race::POISON), "the data comes late");
    run_timers(&mut d);
    assert_eq!(read(&d, 0x1000, 4096), vec![0x42; 4096]);
    assert_eq!(done(&mut d), [(1, Status::Ok, 4096)]);
}

/// Runs the timers as the daemon's timer thread does, each tick a hold of
/// the device lock with its own budget; returns how many holds it took.
fn run_metered(d: &mut Device<u32>) -> usize {
    for n in 0..100_000 {
        let Some(t) = d.next_deadline() else { return n };
        d.begin_hold();
        d.tick(t);
    }
    panic!("timers never settle");
}

/// 64 MiB of request over one 64 KiB region listed 1,024 times (segments
/// may overlap: docs/virtio-udc.md section 5), the guest's cheapest way to
/// ask for the most detector work.
fn overlapping_64mib() -> Vec<(u64, u32)> {
    vec![(0x10000, 0x10000); 1024]
}

#[test]
fn a_guest_sized_poison_is_written_a_budget_per_hold() {
    let mut d = injecting(&["ep2out.out_poison=1ms"]);
    d.begin_hold();
    d.queue_xfer(1, xfer(0x02, 0, 64 << 20, 1, &overlapping_64mib()));
    assert!(
        read(&d, 0x10000, 8).eq(&race::POISON),
        "the poison starts in the hold that queues the request"
    );
    let data: Vec<u8> = (0..64u32 << 20).map(|i| (i >> 16) as u8).collect();
    let urb = host_out(&mut d, 0x02, data, false);
    assert!(
        urb.try_recv().is_err(),
        "no data before all the poison is written"
    );
    let holds = run_metered(&mut d);
    // 64 MiB of poison and 64 MiB of data at 8 MiB a hold.
    assert!(holds >= 14, "{holds} holds");
    assert_eq!(urb.try_recv().unwrap().status, UrbStatus::Ok);
    assert_eq!(done(&mut d), [(1, Status::Ok, 64 << 20)]);
    assert_eq!(
        read(&d, 0x10000, 0x10000),
        vec![0xff; 0x10000],
        "the last 64 KiB written"
    );
}

#[test]
fn an_in_check_that_spans_holds_keeps_the_completion_and_sees_writes() {
    let mut d = injecting(&["ep1in.in_checksum=1ms"]);
    write(&d, 0x10000, &[7; 0x10000]);
    d.begin_hold();
    d.queue_xfer(1, xfer(0x81, 0, 64 << 20, 1, &overlapping_64mib()));
    let urb = host_in(&mut d, 0x81, 64 << 20);
    let r = loop {
        if let Ok(r) = urb.try_recv() {
            break r;
        }
        let t = d.next_deadline().expect("the transfer goes on");
        d.begin_hold();
        d.tick(t);
    };
    assert_eq!((r.status, r.data.len()), (UrbStatus::Ok, 64 << 20));
    assert!(r.data.iter().all(|&b| b == 7));
    assert!(
        done(&mut d).is_empty(),
        "the completion waits for the second look"
    );
    // The buffer is still the device's: a CPU write now is a race.
    write(&d, 0x10000 + 100, &[8]);
    run_metered(&mut d);
    assert_eq!(done(&mut d), [(1, Status::Ok, 64 << 20)]);
    let races = &d.inject_log().races;
    assert_eq!(races.len(), 1, "{races:?}");
    assert_eq!(races[0].tag, 1);
}

#[test]
fn same_seed_same_injected_events() {
    let settings = [
        "latency=0..1ms",
        "stall=10%",
        "reorder=5%",
        "ep2out.short=10%",
        "nak=5%",
        "nak_time=100us",
    ];
    let run = |seed: u64| {
        let mut d = injecting(&settings);
        let mut cfg = d.injection().clone();
        cfg.seed = seed;
        d.set_injection(cfg);
        for t in 1..=100u32 {
            let ep = if t % 2 == 0 { 0x81 } else { 0x02 };
            d.queue_xfer(
                t,
                xfer(ep, 0, 2048, u64::from(t), &[(0x1000 * u64::from(t), 2048)]),
            );
            if ep == 0x81 {
                let _ = host_in(&mut d, ep, 2048);
            } else {
                let _ = host_out(&mut d, ep, vec![1; 2048], false);
            }
            run_timers(&mut d);
        }
        let log = d.inject_log();
        (
            log.digest.clone(),
            log.events
                .iter()
                .map(|e| (e.ep.clone(), e.request, e.event.clone()))
                .collect::<Vec<_>>(),
        )
    };
    let a = run(1234);
    assert!(a.1.len() > 20, "enough events to compare: {}", a.1.len());
    assert_eq!(a, run(1234));
    assert_ne!(a.0, run(4321).0);
}

#[test]
fn injection_survives_a_device_reset() {
    let mut d = injecting(&["stall=always"]);
    d.reset();
    assert_eq!(d.injection().to_map()["stall"], "always");
    assert!(
        d.eps.iter().all(|e| e.inj.is_some()),
        "every endpoint injects again"
    );
}

/// A control transfer resumes a suspended bus first; the data that moves
/// then may meet an injected disconnect, and the control transfer must fail
/// at once rather than wait, unanswered, on a bus that is gone (found by
/// the device_ops fuzz target).
#[test]
fn control_transfer_whose_resume_disconnects_fails_at_once() {
    let mut d = injecting(&["ep1in.disconnect=nth:1"]);
    d.queue_xfer(1, xfer(0x81, 0, 512, 1, &[(0x1000, 512)]));
    assert!(d.suspend());
    let _urb = host_in(&mut d, 0x81, 512);
    let (tx, rx) = channel();
    let setup = SetupPacket {
        request_type: 0xc0,
        request: 1,
        value: 0,
        index: 0,
        length: 4,
    };
    d.start_control(setup, vec![], tx);
    assert_eq!(d.state(), BusState::Detached);
    assert_eq!(rx.try_recv(), Ok(Err(UrbStatus::Shutdown)));
    assert!(
        !events(&mut d).contains(&VIRTIO_UDC_EVT_SETUP),
        "no SETUP after the disconnect"
    );
}

mod offlock;
