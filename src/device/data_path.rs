// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The data path: guest requests and host URBs meet, data moves packet by
//! packet in bulk, completions are delivered in order and on time.

use super::*;

/// What one step of data movement did.
pub(super) struct Step {
    pub(super) bytes: usize,
    pub(super) urb_done: Option<UrbStatus>,
    pub(super) guest_done: Option<Status>,
    /// Why the DMA failed, when it did.
    pub(super) fault: Option<dma::DmaError>,
}

/// IN: the guest's buffer goes to the host, packet by packet.
pub(super) fn step_in<T, M: vm_memory::GuestMemory + ?Sized>(
    mem: &M,
    g: &mut GuestReq<T>,
    h: &mut Urb,
    mps: usize,
    limit: usize,
) -> Step {
    let UrbKind::In { len: cap } = h.kind else {
        unreachable!("IN endpoints only queue IN transfers")
    };
    if let Some(span) = span_in(g, h, mps, limit) {
        h.size_in_buffer();
        let (at, n) = (h.moved, span.n);
        if let Err(e) = dma::read_from_guest(mem, &g.req.segments, &mut g.cursor, &mut h.buf[at..at + n]) {
            return dma_fault(None, e);
        }
        h.moved += n;
        return span.step();
    }
    let glen = g.req.length as usize;
    let g_left = glen - g.cursor.offset as usize;
    let room = cap - h.moved;
    if g_left == 0 {
        // Only a zero-length packet remains to send: a zero-length request,
        // or the ZERO flag after a multiple of the packet size.
        return Step {
            bytes: 0,
            urb_done: Some(UrbStatus::Ok),
            guest_done: Some(Status::Ok),
            fault: None,
        };
    }
    if room == 0 {
        return Step {
            bytes: 0,
            urb_done: Some(UrbStatus::Ok),
            guest_done: None,
            fault: None,
        };
    }
    // The next packet is bigger than the host's room: babble. The host gets
    // what fits; the packet is gone from the device's side.
    let p = mps.min(g_left);
    h.size_in_buffer();
    let at = h.moved;
    if let Err(e) = dma::read_from_guest(mem, &g.req.segments, &mut g.cursor, &mut h.buf[at..at + room]) {
        return dma_fault(Some(UrbStatus::DmaFault), e);
    }
    let _ = g.cursor.skip(&g.req.segments, (p - room) as u64);
    h.moved += room;
    let finished = g.cursor.offset as usize == glen;
    Step {
        bytes: room,
        urb_done: Some(UrbStatus::Overflow),
        guest_done: finished.then_some(Status::Ok),
        fault: None,
    }
}

/// What a plain step moves and ends: `n` bytes between the guest's cursor
/// and the host transfer's offset, and whether that ends the transfer and
/// the request (each with status OK).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) n: usize,
    pub(super) urb_done: bool,
    pub(super) guest_done: bool,
}

impl Span {
    fn step(self) -> Step {
        Step {
            bytes: self.n,
            urb_done: self.urb_done.then_some(UrbStatus::Ok),
            guest_done: self.guest_done.then_some(Status::Ok),
            fault: None,
        }
    }
}

/// The plain IN step from `g` into `h`: a run of whole packets (or the
/// request's remainder) that fits, at most `limit` bytes. None where the
/// step is not plain: only a zero-length packet is left, the transfer is
/// full, or the next packet does not fit (babble).
pub(super) fn span_in<T>(g: &GuestReq<T>, h: &Urb, mps: usize, limit: usize) -> Option<Span> {
    let UrbKind::In { len: cap } = h.kind else {
        return None;
    };
    let glen = g.req.length as usize;
    let g_left = glen - g.cursor.offset as usize;
    let room = cap - h.moved;
    if g_left == 0 || room == 0 {
        return None;
    }
    let n = if g_left <= room { g_left } else { room / mps * mps };
    if n == 0 {
        return None;
    }
    let n = clamp_to_limit(n, limit, mps);
    let g_finished = g.cursor.offset as usize + n == glen;
    let short_end = g_finished && glen % mps != 0;
    let needs_zlp = g_finished && glen % mps == 0 && g.req.zero();
    let urb_full = h.moved + n == cap;
    Some(if needs_zlp {
        // The request stays at the front; the next step sends the ZLP, to
        // this transfer or, if it is full, to the next one.
        Span {
            n,
            urb_done: urb_full,
            guest_done: false,
        }
    } else {
        Span {
            n,
            urb_done: short_end || urb_full,
            guest_done: g_finished,
        }
    })
}

