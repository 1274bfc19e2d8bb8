// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Random interleavings of device operations on the device model: the
//! driver's commands and transfer requests, the host's URBs and control
//! transfers, cancels, holds and releases, bus events, device resets,
//! injection settings and time passing.
//!
//! After every operation: each completion names a request in flight (none
//! completes twice, none that was never queued), every request in flight
//! is in one of the device's queues and every URB without a result in its
//! endpoint's, so nothing is lost or kept behind the caller's back. At
//! the end the gadget pulls down, and then every request and every host
//! transfer must have completed exactly once.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use vhost_device_udc::device::GuestMem;
use vhost_device_udc::device::{
    ControlResult, ControllerConfig, Device, HeldRequest, Output, Urb, UrbKind, UrbResult,
};
use vhost_device_udc::inject::InjectConfig;
use vhost_device_udc::request::{parse_command, parse_xfer, Command, EpEnable, HaltRequest, XferRequest};
use vhost_device_udc::usb::SetupPacket;
use vhost_device_udc::wire::*;
use vm_memory::{ByteValued, GuestAddress, GuestMemoryMmap, Le16, Le32, Le64};

use crate::descriptors::SPEEDS;
use crate::script::Script;
use crate::Input;

/// Guest memory: two regions with a hole between them, as below 4 GiB.
pub const REGIONS: [(u64, usize); 2] = [(0, 0x2_0000), (0x4_0000, 0x2_0000)];
/// The requests the driver may have in flight: a queue's worth, as the
/// transport's bound on descriptor heads allows.
const MAX_IN_FLIGHT: usize = 64;
/// Operations per input; longer inputs are cut there.
const MAX_OPS: usize = 400;

/// Endpoints the operations pick from: ep0, bulk, interrupt, one the
/// default controller lacks (ep15 OUT), and an odd address.
pub const EPS: [u8; 9] = [0x00, 0x80, 0x81, 0x02, 0x83, 0x04, 0x8f, 0x0f, 0x75];

pub fn guest_memory() -> GuestMemoryMmap<()> {
    let ranges: Vec<(GuestAddress, usize)> = REGIONS.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    GuestMemoryMmap::from_ranges(&ranges).expect("mapping the fuzz target's guest memory")
}

/// A guest address: mostly inside a region, sometimes in the hole, past
/// the end, or far beyond memory (the top bit set: overflows and
/// wrap-around, and never an address of the chain target's rings).
pub fn address(input: &mut Input) -> u64 {
    match input.u8() % 8 {
        0..=3 => u64::from(input.u16()),
        4 | 5 => 0x4_0000 + u64::from(input.u16()),
        6 => 0x2_0000 + u64::from(input.u16()),
        _ => input.u64() | 1 << 63,
    }
}

/// A transfer request's bytes as the driver writes them (section 5),
/// built from the input with the fields a driver gets wrong most often
/// under the input's control.
pub fn xfer_bytes(input: &mut Input, tag: u64) -> Vec<u8> {
    let ep = if input.one_in(8) {
        input.u8()
    } else {
        input.pick(&EPS)
    };
    let flags = match input.u8() % 8 {
        0 => VIRTIO_UDC_XFER_F_ZERO,
        1 => input.u8(),
        _ => 0,
    };
    let length = match input.u8() % 4 {
        0 => 0,
        1 => u32::from(input.u8()),
        2 => u32::from(input.u16()),
        _ => input.u32(),
    };
    let nsegs = usize::from(input.u8() % 6);
    let mut segs = Vec::new();
    for _ in 0..nsegs {
        let addr = address(input);
        let len = if input.one_in(4) {
            input.u32()
        } else {
            u32::from(input.u16())
        };
        segs.push((addr, len));
    }
    let declared = if input.one_in(16) {
        input.u32()
    } else {
        nsegs as u32
    };
    request_bytes(ep, flags, length, declared, tag, &segs)
}

