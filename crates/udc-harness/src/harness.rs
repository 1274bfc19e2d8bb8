// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The fake guest driver: connects to the daemon as a vhost-user frontend,
//! sets up memory and the three virtqueues, and speaks virtio-udc on them.

use std::collections::{HashMap, VecDeque};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::VhostBackend;
use vhost_device_udc::wire::{
    self, Status, VirtioUdcConfig, VirtioUdcCtrlReq, VirtioUdcCtrlResp, VirtioUdcEvent, VirtioUdcSeg,
    VirtioUdcXferReq, CONFIG_SIZE, CTRL_RESP_SIZE, EVENT_SIZE, XFER_STATUS_SIZE,
};
use vm_memory::{ByteValued, GuestAddress, GuestMemoryBackend, Le16, Le32, Le64};

use virtio_bindings::bindings::{virtio_config, virtio_ring};

use crate::error::{Error, Result};
use crate::memory::{align_up, Allocator, GuestMemory, MemoryLayout, PAGE_SIZE};
use crate::queue::{ChainPart, DriverQueue};
use crate::usb::Event;

// Feature bits as masks of the 64-bit feature word; the bit numbers come
// from virtio-bindings (the kernel's virtio_config.h and virtio_ring.h).
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_config::VIRTIO_F_VERSION_1;
pub const VIRTIO_F_ACCESS_PLATFORM: u64 = 1 << virtio_config::VIRTIO_F_ACCESS_PLATFORM;
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_ring::VIRTIO_RING_F_EVENT_IDX;
/// `VHOST_USER_F_PROTOCOL_FEATURES`.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// Byte the harness pre-fills device-writable buffers with, so a test can
/// tell what the device did not write.
pub const SENTINEL: u8 = 0xff;
/// Byte guard areas around scattered buffers are filled with.
pub const GUARD_BYTE: u8 = 0xa5;

/// How the harness connects and sets itself up.
#[derive(Clone, Debug)]
pub struct HarnessOptions {
    /// Guest RAM layout (default: 256 MiB at GPA 0).
    pub layout: MemoryLayout,
    /// Sizes of controlq, eventq, xferq (default 1024 each).
    pub queue_sizes: [u16; 3],
    /// Event buffers kept posted on the eventq (default 16).
    pub event_buffers: usize,
    /// How long to keep trying to connect to the socket (default 10 s).
    pub connect_timeout: Duration,
    /// Default wait for commands, and the socket's read/write timeout for
    /// vhost-user replies (default 5 s).
    pub timeout: Duration,
    /// Negotiate VIRTIO_RING_F_EVENT_IDX (error if not offered).
    pub event_idx: bool,
    /// Further virtio feature bits to ack if the device offers them.
    pub extra_features: u64,
    /// Protocol features to ack if offered (default CONFIG | REPLY_ACK);
    /// CONFIG is required.
    pub protocol_features: VhostUserProtocolFeatures,
    /// Kick every time, ignoring VRING_USED_F_NO_NOTIFY / avail_event.
    pub always_kick: bool,
    /// Rely on call eventfds only (a device that forgets to interrupt then
    /// makes waits time out); default false, waits also re-read the rings.
    pub strict_interrupts: bool,
    /// Send SET_VRING_ENABLE(1) for the three queues (default true).
    pub enable_queues: bool,
    /// Negotiate VIRTIO_RING_F_INDIRECT_DESC (error if not offered) and put
    /// every xferq submission in an indirect table.
    pub indirect: bool,
}

impl Default for HarnessOptions {
    fn default() -> Self {
        HarnessOptions {
            layout: MemoryLayout::default(),
            queue_sizes: [1024; 3],
            event_buffers: 16,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            event_idx: false,
            extra_features: 0,
            protocol_features: VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK,
            always_kick: false,
            strict_interrupts: false,
            enable_queues: true,
            indirect: false,
        }
    }
}

impl HarnessOptions {
    /// One region of `size` bytes.
    pub fn with_mem_size(mut self, size: u64) -> Self {
        self.layout = MemoryLayout::single(size);
        self
    }

    /// Region 0 of `low` bytes at 0, region 1 of `high` bytes at 4 GiB.
    pub fn with_hole(mut self, low: u64, high: u64) -> Self {
        self.layout = MemoryLayout::split_at_4g(low, high);
        self
    }

    /// Sets all three queue sizes.
    pub fn with_queue_size(mut self, size: u16) -> Self {
        self.queue_sizes = [size; 3];
        self
    }

    /// Sets the default timeout.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// A descriptor of a hand-made chain (malformed-request tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawDesc {
    /// Device-readable, holding these bytes (allocated by the harness).
    Readable(Vec<u8>),
    /// Device-writable, this many bytes (allocated, pre-filled with
    /// [`SENTINEL`]).
    Writable(u32),
    /// A descriptor at a caller-chosen address, neither allocated nor freed
    /// by the harness (e.g. in a hole, or past the end of memory).
    At { gpa: u64, len: u32, writable: bool },
}

/// Names one submitted transfer; unique for the harness's lifetime (the
/// descriptor head is reused once the transfer completes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct XferHandle {
    pub id: u64,
    pub head: u16,
}

/// A completed transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub handle: XferHandle,
    /// The request's tag (parsed from the header for raw submissions, 0 if
    /// the header was too short).
    pub tag: u64,
    /// The request's endpoint (as for `tag`).
    pub ep: u8,
    /// `virtio_udc_xfer_status.status` as the device wrote it (0xffffffff if
    /// it wrote nothing, or if the chain had no writable part).
    pub status: u32,
    /// `virtio_udc_xfer_status.actual` (same caveat).
    pub actual: u32,
    /// The used length the device reported.
    pub used_len: u32,
    /// Position on the xferq used ring across the harness's life (0, 1, ...),
    /// for ordering checks.
    pub seq: u64,
}

impl Completion {
    /// The status as an enum, if it is a defined value.
    pub fn status_code(&self) -> Option<Status> {
        Status::from_wire(self.status)
    }

    /// Status OK and a full status written.
    pub fn is_ok(&self) -> bool {
        self.status == wire::VIRTIO_UDC_S_OK && self.used_len as usize >= XFER_STATUS_SIZE
    }

    /// What the guest driver reports to the gadget: `Ok(actual)` or a
    /// negative errno (-EIO for a short used length or an unknown status).
    pub fn result(&self) -> std::result::Result<u32, i32> {
        if (self.used_len as usize) < XFER_STATUS_SIZE {
            return Err(-libc::EIO);
        }
        match self.status_code() {
            Some(Status::Ok) => Ok(self.actual),
            Some(s) => Err(s.errno()),
            None => Err(-libc::EIO),
        }
    }
}

/// A completed raw command chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawCompletion {
    pub used_len: u32,
    /// The contents of each harness-allocated writable descriptor, in chain
    /// order, after completion.
    pub writable: Vec<Vec<u8>>,
}

