// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Transfer chains from the guest, through the vhost-user backend as QEMU
//! drives it: descriptor tables and available rings in guest memory, the
//! backend's queue handling (`handle_event`: chain splitting, head
//! tracking, request parsing), the device model's queueing and pumping
//! against host transfers, and the used ring the statuses come back on.
//!
//! The guest side is written by the input: well-formed requests cut over
//! several descriptors, raw descriptors and memory, any head on the
//! available ring, commands, eventq buffers, kicks, resets and stopped
//! rings; the host side submits and cancels URBs and control transfers.
//! Checked: every head the device takes from the xferq comes back on the
//! used ring exactly once (when the gadget pulls down at the latest), with
//! a used length of 0 or the status's 8 bytes.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost_device_udc::device::{ControlResult, ControllerConfig, Urb, UrbKind, UrbResult};
use vhost_device_udc::inject::InjectConfig;
use vhost_device_udc::request::{Command, EpEnable};
use vhost_device_udc::udc::Udc;
use vhost_device_udc::usb::SetupPacket;
use vhost_device_udc::vhu_udc::{VhostUserUdcBackend, VringRings};
use vhost_device_udc::wire::*;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::descriptors::SPEEDS;
use crate::device_ops::{address, injection, request_bytes, xfer_bytes, EPS, REGIONS};
use crate::script::Script;
use crate::Input;

/// Entries per queue: small, so the rings wrap and fill.
const QSIZE: u16 = 16;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
/// Where the guest puts request bytes, buffers and indirect tables.
const DATA: u64 = 0x4000;
const DATA_END: u64 = 0x2_0000;
const MAX_OPS: usize = 300;

/// The rings live in a region of their own, away from every address the
/// input can name (see [`address`]): what the device writes for the guest
/// (statuses, events, OUT data) then never lands on them, and what the
/// used ring says is the device's own doing.
const RINGS: u64 = 0x10_0000;

fn ring_base(q: u16) -> u64 {
    RINGS + u64::from(q) * 0x1000
}

fn chain_memory() -> GuestMemoryMmap<()> {
    let mut ranges: Vec<(GuestAddress, usize)> = REGIONS.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    ranges.push((GuestAddress(RINGS), NUM_QUEUES * 0x1000));
    GuestMemoryMmap::from_ranges(&ranges).expect("mapping the chain target's guest memory")
}
fn desc_table(q: u16) -> u64 {
    ring_base(q)
}
fn avail_ring(q: u16) -> u64 {
    ring_base(q) + 0x400
}
fn used_ring(q: u16) -> u64 {
    ring_base(q) + 0x800
}

/// An address in the data area for `len` bytes.
fn data_addr(input: &mut Input, len: usize) -> u64 {
    let room = DATA_END - DATA - len as u64;
    DATA + u64::from(input.u16()) % room.max(1)
}

struct Harness {
    mem: GuestMemoryAtomic<GuestMemoryMmap<()>>,
    udc: Arc<Udc>,
    backend: VhostUserUdcBackend,
    vrings: Vec<VringRwLock>,
    /// The driver's next available index, per queue.
    avail_idx: [u16; NUM_QUEUES],
    /// Next free descriptor slot the structured writers use, per queue.
    next_slot: [u16; NUM_QUEUES],
    /// Heads made available on the xferq since the last reset, in order.
    published: Vec<u16>,
    /// How many of `published` the device has taken.
    taken: usize,
    /// Per head: taken by the device and not yet on the used ring.
    outstanding: [u32; QSIZE as usize],
    /// The used ring entries seen so far.
    used_seen: u16,
    /// More used entries came at once than the ring holds: the per-head
    /// count cannot be followed for the rest of this input.
    overrun: bool,
    stopped: bool,
    urbs: Vec<Receiver<UrbResult>>,
    controls: Vec<Receiver<ControlResult>>,
    next_tag: u64,
    now: Instant,
    inject: InjectConfig,
}

