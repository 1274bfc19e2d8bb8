// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Guest memory: one sealed memfd mapped shared as one or more guest-physical
//! regions, and an allocator of guest-physical ranges.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{
    ByteValued, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap,
};

use crate::error::{Error, Result};

/// Page size the harness assumes for alignment.
pub const PAGE_SIZE: u64 = 4096;
/// Default guest memory size: 256 MiB.
pub const DEFAULT_MEM_SIZE: u64 = 256 << 20;
/// Where the high region starts in [`MemoryLayout::with_hole`] layouts.
pub const HIGH_REGION_GPA: u64 = 4 << 30;

/// Rounds `v` up to a multiple of `align` (a power of two).
pub fn align_up(v: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    (v + align - 1) & !(align - 1)
}

/// Guest-physical layout: regions as `(gpa, size)`, sorted, non-overlapping,
/// page-aligned. Gaps between regions are holes no memory backs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    pub regions: Vec<(u64, u64)>,
}

impl MemoryLayout {
    /// One region of `size` bytes at GPA 0.
    pub fn single(size: u64) -> Self {
        MemoryLayout {
            regions: vec![(0, size)],
        }
    }

    /// Region 0 of `low` bytes at GPA 0 and region 1 of `high` bytes at
    /// `high_gpa`; `[low, high_gpa)` is a hole.
    pub fn with_hole(low: u64, high_gpa: u64, high: u64) -> Self {
        MemoryLayout {
            regions: vec![(0, low), (high_gpa, high)],
        }
    }

    /// Region 0 of `low` bytes at 0 and region 1 of `high` bytes at 4 GiB.
    pub fn split_at_4g(low: u64, high: u64) -> Self {
        Self::with_hole(low, HIGH_REGION_GPA, high)
    }

    /// Total bytes of memory.
    pub fn total(&self) -> u64 {
        self.regions.iter().map(|r| r.1).sum()
    }

    fn validate(&self) -> Result<()> {
        if self.regions.is_empty() {
            return Err(Error::InvalidArgument("memory layout has no region".into()));
        }
        let mut end = 0u64;
        for (i, &(gpa, size)) in self.regions.iter().enumerate() {
            if size == 0 || gpa % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
                return Err(Error::InvalidArgument(format!(
                    "region {i} ({gpa:#x}, {size:#x}) is empty or not page-aligned"
                )));
            }
            if i > 0 && gpa < end {
                return Err(Error::InvalidArgument(format!(
                    "region {i} at {gpa:#x} overlaps or precedes the region before"
                )));
            }
            end = gpa
                .checked_add(size)
                .ok_or_else(|| Error::InvalidArgument(format!("region {i} overflows")))?;
        }
        Ok(())
    }
}

impl Default for MemoryLayout {
    fn default() -> Self {
        Self::single(DEFAULT_MEM_SIZE)
    }
}

/// One guest memory region: where it is and where it sits in the memfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    pub gpa: u64,
    pub size: u64,
    pub file_offset: u64,
}

impl RegionInfo {
    /// One past the last GPA of the region.
    pub fn end(&self) -> u64 {
        self.gpa + self.size
    }
}

/// Guest RAM: a memfd (`MFD_ALLOW_SEALING`, sealed `F_SEAL_SHRINK |
/// F_SEAL_GROW`, write left unsealed, as udmabuf needs), mapped shared, as a
/// `vm_memory::GuestMemoryMmap` whose regions carry `FileOffset`s so
/// SET_MEM_TABLE can pass the fd.
///
/// Not to be confused with the `vm_memory::GuestMemory` trait.
pub struct GuestMemory {
    mmap: Arc<GuestMemoryMmap>,
    memfd: Arc<File>,
    regions: Vec<RegionInfo>,
}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMemory")
            .field("memfd", &self.memfd.as_raw_fd())
            .field("regions", &self.regions)
            .finish()
    }
}

