// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The virtio-udc device model: the controller's endpoints, the bus, and the
//! host's side of every pipe.
//!
//! It knows nothing of virtqueues. The driver's requests come in as parsed
//! values with an opaque token; what the driver must see (transfer
//! completions, events) goes out as an ordered list of [`Output`]s that the
//! transport applies in order. The host's side (enumeration, the control
//! socket, the traffic engine) submits [`Urb`]s and control transfers and
//! gets their results on channels, so it never holds the device lock while
//! waiting.
//!
//! Data moves packet by packet as USB defines it, but in bulk: a run of full
//! packets between one guest request and one host transfer is one copy.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde::Serialize;

use crate::dma::{self, Budget, Cursor};
use crate::inject::{EpInjector, Fault, InjectConfig, InjectLog, Plan, RaceReport};
use crate::race;
use crate::request::{Command, EpEnable, HaltRequest, XferRequest};
use crate::usb::{self, SetupPacket, Speed};
use crate::wire::*;
mod config;
mod data_path;
mod ep0;
mod faults;
pub mod offlock;
mod status;
mod urb;

pub use config::{ControllerConfig, EpCap, MAX_SEGMENTS};
pub use status::{ControllerStatus, DeviceStatus, EndpointStatus, EpStats};
pub use urb::{ControlResult, HeldRequest, Urb, UrbKind, UrbResult, UrbStatus};

/// Guest memory as the device reaches it (through the IOMMU when
/// ACCESS_PLATFORM is negotiated).
pub type GuestMem = std::sync::Arc<crate::iommu::DeviceMemory>;

/// Why the device refuses a request of the host side (the control socket's
/// zero-copy handoff) or a setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("the controller has no {0}")]
    NoEndpoint(EpAddress),
    #[error("{0} is not enabled")]
    NotEnabled(EpAddress),
    #[error("the front request of {0} is already held")]
    AlreadyHeld(EpAddress),
    #[error("the front request of {0} is partly transferred")]
    PartlyTransferred(EpAddress),
    #[error("{ep} holds no request with handle {handle}")]
    NotHeld { ep: EpAddress, handle: u64 },
    #[error("{ep} holds no request with handle {handle} (the guest cancelled it, or the bus was reset)")]
    HeldGone { ep: EpAddress, handle: u64 },
    #[error("actual {actual} is over the request's length")]
    ActualOverLength { actual: u32 },
}

/// What the transport must deliver to the driver, in this order.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<T> {
    XferDone { token: T, status: Status, actual: u32 },
    Event(VirtioUdcEvent),
}

#[derive(Debug)]
struct GuestReq<T> {
    token: T,
    req: XferRequest,
    cursor: Cursor,
    /// Set while the host holds this request (zero-copy handoff): it stays
    /// at the front of its endpoint and nothing behind it moves.
    held: Option<u64>,
    /// What injection decided for it; None when its endpoint injects nothing.
    plan: Option<Plan>,
    /// Set when its DMA started, so NAKs and detectors act once.
    started: bool,
    /// Chunked DMA: the chunking it started with (settings may change while
    /// it runs), and the bytes left in the current chunk.
    chunk: Option<crate::inject::Chunk>,
    chunk_left: u64,
    /// OUT race detector: the poison still to write. The request's DMA
    /// does not start before it is written.
    poison: Option<race::Pass>,
    /// IN race detector: the hashes at DMA start, while they are taken (no
    /// data moves meanwhile), then when taken.
    hashing: Option<race::Pass>,
    snapshot: Option<Vec<u64>>,
}

/// The IN race detector's second look, after the request's data moved and
/// before its completion: the buffer is the device's until then.
#[derive(Debug)]
struct InCheck {
    before: Vec<u64>,
    after: race::Pass,
}

/// A request whose data is done and whose completion waits: for its
/// latency, for the next request (reordering), or for a release (hold).
#[derive(Debug)]
struct Finished<T> {
    g: GuestReq<T>,
    status: Status,
    /// None while held.
    due: Option<Instant>,
    /// The handle the control socket releases a held completion with.
    handle: Option<u64>,
    /// Completes after the request behind it: a deliberate FIFO violation.
    after_next: bool,
    /// Set while the IN race detector looks at the buffer again; latency,
    /// hold and reordering apply after that.
    check: Option<InCheck>,
}