impl Harness {
    fn new(input: &mut Input) -> Harness {
        let cfg = ControllerConfig {
            max_speed: SPEEDS[usize::from(input.u8()) % SPEEDS.len()],
            max_segments: input.pick(&[16384, 16384, 64, 2]),
            ..ControllerConfig::default()
        };
        let mem = GuestMemoryAtomic::new(chain_memory());
        let udc = Udc::new(cfg, Box::<VringRings>::default());
        let backend = VhostUserUdcBackend::new(udc.clone()).expect("an eventfd for the backend");
        backend.update_memory(mem.clone()).expect("memory update");
        let vrings = (0..NUM_QUEUES)
            .map(|_| VringRwLock::new(mem.clone(), QSIZE).expect("a vring"))
            .collect();
        let mut h = Harness {
            mem,
            udc,
            backend,
            vrings,
            avail_idx: [0; NUM_QUEUES],
            next_slot: [0; NUM_QUEUES],
            published: Vec::new(),
            taken: 0,
            outstanding: [0; QSIZE as usize],
            used_seen: 0,
            overrun: false,
            stopped: false,
            urbs: Vec::new(),
            controls: Vec::new(),
            next_tag: 0,
            now: Instant::now(),
            inject: InjectConfig::default(),
        };
        h.start_rings();
        h
    }

    /// The frontend's setup of the rings (or their restart after a reset).
    fn start_rings(&mut self) {
        for (q, v) in self.vrings.iter().enumerate() {
            let q = q as u16;
            v.set_queue_size(QSIZE);
            v.set_queue_info(desc_table(q), avail_ring(q), used_ring(q))
                .expect("ring addresses inside guest memory");
            v.set_queue_ready(true);
            v.set_enabled(true);
        }
    }

    fn memory(&self) -> vm_memory::GuestMemoryLoadGuard<GuestMemoryMmap<()>> {
        self.mem.memory()
    }

    fn write(&self, addr: u64, bytes: &[u8]) {
        // The input may point anywhere; outside memory nothing is written,
        // as a guest's stray write would fault in the guest.
        let _ = self.memory().write_slice(bytes, GuestAddress(addr));
    }

    fn write_desc(&self, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = Vec::with_capacity(16);
        d.extend(addr.to_le_bytes());
        d.extend(len.to_le_bytes());
        d.extend(flags.to_le_bytes());
        d.extend(next.to_le_bytes());
        self.write(at, &d);
    }

    fn publish(&mut self, q: u16, head: u16) {
        let i = self.avail_idx[q as usize];
        let slot = avail_ring(q) + 4 + 2 * u64::from(i % QSIZE);
        self.write(slot, &head.to_le_bytes());
        self.avail_idx[q as usize] = i.wrapping_add(1);
        self.write(avail_ring(q) + 2, &self.avail_idx[q as usize].to_le_bytes());
        if q == XFERQ {
            self.published.push(head);
        }
    }

    fn kick(&mut self, q: u16) {
        // Errors are the backend's answer to a broken ring; the daemon
        // logs them and goes on, and so does this target.
        let _ = self.backend.handle_event(q, EventSet::IN, &self.vrings, 0);
    }

