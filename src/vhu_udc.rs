// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The vhost-user transport: virtqueues in, [`Device`] calls, completions and
//! events out.
//!
//! Everything that touches a virtqueue lives here; the device model never
//! sees a descriptor. Requests go to the device through the shared
//! [`Udc`]; its outputs come back through [`VringRings`], the [`Rings`]
//! this transport installs, which writes statuses and events into the
//! driver's buffers.
//!
//! [`Device`]: crate::device::Device

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use log::{debug, error, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::{VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_VERSION_1};
use virtio_bindings::bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{ByteValued, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, Iommu, Permissions};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier};

use crate::desc_chain::{split_chain, write_regions, InFlight, QUEUE_SIZE};
use crate::device::{GuestMem, Output};
use crate::iommu::relay::RingAddresses;
use crate::iommu::DeviceIommu;
use crate::request;
use crate::udc::{ChainToken, Rings, Udc, UdcGuard};
use crate::wire::*;

type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Events the device keeps while the driver has no eventq buffer posted
/// (the spec promises at least 64).
const EVENT_BACKLOG: usize = 256;

/// Most descriptors the device walks in one controlq or eventq chain.
/// Their chains are tiny (a command and its response, one event buffer);
/// without a bound, every one of a queue's worth of eventq chains could name
/// a looping indirect table of 65,535 descriptors, and the device would walk
/// all of them under its lock (measured: 1.3 s) before it gave up.
const SMALL_CHAIN_DESCRIPTORS: usize = 64;
/// Descriptors the xferq drain walks per hold of the device lock, about
/// 1.3 ms of walking here; a hold ends after the chain that reaches it.
/// The hold's budget of guest-memory work counts the bytes a walk reads,
/// not the descriptors it walks: 1,024 heads naming one looping table of
/// 65,535 zero-cost descriptors held the lock for 1.3 to 2.1 s.
const DESCRIPTORS_PER_HOLD: usize = 1 << 16;

/// The driver's rings as this transport delivers into them, and the events
/// waiting for an eventq buffer.
#[derive(Default)]
pub struct VringRings {
    vrings: Vec<VringRwLock>,
    events: VecDeque<VirtioUdcEvent>,
    event_idx: bool,
    /// The xferq heads the device holds, so that a head posted again
    /// before it came back is refused instead of queued twice.
    xfer_heads: InFlight,
    /// Completions kept while a queue is stopped (at most one per head in
    /// flight), returned when the queues run again.
    kept_while_stopped: Vec<Output<ChainToken>>,
    /// Ring addresses that are IOVAs (ACCESS_PLATFORM), per queue, as
    /// (descriptor table, available ring, used ring); see
    /// [`crate::iommu::relay`].
    ring_iovas: [Option<(u64, u64, u64)>; NUM_QUEUES],
    /// Queues whose IOVAs are not yet in their queue (and whose used index
    /// is not yet read from the ring): done before the rings are next used,
    /// where the front end can answer the misses that may take.
    ring_iovas_due: [bool; NUM_QUEUES],
}

/// Rounds of translating due rings and taking the kicked queue up again,
/// in one kick (see [`VhostUserUdcBackend::warm_due_rings`]).
const RING_WARM_ROUNDS: usize = 2;

