// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Injection and race detectors carried out: the seeded plan of each
//! request, faults applied to the bus and the endpoint, IN checksums.

use super::*;

impl<T: Debug> Device<T> {
    /// Replaces the injection settings. Request numbers (for `nth:` and the
    /// log) start again from 1, and the log starts empty.
    pub fn set_injection(&mut self, cfg: InjectConfig) {
        self.settle_copies();
        for e in &mut self.eps {
            e.inj = EpInjector::new(&cfg, e.cap.addr);
        }
        self.set_rates(&cfg);
        if !cfg.is_empty() {
            info!("injection: {:?}", cfg.to_map());
        }
        self.inject = cfg;
        self.log = InjectLog::default();
    }

    /// Changes the injection settings while they run: request numbers, the
    /// generators, spent `next:N` triggers of unchanged keys and the log go
    /// on. A new seed starts afresh, as [`Device::set_injection`] does.
    pub fn update_injection(&mut self, cfg: InjectConfig) {
        self.settle_copies();
        if cfg.seed != self.inject.seed {
            return self.set_injection(cfg);
        }
        for e in &mut self.eps {
            let set = cfg.effective(e.cap.addr);
            match (&mut e.inj, set.is_empty()) {
                (_, true) => e.inj = None,
                (Some(inj), false) => inj.update(set),
                (None, false) => e.inj = EpInjector::new(&cfg, e.cap.addr),
            }
        }
        self.set_rates(&cfg);
        info!("injection: {:?}", cfg.to_map());
        self.inject = cfg;
    }

    /// The bandwidth caps of `cfg`. Their clocks and the pauses they (or a
    /// NAK, a chunk, a detector) set start afresh: a cap just lifted must
    /// not keep an endpoint waiting for what it charged.
    pub(super) fn set_rates(&mut self, cfg: &InjectConfig) {
        let now = self.now();
        for e in &mut self.eps {
            e.rate = cfg.endpoints.get(&e.cap.addr).and_then(|s| s.bandwidth);
            e.paced_until = now;
            e.paused_until = None;
        }
        self.bus_rate = cfg.global.bandwidth;
        self.bus_paced_until = now;
        for i in 0..self.eps.len() {
            self.pump(i);
        }
    }

    pub fn injection(&self) -> &InjectConfig {
        &self.inject
    }

    /// The injected-event log and the race reports.
    pub fn inject_log(&self) -> &InjectLog {
        &self.log
    }
    /// Decides what injection does to a request as it is queued and logs the
    /// decisions. An OUT buffer to poison gets its poison first, before any
    /// data can arrive, so a reader that does not wait sees the poison
    /// ([`Device::run_detectors`] writes it).
    pub(super) fn plan_injection(&mut self, i: usize, g: &mut GuestReq<T>) {
        let e = &mut self.eps[i];
        let (Some(inj), Some(en)) = (e.inj.as_mut(), e.enabled) else {
            return;
        };
        let ep = e.cap.addr;
        let mut plan = inj.plan(u64::from(g.req.length), u64::from(en.max_packet), ep_is_in(ep));
        let (n, tag) = (plan.index, g.req.tag);
        if g.req.length as usize > race::MAX_LENGTH
            && (plan.in_checksum.is_some() || plan.out_poison.is_some())
        {
            warn!(
                "{}: request #{n} (tag {tag:#x}) of {} bytes is over the race detectors' {} MiB: not checked",
                ep_name(ep),
                g.req.length,
                race::MAX_LENGTH >> 20
            );
            plan.in_checksum = None;
            plan.out_poison = None;
        }
        let mut note = |what: String| {
            debug!("{}: request #{n} (tag {tag:#x}): inject {what}", ep_name(ep));
            self.log.push(ep, n, tag, what);
        };
        if !plan.latency.is_zero() {
            note(format!("latency {}", udc_patterns::fmt_duration(plan.latency)));
        }
        if let Some(d) = plan.nak {
            note(format!("nak {}", udc_patterns::fmt_duration(d)));
        }
        if plan.hold {
            note("hold".into());
        }
        if plan.reorder {
            note("reorder".into());
        }
        if let Some(f) = plan.fault {
            note(format!("{} at {}", f.key(), plan.fault_at));
        }
        if let Some(d) = plan.in_checksum {
            note(format!("in_checksum {}", udc_patterns::fmt_duration(d)));
        }
        if let Some(d) = plan.out_poison {
            note(format!("out_poison {}", udc_patterns::fmt_duration(d)));
            g.poison = Some(race::Pass::new(race::PassKind::Poison, g.req.length as usize));
        }
        g.plan = Some(plan);
    }
    /// Ends the front request of endpoint `i` (and the host's transfer) the
    /// way the injected fault says.
    pub(super) fn apply_fault(&mut self, i: usize, fault: Fault) {
        let e = &mut self.eps[i];
        let ep = e.cap.addr;
        let g = e.guest.front().expect("the fault's request is at the front");
        info!(
            "{}: injected {} in request #{} (tag {:#x}) after {} of {} bytes",
            ep_name(ep),
            fault.key(),
            g.plan.as_ref().map_or(0, |p| p.index),
            g.req.tag,
            g.cursor.offset,
            g.req.length
        );
        let (guest, host) = match fault {
            Fault::Stall => (Status::Stall, UrbStatus::Stall),
            Fault::Babble => (Status::Overflow, UrbStatus::Overflow),
            // The host's short packet ends both its transfer and the request.
            Fault::Short => (Status::Ok, UrbStatus::Ok),
            Fault::Proto => (Status::Proto, UrbStatus::Proto),
            Fault::Io => (Status::DmaFault, UrbStatus::Proto),
            Fault::Reset => {
                // The host resets the bus: everything queued ends, and the
                // host (its thread sees a detached bus) enumerates again.
                self.end_session(Status::Shutdown);
                return;
            }
            Fault::Disconnect => {
                let after = e
                    .inj
                    .as_ref()
                    .map_or(Duration::from_millis(100), |j| j.reconnect_after());
                self.set_host_attached(false);
                self.reconnect_at = Some(self.now() + after);
                return;
            }
        };
        let g = e.guest.pop_front().expect("front exists");
        if let Some(u) = e.host.pop_front() {
            if host == UrbStatus::Ok {
                e.stats.host_completed += 1;
            } else {
                e.stats.host_errors += 1;
            }
            u.finish(host);
        }
        self.finish_guest(i, g, guest);
    }

