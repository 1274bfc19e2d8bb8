// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The driver side of a split virtqueue, in guest memory.
//!
//! Layout (virtio 1.x, 2.7): a descriptor table of `size` 16-byte entries, an
//! available ring (`flags`, `idx`, `ring[size]`, `used_event`) and a used ring
//! (`flags`, `idx`, `ring[size]` of `{id, len}`, `avail_event`), each in its
//! own page-aligned allocation.

use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost::VringConfigData;
use virtio_bindings::bindings::virtio_ring;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{Error, Result};
use crate::memory::{Allocator, PAGE_SIZE};

// The ring flags as the split-ring layout's u16 fields hold them; the
// values come from virtio-bindings (the kernel's virtio_ring.h), cast here
// once.
const VRING_DESC_F_NEXT: u16 = virtio_ring::VRING_DESC_F_NEXT as u16;
const VRING_DESC_F_WRITE: u16 = virtio_ring::VRING_DESC_F_WRITE as u16;
const VRING_DESC_F_INDIRECT: u16 = virtio_ring::VRING_DESC_F_INDIRECT as u16;
const VRING_USED_F_NO_NOTIFY: u16 = virtio_ring::VRING_USED_F_NO_NOTIFY as u16;

/// Largest split queue size.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// How long one poll(2) on a call eventfd lasts before the used ring is
/// looked at again, unless the queue is strict about interrupts.
const POLL_SLICE: Duration = Duration::from_millis(20);

/// One buffer of a chain: `(gpa, len, device_writable)`.
pub type ChainPart = (u64, u32, bool);

/// Where a raw descriptor's `next` points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawNext {
    /// The chain ends here: VRING_DESC_F_NEXT clear.
    End,
    /// The `k`th descriptor of the same raw chain (or indirect table), so a
    /// test can close a loop without knowing which table entries the queue
    /// hands out.
    Desc(usize),
    /// VRING_DESC_F_NEXT set and `next` exactly this table index, whatever
    /// it names (e.g. past the table's end).
    Index(u16),
}

/// One descriptor exactly as a hostile driver writes it: any address,
/// length, flags and link. VRING_DESC_F_NEXT comes from `next`; `flags`
/// carries the others (VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT, or bits
/// no spec defines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRingDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: RawNext,
}

impl RawRingDesc {
    /// VRING_DESC_F_WRITE: device-writable.
    pub const WRITE: u16 = VRING_DESC_F_WRITE;
    /// VRING_DESC_F_INDIRECT: `addr`/`len` name an indirect table.
    pub const INDIRECT: u16 = VRING_DESC_F_INDIRECT;

    /// A device-readable buffer.
    pub fn readable(addr: u64, len: u32, next: RawNext) -> Self {
        RawRingDesc {
            addr,
            len,
            flags: 0,
            next,
        }
    }

    /// A device-writable buffer.
    pub fn writable(addr: u64, len: u32, next: RawNext) -> Self {
        RawRingDesc {
            addr,
            len,
            flags: Self::WRITE,
            next,
        }
    }

    /// A descriptor naming an indirect table of `len` bytes at `table`
    /// (`len` need not be a multiple of 16).
    pub fn indirect(table: u64, len: u32, next: RawNext) -> Self {
        RawRingDesc {
            addr: table,
            len,
            flags: Self::INDIRECT,
            next,
        }
    }

    /// The 16 bytes of the descriptor, `RawNext::Desc(k)` resolved through
    /// `index_of`.
    fn encode(&self, index_of: impl Fn(usize) -> Result<u16>) -> Result<[u8; 16]> {
        let (flags, next) = match self.next {
            RawNext::End => (self.flags & !VRING_DESC_F_NEXT, 0),
            RawNext::Desc(k) => (self.flags | VRING_DESC_F_NEXT, index_of(k)?),
            RawNext::Index(i) => (self.flags | VRING_DESC_F_NEXT, i),
        };
        Ok(encode_desc(self.addr, self.len, flags, next))
    }
}