fn create_memfd(name: &str, size: u64) -> Result<File> {
    let cname = CString::new(name).map_err(|_| Error::InvalidArgument("memfd name".into()))?;
    // SAFETY: cname is a valid NUL-terminated string; the flags are valid.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(Error::last_os("memfd_create"));
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(|e| Error::io("ftruncate memfd", e))?;
    // SAFETY: F_ADD_SEALS on a valid memfd with valid seal bits.
    let r = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        )
    };
    if r < 0 {
        return Err(Error::last_os("fcntl(F_ADD_SEALS)"));
    }
    Ok(file)
}

impl GuestMemory {
    /// Creates the memfd and maps every region of `layout` from it, region
    /// after region in file order.
    pub fn new(layout: &MemoryLayout) -> Result<Self> {
        layout.validate()?;
        let memfd = Arc::new(create_memfd("udc-harness-guest-ram", layout.total())?);
        let mut regions = Vec::new();
        let mut mapped = Vec::new();
        let mut off = 0u64;
        for &(gpa, size) in &layout.regions {
            let fo = FileOffset::from_arc(memfd.clone(), off);
            let r = GuestRegionMmap::from_range(GuestAddress(gpa), size as usize, Some(fo))
                .map_err(|e| Error::MemorySetup(e.to_string()))?;
            mapped.push(r);
            regions.push(RegionInfo {
                gpa,
                size,
                file_offset: off,
            });
            off += size;
        }
        let mmap = GuestMemoryMmap::from_regions(mapped).map_err(|e| Error::MemorySetup(e.to_string()))?;
        Ok(GuestMemory {
            mmap: Arc::new(mmap),
            memfd,
            regions,
        })
    }

    /// The vm-memory view.
    pub fn mmap(&self) -> &Arc<GuestMemoryMmap> {
        &self.mmap
    }

    /// The memfd behind every region.
    pub fn memfd(&self) -> &File {
        &self.memfd
    }

    /// The regions, in GPA order.
    pub fn regions(&self) -> &[RegionInfo] {
        &self.regions
    }

    /// The holes between regions, as `(start, end)` GPA ranges.
    pub fn holes(&self) -> Vec<(u64, u64)> {
        self.regions
            .windows(2)
            .filter(|w| w[0].end() < w[1].gpa)
            .map(|w| (w[0].end(), w[1].gpa))
            .collect()
    }

    /// The memfd's inode number, as /proc/PID/maps shows it for every
    /// mapping of it (to tell whether a process still maps this memory).
    pub fn inode(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(self
            .memfd
            .metadata()
            .map_err(|e| Error::io("fstat memfd", e))?
            .ino())
    }

    /// One past the highest guest-physical address backed by memory.
    pub fn end(&self) -> u64 {
        self.regions.last().map(|r| r.end()).unwrap_or(0)
    }

    /// True if `[gpa, gpa + len)` lies entirely inside one region.
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        self.regions
            .iter()
            .any(|r| gpa >= r.gpa && gpa.checked_add(len).is_some_and(|e| e <= r.end()))
    }

    /// Offset of `gpa` in the memfd, if guest memory backs it.
    pub fn file_offset_of(&self, gpa: u64) -> Option<u64> {
        self.regions
            .iter()
            .find(|r| gpa >= r.gpa && gpa < r.end())
            .map(|r| r.file_offset + (gpa - r.gpa))
    }

    /// The SET_MEM_TABLE entries for all regions.
    pub fn vhost_regions(&self) -> Result<Vec<VhostUserMemoryRegionInfo>> {
        self.mmap
            .iter()
            .map(|r| {
                VhostUserMemoryRegionInfo::from_guest_region(r).map_err(Error::vhost("memory region info"))
            })
            .collect()
    }

    /// Writes `data` at `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<()> {
        self.mmap
            .write_slice(data, GuestAddress(gpa))
            .map_err(|source| Error::Memory {
                gpa,
                len: data.len(),
                source,
            })
    }

    /// Reads `buf.len()` bytes at `gpa` into `buf`.
    pub fn read_into(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        self.mmap
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|source| Error::Memory { gpa, len, source })
    }

    /// Reads `len` bytes at `gpa`.
    pub fn read(&self, gpa: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read_into(gpa, &mut v)?;
        Ok(v)
    }

    /// Fills `len` bytes at `gpa` with `byte`.
    pub fn fill(&self, gpa: u64, len: usize, byte: u8) -> Result<()> {
        const CHUNK: usize = 64 << 10;
        let buf = vec![byte; len.min(CHUNK)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            self.write(gpa + done as u64, &buf[..n])?;
            done += n;
        }
        Ok(())
    }

    /// Writes a plain structure at `gpa`.
    pub fn write_obj<T: ByteValued>(&self, gpa: u64, v: T) -> Result<()> {
        self.write(gpa, v.as_slice())
    }

    /// Reads a plain structure at `gpa`.
    pub fn read_obj<T: ByteValued + Default>(&self, gpa: u64) -> Result<T> {
        let mut v = T::default();
        self.read_into(gpa, v.as_mut_slice())?;
        Ok(v)
    }
}