/// The bytes of a transfer request with `segs` after its header.
pub fn request_bytes(
    ep: u8,
    flags: u8,
    length: u32,
    num_segs: u32,
    tag: u64,
    segs: &[(u64, u32)],
) -> Vec<u8> {
    let mut v = VirtioUdcXferReq {
        opcode: Le16::from(VIRTIO_UDC_XFER_OP_TRANSFER),
        ep,
        flags,
        length: Le32::from(length),
        num_segs: Le32::from(num_segs),
        reserved: Le32::from(0),
        tag: Le64::from(tag),
    }
    .as_slice()
    .to_vec();
    for &(addr, len) in segs {
        let s = VirtioUdcSeg {
            addr: Le64::from(addr),
            len: Le32::from(len),
            reserved: Le32::from(0),
        };
        v.extend_from_slice(s.as_slice());
    }
    v
}

/// A command as the driver sends it: mostly well formed, sometimes raw.
pub fn command(input: &mut Input, tags: &[u64]) -> Option<Command> {
    let ep = input.pick(&EPS);
    let cmd = match input.u8() % 12 {
        0 => Command::Pullup(input.bool()),
        1 | 2 => Command::EpEnable(EpEnable {
            ep,
            ep_type: input.u8() % 5,
            max_packet: input.pick(&[8, 64, 512, 1024, 0, 1025, 3]),
            interval: input.u8(),
            max_burst: input.u8(),
            mult: input.u8(),
        }),
        3 => Command::EpDisable { ep },
        4 => Command::EpSetHalt {
            ep,
            halt: input.pick(&[HaltRequest::Clear, HaltRequest::Halt, HaltRequest::Wedge]),
        },
        5 => Command::EpFifoStatus { ep },
        6 => Command::EpFifoFlush { ep },
        7 => {
            let tag = match tags {
                [] => u64::from(input.u8()),
                t => t[usize::from(input.u8()) % t.len()],
            };
            Command::XferCancel { ep, tag }
        }
        8 => Command::GetFrame,
        9 => Command::Wakeup,
        10 => Command::SetSelfPowered(input.bool()),
        _ => return parse_command(input.bytes(CTRL_REQ_SIZE)).ok(),
    };
    Some(cmd)
}

/// One injection setting from the documented keys and values.
pub fn injection(input: &mut Input, cfg: &mut InjectConfig) {
    const KEYS: [&str; 17] = [
        "latency",
        "bandwidth",
        "chunk",
        "nak",
        "nak_time",
        "reorder",
        "hold",
        "stall",
        "babble",
        "short",
        "proto_error",
        "io_error",
        "reset",
        "disconnect",
        "reconnect_after",
        "in_checksum",
        "out_poison",
    ];
    const VALUES: [&str; 16] = [
        "off", "always", "50%", "every:2", "nth:1,3", "next:1", "1ms", "0..3ms", "100us", "512,1ms",
        "1,10us", "1MB/s", "10%", "0", "4K,0ms", "2ms",
    ];
    const SCOPES: [&str; 4] = ["", "ep1in.", "ep2out.", "ep3in."];
    let key = format!("{}{}", input.pick(&SCOPES), input.pick(&KEYS));
    let value = input.pick(&VALUES);
    let _ = cfg.set(&key, value);
    if input.one_in(4) {
        cfg.seed = u64::from(input.u8());
    }
}

struct Request {
    length: u32,
}

struct HostXfer {
    id: u64,
    ep: u8,
    rx: Receiver<UrbResult>,
    done: bool,
}

struct Harness {
    dev: Device<u64>,
    mem: GuestMem,
    /// The requests in flight, by token.
    in_flight: BTreeMap<u64, Request>,
    next_token: u64,
    urbs: Vec<HostXfer>,
    next_urb: u64,
    controls: Vec<(Receiver<ControlResult>, bool)>,
    held: Vec<HeldRequest>,
    /// The time the device model is told it is.
    now: Instant,
    inject: InjectConfig,
    /// Requests that completed with OK and data, for the seeds' tests.
    moved: u64,
}

impl Harness {
    fn new(input: &mut Input) -> Harness {
        let cfg = ControllerConfig {
            max_speed: SPEEDS[usize::from(input.u8()) % SPEEDS.len()],
            remote_wakeup: input.bool(),
            ..ControllerConfig::default()
        };
        let mut dev = Device::new(cfg);
        let mem: GuestMem = std::sync::Arc::new(
            vhost_device_udc::iommu::DeviceIommu::default().memory(guest_memory(), false),
        );
        dev.set_memory(mem.clone());
        Harness {
            dev,
            mem,
            in_flight: BTreeMap::new(),
            next_token: 1,
            urbs: Vec::new(),
            next_urb: 1,
            controls: Vec::new(),
            held: Vec::new(),
            now: Instant::now(),
            inject: InjectConfig::default(),
            moved: 0,
        }
    }