/// How long a reordered completion waits for a request behind it before it
/// completes in order after all.
const REORDER_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Endpoint<T> {
    cap: EpCap,
    enabled: Option<EpEnable>,
    halted: bool,
    wedged: bool,
    guest: VecDeque<GuestReq<T>>,
    host: VecDeque<Urb>,
    stats: EpStats,
    /// The last DMA fault's report line, as logged.
    last_dma_fault: Option<String>,
    inj: Option<EpInjector>,
    /// This endpoint's own bandwidth cap, bytes per second.
    rate: Option<u64>,
    /// The cap's clock: when the bytes moved so far are paid for.
    paced_until: Instant,
    /// No data moves before this: a NAK, a chunk pause, the bandwidth cap
    /// or a race detector's delay.
    paused_until: Option<Instant>,
    /// Completions that wait, in the order they will be delivered; they are
    /// ahead of everything in `guest`.
    finished: VecDeque<Finished<T>>,
    /// Race-detector passes wait for the device lock's next hold (the last
    /// one spent its budget): see [`Device::run_detectors`].
    detectors_due: Option<Instant>,
    /// Steps whose copies run outside the lock, in order (`offlock`).
    landing: VecDeque<offlock::Landing<T>>,
}

#[derive(Debug)]
struct ControlXfer {
    setup: SetupPacket,
    data_out: Vec<u8>,
    done: Sender<ControlResult>,
}

/// The bus as the host sees it: [`Device::bus_view`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusView {
    pullup: bool,
    host_attached: bool,
    state: BusState,
    suspended: bool,
    configuration: u8,
    session: u64,
}

/// Where the bus is, from the device's point of view (USB 2.0, 9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BusState {
    /// Pull-up off or no host: nobody sees the device.
    Detached,
    /// Reset done, address 0.
    Default,
    Address,
    Configured,
}

/// The device model. `T` is the transport's token for a transfer request.
pub struct Device<T> {
    cfg: ControllerConfig,
    mem: Option<GuestMem>,
    /// The transport stopped a queue (the frontend's GET_VRING_BASE): no
    /// data moves to or from guest memory until it runs again.
    dma_stopped: bool,
    pullup: bool,
    host_attached: bool,
    state: BusState,
    suspended: bool,
    speed: Option<Speed>,
    address: u8,
    configuration: u8,
    remote_wakeup_enabled: bool,
    self_powered: bool,
    reset_at: Instant,
    ep0: VecDeque<GuestReq<T>>,
    ep0_stats: EpStats,
    ep0_last_dma_fault: Option<String>,
    control: Option<ControlXfer>,
    eps: Vec<Endpoint<T>>,
    out: Vec<Output<T>>,
    /// Bumped by anything that ends the bus session (reset, disconnect,
    /// pull-up off), so the host side can tell its view is stale.
    session: u64,
    next_hold: u64,
    inject: InjectConfig,
    log: InjectLog,
    /// The whole bus's bandwidth cap (the global `bandwidth`) and its clock.
    bus_rate: Option<u64>,
    bus_paced_until: Instant,
    /// When the host comes back after an injected disconnect.
    reconnect_at: Option<Instant>,
    /// The time [`Device::tick`] runs at, while it runs: what it schedules
    /// counts from the deadline it serves, not from when it got to run.
    clock: Option<Instant>,
    /// Bytes of guest memory the data path and the race detectors may still
    /// move or look at in this hold of the device lock ([`Device::begin_hold`]),
    /// and what they did; what is left over waits for the next hold.
    budget: Budget,
    /// Copies outside the lock, when the transport runs them.
    offlock: Option<offlock::Offlock>,
}

/// Guest-memory work per hold of the device lock: about 0.3 ms of hashing
/// or copying on the machines this was measured on (hashes at 6 GB/s,
/// memcpy at 8 GiB/s), so a guest's 64 MiB requests cannot keep the control
/// socket, the timers and other endpoints waiting (docs/security.md: the
/// stall test). 8 MiB moved no faster in that test, and left more holds
/// over 4 ms on a busy host.
pub const HOLD_BUDGET: u64 = 2 << 20;

