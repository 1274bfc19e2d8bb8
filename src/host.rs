// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The USB host: resets the bus when the gadget pulls up, enumerates it, and
//! gives the control socket and the traffic engine blocking host-side calls
//! (control transfers, IN and OUT transfers) over the device model.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use serde::Serialize;

use crate::capture::{Capture, CaptureInfo, Transfer, XferType};
use crate::device::{BusState, Urb, UrbKind, UrbResult, UrbStatus};
use crate::enumerate::{self, ControlError, ControlPipe, EnumError, Enumerated};
use crate::udc::Udc;
use crate::usb::DescriptorPolicy;
use crate::usb::{SetupPacket, Speed};

/// Why the host could not enumerate the gadget.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the gadget has not pulled up (no UDC bound), or no host is attached")]
    NotPulledUp,
    #[error(transparent)]
    Enumeration(#[from] EnumError),
    #[error("a capture is already running, into {}", .0.display())]
    CaptureRunning(std::path::PathBuf),
    #[error("cannot create the capture {}: {source}", .path.display())]
    Capture {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the device is in use by {0}: the built-in host has stepped aside")]
    InUse(String),
    #[error("handing the device over: SET_ADDRESS failed ({0:?})")]
    Handover(UrbStatus),
}

/// The longest a control transfer may wait for the gadget: an hour, far
/// beyond any gadget's answer, yet a bound on how long ep0 stays busy.
pub const MAX_CONTROL_TIMEOUT_MS: u64 = 3_600_000;

/// How the host behaves; changeable at run time through the control socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostConfig {
    /// The host port's speed; the bus runs at the lower of this and the
    /// controller's maximum.
    pub speed: Speed,
    /// Reset and enumerate as soon as the gadget pulls up, as a real host
    /// does. Off: the bus stays in reset until asked over the control socket.
    pub auto_enumerate: bool,
    /// How long the host waits for each control transfer (USB 2.0 9.2.6.4
    /// allows 5 s).
    pub control_timeout: Duration,
    /// The address the host assigns.
    pub address: u8,
    /// How enumeration takes descriptors that break the rules.
    pub descriptors: DescriptorPolicy,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            speed: Speed::High,
            auto_enumerate: true,
            control_timeout: Duration::from_secs(5),
            address: 1,
            descriptors: DescriptorPolicy::Usbcore,
        }
    }
}

/// What the host knows of the bus, for the control socket.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostView {
    pub enumerated: Option<Enumerated>,
    pub last_error: Option<String>,
    /// Enumerations started (successful or not).
    pub enumerations: u64,
    /// The outside host that owns the device now (a USB/IP client), while
    /// the built-in host stands aside.
    pub owner: Option<String>,
    /// The descriptor defects the last enumeration met and took as usbcore
    /// would, kept when a later step failed.
    pub defects: Vec<String>,
}

pub struct Host {
    udc: Arc<Udc>,
    cfg: Mutex<HostConfig>,
    view: Mutex<HostView>,
    next_id: AtomicU64,
    stop: AtomicBool,
    /// The bus capture, while one runs.
    capture: Mutex<Option<Arc<Capture>>>,
    /// Held through an enumeration and through a hand-over: an import
    /// that comes while the built-in host enumerates waits for it to end,
    /// instead of resetting the bus under it.
    bus_turn: Mutex<()>,
}

impl Host {
    pub fn new(udc: Arc<Udc>, cfg: HostConfig) -> Arc<Self> {
        Arc::new(Host {
            udc,
            cfg: Mutex::new(cfg),
            view: Mutex::new(HostView::default()),
            next_id: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            capture: Mutex::new(None),
            bus_turn: Mutex::new(()),
        })
    }

    /// Starts capturing every transfer into a new file at `path` (usbmon's
    /// pcap format, src/capture.rs), data cut at `snaplen` bytes.
    pub fn start_capture(&self, path: &std::path::Path, snaplen: u32) -> Result<CaptureInfo, HostError> {
        let mut c = self.capture.lock().unwrap();
        if let Some(running) = c.as_ref() {
            return Err(HostError::CaptureRunning(running.info().path));
        }
        let cap = Capture::create(path, snaplen).map_err(|source| HostError::Capture {
            path: path.to_path_buf(),
            source,
        })?;
        info!("capture: the bus into {} (snap length {snaplen})", path.display());
        let info = cap.info();
        *c = Some(Arc::new(cap));
        Ok(info)
    }

