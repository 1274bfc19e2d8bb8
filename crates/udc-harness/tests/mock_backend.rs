// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The harness against a tiny in-process vhost-user backend (not the real
//! daemon): checks the vhost-user setup, the rings, commands, events,
//! transfers and the fake gadget's enumeration loop end to end.
//!
//! The mock is deliberately simple: it completes every request at once, in
//! order, with a few of the spec's checks.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use udc_harness::wire::{self, *};
use udc_harness::*;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend,
    GuestMemoryMmap, Le16, Le32,
};
use vmm_sys_util::epoll::EventSet;

const T: Duration = Duration::from_secs(5);

/// What the mock saw, shared with the test.
#[derive(Debug, Default)]
struct Log {
    /// (ep, bytes) of every IN transfer's data.
    in_data: Vec<(u8, Vec<u8>)>,
    /// Commands (opcode, ep).
    commands: Vec<(u16, u8)>,
}

struct MockUdc {
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    event_idx: bool,
    pending_events: VecDeque<VirtioUdcEvent>,
    log: Arc<Mutex<Log>>,
}

fn event(ty: u16, value: u32, setup: [u8; 8]) -> VirtioUdcEvent {
    VirtioUdcEvent {
        type_: Le16::from(ty),
        value: Le32::from(value),
        setup,
        ..Default::default()
    }
}

fn config() -> VirtioUdcConfig {
    let mut c = VirtioUdcConfig {
        flags: Le32::from(VIRTIO_UDC_CONFIG_F_SG),
        max_segments: Le32::from(MIN_SG_SEGMENTS),
        max_speed: VIRTIO_UDC_SPEED_HIGH,
        num_eps: 3,
        ..Default::default()
    };
    c.eps[0].caps = VIRTIO_UDC_EP_CAP_CONTROL;
    c.eps[0].max_packet_limit = Le16::from(512);
    for (i, a) in [(1, 0x81u8), (2, 0x02u8)] {
        c.eps[i].addr = a;
        c.eps[i].caps = VIRTIO_UDC_EP_CAP_BULK;
        c.eps[i].max_packet_limit = Le16::from(1024);
    }
    c
}

type Chain = (u16, Vec<u8>, Vec<(u64, u32)>);

impl MockUdc {
    fn pop_all(&self, vring: &VringRwLock) -> Vec<Chain> {
        let mem = self.mem.as_ref().unwrap().memory();
        let mut out = Vec::new();
        let mut st = vring.get_mut();
        let q = st.get_queue_mut();
        while let Some(chain) = q.pop_descriptor_chain(&*mem) {
            let head = chain.head_index();
            let mut readable = Vec::new();
            let mut writable = Vec::new();
            for d in chain {
                if d.is_write_only() {
                    writable.push((d.addr().0, d.len()));
                } else {
                    let mut b = vec![0u8; d.len() as usize];
                    mem.read_slice(&mut b, d.addr()).unwrap();
                    readable.extend_from_slice(&b);
                }
            }
            out.push((head, readable, writable));
        }
        out
    }

    fn reply(&self, vring: &VringRwLock, head: u16, w: &[(u64, u32)], bytes: &[u8]) {
        let mem = self.mem.as_ref().unwrap().memory();
        let len = match w.first() {
            Some(&(a, l)) if l as usize >= bytes.len() => {
                mem.write_slice(bytes, GuestAddress(a)).unwrap();
                bytes.len() as u32
            }
            _ => 0,
        };
        vring.add_used(head, len).unwrap();
    }

    fn flush_events(&mut self, vring: &VringRwLock) {
        let mem = self.mem.as_ref().unwrap().memory();
        while !self.pending_events.is_empty() {
            let mut st = vring.get_mut();
            let Some(chain) = st.get_queue_mut().pop_descriptor_chain(&*mem) else {
                break;
            };
            drop(st);
            let head = chain.head_index();
            let d = chain.into_iter().next().unwrap();
            let ev = self.pending_events.pop_front().unwrap();
            mem.write_slice(ev.as_slice(), d.addr()).unwrap();
            vring.add_used(head, EVENT_SIZE as u32).unwrap();
        }
        vring.signal_used_queue().unwrap();
    }