/// The plain OUT step from `h` into `g`, as [`span_in`]: None where only
/// a zero-length packet is left, the request is full, or the next packet
/// does not fit.
pub(super) fn span_out<T>(g: &GuestReq<T>, h: &Urb, mps: usize, limit: usize) -> Option<Span> {
    let UrbKind::Out { ref data, zlp } = h.kind else {
        return None;
    };
    let total = data.len();
    let h_left = total - h.moved;
    let glen = g.req.length as usize;
    let room = glen - g.cursor.offset as usize;
    if h_left == 0 || room == 0 {
        return None;
    }
    let n = if h_left <= room { h_left } else { room / mps * mps };
    if n == 0 {
        return None;
    }
    let n = clamp_to_limit(n, limit, mps);
    let h_finished = h.moved + n == total;
    let short_end = h_finished && total % mps != 0;
    let needs_zlp = h_finished && total % mps == 0 && zlp;
    let g_full = g.cursor.offset as usize + n == glen;
    Some(Span {
        n,
        // With a ZLP still to send, the transfer stays at the front and the
        // next step delivers it (to this request or, if full, the next).
        urb_done: h_finished && !needs_zlp,
        guest_done: short_end || g_full,
    })
}

/// OUT: the host's data goes into the guest's buffer, packet by packet.
pub(super) fn step_out<T, M: vm_memory::GuestMemory + ?Sized>(
    mem: &M,
    g: &mut GuestReq<T>,
    h: &mut Urb,
    mps: usize,
    limit: usize,
) -> Step {
    let span = span_out(g, h, mps, limit);
    let UrbKind::Out { ref data, zlp } = h.kind else {
        unreachable!("OUT endpoints only queue OUT transfers")
    };
    if let Some(span) = span {
        let (at, n) = (h.moved, span.n);
        if let Err(e) = dma::write_to_guest(mem, &g.req.segments, &mut g.cursor, &data[at..at + n]) {
            return dma_fault(None, e);
        }
        h.moved += n;
        return span.step();
    }
    let total = data.len();
    let h_left = total - h.moved;
    let room = g.req.length as usize - g.cursor.offset as usize;
    if h_left == 0 {
        // All data is out; what remains is a zero-length packet, which ends
        // the guest's request short.
        return Step {
            bytes: 0,
            urb_done: Some(UrbStatus::Ok),
            guest_done: Some(Status::Ok),
            fault: None,
        };
    }
    if room == 0 {
        return Step {
            bytes: 0,
            urb_done: None,
            guest_done: Some(Status::Ok),
            fault: None,
        };
    }
    // Babble: a packet larger than the room left in the buffer.
    let p = mps.min(h_left);
    let at = h.moved;
    if let Err(e) = dma::write_to_guest(mem, &g.req.segments, &mut g.cursor, &data[at..at + room]) {
        return dma_fault(None, e);
    }
    h.moved += p;
    let urb_finished = h.moved == total && !(total % mps == 0 && zlp);
    Step {
        bytes: room,
        urb_done: urb_finished.then_some(UrbStatus::Ok),
        guest_done: Some(Status::Overflow),
        fault: None,
    }
}

/// At most `limit` bytes (whole packets, at least one) of the `n` a step
/// could move.
pub(super) fn clamp_to_limit(n: usize, limit: usize, mps: usize) -> usize {
    if n <= limit {
        n
    } else {
        (limit / mps * mps).max(mps).min(n)
    }
}

/// The bandwidth clock after `bytes` more at `rate` bytes per second.
pub(super) fn pay(clock: Instant, now: Instant, rate: u64, bytes: usize) -> Instant {
    clock.max(now) + Duration::from_secs_f64(bytes as f64 / rate as f64)
}

pub(super) fn dma_fault(urb: Option<UrbStatus>, e: dma::DmaError) -> Step {
    Step {
        bytes: 0,
        urb_done: Some(urb.unwrap_or(UrbStatus::DmaFault)),
        guest_done: Some(Status::DmaFault),
        fault: Some(e),
    }
}