/// A first-fit allocator of guest-physical ranges with coalescing frees.
///
/// It only hands out addresses; it never touches memory. Zero-byte requests
/// get one byte so every allocation has a distinct address.
#[derive(Clone, Debug)]
pub struct Allocator {
    ranges: Vec<(u64, u64)>,
    free: BTreeMap<u64, u64>,
    used: BTreeMap<u64, u64>,
}

impl Allocator {
    /// An allocator over `ranges` (`(start, len)`, non-overlapping).
    pub fn new(ranges: &[(u64, u64)]) -> Self {
        let mut a = Allocator {
            ranges: ranges.to_vec(),
            free: BTreeMap::new(),
            used: BTreeMap::new(),
        };
        for &(s, l) in ranges {
            if l > 0 {
                a.insert_free(s, l);
            }
        }
        a
    }

    /// An allocator over every region of `mem`.
    pub fn for_memory(mem: &GuestMemory) -> Self {
        let r: Vec<(u64, u64)> = mem.regions().iter().map(|r| (r.gpa, r.size)).collect();
        Self::new(&r)
    }

    /// The ranges this allocator manages.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Allocates `len` bytes aligned to `align` (a power of two) anywhere.
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<u64> {
        self.alloc_within(0, u64::MAX, len, align)
    }

    /// Allocates `len` bytes aligned to `align` inside `[lo, hi)`.
    pub fn alloc_within(&mut self, lo: u64, hi: u64, len: u64, align: u64) -> Result<u64> {
        if align == 0 || !align.is_power_of_two() {
            return Err(Error::InvalidArgument(format!(
                "alignment {align} is not a power of two"
            )));
        }
        let len = len.max(1);
        let mut found = None;
        for (&start, &flen) in self.free.range(..hi) {
            let fend = start + flen;
            let s = align_up(start.max(lo), align);
            if s.checked_add(len).is_some_and(|e| e <= fend.min(hi)) {
                found = Some((start, flen, s));
                break;
            }
        }
        let (start, flen, s) = found.ok_or(Error::OutOfGuestMemory { len, align })?;
        self.free.remove(&start);
        if s > start {
            self.free.insert(start, s - start);
        }
        let end = s + len;
        if end < start + flen {
            self.free.insert(end, start + flen - end);
        }
        self.used.insert(s, len);
        Ok(s)
    }

    /// Allocates inside the `index`th range (e.g. region 1 above a hole).
    pub fn alloc_in_range(&mut self, index: usize, len: u64, align: u64) -> Result<u64> {
        let &(s, l) = self
            .ranges
            .get(index)
            .ok_or_else(|| Error::InvalidArgument(format!("no allocator range {index}")))?;
        self.alloc_within(s, s + l, len, align)
    }

    /// The same allocator over new `ranges` (guest memory was remapped):
    /// the allocations inside them are kept, the others forgotten (freeing
    /// one later is an error).
    pub fn remapped(&self, ranges: &[(u64, u64)]) -> Allocator {
        let mut a = Allocator::new(ranges);
        for (&gpa, &len) in &self.used {
            a.take_exact(gpa, len);
        }
        a
    }

    /// Marks `[gpa, gpa + len)` allocated if it is free; returns whether
    /// it was.
    fn take_exact(&mut self, gpa: u64, len: u64) -> bool {
        let Some((&start, &flen)) = self.free.range(..=gpa).next_back() else {
            return false;
        };
        let (end, fend) = (gpa + len, start + flen);
        if end > fend {
            return false;
        }
        self.free.remove(&start);
        if gpa > start {
            self.free.insert(start, gpa - start);
        }
        if end < fend {
            self.free.insert(end, fend - end);
        }
        self.used.insert(gpa, len);
        true
    }