impl Rings for VringRings {
    /// Statuses on the xferq, events on the eventq, in order, then one
    /// notification per queue.
    fn deliver(&mut self, mem: Option<&GuestMem>, outputs: Vec<Output<ChainToken>>) {
        if outputs.is_empty() && self.events.is_empty() && self.kept_while_stopped.is_empty() {
            return;
        }
        let Some(mem) = mem.cloned() else {
            return;
        };
        if self.vrings.len() < NUM_QUEUES {
            // No rings yet (the driver has not started): nothing can be
            // delivered; statuses of requests never seen cannot exist.
            for o in outputs {
                if let Output::Event(e) = o {
                    self.push_event(e);
                }
            }
            return;
        }
        if !self.running() {
            // A stopped ring is not ours to write (GET_VRING_BASE): keep
            // what is done until the frontend starts the rings again.
            for o in outputs {
                match o {
                    Output::Event(e) => self.push_event(e),
                    done => self.kept_while_stopped.push(done),
                }
            }
            return;
        }
        self.apply_ring_iovas(&mem);
        if self.ring_due(XFERQ) || self.ring_due(EVENTQ) {
            // Kept, as for a stopped ring, until the next kick has
            // translated the rings (the driver kicks when it starts them).
            for o in outputs {
                match o {
                    Output::Event(e) => self.push_event(e),
                    done => self.kept_while_stopped.push(done),
                }
            }
            return;
        }
        let mut outputs = outputs;
        if !self.kept_while_stopped.is_empty() {
            outputs.splice(0..0, std::mem::take(&mut self.kept_while_stopped));
        }
        let mut xfer_used = false;
        for o in outputs {
            match o {
                Output::XferDone {
                    token,
                    status,
                    actual,
                } => {
                    let st = VirtioUdcXferStatus {
                        status: (status as u32).into(),
                        actual: actual.into(),
                    };
                    let n = write_regions(&*mem, &token.status_at, st.as_slice());
                    let used = if n == XFER_STATUS_SIZE { n as u32 } else { 0 };
                    if let Err(e) = add_used(&self.vrings[XFERQ as usize], &mem, token.head, used) {
                        error!("xferq: add_used failed: {e}");
                    }
                    self.xfer_heads.release(token.head);
                    xfer_used = true;
                }
                Output::Event(e) => self.push_event(e),
            }
        }
        if xfer_used {
            signal(&self.vrings[XFERQ as usize], &mem, self.event_idx);
        }
        self.flush_events(&mem);
    }