impl<T: Debug> Device<T> {
    pub fn new(cfg: ControllerConfig) -> Self {
        let eps = cfg
            .endpoints
            .iter()
            .map(|&cap| Endpoint {
                cap,
                enabled: None,
                halted: false,
                wedged: false,
                guest: VecDeque::new(),
                host: VecDeque::new(),
                stats: EpStats::default(),
                last_dma_fault: None,
                inj: None,
                rate: None,
                paced_until: Instant::now(),
                paused_until: None,
                finished: VecDeque::new(),
                detectors_due: None,
                landing: VecDeque::new(),
            })
            .collect();
        Device {
            cfg,
            mem: None,
            dma_stopped: false,
            pullup: false,
            host_attached: true,
            state: BusState::Detached,
            suspended: false,
            speed: None,
            address: 0,
            configuration: 0,
            remote_wakeup_enabled: false,
            self_powered: false,
            reset_at: Instant::now(),
            ep0: VecDeque::new(),
            ep0_stats: EpStats::default(),
            ep0_last_dma_fault: None,
            control: None,
            eps,
            out: Vec::new(),
            session: 0,
            next_hold: 0,
            inject: InjectConfig::default(),
            log: InjectLog::default(),
            bus_rate: None,
            bus_paced_until: Instant::now(),
            reconnect_at: None,
            clock: None,
            // Unbounded until a transport meters its holds (unit tests
            // drive the model without a lock).
            budget: Budget::unmetered(),
            offlock: None,
        }
    }

    /// A new hold of the device lock starts: its budget of guest-memory
    /// work is [`HOLD_BUDGET`].
    pub fn begin_hold(&mut self) {
        self.budget = Budget::new(HOLD_BUDGET);
    }

    /// Takes `bytes` of the transport's own work (reading requests) off
    /// this hold's budget.
    pub fn spend(&mut self, bytes: u64) {
        self.budget.take(bytes);
    }

    /// This hold's budget is spent: the transport lets go of the lock
    /// before it takes more work.
    pub fn budget_spent(&self) -> bool {
        self.budget.spent()
    }

    /// Bytes of guest-memory work done in this hold so far (the last step
    /// may go past [`HOLD_BUDGET`]): what the daemon's lock meter reports
    /// as the most any hold did.
    pub fn hold_work(&self) -> u64 {
        self.budget.done()
    }

    fn now(&self) -> Instant {
        self.clock.unwrap_or_else(Instant::now)
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }

    pub fn set_memory(&mut self, mem: GuestMem) {
        self.settle_copies();
        self.mem = Some(mem);
        for i in 0..self.eps.len() {
            self.run_detectors(i);
            self.pump(i);
        }
    }

    pub fn memory(&self) -> Option<&GuestMem> {
        self.mem.as_ref()
    }

    /// Guest memory for the data path: none while DMA is stopped.
    pub(super) fn dma_memory(&self) -> Option<&GuestMem> {
        self.mem.as_ref().filter(|_| !self.dma_stopped)
    }

    /// The frontend went away: its memory is not ours to keep mapped.
    pub fn forget_memory(&mut self) {
        self.settle_copies();
        self.mem = None;
    }

    /// Stops or restarts every access to guest memory by the data path (the
    /// transport stopped a queue, or runs them all again). Requests stay
    /// queued meanwhile; when DMA restarts, data moves again.
    pub fn set_dma_stopped(&mut self, stopped: bool) {
        self.settle_copies();
        if self.dma_stopped == stopped {
            return;
        }
        self.dma_stopped = stopped;
        info!(
            "DMA {}",
            if stopped {
                "stopped: a queue stopped"
            } else {
                "runs again"
            }
        );
        if !stopped {
            for i in 0..self.eps.len() {
                self.run_detectors(i);
                self.pump(i);
            }
        }
    }

    pub fn dma_stopped(&self) -> bool {
        self.dma_stopped
    }

