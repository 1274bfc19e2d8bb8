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
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

use crate::dma::{self, Cursor};
use crate::inject::{EpInjector, Fault, InjectConfig, InjectLog, Plan, RaceReport};
use crate::race;
use crate::request::{Command, EpEnable, HaltRequest, XferRequest};
use crate::usb::{self, SetupPacket, Speed};
use crate::wire::*;

pub type GuestMem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// One endpoint the controller offers (a config-space entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EpCap {
    pub addr: u8,
    pub caps: u8,
    pub max_packet_limit: u16,
}

/// What the controller offers the driver: the content of the config space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    pub max_speed: Speed,
    pub sg: bool,
    pub max_segments: u32,
    pub remote_wakeup: bool,
    /// Endpoints other than ep0.
    pub endpoints: Vec<EpCap>,
}

impl Default for ControllerConfig {
    /// ep1-ep15 IN and ep1-ep14 OUT, every type, 1024-byte packets: enough
    /// for any gadget a user composes, like dummy_hcd's generous layout
    /// (29 is the most the configuration space holds).
    fn default() -> Self {
        let all = VIRTIO_UDC_EP_CAP_BULK | VIRTIO_UDC_EP_CAP_INT | VIRTIO_UDC_EP_CAP_ISO;
        let mut endpoints = Vec::new();
        for n in 1..=15u8 {
            for dir in [USB_DIR_IN, 0] {
                if n == 15 && dir == 0 {
                    continue;
                }
                endpoints.push(EpCap {
                    addr: n | dir,
                    caps: all,
                    max_packet_limit: 1024,
                });
            }
        }
        ControllerConfig {
            max_speed: Speed::Super,
            sg: true,
            max_segments: MIN_SG_SEGMENTS,
            remote_wakeup: true,
            endpoints,
        }
    }
}

impl ControllerConfig {
    /// The config space bytes the driver reads (section 4).
    pub fn to_wire(&self) -> VirtioUdcConfig {
        let mut c = VirtioUdcConfig::default();
        let mut flags = 0;
        if self.sg {
            flags |= VIRTIO_UDC_CONFIG_F_SG;
        }
        if self.remote_wakeup {
            flags |= VIRTIO_UDC_CONFIG_F_REMOTE_WAKEUP;
        }
        c.flags = flags.into();
        c.max_segments = (if self.sg { self.max_segments } else { 1 }).into();
        c.max_speed = self.max_speed.to_wire();
        c.eps[0] = VirtioUdcEpCap {
            addr: 0,
            caps: VIRTIO_UDC_EP_CAP_CONTROL,
            max_packet_limit: 512.into(),
            ..Default::default()
        };
        for (i, ep) in self.endpoints.iter().enumerate() {
            c.eps[i + 1] = VirtioUdcEpCap {
                addr: ep.addr,
                caps: ep.caps,
                max_packet_limit: ep.max_packet_limit.into(),
                ..Default::default()
            };
        }
        c.num_eps = (self.endpoints.len() + 1) as u8;
        c
    }

    /// The per-request segment limit in force.
    pub fn segment_limit(&self) -> u32 {
        if self.sg {
            self.max_segments
        } else {
            1
        }
    }

    pub fn has_endpoint(&self, addr: u8) -> bool {
        ep_num(addr) == 0 || self.endpoints.iter().any(|e| e.addr == addr)
    }

    /// Injection settings may only name endpoints this controller has.
    pub fn check_injection(&self, inject: &InjectConfig) -> Result<(), DeviceError> {
        match inject.endpoints.keys().find(|ep| !self.has_endpoint(**ep)) {
            Some(ep) => Err(DeviceError::NoEndpoint(EpAddress(*ep))),
            None => Ok(()),
        }
    }
}

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

/// How a host-side transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UrbStatus {
    Ok,
    /// The endpoint is halted, or the device refused a control request.
    Stall,
    /// Babble: the device sent more than the host buffer had room for.
    Overflow,
    /// The device went away: bus reset, disconnect, pull-up off, endpoint
    /// disabled or never enabled.
    Shutdown,
    /// The host cancelled it (or gave up waiting).
    Cancelled,
    /// The device did not answer in time.
    Timeout,
    /// Guest memory could not be accessed for this transfer.
    DmaFault,
    /// A transfer error on the bus (injected: CRC, timeout, bit stuffing).
    Proto,
}