    fn clear(&mut self) {
        self.vrings.clear();
        self.events.clear();
        self.xfer_heads.clear();
        self.kept_while_stopped.clear();
        self.ring_iovas = Default::default();
        self.ring_iovas_due = Default::default();
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl VringRings {
    /// Whether every ring is started (the frontend may stop them with
    /// GET_VRING_BASE and start them again).
    fn running(&self) -> bool {
        self.vrings.len() == NUM_QUEUES && self.vrings.iter().all(|v| v.get_ref().get_queue().ready())
    }

    fn push_event(&mut self, e: VirtioUdcEvent) {
        if self.events.len() == EVENT_BACKLOG {
            let lost = self.events.pop_front();
            error!("eventq: the driver posts no buffers; dropped {lost:?}");
        }
        self.events.push_back(e);
    }

    /// Whether queue `i`'s ring IOVAs are given but not yet in its queue:
    /// the queue must not be used until they are.
    fn ring_due(&self, i: u16) -> bool {
        self.ring_iovas_due[usize::from(i)]
    }

    /// The ranges of queue `i`'s due rings, with the access the device
    /// makes to each.
    fn ring_ranges(&self, i: usize) -> Option<[(u64, usize, Permissions); 3]> {
        let (Some((desc, avail, used)), true) = (self.ring_iovas[i], self.ring_iovas_due[i]) else {
            return None;
        };
        // The split ring's layout (virtio 1.x, 2.7): 16-byte descriptors;
        // flags, index, a 2-byte entry per descriptor and the event word;
        // the used ring likewise with 8-byte entries.
        let size = usize::from(self.vrings.get(i)?.get_ref().get_queue().size());
        Some([
            (desc, 16 * size, Permissions::Read),
            (avail, 6 + 2 * size, Permissions::Read),
            (used, 6 + 8 * size, Permissions::ReadWrite),
        ])
    }

    /// The ranges of every due ring: what
    /// [`VhostUserUdcBackend::warm_due_rings`] translates before any lock
    /// is taken.
    fn due_ring_ranges(&self) -> Vec<(u64, usize, Permissions)> {
        (0..NUM_QUEUES)
            .filter_map(|i| self.ring_ranges(i))
            .flatten()
            .collect()
    }

    /// Puts ring IOVAs the front end gave into their queues, with the used
    /// index the ring holds (the request handler read it at the
    /// placeholder). Nothing to do without an IOMMU.
    ///
    /// Only rings the IOTLB already translates are taken: this runs with
    /// the device lock held (and takes the vring's), and a miss here would
    /// wait for a front end that may itself wait for one of those locks
    /// (QEMU's SET_VRING_ENABLE). The others stay due, their queues unused,
    /// until the next kick translates them without a lock
    /// ([`VhostUserUdcBackend::warm_due_rings`]).
    fn apply_ring_iovas(&mut self, mem: &GuestMem) {
        if self.vrings.len() < NUM_QUEUES || !self.ring_iovas_due.iter().any(|&d| d) {
            return;
        }
        for i in 0..NUM_QUEUES {
            let Some(ranges) = self.ring_ranges(i) else {
                continue;
            };
            if mem.get_iommu_enabled()
                && !ranges
                    .iter()
                    .all(|&(iova, len, access)| mem.iommu().holds(iova, len, access))
            {
                continue;
            }
            let (desc, avail, used) = (ranges[0].0, ranges[1].0, ranges[2].0);
            let vring = &self.vrings[i];
            self.ring_iovas_due[i] = false;
            let mut v = vring.get_mut();
            let q = v.get_queue_mut();
            let set = q
                .try_set_desc_table_address(GuestAddress(desc))
                .and_then(|()| q.try_set_avail_ring_address(GuestAddress(avail)))
                .and_then(|()| q.try_set_used_ring_address(GuestAddress(used)));
            if let Err(e) = set {
                crate::guest_warn!("queue {i}: ring IOVAs refused: {e}");
                continue;
            }
            match q.used_idx(&**mem, std::sync::atomic::Ordering::Acquire) {
                Ok(idx) => q.set_next_used(idx.0),
                Err(e) => crate::guest_warn!("queue {i}: cannot read the used index at iova {used:#x}: {e}"),
            }
        }
    }

    /// Moves backlogged events into eventq buffers the driver posted.
    fn flush_events(&mut self, mem: &GuestMem) {
        if self.events.is_empty() || !self.running() {
            return;
        }
        self.apply_ring_iovas(mem);
        if self.ring_due(EVENTQ) {
            // Delivered once the next kick has translated the ring.
            return;
        }
        let vring = self.vrings[EVENTQ as usize].clone();
        let mut used_any = false;
        while let Some(&ev) = self.events.front() {
            let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(mem.clone());
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let parts = split_chain(&**mem, chain, 0, EVENT_SIZE, SMALL_CHAIN_DESCRIPTORS);
            let used = match parts.error {
                None if parts.writable_len() >= EVENT_SIZE => {
                    write_regions(&**mem, &parts.writable, ev.as_slice()) as u32
                }
                None => {
                    crate::guest_warn!("eventq: buffer shorter than {EVENT_SIZE} bytes; returned unused");
                    0
                }
                Some(r) => {
                    crate::guest_warn!("eventq: {r}");
                    0
                }
            };
            if used as usize == EVENT_SIZE {
                self.events.pop_front();
            }
            if let Err(e) = add_used(&vring, mem, head, used) {
                error!("eventq: add_used failed: {e}");
            }
            used_any = true;
        }
        if used_any {
            signal(&vring, mem, self.event_idx);
        }
    }
}

// The ring operations below go through the device's view of guest memory
// (translated when ACCESS_PLATFORM is negotiated), never through the
// request handler's physical view that VringRwLock's own methods use.

fn add_used(vring: &VringRwLock, mem: &GuestMem, head: u16, len: u32) -> Result<(), virtio_queue::Error> {
    vring.get_mut().get_queue_mut().add_used(&**mem, head, len)
}

fn signal(vring: &VringRwLock, mem: &GuestMem, event_idx: bool) {
    let needed = !event_idx
        || vring
            .get_mut()
            .get_queue_mut()
            .needs_notification(&**mem)
            .unwrap_or(true);
    if needed {
        if let Err(e) = vring.signal_used_queue() {
            warn!("failed to signal the used queue: {e}");
        }
    }
}

/// How a drain of the xferq ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// Nothing more to take now.
    Empty,
    /// A queue's worth, or a hold's worth of descriptors, taken; there may be more.
    More,
    /// The available index is beyond the queue: nothing can be taken.
    Broken,
    /// The memory is gone or the ring is stopped.
    Stopped,
    /// The connection ended or the device was reset: the rings are no
    /// longer the device's to write, not even their notification flags.
    Gone,
}

/// The VhostUserBackend of one connection.
#[derive(Clone)]
pub struct VhostUserUdcBackend {
    udc: Arc<Udc>,
    /// The connection's IOMMU (in the path once ACCESS_PLATFORM is acked).
    iommu: DeviceIommu,
    iova_mode: Arc<AtomicBool>,
    connection: u64,
    cfg_space: VirtioUdcConfig,
    max_readable: usize,
    exit: Arc<(EventConsumer, EventNotifier)>,
    /// How long the worker watches a drained xferq for more before it
    /// sleeps until the driver's next kick ([`Self::poll_xferq`]).
    poll: std::time::Duration,
}

impl VhostUserUdcBackend {
    pub fn new(udc: Arc<Udc>) -> io::Result<Self> {
        Self::with_iommu(udc, DeviceIommu::default())
    }