    /// Returns an allocation.
    pub fn free(&mut self, gpa: u64) -> Result<()> {
        let len = self.used.remove(&gpa).ok_or(Error::BadFree(gpa))?;
        self.insert_free(gpa, len);
        Ok(())
    }

    /// Bytes not allocated.
    pub fn free_bytes(&self) -> u64 {
        self.free.values().sum()
    }

    /// Number of live allocations.
    pub fn allocations(&self) -> usize {
        self.used.len()
    }

    /// Number of free extents (1 per range when nothing is allocated).
    pub fn free_extents(&self) -> usize {
        self.free.len()
    }

    fn insert_free(&mut self, mut start: u64, mut len: u64) {
        if let Some((&ps, &pl)) = self.free.range(..start).next_back() {
            if ps + pl == start {
                self.free.remove(&ps);
                start = ps;
                len += pl;
            }
        }
        if let Some(&nl) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += nl;
        }
        self.free.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_first_fit_alignment_and_coalescing() {
        let mut a = Allocator::new(&[(0, 0x10000)]);
        let x = a.alloc(10, 8).unwrap();
        assert_eq!(x, 0);
        let y = a.alloc(100, 4096).unwrap();
        assert_eq!(y, 4096);
        let z = a.alloc(1, 1).unwrap();
        assert_eq!(z, 10);
        assert_eq!(a.allocations(), 3);
        a.free(y).unwrap();
        a.free(x).unwrap();
        a.free(z).unwrap();
        assert_eq!(a.allocations(), 0);
        assert_eq!(a.free_extents(), 1);
        assert_eq!(a.free_bytes(), 0x10000);
    }

    #[test]
    fn allocator_reports_exhaustion_and_bad_free() {
        let mut a = Allocator::new(&[(0x1000, 0x2000)]);
        assert!(matches!(a.alloc(0x3000, 1), Err(Error::OutOfGuestMemory { .. })));
        let p = a.alloc(0x2000, 0x1000).unwrap();
        assert_eq!(p, 0x1000);
        assert!(a.alloc(1, 1).is_err());
        assert!(matches!(a.free(0x1234), Err(Error::BadFree(0x1234))));
        a.free(p).unwrap();
        assert!(matches!(a.free(p), Err(Error::BadFree(_))));
        assert!(a.alloc(3, 3).is_err(), "non-power-of-two alignment");
    }

    #[test]
    fn allocator_zero_length_gets_distinct_addresses() {
        let mut a = Allocator::new(&[(0, 0x100)]);
        let p = a.alloc(0, 1).unwrap();
        let q = a.alloc(0, 1).unwrap();
        assert_ne!(p, q);
    }

    #[test]
    fn allocator_spans_regions_with_a_hole() {
        let mut a = Allocator::new(&[(0, 0x2000), (HIGH_REGION_GPA, 0x4000)]);
        let p = a.alloc(0x3000, 0x1000).unwrap();
        assert_eq!(p, HIGH_REGION_GPA, "does not fit low, lands high");
        let q = a.alloc_in_range(1, 0x1000, 0x1000).unwrap();
        assert_eq!(q, HIGH_REGION_GPA + 0x3000);
        let r = a.alloc_in_range(0, 0x10, 16).unwrap();
        assert_eq!(r, 0);
        assert!(a.alloc_in_range(2, 1, 1).is_err());
        // Never straddles the hole even though the two free extents touch
        // neither each other nor the hole's edges in a way that could merge.
        a.free(p).unwrap();
        a.free(q).unwrap();
        a.free(r).unwrap();
        assert_eq!(a.free_extents(), 2);
    }