    fn tags(&self) -> Vec<u64> {
        // Tags are small (see `queue`), so cancels by tag meet requests.
        (0..8).collect()
    }

    fn queue(&mut self, input: &mut Input) {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return;
        }
        let tag = u64::from(input.u8() % 8);
        let bytes = xfer_bytes(input, tag);
        let token = self.next_token;
        self.next_token += 1;
        let cfg = self.dev.config().clone();
        let limit = cfg.segment_limit();
        let mem = self.mem.clone();
        match parse_xfer(&bytes, limit, |ep| cfg.has_endpoint(ep), Some(&*mem)) {
            Ok(req) => {
                self.in_flight.insert(token, Request { length: req.length });
                self.dev.queue_xfer(token, req);
            }
            Err(r) => {
                self.in_flight.insert(token, Request { length: 0 });
                self.dev.reject(token, r.status);
            }
        }
    }

    fn submit(&mut self, input: &mut Input) {
        let ep = input.pick(&EPS);
        let id = self.next_urb;
        self.next_urb += 1;
        let kind = if input.bool() {
            UrbKind::In {
                len: usize::from(input.u16() % 0x4000),
            }
        } else {
            let len = usize::from(input.u16() % 0x4000);
            UrbKind::Out {
                data: vec![input.u8(); len],
                zlp: input.bool(),
            }
        };
        let (tx, rx) = channel();
        self.dev.submit_urb(ep, Urb::new(id, kind, tx));
        self.urbs.push(HostXfer {
            id,
            ep,
            rx,
            done: false,
        });
    }

    fn control(&mut self, input: &mut Input) {
        let setup = SetupPacket {
            request_type: input.pick(&[0x00, 0x80, 0x02, 0x82, 0x21, 0xa1, 0xc0, 0x40, 0x01]),
            request: if input.bool() { input.u8() % 13 } else { input.u8() },
            value: if input.bool() {
                u16::from(input.u8())
            } else {
                input.u16()
            },
            index: u16::from(input.pick(&EPS)),
            length: input.pick(&[0, 2, 8, 18, 64, 255, 512, 4096]),
        };
        let data = if setup.is_in() {
            Vec::new()
        } else {
            vec![0x5a; usize::from(setup.length)]
        };
        let (tx, rx) = channel();
        self.dev.start_control(setup, data, tx);
        self.controls.push((rx, false));
    }

    fn step(&mut self, input: &mut Input) {
        match input.u8() % 20 {
            0 | 1 => {
                let tags = self.tags();
                if let Some(cmd) = command(input, &tags) {
                    self.dev.command(cmd);
                }
            }
            2..=4 => self.queue(input),
            5 | 6 => self.submit(input),
            7 => {
                let ep = input.pick(&EPS);
                let id = match self.urbs.len() {
                    0 => u64::from(input.u8()),
                    n => self.urbs[usize::from(input.u8()) % n].id,
                };
                self.dev.cancel_urb(ep, id);
            }
            8 => {
                let ep = input.pick(&EPS);
                if let Ok(Some(h)) = self.dev.hold_front(ep) {
                    assert!(h.length as usize >= h.segments.iter().map(|s| s.len as usize).sum::<usize>());
                    self.held.push(h);
                }
            }
            9 => {
                let (ep, handle, length) = self.pick_held(input);
                let status = Status::ALL[usize::from(input.u8()) % Status::ALL.len()];
                let actual = match input.u8() % 3 {
                    0 => length,
                    1 => length / 2,
                    _ => input.u32(),
                };
                let _ = self.dev.release_held(ep, handle, status, actual);
            }
            10 => {
                let (ep, handle, _) = self.pick_held(input);
                self.dev.unhold(ep, handle);
            }
            11 => {
                // Completions held by injection (`hold`), by their handles.
                let st = self.dev.status();
                let handles: Vec<(u8, u64)> = st
                    .endpoints
                    .iter()
                    .flat_map(|e| e.held_completions.iter().map(move |&h| (e.address, h)))
                    .collect();
                let (ep, handle) = match handles.len() {
                    0 => (input.pick(&EPS), u64::from(input.u8())),
                    n => handles[usize::from(input.u8()) % n],
                };
                let status = match input.u8() % 3 {
                    0 => None,
                    _ => Some(Status::ALL[usize::from(input.u8()) % Status::ALL.len()]),
                };
                let _ = self.dev.release_completion(ep, handle, status);
            }
            12 => self.control(input),
            13 => {
                if input.bool() {
                    self.dev.abort_control();
                } else {
                    self.control(input);
                }
            }
            14 => {
                let speed = SPEEDS[usize::from(input.u8()) % SPEEDS.len()];
                self.dev.bus_reset(speed);
            }
            15 => match input.u8() % 4 {
                0 => self.dev.plug(input.bool()),
                1 => self.dev.set_host_attached(input.bool()),
                2 => drop(self.dev.suspend()),
                _ => drop(self.dev.resume()),
            },
            16 => {
                // Time passes: up to about 65 ms, in microseconds.
                self.now += Duration::from_micros(u64::from(input.u16()));
                self.dev.tick(self.now);
            }
            17 => match input.u8() % 4 {
                0 => self.dev.set_dma_stopped(input.bool()),
                1 => {
                    // The virtio device reset: the driver takes back what it
                    // queued without completions, so none may come later.
                    self.dev.reset();
                    self.dev.take_outputs();
                    self.in_flight.clear();
                    self.held.clear();
                }
                2 => {
                    if self.dev.memory().is_some() {
                        self.dev.forget_memory();
                    } else {
                        self.dev.set_memory(self.mem.clone());
                    }
                }
                _ => self.dev.set_memory(self.mem.clone()),
            },
            18 => {
                let mut cfg = self.inject.clone();
                if input.one_in(8) {
                    cfg = InjectConfig::default();
                }
                injection(input, &mut cfg);
                if self.dev.config().check_injection(&cfg).is_ok() {
                    if input.bool() {
                        self.dev.set_injection(cfg.clone());
                    } else {
                        self.dev.update_injection(cfg.clone());
                    }
                    self.inject = cfg;
                }
            }
            _ => {
                // A short session: configured through the host's requests,
                // so the other operations meet a live bus often.
                self.dev.command(Command::Pullup(true));
                let speed = SPEEDS[usize::from(input.u8()) % SPEEDS.len()];
                self.dev.bus_reset(speed);
                for ep in [0x81, 0x02] {
                    self.dev.command(Command::EpEnable(EpEnable {
                        ep,
                        ep_type: USB_XFER_BULK,
                        max_packet: input.pick(&[64, 512, 1024]),
                        interval: 0,
                        max_burst: 0,
                        mult: 0,
                    }));
                }
                let (tx, rx) = channel();
                self.dev
                    .start_control(SetupPacket::set_address(3), Vec::new(), tx);
                self.controls.push((rx, false));
                // SET_CONFIGURATION goes to the gadget, whose zero-length
                // status request completes it.
                let (tx, rx) = channel();
                self.dev
                    .start_control(SetupPacket::set_configuration(1), Vec::new(), tx);
                self.controls.push((rx, false));
                let token = self.next_token;
                self.next_token += 1;
                self.in_flight.insert(token, Request { length: 0 });
                let status_stage = XferRequest {
                    ep: 0x80,
                    flags: 0,
                    length: 0,
                    tag: 0,
                    segments: Vec::new(),
                };
                self.dev.queue_xfer(token, status_stage);
            }
        }
    }

    fn pick_held(&mut self, input: &mut Input) -> (u8, u64, u32) {
        match self.held.len() {
            0 => (input.pick(&EPS), u64::from(input.u8()), 0),
            n => {
                let h = &self.held[usize::from(input.u8()) % n];
                (h.ep, h.handle, h.length)
            }
        }
    }

    /// Takes the device's outputs and the host's results, and checks them;
    /// with `queues`, also that the device's queues hold what is in flight
    /// (the status it takes that from costs more than an operation, so
    /// not after every one).
    fn check(&mut self, queues: bool) {
        for o in self.dev.take_outputs() {
            if let Output::XferDone {
                token,
                actual,
                status,
            } = o
            {
                let Some(r) = self.in_flight.remove(&token) else {
                    panic!(
                        "token {token} completed, but it is not in flight (completed twice, or never queued)"
                    );
                };
                assert!(
                    actual <= r.length,
                    "token {token}: actual {actual} over its length {}",
                    r.length
                );
                if status == Status::Ok && actual > 0 {
                    self.moved += 1;
                }
            }
        }
        for u in &mut self.urbs {
            while u.rx.try_recv().is_ok() {
                assert!(!u.done, "URB {} on {:#04x} got two results", u.id, u.ep);
                u.done = true;
            }
        }
        for (rx, done) in &mut self.controls {
            while rx.try_recv().is_ok() {
                assert!(!*done, "a control transfer got two results");
                *done = true;
            }
        }
        // Results are in: forget them, so the check stays cheap. A second
        // result could no longer be seen, but a second send would go to a
        // dropped receiver only after the first was taken here, and the
        // device finishes a URB by value, so it cannot send twice.
        self.urbs.retain(|u| !u.done);
        self.controls.retain(|(_, done)| !done);
        if !queues {
            return;
        }
        // Everything in flight is in exactly one queue of the device, and
        // every URB without a result is queued on its endpoint.
        let st = self.dev.status();
        let queued: usize = st
            .endpoints
            .iter()
            .map(|e| e.guest_queued + e.completions_waiting)
            .sum();
        assert_eq!(
            queued,
            self.in_flight.len(),
            "requests in flight and requests the device holds differ"
        );
        let host_queued: usize = st
            .endpoints
            .iter()
            .filter(|e| e.address & 0x7f != 0)
            .map(|e| e.host_queued)
            .sum();
        let pending = self.urbs.iter().filter(|u| !u.done).count();
        assert_eq!(
            host_queued, pending,
            "URBs without a result and URBs queued differ"
        );
    }

    /// The gadget pulls down: everything still in flight must complete.
    fn finish(&mut self) {
        self.dev.set_dma_stopped(false);
        if self.dev.memory().is_none() {
            self.dev.set_memory(self.mem.clone());
        }
        self.dev.command(Command::Pullup(false));
        self.check(true);
        assert!(
            self.in_flight.is_empty(),
            "{} requests never completed after the pull-up went off",
            self.in_flight.len()
        );
        assert!(
            self.urbs.is_empty(),
            "{} URBs without a result after the pull-up went off",
            self.urbs.len()
        );
        assert!(
            self.controls.is_empty(),
            "{} control transfers without a result after the pull-up went off",
            self.controls.len()
        );
    }
}