    /// A backend whose DMA goes through `iommu` once the driver acks
    /// ACCESS_PLATFORM; the relay feeds `iommu` the front end's IOTLB.
    pub fn with_iommu(udc: Arc<Udc>, iommu: DeviceIommu) -> io::Result<Self> {
        let (cfg, connection) = {
            let g = udc.lock();
            (g.config().clone(), g.connection())
        };
        let (consumer, notifier) = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        Ok(VhostUserUdcBackend {
            connection,
            cfg_space: cfg.to_wire(),
            max_readable: request::max_xfer_readable(cfg.segment_limit()),
            // The daemon sets `--poll-us` (with_poll); a backend built
            // otherwise (the fuzz targets) does not poll.
            poll: std::time::Duration::ZERO,
            udc,
            iommu,
            iova_mode: Arc::new(AtomicBool::new(false)),
            exit: Arc::new((consumer, notifier)),
        })
    }

    pub fn udc(&self) -> &Arc<Udc> {
        &self.udc
    }

    /// Wakes the worker thread so it exits.
    pub fn notify_exit(&self) {
        let _ = self.exit.1.notify();
    }

    /// Whether this backend may take chains from the driver's rings: its
    /// connection is the current one, and no device reset came since the
    /// rings were installed. A drain that a RESET_DEVICE overtook went on
    /// taking the old rings' chains for the new device; their completions,
    /// dropped for want of rings, left their heads marked in flight, and
    /// the driver's first requests after the reset came back unserved.
    fn serves_rings(&self, udc: &mut UdcGuard<'_>) -> bool {
        udc.connection() == self.connection && !udc.rings::<VringRings>().vrings.is_empty()
    }

    /// Turns the driver's notifications for `vring` on (returning whether
    /// it posted more meanwhile) or off.
    fn notifications(&self, queue: u16, vring: &VringRwLock, enable: bool) -> io::Result<bool> {
        let mem = {
            let mut udc = self.udc.lock_data();
            // Not at a ring address that is not yet its queue's.
            if udc.rings::<VringRings>().ring_due(queue) {
                return Ok(false);
            }
            let Some(mem) = udc.memory().cloned() else {
                return Ok(false);
            };
            mem
        };
        let mut v = vring.get_mut();
        let q = v.get_queue_mut();
        if enable {
            q.enable_notification(&*mem).map_err(io::Error::other)
        } else {
            q.disable_notification(&*mem).map_err(io::Error::other)?;
            Ok(false)
        }
    }

