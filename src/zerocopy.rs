// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Host DMABUFs aliasing guest pages: a udmabuf over the guest's memfd, so
//! a host program gets a transfer's buffer zero-copy (DESIGN.md, decision 5).

use std::os::fd::{AsFd, OwnedFd};

use log::{info, warn};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::request::Segment;

#[derive(Debug, thiserror::Error)]
pub enum ZeroCopyError {
    #[error("{0}")]
    Udmabuf(#[from] udmabuf::Error),
    #[error("segment {index} at {addr:#x} is not backed by a guest memory file (guest RAM must be memory-backend-memfd,share=on)")]
    NoFile { index: usize, addr: u64 },
    #[error("segment {index} at {addr:#x}+{len:#x} is not in guest memory")]
    NotMapped { index: usize, addr: u64, len: u32 },
    #[error("segment {index} at {addr:#x}+{len:#x} is not page-aligned where it meets its neighbours, so the pages cannot form one DMABUF; use a copy instead")]
    Unaligned { index: usize, addr: u64, len: u32 },
    #[error("the request has no data to export")]
    Empty,
}

/// A host DMABUF over a request's pages: the request's first byte is at
/// `offset` in it, and it is `size` bytes long (whole pages).
#[derive(Debug)]
pub struct Exported {
    pub fd: OwnedFd,
    pub size: u64,
    pub offset: u64,
}

/// Says at start-up, plainly, whether host DMABUFs can be made here.
pub fn report_availability() {
    match udmabuf::Udmabuf::open() {
        Ok(_) => info!("/dev/udmabuf present: host DMABUFs over guest pages are available (control socket: hold with dmabuf)"),
        Err(e) => warn!(
            "{e}; host DMABUFs over guest pages are unavailable; the DMA engine uses its direct mapping of guest memory"
        ),
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// One contiguous piece of a memfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRange {
    /// Index of the guest memory region whose file this is.
    pub region: usize,
    pub offset: u64,
    pub size: u64,
}

/// Maps a request's segments to page-aligned memfd ranges, merging
/// neighbours, and gives the offset of the first byte within the result.
/// Pure over the memory map, so it is tested without /dev/udmabuf.
pub fn file_ranges(
    mem: &GuestMemoryMmap<()>,
    segs: &[Segment],
) -> Result<(Vec<FileRange>, u64), ZeroCopyError> {
    let page = page_size();
    if segs.is_empty() {
        return Err(ZeroCopyError::Empty);
    }
    let mut out: Vec<FileRange> = Vec::new();
    let mut first_offset = 0;
    for (index, s) in segs.iter().enumerate() {
        let (addr, len) = (s.addr, s.len);
        let (ri, region) = mem
            .iter()
            .enumerate()
            .find(|(_, r)| {
                addr >= r.start_addr().0
                    && addr
                        .checked_add(u64::from(len))
                        .is_some_and(|end| end <= r.start_addr().0 + r.len())
            })
            .ok_or(ZeroCopyError::NotMapped { index, addr, len })?;
        let fo = region
            .file_offset()
            .ok_or(ZeroCopyError::NoFile { index, addr })?;
        let file_off = fo.start() + (addr - region.start_addr().0);
        let mut start = file_off;
        let mut end = file_off + u64::from(len);
        let last = index + 1 == segs.len();
        if index == 0 {
            first_offset = start % page;
            start -= start % page;
        } else if start % page != 0 {
            return Err(ZeroCopyError::Unaligned { index, addr, len });
        }
        if !last && end % page != 0 {
            return Err(ZeroCopyError::Unaligned { index, addr, len });
        }
        end = end.div_ceil(page) * page;
        match out.last_mut() {
            Some(prev) if prev.region == ri && prev.offset + prev.size == start => prev.size += end - start,
            _ => out.push(FileRange {
                region: ri,
                offset: start,
                size: end - start,
            }),
        }
    }
    Ok((out, first_offset))
}

/// Makes a host DMABUF over a request's guest pages.
pub fn export_segments(mem: &GuestMemoryMmap<()>, segs: &[Segment]) -> Result<Exported, ZeroCopyError> {
    let (ranges, offset) = file_ranges(mem, segs)?;
    let dev = udmabuf::Udmabuf::open()?;
    let regions: Vec<_> = mem.iter().collect();
    let items: Vec<udmabuf::Range<'_>> = ranges
        .iter()
        .map(|r| udmabuf::Range {
            memfd: regions[r.region]
                .file_offset()
                .expect("checked above")
                .file()
                .as_fd(),
            offset: r.offset,
            size: r.size,
        })
        .collect();
    let buf = dev.create_list(&items, udmabuf::CreateFlags::default())?;
    let size = ranges.iter().map(|r| r.size).sum();
    Ok(Exported {
        fd: buf.into_fd(),
        size,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use vm_memory::{FileOffset, GuestAddress, GuestRegionMmap, MmapRegion};

    fn memfd_mem() -> GuestMemoryMmap<()> {
        let f: File = tempfile::tempfile().unwrap();
        f.set_len(0x20_0000).unwrap();
        let r0 = MmapRegion::from_file(FileOffset::new(f.try_clone().unwrap(), 0), 0x10_0000).unwrap();
        let r1 = MmapRegion::from_file(FileOffset::new(f, 0x10_0000), 0x10_0000).unwrap();
        GuestMemoryMmap::from_regions(vec![
            GuestRegionMmap::new(r0, GuestAddress(0)).unwrap(),
            GuestRegionMmap::new(r1, GuestAddress(0x1_0000_0000)).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn page_aligned_segments_merge() {
        let m = memfd_mem();
        let segs = [
            Segment {
                addr: 0x1000,
                len: 0x1000,
            },
            Segment {
                addr: 0x2000,
                len: 0x800,
            },
        ];
        let (r, off) = file_ranges(&m, &segs).unwrap();
        assert_eq!(
            r,
            vec![FileRange {
                region: 0,
                offset: 0x1000,
                size: 0x2000
            }]
        );
        assert_eq!(off, 0);
    }

    #[test]
    fn first_segment_may_start_mid_page_and_regions_map_to_file_offsets() {
        let m = memfd_mem();
        let segs = [
            Segment {
                addr: 0x1_0000_0100,
                len: 0xf00,
            },
            Segment {
                addr: 0x5000,
                len: 0x10,
            },
        ];
        let (r, off) = file_ranges(&m, &segs).unwrap();
        assert_eq!(off, 0x100);
        assert_eq!(
            r,
            vec![
                FileRange {
                    region: 1,
                    offset: 0x10_0000,
                    size: 0x1000
                },
                FileRange {
                    region: 0,
                    offset: 0x5000,
                    size: 0x1000
                },
            ]
        );
    }

    #[test]
    fn unaligned_middle_and_unmapped_are_refused() {
        let m = memfd_mem();
        let segs = [
            Segment {
                addr: 0x1000,
                len: 0x10,
            },
            Segment {
                addr: 0x2000,
                len: 0x10,
            },
        ];
        assert!(matches!(
            file_ranges(&m, &segs),
            Err(ZeroCopyError::Unaligned { index: 0, .. })
        ));
        let segs = [Segment {
            addr: 0x30_0000,
            len: 0x10,
        }];
        assert!(matches!(
            file_ranges(&m, &segs),
            Err(ZeroCopyError::NotMapped { .. })
        ));
    }
}
