// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Copies outside the device lock: decided in order, run in any order,
//! landed in order; nothing but plain steps leaves the lock, and anything
//! else sees the copies done.

use super::*;
use crate::device::offlock::{CopyJob, OFFLOCK_MAX, OFFLOCK_MIN};

const KIB256: usize = 256 << 10;

/// A configured SuperSpeed device whose plain copies leave the lock.
fn offlocked() -> Device<u32> {
    let mut d = configured(Speed::Super, 1024);
    d.enable_offlock();
    d
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The copies this hold decided, taken off the board as a holder that let
/// the lock go would run them.
fn jobs(d: &mut Device<u32>) -> Vec<CopyJob> {
    let Some(board) = d.release_copies() else {
        return Vec::new();
    };
    board.take_queued_for_test()
}

/// Runs the copies, as the threads that let the lock go would, and lands
/// them in the next hold.
fn run_and_land(d: &mut Device<u32>, js: Vec<CopyJob>) {
    for j in js {
        j.run();
    }
    d.land_copies();
}

#[test]
fn copies_land_in_the_order_they_were_decided_whichever_runs_first() {
    let mut d = offlocked();
    let (a, b) = (pattern(1, KIB256), pattern(2, KIB256));
    write(&d, 0x10_0000, &a);
    write(&d, 0x20_0000, &b);
    d.queue_xfer(1, xfer(0x81, 0, KIB256 as u32, 1, &[(0x10_0000, KIB256 as u32)]));
    d.queue_xfer(2, xfer(0x81, 0, KIB256 as u32, 2, &[(0x20_0000, KIB256 as u32)]));
    let rx1 = host_in(&mut d, 0x81, KIB256);
    let rx2 = host_in(&mut d, 0x81, KIB256);
    let mut js = jobs(&mut d);
    assert_eq!(js.len(), 2, "two plain steps, two copies");
    assert!(done(&mut d).is_empty(), "nothing completes before its copy");
    assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err());
    // The second copy finishes first: nothing lands before the first.
    js.pop().unwrap().run();
    d.land_copies();
    assert!(done(&mut d).is_empty(), "the second waits for the first");
    assert!(rx2.try_recv().is_err());
    js.pop().unwrap().run();
    d.land_copies();
    assert_eq!(
        done(&mut d),
        vec![(1, Status::Ok, KIB256 as u32), (2, Status::Ok, KIB256 as u32)]
    );
    assert_eq!(rx1.try_recv().unwrap().data, a);
    assert_eq!(rx2.try_recv().unwrap().data, b);
}

#[test]
fn out_data_reaches_the_guest_only_through_the_copy() {
    let mut d = offlocked();
    let data = pattern(7, KIB256);
    d.queue_xfer(1, xfer(0x02, 0, KIB256 as u32, 1, &[(0x10_0000, KIB256 as u32)]));
    let rx = host_out(&mut d, 0x02, data.clone(), false);
    let js = jobs(&mut d);
    assert_eq!(js.len(), 1);
    assert_eq!(read(&d, 0x10_0000, 16), vec![0; 16], "not copied yet");
    run_and_land(&mut d, js);
    assert_eq!(read(&d, 0x10_0000, KIB256), data);
    let r = rx.try_recv().unwrap();
    assert_eq!((r.status, r.actual), (UrbStatus::Ok, KIB256));
    assert_eq!(r.data, data, "the host gets its buffer back");
    assert_eq!(done(&mut d), vec![(1, Status::Ok, KIB256 as u32)]);
}

#[test]
fn a_command_sees_the_copies_done() {
    let mut d = offlocked();
    let data = pattern(3, KIB256);
    write(&d, 0x10_0000, &data);
    d.queue_xfer(1, xfer(0x81, 0, KIB256 as u32, 1, &[(0x10_0000, KIB256 as u32)]));
    d.queue_xfer(2, xfer(0x81, 0, 4096, 2, &[(0x30_0000, 4096)]));
    let rx = host_in(&mut d, 0x81, KIB256);
    // The copy is decided and nobody ran it; the driver disables the
    // endpoint: the copy runs and lands first, as if done under the lock.
    let _ = d.release_copies();
    assert_eq!(d.command(Command::EpDisable { ep: 0x81 }), (Status::Ok, 0));
    assert_eq!(rx.try_recv().unwrap().data, data);
    assert_eq!(
        done(&mut d),
        vec![(1, Status::Ok, KIB256 as u32), (2, Status::Shutdown, 0)]
    );
}

