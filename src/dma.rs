// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The controller's DMA engine: moves bytes between a request's segment list
//! in guest memory and host buffers.
//!
//! Every access goes through vm-memory's checked slices with the access the
//! transfer needs (read for IN, write for OUT), so a segment that stopped
//! being guest memory after the request was parsed (a new memory table)
//! fails with a DMA fault instead of touching anything else.

use vm_memory::iommu::Error as IommuError;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryError, Permissions};

use crate::request::Segment;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DmaError {
    #[error("DMA {what} at {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory {
        what: &'static str,
        addr: u64,
        len: usize,
    },
    /// The IOMMU refused the access; `reason` names why as an SMMU fault
    /// report would (permission, no mapping, miss timeout).
    #[error("IOMMU fault: device {what} at iova {iova:#x}+{len:#x}: {reason}")]
    Iommu {
        what: &'static str,
        iova: u64,
        len: usize,
        reason: String,
    },
    #[error("DMA past the end of the request's segments (offset {0})")]
    PastEnd(u64),
}

/// Guest-memory work (bytes moved, poisoned or hashed) allowed in one hold of
/// the device lock, and the work done in it so far. A step of work may go
/// past what is left (a race detector works in whole blocks); `done` counts
/// it all, so the daemon can report the most work any hold did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    left: u64,
    done: u64,
}

impl Budget {
    /// No limit: for callers that do not meter their holds (unit tests).
    pub const fn unmetered() -> Self {
        Budget::new(u64::MAX)
    }

    pub const fn new(bytes: u64) -> Self {
        Budget { left: bytes, done: 0 }
    }

    /// Counts `bytes` of work done.
    pub fn take(&mut self, bytes: u64) {
        self.left = self.left.saturating_sub(bytes);
        self.done = self.done.saturating_add(bytes);
    }

    /// Nothing is left: the holder lets go before it takes more work.
    pub fn spent(&self) -> bool {
        self.left == 0
    }

    pub fn left(&self) -> u64 {
        self.left
    }

    pub fn done(&self) -> u64 {
        self.done
    }
}

/// A position inside a segment list: which segment, and how far into it.
///
/// Requests keep one so that moving the next chunk of a large transfer does
/// not walk the list from the start again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    seg: usize,
    within: u32,
    /// Bytes before this position.
    pub offset: u64,
}

impl Cursor {
    /// Advances over `n` bytes without moving data (a cancelled or skipped part).
    pub fn skip(&mut self, segs: &[Segment], mut n: u64) -> Result<(), DmaError> {
        while n > 0 {
            let seg = segs.get(self.seg).ok_or(DmaError::PastEnd(self.offset))?;
            let room = u64::from(seg.len - self.within);
            let step = room.min(n);
            self.advance(segs, step as u32);
            n -= step;
        }
        Ok(())
    }

    fn advance(&mut self, segs: &[Segment], n: u32) {
        self.within += n;
        self.offset += u64::from(n);
        if self.within == segs[self.seg].len {
            self.seg += 1;
            self.within = 0;
        }
    }
}

/// Copies `dst.len()` bytes out of guest memory, starting at the cursor, and
/// advances it. Used for IN transfers (the device reads the driver's buffer).
pub fn read_from_guest<M: GuestMemory + ?Sized>(
    mem: &M,
    segs: &[Segment],
    cur: &mut Cursor,
    dst: &mut [u8],
) -> Result<(), DmaError> {
    let mut done = 0usize;
    while done < dst.len() {
        let seg = segs.get(cur.seg).ok_or(DmaError::PastEnd(cur.offset))?;
        let n = ((seg.len - cur.within) as usize).min(dst.len() - done);
        let addr = seg.addr + u64::from(cur.within);
        copy_slices(mem, addr, n, Permissions::Read, "read", |slice, at| {
            slice.copy_to(&mut dst[done + at..done + at + slice.len()]);
        })?;
        done += n;
        cur.advance(segs, n as u32);
    }
    Ok(())
}

/// Copies `src` into guest memory at the cursor and advances it. Used for OUT
/// transfers (the device writes the driver's buffer).
pub fn write_to_guest<M: GuestMemory + ?Sized>(
    mem: &M,
    segs: &[Segment],
    cur: &mut Cursor,
    src: &[u8],
) -> Result<(), DmaError> {
    let mut done = 0usize;
    while done < src.len() {
        let seg = segs.get(cur.seg).ok_or(DmaError::PastEnd(cur.offset))?;
        let n = ((seg.len - cur.within) as usize).min(src.len() - done);
        let addr = seg.addr + u64::from(cur.within);
        copy_slices(mem, addr, n, Permissions::Write, "write", |slice, at| {
            slice.copy_from(&src[done + at..done + at + slice.len()]);
        })?;
        done += n;
        cur.advance(segs, n as u32);
    }
    Ok(())
}