    /// Takes what the transport must deliver, in order.
    pub fn take_outputs(&mut self) -> Vec<Output<T>> {
        std::mem::take(&mut self.out)
    }

    pub fn pullup(&self) -> bool {
        self.pullup
    }

    pub fn host_attached(&self) -> bool {
        self.host_attached
    }

    pub fn state(&self) -> BusState {
        self.state
    }

    pub fn speed(&self) -> Option<Speed> {
        self.speed
    }

    pub fn session(&self) -> u64 {
        self.session
    }

    /// True when the host should reset the bus and enumerate: the gadget
    /// pulled up, a host is attached, and no session is running.
    /// What threads waiting on the device ([`crate::udc::Udc::wait_until`])
    /// wait for a change of: the bus as the host sees it.
    pub fn bus_view(&self) -> BusView {
        BusView {
            pullup: self.pullup,
            host_attached: self.host_attached,
            state: self.state,
            suspended: self.suspended,
            configuration: self.configuration,
            session: self.session,
        }
    }

    pub fn wants_enumeration(&self) -> bool {
        self.pullup && self.host_attached && self.state == BusState::Detached
    }

    fn ep_index(&self, addr: u8) -> Option<usize> {
        self.eps.iter().position(|e| e.cap.addr == addr)
    }

    fn event(&mut self, type_: u16, ep: u8, value: u32, setup: [u8; 8]) {
        self.out.push(Output::Event(VirtioUdcEvent {
            type_: type_.into(),
            ep,
            reserved: 0,
            value: value.into(),
            setup,
        }));
    }

    /// Counts a DMA fault of request `tag` on endpoint `ep` (None: ep0)
    /// and reports it in one line, as an SMMU reports a fault; the control
    /// socket shows the line as the endpoint's last fault.
    fn report_dma_fault(&mut self, ep: Option<usize>, tag: u64, e: Option<&dma::DmaError>) {
        let name = ep_name(ep.map_or(0, |i| self.eps[i].cap.addr));
        let line = match e {
            Some(e) => format!("{name}: {e} (request tag {tag:#x})"),
            None => format!("{name}: DMA fault in request tag {tag:#x}"),
        };
        crate::guest_warn!("{line}");
        let (stats, last) = match ep {
            Some(i) => {
                let e = &mut self.eps[i];
                (&mut e.stats, &mut e.last_dma_fault)
            }
            None => (&mut self.ep0_stats, &mut self.ep0_last_dma_fault),
        };
        stats.dma_faults += 1;
        *last = Some(line);
    }

    fn complete_guest(&mut self, ep: Option<usize>, g: GuestReq<T>, status: Status) {
        let actual = g.cursor.offset as u32;
        let stats = match ep {
            Some(i) => &mut self.eps[i].stats,
            None => &mut self.ep0_stats,
        };
        if status == Status::Ok {
            stats.guest_completed += 1;
        } else {
            stats.guest_errors += 1;
        }
        debug!(
            "{}: request tag {:#x} done: {status}, {actual}/{} bytes",
            ep_name(g.req.ep),
            g.req.tag,
            g.req.length
        );
        self.out.push(Output::XferDone {
            token: g.token,
            status,
            actual,
        });
    }

    /// Completes a request that never reached an endpoint queue (it failed a
    /// check): the transport still owes the driver a status.
    pub fn reject(&mut self, token: T, status: Status) {
        self.out.push(Output::XferDone {
            token,
            status,
            actual: 0,
        });
    }