    /// Stops the capture; what it wrote, if one ran. Transfers in flight
    /// still write their completions.
    pub fn stop_capture(&self) -> Option<CaptureInfo> {
        let info = self.capture.lock().unwrap().take().map(|c| c.info());
        if let Some(i) = &info {
            info!("capture: {} events in {}", i.events, i.path.display());
        }
        info
    }

    /// The running capture's figures.
    pub fn capture_info(&self) -> Option<CaptureInfo> {
        self.capture.lock().unwrap().as_ref().map(|c| c.info())
    }

    fn capture(&self) -> Option<Arc<Capture>> {
        self.capture.lock().unwrap().clone()
    }

    pub fn udc(&self) -> &Arc<Udc> {
        &self.udc
    }

    pub fn config(&self) -> HostConfig {
        self.cfg.lock().unwrap().clone()
    }

    pub fn set_config(&self, cfg: HostConfig) {
        *self.cfg.lock().unwrap() = cfg;
        self.udc.poke();
    }

    pub fn view(&self) -> HostView {
        self.view.lock().unwrap().clone()
    }

    /// Starts the host thread: it waits for the gadget's pull-up, then
    /// resets the bus and enumerates.
    pub fn spawn(self: &Arc<Self>) -> thread::JoinHandle<()> {
        let host = self.clone();
        thread::Builder::new()
            .name("usb-host".into())
            .spawn(move || host.run())
            .expect("spawning the host thread")
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.udc.poke();
    }

    fn run(&self) {
        while !self.stop.load(Ordering::SeqCst) {
            let auto = self.config().auto_enumerate && self.owner().is_none();
            let (g, want) = self
                .udc
                .wait_until(Duration::from_millis(200), |d| auto && d.wants_enumeration());
            drop(g);
            // `auto` was read before the wait: a control-socket request may
            // have turned it off since (and its poke woke us). Ask again.
            let want = want && self.config().auto_enumerate && self.owner().is_none();
            if want && !self.stop.load(Ordering::SeqCst) {
                if let Err(e) = self.reset_and_enumerate() {
                    error!("host: enumeration failed: {e}");
                }
            }
        }
    }

    /// The outside host that owns the device, if one does.
    pub fn owner(&self) -> Option<String> {
        self.view.lock().unwrap().owner.clone()
    }

    /// Refuses with [`HostError::InUse`] while an outside host owns the
    /// device: what the built-in host would send could overtake its
    /// transfers.
    pub fn check_not_owned(&self) -> Result<(), HostError> {
        match self.owner() {
            Some(o) => Err(HostError::InUse(o)),
            None => Ok(()),
        }
    }

    /// Hands the device to an outside host (`who`, a USB/IP client): the
    /// built-in host stops enumerating, and the bus is reset and the device
    /// addressed as a hub port and the client's host controller would
    /// (vhci_hcd answers SET_ADDRESS itself and never sends it). The client
    /// reads the descriptors and configures the device. The bus speed.
    pub fn hand_over(&self, who: &str) -> Result<Speed, HostError> {
        let _turn = self.bus_turn.lock().unwrap();
        {
            let mut v = self.view.lock().unwrap();
            if let Some(o) = &v.owner {
                return Err(HostError::InUse(o.clone()));
            }
            v.owner = Some(who.to_string());
        }
        let cfg = self.config();
        // Not in the match: the guard would live through it.
        let reset = self.udc.lock().bus_reset(cfg.speed);
        let result = match reset {
            None => Err(HostError::NotPulledUp),
            Some(speed) => {
                thread::sleep(Duration::from_millis(10));
                self.control(SetupPacket::set_address(cfg.address), Vec::new())
                    .map(|_| speed)
                    .map_err(HostError::Handover)
            }
        };
        match &result {
            Ok(speed) => info!(
                "host: device handed over to {who} at {speed}, address {}",
                cfg.address
            ),
            Err(_) => self.view.lock().unwrap().owner = None,
        }
        result
    }

    /// The outside host let go of the device: the built-in host takes it
    /// back, enumerating it again (a replug) when it enumerates on its own.
    pub fn take_back(&self) {
        let Some(who) = self.view.lock().unwrap().owner.take() else {
            return;
        };
        info!("host: {who} let go of the device");
        if self.config().auto_enumerate && !self.stop.load(Ordering::SeqCst) {
            if let Err(e) = self.reset_and_enumerate() {
                warn!("host: enumeration after {who} let go failed: {e}");
            }
        }
    }

    /// Resets the bus and enumerates the gadget, like plugging it in.
    pub fn reset_and_enumerate(&self) -> Result<Enumerated, HostError> {
        let _turn = self.bus_turn.lock().unwrap();
        self.enumerate_in_turn()
    }