pub fn run(data: &[u8]) {
    session(data);
}

/// Runs one input; returns how many requests moved data.
fn session(data: &[u8]) -> u64 {
    let mut input = Input::new(data);
    let mut h = Harness::new(&mut input);
    for op in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        h.step(&mut input);
        h.check(op % 8 == 7);
    }
    h.finish();
    h.moved
}

/// Inputs that configure the bus and move data both ways, cancel, hold,
/// delay, halt and reset.
/// A transfer request in a seed script, as [`xfer_bytes`] decodes it.
pub(crate) trait XferScript {
    /// `ep` with one segment of `length` bytes at `addr` in region 0.
    fn xfer(&mut self, ep: u8, zero: bool, length: u16, addr: u16) -> &mut Self;
}

impl XferScript for Script {
    fn xfer(&mut self, ep: u8, zero: bool, length: u16, addr: u16) -> &mut Self {
        self.u8(1).pick(&EPS, ep);
        self.u8(if zero { 0 } else { 2 });
        self.u8(2).u16(length);
        if length == 0 {
            return self.u8(0).u8(1);
        }
        self.u8(1).u8(0).u16(addr).u8(1).u16(length).u8(1)
    }
}

pub fn seeds() -> Vec<(String, Vec<u8>)> {
    // SuperSpeed controller with remote wakeup; a session at high speed.
    let start = || {
        let mut s = Script::default();
        s.u8(3).u8(1).u8(19).u8(2).u8(1).u8(1);
        s
    };
    let queue = |s: &mut Script, tag: u8, ep: u8, len: u16, addr: u16| {
        s.u8(2).u8(tag).xfer(ep, false, len, addr);
    };
    let urb_in = |s: &mut Script, len: u16| {
        s.u8(5).pick(&EPS, 0x81).u8(1).u16(len);
    };
    let urb_out = |s: &mut Script, len: u16| {
        s.u8(5).pick(&EPS, 0x02).u8(0).u16(len).u8(0x5a).u8(0);
    };
    let mut v = Vec::new();

    let mut s = start();
    queue(&mut s, 1, 0x81, 1000, 0x1000);
    urb_in(&mut s, 4096);
    queue(&mut s, 2, 0x81, 512, 0x2000);
    urb_in(&mut s, 512);
    v.push(("in".to_string(), s.0));

    let mut s = start();
    queue(&mut s, 1, 0x02, 512, 0x1000);
    urb_out(&mut s, 700);
    queue(&mut s, 2, 0x02, 512, 0x3000);
    v.push(("out".to_string(), s.0));

    let mut s = start();
    queue(&mut s, 3, 0x81, 100, 0x1000);
    queue(&mut s, 4, 0x81, 100, 0x1800);
    s.u8(0).pick(&EPS, 0x81).u8(7).u8(3);
    urb_in(&mut s, 512);
    v.push(("cancel".to_string(), s.0));

    let mut s = start();
    queue(&mut s, 1, 0x81, 64, 0x1000);
    s.u8(8).pick(&EPS, 0x81);
    s.u8(9).u8(0).u8(0).u8(0);
    queue(&mut s, 2, 0x81, 64, 0x1000);
    s.u8(8).pick(&EPS, 0x81).u8(10).u8(0);
    urb_in(&mut s, 64);
    v.push(("hold-release".to_string(), s.0));

    // latency = 1ms, then a transfer and time passing.
    let mut s = start();
    s.u8(18).u8(1).u8(0).u8(0).u8(6).u8(1).u8(1);
    queue(&mut s, 1, 0x81, 256, 0x1000);
    urb_in(&mut s, 512);
    s.u8(16).u16(500).u8(16).u16(2000);
    v.push(("latency".to_string(), s.0));

    // hold = always: the completion waits for its release.
    let mut s = start();
    s.u8(18).u8(1).u8(0).u8(6).u8(1).u8(1).u8(0);
    queue(&mut s, 1, 0x02, 64, 0x1000);
    urb_out(&mut s, 64);
    s.u8(11).u8(0).u8(0);
    v.push(("held-completion".to_string(), s.0));

    let mut s = start();
    queue(&mut s, 1, 0x81, 4000, 0x1000);
    urb_in(&mut s, 1024);
    s.u8(17).u8(1);
    queue(&mut s, 2, 0x02, 64, 0x1000);
    v.push(("device-reset".to_string(), s.0));

    // Halt ep2out, a host OUT stalls, clear, data moves.
    let mut s = start();
    s.u8(0).pick(&EPS, 0x02).u8(4).u8(1);
    urb_out(&mut s, 64);
    s.u8(0).pick(&EPS, 0x02).u8(4).u8(0);
    queue(&mut s, 1, 0x02, 64, 0x1000);
    urb_out(&mut s, 64);
    v.push(("halt".to_string(), s.0));

    // A vendor control IN answered by the gadget's ep0 request.
    let mut s = start();
    s.u8(12).u8(6).u8(0).u8(1).u8(1).u8(0).u8(2).u8(2);
    queue(&mut s, 1, 0x80, 8, 0x1000);
    v.push(("control".to_string(), s.0));

    // The bus goes away under a transfer, and comes back.
    let mut s = start();
    queue(&mut s, 1, 0x81, 2048, 0x1000);
    urb_in(&mut s, 1024);
    s.u8(15).u8(0).u8(0).u8(15).u8(0).u8(1).u8(15).u8(2).u8(15).u8(3);
    v.push(("disconnect".to_string(), s.0));
    v
}

#[cfg(test)]
mod tests {
    /// The seeds reach the data path: a corpus that never moved data
    /// would leave it unfuzzed.
    #[test]
    fn seeds_move_data() {
        for (name, bytes) in super::seeds() {
            let moved = super::session(&bytes);
            if [
                "in",
                "out",
                "cancel",
                "hold-release",
                "latency",
                "halt",
                "control",
            ]
            .contains(&name.as_str())
            {
                assert!(moved > 0, "seed {name} moved no data");
            }
        }
    }
}