#[test]
fn short_steps_and_injected_requests_are_copied_in_place() {
    let mut d = offlocked();
    let short = OFFLOCK_MIN - 1024;
    d.queue_xfer(1, xfer(0x81, 0, short as u32, 1, &[(0x10_0000, short as u32)]));
    let rx = host_in(&mut d, 0x81, short);
    assert!(jobs(&mut d).is_empty(), "a short step is copied in its step");
    assert_eq!(rx.try_recv().unwrap().actual, short);
    assert_eq!(done(&mut d), vec![(1, Status::Ok, short as u32)]);

    let mut cfg = InjectConfig::default();
    cfg.apply_assignment("latency=1ms").unwrap();
    d.set_injection(cfg);
    d.queue_xfer(2, xfer(0x81, 0, KIB256 as u32, 2, &[(0x10_0000, KIB256 as u32)]));
    let rx = host_in(&mut d, 0x81, KIB256);
    assert!(
        jobs(&mut d).is_empty(),
        "injection decides step by step, in place"
    );
    assert_eq!(rx.try_recv().unwrap().actual, KIB256);
}

/// One 512 KiB OUT transfer of `pattern(seed)` and two 256 KiB requests
/// for it (at 1 MiB and 2 MiB), queued: the transfer outlives the first
/// request's step.
fn one_out_transfer_over_two_requests(seed: u8) -> (Device<u32>, Vec<u8>, Receiver<UrbResult>) {
    let mut d = offlocked();
    let data = pattern(seed, 2 * KIB256);
    let rx = host_out(&mut d, 0x02, data.clone(), false);
    d.queue_xfer(1, xfer(0x02, 0, KIB256 as u32, 1, &[(0x10_0000, KIB256 as u32)]));
    d.queue_xfer(2, xfer(0x02, 0, KIB256 as u32, 2, &[(0x20_0000, KIB256 as u32)]));
    (d, data, rx)
}

#[test]
fn a_transfer_longer_than_its_request_is_lent_until_the_copy_lands() {
    let (mut d, data, rx) = one_out_transfer_over_two_requests(9);
    let js = jobs(&mut d);
    assert_eq!(js.len(), 1, "the transfer's buffer is out: the next step waits");
    run_and_land(&mut d, js);
    assert_eq!(done(&mut d), vec![(1, Status::Ok, KIB256 as u32)]);
    let js = jobs(&mut d);
    assert_eq!(js.len(), 1, "landed, the buffer goes to the next copy");
    run_and_land(&mut d, js);
    assert_eq!(done(&mut d), vec![(2, Status::Ok, KIB256 as u32)]);
    assert_eq!(read(&d, 0x10_0000, KIB256), data[..KIB256]);
    assert_eq!(read(&d, 0x20_0000, KIB256), data[KIB256..]);
    let r = rx.try_recv().unwrap();
    assert_eq!((r.status, r.actual), (UrbStatus::Ok, 2 * KIB256));
}

#[test]
fn a_span_outside_guest_memory_faults_in_place() {
    let mut d = offlocked();
    // The second half of the buffer is past the end of guest memory.
    let at = MEM - KIB256 as u64 / 2;
    d.queue_xfer(1, xfer(0x81, 0, KIB256 as u32, 1, &[(at, KIB256 as u32)]));
    let rx = host_in(&mut d, 0x81, KIB256);
    assert!(jobs(&mut d).is_empty(), "not a copy that could fail outside");
    assert_eq!(rx.try_recv().unwrap().status, UrbStatus::DmaFault);
    assert_eq!(done(&mut d), vec![(1, Status::DmaFault, 0)]);
}