    fn control(&mut self, vrings: &[VringRwLock]) {
        for (head, r, w) in self.pop_all(&vrings[0]) {
            let mut resp = VirtioUdcCtrlResp::default();
            match wire::read_struct::<VirtioUdcCtrlReq>(&r) {
                None => resp.status = Le32::from(VIRTIO_UDC_S_INVALID),
                Some(req) => {
                    let op = u16::from(req.opcode);
                    self.log.lock().unwrap().commands.push((op, req.ep));
                    match op {
                        VIRTIO_UDC_CMD_PULLUP if u32::from(req.value) == 1 => {
                            self.pending_events.extend([
                                event(VIRTIO_UDC_EVT_BUS_RESET, 3, [0; 8]),
                                event(VIRTIO_UDC_EVT_SETUP, 0, [0x80, 6, 0, 1, 0, 0, 64, 0]),
                                event(VIRTIO_UDC_EVT_ADDRESS, 5, [0; 8]),
                                // Shorter than the descriptor: truncated.
                                event(VIRTIO_UDC_EVT_SETUP, 0, [0x80, 6, 0, 2, 0, 0, 9, 0]),
                                event(VIRTIO_UDC_EVT_SETUP, 0, [0, 9, 1, 0, 0, 0, 0, 0]),
                            ]);
                        }
                        VIRTIO_UDC_CMD_GET_FRAME => resp.value = Le32::from(42),
                        1..=0x0a => {}
                        _ => resp.status = Le32::from(VIRTIO_UDC_S_UNSUPPORTED),
                    }
                }
            }
            self.reply(&vrings[0], head, &w, resp.as_slice());
        }
        vrings[0].signal_used_queue().unwrap();
        self.flush_events(&vrings[1]);
    }

    fn transfer(&self, r: &[u8]) -> (u32, u32) {
        let mem = self.mem.as_ref().unwrap().memory();
        let Some(h) = wire::read_struct::<VirtioUdcXferReq>(r) else {
            return (VIRTIO_UDC_S_INVALID, 0);
        };
        if u16::from(h.opcode) != VIRTIO_UDC_XFER_OP_TRANSFER {
            return (VIRTIO_UDC_S_UNSUPPORTED, 0);
        }
        let n = u32::from(h.num_segs) as usize;
        let len = u32::from(h.length) as usize;
        if r.len() < XFER_REQ_SIZE + SEG_SIZE * n || (n == 0 && len > 0) {
            return (VIRTIO_UDC_S_INVALID, 0);
        }
        let segs: Vec<VirtioUdcSeg> = (0..n)
            .map(|i| wire::read_struct(&r[XFER_REQ_SIZE + SEG_SIZE * i..]).unwrap())
            .collect();
        let mut left = len;
        let mut used = Vec::new();
        for s in &segs {
            let take = (u32::from(s.len) as usize).min(left);
            if take > 0 {
                used.push((u64::from(s.addr), take));
            }
            left -= take;
        }
        if left > 0 {
            return (VIRTIO_UDC_S_INVALID, 0);
        }
        if used.iter().any(|&(a, l)| !mem.check_range(GuestAddress(a), l)) {
            return (VIRTIO_UDC_S_DMA_FAULT, 0);
        }
        if h.ep & 0x80 != 0 {
            let mut data = Vec::new();
            for &(a, l) in &used {
                let mut b = vec![0u8; l];
                mem.read_slice(&mut b, GuestAddress(a)).unwrap();
                data.extend_from_slice(&b);
            }
            self.log.lock().unwrap().in_data.push((h.ep, data));
        } else {
            let mut k = 0usize;
            for &(a, l) in &used {
                let b: Vec<u8> = (k..k + l).map(|x| x as u8).collect();
                mem.write_slice(&b, GuestAddress(a)).unwrap();
                k += l;
            }
        }
        (VIRTIO_UDC_S_OK, len as u32)
    }

    fn xfers(&mut self, vring: &VringRwLock) {
        loop {
            if self.event_idx {
                vring.disable_notification().unwrap();
            }
            for (head, r, w) in self.pop_all(vring) {
                let (status, actual) = self.transfer(&r);
                let st = VirtioUdcXferStatus {
                    status: Le32::from(status),
                    actual: Le32::from(actual),
                };
                self.reply(vring, head, &w, st.as_slice());
            }
            if !self.event_idx || !vring.enable_notification().unwrap() {
                break;
            }
        }
        vring.signal_used_queue().unwrap();
    }
}