    /// Executes a command (section 6) and returns its response.
    pub fn command(&mut self, cmd: Command) -> (Status, u32) {
        self.settle_copies();
        match cmd {
            Command::Pullup(on) => {
                if on == self.pullup {
                    return (Status::Ok, 0);
                }
                self.pullup = on;
                info!("gadget: pull-up {}", if on { "on" } else { "off" });
                if !on && self.state != BusState::Detached {
                    self.end_session(Status::Shutdown);
                }
                (Status::Ok, 0)
            }
            Command::EpEnable(e) => self.ep_enable(e),
            Command::EpDisable { ep } => {
                let Some(i) = self.ep_index(ep).filter(|_| ep_num(ep) != 0) else {
                    return (Status::Invalid, 0);
                };
                if self.eps[i].enabled.is_none() {
                    // Already disabled (by a bus reset, typically).
                    return (Status::Ok, 0);
                }
                self.flush_ep(i, Status::Shutdown);
                let e = &mut self.eps[i];
                e.enabled = None;
                e.halted = false;
                e.wedged = false;
                info!("{}: disabled", ep_name(ep));
                (Status::Ok, 0)
            }
            Command::EpSetHalt { ep, halt } => self.set_halt(ep, halt),
            Command::EpFifoStatus { ep } | Command::EpFifoFlush { ep } => {
                if ep_num(ep) == 0 || self.ep_index(ep).is_some() {
                    (Status::Ok, 0)
                } else {
                    (Status::Invalid, 0)
                }
            }
            Command::XferCancel { ep, tag } => self.cancel(ep, tag),
            Command::GetFrame => {
                let ms = self.reset_at.elapsed().as_millis() as u32;
                (Status::Ok, ms & 0x7ff)
            }
            Command::Wakeup => {
                if !self.cfg.remote_wakeup {
                    (Status::Unsupported, 0)
                } else if self.suspended && self.remote_wakeup_enabled {
                    info!("bus: remote wakeup");
                    self.resume();
                    (Status::Ok, 0)
                } else {
                    (Status::Invalid, 0)
                }
            }
            Command::SetSelfPowered(on) => {
                self.self_powered = on;
                (Status::Ok, 0)
            }
        }
    }

    fn ep_enable(&mut self, e: EpEnable) -> (Status, u32) {
        let name = ep_name(e.ep);
        let Some(i) = self.ep_index(e.ep).filter(|_| ep_num(e.ep) != 0) else {
            crate::guest_warn!(
                "EP_ENABLE: {name} ({:#04x}) is not an endpoint of this controller",
                e.ep
            );
            return (Status::Invalid, 0);
        };
        let cap = self.eps[i].cap;
        let type_bit = match e.ep_type {
            USB_XFER_ISO => VIRTIO_UDC_EP_CAP_ISO,
            USB_XFER_BULK => VIRTIO_UDC_EP_CAP_BULK,
            USB_XFER_INT => VIRTIO_UDC_EP_CAP_INT,
            _ => 0,
        };
        if cap.caps & type_bit == 0 {
            match e.ep_type {
                0..=3 => crate::guest_warn!(
                    "EP_ENABLE: {name} cannot be a {} endpoint",
                    usb::transfer_type_name(e.ep_type)
                ),
                t => crate::guest_warn!("EP_ENABLE: {name}: endpoint type {t} is not a USB transfer type"),
            }
            return (Status::Invalid, 0);
        }
        if e.max_packet == 0 || e.max_packet > cap.max_packet_limit {
            crate::guest_warn!(
                "EP_ENABLE: {name}: max packet {} is outside 1..={}",
                e.max_packet,
                cap.max_packet_limit
            );
            return (Status::Invalid, 0);
        }
        if self.eps[i].enabled.is_some() {
            crate::guest_warn!("EP_ENABLE: {name} is already enabled");
            return (Status::Invalid, 0);
        }
        self.eps[i].enabled = Some(e);
        info!(
            "{name}: enabled, {} max packet {}",
            usb::transfer_type_name(e.ep_type),
            e.max_packet
        );
        (Status::Ok, 0)
    }