    /// Writes a chain of `parts` (address, length, writable) into the
    /// table of queue `q` from the next free slot (or, with `indirect`, as
    /// an indirect table in the data area) and returns its head.
    fn write_chain(&mut self, input: &mut Input, q: u16, parts: &[(u64, u32, bool)], indirect: bool) -> u16 {
        let head = self.next_slot[q as usize];
        if indirect {
            let table = data_addr(input, parts.len() * 16);
            for (k, &(addr, len, w)) in parts.iter().enumerate() {
                let last = k + 1 == parts.len();
                let flags = if w { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
                self.write_desc(table + 16 * k as u64, addr, len, flags, k as u16 + 1);
            }
            self.write_desc(
                desc_table(q) + 16 * u64::from(head),
                table,
                (parts.len() * 16) as u32,
                DESC_F_INDIRECT,
                0,
            );
            self.next_slot[q as usize] = (head + 1) % QSIZE;
            return head;
        }
        let mut slot = head;
        for (k, &(addr, len, w)) in parts.iter().enumerate() {
            let last = k + 1 == parts.len();
            let next = (slot + 1) % QSIZE;
            let flags = if w { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
            self.write_desc(desc_table(q) + 16 * u64::from(slot), addr, len, flags, next);
            slot = next;
        }
        self.next_slot[q as usize] = slot;
        head
    }

    /// A transfer request cut over up to three readable descriptors, then
    /// room for its status, made available on the xferq.
    fn post_transfer(&mut self, input: &mut Input) {
        let tag = self.next_tag % 8;
        self.next_tag += 1;
        let bytes = xfer_bytes(input, tag);
        let at = data_addr(input, bytes.len());
        self.write(at, &bytes);
        let mut cuts: Vec<usize> = (0..usize::from(input.u8() % 3))
            .map(|_| usize::from(input.u8()) % (bytes.len() + 1))
            .collect();
        cuts.sort_unstable();
        let mut parts = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain(std::iter::once(bytes.len())) {
            if c > prev || parts.is_empty() {
                parts.push((at + prev as u64, (c - prev) as u32, false));
            }
            prev = c;
        }
        let status_room: u32 = input.pick(&[8, 8, 8, 8, 0, 4, 16]);
        let status_at = data_addr(input, 16);
        if input.one_in(8) && status_room >= 8 {
            parts.push((status_at, 3, true));
            parts.push((status_at + 3, status_room - 3, true));
        } else {
            parts.push((status_at, status_room, true));
        }
        let indirect = input.one_in(8);
        let head = self.write_chain(input, XFERQ, &parts, indirect);
        self.publish(XFERQ, head);
        if !input.one_in(4) {
            self.kick(XFERQ);
        }
    }

    /// A command on the controlq, mostly well formed, and its kick.
    fn post_command(&mut self, input: &mut Input) {
        let mut req = vec![0u8; CTRL_REQ_SIZE];
        let opcode: u16 = if input.one_in(8) {
            input.u16()
        } else {
            u16::from(input.u8() % 10 + 1)
        };
        req[0..2].copy_from_slice(&opcode.to_le_bytes());
        req[2] = input.pick(&EPS);
        req[3] = input.u8() % 4;
        req[4..8].copy_from_slice(&u32::from(input.u8() % 3).to_le_bytes());
        let mps: u16 = input.pick(&[64, 512, 1024, 0, 2048]);
        req[8..10].copy_from_slice(&mps.to_le_bytes());
        req[16..24].copy_from_slice(&u64::from(input.u8() % 8).to_le_bytes());
        let at = data_addr(input, req.len());
        self.write(at, &req);
        let resp_at = data_addr(input, CTRL_RESP_SIZE);
        let len = if input.one_in(8) {
            CTRL_REQ_SIZE as u32 / 2
        } else {
            CTRL_REQ_SIZE as u32
        };
        let head = self.write_chain(
            input,
            CONTROLQ,
            &[(at, len, false), (resp_at, CTRL_RESP_SIZE as u32, true)],
            false,
        );
        self.publish(CONTROLQ, head);
        self.kick(CONTROLQ);
    }

    fn post_event_buffer(&mut self, input: &mut Input) {
        let len: u32 = input.pick(&[EVENT_SIZE as u32, EVENT_SIZE as u32, 4, 0, 64]);
        let at = data_addr(input, 64);
        let head = self.write_chain(input, EVENTQ, &[(at, len, true)], false);
        self.publish(EVENTQ, head);
        self.kick(EVENTQ);
    }

    fn configure(&mut self, input: &mut Input) {
        let mut g = self.udc.lock();
        g.command(Command::Pullup(true));
        g.bus_reset(SPEEDS[usize::from(input.u8()) % SPEEDS.len()]);
        for ep in [0x81, 0x02, 0x83] {
            g.command(Command::EpEnable(EpEnable {
                ep,
                ep_type: if ep == 0x83 { USB_XFER_INT } else { USB_XFER_BULK },
                max_packet: input.pick(&[64, 512, 1024]),
                interval: 1,
                max_burst: 0,
                mult: 0,
            }));
        }
        let (tx, rx) = channel();
        g.start_control(SetupPacket::set_address(2), Vec::new(), tx);
        self.controls.push(rx);
        let (tx, rx) = channel();
        g.start_control(SetupPacket::set_configuration(1), Vec::new(), tx);
        self.controls.push(rx);
        drop(g);
        // The gadget's zero-length status stage completes SET_CONFIGURATION.
        let status_stage = request_bytes(0x80, 0, 0, 0, 0, &[]);
        let at = DATA;
        self.write(at, &status_stage);
        let parts = [(at, status_stage.len() as u32, false), (at + 0x100, 8, true)];
        let head = self.write_chain(input, XFERQ, &parts, false);
        self.publish(XFERQ, head);
        self.kick(XFERQ);
    }

    fn step(&mut self, input: &mut Input) {
        match input.u8() % 18 {
            0..=3 => self.post_transfer(input),
            4 => {
                // A raw descriptor anywhere in the xferq's table.
                let slot = u64::from(input.u8() % QSIZE as u8);
                let addr = address(input);
                let len = if input.bool() {
                    input.u32()
                } else {
                    u32::from(input.u8())
                };
                let flags = if input.one_in(8) {
                    input.u16()
                } else {
                    u16::from(input.u8() % 8)
                };
                let next = if input.one_in(8) {
                    input.u16()
                } else {
                    u16::from(input.u8()) % QSIZE
                };
                self.write_desc(desc_table(XFERQ) + 16 * slot, addr, len, flags, next);
            }
            5 => {
                let bytes = input.short_bytes();
                let at = data_addr(input, bytes.len());
                self.write(at, bytes);
            }
            6 => {
                let head = if input.one_in(8) {
                    input.u16()
                } else {
                    u16::from(input.u8()) % QSIZE
                };
                self.publish(XFERQ, head);
            }
            7 => self.kick(XFERQ),
            8 => self.post_command(input),
            9 => self.post_event_buffer(input),
            10 => {
                let ep = input.pick(&EPS);
                let kind = if input.bool() {
                    UrbKind::In {
                        len: usize::from(input.u16() % 0x2000),
                    }
                } else {
                    UrbKind::Out {
                        data: vec![input.u8(); usize::from(input.u16() % 0x2000)],
                        zlp: input.bool(),
                    }
                };
                let (tx, rx) = channel();
                self.udc
                    .lock()
                    .submit_urb(ep, Urb::new(u64::from(input.u8() % 8), kind, tx));
                self.urbs.push(rx);
            }
            11 => {
                let ep = input.pick(&EPS);
                self.udc.lock().cancel_urb(ep, u64::from(input.u8() % 8));
            }
            12 => {
                let setup = SetupPacket {
                    request_type: input.pick(&[0x80, 0x00, 0xc0, 0x40, 0x02]),
                    request: input.u8() % 13,
                    value: u16::from(input.u8()),
                    index: 0,
                    length: input.pick(&[0, 8, 18, 64, 255]),
                };
                let data = if setup.is_in() {
                    Vec::new()
                } else {
                    vec![0xa5; usize::from(setup.length)]
                };
                let (tx, rx) = channel();
                self.udc.lock().start_control(setup, data, tx);
                self.controls.push(rx);
            }
            13 => {
                self.now += Duration::from_micros(u64::from(input.u16()));
                self.udc.lock().tick(self.now);
            }
            14 => {
                let mut g = self.udc.lock();
                match input.u8() % 5 {
                    0 => drop(g.bus_reset(SPEEDS[usize::from(input.u8()) % SPEEDS.len()])),
                    1 => g.plug(input.bool()),
                    2 => drop(g.suspend()),
                    3 => drop(g.resume()),
                    _ => g.abort_control(),
                }
            }
            15 => self.configure(input),
            16 => match input.u8() % 3 {
                0 => self.virtio_reset(),
                _ => self.stop_or_restart(),
            },
            _ => {
                let mut cfg = self.inject.clone();
                injection(input, &mut cfg);
                let mut g = self.udc.lock();
                if g.config().check_injection(&cfg).is_ok() {
                    g.update_injection(cfg.clone());
                    self.inject = cfg;
                }
            }
        }
    }

    /// The driver resets the device: the backend forgets what it holds,
    /// and the driver sets its rings up from scratch.
    fn virtio_reset(&mut self) {
        self.backend.reset_device();
        for q in 0..NUM_QUEUES as u16 {
            self.write(ring_base(q), &[0u8; 0x1000]);
        }
        for v in &self.vrings {
            v.get_mut().get_queue_mut().reset();
        }
        self.start_rings();
        self.stopped = false;
        self.avail_idx = [0; NUM_QUEUES];
        self.next_slot = [0; NUM_QUEUES];
        self.published.clear();
        self.taken = 0;
        self.outstanding = [0; QSIZE as usize];
        self.used_seen = 0;
    }

    /// GET_VRING_BASE stops the rings; the next start runs them again.
    fn stop_or_restart(&mut self) {
        if self.stopped {
            for v in &self.vrings {
                v.set_queue_ready(true);
            }
            self.stopped = false;
            self.kick(XFERQ);
        } else {
            for (q, v) in self.vrings.iter().enumerate() {
                v.set_queue_ready(false);
                let _ = self.backend.stop_vring(q as u32);
            }
            self.stopped = true;
        }
    }

    /// Follows the xferq: heads taken, and the used entries written since
    /// the last look, each returning a head that was taken.
    fn check(&mut self) {
        let next_avail = self.vrings[XFERQ as usize].get_ref().get_queue().next_avail();
        // The device takes entries in order; it never takes more than made
        // available.
        let taken_now = usize::from(next_avail) + (self.taken & !0xffff);
        let taken_now = if taken_now < self.taken {
            taken_now + 0x1_0000
        } else {
            taken_now
        };
        assert!(
            taken_now <= self.published.len(),
            "the device took {taken_now} entries, {} were made available",
            self.published.len()
        );
        for &head in &self.published[self.taken..taken_now] {
            if head < QSIZE {
                self.outstanding[usize::from(head)] += 1;
            }
        }
        self.taken = taken_now;

        let mem = self.memory();
        let used_idx: u16 = mem.read_obj(GuestAddress(used_ring(XFERQ) + 2)).unwrap();
        let new = used_idx.wrapping_sub(self.used_seen);
        if new > QSIZE {
            self.overrun = true;
        }
        for k in 0..new.min(QSIZE) {
            let i = used_idx.wrapping_sub(new.min(QSIZE)).wrapping_add(k) % QSIZE;
            let at = used_ring(XFERQ) + 4 + 8 * u64::from(i);
            let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
            assert!(
                id < u32::from(QSIZE),
                "used entry for head {id}, outside the queue"
            );
            assert!(
                len == 0 || len == XFER_STATUS_SIZE as u32,
                "used length {len} for head {id}"
            );
            if !self.overrun {
                let n = &mut self.outstanding[id as usize];
                assert!(*n > 0, "head {id} came back more often than the device took it");
                *n -= 1;
            }
        }
        self.used_seen = used_idx;
    }

    fn finish(&mut self) {
        if self.stopped {
            self.stop_or_restart();
        }
        self.kick(XFERQ);
        self.udc.lock().command(Command::Pullup(false));
        self.check();
        if !self.overrun {
            let left: u32 = self.outstanding.iter().sum();
            assert_eq!(left, 0, "heads taken and never returned: {:?}", self.outstanding);
        }
    }
}

pub fn run(data: &[u8]) {
    session(data);
}

/// Runs one input; returns the bytes the endpoints moved.
fn session(data: &[u8]) -> u64 {
    let mut input = Input::new(data);
    let mut h = Harness::new(&mut input);
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        h.step(&mut input);
        h.check();
    }
    let moved = h
        .udc
        .lock()
        .status()
        .endpoints
        .iter()
        .map(|e| e.stats.bytes)
        .sum();
    h.finish();
    moved
}

/// Sessions through the transport: configured, requests posted (cut over
/// descriptors, indirect), host transfers, commands, event buffers.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    use crate::device_ops::XferScript;
    let start = || {
        let mut s = Script::default();
        // SuperSpeed controller, the full segment limit; configured at high
        // speed with 512-byte bulk packets.
        s.u8(3).u8(0).u8(15).u8(2).u8(1).u8(1).u8(1);
        s
    };
    // A request at data offset `at`, its status 8 bytes, cut `cuts` times.
    let post = |s: &mut Script, ep: u8, len: u16, buf: u16, at: u16, cuts: &[u8], indirect: bool| {
        s.u8(0).xfer(ep, false, len, buf).u16(at).u8(cuts.len() as u8);
        for &c in cuts {
            s.u8(c);
        }
        s.u8(0)
            .u16(at + 0x400)
            .u8(1)
            .u8(if indirect { 0 } else { 1 })
            .u8(1);
        if indirect {
            s.u16(at + 0x800);
        }
    };
    let urb_in = |s: &mut Script, len: u16| {
        s.u8(10).pick(&EPS, 0x81).u8(1).u16(len).u8(0);
    };
    let urb_out = |s: &mut Script, len: u16| {
        s.u8(10).pick(&EPS, 0x02).u8(0).u8(0x33).u16(len).u8(0).u8(1);
    };
    let mut v = Vec::new();

