// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Copies outside the device lock.
//!
//! A plain step of the data path (no injection on the request, no
//! bandwidth cap, no IOMMU, [`OFFLOCK_MIN`] to [`OFFLOCK_MAX`] bytes) is decided
//! under the lock as usual: the request's cursor and the transfer's offset
//! move on, and whatever the step ends leaves its queue. Only the copy is
//! left for later: a [`CopyJob`] that the thread which made it runs once it
//! has let the lock go (see `crate::udc`). Meanwhile the next pair of
//! request and transfer can be decided and copied by another thread, so
//! two copies run at once and the lock is held for bookkeeping only.
//!
//! What a copy ends lands when the copy is done, in the order the steps
//! were decided ([`Device::land_copies`]): the transfer gets its buffer
//! back and finishes, the request completes. Until then a transfer the
//! step did not end stays at the front of its queue with its buffer lent,
//! and nothing moves on that endpoint; while other copies are out, only
//! further plain steps do, so completions keep their order.
//!
//! Anything other than the data path (a command, a reset, the control
//! socket, a new memory table) first waits for every copy out and lands
//! it ([`Device::settle_copies`]), so it sees exactly the state the copies
//! made, as if they had been done under the lock. A copy cannot fail: its
//! span is checked against guest memory when it is decided, and the memory
//! cannot change while it is out.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::data_path::{span_in, span_out};
use super::*;

/// Steps shorter than this are copied under the lock: a copy outside it
/// costs a second hold to land, and another thread's wake-up to run beside
/// a first, which is more than a copy this short (64 KiB ran no faster
/// outside).
pub const OFFLOCK_MIN: usize = 128 << 10;

/// Copies out per endpoint at most: two CPUs' worth. It bounds what a
/// settle waits for, and a hold cannot decide a copy for every request
/// queued.
pub const OFFLOCK_PER_EP: usize = 2;

/// The most one copy moves. A thread that must settle the copies waits for
/// at most this much of someone else's copying (about 3 ms at the 5 GiB/s
/// of a large copy here), and a transfer longer than this is copied a
/// piece at a time, each after the last landed: its buffer is lent whole.
pub const OFFLOCK_MAX: usize = 16 << 20;

/// One copy decided under the lock, to run without it.
pub struct CopyJob {
    seq: u64,
    ep: usize,
    is_in: bool,
    mem: GuestMem,
    segments: Vec<crate::request::Segment>,
    cursor: Cursor,
    n: usize,
    /// The host transfer's buffer (IN: filled at `at`; OUT: read at `at`).
    buf: Vec<u8>,
    at: usize,
    board: Arc<CopyBoard>,
}

impl std::fmt::Debug for CopyJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyJob")
            .field("seq", &self.seq)
            .field("ep", &self.ep)
            .field("n", &self.n)
            .finish()
    }
}

impl CopyJob {
    /// Copies, and posts the result for the device to land.
    pub fn run(self) {
        let CopyJob {
            seq,
            ep,
            is_in,
            mem,
            segments,
            mut cursor,
            n,
            mut buf,
            at,
            board,
        } = self;
        let result = if is_in {
            dma::read_from_guest(&*mem, &segments, &mut cursor, &mut buf[at..at + n])
        } else {
            dma::write_to_guest(&*mem, &segments, &mut cursor, &buf[at..at + n])
        };
        board.post(CopyDone { seq, ep, buf, result });
    }
}

/// A copy that is done.
#[derive(Debug)]
struct CopyDone {
    seq: u64,
    ep: usize,
    buf: Vec<u8>,
    result: Result<(), dma::DmaError>,
}

#[derive(Debug, Default)]
struct BoardState {
    /// Copies decided and let go with the lock, not yet started.
    queued: std::collections::VecDeque<CopyJob>,
    /// Copies done, not yet landed.
    done: Vec<CopyDone>,
}