impl<T: Debug> Device<T> {
    /// Queues a parsed transfer request on its endpoint (section 5).
    pub fn queue_xfer(&mut self, token: T, req: XferRequest) {
        let mut g = GuestReq {
            token,
            req,
            cursor: Cursor::default(),
            held: None,
            plan: None,
            started: false,
            chunk: None,
            chunk_left: 0,
            poison: None,
            hashing: None,
            snapshot: None,
        };
        if ep_num(g.req.ep) == 0 {
            return self.queue_ep0(g);
        }
        let Some(i) = self.ep_index(g.req.ep) else {
            // parse_xfer checked this against the same config; keep the
            // promise of a status anyway.
            return self.complete_guest(None, g, Status::Invalid);
        };
        if self.eps[i].enabled.is_none() || self.state == BusState::Detached {
            crate::guest_warn!("{}: request on a disabled endpoint: SHUTDOWN", ep_name(g.req.ep));
            return self.complete_guest(Some(i), g, Status::Shutdown);
        }
        self.plan_injection(i, &mut g);
        self.eps[i].guest.push_back(g);
        self.run_detectors(i);
        self.pump(i);
    }

    /// Queues a host transfer on a non-control endpoint.
    pub fn submit_urb(&mut self, ep: u8, urb: Urb) {
        let Some(i) = self.ep_index(ep).filter(|_| ep_num(ep) != 0) else {
            warn!("host: transfer on {ep:#04x}, which the controller does not have");
            return urb.finish(UrbStatus::Shutdown);
        };
        match (&urb.kind, ep_is_in(ep)) {
            (UrbKind::In { .. }, true) | (UrbKind::Out { .. }, false) => {}
            _ => {
                warn!("host: transfer direction does not match {}", ep_name(ep));
                return urb.finish(UrbStatus::Shutdown);
            }
        }
        let e = &mut self.eps[i];
        if e.enabled.is_none() || self.state != BusState::Configured {
            debug!("host: {} is not enabled: transfer fails", ep_name(ep));
            e.stats.host_errors += 1;
            return urb.finish(UrbStatus::Shutdown);
        }
        if e.halted {
            e.stats.host_errors += 1;
            return urb.finish(UrbStatus::Stall);
        }
        e.host.push_back(urb);
        self.pump(i);
    }

    /// Cancels a host transfer; false if it already completed.
    pub fn cancel_urb(&mut self, ep: u8, id: u64) -> bool {
        self.settle_copies();
        let Some(i) = self.ep_index(ep) else { return false };
        let Some(pos) = self.eps[i].host.iter().position(|u| u.id == id) else {
            return false;
        };
        let u = self.eps[i].host.remove(pos).expect("position is valid");
        u.finish(UrbStatus::Cancelled);
        true
    }

    /// Holds the front request of `ep` for the host (zero-copy handoff): it
    /// does not complete until [`Device::release_held`]. None when the
    /// endpoint has no request queued, or its front is already held.
    pub fn hold_front(&mut self, ep: u8) -> Result<Option<HeldRequest>, DeviceError> {
        self.settle_copies();
        let i = self
            .ep_index(ep)
            .filter(|_| ep_num(ep) != 0)
            .ok_or(DeviceError::NoEndpoint(EpAddress(ep)))?;
        if self.eps[i].enabled.is_none() {
            return Err(DeviceError::NotEnabled(EpAddress(ep)));
        }
        self.next_hold += 1;
        let handle = self.next_hold;
        let Some(g) = self.eps[i].guest.front_mut() else {
            return Ok(None);
        };
        if g.held.is_some() {
            return Err(DeviceError::AlreadyHeld(EpAddress(ep)));
        }
        if g.cursor.offset != 0 {
            return Err(DeviceError::PartlyTransferred(EpAddress(ep)));
        }
        g.held = Some(handle);
        // The host owns the buffer now: poison written from here on would
        // land on its data, and hashes would race its writes. What was
        // written stays (a reader that does not wait still sees poison).
        let (poison, hashing) = (g.poison.take(), g.hashing.take());
        if poison.is_some() || hashing.is_some() {
            debug!(
                "{}: request tag {:#x} held: its race detectors stop",
                ep_name(ep),
                g.req.tag
            );
        }
        Ok(Some(HeldRequest {
            handle,
            ep,
            tag: g.req.tag,
            length: g.req.length,
            segments: g.req.segments.clone(),
        }))
    }