    let mut s = start();
    post(&mut s, 0x81, 1000, 0x6000, 0x2000, &[], false);
    urb_in(&mut s, 4096);
    v.push(("in".to_string(), s.0));

    let mut s = start();
    post(&mut s, 0x02, 512, 0x6000, 0x2000, &[10, 30], false);
    urb_out(&mut s, 512);
    post(&mut s, 0x02, 512, 0x7000, 0x2100, &[], true);
    urb_out(&mut s, 100);
    v.push(("out-cut-and-indirect".to_string(), s.0));

    // Commands: halt ep2out, FIFO status, a cancel by tag.
    let mut s = start();
    post(&mut s, 0x81, 64, 0x6000, 0x2000, &[], false);
    s.u8(8)
        .u8(6)
        .pick(&EPS, 0x81)
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(0)
        .u16(0x3000)
        .u16(0x3100)
        .u8(1);
    s.u8(8)
        .u8(3)
        .pick(&EPS, 0x02)
        .u8(0)
        .u8(1)
        .u8(0)
        .u8(0)
        .u16(0x3200)
        .u16(0x3300)
        .u8(1);
    v.push(("commands".to_string(), s.0));

    // Event buffers, then a bus reset that fills one.
    let mut s = start();
    s.u8(9).u8(0).u16(0x3000).u8(9).u8(0).u16(0x3100);
    s.u8(14).u8(0).u8(3);
    v.push(("events".to_string(), s.0));

    // Stopped rings with a completion waiting, then running again.
    let mut s = start();
    post(&mut s, 0x81, 100, 0x6000, 0x2000, &[], false);
    s.u8(16).u8(1);
    urb_in(&mut s, 512);
    s.u8(16).u8(1).u8(7);
    v.push(("stop-start".to_string(), s.0));

    // A virtio reset with a request in flight.
    let mut s = start();
    post(&mut s, 0x81, 100, 0x6000, 0x2000, &[], false);
    s.u8(16).u8(0);
    post(&mut s, 0x02, 100, 0x6000, 0x2000, &[], false);
    v.push(("reset".to_string(), s.0));
    v
}

#[cfg(test)]
mod tests {
    /// The seeds get requests through the transport and move their data.
    #[test]
    fn seeds_move_data() {
        for (name, bytes) in super::seeds() {
            let moved = super::session(&bytes);
            if ["in", "out-cut-and-indirect", "stop-start"].contains(&name.as_str()) {
                assert!(moved > 0, "seed {name} moved no data");
            }
        }
    }
}