/// Where copies wait to run and, done, to land. Shared by the device, the
/// threads that run copies and a helper thread, so a thread holding the
/// device lock can wait for copies that never need it.
#[derive(Debug, Default)]
pub struct CopyBoard {
    state: Mutex<BoardState>,
    posted: Condvar,
    queued: Condvar,
}

impl CopyBoard {
    fn post(&self, d: CopyDone) {
        self.state.lock().done.push(d);
        self.posted.notify_all();
    }

    /// Queues copies to run; with more than one, wakes a helper to run
    /// some while the caller runs the others.
    fn queue(&self, jobs: Vec<CopyJob>) {
        let n = jobs.len();
        self.state.lock().queued.extend(jobs);
        if n > 1 {
            self.queued.notify_one();
        }
    }

    /// Wakes a helper to run the queued copies.
    pub fn wake_helper(&self) {
        self.queued.notify_one();
    }

    /// Runs queued copies until none is left; how many it ran.
    pub fn run_queued(&self) -> usize {
        let mut ran = 0;
        loop {
            let Some(j) = self.state.lock().queued.pop_front() else {
                return ran;
            };
            j.run();
            ran += 1;
        }
    }

    /// Takes the queued copies without running them (tests run them in an
    /// order of their choosing).
    #[cfg(test)]
    pub(crate) fn take_queued_for_test(&self) -> Vec<CopyJob> {
        self.state.lock().queued.drain(..).collect()
    }

    /// Waits until a copy is queued, for a helper thread.
    pub fn wait_queued(&self) {
        let mut st = self.state.lock();
        while st.queued.is_empty() {
            self.queued.wait(&mut st);
        }
    }

    /// The copies done so far; with `wait_for`, first waits until that
    /// many are.
    fn take(&self, wait_for: Option<usize>) -> Vec<CopyDone> {
        let mut st = self.state.lock();
        if let Some(n) = wait_for {
            while st.done.len() < n {
                self.posted.wait(&mut st);
            }
        }
        std::mem::take(&mut st.done)
    }
}

/// Where a step's host transfer is while its copy is out.
#[derive(Debug)]
enum UrbPlace {
    /// The step ended it: here, to finish when the copy lands.
    Ended(Urb),
    /// Still at the front of its queue (this id), its buffer lent to the
    /// copy.
    Front(u64),
}

/// A step whose copy is out, in the order steps were decided.
#[derive(Debug)]
pub(super) struct Landing<T> {
    seq: u64,
    urb: UrbPlace,
    /// The request, when the step ended it.
    guest: Option<GuestReq<T>>,
    /// The copy's result and the buffer it had, once done.
    done: Option<(Vec<u8>, Result<(), dma::DmaError>)>,
}

/// The copies of a device: its board, the steps whose copies are out and
/// the jobs not yet taken by a thread.
#[derive(Debug, Default)]
pub(super) struct Offlock {
    board: Arc<CopyBoard>,
    next_seq: u64,
    /// Copies decided and not landed.
    out: usize,
    /// Copies decided in this hold, queued on the board when it ends.
    jobs: Vec<CopyJob>,
    /// Set while [`Device::settle_copies`] runs: what its landings let
    /// move is moved in place, so it leaves no copy out.
    paused: bool,
}

impl<T> Endpoint<T> {
    /// The front transfer or request waits for the last copy decided: its
    /// step did not end the transfer (whose buffer it has) or the request
    /// (whose next step must not run ahead of it: if the copy failed, the
    /// request it fails is the front one, and no later copy moved its
    /// data).
    pub(super) fn waits_for_copy(&self) -> bool {
        self.landing
            .back()
            .is_some_and(|l| matches!(l.urb, UrbPlace::Front(_)) || l.guest.is_none())
    }
}

impl<T: Debug> Device<T> {
    /// Lets plain copies run outside the device lock, for a transport
    /// whose every hold ends by running the copies of
    /// [`Device::release_copies`] without the lock and landing them
    /// ([`Device::land_copies`]). Unit tests of the model leave it off:
    /// every copy is then done in its step. The board is for helper
    /// threads ([`CopyBoard::wait_queued`]).
    pub fn enable_offlock(&mut self) -> Arc<CopyBoard> {
        self.offlock.get_or_insert_with(Offlock::default).board.clone()
    }