    /// What the last enumeration found, enumerating first if none did; one
    /// under way is waited for, not started again (the device a USB/IP
    /// client lists).
    pub fn enumerated_or_enumerate(&self) -> Result<Enumerated, HostError> {
        let _turn = self.bus_turn.lock().unwrap();
        match self.view().enumerated {
            Some(e) => Ok(e),
            None => self.enumerate_in_turn(),
        }
    }

    /// Resets and enumerates, with the bus turn held.
    fn enumerate_in_turn(&self) -> Result<Enumerated, HostError> {
        self.check_not_owned()?;
        let cfg = self.config();
        let Some(speed) = self.udc.lock().bus_reset(cfg.speed) else {
            return Err(HostError::NotPulledUp);
        };
        // A host waits after reset before it talks to the device (USB 2.0
        // 7.1.7.3: at least 10 ms of reset recovery).
        thread::sleep(Duration::from_millis(10));
        // Counted as it starts: the device is configured before this
        // thread gets back here, and whoever sees it configured must
        // already see the new count.
        self.view.lock().unwrap().enumerations += 1;
        let mut pipe = HostPipe { host: self };
        let mut set_address = |a: u8| pipe_set_address(self, a);
        let mut defects = Vec::new();
        let result = enumerate::enumerate_noting_defects(
            &mut pipe,
            speed,
            cfg.address,
            cfg.descriptors,
            &mut set_address,
            &mut defects,
        );
        let mut view = self.view.lock().unwrap();
        view.defects = defects;
        match result {
            Ok(e) => {
                info!(
                    "host: enumerated {:04x}:{:04x} at {speed}, configuration {}",
                    e.device.id_vendor, e.device.id_product, e.active_configuration
                );
                view.enumerated = Some(e.clone());
                view.last_error = None;
                Ok(e)
            }
            Err(err) => {
                view.enumerated = None;
                view.last_error = Some(err.to_string());
                Err(err.into())
            }
        }
    }

    /// Sends a control transfer and waits for its end.
    pub fn control(&self, setup: SetupPacket, data_out: Vec<u8>) -> Result<Vec<u8>, UrbStatus> {
        let timeout = self.config().control_timeout;
        let (tx, rx) = channel();
        let Some(cap) = self.capture() else {
            self.udc.lock().start_control(setup, data_out, tx);
            return Self::control_result(&self.udc, &rx, timeout);
        };
        let t = Transfer {
            id: cap.next_id(),
            xfer_type: XferType::Control,
            ep: setup.request_type & 0x80,
            devnum: self.udc.lock().address(),
        };
        let out_len = data_out.len() as u32;
        cap.submitted(t, Some(setup.to_bytes()), u32::from(setup.length), &data_out);
        self.udc.lock().start_control(setup, data_out, tx);
        let r = Self::control_result(&self.udc, &rx, timeout);
        match &r {
            Ok(d) if t.ep != 0 => cap.completed(t, UrbStatus::Ok, d.len() as u32, d),
            Ok(_) => cap.completed(t, UrbStatus::Ok, out_len, &[]),
            Err(st) => cap.completed(t, *st, 0, &[]),
        }
        r
    }

