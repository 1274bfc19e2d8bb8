// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! ep0: control transfers between the host and the gadget, and the standard
//! requests the controller answers itself.

use super::*;

impl<T: Debug> Device<T> {
    pub(super) fn queue_ep0(&mut self, g: GuestReq<T>) {
        let Some(ctl) = self.control.take() else {
            crate::guest_warn!("ep0: request with no control transfer pending: INVALID");
            return self.complete_guest(None, g, Status::Invalid);
        };
        let setup = ctl.setup;
        let wlen = usize::from(setup.length);
        let gin = ep_is_in(g.req.ep);
        let len = g.req.length as usize;
        if wlen == 0 {
            if len != 0 {
                crate::guest_warn!("ep0: {len}-byte request for {setup}, which has no data stage: INVALID");
                self.control = Some(ctl);
                return self.complete_guest(None, g, Status::Invalid);
            }
            self.finish_control(setup, ctl.done, Ok(Vec::new()));
            return self.complete_guest(None, g, Status::Ok);
        }
        if gin != setup.is_in() {
            crate::guest_warn!("ep0: request direction does not match {setup}: INVALID");
            self.control = Some(ctl);
            return self.complete_guest(None, g, Status::Invalid);
        }
        let Some(mem) = self.dma_memory().cloned() else {
            self.control = Some(ctl);
            return self.complete_guest(None, g, Status::DmaFault);
        };
        let mut g = g;
        if gin {
            let n = len.min(wlen);
            let mut data = vec![0u8; n];
            if let Err(e) = dma::read_from_guest(&*mem, &g.req.segments, &mut g.cursor, &mut data) {
                self.report_dma_fault(None, g.req.tag, Some(&e));
                self.finish_control(setup, ctl.done, Err(UrbStatus::DmaFault));
                return self.complete_guest(None, g, Status::DmaFault);
            }
            self.ep0_stats.bytes += n as u64;
            self.finish_control(setup, ctl.done, Ok(data));
            self.complete_guest(None, g, Status::Ok);
        } else {
            let n = len.min(ctl.data_out.len());
            if let Err(e) = dma::write_to_guest(&*mem, &g.req.segments, &mut g.cursor, &ctl.data_out[..n]) {
                self.report_dma_fault(None, g.req.tag, Some(&e));
                self.finish_control(setup, ctl.done, Err(UrbStatus::DmaFault));
                return self.complete_guest(None, g, Status::DmaFault);
            }
            self.ep0_stats.bytes += n as u64;
            let status = if n < ctl.data_out.len() {
                Status::Overflow
            } else {
                Status::Ok
            };
            let host = if status == Status::Ok {
                Ok(Vec::new())
            } else {
                Err(UrbStatus::Overflow)
            };
            self.finish_control(setup, ctl.done, host);
            self.complete_guest(None, g, status);
        }
    }

    /// A control transfer's status stage completed: the device's own
    /// bookkeeping for the standard requests that change bus state.
    pub(super) fn finish_control(
        &mut self,
        setup: SetupPacket,
        done: Sender<ControlResult>,
        r: ControlResult,
    ) {
        if r.is_ok()
            && setup.request_type == 0x00
            && setup.request == usb::REQ_SET_CONFIGURATION
            && self.state != BusState::Detached
        {
            self.configuration = setup.value as u8;
            self.state = if self.configuration == 0 {
                BusState::Address
            } else {
                BusState::Configured
            };
            info!("bus: configuration {} set", self.configuration);
            for i in 0..self.eps.len() {
                self.pump(i);
            }
        }
        self.ep0_stats.host_completed += 1;
        let _ = done.send(r);
    }

    /// Starts a control transfer. The result arrives on `done`: at once for
    /// requests the controller answers itself, after the gadget's answer
    /// otherwise.
    pub fn start_control(&mut self, setup: SetupPacket, data_out: Vec<u8>, done: Sender<ControlResult>) {
        if self.suspended {
            // A host resumes the bus before it talks to the device.
            self.resume();
        }
        // After the resume: the data it moves may meet an injected reset
        // or disconnect, and a bus that is gone answers nothing.
        if self.state == BusState::Detached {
            let _ = done.send(Err(UrbStatus::Shutdown));
            return;
        }
        if let Some(old) = self.control.take() {
            warn!("ep0: {} overtaken by {setup}", old.setup);
            let _ = old.done.send(Err(UrbStatus::Cancelled));
        }
        while let Some(g) = self.ep0.pop_front() {
            self.complete_guest(None, g, Status::Cancelled);
        }
        if let Some(r) = self.standard_request(&setup) {
            debug!("ep0: {setup} answered by the controller: {r:?}");
            self.ep0_stats.host_completed += 1;
            let _ = done.send(r);
            return;
        }
        debug!("ep0: {setup} to the gadget");
        self.control = Some(ControlXfer {
            setup,
            data_out,
            done,
        });
        self.event(VIRTIO_UDC_EVT_SETUP, 0, 0, setup.to_bytes());
    }