    /// Queues the copies decided in this hold on the board, for the holder
    /// to run ([`CopyBoard::run_queued`]) once it lets the lock go, with a
    /// helper if there are several. None when there are none.
    pub fn release_copies(&mut self) -> Option<Arc<CopyBoard>> {
        let o = self.offlock.as_mut()?;
        if o.jobs.is_empty() {
            return None;
        }
        o.board.queue(std::mem::take(&mut o.jobs));
        Some(o.board.clone())
    }

    /// Copies decided and not landed.
    #[cfg(test)]
    pub(super) fn copies_out(&self) -> usize {
        self.offlock.as_ref().map_or(0, |o| o.out)
    }

    /// Lands the copies that are done, in order: their transfers finish,
    /// their requests complete, and the data path goes on.
    pub fn land_copies(&mut self) {
        self.land(false);
    }

    /// Waits for every copy out and lands it: whatever runs next sees the
    /// state the copies made, as if they had been done under the lock.
    /// Copies nobody has started yet are run here. What the landings let
    /// move meanwhile is moved in place (budgeted, the rest left to the
    /// timer thread), so no copy is out when this returns.
    pub fn settle_copies(&mut self) {
        let Some(o) = self.offlock.as_mut() else { return };
        if o.paused {
            // Settling already: a landing's pump reached a settle (an
            // injected reset ends the session). Every copy is done by
            // then; what has not been applied yet is, on every endpoint.
            for i in 0..self.eps.len() {
                self.apply_landed(i);
            }
            return;
        }
        if o.out == 0 {
            return;
        }
        o.paused = true;
        for j in std::mem::take(&mut o.jobs) {
            j.run();
        }
        o.board.run_queued();
        self.land(true);
        let o = self.offlock.as_mut().expect("checked above");
        o.paused = false;
        debug_assert!(o.out == 0 && o.jobs.is_empty(), "a settle leaves no copy out");
    }

    fn land(&mut self, wait: bool) {
        let Some(o) = self.offlock.as_ref() else { return };
        if o.out == 0 {
            return;
        }
        let done = o.board.take(wait.then_some(o.out));
        let mut eps = Vec::new();
        for d in done {
            let o = self.offlock.as_mut().expect("checked above");
            o.out -= 1;
            let Some(l) = self.eps[d.ep].landing.iter_mut().find(|l| l.seq == d.seq) else {
                continue;
            };
            l.done = Some((d.buf, d.result));
            if !eps.contains(&d.ep) {
                eps.push(d.ep);
            }
        }
        for i in eps {
            self.apply_landed(i);
        }
    }

    /// Applies the landed steps at the front of endpoint `i`'s landings.
    fn apply_landed(&mut self, i: usize) {
        while self.eps[i].landing.front().is_some_and(|l| l.done.is_some()) {
            let l = self.eps[i].landing.pop_front().expect("front exists");
            let (buf, result) = l.done.expect("checked");
            let e = &mut self.eps[i];
            let mut urb = None;
            let mut lent = None;
            match l.urb {
                UrbPlace::Ended(u) => urb = Some(u),
                UrbPlace::Front(id) => lent = Some(id),
            }
            // A lent transfer is still the front one: whatever removes a
            // transfer settles the copies first.
            let front = lent.and_then(|id| e.host.front_mut().filter(|u| u.id == id));
            if lent.is_some() && front.is_none() {
                log::error!(
                    "{}: the transfer lent to a copy is not at the front: its buffer is dropped",
                    ep_name(e.cap.addr)
                );
            }
            if let Some(u) = urb.as_mut().or(front) {
                match &mut u.kind {
                    UrbKind::In { .. } => u.buf = buf,
                    UrbKind::Out { data, .. } => *data = buf,
                }
            }
            let mut guest = l.guest;
            let mut status = Status::Ok;
            if let Err(err) = result {
                // Checked when decided, on memory that cannot change while
                // the copy is out: not expected. Ended as the step under
                // the lock would have ended it.
                log::error!("{}: a copy outside the lock failed: {err}", ep_name(e.cap.addr));
                if urb.is_none() && lent.is_some() && e.host.front().map(|u| u.id) == lent {
                    urb = e.host.pop_front();
                }
                if guest.is_none() {
                    guest = e.guest.pop_front();
                }
                status = Status::DmaFault;
                let tag = guest.as_ref().map_or(0, |g| g.req.tag);
                self.report_dma_fault(Some(i), tag, Some(&err));
            }
            let e = &mut self.eps[i];
            if let Some(u) = urb {
                let st = if status == Status::Ok {
                    e.stats.host_completed += 1;
                    UrbStatus::Ok
                } else {
                    e.stats.host_errors += 1;
                    UrbStatus::DmaFault
                };
                u.finish(st);
            }
            if let Some(g) = guest {
                self.finish_guest(i, g, status);
            }
        }
        self.pump(i);
    }