/// Writes `descs` as an indirect descriptor table at `table` (16 bytes
/// each; `RawNext::Desc(k)` is table entry `k`), for a test to name with
/// [`RawRingDesc::indirect`]. The caller owns the memory.
pub fn write_raw_indirect_table(mem: &GuestMemoryMmap, table: u64, descs: &[RawRingDesc]) -> Result<()> {
    let mut tbl = Vec::with_capacity(16 * descs.len());
    for d in descs {
        let enc = d.encode(|k| {
            u16::try_from(k)
                .ok()
                .filter(|&k| usize::from(k) < descs.len())
                .ok_or_else(|| Error::InvalidArgument(format!("RawNext::Desc({k}) is outside the table")))
        })?;
        tbl.extend_from_slice(&enc);
    }
    mem.write_slice(&tbl, GuestAddress(table))
        .map_err(|source| Error::Memory {
            gpa: table,
            len: tbl.len(),
            source,
        })
}

#[derive(Clone, Debug)]
struct InFlight {
    descs: Vec<u16>,
    writable: u64,
}

/// Driver side of one split virtqueue: rings in guest memory, a free list of
/// descriptors, the kick and call eventfds.
///
/// Not thread-safe on purpose: one test thread plays the driver.
pub struct DriverQueue {
    index: u16,
    mem: Arc<GuestMemoryMmap>,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    free: Vec<u16>,
    next_avail: Wrapping<u16>,
    last_kick_avail: Wrapping<u16>,
    last_used: Wrapping<u16>,
    in_flight: Vec<Option<InFlight>>,
    kick: EventFd,
    call: EventFd,
    event_idx: bool,
    always_kick: bool,
    strict_interrupts: bool,
    kicks: u64,
    suppressed_kicks: u64,
    calls_seen: u64,
}

impl std::fmt::Debug for DriverQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverQueue")
            .field("index", &self.index)
            .field("size", &self.size)
            .field("desc", &format_args!("{:#x}", self.desc))
            .field("avail", &format_args!("{:#x}", self.avail))
            .field("used", &format_args!("{:#x}", self.used))
            .field("free", &self.free.len())
            .field("next_avail", &self.next_avail.0)
            .field("last_used", &self.last_used.0)
            .field("event_idx", &self.event_idx)
            .field("kick_fd", &self.kick.as_raw_fd())
            .field("call_fd", &self.call.as_raw_fd())
            .field("kicks", &self.kicks)
            .field("suppressed_kicks", &self.suppressed_kicks)
            .field("calls_seen", &self.calls_seen)
            .finish()
    }
}