    /// Lets a held request go back to normal processing, uncompleted.
    pub fn unhold(&mut self, ep: u8, handle: u64) {
        self.settle_copies();
        if let Some(i) = self.ep_index(ep) {
            if let Some(g) = self.eps[i].guest.front_mut().filter(|g| g.held == Some(handle)) {
                g.held = None;
                self.pump(i);
            }
        }
    }

    /// The length of a held request.
    pub fn held_length(&self, ep: u8, handle: u64) -> Result<u32, DeviceError> {
        self.ep_index(ep)
            .and_then(|i| self.eps[i].guest.front())
            .filter(|g| g.held == Some(handle))
            .map(|g| g.req.length)
            .ok_or(DeviceError::NotHeld {
                ep: EpAddress(ep),
                handle,
            })
    }

    /// Completes a held request with `status`, `actual` bytes transferred.
    pub fn release_held(
        &mut self,
        ep: u8,
        handle: u64,
        status: Status,
        actual: u32,
    ) -> Result<(), DeviceError> {
        self.settle_copies();
        let i = self.ep_index(ep).ok_or(DeviceError::NoEndpoint(EpAddress(ep)))?;
        let front_held = self.eps[i].guest.front().and_then(|g| g.held);
        if front_held != Some(handle) {
            return Err(DeviceError::HeldGone {
                ep: EpAddress(ep),
                handle,
            });
        }
        let mut g = self.eps[i].guest.pop_front().expect("front exists");
        if actual > g.req.length {
            self.eps[i].guest.push_front(g);
            return Err(DeviceError::ActualOverLength { actual });
        }
        let _ = g.cursor.skip(&g.req.segments, u64::from(actual));
        self.eps[i].stats.bytes += u64::from(actual);
        // Behind any completion that waits (latency): FIFO.
        self.finish_guest(i, g, status);
        self.pump(i);
        Ok(())
    }