    /// Translates the rings whose IOVAs the front end just gave, before
    /// anything takes a lock to use them. A miss waits for the front end,
    /// and QEMU answers none while it waits for a reply of its own:
    /// SET_VRING_ENABLE is synchronous and needs the vring's lock, which
    /// the first use of a ring holds (with the device lock). Translated
    /// here, with no lock held, that first use finds the IOTLB filled.
    fn warm_due_rings(&self) {
        // Without ACCESS_PLATFORM no ring is ever due: no lock per kick.
        if !self.iova_mode.load(Ordering::Relaxed) {
            return;
        }
        let (iommu, ranges) = {
            let mut udc = self.udc.lock();
            let Some(mem) = udc.memory().cloned() else {
                return;
            };
            let ranges = udc.rings::<VringRings>().due_ring_ranges();
            if ranges.is_empty() || !mem.get_iommu_enabled() {
                return;
            }
            (mem.iommu().clone(), ranges)
        };
        for (iova, len, access) in ranges {
            if let Err(e) = iommu.translate(GuestAddress(iova), len, access) {
                // The queue stays unused until the driver gives it a ring
                // the IOMMU maps.
                crate::guest_warn!("a ring at iova {iova:#x}+{len:#x} cannot be used: {e}");
            }
        }
    }

    /// Whether a ring the front end gave is still waiting for its
    /// translation.
    fn rings_due(&self) -> bool {
        if !self.iova_mode.load(Ordering::Relaxed) {
            return false;
        }
        let mut udc = self.udc.lock();
        udc.connection() == self.connection && udc.rings::<VringRings>().ring_iovas_due.iter().any(|&d| d)
    }