impl DriverQueue {
    /// Allocates and zeroes the rings of a queue of `size` entries (a power
    /// of two) and creates its eventfds.
    pub fn new(index: u16, mem: Arc<GuestMemoryMmap>, alloc: &mut Allocator, size: u16) -> Result<Self> {
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(Error::InvalidArgument(format!(
                "queue size {size} is not a power of two in 1..=32768"
            )));
        }
        let n = u64::from(size);
        let desc = alloc.alloc(16 * n, PAGE_SIZE)?;
        let avail = alloc.alloc(6 + 2 * n, PAGE_SIZE)?;
        let used = alloc.alloc(6 + 8 * n, PAGE_SIZE)?;
        for (gpa, len) in [(desc, 16 * n), (avail, 6 + 2 * n), (used, 6 + 8 * n)] {
            let zero = vec![0u8; len as usize];
            mem.write_slice(&zero, GuestAddress(gpa))
                .map_err(|source| Error::Memory {
                    gpa,
                    len: zero.len(),
                    source,
                })?;
        }
        let kick = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::io("eventfd (kick)", e))?;
        let call = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::io("eventfd (call)", e))?;
        Ok(DriverQueue {
            index,
            mem,
            size,
            desc,
            avail,
            used,
            // Popped from the end: hand out 0, 1, 2, ... first.
            free: (0..size).rev().collect(),
            next_avail: Wrapping(0),
            last_kick_avail: Wrapping(0),
            last_used: Wrapping(0),
            in_flight: vec![None; size as usize],
            kick,
            call,
            event_idx: false,
            always_kick: false,
            strict_interrupts: false,
            kicks: 0,
            suppressed_kicks: 0,
            calls_seen: 0,
        })
    }

    /// Queue index (0 controlq, 1 eventq, 2 xferq).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Guest-physical addresses of the descriptor table, available ring and
    /// used ring.
    pub fn ring_addrs(&self) -> (u64, u64, u64) {
        (self.desc, self.avail, self.used)
    }

    /// What SET_VRING_ADDR needs. vhost-user ring addresses are in the
    /// frontend's own address space (the `userspace_addr` side of the memory
    /// table), so `translate` maps a GPA to this process's address for it.
    pub fn config_data(&self, translate: impl Fn(u64) -> u64) -> VringConfigData {
        VringConfigData {
            queue_max_size: self.size,
            queue_size: self.size,
            flags: 0,
            desc_table_addr: translate(self.desc),
            used_ring_addr: translate(self.used),
            avail_ring_addr: translate(self.avail),
            log_addr: None,
        }
    }

    /// The eventfd the driver writes to notify the device.
    pub fn kick_fd(&self) -> &EventFd {
        &self.kick
    }

    /// The eventfd the device writes to interrupt the driver.
    pub fn call_fd(&self) -> &EventFd {
        &self.call
    }

    /// Use VIRTIO_RING_F_EVENT_IDX notification suppression (only when the
    /// feature was negotiated).
    pub fn set_event_idx(&mut self, on: bool) {
        self.event_idx = on;
    }

    /// Kick on every [`DriverQueue::kick`] regardless of what the device
    /// asked for.
    pub fn set_always_kick(&mut self, on: bool) {
        self.always_kick = on;
    }

    /// Wait only on the call eventfd (no periodic look at the used ring), so
    /// a device that forgets to interrupt makes waits time out.
    pub fn set_strict_interrupts(&mut self, on: bool) {
        self.strict_interrupts = on;
    }

    /// Free descriptors.
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Chains made available and not yet seen on the used ring.
    pub fn num_in_flight(&self) -> usize {
        self.in_flight.iter().filter(|c| c.is_some()).count()
    }

    /// True if `head` is a chain in flight.
    pub fn is_in_flight(&self, head: u16) -> bool {
        self.in_flight.get(head as usize).is_some_and(|c| c.is_some())
    }

    /// Kicks written to the kick eventfd.
    pub fn kicks(&self) -> u64 {
        self.kicks
    }

    /// Kicks skipped because the device asked for no notification.
    pub fn suppressed_kicks(&self) -> u64 {
        self.suppressed_kicks
    }

    /// Call eventfd signals consumed so far.
    pub fn calls_seen(&self) -> u64 {
        self.calls_seen
    }

    /// The available ring's index as the driver last published it.
    pub fn avail_idx(&self) -> u16 {
        self.next_avail.0
    }

    fn store_u16(&self, gpa: u64, v: u16) -> Result<()> {
        self.mem
            .store(v, GuestAddress(gpa), Ordering::Release)
            .map_err(|source| Error::Memory { gpa, len: 2, source })
    }

    fn load_u16(&self, gpa: u64) -> Result<u16> {
        self.mem
            .load(GuestAddress(gpa), Ordering::Acquire)
            .map_err(|source| Error::Memory { gpa, len: 2, source })
    }

    fn write_bytes(&self, gpa: u64, b: &[u8]) -> Result<()> {
        self.mem
            .write_slice(b, GuestAddress(gpa))
            .map_err(|source| Error::Memory {
                gpa,
                len: b.len(),
                source,
            })
    }

    fn read_u32(&self, gpa: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.mem
            .read_slice(&mut b, GuestAddress(gpa))
            .map_err(|source| Error::Memory { gpa, len: 4, source })?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a chain into free descriptors and publishes its head on the
    /// available ring (descriptors and ring entry first, then a release
    /// fence, then the index). Does not kick.
    pub fn add_chain(&mut self, parts: &[ChainPart]) -> Result<u16> {
        if parts.is_empty() {
            return Err(Error::InvalidArgument("empty descriptor chain".into()));
        }
        let descs = self.take_descs(parts.len())?;
        let mut writable = 0u64;
        for (i, &(gpa, len, w)) in parts.iter().enumerate() {
            let mut flags = if w { VRING_DESC_F_WRITE } else { 0 };
            let next = if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT;
                descs[i + 1]
            } else {
                0
            };
            if w {
                writable += u64::from(len);
            }
            let d = encode_desc(gpa, len, flags, next);
            if let Err(e) = self.write_bytes(self.desc + 16 * u64::from(descs[i]), &d) {
                self.free.extend(descs.iter().rev());
                return Err(e);
            }
        }
        let head = descs[0];
        self.publish(head, InFlight { descs, writable })
    }

    /// Writes `parts` as an indirect descriptor table at `table` (16 bytes
    /// per part, 16-byte aligned, owned by the caller until the chain is
    /// used) and publishes one VRING_DESC_F_INDIRECT descriptor pointing at
    /// it. Only valid when VIRTIO_RING_F_INDIRECT_DESC was negotiated (or to
    /// test a device that did not negotiate it).
    pub fn add_chain_indirect(&mut self, table: u64, parts: &[ChainPart]) -> Result<u16> {
        if parts.is_empty() {
            return Err(Error::InvalidArgument("empty indirect table".into()));
        }
        let n = u32::try_from(parts.len())
            .ok()
            .filter(|&n| n <= u32::MAX / 16)
            .ok_or_else(|| Error::InvalidArgument("indirect table too long".into()))?;
        let mut writable = 0u64;
        let mut tbl = Vec::with_capacity(16 * parts.len());
        for (i, &(gpa, len, w)) in parts.iter().enumerate() {
            let mut flags = if w { VRING_DESC_F_WRITE } else { 0 };
            let next = if i + 1 < parts.len() {
                flags |= VRING_DESC_F_NEXT;
                (i + 1) as u16
            } else {
                0
            };
            if w {
                writable += u64::from(len);
            }
            tbl.extend_from_slice(&encode_desc(gpa, len, flags, next));
        }
        self.write_bytes(table, &tbl)?;
        let descs = self.take_descs(1)?;
        let d = encode_desc(table, 16 * n, VRING_DESC_F_INDIRECT, 0);
        if let Err(e) = self.write_bytes(self.desc + 16 * u64::from(descs[0]), &d) {
            self.free.extend(descs);
            return Err(e);
        }
        let head = descs[0];
        self.publish(head, InFlight { descs, writable })
    }

    /// A hostile driver's move: writes `descs` into free descriptors
    /// exactly as given (loops, links past the table, indirect tables with
    /// any length or inside other tables) and publishes the first as a
    /// head. The chain's descriptors are tracked as one chain in flight, so
    /// [`Self::poll_used`] frees them when the device returns the head.
    /// `writable` is the largest used length the device may report (the
    /// writable bytes the chain names, in the ring and in its tables). Does
    /// not kick.
    pub fn add_raw_chain(&mut self, descs: &[RawRingDesc], writable: u64) -> Result<u16> {
        if descs.is_empty() {
            return Err(Error::InvalidArgument("empty descriptor chain".into()));
        }
        let taken = self.take_descs(descs.len())?;
        for (d, &at) in descs.iter().zip(&taken) {
            let written = d
                .encode(|k| {
                    taken.get(k).copied().ok_or_else(|| {
                        Error::InvalidArgument(format!("RawNext::Desc({k}) is outside the chain"))
                    })
                })
                .and_then(|enc| self.write_bytes(self.desc + 16 * u64::from(at), &enc));
            if let Err(e) = written {
                self.free.extend(taken.iter().rev());
                return Err(e);
            }
        }
        let head = taken[0];
        self.publish(
            head,
            InFlight {
                descs: taken,
                writable,
            },
        )
    }

    /// Guest memory moved (a new memory table): the rings are read and
    /// written through `mem` from now on. The caller has copied them.
    pub(crate) fn set_memory(&mut self, mem: Arc<GuestMemoryMmap>) {
        self.mem = mem;
    }

    fn take_descs(&mut self, n: usize) -> Result<Vec<u16>> {
        if n > self.free.len() {
            return Err(Error::QueueFull {
                queue: self.index,
                needed: n,
                free: self.free.len(),
            });
        }
        Ok((0..n).map(|_| self.free.pop().expect("checked above")).collect())
    }

    fn publish(&mut self, head: u16, chain: InFlight) -> Result<u16> {
        self.in_flight[head as usize] = Some(chain);
        let slot = u64::from(self.next_avail.0 % self.size);
        self.write_bytes(self.avail + 4 + 2 * slot, &head.to_le_bytes())?;
        self.next_avail += Wrapping(1);
        fence(Ordering::Release);
        self.store_u16(self.avail + 2, self.next_avail.0)?;
        Ok(head)
    }

    /// A hostile driver's move: publishes `head` on the available ring
    /// again, whatever its state (in flight, free, or past the queue's
    /// end), to test a device's defences. Nothing is allocated or tracked;
    /// read what comes back with [`Self::take_used_raw`]. Does not kick.
    pub fn republish(&mut self, head: u16) -> Result<()> {
        let slot = u64::from(self.next_avail.0 % self.size);
        self.write_bytes(self.avail + 4 + 2 * slot, &head.to_le_bytes())?;
        self.next_avail += Wrapping(1);
        fence(Ordering::Release);
        self.store_u16(self.avail + 2, self.next_avail.0)
    }

    /// A hostile driver's move: writes `idx` as the available index,
    /// whatever it names. Does not kick.
    pub fn set_avail_idx_raw(&mut self, idx: u16) -> Result<()> {
        fence(Ordering::Release);
        self.store_u16(self.avail + 2, idx)
    }

    /// The used entries since the last look, as `(id, used_len)`, taken
    /// without any check and without freeing anything: for a test that
    /// made the device return what [`Self::republish`] posted. Chains in
    /// flight whose entries this takes stay in flight as far as
    /// [`Self::poll_used`] knows.
    pub fn take_used_raw(&mut self) -> Result<Vec<(u32, u32)>> {
        let used_idx = Wrapping(self.load_u16(self.used + 2)?);
        let mut out = Vec::new();
        while self.last_used != used_idx {
            let slot = u64::from(self.last_used.0 % self.size);
            let elem = self.used + 4 + 8 * slot;
            out.push((self.read_u32(elem)?, self.read_u32(elem + 4)?));
            self.last_used += Wrapping(1);
        }
        Ok(out)
    }

    /// Notifies the device unless it asked not to be (VRING_USED_F_NO_NOTIFY,
    /// or avail_event with EVENT_IDX). Returns whether it kicked.
    pub fn kick(&mut self) -> Result<bool> {
        // Order the avail idx store before reading the device's suppression
        // state (the device does the mirror image).
        fence(Ordering::SeqCst);
        let new = self.next_avail;
        let old = self.last_kick_avail;
        let needed = if self.always_kick {
            true
        } else if self.event_idx {
            let avail_event = Wrapping(self.load_u16(self.used + 4 + 8 * u64::from(self.size))?);
            // vring_need_event()
            (new - avail_event - Wrapping(1)) < (new - old)
        } else {
            self.load_u16(self.used)? & VRING_USED_F_NO_NOTIFY == 0
        };
        self.last_kick_avail = new;
        if needed {
            self.force_kick()?;
        } else {
            self.suppressed_kicks += 1;
        }
        Ok(needed)
    }

    /// Writes the kick eventfd unconditionally.
    pub fn force_kick(&mut self) -> Result<()> {
        self.kicks += 1;
        self.kick.write(1).map_err(|e| Error::io("kick eventfd", e))
    }

    /// Consumes new used-ring entries and returns them as `(head, used_len)`
    /// in ring order, freeing their descriptors.
    ///
    /// A used id that is not a chain in flight, or a used length beyond the
    /// chain's writable bytes, is an error (the device broke the ring).
    pub fn poll_used(&mut self) -> Result<Vec<(u16, u32)>> {
        let mut out = Vec::new();
        loop {
            let used_idx = Wrapping(self.load_u16(self.used + 2)?);
            // The index load is Acquire: entries below it are visible.
            while self.last_used != used_idx {
                let slot = u64::from(self.last_used.0 % self.size);
                let elem = self.used + 4 + 8 * slot;
                let id = self.read_u32(elem)?;
                let len = self.read_u32(elem + 4)?;
                self.last_used += Wrapping(1);
                let chain = if id < u32::from(self.size) {
                    self.in_flight[id as usize].take()
                } else {
                    None
                };
                let chain = chain.ok_or(Error::UnknownUsedId {
                    queue: self.index,
                    id,
                })?;
                self.free.extend(chain.descs.iter().rev());
                if u64::from(len) > chain.writable {
                    return Err(Error::UsedLenTooLarge {
                        queue: self.index,
                        head: id as u16,
                        used_len: len,
                        capacity: chain.writable,
                    });
                }
                out.push((id as u16, len));
            }
            if !self.event_idx {
                break;
            }
            // Ask for an interrupt at the next entry, then look again in case
            // the device added one before it could see the new used_event.
            self.store_u16(self.avail + 4 + 2 * u64::from(self.size), self.last_used.0)?;
            fence(Ordering::SeqCst);
            if self.load_u16(self.used + 2)? == self.last_used.0 {
                break;
            }
        }
        Ok(out)
    }

    /// Waits up to `timeout` for the call eventfd and drains it. Returns
    /// whether it was signalled.
    pub fn wait_call(&mut self, timeout: Duration) -> Result<bool> {
        let signalled = poll_readable(self.call.as_raw_fd(), timeout)?;
        if signalled {
            match self.call.read() {
                Ok(n) => self.calls_seen += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::io("call eventfd read", e)),
            }
        }
        Ok(signalled)
    }

    /// Returns used entries as soon as there are any, or an empty vector
    /// after `timeout`.
    pub fn wait_used(&mut self, timeout: Duration) -> Result<Vec<(u16, u32)>> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.poll_used()?;
            if !v.is_empty() {
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(v);
            }
            let left = deadline - now;
            let slice = if self.strict_interrupts {
                left
            } else {
                left.min(POLL_SLICE)
            };
            self.wait_call(slice)?;
        }
    }
}