    /// Waits for a control transfer's end, aborting it after `timeout`.
    fn control_result(
        udc: &Udc,
        rx: &Receiver<Result<Vec<u8>, UrbStatus>>,
        timeout: Duration,
    ) -> Result<Vec<u8>, UrbStatus> {
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                udc.lock().abort_control();
                // abort_control answers on the channel; the answer may also
                // have raced in just now.
                rx.recv_timeout(Duration::from_millis(100))
                    .unwrap_or(Err(UrbStatus::Timeout))
            }
            Err(RecvTimeoutError::Disconnected) => Err(UrbStatus::Shutdown),
        }
    }

    /// Queues a transfer on a non-control endpoint; the result arrives on the
    /// receiver.
    pub fn submit(&self, ep: u8, kind: UrbKind) -> (u64, Receiver<UrbResult>) {
        let (tx, rx) = channel();
        (self.submit_to(ep, kind, Vec::new(), tx), rx)
    }

    /// Queues a transfer whose result goes to `done` (a channel the caller
    /// shares between many transfers, told apart by [`UrbResult::id`]);
    /// the transfer's id. `buf`'s allocation is reused for IN data.
    pub fn submit_to(&self, ep: u8, kind: UrbKind, buf: Vec<u8>, done: Sender<UrbResult>) -> u64 {
        let (id, urb) = self.new_urb(ep, kind, buf, done);
        self.udc.lock_data().submit_urb(ep, urb);
        id
    }

    /// Queues several transfers on `ep` in one hold of the device lock (a
    /// stream refilling its queue after a wake-up), each reusing its
    /// buffer's allocation for IN data; each one's id and the channel its
    /// result comes on, in order.
    pub fn submit_many(&self, ep: u8, transfers: Vec<(UrbKind, Vec<u8>)>) -> Vec<(u64, Receiver<UrbResult>)> {
        let mut urbs = Vec::with_capacity(transfers.len());
        let mut out = Vec::with_capacity(transfers.len());
        for (kind, buf) in transfers {
            let (tx, rx) = channel();
            let (id, urb) = self.new_urb(ep, kind, buf, tx);
            urbs.push(urb);
            out.push((id, rx));
        }
        let mut udc = self.udc.lock_data();
        for urb in urbs {
            udc.submit_urb(ep, urb);
        }
        out
    }

    /// A transfer with a fresh id, captured if the bus is.
    fn new_urb(&self, ep: u8, kind: UrbKind, buf: Vec<u8>, done: Sender<UrbResult>) -> (u64, Urb) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut urb = Urb::new(id, kind, done).with_buffer(buf);
        if let Some(cap) = self.capture() {
            urb = self.capture_urb(cap, ep, urb);
        }
        (id, urb)
    }

    /// Writes a transfer's submission into the capture, and has its
    /// completion written when it ends.
    fn capture_urb(&self, cap: Arc<Capture>, ep: u8, urb: Urb) -> Urb {
        let t = {
            let udc = self.udc.lock_data();
            Transfer {
                id: cap.next_id(),
                // An endpoint that is not enabled fails the transfer at
                // once; it is captured as bulk, the common case.
                xfer_type: udc.ep_type(ep).map_or(XferType::Bulk, XferType::from_usb),
                ep,
                devnum: udc.address(),
            }
        };
        let (length, data): (usize, &[u8]) = match &urb.kind {
            UrbKind::In { len } => (*len, &[]),
            UrbKind::Out { data, .. } => (data.len(), data),
        };
        cap.submitted(t, None, length as u32, data);
        urb.on_finish(move |r| {
            let data: &[u8] = if ep & 0x80 != 0 { &r.data } else { &[] };
            cap.completed(t, r.status, r.actual as u32, data);
        })
    }

    /// A transfer that the host cancels if it has not completed in `timeout`.
    pub fn transfer(&self, ep: u8, kind: UrbKind, timeout: Duration) -> UrbResult {
        let start = Instant::now();
        let (id, rx) = self.submit(ep, kind);
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => {
                self.udc.lock().cancel_urb(ep, id);
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(mut r) if r.status == UrbStatus::Cancelled => {
                        r.status = UrbStatus::Timeout;
                        r
                    }
                    Ok(r) => r,
                    Err(_) => UrbResult {
                        id,
                        status: UrbStatus::Timeout,
                        data: Vec::new(),
                        actual: 0,
                        submitted: start,
                        completed: Instant::now(),
                    },
                }
            }
        }
    }

    /// Waits until the bus is configured (the gadget accepted
    /// SET_CONFIGURATION) or `timeout` passes.
    pub fn wait_configured(&self, timeout: Duration) -> bool {
        let (_g, ok) = self
            .udc
            .wait_until(timeout, |d| d.state() == BusState::Configured);
        ok
    }
}

struct HostPipe<'a> {
    host: &'a Host,
}

fn control_error(s: UrbStatus) -> ControlError {
    match s {
        UrbStatus::Stall => ControlError::Stall,
        UrbStatus::Timeout => ControlError::Timeout,
        UrbStatus::Shutdown => ControlError::Shutdown,
        other => ControlError::Other(format!("{other:?}")),
    }
}

fn pipe_set_address(host: &Host, a: u8) -> Result<(), ControlError> {
    host.control(SetupPacket::set_address(a), Vec::new())
        .map(|_| ())
        .map_err(control_error)
}

impl ControlPipe for HostPipe<'_> {
    fn control_in(&mut self, setup: SetupPacket) -> Result<Vec<u8>, ControlError> {
        self.host.control(setup, Vec::new()).map_err(control_error)
    }

    fn control_out(&mut self, setup: SetupPacket, data: &[u8]) -> Result<(), ControlError> {
        if let Err(s) = self.host.control(setup, data.to_vec()) {
            if s == UrbStatus::Timeout {
                warn!("host: {setup} timed out");
            }
            return Err(control_error(s));
        }
        Ok(())
    }
}
