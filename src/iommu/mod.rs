// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The device side of a virtual IOMMU: every address the driver gives the
//! device is an I/O virtual address once VIRTIO_F_ACCESS_PLATFORM is
//! negotiated, translated through an IOTLB that the front end fills.
//!
//! [`DeviceIommu`] is vm-memory's [`Iommu`] for this daemon: lookups hit
//! its IOTLB; a miss is asked of the front end on the back-end channel
//! (VHOST_USER_BACKEND_IOTLB_MSG with REPLY_ACK) and waited for, at most
//! the miss timeout; what cannot be translated fails the access with a
//! reason named like an SMMU fault report (permission, no mapping,
//! timeout). [`relay`] feeds it the front end's updates and invalidations.
//!
//! Why permissions are narrowed: QEMU answers a miss with an UPDATE whose
//! permission is always read-write, whatever the guest mapped. The
//! direction the guest allowed is known only by which miss QEMU answered
//! (it refuses a write miss on a read-only mapping), so an UPDATE that
//! answers a miss grants the access that miss asked for, plus what the
//! IOTLB already allowed there. See docs/iommu.md.

pub mod message;
pub mod relay;

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use log::{debug, warn};
use serde::Serialize;
use vm_memory::iommu::{Error as IommuError, Iommu, IommuMemory, Iotlb, IotlbIterator, IovaRange};
use vm_memory::{GuestAddress, GuestMemoryMmap, Permissions};

use self::message::{
    backend_req, read_message, write_message, IotlbMsg, MemRegion, Message, ReadError, ACCESS_RO, ACCESS_RW,
    ACCESS_WO, FLAG_NEED_REPLY, IOTLB_INVALIDATE, IOTLB_MISS, IOTLB_UPDATE,
};

/// Guest memory as the device sees it: physical memory behind an IOMMU
/// that is in the path only when ACCESS_PLATFORM is negotiated.
pub type DeviceMemory = IommuMemory<GuestMemoryMmap<()>, DeviceIommu>;

/// How long a miss waits for the front end's answer by default.
pub const DEFAULT_MISS_TIMEOUT: Duration = Duration::from_secs(1);
/// Granule of a miss: one page per question, as QEMU answers one IOMMU
/// page per miss.
const PAGE: u64 = 4096;
/// Most misses asked in one round; a longer access asks in several.
const MISSES_PER_ROUND: usize = 256;
/// Rounds after which an access that keeps missing although every miss
/// was answered (mappings changing under it) fails.
const MAX_ROUNDS: usize = 8;

/// Counters of the IOMMU, for the control socket's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IommuStats {
    /// Whether translation is on (ACCESS_PLATFORM negotiated).
    pub enabled: bool,
    pub updates: u64,
    pub invalidations: u64,
    pub misses: u64,
    pub miss_timeouts: u64,
    /// Accesses that could not be translated.
    pub faults: u64,
}

/// Why a front end's IOTLB message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IotlbMsgError {
    #[error("IOTLB message too short ({0} bytes)")]
    Short(usize),
    #[error("IOTLB update {iova:#x}+{size:#x} wraps around the address space")]
    Wraps { iova: u64, size: u64 },
    #[error("IOTLB update {iova:#x}+{size:#x} has permission {perm}, not RO, WO or RW")]
    Permission { iova: u64, size: u64, perm: u8 },
    #[error("IOTLB update {iova:#x}+{size:#x} maps user address {uaddr:#x}, which no memory region covers")]
    OutsideMemory { iova: u64, size: u64, uaddr: u64 },
    #[error("IOTLB message type {0} is not one a front end sends")]
    Kind(u8),
}

/// A miss asked and not answered yet: the page and the access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ask {
    page: u64,
    access: Permissions,
}

/// The back-end channel, for misses.
#[derive(Debug)]
struct MissChannel {
    sock: UnixStream,
    /// Whether the front end acks (REPLY_ACK negotiated): without acks a
    /// miss can only wait for its UPDATE, until the timeout.
    reply_ack: bool,
    /// Answers to misses that timed out, still to come and to be skipped.
    owed: usize,
}

#[derive(Debug, Default)]
struct Counters {
    updates: AtomicU64,
    invalidations: AtomicU64,
    misses: AtomicU64,
    miss_timeouts: AtomicU64,
    faults: AtomicU64,
}