/// Checks that the `n` bytes at the cursor are guest memory the device may
/// read (`write` false) or write, as [`read_from_guest`] or
/// [`write_to_guest`] would find them, without moving data or the cursor.
/// A copy checked so, done while the memory stays the same, cannot fail.
pub fn check_span<M: GuestMemory + ?Sized>(
    mem: &M,
    segs: &[Segment],
    cur: &Cursor,
    n: usize,
    write: bool,
) -> Result<(), DmaError> {
    let (access, what) = if write {
        (Permissions::Write, "write")
    } else {
        (Permissions::Read, "read")
    };
    let mut cur = *cur;
    let mut done = 0usize;
    while done < n {
        let seg = segs.get(cur.seg).ok_or(DmaError::PastEnd(cur.offset))?;
        let k = ((seg.len - cur.within) as usize).min(n - done);
        copy_slices(mem, seg.addr + u64::from(cur.within), k, access, what, |_, _| {})?;
        done += k;
        cur.advance(segs, k as u32);
    }
    Ok(())
}

fn copy_slices<M, F>(
    mem: &M,
    addr: u64,
    len: usize,
    access: Permissions,
    what: &'static str,
    mut f: F,
) -> Result<(), DmaError>
where
    M: GuestMemory + ?Sized,
    F: FnMut(&vm_memory::VolatileSlice<'_, vm_memory::bitmap::BS<'_, M::Bitmap>>, usize),
{
    let fault = |e: Option<GuestMemoryError>| match e {
        Some(GuestMemoryError::IommuError(IommuError::CannotResolve { reason, .. })) => DmaError::Iommu {
            what,
            iova: addr,
            len,
            reason,
        },
        _ => DmaError::OutsideMemory { what, addr, len },
    };
    let iter = mem
        .get_slices(GuestAddress(addr), len, access)
        .map_err(|e| fault(Some(e)))?;
    let mut at = 0usize;
    for slice in iter {
        let slice = slice.map_err(|e| fault(Some(e)))?;
        f(&slice, at);
        at += slice.len();
    }
    if at != len {
        return Err(fault(None));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryMmap};

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000), (GuestAddress(0x10000), 0x10000)]).unwrap()
    }

    #[test]
    fn scattered_round_trip_across_regions() {
        let m = mem();
        // The second segment spans the boundary between the two regions.
        let segs = [
            Segment { addr: 0x100, len: 3 },
            Segment {
                addr: 0xfff0,
                len: 0x20,
            },
            Segment {
                addr: 0x5000,
                len: 0x1000,
            },
        ];
        let data: Vec<u8> = (0..(3 + 0x20 + 0x1000)).map(|i| (i * 7) as u8).collect();
        let mut w = Cursor::default();
        write_to_guest(&m, &segs, &mut w, &data[..10]).unwrap();
        write_to_guest(&m, &segs, &mut w, &data[10..]).unwrap();
        assert_eq!(w.offset, data.len() as u64);
        let mut b = [0u8; 3];
        m.read_slice(&mut b, GuestAddress(0x100)).unwrap();
        assert_eq!(b, data[..3]);

        let mut back = vec![0u8; data.len()];
        let mut r = Cursor::default();
        read_from_guest(&m, &segs, &mut r, &mut back[..1]).unwrap();
        read_from_guest(&m, &segs, &mut r, &mut back[1..]).unwrap();
        assert_eq!(back, data);
        assert_eq!(
            read_from_guest(&m, &segs, &mut r, &mut [0u8; 1]),
            Err(DmaError::PastEnd(data.len() as u64))
        );
    }

    #[test]
    fn outside_memory_is_a_fault() {
        let m = mem();
        let segs = [Segment {
            addr: 0x1fff0,
            len: 0x20,
        }];
        let mut c = Cursor::default();
        assert!(matches!(
            write_to_guest(&m, &segs, &mut c, &[0u8; 0x20]),
            Err(DmaError::OutsideMemory { .. })
        ));
    }

    #[test]
    fn skip_moves_cursor() {
        let segs = [Segment { addr: 0, len: 4 }, Segment { addr: 100, len: 4 }];
        let mut c = Cursor::default();
        c.skip(&segs, 5).unwrap();
        let m = mem();
        m.write_slice(&[9, 8, 7], GuestAddress(101)).unwrap();
        let mut b = [0u8; 3];
        read_from_guest(&m, &segs, &mut c, &mut b).unwrap();
        assert_eq!(b, [9, 8, 7]);
    }
}