impl RawCompletion {
    /// The first writable buffer read as a control response, if it is at
    /// least 8 bytes.
    pub fn response(&self) -> Option<VirtioUdcCtrlResp> {
        self.writable
            .first()
            .and_then(|b| wire::read_struct::<VirtioUdcCtrlResp>(b))
    }
}

/// Convenience accessors for command responses.
pub trait CtrlRespExt {
    /// The raw status code.
    fn code(&self) -> u32;
    /// The result value.
    fn value(&self) -> u32;
    /// The status as an enum, if defined.
    fn status_enum(&self) -> Option<Status>;
    /// Status is OK.
    fn is_ok(&self) -> bool {
        self.code() == wire::VIRTIO_UDC_S_OK
    }
}

impl CtrlRespExt for VirtioUdcCtrlResp {
    fn code(&self) -> u32 {
        u32::from(self.status)
    }
    fn value(&self) -> u32 {
        u32::from(self.value)
    }
    fn status_enum(&self) -> Option<Status> {
        Status::from_wire(self.code())
    }
}

/// Arguments of EP_ENABLE: the daemon's own type, so both sides agree.
pub use vhost_device_udc::request::EpEnable;

/// A control request with every field but the opcode zero.
pub fn ctrl_req(opcode: u16) -> VirtioUdcCtrlReq {
    VirtioUdcCtrlReq {
        opcode: Le16::from(opcode),
        ..Default::default()
    }
}

/// A transfer header.
pub fn xfer_req(ep: u8, flags: u8, length: u32, num_segs: u32, tag: u64) -> VirtioUdcXferReq {
    VirtioUdcXferReq {
        opcode: Le16::from(wire::VIRTIO_UDC_XFER_OP_TRANSFER),
        ep,
        flags,
        length: Le32::from(length),
        num_segs: Le32::from(num_segs),
        reserved: Le32::from(0),
        tag: Le64::from(tag),
    }
}

/// A segment descriptor.
pub fn seg(addr: u64, len: u32) -> VirtioUdcSeg {
    VirtioUdcSeg {
        addr: Le64::from(addr),
        len: Le32::from(len),
        reserved: Le32::from(0),
    }
}

/// Header followed by segments, as one byte string.
pub fn xfer_bytes(hdr: &VirtioUdcXferReq, segs: &[VirtioUdcSeg]) -> Vec<u8> {
    let mut b = hdr.as_slice().to_vec();
    for s in segs {
        b.extend_from_slice(s.as_slice());
    }
    b
}

/// How to lay out a data buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferSpec {
    /// Total bytes.
    pub len: u64,
    /// Number of segments (at least 1; the bytes are split evenly, the last
    /// segment takes the remainder).
    pub segments: usize,
    /// Explicit segment sizes instead of an even split (must add up to
    /// `len`; `segments` is then ignored).
    pub sizes: Option<Vec<u32>>,
    /// Allocate each segment on its own, in reverse address order, with a
    /// guard area (filled with [`GUARD_BYTE`]) between segments, so no two
    /// consecutive segments are contiguous.
    pub scatter: bool,
    /// Start each segment on a page boundary.
    pub page_aligned: bool,
    /// Allocate inside this allocator range (region) only.
    pub region: Option<usize>,
}

impl BufferSpec {
    /// `len` bytes in one contiguous segment.
    pub fn contiguous(len: u64) -> Self {
        BufferSpec {
            len,
            segments: 1,
            sizes: None,
            scatter: false,
            page_aligned: false,
            region: None,
        }
    }

    /// `len` bytes in `segments` segments, scattered.
    pub fn scattered(len: u64, segments: usize) -> Self {
        BufferSpec {
            segments,
            scatter: true,
            ..Self::contiguous(len)
        }
    }

    /// `len` bytes as one segment per page (udmabuf style): full pages, the
    /// last one holding the remainder.
    pub fn per_page(len: u64) -> Self {
        let mut sizes = vec![PAGE_SIZE as u32; (len / PAGE_SIZE) as usize];
        if len % PAGE_SIZE != 0 || len == 0 {
            sizes.push((len % PAGE_SIZE) as u32);
        }
        BufferSpec {
            segments: sizes.len(),
            sizes: Some(sizes),
            page_aligned: true,
            ..Self::contiguous(len)
        }
    }

    /// Builder: segment count.
    pub fn with_segments(mut self, n: usize) -> Self {
        self.segments = n;
        self
    }

    /// Builder: scatter.
    pub fn with_scatter(mut self, on: bool) -> Self {
        self.scatter = on;
        self
    }

    /// Builder: page alignment.
    pub fn with_page_aligned(mut self, on: bool) -> Self {
        self.page_aligned = on;
        self
    }

    /// Builder: region.
    pub fn in_region(mut self, region: usize) -> Self {
        self.region = Some(region);
        self
    }

    fn segment_sizes(&self) -> Result<Vec<u64>> {
        if let Some(s) = &self.sizes {
            let sum: u64 = s.iter().map(|&x| u64::from(x)).sum();
            if sum != self.len {
                return Err(Error::InvalidArgument(format!(
                    "segment sizes add up to {sum}, not {}",
                    self.len
                )));
            }
            return Ok(s.iter().map(|&x| u64::from(x)).collect());
        }
        let n = self.segments.max(1) as u64;
        if self.len < n && self.len > 0 {
            return Err(Error::InvalidArgument(format!(
                "{} bytes cannot make {n} non-empty segments",
                self.len
            )));
        }
        let each = self.len / n;
        let mut v = vec![each; n as usize];
        *v.last_mut().unwrap() += self.len - each * n;
        if v.iter().any(|&x| x > u64::from(u32::MAX)) {
            return Err(Error::InvalidArgument("segment above 4 GiB".into()));
        }
        Ok(v)
    }
}

/// A data buffer in guest memory made of segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaBuffer {
    /// Total bytes.
    pub len: u64,
    /// `(gpa, len)` of each segment, in buffer order.
    pub segments: Vec<(u64, u32)>,
    /// Guard areas `(gpa, len)` between scattered segments.
    pub guards: Vec<(u64, u64)>,
    allocs: Vec<u64>,
}

impl DmaBuffer {
    /// The segments, ready for [`Harness::submit`].
    pub fn segs(&self) -> &[(u64, u32)] {
        &self.segments
    }

    /// The segments as wire structures.
    pub fn wire_segs(&self) -> Vec<VirtioUdcSeg> {
        self.segments.iter().map(|&(a, l)| seg(a, l)).collect()
    }

    /// Total length as u32 (saturating).
    pub fn len_u32(&self) -> u32 {
        self.len.min(u64::from(u32::MAX)) as u32
    }
}

#[derive(Debug)]
struct XferInFlight {
    handle: XferHandle,
    tag: u64,
    ep: u8,
    allocs: Vec<u64>,
    status_buf: Option<(u64, u32)>,
}

#[derive(Debug)]
struct CmdInFlight {
    allocs: Vec<u64>,
}