    /// The host gives up on the pending control transfer (its timeout).
    pub fn abort_control(&mut self) {
        if let Some(ctl) = self.control.take() {
            warn!("ep0: {} timed out: the gadget did not answer", ctl.setup);
            let _ = ctl.done.send(Err(UrbStatus::Timeout));
        }
    }

    /// The host unlinks the pending control transfer (a USB/IP client's
    /// CMD_UNLINK): it ends as cancelled. False when none is pending.
    pub fn cancel_control(&mut self) -> bool {
        match self.control.take() {
            Some(ctl) => {
                info!("ep0: {} cancelled by the host", ctl.setup);
                let _ = ctl.done.send(Err(UrbStatus::Cancelled));
                true
            }
            None => false,
        }
    }

    /// The standard requests a UDC answers in hardware (spec section 9).
    pub(super) fn standard_request(&mut self, s: &SetupPacket) -> Option<ControlResult> {
        use usb::*;
        let ep_halt_target = |dev: &Self| -> Option<usize> {
            let i = dev.ep_index(s.index as u8)?;
            dev.eps[i].enabled.is_some().then_some(i)
        };
        match (s.request_type, s.request) {
            (0x00, REQ_SET_ADDRESS) => {
                if s.value > 127 || self.state == BusState::Configured {
                    return Some(Err(UrbStatus::Stall));
                }
                self.address = s.value as u8;
                self.state = if self.address == 0 {
                    BusState::Default
                } else {
                    BusState::Address
                };
                info!("bus: address {}", self.address);
                self.event(VIRTIO_UDC_EVT_ADDRESS, 0, u32::from(self.address), [0; 8]);
                Some(Ok(Vec::new()))
            }
            (0x80, REQ_GET_STATUS) => {
                let bits = u8::from(self.self_powered) | (u8::from(self.remote_wakeup_enabled) << 1);
                Some(Ok(vec![bits, 0]))
            }
            (0x82, REQ_GET_STATUS) => {
                if ep_num(s.index as u8) == 0 {
                    return Some(Ok(vec![0, 0]));
                }
                match ep_halt_target(self) {
                    Some(i) => Some(Ok(vec![u8::from(self.eps[i].halted), 0])),
                    None => Some(Err(UrbStatus::Stall)),
                }
            }
            (0x00, REQ_SET_FEATURE) | (0x00, REQ_CLEAR_FEATURE) => {
                let set = s.request == REQ_SET_FEATURE;
                match s.value {
                    FEATURE_DEVICE_REMOTE_WAKEUP => {
                        self.remote_wakeup_enabled = set;
                        Some(Ok(Vec::new()))
                    }
                    // U1/U2 enable and LTM: link power management that this
                    // bus does not model; accept them as a SuperSpeed device must.
                    48..=50 => Some(Ok(Vec::new())),
                    _ => Some(Err(UrbStatus::Stall)),
                }
            }
            (0x02, REQ_SET_FEATURE) | (0x02, REQ_CLEAR_FEATURE) if s.value == FEATURE_ENDPOINT_HALT => {
                if ep_num(s.index as u8) == 0 {
                    return Some(Ok(Vec::new()));
                }
                let Some(i) = ep_halt_target(self) else {
                    return Some(Err(UrbStatus::Stall));
                };
                let ep = self.eps[i].cap.addr;
                if s.request == REQ_SET_FEATURE {
                    // A transfer's copy may be out (resume() pumped).
                    self.settle_copies();
                    self.eps[i].halted = true;
                    while let Some(u) = self.eps[i].host.pop_front() {
                        u.finish(UrbStatus::Stall);
                    }
                    self.event(VIRTIO_UDC_EVT_EP_HALT, ep, 1, [0; 8]);
                } else if !self.eps[i].wedged {
                    self.eps[i].halted = false;
                    self.event(VIRTIO_UDC_EVT_EP_HALT, ep, 0, [0; 8]);
                    self.pump(i);
                }
                Some(Ok(Vec::new()))
            }
            (0x00, REQ_SET_SEL) | (0x00, REQ_SET_ISOCH_DELAY)
                if self.speed.is_some_and(|sp| sp >= Speed::Super) =>
            {
                Some(Ok(Vec::new()))
            }
            _ => None,
        }
    }
}