/// A host-side transfer's result.
#[derive(Debug)]
pub struct UrbResult {
    pub status: UrbStatus,
    /// IN: the bytes received. OUT: the data sent, handed back so the
    /// caller can reuse the allocation.
    pub data: Vec<u8>,
    /// Bytes transferred (IN: `data.len()`; OUT: bytes the device accepted).
    pub actual: usize,
    pub submitted: Instant,
    pub completed: Instant,
}

/// Direction-specific state of a host transfer.
#[derive(Debug)]
pub enum UrbKind {
    /// The host reads up to `len` bytes from an IN endpoint.
    In { len: usize },
    /// The host writes `data` to an OUT endpoint, ending with a zero-length
    /// packet when `zlp` is set and the length is a multiple of the packet size.
    Out { data: Vec<u8>, zlp: bool },
}

/// A host-side transfer on a non-control endpoint (a URB, in Linux host terms).
#[derive(Debug)]
pub struct Urb {
    pub id: u64,
    pub kind: UrbKind,
    pub done: Sender<UrbResult>,
    submitted: Instant,
    buf: Vec<u8>,
    /// Bytes moved so far.
    moved: usize,
}

impl Urb {
    pub fn new(id: u64, kind: UrbKind, done: Sender<UrbResult>) -> Self {
        Urb {
            id,
            kind,
            done,
            submitted: Instant::now(),
            buf: Vec::new(),
            moved: 0,
        }
    }

    /// Gives an IN transfer a buffer to fill (its allocation is reused; its
    /// contents are overwritten), so a stream does not allocate and fault in
    /// fresh pages for every transfer.
    pub fn with_buffer(mut self, buf: Vec<u8>) -> Self {
        self.buf = buf;
        self
    }

    fn finish(self, status: UrbStatus) {
        let actual = self.moved;
        let data = match self.kind {
            UrbKind::In { .. } => {
                let mut d = self.buf;
                d.truncate(actual);
                d
            }
            UrbKind::Out { data, .. } => data,
        };
        // The receiver may have given up; that is its business.
        let _ = self.done.send(UrbResult {
            status,
            data,
            actual,
            submitted: self.submitted,
            completed: Instant::now(),
        });
    }
}

/// Result of a host control transfer.
pub type ControlResult = Result<Vec<u8>, UrbStatus>;

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
    /// IN race detector: the buffer's block hashes when the DMA started.
    snapshot: Option<Vec<u64>>,
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
}

/// How long a reordered completion waits for a request behind it before it
/// completes in order after all.
const REORDER_WAIT: Duration = Duration::from_secs(1);

/// A guest request the host holds: its buffer, for the host to read (IN) or
/// fill (OUT) in place, until it releases it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeldRequest {
    pub handle: u64,
    pub ep: u8,
    pub tag: u64,
    pub length: u32,
    pub segments: Vec<crate::request::Segment>,
}

#[derive(Debug)]
struct Endpoint<T> {
    cap: EpCap,
    enabled: Option<EpEnable>,
    halted: bool,
    wedged: bool,
    guest: VecDeque<GuestReq<T>>,
    host: VecDeque<Urb>,
    stats: EpStats,
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
}

/// Counters per endpoint, for the control socket and logs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EpStats {
    pub bytes: u64,
    pub guest_completed: u64,
    pub guest_errors: u64,
    pub host_completed: u64,
    pub host_errors: u64,
}

#[derive(Debug)]
struct ControlXfer {
    setup: SetupPacket,
    data_out: Vec<u8>,
    done: Sender<ControlResult>,
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

/// A snapshot of the device for the control socket.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceStatus {
    /// What the config space offers the driver.
    pub controller: ControllerStatus,
    pub pullup: bool,
    pub host_attached: bool,
    pub state: BusState,
    pub suspended: bool,
    pub speed: Option<Speed>,
    pub address: u8,
    pub configuration: u8,
    pub endpoints: Vec<EndpointStatus>,
}