/// The fake guest driver, connected to a vhost-device-udc daemon.
///
/// Every wait has a timeout. The three [`DriverQueue`]s are reachable for
/// low-level tests, but consuming their used rings directly bypasses the
/// harness's bookkeeping.
pub struct Harness {
    socket_path: PathBuf,
    frontend: Option<Frontend>,
    opts: HarnessOptions,
    mem: GuestMemory,
    alloc: Allocator,
    device_features: u64,
    acked_features: u64,
    protocol_features: VhostUserProtocolFeatures,
    config: VirtioUdcConfig,
    controlq: DriverQueue,
    eventq: DriverQueue,
    xferq: DriverQueue,
    cmds: HashMap<u16, CmdInFlight>,
    event_bufs: HashMap<u16, u64>,
    events: VecDeque<VirtioUdcEvent>,
    xfers: HashMap<u16, XferInFlight>,
    done: VecDeque<Completion>,
    next_xfer_id: u64,
    next_seq: u64,
    next_tag: u64,
    auto_kick: bool,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("socket_path", &self.socket_path)
            .field("connected", &self.frontend.is_some())
            .field("mem", &self.mem)
            .field("device_features", &format_args!("{:#x}", self.device_features))
            .field("acked_features", &format_args!("{:#x}", self.acked_features))
            .field("protocol_features", &self.protocol_features)
            .field("config", &self.config)
            .field("controlq", &self.controlq)
            .field("eventq", &self.eventq)
            .field("xferq", &self.xferq)
            .field("pending_events", &self.events.len())
            .field("xfers_in_flight", &self.xfers.len())
            .field("completions_unclaimed", &self.done.len())
            .finish()
    }
}