    /// Decides the plain step of endpoint `i`'s front request and transfer
    /// and leaves its copy for later; false where the step is not one to
    /// copy outside the lock (it is then done in place).
    pub(super) fn offlock_step(&mut self, i: usize, mem: &GuestMem, mps: usize, is_in: bool) -> bool {
        let Some(o) = self.offlock.as_ref().filter(|o| !o.paused) else {
            return false;
        };
        let board = o.board.clone();
        if mem.get_iommu_enabled() || self.bus_rate.is_some() {
            // Translation may wait for the front end, and invalidations
            // must not race a copy; a bus cap paces every byte.
            return false;
        }
        let e = &mut self.eps[i];
        if e.rate.is_some() || e.waits_for_copy() || e.landing.len() >= OFFLOCK_PER_EP {
            return false;
        }
        let (Some(g), Some(h)) = (e.guest.front_mut(), e.host.front_mut()) else {
            return false;
        };
        if g.plan.is_some() || g.held.is_some() {
            return false;
        }
        let span = if is_in {
            span_in(g, h, mps, OFFLOCK_MAX)
        } else {
            span_out(g, h, mps, OFFLOCK_MAX)
        };
        let Some(span) = span.filter(|s| s.n >= OFFLOCK_MIN) else {
            return false;
        };
        // A span that is not all guest memory faults in place, as before.
        if dma::check_span(&**mem, &g.req.segments, &g.cursor, span.n, !is_in).is_err() {
            return false;
        }
        let cursor = g.cursor;
        g.cursor
            .skip(&g.req.segments, span.n as u64)
            .expect("checked: the span is inside the request");
        let segments = g.req.segments.clone();
        let at = h.moved;
        h.size_in_buffer();
        let buf = match &mut h.kind {
            UrbKind::In { .. } => std::mem::take(&mut h.buf),
            UrbKind::Out { data, .. } => std::mem::take(data),
        };
        h.moved += span.n;
        e.stats.bytes += span.n as u64;
        let urb = if span.urb_done {
            UrbPlace::Ended(e.host.pop_front().expect("front exists"))
        } else {
            UrbPlace::Front(h.id)
        };
        // A request the step did not end waits for this copy before its
        // next step (Endpoint::waits_for_copy).
        let guest = span
            .guest_done
            .then(|| e.guest.pop_front().expect("front exists"));
        let o = self.offlock.as_mut().expect("checked above");
        o.next_seq += 1;
        let seq = o.next_seq;
        o.out += 1;
        o.jobs.push(CopyJob {
            seq,
            ep: i,
            is_in,
            mem: mem.clone(),
            segments,
            cursor,
            n: span.n,
            buf,
            at,
            board,
        });
        self.eps[i].landing.push_back(Landing {
            seq,
            urb,
            guest,
            done: None,
        });
        true
    }
}