    /// Watches a drained xferq for `poll` before sleeping (`--poll-us`).
    pub fn with_poll(mut self, poll: std::time::Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Watches the xferq's available index for up to the poll window after
    /// it ran dry, notifications still off; true when the driver posted
    /// more meanwhile. On a host whose idle CPUs halt (a virtual machine
    /// itself), waking this thread for the driver's next request costs
    /// tens of microseconds, more than a request's round trip without it.
    /// The watch yields the CPU at every look: a spinning watch took the
    /// CPU from the threads that make the next request (the guest's, the
    /// host's stream) and lowered the deeper queues' rates on 2 cores.
    fn poll_xferq(&self, vring: &VringRwLock) -> bool {
        if self.poll.is_zero() || self.iova_mode.load(Ordering::Relaxed) {
            // Behind an IOMMU the ring's address is an IOVA: not read
            // without the lock that keeps its translation.
            return false;
        }
        let Some(mem) = self.udc.lock_data().memory().cloned() else {
            return false;
        };
        let until = std::time::Instant::now() + self.poll;
        loop {
            let q = vring.get_ref();
            let q = q.get_queue();
            match q.avail_idx(&*mem, std::sync::atomic::Ordering::Acquire) {
                Ok(avail) if avail.0 != q.next_avail() => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::yield_now();
        }
    }

    fn process_xferq(&self, vring: &VringRwLock) -> io::Result<()> {
        loop {
            self.notifications(XFERQ, vring, false)?;
            let drained = self.drain_xferq(vring);
            if drained == Drained::Gone {
                // The driver that set the flag is gone; its successor's
                // rings start with notifications on.
                return Ok(());
            }
            if drained == Drained::Empty && self.poll_xferq(vring) {
                continue;
            }
            let more = self.notifications(XFERQ, vring, true)?;
            // A broken ring, or one nothing can be taken from now, always
            // looks as if it had more: do not spin on it (this thread
            // serves the other queues, and must see its exit event).
            if !more || matches!(drained, Drained::Broken | Drained::Stopped) {
                return Ok(());
            }
        }
    }

    /// Takes the requests the driver posted, at most one queue's worth (and
    /// about [`DESCRIPTORS_PER_HOLD`] descriptors) per hold of the device
    /// lock: a guest can keep posting while the device drains, and the
    /// control socket, the timers and the other queues must get their turn
    /// in between.
    fn drain_xferq(&self, vring: &VringRwLock) -> Drained {
        loop {
            match self.drain_xferq_batch(vring) {
                Drained::More => continue,
                done => return done,
            }
        }
    }

    /// One hold's worth of [`Self::drain_xferq`].
    fn drain_xferq_batch(&self, vring: &VringRwLock) -> Drained {
        // The data path's own hold: copies outside the lock go on.
        let mut udc = self.udc.lock_data();
        // Nothing can be taken from a ring of an ended connection, of a
        // reset device, without guest memory, or stopped by the frontend; a
        // later kick or connection takes it up.
        if !self.serves_rings(&mut udc) {
            return Drained::Gone;
        }
        if !vring.get_ref().get_queue().ready() {
            return Drained::Stopped;
        }
        let Some(mem) = udc.memory().cloned() else {
            return Drained::Stopped;
        };
        let rings = udc.rings::<VringRings>();
        rings.apply_ring_iovas(&mem);
        if rings.ring_due(XFERQ) {
            // Taken at the kick that translates the ring.
            return Drained::Stopped;
        }
        let cfg = udc.config().clone();
        let limit = cfg.segment_limit();
        let size = vring.get_ref().get_queue().size();
        if vring.get_ref().get_queue().is_valid(&*mem) {
            // An avail index more than a queue's worth ahead of the device
            // names entries that do not exist: take nothing until the
            // driver resets the device.
            if let Err(e) = vring.get_mut().get_queue_mut().iter(mem.clone()) {
                crate::guest_warn!("xferq: {e}: the driver's ring is broken; nothing is taken until a reset");
                return Drained::Broken;
            }
        }
        let mut walked = 0;
        for _ in 0..size {
            if udc.budget_spent() || walked >= DESCRIPTORS_PER_HOLD {
                // The rest in the next hold: the requests read and the data
                // they moved were this hold's budget of guest-memory work,
                // or the descriptors walked its budget of walking (a walk
                // through zero-length or writable descriptors reads no
                // bytes, so spends nothing of the first).
                return Drained::More;
            }
            let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(mem.clone());
            let Some(chain) = chain else { return Drained::Empty };
            let head = chain.head_index();
            if let Err(why) = udc.rings::<VringRings>().xfer_heads.claim(head, size) {
                // Returned with used length 0 (no status written: the chain
                // in flight under this head owns the status buffer), so the
                // device keeps nothing for it.
                crate::guest_warn!("xferq: descriptor head {head} {why}: returned with used length 0");
                if head < size {
                    if let Err(e) = add_used(vring, &mem, head, 0) {
                        error!("xferq: add_used failed: {e}");
                    }
                    signal(vring, &mem, udc.rings::<VringRings>().event_idx);
                }
                continue;
            }
            let parts = split_chain(&*mem, chain, self.max_readable, XFER_STATUS_SIZE, usize::MAX);
            walked += parts.walked;
            udc.spend(parts.readable.len() as u64);
            let token = ChainToken {
                head,
                status_at: parts.writable.clone(),
            };
            if parts.writable_len() < XFER_STATUS_SIZE {
                crate::guest_warn!("xferq: request without room for its status: returned with used length 0");
                udc.reject(token, Status::Invalid);
                continue;
            }
            if let Some(r) = parts.error {
                crate::guest_warn!("xferq: request refused: {r}");
                udc.reject(token, r.status);
                continue;
            }
            // Behind an IOMMU, segments are IOVAs: checked at each access.
            let physical = (!mem.get_iommu_enabled()).then_some(&*mem);
            match request::parse_xfer(&parts.readable, limit, |ep| cfg.has_endpoint(ep), physical) {
                Ok(req) => {
                    debug!(
                        "xferq: {} tag {:#x} length {} in {} segments",
                        ep_name(req.ep),
                        req.tag,
                        req.length,
                        req.segments.len()
                    );
                    udc.queue_xfer(token, req)
                }
                Err(r) => {
                    crate::guest_warn!("xferq: request refused: {r}");
                    udc.reject(token, r.status);
                }
            }
        }
        Drained::More
    }

    /// Runs the driver's commands. Before each, the xferq is drained: the
    /// command must see every transfer request made available before it
    /// (docs/virtio-udc.md section 6), and the xferq's own notification
    /// may not have been served yet.
    fn process_controlq(&self, vring: &VringRwLock, xferq: &VringRwLock) -> io::Result<()> {
        loop {
            self.notifications(CONTROLQ, vring, false)?;
            loop {
                self.drain_xferq(xferq);
                let mut udc = self.udc.lock();
                if !self.serves_rings(&mut udc) {
                    return Ok(());
                }
                // A stopped ring is taken up when the frontend starts it
                // again; looping back to enable_notification would see its
                // avail index ahead for ever and spin this thread.
                if !vring.get_ref().get_queue().ready() {
                    return Ok(());
                }
                let Some(mem) = udc.memory().cloned() else {
                    return Ok(());
                };
                let rings = udc.rings::<VringRings>();
                rings.apply_ring_iovas(&mem);
                if rings.ring_due(CONTROLQ) {
                    // Taken at the kick that translates the ring.
                    return Ok(());
                }
                let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(mem.clone());
                let Some(chain) = chain else {
                    // An available index beyond the queue gives nothing
                    // yet looks as if it had more for ever: waiting for more
                    // would spin this thread, which serves the other queues
                    // too. Take it up at a later kick (after a reset).
                    if vring.get_mut().get_queue_mut().iter(mem.clone()).is_err() {
                        crate::guest_warn!(
                            "controlq: the driver's available index is beyond the queue: nothing taken"
                        );
                        return Ok(());
                    }
                    break;
                };
                let head = chain.head_index();
                let parts = split_chain(
                    &*mem,
                    chain,
                    CTRL_REQ_SIZE,
                    CTRL_RESP_SIZE,
                    SMALL_CHAIN_DESCRIPTORS,
                );
                let (status, value, writable) = match parts.error {
                    Some(r) => {
                        crate::guest_warn!("controlq: {r}");
                        (r.status, 0, parts.writable)
                    }
                    None => {
                        let (s, v) = match request::parse_command(&parts.readable) {
                            Ok(cmd) => {
                                debug!("controlq: {cmd:?}");
                                udc.command(cmd)
                            }
                            Err(r) => {
                                crate::guest_warn!("controlq: command refused: {r}");
                                (r.status, 0)
                            }
                        };
                        (s, v, parts.writable)
                    }
                };
                if status != Status::Ok {
                    debug!("controlq: response {status}");
                }
                // Completions the command caused go to the xferq first.
                udc.deliver();
                let resp = VirtioUdcCtrlResp {
                    status: (status as u32).into(),
                    value: value.into(),
                };
                let n = write_regions(&*mem, &writable, resp.as_slice());
                let used = if n == CTRL_RESP_SIZE { n as u32 } else { 0 };
                if let Err(e) = add_used(vring, &mem, head, used) {
                    error!("controlq: add_used failed: {e}");
                }
                signal(vring, &mem, udc.rings::<VringRings>().event_idx);
            }
            if !self.notifications(CONTROLQ, vring, true)? {
                return Ok(());
            }
        }
    }
}

impl VhostUserBackend for VhostUserUdcBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_F_ACCESS_PLATFORM)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    /// With ACCESS_PLATFORM the driver's addresses are IOVAs: every access
    /// of the device goes through the IOMMU from now on.
    fn acked_features(&self, features: u64) {
        let iova = features & (1 << VIRTIO_F_ACCESS_PLATFORM) != 0;
        self.iova_mode.store(iova, Ordering::Relaxed);
        let mut udc = self.udc.lock();
        if udc.connection() != self.connection {
            return;
        }
        if let Some(m) = udc.memory().filter(|m| m.get_iommu_enabled() != iova) {
            let mut m = (**m).clone();
            m.set_iommu_enabled(iova);
            udc.set_memory(Arc::new(m));
        }
        debug!(
            "addresses are {}",
            if iova { "IOVAs (IOMMU)" } else { "guest-physical" }
        );
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::RESET_DEVICE
    }