fn connect_socket(path: &Path, timeout: Duration) -> Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) => {
                let retry = matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                );
                if !retry {
                    return Err(Error::io("connect to the daemon socket", e));
                }
                if Instant::now() >= deadline {
                    return Err(Error::ConnectTimeout {
                        path: path.to_path_buf(),
                        timeout,
                        last: e.to_string(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Harness {
    /// Connects to the daemon at `socket_path` (retrying until the socket
    /// exists and accepts, up to `opts.connect_timeout`) and brings the
    /// device up: owner, features, protocol features, config, memory table,
    /// the three vrings (num, addr, base 0, call, kick, enable), then posts
    /// the event buffers.
    pub fn connect(socket_path: impl AsRef<Path>, opts: HarnessOptions) -> Result<Harness> {
        let socket_path = socket_path.as_ref().to_path_buf();
        let stream = connect_socket(&socket_path, opts.connect_timeout)?;
        stream
            .set_read_timeout(Some(opts.timeout))
            .map_err(|e| Error::io("socket read timeout", e))?;
        stream
            .set_write_timeout(Some(opts.timeout))
            .map_err(|e| Error::io("socket write timeout", e))?;
        let mut frontend = Frontend::from_stream(stream, wire::NUM_QUEUES as u64);

        let mem = GuestMemory::new(&opts.layout)?;
        let mut alloc = Allocator::for_memory(&mem);
        // Keep GPA 0 unallocated so a zero address in a request is never a
        // harness buffer by accident.
        alloc.alloc_within(0, PAGE_SIZE, PAGE_SIZE, PAGE_SIZE).ok();

        frontend.set_owner().map_err(Error::vhost("SET_OWNER"))?;
        let device_features = frontend.get_features().map_err(Error::vhost("GET_FEATURES"))?;
        for (bit, name) in [
            (VIRTIO_F_VERSION_1, "VIRTIO_F_VERSION_1"),
            (VHOST_USER_F_PROTOCOL_FEATURES, "VHOST_USER_F_PROTOCOL_FEATURES"),
        ] {
            if device_features & bit == 0 {
                return Err(Error::NotOffered(name.into()));
            }
        }
        let mut acked =
            VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES | (opts.extra_features & device_features);
        if opts.event_idx {
            if device_features & VIRTIO_RING_F_EVENT_IDX == 0 {
                return Err(Error::NotOffered("VIRTIO_RING_F_EVENT_IDX".into()));
            }
            acked |= VIRTIO_RING_F_EVENT_IDX;
        } else {
            acked &= !VIRTIO_RING_F_EVENT_IDX;
        }
        if opts.indirect {
            if device_features & VIRTIO_RING_F_INDIRECT_DESC == 0 {
                return Err(Error::NotOffered("VIRTIO_RING_F_INDIRECT_DESC".into()));
            }
            acked |= VIRTIO_RING_F_INDIRECT_DESC;
        }
        frontend
            .set_features(acked)
            .map_err(Error::vhost("SET_FEATURES"))?;

        let offered = frontend
            .get_protocol_features()
            .map_err(Error::vhost("GET_PROTOCOL_FEATURES"))?;
        if !offered.contains(VhostUserProtocolFeatures::CONFIG) {
            return Err(Error::NotOffered(
                "VHOST_USER_PROTOCOL_F_CONFIG (needed for the config space)".into(),
            ));
        }
        let protocol_features = (opts.protocol_features | VhostUserProtocolFeatures::CONFIG) & offered;
        frontend
            .set_protocol_features(protocol_features)
            .map_err(Error::vhost("SET_PROTOCOL_FEATURES"))?;
        if protocol_features.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // Every request that has no reply of its own gets an ack, so the
            // daemon's refusals surface here and each step is synchronous.
            frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }

        let (_, payload) = frontend
            .get_config(
                0,
                CONFIG_SIZE as u32,
                VhostUserConfigFlags::empty(),
                &[0u8; CONFIG_SIZE],
            )
            .map_err(Error::vhost("GET_CONFIG"))?;
        let config = wire::read_struct::<VirtioUdcConfig>(&payload).ok_or_else(|| {
            Error::NotOffered(format!("a {CONFIG_SIZE}-byte config (got {})", payload.len()))
        })?;

        let regions = mem.vhost_regions()?;
        frontend
            .set_mem_table(&regions)
            .map_err(Error::vhost("SET_MEM_TABLE"))?;

        let mmap = mem.mmap().clone();
        let mut mkq = |i: usize| -> Result<DriverQueue> {
            let mut q = DriverQueue::new(i as u16, mmap.clone(), &mut alloc, opts.queue_sizes[i])?;
            q.set_event_idx(opts.event_idx);
            q.set_always_kick(opts.always_kick);
            q.set_strict_interrupts(opts.strict_interrupts);
            Ok(q)
        };
        let controlq = mkq(0)?;
        let eventq = mkq(1)?;
        let xferq = mkq(2)?;

        let mut h = Harness {
            socket_path,
            frontend: Some(frontend),
            opts,
            mem,
            alloc,
            device_features,
            acked_features: acked,
            protocol_features,
            config,
            controlq,
            eventq,
            xferq,
            cmds: HashMap::new(),
            event_bufs: HashMap::new(),
            events: VecDeque::new(),
            xfers: HashMap::new(),
            done: VecDeque::new(),
            next_xfer_id: 0,
            next_seq: 0,
            next_tag: 1,
            auto_kick: true,
        };
        for i in 0..wire::NUM_QUEUES {
            h.setup_vring(i)?;
        }
        if h.opts.enable_queues {
            for i in 0..wire::NUM_QUEUES {
                h.frontend_mut()?
                    .set_vring_enable(i, true)
                    .map_err(Error::vhost("SET_VRING_ENABLE"))?;
            }
        }
        for _ in 0..h.opts.event_buffers {
            h.post_event_buffer()?;
        }
        if h.opts.event_buffers > 0 {
            h.eventq.kick()?;
        }
        Ok(h)
    }

    fn host_addr(&self, gpa: u64) -> u64 {
        self.mem
            .mmap()
            .get_host_address(GuestAddress(gpa))
            .map(|p| p as u64)
            .unwrap_or(0)
    }

    fn queue(&self, i: usize) -> &DriverQueue {
        match i {
            0 => &self.controlq,
            1 => &self.eventq,
            _ => &self.xferq,
        }
    }

    fn setup_vring(&mut self, i: usize) -> Result<()> {
        let q = self.queue(i);
        let size = q.size();
        let cfg = q.config_data(|g| self.host_addr(g));
        let (call, kick) = (
            q.call_fd().try_clone().map_err(|e| Error::io("dup", e))?,
            q.kick_fd().try_clone().map_err(|e| Error::io("dup", e))?,
        );
        let fe = self.frontend_mut()?;
        fe.set_vring_num(i, size).map_err(Error::vhost("SET_VRING_NUM"))?;
        fe.set_vring_addr(i, &cfg)
            .map_err(Error::vhost("SET_VRING_ADDR"))?;
        fe.set_vring_base(i, 0).map_err(Error::vhost("SET_VRING_BASE"))?;
        fe.set_vring_call(i, &call)
            .map_err(Error::vhost("SET_VRING_CALL"))?;
        fe.set_vring_kick(i, &kick)
            .map_err(Error::vhost("SET_VRING_KICK"))?;
        Ok(())
    }

    // ----- accessors -------------------------------------------------------

    /// The device's configuration space as read at connect time.
    pub fn config(&self) -> &VirtioUdcConfig {
        &self.config
    }

    /// Reads the configuration space again.
    pub fn read_config(&mut self) -> Result<VirtioUdcConfig> {
        let (_, payload) = self
            .frontend_mut()?
            .get_config(
                0,
                CONFIG_SIZE as u32,
                VhostUserConfigFlags::empty(),
                &[0u8; CONFIG_SIZE],
            )
            .map_err(Error::vhost("GET_CONFIG"))?;
        wire::read_struct::<VirtioUdcConfig>(&payload)
            .ok_or_else(|| Error::NotOffered("a full config".into()))
    }

    /// Features the device offered.
    pub fn device_features(&self) -> u64 {
        self.device_features
    }

    /// Features the harness acked.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Protocol features the harness acked.
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol_features
    }

    /// The options the harness was built with.
    pub fn options(&self) -> &HarnessOptions {
        &self.opts
    }

    /// The daemon's socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    /// The guest-physical allocator.
    pub fn allocator(&mut self) -> &mut Allocator {
        &mut self.alloc
    }

    /// Allocates guest memory (see [`Allocator::alloc`]).
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<u64> {
        self.alloc.alloc(len, align)
    }

    /// Frees guest memory.
    pub fn free(&mut self, gpa: u64) -> Result<()> {
        self.alloc.free(gpa)
    }

    /// The controlq.
    pub fn controlq(&mut self) -> &mut DriverQueue {
        &mut self.controlq
    }

    /// The eventq.
    pub fn eventq(&mut self) -> &mut DriverQueue {
        &mut self.eventq
    }

    /// The xferq.
    pub fn xferq(&mut self) -> &mut DriverQueue {
        &mut self.xferq
    }

    /// The vhost-user frontend, for raw vhost-user tests.
    pub fn frontend_mut(&mut self) -> Result<&mut Frontend> {
        self.frontend.as_mut().ok_or_else(|| {
            Error::io(
                "vhost-user",
                std::io::Error::new(std::io::ErrorKind::NotConnected, "disconnected"),
            )
        })
    }

    fn ensure_connected(&self) -> Result<()> {
        if self.frontend.is_none() {
            return Err(Error::io(
                "virtqueue",
                std::io::Error::new(std::io::ErrorKind::NotConnected, "disconnected"),
            ));
        }
        Ok(())
    }

    /// True until [`Harness::disconnect`].
    pub fn is_connected(&self) -> bool {
        self.frontend.is_some()
    }

    /// Sends SET_MEM_TABLE again with only the regions whose indices are in
    /// `regions` (e.g. to drop region 1 under in-flight requests).
    pub fn set_mem_table_regions(&mut self, regions: &[usize]) -> Result<()> {
        let all = self.mem.vhost_regions()?;
        let table: Vec<_> = regions
            .iter()
            .map(|&i| {
                all.get(i)
                    .copied()
                    .ok_or_else(|| Error::InvalidArgument(format!("no region {i}")))
            })
            .collect::<Result<_>>()?;
        self.frontend_mut()?
            .set_mem_table(&table)
            .map_err(Error::vhost("SET_MEM_TABLE"))?;
        Ok(())
    }

    /// Sends SET_VRING_ENABLE for one queue.
    pub fn set_vring_enable(&mut self, queue: usize, on: bool) -> Result<()> {
        self.frontend_mut()?
            .set_vring_enable(queue, on)
            .map_err(Error::vhost("SET_VRING_ENABLE"))
    }

    /// Stops the rings as a VMM does before a reset or migration
    /// (GET_VRING_BASE on each queue); returns the device's avail indices.
    pub fn stop_queues(&mut self) -> Result<[u32; 3]> {
        let mut out = [0u32; 3];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self
                .frontend_mut()?
                .get_vring_base(i)
                .map_err(Error::vhost("GET_VRING_BASE"))?;
        }
        Ok(out)
    }

    /// Closes the vhost-user connection (the daemon sees the frontend go
    /// away). Guest memory stays readable; commands fail afterwards.
    pub fn disconnect(&mut self) -> Result<()> {
        self.frontend.take();
        Ok(())
    }

    /// Whether submissions and commands kick immediately (default true).
    /// Turn off to batch submissions, then call [`Harness::kick_xferq`].
    pub fn set_auto_kick(&mut self, on: bool) {
        self.auto_kick = on;
    }

    /// Kicks the xferq (honouring the device's suppression).
    pub fn kick_xferq(&mut self) -> Result<bool> {
        self.xferq.kick()
    }

    /// A fresh tag (1, 2, 3, ...).
    pub fn next_tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    // ----- chains ----------------------------------------------------------

    /// Allocates and fills the harness-owned parts of a raw chain. Returns
    /// the chain, the allocations and the writable buffers it allocated.
    #[allow(clippy::type_complexity)]
    fn build_chain(&mut self, parts: &[RawDesc]) -> Result<(Vec<ChainPart>, Vec<u64>, Vec<(u64, u32)>)> {
        let mut chain = Vec::with_capacity(parts.len());
        let mut allocs = Vec::new();
        let mut writable = Vec::new();
        let res = (|| -> Result<()> {
            for p in parts {
                match p {
                    RawDesc::Readable(bytes) => {
                        let gpa = self.alloc.alloc(bytes.len() as u64, 16)?;
                        allocs.push(gpa);
                        self.mem.write(gpa, bytes)?;
                        let len = u32::try_from(bytes.len())
                            .map_err(|_| Error::InvalidArgument("descriptor above 4 GiB".into()))?;
                        chain.push((gpa, len, false));
                    }
                    RawDesc::Writable(len) => {
                        let gpa = self.alloc.alloc(u64::from(*len), 16)?;
                        allocs.push(gpa);
                        self.mem.fill(gpa, *len as usize, SENTINEL)?;
                        chain.push((gpa, *len, true));
                        writable.push((gpa, *len));
                    }
                    RawDesc::At { gpa, len, writable } => chain.push((*gpa, *len, *writable)),
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            for a in allocs {
                let _ = self.alloc.free(a);
            }
            return Err(e);
        }
        Ok((chain, allocs, writable))
    }

    fn free_all(&mut self, allocs: &[u64]) {
        for &a in allocs {
            if let Err(e) = self.alloc.free(a) {
                log::warn!("udc-harness: {e}");
            }
        }
    }

    // ----- controlq --------------------------------------------------------

    /// Sends a command and waits (up to the default timeout) for its
    /// response. A non-OK status is returned, not an error; a used length
    /// other than 8 is an error.
    pub fn command(&mut self, req: VirtioUdcCtrlReq) -> Result<VirtioUdcCtrlResp> {
        self.command_timeout(req, self.opts.timeout)
    }

    /// [`Harness::command`] with an explicit timeout.
    pub fn command_timeout(&mut self, req: VirtioUdcCtrlReq, timeout: Duration) -> Result<VirtioUdcCtrlResp> {
        let r = self.raw_command_chain(
            &[
                RawDesc::Readable(req.as_slice().to_vec()),
                RawDesc::Writable(CTRL_RESP_SIZE as u32),
            ],
            timeout,
        )?;
        if r.used_len as usize != CTRL_RESP_SIZE {
            return Err(Error::BadUsedLen {
                what: "control response",
                expected: CTRL_RESP_SIZE as u32,
                got: r.used_len,
            });
        }
        Ok(r.response().expect("8-byte writable buffer"))
    }

    /// Sends a command and requires status OK; returns the response value.
    pub fn command_ok(&mut self, req: VirtioUdcCtrlReq) -> Result<u32> {
        let r = self.command(req)?;
        if !r.is_ok() {
            return Err(Error::CommandFailed {
                opcode: u16::from(req.opcode),
                ep: req.ep,
                status: r.code(),
                name: r
                    .status_enum()
                    .map(|s| s.spec_name().to_string())
                    .unwrap_or_else(|| "undefined".into()),
            });
        }
        Ok(r.value())
    }

    /// Sends arbitrary readable bytes as a command, with an 8-byte writable
    /// response buffer.
    pub fn raw_command(&mut self, bytes: &[u8]) -> Result<RawCompletion> {
        self.raw_command_chain(
            &[
                RawDesc::Readable(bytes.to_vec()),
                RawDesc::Writable(CTRL_RESP_SIZE as u32),
            ],
            self.opts.timeout,
        )
    }

    /// Sends an arbitrary chain on the controlq and waits for it.
    pub fn raw_command_chain(&mut self, parts: &[RawDesc], timeout: Duration) -> Result<RawCompletion> {
        self.ensure_connected()?;
        let (chain, allocs, writable) = self.build_chain(parts)?;
        let head = match self.controlq.add_chain(&chain) {
            Ok(h) => h,
            Err(e) => {
                self.free_all(&allocs);
                return Err(e);
            }
        };
        self.cmds.insert(head, CmdInFlight { allocs });
        self.controlq.kick()?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            for (h, len) in self.controlq.wait_used(left)? {
                let c = self.cmds.remove(&h);
                if h == head {
                    let mut out = Vec::new();
                    for &(gpa, l) in &writable {
                        out.push(self.mem.read(gpa, l as usize)?);
                    }
                    if let Some(c) = c {
                        self.free_all(&c.allocs);
                    }
                    return Ok(RawCompletion {
                        used_len: len,
                        writable: out,
                    });
                }
                // A command an earlier call gave up on.
                log::warn!("udc-harness: late command completion, head {h}, used {len}");
                if let Some(c) = c {
                    self.free_all(&c.allocs);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::timeout(
                    format!("controlq response (head {head})"),
                    timeout,
                ));
            }
        }
    }

    /// PULLUP on or off.
    pub fn pullup(&mut self, on: bool) -> Result<VirtioUdcCtrlResp> {
        let mut r = ctrl_req(wire::VIRTIO_UDC_CMD_PULLUP);
        r.value = Le32::from(u32::from(on));
        self.command(r)
    }

    /// EP_ENABLE with interval, burst and mult 0.
    pub fn ep_enable(&mut self, ep: u8, ep_type: u8, max_packet: u16) -> Result<VirtioUdcCtrlResp> {
        self.ep_enable_with(EpEnable {
            ep,
            ep_type,
            max_packet,
            ..Default::default()
        })
    }

    /// EP_ENABLE with every argument.
    pub fn ep_enable_with(&mut self, e: EpEnable) -> Result<VirtioUdcCtrlResp> {
        let mut r = ctrl_req(wire::VIRTIO_UDC_CMD_EP_ENABLE);
        r.ep = e.ep;
        r.ep_type = e.ep_type;
        r.max_packet = Le16::from(e.max_packet);
        r.interval = e.interval;
        r.max_burst = e.max_burst;
        r.mult = e.mult;
        self.command(r)
    }

    fn ep_cmd(&mut self, opcode: u16, ep: u8, value: u32) -> Result<VirtioUdcCtrlResp> {
        let mut r = ctrl_req(opcode);
        r.ep = ep;
        r.value = Le32::from(value);
        self.command(r)
    }

    /// EP_DISABLE.
    pub fn ep_disable(&mut self, ep: u8) -> Result<VirtioUdcCtrlResp> {
        self.ep_cmd(wire::VIRTIO_UDC_CMD_EP_DISABLE, ep, 0)
    }

    /// EP_SET_HALT: 0 clear, 1 halt (on ep0: protocol stall), 2 wedge.
    pub fn set_halt(&mut self, ep: u8, value: u32) -> Result<VirtioUdcCtrlResp> {
        self.ep_cmd(wire::VIRTIO_UDC_CMD_EP_SET_HALT, ep, value)
    }

    /// EP_FIFO_STATUS.
    pub fn fifo_status(&mut self, ep: u8) -> Result<VirtioUdcCtrlResp> {
        self.ep_cmd(wire::VIRTIO_UDC_CMD_EP_FIFO_STATUS, ep, 0)
    }

    /// EP_FIFO_FLUSH.
    pub fn fifo_flush(&mut self, ep: u8) -> Result<VirtioUdcCtrlResp> {
        self.ep_cmd(wire::VIRTIO_UDC_CMD_EP_FIFO_FLUSH, ep, 0)
    }

    /// XFER_CANCEL of the request with `tag` on `ep`.
    pub fn cancel(&mut self, ep: u8, tag: u64) -> Result<VirtioUdcCtrlResp> {
        let mut r = ctrl_req(wire::VIRTIO_UDC_CMD_XFER_CANCEL);
        r.ep = ep;
        r.tag = Le64::from(tag);
        self.command(r)
    }

    /// GET_FRAME.
    pub fn get_frame(&mut self) -> Result<VirtioUdcCtrlResp> {
        self.command(ctrl_req(wire::VIRTIO_UDC_CMD_GET_FRAME))
    }

    /// WAKEUP.
    pub fn wakeup(&mut self) -> Result<VirtioUdcCtrlResp> {
        self.command(ctrl_req(wire::VIRTIO_UDC_CMD_WAKEUP))
    }

    /// SET_SELFPOWERED.
    pub fn set_selfpowered(&mut self, on: bool) -> Result<VirtioUdcCtrlResp> {
        let mut r = ctrl_req(wire::VIRTIO_UDC_CMD_SET_SELFPOWERED);
        r.value = Le32::from(u32::from(on));
        self.command(r)
    }

    // ----- eventq ----------------------------------------------------------

    fn post_event_buffer(&mut self) -> Result<()> {
        let gpa = self.alloc.alloc(EVENT_SIZE as u64, 16)?;
        self.repost_event_buffer(gpa)
    }

    fn repost_event_buffer(&mut self, gpa: u64) -> Result<()> {
        self.mem.fill(gpa, EVENT_SIZE, 0)?;
        let head = self.eventq.add_chain(&[(gpa, EVENT_SIZE as u32, true)])?;
        self.event_bufs.insert(head, gpa);
        Ok(())
    }

    /// Collects events the device has delivered, waiting up to `wait` for the
    /// first, and reposts their buffers.
    fn reap_events(&mut self, wait: Duration) -> Result<()> {
        let used = self.eventq.wait_used(wait)?;
        if used.is_empty() {
            return Ok(());
        }
        // Take every buffer of the batch before reposting any: a repost may
        // reuse the descriptor index of a later entry of the same batch.
        let bufs: Vec<(u64, u32)> = used
            .iter()
            .map(|&(head, len)| {
                let gpa = self
                    .event_bufs
                    .remove(&head)
                    .expect("DriverQueue only returns heads in flight");
                (gpa, len)
            })
            .collect();
        let mut err = None;
        for (gpa, len) in bufs {
            let ev: VirtioUdcEvent = self.mem.read_obj(gpa)?;
            if len as usize != EVENT_SIZE && err.is_none() {
                err = Some(Error::BadUsedLen {
                    what: "event",
                    expected: EVENT_SIZE as u32,
                    got: len,
                });
            }
            log::debug!("udc-harness: event {:?}", Event::from(&ev));
            self.events.push_back(ev);
            self.repost_event_buffer(gpa)?;
        }
        self.eventq.kick()?;
        err.map_or(Ok(()), Err)
    }

    /// The next event, waiting up to `timeout`; `None` on timeout.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<VirtioUdcEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.reap_events(left)?;
            if self.events.is_empty() && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// The next event without waiting.
    pub fn try_event(&mut self) -> Result<Option<VirtioUdcEvent>> {
        self.next_event(Duration::ZERO)
    }

    /// The next event, decoded.
    pub fn next_decoded_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        Ok(self.next_event(timeout)?.map(Event::from))
    }

    /// The first event (in delivery order) that `pred` accepts, waiting up to
    /// `timeout`; events it passes over stay queued, in order, for
    /// [`Harness::next_event`].
    pub fn next_event_matching(
        &mut self,
        mut pred: impl FnMut(&Event) -> bool,
        timeout: Duration,
    ) -> Result<Option<VirtioUdcEvent>> {
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        loop {
            while scanned < self.events.len() {
                if pred(&Event::from(&self.events[scanned])) {
                    return Ok(self.events.remove(scanned));
                }
                scanned += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.reap_events(left)?;
            if scanned == self.events.len() && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Waits for the next event of wire type `ty` (VIRTIO_UDC_EVT_*), leaving
    /// others queued; an error on timeout.
    pub fn expect_event(&mut self, ty: u16, timeout: Duration) -> Result<VirtioUdcEvent> {
        let mut f = |e: &Event| event_type(e) == ty;
        self.next_event_matching(&mut f, timeout)?
            .ok_or_else(|| Error::timeout(format!("event type {ty:#x}"), timeout))
    }

    /// Events received and not yet taken.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Event buffers currently posted on the eventq.
    pub fn posted_event_buffers(&self) -> usize {
        self.event_bufs.len()
    }

    // ----- xferq -----------------------------------------------------------

    /// Submits a transfer: header + segments in one readable buffer, an
    /// 8-byte status buffer.
    pub fn submit(
        &mut self,
        ep: u8,
        flags: u8,
        length: u32,
        segments: &[(u64, u32)],
        tag: u64,
    ) -> Result<XferHandle> {
        let hdr = xfer_req(ep, flags, length, segments.len() as u32, tag);
        let segs: Vec<VirtioUdcSeg> = segments.iter().map(|&(a, l)| seg(a, l)).collect();
        self.submit_req(&hdr, &segs)
    }

    /// Submits a transfer of a whole [`DmaBuffer`] (length = buffer length).
    pub fn submit_buffer(&mut self, ep: u8, flags: u8, buf: &DmaBuffer, tag: u64) -> Result<XferHandle> {
        self.submit(ep, flags, buf.len_u32(), &buf.segments, tag)
    }

    /// Submits exactly this header and these segments (header fields are not
    /// checked: num_segs may disagree with `segs`), with an 8-byte status.
    pub fn submit_req(&mut self, hdr: &VirtioUdcXferReq, segs: &[VirtioUdcSeg]) -> Result<XferHandle> {
        self.submit_raw(&[
            RawDesc::Readable(xfer_bytes(hdr, segs)),
            RawDesc::Writable(XFER_STATUS_SIZE as u32),
        ])
    }

    /// Submits `readable` bytes in one descriptor and a writable buffer of
    /// `writable_len` bytes (none if 0).
    pub fn submit_bytes(&mut self, readable: &[u8], writable_len: u32) -> Result<XferHandle> {
        let mut parts = vec![RawDesc::Readable(readable.to_vec())];
        if writable_len > 0 {
            parts.push(RawDesc::Writable(writable_len));
        }
        self.submit_raw(&parts)
    }

    /// Submits an arbitrary chain on the xferq. The first harness-allocated
    /// writable descriptor is read as the status at completion. Tag and ep
    /// in the [`Completion`] come from the readable bytes if they hold a
    /// header.
    pub fn submit_raw(&mut self, parts: &[RawDesc]) -> Result<XferHandle> {
        self.submit_parts(parts, self.opts.indirect)
    }

    /// [`Harness::submit_raw`] through an indirect descriptor table (one
    /// ring descriptor), whatever was negotiated.
    pub fn submit_raw_indirect(&mut self, parts: &[RawDesc]) -> Result<XferHandle> {
        self.submit_parts(parts, true)
    }

    fn submit_parts(&mut self, parts: &[RawDesc], indirect: bool) -> Result<XferHandle> {
        let readable: Vec<u8> = parts
            .iter()
            .filter_map(|p| match p {
                RawDesc::Readable(b) => Some(b.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .take(wire::XFER_REQ_SIZE)
            .collect();
        let (tag, ep) = wire::read_struct::<VirtioUdcXferReq>(&readable)
            .map(|h| (u64::from(h.tag), h.ep))
            .unwrap_or((0, 0));
        self.ensure_connected()?;
        let (chain, mut allocs, writable) = self.build_chain(parts)?;
        let table = if indirect {
            match self.alloc.alloc(16 * chain.len() as u64, 16) {
                Ok(t) => {
                    allocs.push(t);
                    Some(t)
                }
                Err(e) => {
                    self.free_all(&allocs);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let deadline = Instant::now() + self.opts.timeout;
        let head = loop {
            let added = match table {
                Some(t) => self.xferq.add_chain_indirect(t, &chain),
                None => self.xferq.add_chain(&chain),
            };
            match added {
                Ok(h) => break h,
                Err(Error::QueueFull { .. }) if Instant::now() < deadline => {
                    // Like a driver whose ring is full: make sure the device
                    // has been told, then wait for it to finish something.
                    if let Err(e) = self
                        .xferq
                        .kick()
                        .and_then(|_| self.wait_xfers(deadline - Instant::now()))
                    {
                        self.free_all(&allocs);
                        return Err(e);
                    }
                }
                Err(e) => {
                    self.free_all(&allocs);
                    return Err(e);
                }
            }
        };
        let handle = XferHandle {
            id: self.next_xfer_id,
            head,
        };
        self.next_xfer_id += 1;
        self.xfers.insert(
            head,
            XferInFlight {
                handle,
                tag,
                ep,
                allocs,
                status_buf: writable.first().copied(),
            },
        );
        if self.auto_kick {
            self.xferq.kick()?;
        }
        Ok(handle)
    }

    fn reap_used_xfers(&mut self, used: Vec<(u16, u32)>) -> Result<()> {
        for (head, used_len) in used {
            let x = self
                .xfers
                .remove(&head)
                .expect("DriverQueue only returns heads in flight");
            let (mut status, mut actual) = (u32::MAX, u32::MAX);
            if let Some((gpa, len)) = x.status_buf {
                let b = self.mem.read(gpa, (len as usize).min(XFER_STATUS_SIZE))?;
                let mut full = [SENTINEL; XFER_STATUS_SIZE];
                full[..b.len()].copy_from_slice(&b);
                status = u32::from_le_bytes(full[0..4].try_into().unwrap());
                actual = u32::from_le_bytes(full[4..8].try_into().unwrap());
            }
            self.free_all(&x.allocs);
            let c = Completion {
                handle: x.handle,
                tag: x.tag,
                ep: x.ep,
                status,
                actual,
                used_len,
                seq: self.next_seq,
            };
            self.next_seq += 1;
            log::debug!("udc-harness: completion {c:?}");
            self.done.push_back(c);
        }
        Ok(())
    }

    fn reap_xfers(&mut self) -> Result<()> {
        let used = self.xferq.poll_used()?;
        self.reap_used_xfers(used)
    }

    fn wait_xfers(&mut self, wait: Duration) -> Result<()> {
        let used = self.xferq.wait_used(wait)?;
        self.reap_used_xfers(used)
    }

    /// Every completion not yet claimed, in used-ring order (collects new
    /// ones without waiting).
    pub fn poll_completions(&mut self) -> Result<Vec<Completion>> {
        self.reap_xfers()?;
        Ok(self.done.drain(..).collect())
    }

    /// The completion of `h` if it has completed (no waiting).
    pub fn try_completion(&mut self, h: XferHandle) -> Result<Option<Completion>> {
        self.reap_xfers()?;
        Ok(self.take_done(h))
    }

    fn take_done(&mut self, h: XferHandle) -> Option<Completion> {
        let i = self.done.iter().position(|c| c.handle == h)?;
        self.done.remove(i)
    }

    /// Waits up to `timeout` for `h` to complete. Other completions that
    /// arrive meanwhile are kept for later calls.
    pub fn wait_completion(&mut self, h: XferHandle, timeout: Duration) -> Result<Completion> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.take_done(h) {
                return Ok(c);
            }
            if !self.xfers.get(&h.head).is_some_and(|x| x.handle == h) {
                self.reap_xfers()?;
                if let Some(c) = self.take_done(h) {
                    return Ok(c);
                }
                return Err(Error::InvalidArgument(format!(
                    "{h:?} is neither in flight nor an unclaimed completion"
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::timeout(format!("completion of {h:?}"), timeout));
            }
            self.wait_xfers(deadline - now)?;
        }
    }

    /// Waits for the oldest unclaimed completion of any transfer.
    pub fn wait_any_completion(&mut self, timeout: Duration) -> Result<Completion> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.done.pop_front() {
                return Ok(c);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::timeout("any transfer completion", timeout));
            }
            self.wait_xfers(deadline - now)?;
        }
    }

    /// Waits for all of `handles` (one overall timeout); returned in the
    /// order of `handles`.
    pub fn wait_completions(&mut self, handles: &[XferHandle], timeout: Duration) -> Result<Vec<Completion>> {
        let deadline = Instant::now() + timeout;
        handles
            .iter()
            .map(|&h| {
                let left = deadline.saturating_duration_since(Instant::now());
                self.wait_completion(h, left)
            })
            .collect()
    }

    /// Transfers submitted and not yet completed.
    pub fn xfers_in_flight(&self) -> usize {
        self.xfers.len()
    }

    /// Whether `h` is still in flight (as of the last look at the ring).
    pub fn is_in_flight(&self, h: XferHandle) -> bool {
        self.xfers.get(&h.head).is_some_and(|x| x.handle == h)
    }

    // ----- data buffers ----------------------------------------------------

    /// Allocates a data buffer laid out as `spec` says (contents zero).
    pub fn alloc_buffer(&mut self, spec: &BufferSpec) -> Result<DmaBuffer> {
        let sizes = spec.segment_sizes()?;
        let align = if spec.page_aligned { PAGE_SIZE } else { 16 };
        let (lo, hi) = match spec.region {
            Some(r) => {
                let &(s, l) = self
                    .alloc
                    .ranges()
                    .get(r)
                    .ok_or_else(|| Error::InvalidArgument(format!("no region {r}")))?;
                (s, s + l)
            }
            None => (0, u64::MAX),
        };
        let mut buf = DmaBuffer {
            len: spec.len,
            segments: vec![(0, 0); sizes.len()],
            guards: Vec::new(),
            allocs: Vec::new(),
        };
        let res = (|| -> Result<()> {
            if !spec.scatter {
                let total: u64 = if spec.page_aligned {
                    sizes.iter().map(|&s| align_up(s.max(1), PAGE_SIZE)).sum()
                } else {
                    spec.len
                };
                let base = self.alloc.alloc_within(lo, hi, total, align)?;
                buf.allocs.push(base);
                self.mem.fill(base, total as usize, 0)?;
                let mut off = base;
                for (i, &s) in sizes.iter().enumerate() {
                    buf.segments[i] = (off, s as u32);
                    off += if spec.page_aligned {
                        align_up(s.max(1), PAGE_SIZE)
                    } else {
                        s
                    };
                }
            } else {
                // Reverse order, with guards: segment i+1 sits below segment
                // i, never right after it.
                let guard_len = if spec.page_aligned { PAGE_SIZE } else { 64 };
                for i in (0..sizes.len()).rev() {
                    let g = self.alloc.alloc_within(lo, hi, guard_len, align)?;
                    buf.allocs.push(g);
                    self.mem.fill(g, guard_len as usize, GUARD_BYTE)?;
                    buf.guards.push((g, guard_len));
                    let s = self.alloc.alloc_within(lo, hi, sizes[i], align)?;
                    buf.allocs.push(s);
                    self.mem.fill(s, sizes[i] as usize, 0)?;
                    buf.segments[i] = (s, sizes[i] as u32);
                }
                let g = self.alloc.alloc_within(lo, hi, guard_len, align)?;
                buf.allocs.push(g);
                self.mem.fill(g, guard_len as usize, GUARD_BYTE)?;
                buf.guards.push((g, guard_len));
            }
            Ok(())
        })();
        if let Err(e) = res {
            let a = std::mem::take(&mut buf.allocs);
            self.free_all(&a);
            return Err(e);
        }
        Ok(buf)
    }

    /// A contiguous zeroed buffer of `len` bytes.
    pub fn buffer(&mut self, len: u64) -> Result<DmaBuffer> {
        self.alloc_buffer(&BufferSpec::contiguous(len))
    }

    /// Writes `data` across the buffer's segments from its start.
    pub fn write_buffer(&self, buf: &DmaBuffer, data: &[u8]) -> Result<()> {
        if data.len() as u64 > buf.len {
            return Err(Error::InvalidArgument(format!(
                "{} bytes do not fit a {}-byte buffer",
                data.len(),
                buf.len
            )));
        }
        let mut off = 0usize;
        for &(gpa, len) in &buf.segments {
            if off >= data.len() {
                break;
            }
            let n = (len as usize).min(data.len() - off);
            self.mem.write(gpa, &data[off..off + n])?;
            off += n;
        }
        Ok(())
    }

    /// Reads the first `len` bytes of the buffer (across segments).
    pub fn read_buffer_prefix(&self, buf: &DmaBuffer, len: u64) -> Result<Vec<u8>> {
        let len = len.min(buf.len) as usize;
        let mut out = Vec::with_capacity(len);
        for &(gpa, l) in &buf.segments {
            if out.len() >= len {
                break;
            }
            let n = (l as usize).min(len - out.len());
            out.extend_from_slice(&self.mem.read(gpa, n)?);
        }
        Ok(out)
    }

    /// Reads the whole buffer.
    pub fn read_buffer(&self, buf: &DmaBuffer) -> Result<Vec<u8>> {
        self.read_buffer_prefix(buf, buf.len)
    }

    /// True if every guard area around a scattered buffer still holds
    /// [`GUARD_BYTE`] (the device wrote nothing outside the segments).
    pub fn guards_intact(&self, buf: &DmaBuffer) -> Result<bool> {
        for &(gpa, len) in &buf.guards {
            if self.mem.read(gpa, len as usize)?.iter().any(|&b| b != GUARD_BYTE) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Returns the buffer's memory to the allocator.
    pub fn free_buffer(&mut self, buf: DmaBuffer) -> Result<()> {
        for a in buf.allocs {
            self.alloc.free(a)?;
        }
        Ok(())
    }
}

/// The wire type of a decoded event.
pub fn event_type(e: &Event) -> u16 {
    match e {
        Event::BusReset { .. } => wire::VIRTIO_UDC_EVT_BUS_RESET,
        Event::Setup(_) => wire::VIRTIO_UDC_EVT_SETUP,
        Event::Suspend => wire::VIRTIO_UDC_EVT_SUSPEND,
        Event::Resume => wire::VIRTIO_UDC_EVT_RESUME,
        Event::Disconnect => wire::VIRTIO_UDC_EVT_DISCONNECT,
        Event::Address(_) => wire::VIRTIO_UDC_EVT_ADDRESS,
        Event::EpHalt { .. } => wire::VIRTIO_UDC_EVT_EP_HALT,
        Event::Unknown(e) => u16::from(e.type_),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_spec_sizes() {
        assert_eq!(
            BufferSpec::contiguous(10)
                .with_segments(3)
                .segment_sizes()
                .unwrap(),
            vec![3, 3, 4]
        );
        assert_eq!(BufferSpec::per_page(8192 + 1).segments, 3);
        assert_eq!(
            BufferSpec::per_page(8192 + 1).segment_sizes().unwrap(),
            vec![4096, 4096, 1]
        );
        assert_eq!(
            BufferSpec::per_page(8192).segment_sizes().unwrap(),
            vec![4096, 4096]
        );
        assert!(BufferSpec::contiguous(2)
            .with_segments(3)
            .segment_sizes()
            .is_err());
        assert_eq!(BufferSpec::contiguous(0).segment_sizes().unwrap(), vec![0]);
        let mut s = BufferSpec::contiguous(5);
        s.sizes = Some(vec![1, 4]);
        assert_eq!(s.segment_sizes().unwrap(), vec![1, 4]);
        s.sizes = Some(vec![1, 3]);
        assert!(s.segment_sizes().is_err());
    }

    #[test]
    fn completion_result_maps_like_the_driver() {
        let mut c = Completion {
            handle: XferHandle { id: 0, head: 0 },
            tag: 1,
            ep: 0x81,
            status: 0,
            actual: 10,
            used_len: 8,
            seq: 0,
        };
        assert_eq!(c.result(), Ok(10));
        c.status = wire::VIRTIO_UDC_S_STALL;
        assert_eq!(c.result(), Err(-libc::EPIPE));
        c.status = 99;
        assert_eq!(c.result(), Err(-libc::EIO));
        c.status = 0;
        c.used_len = 4;
        assert_eq!(c.result(), Err(-libc::EIO));
        assert!(!c.is_ok());
    }

    #[test]
    fn wire_helpers() {
        let h = xfer_req(0x81, 1, 100, 2, 7);
        let b = xfer_bytes(&h, &[seg(0x1000, 50), seg(0x2000, 50)]);
        assert_eq!(b.len(), 24 + 32);
        let back = wire::read_struct::<VirtioUdcXferReq>(&b).unwrap();
        assert_eq!(back, h);
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 0x1000);
        assert_eq!(u16::from(ctrl_req(5).opcode), 5);
    }
}