    #[test]
    fn a_remapped_allocator_keeps_what_the_new_ranges_back() {
        let mut a = Allocator::new(&[(0, 0x4000), (HIGH_REGION_GPA, 0x4000)]);
        let low = a.alloc_in_range(0, 0x100, 16).unwrap();
        let high = a.alloc_in_range(1, 0x100, 16).unwrap();
        // Region 1 goes, region 0 grows.
        let mut b = a.remapped(&[(0, 0x8000)]);
        assert_eq!(b.allocations(), 1);
        assert_eq!(b.free_bytes(), 0x8000 - 0x100);
        assert!(matches!(b.free(high), Err(Error::BadFree(_))));
        let c = b.alloc(0x100, 16).unwrap();
        assert_ne!(c, low, "the kept allocation is not handed out again");
        b.free(low).unwrap();
        b.free(c).unwrap();
        assert_eq!(b.free_extents(), 1);
    }

    #[test]
    fn allocator_random_alloc_free_keeps_invariants() {
        // A small deterministic LCG so the test needs no extra crate.
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        let total = 1 << 20;
        let mut a = Allocator::new(&[(0x10_0000, total)]);
        let mut live: Vec<(u64, u64)> = Vec::new();
        for _ in 0..5000 {
            if rnd() % 3 != 0 || live.is_empty() {
                let len = rnd() % 5000;
                let align = 1 << (rnd() % 13);
                if let Ok(p) = a.alloc(len, align) {
                    assert_eq!(p % align, 0);
                    let len = len.max(1);
                    assert!(p >= 0x10_0000 && p + len <= 0x10_0000 + total);
                    for &(q, l) in &live {
                        assert!(p + len <= q || q + l <= p, "overlap");
                    }
                    live.push((p, len));
                }
            } else {
                let i = (rnd() as usize) % live.len();
                let (p, _) = live.swap_remove(i);
                a.free(p).unwrap();
            }
            let used: u64 = live.iter().map(|x| x.1).sum();
            assert_eq!(a.free_bytes() + used, total);
        }
        for (p, _) in live.drain(..) {
            a.free(p).unwrap();
        }
        assert_eq!(a.free_extents(), 1);
    }

    #[test]
    fn memory_is_a_sealed_memfd_with_regions_and_a_hole() {
        let layout = MemoryLayout::split_at_4g(1 << 20, 2 << 20);
        let mem = GuestMemory::new(&layout).unwrap();
        assert_eq!(mem.regions().len(), 2);
        assert_eq!(mem.holes(), vec![(1 << 20, HIGH_REGION_GPA)]);
        assert_eq!(mem.end(), HIGH_REGION_GPA + (2 << 20));
        assert_eq!(mem.file_offset_of(HIGH_REGION_GPA + 5), Some((1 << 20) + 5));
        assert_eq!(mem.file_offset_of(2 << 20), None);
        assert!(mem.contains(HIGH_REGION_GPA, 2 << 20));
        assert!(!mem.contains((1 << 20) - 1, 2));
        // SAFETY: F_GET_SEALS on a valid fd.
        let seals = unsafe { libc::fcntl(mem.memfd().as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW);
        assert_eq!(mem.memfd().metadata().unwrap().len(), 3 << 20);

        mem.write(HIGH_REGION_GPA + 100, b"hello").unwrap();
        assert_eq!(mem.read(HIGH_REGION_GPA + 100, 5).unwrap(), b"hello");
        // The same bytes through the memfd at the region's file offset.
        let mut b = [0u8; 5];
        std::os::unix::fs::FileExt::read_exact_at(mem.memfd(), &mut b, (1 << 20) + 100).unwrap();
        assert_eq!(&b, b"hello");
        assert!(mem.write((1 << 20) + 10, b"x").is_err(), "hole");

        let infos = mem.vhost_regions().unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[1].guest_phys_addr, HIGH_REGION_GPA);
        assert_eq!(infos[1].mmap_offset, 1 << 20);
        assert_eq!(infos[1].memory_size, 2 << 20);
    }

    #[test]
    fn layout_validation() {
        assert!(GuestMemory::new(&MemoryLayout { regions: vec![] }).is_err());
        assert!(GuestMemory::new(&MemoryLayout::single(1000)).is_err());
        assert!(GuestMemory::new(&MemoryLayout::with_hole(0x2000, 0x1000, 0x1000)).is_err());
    }
}