    /// Moves data between the front guest request and the front host
    /// transfer of endpoint `i` for as long as both exist, within what
    /// injection allows now (pauses, chunks, bandwidth, a fault's offset).
    pub(super) fn pump(&mut self, i: usize) {
        let Some(en) = self.eps[i].enabled else { return };
        if self.eps[i].halted || self.suspended || self.state != BusState::Configured {
            return;
        }
        if self.eps[i].guest.front().is_some_and(|g| g.held.is_some()) {
            return;
        }
        let now = self.now();
        if self.eps[i].paused_until.is_some_and(|t| t > now) {
            return;
        }
        self.eps[i].paused_until = None;
        let Some(mem) = self.dma_memory().cloned() else {
            return;
        };
        let mps = usize::from(en.max_packet);
        let is_in = ep_is_in(self.eps[i].cap.addr);
        let bus_rate = self.bus_rate;
        loop {
            let e = &self.eps[i];
            if e.guest.is_empty() || e.host.is_empty() {
                return;
            }
            // The bandwidth caps: nothing moves until what moved is paid for.
            let gate = self.eps[i]
                .rate
                .map(|_| self.eps[i].paced_until)
                .into_iter()
                .chain(bus_rate.map(|_| self.bus_paced_until))
                .max();
            if let Some(t) = gate.filter(|t| *t > now) {
                self.eps[i].paused_until = Some(t);
                return;
            }
            // What the data path may move in this hold of the lock; the rest
            // waits for the next one (a tick, at once).
            if self.budget.spent() {
                self.eps[i].paused_until = Some(now);
                return;
            }
            if self.eps[i].waits_for_copy() {
                // The front transfer's buffer, or the front request's
                // next step, waits for a copy to land.
                return;
            }
            if self.offlock_step(i, &mem, mps, is_in) {
                continue;
            }
            if !self.eps[i].landing.is_empty() {
                // Done in place only after the copies ahead of it land.
                return;
            }
            let e = &mut self.eps[i];
            let (Some(g), Some(h)) = (e.guest.front_mut(), e.host.front_mut()) else {
                return;
            };
            let mut limit = usize::try_from(self.budget.left()).unwrap_or(usize::MAX);
            if let Some(p) = &g.plan {
                if !g.started {
                    if g.poison.is_some() {
                        // Its poison is not all written yet (a budget ran
                        // out): no data before it is.
                        e.detectors_due.get_or_insert(now);
                        return;
                    }
                    g.started = true;
                    g.chunk = e.inj.as_ref().and_then(|j| j.set.chunk);
                    g.chunk_left = g.chunk.map_or(0, |c| c.bytes_for(mps as u64));
                    let mut wait = p.nak.unwrap_or_default();
                    if let Some(d) = p.in_checksum {
                        g.hashing = Some(race::Pass::new(race::PassKind::Hash, g.req.length as usize));
                        wait += d;
                    }
                    if let Some(d) = p.out_poison {
                        wait += d;
                    }
                    let hashing = g.hashing.is_some();
                    if !wait.is_zero() {
                        e.paused_until = Some(now + wait);
                    }
                    if hashing {
                        // The hashes are of the buffer as the DMA starts:
                        // taken now, as far as the budget goes.
                        self.run_detectors(i);
                    }
                    if !wait.is_zero() || self.eps[i].guest.front().is_some_and(|g| g.hashing.is_some()) {
                        return;
                    }
                    continue;
                }
                if g.hashing.is_some() {
                    // The hashes are still being taken (run_detectors pumps
                    // when they are).
                    return;
                }
                if let Some(f) = p.fault {
                    if g.cursor.offset >= p.fault_at {
                        self.apply_fault(i, f);
                        continue;
                    }
                    limit = limit.min((p.fault_at - g.cursor.offset) as usize);
                }
                if g.chunk_left > 0 {
                    limit = limit.min(g.chunk_left as usize);
                }
            }
            // A cap moves a millisecond's worth at a time, so the rate is
            // smooth at the scale the guest can observe.
            for rate in e.rate.into_iter().chain(bus_rate) {
                limit = limit.min((rate as usize / 1000 / mps * mps).max(mps));
            }
            let step = if is_in {
                step_in(&*mem, g, h, mps, limit)
            } else {
                step_out(&*mem, g, h, mps, limit)
            };
            e.stats.bytes += step.bytes as u64;
            self.budget.take(step.bytes as u64);
            let mut pause = None;
            if step.bytes > 0 {
                if let Some(rate) = e.rate {
                    e.paced_until = pay(e.paced_until, now, rate, step.bytes);
                }
                if let Some(rate) = bus_rate {
                    self.bus_paced_until = pay(self.bus_paced_until, now, rate, step.bytes);
                }
            }
            let e = &mut self.eps[i];
            if step.guest_done.is_none() {
                if let Some(g) = e.guest.front_mut().filter(|g| g.chunk_left > 0) {
                    g.chunk_left = g.chunk_left.saturating_sub(step.bytes as u64);
                    if let (0, Some(c)) = (g.chunk_left, g.chunk) {
                        g.chunk_left = c.bytes_for(mps as u64);
                        pause = Some(now + c.pause);
                    }
                }
            }
            if let Some(st) = step.urb_done {
                let u = e.host.pop_front().expect("front exists");
                if st == UrbStatus::Ok {
                    e.stats.host_completed += 1;
                } else {
                    e.stats.host_errors += 1;
                }
                u.finish(st);
            }
            if let Some(st) = step.guest_done {
                let g = self.eps[i].guest.pop_front().expect("front exists");
                if st == Status::DmaFault {
                    self.report_dma_fault(Some(i), g.req.tag, step.fault.as_ref());
                }
                self.finish_guest(i, g, st);
            }
            if let Some(t) = pause {
                self.eps[i].paused_until = Some(t);
                return;
            }
        }
    }

    /// A request's data is done: the IN race detector looks at its buffer
    /// again, then it completes now or, if injection says so, later (in
    /// FIFO order unless a reordering was injected).
    pub(super) fn finish_guest(&mut self, i: usize, mut g: GuestReq<T>, status: Status) {
        let check = g.snapshot.take().map(|before| InCheck {
            before,
            after: race::Pass::new(race::PassKind::Hash, g.req.length as usize),
        });
        let plain = g
            .plan
            .as_ref()
            .map_or(true, |p| p.latency.is_zero() && !p.hold && !p.reorder);
        if check.is_none() && plain && self.eps[i].finished.is_empty() {
            return self.complete_guest(Some(i), g, status);
        }
        let checking = check.is_some();
        self.eps[i].finished.push_back(Finished {
            g,
            status,
            due: None,
            handle: None,
            after_next: false,
            check,
        });
        if checking {
            // Settled when the check is done, as far as the budget goes now.
            self.run_detectors(i);
        } else {
            let last = self.eps[i].finished.len() - 1;
            self.settle(i, last);
        }
        self.deliver_finished(i, self.now());
    }