impl VhostUserBackendMut for MockUdc {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        3
    }
    fn max_queue_size(&self) -> usize {
        1024
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
            | VHOST_USER_F_PROTOCOL_FEATURES
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_RING_F_INDIRECT_DESC
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
    }
    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }
    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let c = config();
        let b = c.as_slice();
        let s = (offset as usize).min(b.len());
        let e = (s + size as usize).min(b.len());
        b[s..e].to_vec()
    }
    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }
    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        match device_event {
            0 => self.control(vrings),
            1 => self.flush_events(&vrings[1]),
            2 => self.xfers(&vrings[2]),
            _ => {}
        }
        Ok(())
    }
}

fn socket_path() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "udc-harness-mock-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

/// Starts the mock on a fresh socket; returns the path and the log.
fn start_mock() -> (PathBuf, Arc<Mutex<Log>>, std::thread::JoinHandle<()>) {
    let path = socket_path();
    let _ = std::fs::remove_file(&path);
    let log = Arc::new(Mutex::new(Log::default()));
    let backend = Arc::new(RwLock::new(MockUdc {
        mem: None,
        event_idx: false,
        pending_events: VecDeque::new(),
        log: log.clone(),
    }));
    let p = path.clone();
    let t = std::thread::spawn(move || {
        let mut d = VhostUserDaemon::new(
            "mock-udc".into(),
            backend,
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .unwrap();
        // Ends when the frontend goes away.
        let _ = d.serve(&p);
    });
    (path, log, t)
}

fn small() -> HarnessOptions {
    HarnessOptions::default().with_mem_size(32 << 20)
}

#[test]
fn connect_negotiates_and_reads_config() {
    let (path, _log, _t) = start_mock();
    let h = Harness::connect(&path, small()).unwrap();
    assert_eq!(*h.config(), config());
    assert_ne!(h.acked_features() & VIRTIO_F_VERSION_1, 0);
    assert_eq!(h.acked_features() & VIRTIO_RING_F_EVENT_IDX, 0);
    assert!(h
        .protocol_features()
        .contains(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK));
    assert_eq!(h.posted_event_buffers(), 16);
    assert!(format!("{h:?}").contains("Harness"));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn commands_and_raw_commands() {
    let (path, log, _t) = start_mock();
    let mut h = Harness::connect(&path, small()).unwrap();
    let r = h.get_frame().unwrap();
    assert!(r.is_ok());
    assert_eq!(r.value(), 42);
    let r = h.command(ctrl_req(0x7777)).unwrap();
    assert_eq!(r.status_enum(), Some(Status::Unsupported));
    assert!(matches!(
        h.command_ok(ctrl_req(0x7777)),
        Err(Error::CommandFailed { opcode: 0x7777, .. })
    ));
    let raw = h.raw_command(&[1, 0, 0]).unwrap();
    assert_eq!(raw.used_len, 8);
    assert_eq!(raw.response().unwrap().code(), VIRTIO_UDC_S_INVALID);
    // Request split over three descriptors, response of 16 bytes.
    let req = ctrl_req(VIRTIO_UDC_CMD_GET_FRAME);
    let b = req.as_slice();
    let raw = h
        .raw_command_chain(
            &[
                RawDesc::Readable(b[..5].to_vec()),
                RawDesc::Readable(b[5..20].to_vec()),
                RawDesc::Readable(b[20..].to_vec()),
                RawDesc::Writable(16),
            ],
            T,
        )
        .unwrap();
    assert_eq!(raw.used_len, 8);
    assert_eq!(raw.response().unwrap().value(), 42);
    assert_eq!(&raw.writable[0][8..], &[SENTINEL; 8]);
    assert!(h.set_halt(0x81, 1).unwrap().is_ok());
    assert!(h.cancel(0x81, 9).unwrap().is_ok());
    let cmds = log.lock().unwrap().commands.clone();
    assert!(cmds.contains(&(VIRTIO_UDC_CMD_EP_SET_HALT, 0x81)));
    assert!(cmds.contains(&(VIRTIO_UDC_CMD_XFER_CANCEL, 0x81)));
    h.disconnect().unwrap();
    assert!(h.get_frame().is_err());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn fake_gadget_enumerates() {
    let (path, log, _t) = start_mock();
    let mut h = Harness::connect(&path, small()).unwrap();
    let mut g = FakeGadget::new();
    g.connect_and_configure(&mut h, T).unwrap();
    assert!(g.configured);
    assert_eq!(g.configuration, 1);
    assert_eq!(g.speed, Some(VIRTIO_UDC_SPEED_HIGH));
    assert_eq!(g.address, Some(5));
    assert_eq!(g.enabled_eps, vec![0x81, 0x02]);
    assert_eq!(g.setups.len(), 3);
    assert_eq!(g.ep0_in_flight(), 0);
    let log = log.lock().unwrap();
    let ep0: Vec<_> = log.in_data.iter().filter(|d| d.0 == 0x80).collect();
    assert_eq!(ep0[0].1, g.device_descriptor(VIRTIO_UDC_SPEED_HIGH));
    let cfg = g.config_descriptor(VIRTIO_UDC_SPEED_HIGH, 2);
    assert_eq!(ep0[1].1, cfg[..9]);
    assert!(log
        .commands
        .iter()
        .filter(|c| c.0 == VIRTIO_UDC_CMD_EP_ENABLE)
        .map(|c| c.1)
        .eq([0x81, 0x02]));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn delayed_status_waits() {
    let (path, _log, _t) = start_mock();
    let mut h = Harness::connect(&path, small()).unwrap();
    let mut g = FakeGadget::new().with_status_delay(Duration::from_millis(300));
    let t0 = Instant::now();
    g.connect_and_configure(&mut h, T).unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn events_in_order_and_matching() {
    let (path, _log, _t) = start_mock();
    let mut h = Harness::connect(&path, small()).unwrap();
    assert!(h.next_event(Duration::from_millis(50)).unwrap().is_none());
    h.pullup(true).unwrap();
    let a = h.expect_event(VIRTIO_UDC_EVT_ADDRESS, T).unwrap();
    assert_eq!(u32::from(a.value), 5);
    // The ones passed over are still there, in order.
    assert_eq!(
        h.next_decoded_event(T).unwrap(),
        Some(Event::BusReset { speed: 3 })
    );
    assert!(matches!(
        h.next_decoded_event(T).unwrap(),
        Some(Event::Setup(p)) if p.request == 6
    ));
    assert!(matches!(
        h.next_decoded_event(T).unwrap(),
        Some(Event::Setup(p)) if p.request == 6 && p.length == 9
    ));
    assert!(matches!(
        h.next_decoded_event(T).unwrap(),
        Some(Event::Setup(p)) if p.request == 9
    ));
    assert!(h.try_event().unwrap().is_none());
    assert_eq!(h.posted_event_buffers(), 16);
    let _ = std::fs::remove_file(&path);
}

fn transfers_with(opts: HarnessOptions) {
    let (path, log, _t) = start_mock();
    let mut h = Harness::connect(&path, opts).unwrap();
    // OUT into a scattered, page-aligned buffer.
    let spec = BufferSpec::scattered(10_000, 7).with_page_aligned(true);
    let out = h.alloc_buffer(&spec).unwrap();
    for w in out.segments.windows(2) {
        assert_ne!(w[0].0 + u64::from(w[0].1), w[1].0, "contiguous");
        assert_eq!(w[1].0 % PAGE_SIZE, 0);
    }
    let x = h.submit_buffer(0x02, 0, &out, 11).unwrap();
    let c = h.wait_completion(x, T).unwrap();
    assert!(c.is_ok(), "{c:?}");
    assert_eq!((c.tag, c.ep, c.actual, c.used_len), (11, 0x02, 10_000, 8));
    let data = h.read_buffer(&out).unwrap();
    assert!(data.iter().enumerate().all(|(i, &b)| b == i as u8));
    assert!(h.guards_intact(&out).unwrap());
    h.free_buffer(out).unwrap();

    // IN from many small segments.
    let inb = h
        .alloc_buffer(&BufferSpec::contiguous(4096).with_segments(64))
        .unwrap();
    let pattern: Vec<u8> = (0..4096).map(|i| (i * 7) as u8).collect();
    h.write_buffer(&inb, &pattern).unwrap();
    let x = h.submit(0x81, 0, 4000, inb.segs(), 12).unwrap();
    assert_eq!(h.wait_completion(x, T).unwrap().actual, 4000);
    assert_eq!(
        log.lock().unwrap().in_data.last().unwrap(),
        &(0x81, pattern[..4000].to_vec())
    );
    h.free_buffer(inb).unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn transfers_move_data() {
    transfers_with(small());
}

#[test]
fn transfers_move_data_with_event_idx() {
    let mut o = small();
    o.event_idx = true;
    transfers_with(o);
}

#[test]
fn per_page_buffer_with_a_segment_past_the_transfer() {
    let (path, _log, _t) = start_mock();
    let mut h = Harness::connect(&path, small()).unwrap();
    let b = h.alloc_buffer(&BufferSpec::per_page(4 << 20)).unwrap();
    assert_eq!(b.segments.len(), 1024);
    // The transfer ends inside the last page.
    let len = (4 << 20) - 100;
    let x = h.submit(0x02, 0, len, b.segs(), 1).unwrap();
    let c = h.wait_completion(x, T).unwrap();
    assert_eq!(c.actual, len);
    let d = h.read_buffer(&b).unwrap();
    assert!(d[..len as usize].iter().enumerate().all(|(i, &v)| v == i as u8));
    assert!(d[len as usize..].iter().all(|&v| v == 0));
    h.free_buffer(b).unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn transfers_move_data_through_indirect_tables() {
    let mut o = small();
    o.indirect = true;
    transfers_with(o);
}

#[test]
fn indirect_raw_chain_with_a_split_header() {
    let (path, _log, _t) = start_mock();
    let mut h = Harness::connect(&path, small()).unwrap();
    let buf = h.buffer(64).unwrap();
    let bytes = xfer_bytes(&xfer_req(0x81, 0, 64, 1, 5), &buf.wire_segs());
    let mut parts: Vec<RawDesc> = bytes.chunks(4).map(|c| RawDesc::Readable(c.to_vec())).collect();
    parts.push(RawDesc::Writable(8));
    let x = h.submit_raw_indirect(&parts).unwrap();
    let c = h.wait_completion(x, T).unwrap();
    assert!(c.is_ok(), "{c:?}");
    assert_eq!(c.tag, 5);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn buffers_above_the_hole_and_segments_in_it() {
    let (path, _log, _t) = start_mock();
    let mut h = Harness::connect(&path, HarnessOptions::default().with_hole(16 << 20, 16 << 20)).unwrap();
    let holes = h.memory().holes();
    assert_eq!(holes, vec![(16 << 20, HIGH_REGION_GPA)]);
    let b = h
        .alloc_buffer(&BufferSpec::scattered(8192, 2).in_region(1))
        .unwrap();
    assert!(b.segments.iter().all(|s| s.0 >= HIGH_REGION_GPA));
    let x = h.submit_buffer(0x02, 0, &b, 1).unwrap();
    assert!(h.wait_completion(x, T).unwrap().is_ok());
    let x = h.submit(0x02, 0, 100, &[(holes[0].0 + 4096, 100)], 2).unwrap();
    let c = h.wait_completion(x, T).unwrap();
    assert_eq!(c.status_code(), Some(Status::DmaFault));
    assert_eq!(c.result(), Err(-libc::EIO));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn malformed_transfer_chains() {
    let (path, _log, _t) = start_mock();
    let mut h = Harness::connect(&path, small()).unwrap();
    // Short header.
    let x = h.submit_bytes(&[1, 0, 0x81], 8).unwrap();
    let c = h.wait_completion(x, T).unwrap();
    assert_eq!(c.status, VIRTIO_UDC_S_INVALID);
    // Header and segments split across descriptors at odd places.
    let buf = h.buffer(64).unwrap();
    let bytes = xfer_bytes(&xfer_req(0x81, 0, 64, 1, 77), &buf.wire_segs());
    let x = h
        .submit_raw(&[
            RawDesc::Readable(bytes[..3].to_vec()),
            RawDesc::Readable(bytes[3..30].to_vec()),
            RawDesc::Readable(bytes[30..].to_vec()),
            RawDesc::Writable(8),
        ])
        .unwrap();
    let c = h.wait_completion(x, T).unwrap();
    assert!(c.is_ok());
    assert_eq!(c.tag, 77);
    // num_segs larger than the segments given.
    let x = h
        .submit_req(&xfer_req(0x81, 0, 64, 3, 78), &buf.wire_segs())
        .unwrap();
    assert_eq!(h.wait_completion(x, T).unwrap().status, VIRTIO_UDC_S_INVALID);
    // No status buffer: used length 0, status left at the sentinel.
    let x = h.submit_raw(&[RawDesc::Readable(bytes.clone())]).unwrap();
    let c = h.wait_completion(x, T).unwrap();
    assert_eq!((c.used_len, c.status), (0, u32::MAX));
    assert_eq!(c.result(), Err(-libc::EIO));
    // A waited-for handle that is gone is an error, not a hang.
    assert!(h.wait_completion(x, T).is_err());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn many_transfers_through_a_small_queue() {
    let (path, _log, _t) = start_mock();
    let mut h = Harness::connect(&path, small().with_queue_size(16)).unwrap();
    let buf = h.buffer(512).unwrap();
    let mut handles = Vec::new();
    for i in 0..500 {
        // The queue holds 8 two-descriptor chains: submit reclaims.
        handles.push(h.submit_buffer(0x02, 0, &buf, i).unwrap());
    }
    let mut seen = 0;
    let deadline = Instant::now() + T;
    while seen < 500 && Instant::now() < deadline {
        for c in h.poll_completions().unwrap() {
            assert!(c.is_ok());
            assert_eq!(c.seq, seen as u64, "used-ring order");
            assert_eq!(c.tag, seen as u64, "FIFO on one endpoint");
            seen += 1;
        }
    }
    assert_eq!(seen, 500);
    assert_eq!(h.xfers_in_flight(), 0);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn batched_submissions_with_one_kick() {
    let (path, _log, _t) = start_mock();
    let mut h = Harness::connect(&path, small()).unwrap();
    let buf = h.buffer(64).unwrap();
    h.set_auto_kick(false);
    let k0 = h.xferq().kicks();
    let hs: Vec<_> = (0..32)
        .map(|i| h.submit_buffer(0x81, 0, &buf, i).unwrap())
        .collect();
    assert_eq!(h.xferq().kicks(), k0, "no kick while batching");
    h.kick_xferq().unwrap();
    assert_eq!(h.xferq().kicks() + h.xferq().suppressed_kicks(), k0 + 1);
    let cs = h.wait_completions(&hs, T).unwrap();
    assert!(cs.iter().all(|c| c.is_ok()));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn connect_gives_up_in_time() {
    let t0 = Instant::now();
    let mut o = small();
    o.connect_timeout = Duration::from_millis(200);
    let e = Harness::connect(socket_path(), o).unwrap_err();
    assert!(matches!(e, Error::ConnectTimeout { .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[test]
fn strict_interrupts_still_work_with_a_signalling_device() {
    let (path, _log, _t) = start_mock();
    let mut o = small();
    o.strict_interrupts = true;
    let mut h = Harness::connect(&path, o).unwrap();
    for _ in 0..20 {
        assert!(h.get_frame().unwrap().is_ok());
    }
    // The device may finish before the driver waits; then the signals are
    // still pending on the eventfd.
    let q = h.controlq();
    assert!(q.calls_seen() > 0 || q.wait_call(Duration::from_secs(1)).unwrap());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn ring_addresses_are_guest_physical_in_memory() {
    let (path, _log, _t) = start_mock();
    let mut h = Harness::connect(&path, small()).unwrap();
    let (d, a, u) = h.xferq().ring_addrs();
    assert!(h.memory().contains(d, 16 * 1024));
    assert!(h.memory().contains(a, 6 + 2 * 1024));
    assert!(h.memory().contains(u, 6 + 8 * 1024));
    assert!(h.memory().mmap().check_range(GuestAddress(u), 8));
    let _ = std::fs::remove_file(&path);
}