    fn set_halt(&mut self, ep: u8, halt: HaltRequest) -> (Status, u32) {
        self.settle_copies();
        if ep_num(ep) == 0 {
            if halt == HaltRequest::Clear {
                return (Status::Ok, 0);
            }
            if let Some(ctl) = self.control.take() {
                info!("ep0: gadget stalled {}", ctl.setup);
                let setup = ctl.setup;
                self.finish_control(setup, ctl.done, Err(UrbStatus::Stall));
            }
            return (Status::Ok, 0);
        }
        let Some(i) = self.ep_index(ep).filter(|&i| self.eps[i].enabled.is_some()) else {
            return (Status::Invalid, 0);
        };
        match halt {
            HaltRequest::Clear => {
                let e = &mut self.eps[i];
                e.halted = false;
                e.wedged = false;
                self.pump(i);
            }
            HaltRequest::Halt | HaltRequest::Wedge => {
                if ep_is_in(ep) && !self.eps[i].guest.is_empty() {
                    return (Status::Busy, 0);
                }
                let e = &mut self.eps[i];
                e.halted = true;
                e.wedged = halt == HaltRequest::Wedge;
                // The host's pending transfers see the STALL handshake.
                while let Some(u) = self.eps[i].host.pop_front() {
                    self.eps[i].stats.host_errors += 1;
                    u.finish(UrbStatus::Stall);
                }
            }
        }
        info!("{}: halt {:?}", ep_name(ep), halt);
        (Status::Ok, 0)
    }

    fn cancel(&mut self, ep: u8, tag: u64) -> (Status, u32) {
        self.settle_copies();
        if ep_num(ep) == 0 {
            if let Some(pos) = self.ep0.iter().position(|g| g.req.tag == tag) {
                let g = self.ep0.remove(pos).expect("position is valid");
                self.complete_guest(None, g, Status::Cancelled);
                return (Status::Ok, 0);
            }
            return (Status::NotFound, 0);
        }
        let Some(i) = self.ep_index(ep) else {
            return (Status::NotFound, 0);
        };
        if let Some(pos) = self.eps[i].finished.iter().position(|f| f.g.req.tag == tag) {
            // Its data moved; its completion was waiting (latency, hold or
            // reordering). The driver gets it back cancelled, with what moved.
            let f = self.eps[i].finished.remove(pos).expect("position is valid");
            info!(
                "{}: request tag {tag:#x} cancelled while its completion waited",
                ep_name(ep)
            );
            self.complete_guest(Some(i), f.g, Status::Cancelled);
            self.deliver_finished(i, self.now());
            return (Status::Ok, 0);
        }
        let Some(pos) = self.eps[i].guest.iter().position(|g| g.req.tag == tag) else {
            return (Status::NotFound, 0);
        };
        let g = self.eps[i].guest.remove(pos).expect("position is valid");
        if pos == 0 {
            // Its NAK, detector delay or chunk pause goes with it.
            self.eps[i].paused_until = None;
        }
        info!(
            "{}: request tag {tag:#x} cancelled after {} bytes",
            ep_name(ep),
            g.cursor.offset
        );
        self.complete_guest(Some(i), g, Status::Cancelled);
        self.pump(i);
        (Status::Ok, 0)
    }

    /// Completes every queued request on endpoint `i` with `status` and
    /// fails the host's transfers on it.
    fn flush_ep(&mut self, i: usize, status: Status) {
        self.settle_copies();
        while let Some(f) = self.eps[i].finished.pop_front() {
            self.complete_guest(Some(i), f.g, status);
        }
        self.eps[i].paused_until = None;
        while let Some(g) = self.eps[i].guest.pop_front() {
            self.complete_guest(Some(i), g, status);
        }
        while let Some(u) = self.eps[i].host.pop_front() {
            self.eps[i].stats.host_errors += 1;
            u.finish(UrbStatus::Shutdown);
        }
    }

    /// Ends the bus session: every request completes with `status`, every
    /// endpoint but ep0 is disabled, the pending control transfer fails.
    fn end_session(&mut self, status: Status) {
        self.settle_copies();
        self.session += 1;
        for i in 0..self.eps.len() {
            self.flush_ep(i, status);
            let e = &mut self.eps[i];
            e.enabled = None;
            e.halted = false;
            e.wedged = false;
        }
        while let Some(g) = self.ep0.pop_front() {
            self.complete_guest(None, g, status);
        }
        if let Some(ctl) = self.control.take() {
            let _ = ctl.done.send(Err(UrbStatus::Shutdown));
        }
        self.state = BusState::Detached;
        self.suspended = false;
        self.address = 0;
        self.configuration = 0;
        self.remote_wakeup_enabled = false;
    }

    // ---- the host's side ---------------------------------------------------