    fn reset_device(&self) {
        let mut udc = self.udc.lock();
        if udc.connection() != self.connection {
            return;
        }
        udc.reset();
        let rings = udc.rings::<VringRings>();
        // vhost-user-backend leaves the queues started through
        // RESET_DEVICE. Stop them, so that nothing takes a chain from a
        // ring, or writes one, before the frontend sets it up again
        // (SET_VRING_KICK starts it): a controlq kick during the set-up
        // drained the xferq at its old ring's address and index, in memory
        // the driver was already reusing for its new rings.
        for v in &rings.vrings {
            v.set_queue_ready(false);
        }
        rings.clear();
    }

    /// GET_VRING_BASE stopped queue `index`: from now on nothing of the
    /// device touches guest memory, until the frontend starts the rings
    /// again (the next kick finds them all ready).
    fn stop_vring(&self, index: u32) -> io::Result<()> {
        let mut udc = self.udc.lock();
        if udc.connection() == self.connection {
            debug!("queue {index} stopped");
            udc.set_dma_stopped(true);
        }
        Ok(())
    }

    fn set_event_idx(&self, enabled: bool) {
        self.udc.lock().rings::<VringRings>().event_idx = enabled;
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let bytes = self.cfg_space.as_slice();
        let start = (offset as usize).min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        let mut v = bytes[start..end].to_vec();
        // A frontend reading past the end gets zeros, like reserved space.
        v.resize(size as usize, 0);
        v
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        let mut udc = self.udc.lock();
        if udc.connection() == self.connection {
            let physical = (*mem.memory()).clone();
            let iova = self.iova_mode.load(Ordering::Relaxed);
            udc.set_memory(Arc::new(self.iommu.memory(physical, iova)));
        }
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        Some((self.exit.0.try_clone().ok()?, self.exit.1.try_clone().ok()?))
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!("unexpected event set {evset:?}")));
        }
        log::trace!("kick on queue {device_event}");
        {
            let mut udc = self.udc.lock_data();
            if udc.connection() != self.connection {
                debug!("event {device_event} from an ended connection: ignored");
                return Ok(());
            }
            let rings = udc.rings::<VringRings>();
            if rings.vrings.is_empty() {
                rings.vrings = vrings.to_vec();
            }
            let running = rings.running();
            if udc.dma_stopped() && running {
                // The frontend started the rings again: what was held is
                // returned when this guard drops, and data moves again.
                udc.set_dma_stopped(false);
            }
        }
        // A ring the front end just gave is used only once the IOTLB
        // translates it (apply_ring_iovas): translate it here, with no lock
        // held, and take the queue up; again if a ring was given meanwhile.
        for round in 0..=RING_WARM_ROUNDS {
            self.warm_due_rings();
            let r = match device_event {
                CONTROLQ => self.process_controlq(&vrings[CONTROLQ as usize], &vrings[XFERQ as usize]),
                EVENTQ => {
                    // New buffers: deliver backlogged events.
                    let mut udc = self.udc.lock();
                    if let Some(mem) = udc.memory().cloned() {
                        udc.rings::<VringRings>().flush_events(&mem);
                    }
                    Ok(())
                }
                XFERQ => self.process_xferq(&vrings[XFERQ as usize]),
                other => {
                    warn!("event for unknown queue {other}");
                    Ok(())
                }
            };
            if r.is_err() || round == RING_WARM_ROUNDS || !self.rings_due() {
                return r;
            }
        }
        Ok(())
    }
}

impl RingAddresses for VhostUserUdcBackend {
    fn set_ring_iovas(&self, index: u32, desc: u64, avail: u64, used: u64) {
        // (Translated at the next kick, by warm_due_rings: this runs on the
        // relay, which must stay free to take the front end's answers.)
        let mut udc = self.udc.lock();
        if udc.connection() != self.connection {
            return;
        }
        let rings = udc.rings::<VringRings>();
        if let Some(slot) = rings.ring_iovas.get_mut(index as usize) {
            *slot = Some((desc, avail, used));
            rings.ring_iovas_due[index as usize] = true;
        }
    }
}