#[derive(Debug)]
struct State {
    iotlb: RwLock<Iotlb>,
    /// The front end's memory table: user addresses in IOTLB updates are
    /// its mappings of guest memory.
    regions: Mutex<Vec<MemRegion>>,
    channel: Mutex<Option<MissChannel>>,
    asking: Mutex<Vec<Ask>>,
    timeout: Duration,
    counters: Counters,
}

/// The IOMMU of one vhost-user connection (shared by the relay that feeds
/// it and every memory handle that translates through it).
#[derive(Clone, Debug)]
pub struct DeviceIommu {
    state: Arc<State>,
}

impl Default for DeviceIommu {
    fn default() -> Self {
        DeviceIommu::new(DEFAULT_MISS_TIMEOUT)
    }
}

fn perm_from_access(p: u8) -> Option<Permissions> {
    match p {
        ACCESS_RO => Some(Permissions::Read),
        ACCESS_WO => Some(Permissions::Write),
        ACCESS_RW => Some(Permissions::ReadWrite),
        _ => None,
    }
}

fn access_name(access: Permissions) -> &'static str {
    if access.has_write() {
        "write"
    } else {
        "read"
    }
}

fn cannot_resolve(iova: u64, length: usize, reason: String) -> IommuError {
    IommuError::CannotResolve {
        iova_range: IovaRange {
            base: GuestAddress(iova),
            length,
        },
        reason,
    }
}

impl DeviceIommu {
    pub fn new(miss_timeout: Duration) -> Self {
        DeviceIommu {
            state: Arc::new(State {
                iotlb: RwLock::new(Iotlb::new()),
                regions: Mutex::new(Vec::new()),
                channel: Mutex::new(None),
                asking: Mutex::new(Vec::new()),
                timeout: miss_timeout,
                counters: Counters::default(),
            }),
        }
    }

    /// `backend` as the device sees it, translated when `enabled`.
    pub fn memory(&self, backend: GuestMemoryMmap<()>, enabled: bool) -> DeviceMemory {
        IommuMemory::new(backend, self.clone(), enabled, ())
    }

    /// The front end's new memory table.
    pub fn set_regions(&self, regions: Vec<MemRegion>) {
        *self.state.regions.lock().unwrap_or_else(|e| e.into_inner()) = regions;
    }

    pub fn add_region(&self, r: MemRegion) {
        self.state
            .regions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
    }