    /// The host resets the bus at `host_speed` (or the device's best, if
    /// lower). Nothing happens unless the gadget has pulled up.
    pub fn bus_reset(&mut self, host_speed: Speed) -> Option<Speed> {
        self.settle_copies();
        if !self.pullup || !self.host_attached {
            return None;
        }
        if self.state != BusState::Detached {
            self.end_session(Status::Shutdown);
        }
        let speed = host_speed.min(self.cfg.max_speed);
        self.speed = Some(speed);
        self.state = BusState::Default;
        self.reset_at = Instant::now();
        info!("bus: reset, {speed}");
        self.event(VIRTIO_UDC_EVT_BUS_RESET, 0, u32::from(speed.to_wire()), [0; 8]);
        Some(speed)
    }

    /// The operator plugs the cable in or pulls it out (the control
    /// socket): that overrides an injected disconnect's return.
    pub fn plug(&mut self, attached: bool) {
        self.settle_copies();
        self.reconnect_at = None;
        self.set_host_attached(attached);
    }

    /// The cable is plugged in or pulled out.
    pub fn set_host_attached(&mut self, attached: bool) {
        self.settle_copies();
        if attached == self.host_attached {
            return;
        }
        self.host_attached = attached;
        if !attached && self.state != BusState::Detached {
            info!("bus: host disconnected");
            self.end_session(Status::Shutdown);
            self.event(VIRTIO_UDC_EVT_DISCONNECT, 0, 0, [0; 8]);
        }
    }

    pub fn suspend(&mut self) -> bool {
        self.settle_copies();
        if self.state == BusState::Detached || self.suspended {
            return false;
        }
        self.suspended = true;
        info!("bus: suspended");
        self.event(VIRTIO_UDC_EVT_SUSPEND, 0, 0, [0; 8]);
        true
    }

    pub fn resume(&mut self) -> bool {
        self.settle_copies();
        if !self.suspended {
            return false;
        }
        self.suspended = false;
        info!("bus: resumed");
        self.event(VIRTIO_UDC_EVT_RESUME, 0, 0, [0; 8]);
        for i in 0..self.eps.len() {
            self.pump(i);
        }
        true
    }

    /// The address the host gave the device (0 before SET_ADDRESS).
    pub fn address(&self) -> u8 {
        self.address
    }

    /// The transfer type (USB's bmAttributes numbering) of an enabled
    /// endpoint.
    pub fn ep_type(&self, ep: u8) -> Option<u8> {
        let i = self.ep_index(ep)?;
        self.eps[i].enabled.map(|e| e.ep_type)
    }

    /// Max packet size of an enabled endpoint.
    pub fn max_packet(&self, ep: u8) -> Option<u16> {
        let i = self.ep_index(ep)?;
        self.eps[i].enabled.map(|e| e.max_packet)
    }

    /// Forgets everything the driver queued, without completing it: the
    /// virtio device reset (section 10, step 8).
    pub fn reset(&mut self) {
        self.settle_copies();
        let cfg = self.cfg.clone();
        let mem = self.mem.take();
        let attached = self.host_attached;
        let inject = std::mem::take(&mut self.inject);
        let log = std::mem::take(&mut self.log);
        let reconnect_at = self.reconnect_at;
        let budget = self.budget;
        for e in &mut self.eps {
            while let Some(u) = e.host.pop_front() {
                u.finish(UrbStatus::Shutdown);
            }
        }
        if let Some(ctl) = self.control.take() {
            let _ = ctl.done.send(Err(UrbStatus::Shutdown));
        }
        let session = self.session + 1;
        // The copies' board is the transport's (its helper thread waits on
        // it); settled above, nothing of the old device is on it.
        let offlock = self.offlock.take();
        *self = Device::new(cfg);
        self.offlock = offlock;
        self.mem = mem;
        self.host_attached = attached;
        self.session = session;
        // Injection outlives a device reset (a driver reload): same
        // settings, request numbers from 1 again, the log kept.
        self.set_injection(inject);
        self.log = log;
        self.reconnect_at = reconnect_at;
        self.budget = budget;
    }
}

#[cfg(test)]
mod tests;