#[test]
fn one_copy_moves_at_most_the_most_a_settle_waits_for() {
    let mut d = configured(Speed::Super, 1024);
    d.enable_offlock();
    let len = OFFLOCK_MAX + KIB256;
    let big = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 * len)]).unwrap();
    d.set_memory(std::sync::Arc::new(
        crate::iommu::DeviceIommu::default().memory(big, false),
    ));
    d.queue_xfer(1, xfer(0x81, 0, len as u32, 1, &[(0, len as u32)]));
    let rx = host_in(&mut d, 0x81, len);
    let js = jobs(&mut d);
    assert_eq!(js.len(), 1, "one piece at a time");
    run_and_land(&mut d, js);
    let js = jobs(&mut d);
    assert_eq!(js.len(), 1, "then the rest");
    run_and_land(&mut d, js);
    assert_eq!(rx.try_recv().unwrap().actual, len);
    assert_eq!(done(&mut d), vec![(1, Status::Ok, len as u32)]);
}

#[test]
fn a_settle_leaves_no_copy_out_even_when_a_landing_lets_the_next_step_go() {
    let (mut d, data, rx) = one_out_transfer_over_two_requests(4);
    // The first copy is decided (the transfer's buffer lent); nobody ran
    // it. Landing it lets the second step go: a settle does that one in
    // place, so the command after it finds nothing out.
    let _ = d.release_copies();
    d.settle_copies();
    assert!(d.release_copies().is_none(), "no copy decided by the settle");
    assert_eq!(d.copies_out(), 0);
    assert_eq!(
        done(&mut d),
        vec![(1, Status::Ok, KIB256 as u32), (2, Status::Ok, KIB256 as u32)]
    );
    assert_eq!(read(&d, 0x20_0000, KIB256), data[KIB256..]);
    let r = rx.try_recv().unwrap();
    assert_eq!((r.status, r.actual), (UrbStatus::Ok, 2 * KIB256));
    assert_eq!(r.data, data, "the transfer got its own buffer back");
}

#[test]
fn a_request_longer_than_its_transfer_has_one_copy_out_at_a_time() {
    let mut d = offlocked();
    let data = pattern(6, 2 * KIB256);
    write(&d, 0x10_0000, &data);
    d.queue_xfer(
        1,
        xfer(0x81, 0, 2 * KIB256 as u32, 1, &[(0x10_0000, 2 * KIB256 as u32)]),
    );
    let rx1 = host_in(&mut d, 0x81, KIB256);
    let rx2 = host_in(&mut d, 0x81, KIB256);
    let js = jobs(&mut d);
    assert_eq!(js.len(), 1, "the request's next step waits for this copy");
    run_and_land(&mut d, js);
    assert_eq!(rx1.try_recv().unwrap().data, data[..KIB256]);
    let js = jobs(&mut d);
    assert_eq!(js.len(), 1);
    run_and_land(&mut d, js);
    assert_eq!(rx2.try_recv().unwrap().data, data[KIB256..]);
    assert_eq!(done(&mut d), vec![(1, Status::Ok, 2 * KIB256 as u32)]);
}

#[test]
fn at_most_two_copies_are_out_on_an_endpoint() {
    let mut d = offlocked();
    let mut rxs = Vec::new();
    for t in 0..4u32 {
        let at = 0x10_0000 + u64::from(t) * KIB256 as u64;
        d.queue_xfer(
            t,
            xfer(0x81, 0, KIB256 as u32, u64::from(t), &[(at, KIB256 as u32)]),
        );
        rxs.push(host_in(&mut d, 0x81, KIB256));
    }
    let js = jobs(&mut d);
    assert_eq!(js.len(), crate::device::offlock::OFFLOCK_PER_EP);
    run_and_land(&mut d, js);
    let js = jobs(&mut d);
    assert_eq!(js.len(), 2, "the landings let the next two go");
    run_and_land(&mut d, js);
    assert_eq!(done(&mut d).len(), 4);
    assert!(rxs
        .iter()
        .all(|rx| rx.try_recv().unwrap().status == UrbStatus::Ok));
}

#[test]
fn a_device_reset_keeps_copies_outside_the_lock() {
    let mut d = offlocked();
    d.reset();
    assert!(d.offlock.is_some(), "the transport's board outlives the reset");
}
