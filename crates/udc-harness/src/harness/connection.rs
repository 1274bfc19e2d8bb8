// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Connection and setup over vhost-user: the socket, feature and
//! protocol-feature negotiation, the config space, the memory table and
//! the three vrings; accessors of what was negotiated and of guest memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::VhostBackend;
use vhost_device_udc::wire::{self, VirtioUdcConfig, CONFIG_SIZE};
use virtio_bindings::bindings::{virtio_config, virtio_ring};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use super::iommu::{IommuFrontend, PERM_RW, RING_IOVA_OFFSET};
use super::Harness;
use crate::error::{Error, Result};
use crate::memory::{Allocator, GuestMemory, MemoryLayout, PAGE_SIZE};
use crate::queue::DriverQueue;

// Feature bits as masks of the 64-bit feature word; the bit numbers come
// from virtio-bindings (the kernel's virtio_config.h and virtio_ring.h)
// and from vhost.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_config::VIRTIO_F_VERSION_1;
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_ring::VIRTIO_RING_F_EVENT_IDX;
/// VIRTIO_F_ACCESS_PLATFORM: addresses are IOVAs behind an IOMMU.
pub const VIRTIO_F_ACCESS_PLATFORM: u64 = 1 << virtio_config::VIRTIO_F_ACCESS_PLATFORM;
/// `VHOST_USER_F_PROTOCOL_FEATURES`.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

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
    /// Act as a front end behind a vIOMMU: ack ACCESS_PLATFORM, negotiate
    /// BACKEND_REQ and REPLY_ACK, give the daemon a back-end channel, put
    /// the rings at IOVAs [`super::RING_IOVA_OFFSET`] above their GPAs, and
    /// map all of guest memory read-write at IOVA = GPA in the model (a test
    /// maps what else it needs with [`Harness::iommu`]). The daemon learns
    /// every mapping by a miss, which the harness answers while it waits.
    pub iommu: bool,
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
            iommu: false,
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
        let main_dup = stream.try_clone().map_err(|e| Error::io("dup", e))?;
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
        if opts.iommu {
            if device_features & VIRTIO_F_ACCESS_PLATFORM == 0 {
                return Err(Error::NotOffered("VIRTIO_F_ACCESS_PLATFORM".into()));
            }
            acked |= VIRTIO_F_ACCESS_PLATFORM;
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
        let mut wanted = opts.protocol_features | VhostUserProtocolFeatures::CONFIG;
        if opts.iommu {
            let iotlb = VhostUserProtocolFeatures::BACKEND_REQ | VhostUserProtocolFeatures::REPLY_ACK;
            if !offered.contains(iotlb) {
                return Err(Error::NotOffered(
                    "BACKEND_REQ and REPLY_ACK (needed for IOTLB misses)".into(),
                ));
            }
            wanted |= iotlb;
        }
        let protocol_features = wanted & offered;
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

        let iommu = if opts.iommu {
            let (ours, theirs) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
            frontend
                .set_backend_request_fd(&theirs)
                .map_err(Error::vhost("SET_BACKEND_REQ_FD"))?;
            let host: Vec<(u64, u64, u64)> = mem
                .regions()
                .iter()
                .map(|r| {
                    let h = mem
                        .mmap()
                        .get_host_address(GuestAddress(r.gpa))
                        .map(|p| p as u64)
                        .unwrap_or(0);
                    (r.gpa, r.size, h)
                })
                .collect();
            let mut f = IommuFrontend::new(main_dup, ours, host)?;
            for r in mem.regions() {
                f.map(r.gpa, r.gpa, r.size, PERM_RW);
            }
            Some(f)
        } else {
            drop(main_dup);
            None
        };

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
            raw_event_heads: HashSet::new(),
            raw_event_returns: VecDeque::new(),
            repost_events: true,
            events: VecDeque::new(),
            xfers: HashMap::new(),
            done: VecDeque::new(),
            next_xfer_id: 0,
            next_seq: 0,
            next_tag: 1,
            auto_kick: true,
            iommu,
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

    /// A ring's address as the front end gives it: the harness's own
    /// mapping of it, or behind the IOMMU its IOVA (mapped in the model).
    fn ring_addr(&self, gpa: u64) -> u64 {
        if self.iommu.is_some() {
            gpa + RING_IOVA_OFFSET
        } else {
            self.host_addr(gpa)
        }
    }

    fn setup_vring(&mut self, i: usize) -> Result<()> {
        let q = self.queue(i);
        let size = q.size();
        let (desc, avail, used) = q.ring_addrs();
        let n = u64::from(size);
        if let Some(f) = self.iommu.as_mut() {
            for (gpa, len) in [(desc, 16 * n), (avail, 6 + 2 * n), (used, 6 + 8 * n)] {
                f.map(gpa + RING_IOVA_OFFSET, gpa, len, PERM_RW);
            }
        }
        let q = self.queue(i);
        let cfg = q.config_data(|g| self.ring_addr(g));
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

    /// Stops queue `i` as QEMU does when the VM stops (GET_VRING_BASE);
    /// returns the device's next available index.
    pub fn stop_queue(&mut self, i: usize) -> Result<u32> {
        let fe = self.frontend_mut()?;
        fe.get_vring_base(i).map_err(Error::vhost("GET_VRING_BASE"))
    }

    /// Starts a stopped queue again at available index `base`, as QEMU does
    /// when the VM continues (the rings where they were).
    pub fn restart_queue(&mut self, i: usize, base: u32) -> Result<()> {
        let q = self.queue(i);
        let cfg = q.config_data(|g| self.ring_addr(g));
        let (call, kick) = (
            q.call_fd().try_clone().map_err(|e| Error::io("dup", e))?,
            q.kick_fd().try_clone().map_err(|e| Error::io("dup", e))?,
        );
        let fe = self.frontend_mut()?;
        fe.set_vring_addr(i, &cfg)
            .map_err(Error::vhost("SET_VRING_ADDR"))?;
        fe.set_vring_base(i, base as u16)
            .map_err(Error::vhost("SET_VRING_BASE"))?;
        fe.set_vring_call(i, &call)
            .map_err(Error::vhost("SET_VRING_CALL"))?;
        fe.set_vring_kick(i, &kick)
            .map_err(Error::vhost("SET_VRING_KICK"))?;
        Ok(())
    }

    /// Enables or disables queue `i` (SET_VRING_ENABLE), and returns once
    /// the daemon has handled it: QEMU waits for this message's reply
    /// before it does anything else, misses included.
    pub fn enable_queue(&mut self, i: usize, enable: bool) -> Result<()> {
        let fe = self.frontend_mut()?;
        fe.set_vring_enable(i, enable)
            .map_err(Error::vhost("SET_VRING_ENABLE"))?;
        // Answered in order: a reply to this says the one above is done,
        // with or without REPLY_ACK.
        fe.get_features().map_err(Error::vhost("GET_FEATURES"))?;
        Ok(())
    }

    /// Moves guest RAM to a new memfd laid out as `layout`, as a VMM does
    /// when it remaps RAM under a running device: the bytes at every GPA
    /// both layouts back are copied, the new table goes to the daemon with
    /// SET_MEM_TABLE, and the harness reads and writes the new memory from
    /// then on. The allocator keeps the allocations the new layout still
    /// backs and forgets the others. The rings must stay backed.
    ///
    /// Returns the old memory, which nothing of the harness touches any
    /// more, so a test can check that the daemon does not either.
    pub fn replace_memory(&mut self, layout: &MemoryLayout) -> Result<GuestMemory> {
        let new = GuestMemory::new(layout)?;
        for q in [&self.controlq, &self.eventq, &self.xferq] {
            let (desc, avail, used) = q.ring_addrs();
            let n = u64::from(q.size());
            for (gpa, len) in [(desc, 16 * n), (avail, 6 + 2 * n), (used, 6 + 8 * n)] {
                if !new.contains(gpa, len) {
                    return Err(Error::InvalidArgument(format!(
                        "queue {} ring at {gpa:#x}+{len:#x} is outside the new layout",
                        q.index()
                    )));
                }
            }
        }
        copy_common(&self.mem, &new)?;
        self.frontend_mut()?
            .set_mem_table(&new.vhost_regions()?)
            .map_err(Error::vhost("SET_MEM_TABLE"))?;
        for q in [&mut self.controlq, &mut self.eventq, &mut self.xferq] {
            q.set_memory(new.mmap().clone());
        }
        let ranges: Vec<(u64, u64)> = new.regions().iter().map(|r| (r.gpa, r.size)).collect();
        self.alloc = self.alloc.remapped(&ranges);
        Ok(std::mem::replace(&mut self.mem, new))
    }

    /// Sends VHOST_USER_RESET_DEVICE, as a VMM does when the guest resets
    /// the device (ask for VhostUserProtocolFeatures::RESET_DEVICE in
    /// [`HarnessOptions::protocol_features`]). The harness's queues keep
    /// their state, for a test to check that nothing more is written to
    /// them, until [`Harness::reinitialize`].
    pub fn reset_device(&mut self) -> Result<()> {
        self.frontend_mut()?
            .reset_device()
            .map_err(Error::vhost("RESET_DEVICE"))
    }

    /// After [`Harness::reset_device`], brings the device up again on the
    /// same connection, as a driver does after a virtio reset: features,
    /// fresh rings for the three queues (num, addr, base 0, call, kick,
    /// enable), event buffers. What was in flight is forgotten and its
    /// memory freed.
    pub fn reinitialize(&mut self) -> Result<()> {
        let acked = self.acked_features;
        self.frontend_mut()?
            .set_features(acked)
            .map_err(Error::vhost("SET_FEATURES"))?;
        let mut stale: Vec<u64> = Vec::new();
        for q in [&self.controlq, &self.eventq, &self.xferq] {
            let (desc, avail, used) = q.ring_addrs();
            stale.extend([desc, avail, used]);
        }
        stale.extend(self.xfers.drain().flat_map(|(_, x)| x.allocs));
        stale.extend(self.cmds.drain().flat_map(|(_, c)| c.allocs));
        stale.extend(self.event_bufs.drain().map(|(_, gpa)| gpa));
        self.free_all(&stale);
        self.events.clear();
        self.done.clear();
        self.raw_event_heads.clear();
        self.raw_event_returns.clear();
        let mmap = self.mem.mmap().clone();
        for i in 0..wire::NUM_QUEUES {
            let mut q = DriverQueue::new(i as u16, mmap.clone(), &mut self.alloc, self.opts.queue_sizes[i])?;
            q.set_event_idx(self.opts.event_idx);
            q.set_always_kick(self.opts.always_kick);
            q.set_strict_interrupts(self.opts.strict_interrupts);
            match i {
                0 => self.controlq = q,
                1 => self.eventq = q,
                _ => self.xferq = q,
            }
        }
        for i in 0..wire::NUM_QUEUES {
            self.setup_vring(i)?;
            if self.opts.enable_queues {
                self.frontend_mut()?
                    .set_vring_enable(i, true)
                    .map_err(Error::vhost("SET_VRING_ENABLE"))?;
            }
        }
        self.repost_events = true;
        self.post_event_buffers(self.opts.event_buffers)
    }

    // ----- accessors -------------------------------------------------------

    /// The device's configuration space as read at connect time.
    pub fn config(&self) -> &VirtioUdcConfig {
        &self.config
    }

    /// Features the harness acked.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Protocol features the harness acked.
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol_features
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

    /// The IOMMU front end, with [`HarnessOptions::iommu`].
    pub fn iommu(&mut self) -> Option<&mut IommuFrontend> {
        self.iommu.as_mut()
    }

    /// Waits up to `timeout` for used entries of queue `i`; behind the
    /// IOMMU, answers the daemon's misses meanwhile (it cannot finish
    /// anything while one waits).
    pub(super) fn wait_used_on(&mut self, i: usize, timeout: Duration) -> Result<Vec<(u16, u32)>> {
        if self.iommu.is_none() {
            return match i {
                0 => self.controlq.wait_used(timeout),
                1 => self.eventq.wait_used(timeout),
                _ => self.xferq.wait_used(timeout),
            };
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.iommu.as_mut() {
                f.serve_misses()?;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(Duration::from_millis(2));
            let used = match i {
                0 => self.controlq.wait_used(slice)?,
                1 => self.eventq.wait_used(slice)?,
                _ => self.xferq.wait_used(slice)?,
            };
            if !used.is_empty() || left.is_zero() {
                return Ok(used);
            }
        }
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
    fn frontend_mut(&mut self) -> Result<&mut Frontend> {
        self.frontend.as_mut().ok_or_else(|| {
            Error::io(
                "vhost-user",
                std::io::Error::new(std::io::ErrorKind::NotConnected, "disconnected"),
            )
        })
    }

    pub(super) fn ensure_connected(&self) -> Result<()> {
        if self.frontend.is_none() {
            return Err(Error::io(
                "virtqueue",
                std::io::Error::new(std::io::ErrorKind::NotConnected, "disconnected"),
            ));
        }
        Ok(())
    }

    /// Closes the vhost-user connection (the daemon sees the frontend go
    /// away). Guest memory stays readable; commands fail afterwards.
    pub fn disconnect(&mut self) -> Result<()> {
        self.frontend.take();
        Ok(())
    }
}

/// Copies the bytes at every GPA both `from` and `to` back.
fn copy_common(from: &GuestMemory, to: &GuestMemory) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    for a in from.regions() {
        for b in to.regions() {
            let (start, end) = (a.gpa.max(b.gpa), a.end().min(b.end()));
            let mut at = start;
            while at < end {
                let n = (end - at).min(CHUNK) as usize;
                from.read_into(at, &mut buf[..n])?;
                to.write(at, &buf[..n])?;
                at += n as u64;
            }
        }
    }
    Ok(())
}