    pub fn remove_region(&self, r: MemRegion) {
        self.state
            .regions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|x| !(x.gpa == r.gpa && x.size == r.size));
    }

    /// The back-end channel the front end gave (SET_BACKEND_REQ_FD).
    pub fn set_channel(&self, sock: UnixStream, reply_ack: bool) {
        if let Err(e) = sock.set_read_timeout(Some(self.state.timeout)) {
            warn!("IOMMU: cannot set the back-end channel's timeout: {e}");
        }
        *self.state.channel.lock().unwrap_or_else(|e| e.into_inner()) = Some(MissChannel {
            sock,
            reply_ack,
            owed: 0,
        });
    }

    /// The front end went away: nobody answers misses any more.
    pub fn close_channel(&self) {
        self.state
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Forgets every mapping (the device was reset, or the owner).
    pub fn reset(&self) {
        self.write_iotlb().invalidate_all();
        self.state
            .asking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn write_iotlb(&self) -> std::sync::RwLockWriteGuard<'_, Iotlb> {
        self.state.iotlb.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read_iotlb(&self) -> RwLockReadGuard<'_, Iotlb> {
        self.state.iotlb.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self, enabled: bool) -> IommuStats {
        let c = &self.state.counters;
        IommuStats {
            enabled,
            updates: c.updates.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            miss_timeouts: c.miss_timeouts.load(Ordering::Relaxed),
            faults: c.faults.load(Ordering::Relaxed),
        }
    }

    /// Applies a front end's VHOST_USER_IOTLB_MSG payload.
    pub fn apply(&self, payload: &[u8]) -> Result<(), IotlbMsgError> {
        let m = IotlbMsg::parse(payload).ok_or(IotlbMsgError::Short(payload.len()))?;
        match m.kind {
            IOTLB_UPDATE => self.update(m),
            IOTLB_INVALIDATE => {
                self.state.counters.invalidations.fetch_add(1, Ordering::Relaxed);
                if m.iova == 0 && m.size == u64::MAX {
                    self.write_iotlb().invalidate_all();
                } else {
                    // A domain-wide invalidation names ranges to the top of
                    // the address space: clamp instead of wrapping.
                    let size = m.size.min(u64::MAX - m.iova);
                    self.write_iotlb()
                        .invalidate_mapping(GuestAddress(m.iova), size as usize);
                }
                debug!("IOTLB: invalidate {:#x}+{:#x}", m.iova, m.size);
                Ok(())
            }
            k => Err(IotlbMsgError::Kind(k)),
        }
    }

    fn update(&self, m: IotlbMsg) -> Result<(), IotlbMsgError> {
        let (iova, size) = (m.iova, m.size);
        if size == 0 {
            return Ok(());
        }
        if iova.checked_add(size).is_none() || m.uaddr.checked_add(size).is_none() {
            return Err(IotlbMsgError::Wraps { iova, size });
        }
        let offered = perm_from_access(m.perm).ok_or(IotlbMsgError::Permission {
            iova,
            size,
            perm: m.perm,
        })?;
        // Each piece of [uaddr, uaddr + size) inside one region.
        let mut pieces = Vec::new();
        {
            let regions = self.state.regions.lock().unwrap_or_else(|e| e.into_inner());
            let mut at = 0u64;
            while at < size {
                let ua = m.uaddr + at;
                let Some(r) = regions.iter().find(|r| ua >= r.uaddr && ua - r.uaddr < r.size) else {
                    return Err(IotlbMsgError::OutsideMemory {
                        iova,
                        size,
                        uaddr: ua,
                    });
                };
                let n = (r.size - (ua - r.uaddr)).min(size - at);
                pieces.push((iova + at, r.gpa + (ua - r.uaddr), n));
                at += n;
            }
        }
        self.state.counters.updates.fetch_add(1, Ordering::Relaxed);
        let mut tlb = self.write_iotlb();
        for (iova, gpa, len) in pieces {
            let perm = self.granted(&tlb, iova, len, offered);
            debug!("IOTLB: update {iova:#x}+{len:#x} -> gpa {gpa:#x} {perm:?}");
            // Cannot fail: no granularity limits in vm-memory's Iotlb.
            let _ = tlb.set_mapping(GuestAddress(iova), GuestAddress(gpa), len as usize, perm);
        }
        Ok(())
    }

    /// What an update of `[iova, iova + len)` offering `offered` grants:
    /// for a range a miss asked about, the accesses asked plus what the
    /// IOTLB already allowed there (QEMU offers RW whatever the mapping);
    /// an update nobody asked for (QEMU's rings at start) as offered.
    fn granted(&self, tlb: &Iotlb, iova: u64, len: u64, offered: Permissions) -> Permissions {
        let asking = self.state.asking.lock().unwrap_or_else(|e| e.into_inner());
        let end = iova + len;
        let asked = asking
            .iter()
            .filter(|a| a.page < end && a.page + PAGE > iova)
            .fold(Permissions::No, |p, a| p | a.access);
        if asked == Permissions::No {
            return offered;
        }
        let mut held = Permissions::No;
        for p in [Permissions::Read, Permissions::Write] {
            if Iotlb::lookup(tlb, GuestAddress(iova), len as usize, p).is_ok() {
                held = held | p;
            }
        }
        (asked | held) & offered
    }

    /// Whether the IOTLB translates `len` bytes at `iova` for `access`
    /// now, without asking the front end.
    pub fn holds(&self, iova: u64, len: usize, access: Permissions) -> bool {
        Iotlb::lookup(self.read_iotlb(), GuestAddress(iova), len, access).is_ok()
    }

    /// Asks the front end about `asks`; returns which were answered with
    /// success, or that the answers did not come in time.
    fn ask(&self, asks: &[Ask]) -> Result<Vec<bool>, String> {
        let mut chan = self.state.channel.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ch) = chan.as_mut() else {
            return Err(
                "no back-end channel to ask the front end for a translation (BACKEND_REQ not negotiated)"
                    .into(),
            );
        };
        self.state
            .asking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(asks);
        let result = self.ask_on(ch, asks);
        {
            let mut asking = self.state.asking.lock().unwrap_or_else(|e| e.into_inner());
            for a in asks {
                if let Some(i) = asking.iter().position(|x| x == a) {
                    asking.swap_remove(i);
                }
            }
        }
        result
    }

    fn ask_on(&self, ch: &mut MissChannel, asks: &[Ask]) -> Result<Vec<bool>, String> {
        let timeout = self.state.timeout;
        // Answers of misses that timed out before, if they came meanwhile.
        while ch.owed > 0 {
            let _ = ch.sock.set_nonblocking(true);
            let r = read_message(&ch.sock);
            let _ = ch.sock.set_nonblocking(false);
            match r {
                Ok(_) => ch.owed -= 1,
                Err(_) => break,
            }
        }
        let flags = if ch.reply_ack { FLAG_NEED_REPLY } else { 0 };
        for a in asks {
            let perm = if a.access.has_write() {
                ACCESS_WO
            } else {
                ACCESS_RO
            };
            let msg = IotlbMsg {
                iova: a.page,
                perm,
                kind: IOTLB_MISS,
                ..Default::default()
            };
            self.state.counters.misses.fetch_add(1, Ordering::Relaxed);
            write_message(
                &ch.sock,
                &Message::new(backend_req::IOTLB_MSG, flags, msg.to_bytes()),
            )
            .map_err(|e| format!("cannot ask the front end about iova {:#x}: {e}", a.page))?;
        }
        if !ch.reply_ack {
            // Without acks the only answer is an UPDATE: wait for it.
            let deadline = Instant::now() + timeout;
            loop {
                let ok: Vec<bool> = asks
                    .iter()
                    .map(|a| Iotlb::lookup(self.read_iotlb(), GuestAddress(a.page), 1, a.access).is_ok())
                    .collect();
                if ok.iter().all(|&o| o) {
                    return Ok(ok);
                }
                if Instant::now() >= deadline {
                    self.state.counters.miss_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(format!(
                        "IOTLB miss not answered within {} ms",
                        timeout.as_millis()
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let deadline = Instant::now() + timeout;
        let mut answers = Vec::with_capacity(asks.len());
        // Late answers to misses that timed out were drained above, as far
        // as they had come; one still later is taken for a new miss, and the
        // lookup that follows every round decides, not the answer.
        while answers.len() < asks.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = ch.sock.set_read_timeout(Some(left));
            match read_message(&ch.sock) {
                Ok(m) if m.header.request == backend_req::IOTLB_MSG && m.header.is_reply() => {
                    answers.push(m.u64_payload() == Some(0));
                }
                Ok(m) => warn!(
                    "IOMMU: unexpected message {} (flags {:#x}) on the back-end channel",
                    m.header.request, m.header.flags
                ),
                Err(ReadError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(format!("the back-end channel failed: {e}")),
            }
        }
        if answers.len() < asks.len() {
            ch.owed += asks.len() - answers.len();
            self.state.counters.miss_timeouts.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "IOTLB miss not answered within {} ms",
                timeout.as_millis()
            ));
        }
        Ok(answers)
    }

    /// Why `page` cannot be accessed with `access`: asks the other access,
    /// which tells a permission fault from an unmapped IOVA (QEMU refuses a
    /// miss whose access the mapping does not allow).
    fn explain(&self, page: u64, access: Permissions) -> String {
        let other = if access.has_write() {
            Permissions::Read
        } else {
            Permissions::Write
        };
        let held = Iotlb::lookup(self.read_iotlb(), GuestAddress(page), 1, other).is_ok();
        let other_ok = held || matches!(self.ask(&[Ask { page, access: other }]).as_deref(), Ok([true]));
        if !other_ok {
            "no mapping (unmapped IOVA)".into()
        } else if access.has_write() {
            "permission: write to a mapping the device may only read (DMA_TO_DEVICE)".into()
        } else {
            "permission: read from a mapping the device may only write (DMA_FROM_DEVICE)".into()
        }
    }

    fn fault(&self, iova: u64, length: usize, reason: String) -> IommuError {
        self.state.counters.faults.fetch_add(1, Ordering::Relaxed);
        cannot_resolve(iova, length, reason)
    }
}

/// The pages that cover `ranges`.
fn pages_of(ranges: impl Iterator<Item = IovaRange>) -> Vec<u64> {
    let mut pages = Vec::new();
    for r in ranges {
        let start = r.base.0 & !(PAGE - 1);
        let end = r.base.0.saturating_add(r.length as u64);
        let mut p = start;
        while p < end {
            if pages.last() != Some(&p) {
                pages.push(p);
            }
            match p.checked_add(PAGE) {
                Some(n) => p = n,
                None => break,
            }
        }
    }
    pages
}

impl Iommu for DeviceIommu {
    type IotlbGuard<'a> = RwLockReadGuard<'a, Iotlb>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, IommuError> {
        if iova.0.checked_add(length as u64).is_none() {
            return Err(self.fault(iova.0, length, "the range wraps around the address space".into()));
        }
        for _ in 0..MAX_ROUNDS {
            let fails = match Iotlb::lookup(self.read_iotlb(), iova, length, access) {
                Ok(hit) => return Ok(hit),
                Err(f) => f,
            };
            let pages = pages_of(fails.misses.into_iter().chain(fails.access_fails));
            for chunk in pages.chunks(MISSES_PER_ROUND) {
                let asks: Vec<Ask> = chunk.iter().map(|&page| Ask { page, access }).collect();
                let answers = self
                    .ask(&asks)
                    .map_err(|reason| self.fault(iova.0, length, reason))?;
                if let Some(i) = answers.iter().position(|ok| !ok) {
                    let page = chunk[i];
                    let reason = self.explain(page, access);
                    return Err(self.fault(iova.0, length, format!("{reason} at page {page:#x}")));
                }
            }
        }
        Err(self.fault(
            iova.0,
            length,
            format!(
                "the {} kept missing although the front end answered every miss (mappings changing under it)",
                access_name(access)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemory};

    const UADDR: u64 = 0x7f00_0000_0000;

    fn iommu_with_memory() -> (DeviceIommu, DeviceMemory) {
        let io = DeviceIommu::new(Duration::from_millis(200));
        io.set_regions(vec![MemRegion {
            gpa: 0,
            size: 0x10_0000,
            uaddr: UADDR,
        }]);
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let mem = io.memory(m, true);
        (io, mem)
    }

    fn update(iova: u64, size: u64, gpa: u64, perm: u8) -> Vec<u8> {
        IotlbMsg {
            iova,
            size,
            uaddr: UADDR + gpa,
            perm,
            kind: IOTLB_UPDATE,
        }
        .to_bytes()
    }

    #[test]
    fn updates_translate_and_invalidations_remove() {
        let (io, mem) = iommu_with_memory();
        io.apply(&update(0xabc0_0000, 0x2000, 0x5000, ACCESS_RW)).unwrap();
        mem.write_slice(b"hello", GuestAddress(0xabc0_1ffe)).unwrap_err();
        mem.write_slice(b"hel", GuestAddress(0xabc0_1ffd)).unwrap();
        let mut b = [0u8; 3];
        mem.get_backend()
            .read_slice(&mut b, GuestAddress(0x6ffd))
            .unwrap();
        assert_eq!(&b, b"hel");
        io.apply(
            &IotlbMsg {
                iova: 0xabc0_1000,
                size: 0x1000,
                kind: IOTLB_INVALIDATE,
                ..Default::default()
            }
            .to_bytes(),
        )
        .unwrap();
        assert!(mem.check_range(GuestAddress(0xabc0_0000), 0x1000, Permissions::Read));
        assert!(!mem.check_range(GuestAddress(0xabc0_1000), 1, Permissions::Read));
        let s = io.stats(true);
        assert_eq!((s.updates, s.invalidations), (1, 1));
    }

    #[test]
    fn bad_updates_are_refused() {
        let (io, _) = iommu_with_memory();
        assert!(matches!(
            io.apply(&update(0, 0x1000, 0x10_0000, ACCESS_RW)),
            Err(IotlbMsgError::OutsideMemory { .. })
        ));
        assert!(matches!(
            io.apply(&update(u64::MAX - 10, 0x1000, 0, ACCESS_RW)),
            Err(IotlbMsgError::Wraps { .. })
        ));
        assert!(matches!(
            io.apply(&update(0, 0x1000, 0, 7)),
            Err(IotlbMsgError::Permission { perm: 7, .. })
        ));
        assert_eq!(io.apply(&[0u8; 8]), Err(IotlbMsgError::Short(8)));
        // A range to the top of the address space is clamped, not wrapped.
        io.apply(
            &IotlbMsg {
                iova: 0x1000,
                size: u64::MAX,
                kind: IOTLB_INVALIDATE,
                ..Default::default()
            }
            .to_bytes(),
        )
        .unwrap();
    }

    #[test]
    fn no_channel_is_a_named_fault() {
        let (io, mem) = iommu_with_memory();
        let e = mem.write_slice(b"x", GuestAddress(0x1000)).unwrap_err();
        assert!(e.to_string().contains("no back-end channel"), "{e}");
        assert_eq!(io.stats(true).faults, 1);
    }

    /// A front end on the other side of the back-end channel that maps
    /// `[0, 0x4000)` read-only and `[0x4000, 0x8000)` write-only at
    /// gpa + 0x1000, answering misses like QEMU (an UPDATE offering RW,
    /// then the ack), or never answering.
    fn front_end(io: DeviceIommu, sock: UnixStream, answer: bool) -> std::thread::JoinHandle<usize> {
        std::thread::spawn(move || {
            let mut n = 0;
            while let Ok(m) = read_message(&sock) {
                n += 1;
                let q = IotlbMsg::parse(&m.payload).unwrap();
                assert_eq!(q.kind, IOTLB_MISS);
                if !answer {
                    continue;
                }
                let page = q.iova & !(PAGE - 1);
                let allowed = match page {
                    0..=0x3fff => ACCESS_RO,
                    0x4000..=0x7fff => ACCESS_WO,
                    _ => 0,
                };
                let ok = allowed != 0 && allowed & q.perm == q.perm;
                if ok {
                    io.apply(&update(page, PAGE, page + 0x1000, ACCESS_RW)).unwrap();
                }
                let reply = Message::ack(backend_req::IOTLB_MSG, u64::from(!ok));
                write_message(&sock, &reply).unwrap();
            }
            n
        })
    }

    #[test]
    fn misses_are_asked_and_permissions_narrowed() {
        let (io, mem) = iommu_with_memory();
        let (ours, theirs) = UnixStream::pair().unwrap();
        io.set_channel(ours, true);
        let fe = front_end(io.clone(), theirs, true);

        // A read across two read-only pages: two misses, then a hit.
        let mut b = [0u8; 0x1800];
        mem.read_slice(&mut b, GuestAddress(0x800)).unwrap();
        assert_eq!(io.stats(true).misses, 2);
        mem.read_slice(&mut b, GuestAddress(0x800)).unwrap();
        assert_eq!(io.stats(true).misses, 2, "the second read hits");

        // A write to the read-only page the IOTLB holds: refused.
        let e = mem
            .write_slice(b"x", GuestAddress(0x1000))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("write to a mapping the device may only read (DMA_TO_DEVICE)"),
            "{e}"
        );
        // A read of a write-only page.
        let e = mem
            .read_slice(&mut b[..4], GuestAddress(0x4000))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("read from a mapping the device may only write (DMA_FROM_DEVICE)"),
            "{e}"
        );
        // The write the mapping allows still works after the refused read.
        mem.write_slice(b"ok", GuestAddress(0x4000)).unwrap();
        let mut two = [0u8; 2];
        mem.get_backend()
            .read_slice(&mut two, GuestAddress(0x5000))
            .unwrap();
        assert_eq!(&two, b"ok");
        // Unmapped.
        let e = mem
            .read_slice(&mut b[..4], GuestAddress(0x9000))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no mapping (unmapped IOVA)"), "{e}");
        assert_eq!(io.stats(true).faults, 3);
        io.close_channel();
        assert!(fe.join().unwrap() >= 6);
    }

    #[test]
    fn a_miss_nobody_answers_times_out() {
        let (io, mem) = iommu_with_memory();
        let (ours, theirs) = UnixStream::pair().unwrap();
        io.set_channel(ours, true);
        let fe = front_end(io.clone(), theirs, false);
        let t = Instant::now();
        let e = mem
            .write_slice(b"x", GuestAddress(0x4000))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not answered within 200 ms"), "{e}");
        assert!(t.elapsed() >= Duration::from_millis(200));
        let s = io.stats(true);
        assert_eq!((s.miss_timeouts, s.faults), (1, 1));
        io.close_channel();
        assert_eq!(fe.join().unwrap(), 1);
    }

    #[test]
    fn pages_cover_ranges() {
        let r = |b: u64, l: usize| IovaRange {
            base: GuestAddress(b),
            length: l,
        };
        assert_eq!(
            pages_of([r(0xfff, 2), r(0x1000, 0x1001)].into_iter()),
            vec![0, 0x1000, 0x2000]
        );
        assert_eq!(pages_of([r(u64::MAX - 5, 5)].into_iter()), vec![!(PAGE - 1)]);
    }
}