/// The controller's configuration as the driver sees it.
#[derive(Clone, Debug, Serialize)]
pub struct ControllerStatus {
    pub max_speed: Speed,
    pub scatter_gather: bool,
    pub max_segments: u32,
    pub remote_wakeup: bool,
    /// Endpoints other than ep0.
    pub endpoints: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointStatus {
    pub address: u8,
    pub name: String,
    pub enabled: bool,
    pub transfer_type: Option<&'static str>,
    pub max_packet: Option<u16>,
    pub halted: bool,
    pub wedged: bool,
    pub guest_queued: usize,
    pub host_queued: usize,
    /// Requests whose data is done and whose completion waits (injection).
    pub completions_waiting: usize,
    /// Handles of held completions, for the control socket's `release`.
    pub held_completions: Vec<u64>,
    pub stats: EpStats,
}

fn type_name(t: u8) -> &'static str {
    match t {
        USB_XFER_CONTROL => "control",
        USB_XFER_ISO => "isochronous",
        USB_XFER_BULK => "bulk",
        _ => "interrupt",
    }
}

/// The device model. `T` is the transport's token for a transfer request.
pub struct Device<T> {
    cfg: ControllerConfig,
    mem: Option<GuestMem>,
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
}

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
                inj: None,
                rate: None,
                paced_until: Instant::now(),
                paused_until: None,
                finished: VecDeque::new(),
            })
            .collect();
        Device {
            cfg,
            mem: None,
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
        }
    }

    fn now(&self) -> Instant {
        self.clock.unwrap_or_else(Instant::now)
    }

    /// Replaces the injection settings. Request numbers (for `nth:` and the
    /// log) start again from 1, and the log starts empty.
    pub fn set_injection(&mut self, cfg: InjectConfig) {
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
    fn set_rates(&mut self, cfg: &InjectConfig) {
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

    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }

    pub fn set_memory(&mut self, mem: GuestMem) {
        self.mem = Some(mem);
    }

    pub fn memory(&self) -> Option<&GuestMem> {
        self.mem.as_ref()
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

    // ---- the driver's side -------------------------------------------------

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
            warn!("{}: request on a disabled endpoint: SHUTDOWN", ep_name(g.req.ep));
            return self.complete_guest(Some(i), g, Status::Shutdown);
        }
        self.plan_injection(i, &mut g);
        self.eps[i].guest.push_back(g);
        self.pump(i);
    }

    /// Decides what injection does to a request as it is queued, logs the
    /// decisions, and poisons an OUT buffer at once (before any data can
    /// arrive, so a reader that does not wait sees the poison).
    fn plan_injection(&mut self, i: usize, g: &mut GuestReq<T>) {
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
            if let Some(mem) = self.mem.as_ref().map(|m| m.memory()) {
                if let Err(err) = race::poison(&*mem, &g.req.segments, g.req.length as usize) {
                    warn!("{}: cannot poison request tag {tag:#x}: {err}", ep_name(ep));
                }
            }
        }
        g.plan = Some(plan);
    }

    fn queue_ep0(&mut self, g: GuestReq<T>) {
        let Some(ctl) = self.control.take() else {
            warn!("ep0: request with no control transfer pending: INVALID");
            return self.complete_guest(None, g, Status::Invalid);
        };
        let setup = ctl.setup;
        let wlen = usize::from(setup.length);
        let gin = ep_is_in(g.req.ep);
        let len = g.req.length as usize;
        if wlen == 0 {
            if len != 0 {
                warn!("ep0: {len}-byte request for {setup}, which has no data stage: INVALID");
                self.control = Some(ctl);
                return self.complete_guest(None, g, Status::Invalid);
            }
            self.finish_control(setup, ctl.done, Ok(Vec::new()));
            return self.complete_guest(None, g, Status::Ok);
        }
        if gin != setup.is_in() {
            warn!("ep0: request direction does not match {setup}: INVALID");
            self.control = Some(ctl);
            return self.complete_guest(None, g, Status::Invalid);
        }
        let Some(mem) = self.mem.clone() else {
            self.control = Some(ctl);
            return self.complete_guest(None, g, Status::DmaFault);
        };
        let mem = mem.memory();
        let mut g = g;
        if gin {
            let n = len.min(wlen);
            let mut data = vec![0u8; n];
            if let Err(e) = dma::read_from_guest(&*mem, &g.req.segments, &mut g.cursor, &mut data) {
                warn!("ep0: {e}");
                self.finish_control(setup, ctl.done, Err(UrbStatus::DmaFault));
                return self.complete_guest(None, g, Status::DmaFault);
            }
            self.ep0_stats.bytes += n as u64;
            self.finish_control(setup, ctl.done, Ok(data));
            self.complete_guest(None, g, Status::Ok);
        } else {
            let n = len.min(ctl.data_out.len());
            if let Err(e) = dma::write_to_guest(&*mem, &g.req.segments, &mut g.cursor, &ctl.data_out[..n]) {
                warn!("ep0: {e}");
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
    fn finish_control(&mut self, setup: SetupPacket, done: Sender<ControlResult>, r: ControlResult) {
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

    /// Executes a command (section 6) and returns its response.
    pub fn command(&mut self, cmd: Command) -> (Status, u32) {
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
            warn!(
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
            warn!("EP_ENABLE: {name} cannot be a {} endpoint", type_name(e.ep_type));
            return (Status::Invalid, 0);
        }
        if e.max_packet == 0 || e.max_packet > cap.max_packet_limit {
            warn!(
                "EP_ENABLE: {name}: max packet {} is outside 1..={}",
                e.max_packet, cap.max_packet_limit
            );
            return (Status::Invalid, 0);
        }
        if self.eps[i].enabled.is_some() {
            warn!("EP_ENABLE: {name} is already enabled");
            return (Status::Invalid, 0);
        }
        self.eps[i].enabled = Some(e);
        info!(
            "{name}: enabled, {} max packet {}",
            type_name(e.ep_type),
            e.max_packet
        );
        (Status::Ok, 0)
    }

    fn set_halt(&mut self, ep: u8, halt: HaltRequest) -> (Status, u32) {
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
        self.reconnect_at = None;
        self.set_host_attached(attached);
    }

    /// The cable is plugged in or pulled out.
    pub fn set_host_attached(&mut self, attached: bool) {
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
        if self.state == BusState::Detached || self.suspended {
            return false;
        }
        self.suspended = true;
        info!("bus: suspended");
        self.event(VIRTIO_UDC_EVT_SUSPEND, 0, 0, [0; 8]);
        true
    }

    pub fn resume(&mut self) -> bool {
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

    /// Starts a control transfer. The result arrives on `done`: at once for
    /// requests the controller answers itself, after the gadget's answer
    /// otherwise.
    pub fn start_control(&mut self, setup: SetupPacket, data_out: Vec<u8>, done: Sender<ControlResult>) {
        if self.state == BusState::Detached {
            let _ = done.send(Err(UrbStatus::Shutdown));
            return;
        }
        if self.suspended {
            // A host resumes the bus before it talks to the device.
            self.resume();
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

    /// The standard requests a UDC answers in hardware (spec section 9).
    fn standard_request(&mut self, s: &SetupPacket) -> Option<ControlResult> {
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
    fn pump(&mut self, i: usize) {
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
        let Some(mem) = self.mem.clone() else { return };
        let mem = mem.memory();
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
            let e = &mut self.eps[i];
            let (Some(g), Some(h)) = (e.guest.front_mut(), e.host.front_mut()) else {
                return;
            };
            let mut limit = usize::MAX;
            if let Some(p) = &g.plan {
                if !g.started {
                    g.started = true;
                    g.chunk = e.inj.as_ref().and_then(|j| j.set.chunk);
                    g.chunk_left = g.chunk.map_or(0, |c| c.bytes_for(mps as u64));
                    let mut wait = p.nak.unwrap_or_default();
                    if let Some(d) = p.in_checksum {
                        match race::block_hashes(&*mem, &g.req.segments, g.req.length as usize) {
                            Ok(hashes) => g.snapshot = Some(hashes),
                            Err(err) => warn!("{}: in_checksum: {err}", ep_name(g.req.ep)),
                        }
                        wait += d;
                    }
                    if let Some(d) = p.out_poison {
                        wait += d;
                    }
                    if !wait.is_zero() {
                        e.paused_until = Some(now + wait);
                        return;
                    }
                }
                if let Some(f) = p.fault {
                    if g.cursor.offset >= p.fault_at {
                        self.apply_fault(i, f);
                        continue;
                    }
                    limit = (p.fault_at - g.cursor.offset) as usize;
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
                    warn!("{}: DMA fault in request tag {:#x}", ep_name(g.req.ep), g.req.tag);
                }
                self.finish_guest(i, g, st);
            }
            if let Some(t) = pause {
                self.eps[i].paused_until = Some(t);
                return;
            }
        }
    }

    /// Ends the front request of endpoint `i` (and the host's transfer) the
    /// way the injected fault says.
    fn apply_fault(&mut self, i: usize, fault: Fault) {
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

    /// A request's data is done: runs the IN race detector, then completes
    /// it now or, if injection says so, later (in FIFO order unless a
    /// reordering was injected).
    fn finish_guest(&mut self, i: usize, mut g: GuestReq<T>, status: Status) {
        if let Some(before) = g.snapshot.take() {
            self.check_in_race(i, &g, &before);
        }
        let now = self.now();
        let (latency, hold, reorder) = g
            .plan
            .as_ref()
            .map_or((Duration::ZERO, false, false), |p| (p.latency, p.hold, p.reorder));
        if latency.is_zero() && !hold && !reorder && self.eps[i].finished.is_empty() {
            return self.complete_guest(Some(i), g, status);
        }
        let mut due = now + latency;
        if let Some(d) = self.eps[i].finished.back().and_then(|f| f.due) {
            // FIFO: never before the one ahead of it.
            due = due.max(d);
        }
        let handle = hold.then(|| {
            self.next_hold += 1;
            self.next_hold
        });
        if let Some(h) = handle {
            info!(
                "{}: completion of request tag {:#x} held (release handle {h})",
                ep_name(g.req.ep),
                g.req.tag
            );
        }
        self.eps[i].finished.push_back(Finished {
            g,
            status,
            due: (!hold).then_some(due),
            handle,
            after_next: reorder,
        });
        self.deliver_finished(i, now);
    }

    /// IN race detector: the buffer's blocks now against when the DMA began.
    fn check_in_race(&mut self, i: usize, g: &GuestReq<T>, before: &[u64]) {
        let Some(mem) = self.mem.as_ref().map(|m| m.memory()) else {
            return;
        };
        let after = match race::block_hashes(&*mem, &g.req.segments, g.req.length as usize) {
            Ok(a) => a,
            Err(err) => return warn!("{}: in_checksum: {err}", ep_name(g.req.ep)),
        };
        let changed = race::changed_blocks(before, &after);
        if changed.is_empty() {
            return;
        }
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
        self.log.race(RaceReport {
            ep: ep_name(self.eps[i].cap.addr),
            request: g.plan.as_ref().map_or(0, |p| p.index),
            tag: g.req.tag,
            kind: "in_changed_during_dma",
            detail,
            changed_blocks: changed.into_iter().take(32).collect(),
        });
    }

    /// Delivers the waiting completions of endpoint `i` that are due.
    fn deliver_finished(&mut self, i: usize, now: Instant) {
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
    fn ep_deadline(&self, i: usize) -> Option<Instant> {
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
        finished.into_iter().chain(e.paused_until).min()
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

    fn tick_at(&mut self, now: Instant) {
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.reconnect_at = None;
            info!("bus: injected disconnect over: the host reconnects");
            self.set_host_attached(true);
        }
        for i in 0..self.eps.len() {
            self.deliver_finished(i, now);
            if self.eps[i].paused_until.is_some_and(|t| t <= now) {
                self.eps[i].paused_until = None;
                self.pump(i);
            }
        }
    }

    /// Releases a held completion; `status` replaces the request's own.
    /// Ok(false) when `ep` holds no completion with that handle.
    pub fn release_completion(
        &mut self,
        ep: u8,
        handle: u64,
        status: Option<Status>,
    ) -> Result<bool, DeviceError> {
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

    pub fn status(&self) -> DeviceStatus {
        let mut endpoints = vec![EndpointStatus {
            address: 0,
            name: "ep0".into(),
            enabled: true,
            transfer_type: Some("control"),
            max_packet: self.speed.map(|s| ep0_max_packet(s.to_wire())),
            halted: false,
            wedged: false,
            guest_queued: self.ep0.len(),
            host_queued: usize::from(self.control.is_some()),
            completions_waiting: 0,
            held_completions: Vec::new(),
            stats: self.ep0_stats,
        }];
        endpoints.extend(self.eps.iter().map(|e| EndpointStatus {
            address: e.cap.addr,
            name: ep_name(e.cap.addr),
            enabled: e.enabled.is_some(),
            transfer_type: e.enabled.map(|en| type_name(en.ep_type)),
            max_packet: e.enabled.map(|en| en.max_packet),
            halted: e.halted,
            wedged: e.wedged,
            guest_queued: e.guest.len(),
            host_queued: e.host.len(),
            completions_waiting: e.finished.len(),
            held_completions: e.finished.iter().filter_map(|f| f.handle).collect(),
            stats: e.stats,
        }));
        DeviceStatus {
            controller: ControllerStatus {
                max_speed: self.cfg.max_speed,
                scatter_gather: self.cfg.sg,
                max_segments: self.cfg.segment_limit(),
                remote_wakeup: self.cfg.remote_wakeup,
                endpoints: self.cfg.endpoints.len(),
            },
            pullup: self.pullup,
            host_attached: self.host_attached,
            state: self.state,
            suspended: self.suspended,
            speed: self.speed,
            address: self.address,
            configuration: self.configuration,
            endpoints,
        }
    }

    /// Max packet size of an enabled endpoint.
    pub fn max_packet(&self, ep: u8) -> Option<u16> {
        let i = self.ep_index(ep)?;
        self.eps[i].enabled.map(|e| e.max_packet)
    }

    /// Forgets everything the driver queued, without completing it: the
    /// virtio device reset (section 10, step 8).
    pub fn reset(&mut self) {
        let cfg = self.cfg.clone();
        let mem = self.mem.take();
        let attached = self.host_attached;
        let inject = std::mem::take(&mut self.inject);
        let log = std::mem::take(&mut self.log);
        let reconnect_at = self.reconnect_at;
        for e in &mut self.eps {
            while let Some(u) = e.host.pop_front() {
                u.finish(UrbStatus::Shutdown);
            }
        }
        if let Some(ctl) = self.control.take() {
            let _ = ctl.done.send(Err(UrbStatus::Shutdown));
        }
        let session = self.session + 1;
        *self = Device::new(cfg);
        self.mem = mem;
        self.host_attached = attached;
        self.session = session;
        // Injection outlives a device reset (a driver reload): same
        // settings, request numbers from 1 again, the log kept.
        self.set_injection(inject);
        self.log = log;
        self.reconnect_at = reconnect_at;
    }
}

/// What one step of data movement did.
struct Step {
    bytes: usize,
    urb_done: Option<UrbStatus>,
    guest_done: Option<Status>,
}

/// IN: the guest's buffer goes to the host, packet by packet.
fn step_in<T, M: vm_memory::GuestMemory + ?Sized>(
    mem: &M,
    g: &mut GuestReq<T>,
    h: &mut Urb,
    mps: usize,
    limit: usize,
) -> Step {
    let UrbKind::In { len: cap } = h.kind else {
        unreachable!("IN endpoints only queue IN transfers")
    };
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
        };
    }
    if room == 0 {
        return Step {
            bytes: 0,
            urb_done: Some(UrbStatus::Ok),
            guest_done: None,
        };
    }
    // Whole packets that fit, or the guest's whole remainder if it fits.
    let n = if g_left <= room { g_left } else { room / mps * mps };
    if n == 0 {
        // The next packet is bigger than the host's room: babble. The host
        // gets what fits; the packet is gone from the device's side.
        let p = mps.min(g_left);
        if h.buf.len() < cap {
            h.buf.resize(cap, 0);
        }
        let at = h.moved;
        if let Err(_e) = dma::read_from_guest(mem, &g.req.segments, &mut g.cursor, &mut h.buf[at..at + room])
        {
            return dma_fault(Some(UrbStatus::DmaFault));
        }
        let _ = g.cursor.skip(&g.req.segments, (p - room) as u64);
        h.moved += room;
        let finished = g.cursor.offset as usize == glen;
        return Step {
            bytes: room,
            urb_done: Some(UrbStatus::Overflow),
            guest_done: finished.then_some(Status::Ok),
        };
    }
    let n = clamp_to_limit(n, limit, mps);
    if h.buf.len() < cap {
        // Once per transfer (a recycled buffer is already this long).
        h.buf.resize(cap, 0);
    }
    let at = h.moved;
    if dma::read_from_guest(mem, &g.req.segments, &mut g.cursor, &mut h.buf[at..at + n]).is_err() {
        return dma_fault(None);
    }
    h.moved += n;
    let g_finished = g.cursor.offset as usize == glen;
    let short_end = g_finished && glen % mps != 0;
    let needs_zlp = g_finished && glen % mps == 0 && g.req.zero();
    let urb_full = h.moved == cap;
    if needs_zlp {
        // Leave the request at the front; the next step sends the ZLP, to
        // this transfer or, if it is full, to the next one.
        return Step {
            bytes: n,
            urb_done: urb_full.then_some(UrbStatus::Ok),
            guest_done: None,
        };
    }
    Step {
        bytes: n,
        urb_done: (short_end || urb_full).then_some(UrbStatus::Ok),
        guest_done: g_finished.then_some(Status::Ok),
    }
}

/// OUT: the host's data goes into the guest's buffer, packet by packet.
fn step_out<T, M: vm_memory::GuestMemory + ?Sized>(
    mem: &M,
    g: &mut GuestReq<T>,
    h: &mut Urb,
    mps: usize,
    limit: usize,
) -> Step {
    let UrbKind::Out { ref data, zlp } = h.kind else {
        unreachable!("OUT endpoints only queue OUT transfers")
    };
    let total = data.len();
    let h_left = total - h.moved;
    let glen = g.req.length as usize;
    let room = glen - g.cursor.offset as usize;
    if h_left == 0 {
        // All data is out; what remains is a zero-length packet, which ends
        // the guest's request short.
        return Step {
            bytes: 0,
            urb_done: Some(UrbStatus::Ok),
            guest_done: Some(Status::Ok),
        };
    }
    if room == 0 {
        return Step {
            bytes: 0,
            urb_done: None,
            guest_done: Some(Status::Ok),
        };
    }
    let n = if h_left <= room { h_left } else { room / mps * mps };
    if n == 0 {
        // Babble: a packet larger than the room left in the buffer.
        let p = mps.min(h_left);
        let at = h.moved;
        if dma::write_to_guest(mem, &g.req.segments, &mut g.cursor, &data[at..at + room]).is_err() {
            return dma_fault(None);
        }
        h.moved += p;
        let urb_finished = h.moved == total && !(total % mps == 0 && zlp);
        return Step {
            bytes: room,
            urb_done: urb_finished.then_some(UrbStatus::Ok),
            guest_done: Some(Status::Overflow),
        };
    }
    let n = clamp_to_limit(n, limit, mps);
    let at = h.moved;
    if dma::write_to_guest(mem, &g.req.segments, &mut g.cursor, &data[at..at + n]).is_err() {
        return dma_fault(None);
    }
    h.moved += n;
    let h_finished = h.moved == total;
    let short_end = h_finished && total % mps != 0;
    let needs_zlp = h_finished && total % mps == 0 && zlp;
    let g_full = g.cursor.offset as usize == glen;
    Step {
        bytes: n,
        // With a ZLP still to send, the transfer stays at the front and the
        // next step delivers it (to this request or, if full, the next).
        urb_done: (h_finished && !needs_zlp).then_some(UrbStatus::Ok),
        guest_done: (short_end || g_full).then_some(Status::Ok),
    }
}

/// At most `limit` bytes (whole packets, at least one) of the `n` a step
/// could move.
fn clamp_to_limit(n: usize, limit: usize, mps: usize) -> usize {
    if n <= limit {
        n
    } else {
        (limit / mps * mps).max(mps).min(n)
    }
}

/// The bandwidth clock after `bytes` more at `rate` bytes per second.
fn pay(clock: Instant, now: Instant, rate: u64, bytes: usize) -> Instant {
    clock.max(now) + Duration::from_secs_f64(bytes as f64 / rate as f64)
}

fn dma_fault(urb: Option<UrbStatus>) -> Step {
    Step {
        bytes: 0,
        urb_done: Some(urb.unwrap_or(UrbStatus::DmaFault)),
        guest_done: Some(Status::DmaFault),
    }
}

#[cfg(test)]
mod tests;