fn encode_desc(gpa: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&gpa.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    d
}

/// poll(2) for POLLIN on `fd` for up to `timeout` (rounded up to 1 ms).
pub(crate) fn poll_readable(fd: i32, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("poll", e));
        }
        return Ok(r > 0 && pfd.revents & libc::POLLIN != 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GuestMemory, MemoryLayout, HIGH_REGION_GPA};
    use virtio_queue::{Queue, QueueT};

    fn setup(size: u16, layout: MemoryLayout) -> (GuestMemory, Allocator, DriverQueue, Queue) {
        let mem = GuestMemory::new(&layout).unwrap();
        let mut alloc = Allocator::for_memory(&mem);
        let dq = DriverQueue::new(2, mem.mmap().clone(), &mut alloc, size).unwrap();
        let mut q = Queue::new(size).unwrap();
        let (d, a, u) = dq.ring_addrs();
        q.set_size(size);
        q.set_desc_table_address(Some(d as u32), Some((d >> 32) as u32));
        q.set_avail_ring_address(Some(a as u32), Some((a >> 32) as u32));
        q.set_used_ring_address(Some(u as u32), Some((u >> 32) as u32));
        q.set_ready(true);
        assert!(q.is_valid(mem.mmap().as_ref()));
        (mem, alloc, dq, q)
    }

    #[test]
    fn device_queue_sees_the_chains_the_driver_adds() {
        let (mem, mut alloc, mut dq, mut q) = setup(16, MemoryLayout::single(1 << 20));
        let m = mem.mmap().as_ref();
        let hdr = alloc.alloc(24, 8).unwrap();
        let st = alloc.alloc(8, 8).unwrap();
        mem.write(hdr, &[7u8; 24]).unwrap();
        let h1 = dq
            .add_chain(&[(hdr, 16, false), (hdr + 16, 8, false), (st, 8, true)])
            .unwrap();
        let h2 = dq.add_chain(&[(st, 8, true)]).unwrap();
        assert_eq!(dq.num_free(), 12);
        assert_eq!(dq.num_in_flight(), 2);

        let c = q.pop_descriptor_chain(m).expect("first chain");
        assert_eq!(c.head_index(), h1);
        let d: Vec<_> = c.collect();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].addr().0, hdr);
        assert_eq!(d[0].len(), 16);
        assert!(!d[0].is_write_only());
        assert_eq!(d[1].addr().0, hdr + 16);
        assert!(d[2].is_write_only());
        assert_eq!(d[2].len(), 8);

        let c = q.pop_descriptor_chain(m).expect("second chain");
        assert_eq!(c.head_index(), h2);
        assert!(q.pop_descriptor_chain(m).is_none());

        // Nothing used yet.
        assert!(dq.poll_used().unwrap().is_empty());
        // Complete out of order.
        q.add_used(m, h2, 4).unwrap();
        q.add_used(m, h1, 8).unwrap();
        assert_eq!(dq.poll_used().unwrap(), vec![(h2, 4), (h1, 8)]);
        assert_eq!(dq.num_free(), 16);
        assert_eq!(dq.num_in_flight(), 0);
        assert!(dq.poll_used().unwrap().is_empty());
    }

    #[test]
    fn indirect_chains_read_back_through_the_device_queue() {
        let (mem, mut alloc, mut dq, mut q) = setup(8, MemoryLayout::single(1 << 20));
        let m = mem.mmap().as_ref();
        let table = alloc.alloc(16 * 40, 16).unwrap();
        let parts: Vec<ChainPart> = (0..40u64).map(|i| (0x8000 + 64 * i, 64, i >= 30)).collect();
        let h = dq.add_chain_indirect(table, &parts).unwrap();
        assert_eq!(dq.num_free(), 7, "one ring descriptor for 40 buffers");
        let c = q.pop_descriptor_chain(m).unwrap();
        assert_eq!(c.head_index(), h);
        let d: Vec<_> = c.collect();
        assert_eq!(d.len(), 40);
        for (i, x) in d.iter().enumerate() {
            assert_eq!(x.addr().0, 0x8000 + 64 * i as u64);
            assert_eq!(x.is_write_only(), i >= 30);
        }
        q.add_used(m, h, 640).unwrap();
        assert_eq!(dq.poll_used().unwrap(), vec![(h, 640)]);
        assert_eq!(dq.num_free(), 8);
    }

    #[test]
    fn rings_wrap_many_times() {
        let (mem, mut alloc, mut dq, mut q) = setup(4, MemoryLayout::single(1 << 20));
        let m = mem.mmap().as_ref();
        let buf = alloc.alloc(64, 8).unwrap();
        for i in 0..70_000u32 {
            let n = (i % 3) as usize + 1;
            let parts: Vec<ChainPart> = (0..n).map(|k| (buf + 8 * k as u64, 8, k == n - 1)).collect();
            let h = dq.add_chain(&parts).unwrap();
            let c = q.pop_descriptor_chain(m).unwrap();
            assert_eq!(c.head_index(), h);
            assert_eq!(c.count(), n);
            q.add_used(m, h, 8).unwrap();
            assert_eq!(dq.poll_used().unwrap(), vec![(h, 8)]);
        }
        assert_eq!(dq.avail_idx(), (70_000u32 % 65536) as u16);
        assert_eq!(dq.num_free(), 4);
    }

    #[test]
    fn full_queue_is_an_error_not_a_hang() {
        let (_mem, _alloc, mut dq, _q) = setup(4, MemoryLayout::single(1 << 20));
        dq.add_chain(&[(0x1000, 1, false), (0x2000, 1, true)]).unwrap();
        dq.add_chain(&[(0x1000, 1, false)]).unwrap();
        let e = dq
            .add_chain(&[(0x1000, 1, false), (0x2000, 1, true)])
            .unwrap_err();
        assert!(matches!(
            e,
            Error::QueueFull {
                needed: 2,
                free: 1,
                ..
            }
        ));
        assert!(dq.add_chain(&[]).is_err());
    }

    #[test]
    fn device_bugs_on_the_used_ring_are_reported() {
        let (mem, _alloc, mut dq, mut q) = setup(8, MemoryLayout::single(1 << 20));
        let m = mem.mmap().as_ref();
        let h = dq.add_chain(&[(0x1000, 24, false), (0x2000, 8, true)]).unwrap();
        let _ = q.pop_descriptor_chain(m).unwrap();
        q.add_used(m, h, 9).unwrap();
        assert!(matches!(
            dq.poll_used(),
            Err(Error::UsedLenTooLarge {
                used_len: 9,
                capacity: 8,
                ..
            })
        ));
        // A head that was never made available.
        q.add_used(m, 5, 0).unwrap();
        assert!(matches!(dq.poll_used(), Err(Error::UnknownUsedId { id: 5, .. })));
    }

    #[test]
    fn rings_and_buffers_above_a_hole() {
        // Region 0 is small enough that the rings do not fit... they do fit;
        // put the buffers high and check the device follows them there.
        let (mem, mut alloc, mut dq, mut q) = setup(8, MemoryLayout::split_at_4g(64 << 10, 64 << 10));
        let m = mem.mmap().as_ref();
        let hi = alloc.alloc_in_range(1, 32, 8).unwrap();
        assert!(hi >= HIGH_REGION_GPA);
        let h = dq.add_chain(&[(hi, 32, true)]).unwrap();
        let c = q.pop_descriptor_chain(m).unwrap();
        let d: Vec<_> = c.collect();
        assert_eq!(d[0].addr().0, hi);
        q.add_used(m, h, 32).unwrap();
        assert_eq!(dq.poll_used().unwrap(), vec![(h, 32)]);
    }

    #[test]
    fn kick_honours_no_notify_and_wait_times_out() {
        let (mem, _alloc, mut dq, mut q) = setup(8, MemoryLayout::single(1 << 20));
        let m = mem.mmap().as_ref();
        dq.add_chain(&[(0x1000, 8, true)]).unwrap();
        assert!(dq.kick().unwrap());
        assert_eq!(dq.kick_fd().read().unwrap(), 1);
        // Device-side disable_notification sets VRING_USED_F_NO_NOTIFY.
        q.disable_notification(m).unwrap();
        dq.add_chain(&[(0x1000, 8, true)]).unwrap();
        assert!(!dq.kick().unwrap());
        assert_eq!(dq.suppressed_kicks(), 1);
        dq.set_always_kick(true);
        assert!(dq.kick().unwrap());
        dq.set_always_kick(false);
        q.enable_notification(m).unwrap();
        assert!(dq.kick().unwrap());

        let t = Instant::now();
        assert!(dq.wait_used(Duration::from_millis(50)).unwrap().is_empty());
        assert!(t.elapsed() >= Duration::from_millis(50));
        // A signalled call wakes the waiter.
        dq.call_fd().write(1).unwrap();
        assert!(dq.wait_call(Duration::from_secs(5)).unwrap());
        assert_eq!(dq.calls_seen(), 1);
        assert!(!dq.wait_call(Duration::from_millis(1)).unwrap());
    }

    #[test]
    fn event_idx_suppression_on_both_sides() {
        let (mem, _alloc, mut dq, mut q) = setup(8, MemoryLayout::single(1 << 20));
        let m = mem.mmap().as_ref();
        dq.set_event_idx(true);
        q.set_event_idx(true);
        // Device wants a kick for the first entry (avail_event 0).
        let h0 = dq.add_chain(&[(0x1000, 8, true)]).unwrap();
        assert!(dq.kick().unwrap());
        // Device consumes one and publishes avail_event = 1 via
        // enable_notification; two more chains then need one kick.
        let _ = q.pop_descriptor_chain(m).unwrap();
        q.enable_notification(m).unwrap();
        dq.add_chain(&[(0x1000, 8, true)]).unwrap();
        dq.add_chain(&[(0x1000, 8, true)]).unwrap();
        assert!(dq.kick().unwrap());
        // No progress by the device: the next kick is suppressed.
        dq.add_chain(&[(0x1000, 8, true)]).unwrap();
        assert!(!dq.kick().unwrap());

        // Driver asks for an interrupt at used idx 1 after consuming 0..1.
        q.add_used(m, h0, 8).unwrap();
        assert!(q.needs_notification(m).unwrap());
        assert_eq!(dq.poll_used().unwrap(), vec![(h0, 8)]);
    }
}