    /// Goes on with endpoint `i`'s race-detector passes, in the order their
    /// requests will complete, as far as this hold's budget goes: the front
    /// request's hashes at DMA start, the poison of queued OUT requests,
    /// the second look at finished IN requests. What is left waits for the
    /// next hold (`detectors_due`, a tick at once). The callers pump and
    /// deliver afterwards.
    pub(super) fn run_detectors(&mut self, i: usize) {
        self.eps[i].detectors_due = None;
        // Stopped DMA: nothing touches guest memory; restarting runs them.
        let Some(mem) = self.dma_memory().cloned() else {
            return;
        };
        let ep = self.eps[i].cap.addr;
        let mut budget = self.budget;
        let mut left = false;
        for g in self.eps[i].guest.iter_mut() {
            for pass in [&mut g.hashing, &mut g.poison] {
                let Some(p) = pass.as_mut() else { continue };
                if budget.spent() {
                    left = true;
                    break;
                }
                match p.step(&*mem, &g.req.segments, &mut budget) {
                    Ok(false) => left = true,
                    Ok(true) => {
                        let p = pass.take().expect("checked above");
                        if p.kind() == race::PassKind::Hash {
                            g.snapshot = Some(p.into_hashes());
                        }
                    }
                    Err(err) => {
                        warn!(
                            "{}: request tag {:#x}: race detector: {err}: not checked",
                            ep_name(ep),
                            g.req.tag
                        );
                        *pass = None;
                    }
                }
            }
        }
        let mut checked = Vec::new();
        for (k, f) in self.eps[i].finished.iter_mut().enumerate() {
            let Some(c) = f.check.as_mut() else { continue };
            if budget.spent() {
                left = true;
                break;
            }
            match c.after.step(&*mem, &f.g.req.segments, &mut budget) {
                Ok(false) => left = true,
                Ok(true) => checked.push(k),
                Err(err) => {
                    warn!("{}: in_checksum: {err}", ep_name(f.g.req.ep));
                    f.check = None;
                    checked.push(k);
                }
            }
        }
        self.budget = budget;
        for k in checked {
            if let Some(c) = self.eps[i].finished[k].check.take() {
                self.report_in_race(i, k, &c.before, &c.after.into_hashes());
            }
            self.settle(i, k);
        }
        if left {
            self.eps[i].detectors_due = Some(self.now());
        }
    }

    /// IN race detector: the buffer's blocks at the end of the DMA (`after`)
    /// against when it began, for the completion at `finished[k]`.
    fn report_in_race(&mut self, i: usize, k: usize, before: &[u64], after: &[u64]) {
        let changed = race::changed_blocks(before, after);
        if changed.is_empty() {
            return;
        }
        let g = &self.eps[i].finished[k].g;
        let detail = format!(
            "the guest CPU changed {} of {} blocks ({} bytes each) of an IN buffer while the device was reading it",
            changed.len(),
            before.len(),
            race::BLOCK
        );
        warn!(
            "RACE {}: request tag {:#x}: {detail}; first at offset {:#x}",
            ep_name(g.req.ep),
            g.req.tag,
            changed[0]
        );
        let report = RaceReport {
            ep: ep_name(self.eps[i].cap.addr),
            request: g.plan.as_ref().map_or(0, |p| p.index),
            tag: g.req.tag,
            kind: "in_changed_during_dma",
            detail,
            changed_blocks: changed.into_iter().take(32).collect(),
        };
        self.log.race(report);
    }

    /// Releases a held completion; `status` replaces the request's own.
    /// Ok(false) when `ep` holds no completion with that handle.
    pub fn release_completion(
        &mut self,
        ep: u8,
        handle: u64,
        status: Option<Status>,
    ) -> Result<bool, DeviceError> {
        self.settle_copies();
        let i = self.ep_index(ep).ok_or(DeviceError::NoEndpoint(EpAddress(ep)))?;
        let now = self.now();
        let Some(f) = self.eps[i].finished.iter_mut().find(|f| f.handle == Some(handle)) else {
            return Ok(false);
        };
        f.handle = None;
        f.due = Some(now);
        if let Some(s) = status {
            f.status = s;
        }
        info!("{}: held completion {handle} released", ep_name(ep));
        self.deliver_finished(i, now);
        Ok(true)
    }
}