    /// The completion at `finished[k]` of endpoint `i` (its race check done)
    /// gets what injection decided: a time to complete after its latency,
    /// a hold, a reordering.
    pub(super) fn settle(&mut self, i: usize, k: usize) {
        let now = self.now();
        let f = &self.eps[i].finished[k];
        let (latency, hold, reorder) =
            f.g.plan
                .as_ref()
                .map_or((Duration::ZERO, false, false), |p| (p.latency, p.hold, p.reorder));
        let mut due = now + latency;
        if let Some(d) = k.checked_sub(1).and_then(|j| self.eps[i].finished[j].due) {
            // FIFO: never before the one ahead of it.
            due = due.max(d);
        }
        let handle = hold.then(|| {
            self.next_hold += 1;
            self.next_hold
        });
        let f = &mut self.eps[i].finished[k];
        if let Some(h) = handle {
            info!(
                "{}: completion of request tag {:#x} held (release handle {h})",
                ep_name(f.g.req.ep),
                f.g.req.tag
            );
        }
        f.due = (!hold).then_some(due);
        f.handle = handle;
        f.after_next = reorder;
    }

    /// Delivers the waiting completions of endpoint `i` that are due.
    pub(super) fn deliver_finished(&mut self, i: usize, now: Instant) {
        loop {
            let e = &mut self.eps[i];
            let Some(front) = e.finished.front() else { return };
            let Some(due) = front.due.filter(|d| *d <= now) else {
                return;
            };
            let front_tag = front.g.req.tag;
            if front.after_next {
                match e.finished.get(1) {
                    Some(next) if next.handle.is_none() => {
                        if !matches!(next.due, Some(d) if d <= now) {
                            return;
                        }
                        // The deliberate FIFO violation: the one behind first.
                        let second = e.finished.remove(1).expect("exists");
                        warn!(
                            "{}: injected reordering: tag {:#x} completes before tag {:#x}",
                            ep_name(e.cap.addr),
                            second.g.req.tag,
                            front_tag
                        );
                        if let Some(f) = e.finished.front_mut() {
                            f.after_next = false;
                        }
                        self.complete_guest(Some(i), second.g, second.status);
                        continue;
                    }
                    // Nothing behind it yet: wait a while for one.
                    None if now < due + REORDER_WAIT => return,
                    _ => {}
                }
            }
            let f = self.eps[i].finished.pop_front().expect("front exists");
            self.complete_guest(Some(i), f.g, f.status);
        }
    }

    /// When endpoint `i` next has something to do on its own.
    pub(super) fn ep_deadline(&self, i: usize) -> Option<Instant> {
        let e = &self.eps[i];
        let finished = e.finished.front().and_then(|f| {
            let due = f.due?;
            if !f.after_next {
                return Some(due);
            }
            match e.finished.get(1) {
                Some(n) if n.handle.is_none() => n.due.map(|d| d.max(due)),
                Some(_) => Some(due),
                None => Some(due + REORDER_WAIT),
            }
        });
        finished
            .into_iter()
            .chain(e.paused_until)
            .chain(e.detectors_due)
            .min()
    }

    /// The next time [`Device::tick`] has something to do, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        (0..self.eps.len())
            .filter_map(|i| self.ep_deadline(i))
            .chain(self.reconnect_at)
            .min()
    }

    /// Does what injection scheduled for `now` or earlier: due completions,
    /// the end of pauses, the host's return after a disconnect.
    pub fn tick(&mut self, now: Instant) {
        self.clock = Some(now);
        self.tick_at(now);
        self.clock = None;
    }

    pub(super) fn tick_at(&mut self, now: Instant) {
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.reconnect_at = None;
            info!("bus: injected disconnect over: the host reconnects");
            self.set_host_attached(true);
        }
        for i in 0..self.eps.len() {
            let detectors = self.eps[i].detectors_due.is_some_and(|t| t <= now);
            if detectors {
                self.run_detectors(i);
            }
            self.deliver_finished(i, now);
            if detectors || self.eps[i].paused_until.is_some_and(|t| t <= now) {
                self.eps[i].paused_until = self.eps[i].paused_until.filter(|t| *t > now);
                self.pump(i);
            }
        }
    }
}
