// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Data buffers in guest memory: contiguous or scattered into segments
//! (with guard bytes between them), written, read back and freed.

use vhost_device_udc::wire::VirtioUdcSeg;

use super::{seg, Harness};
use crate::error::{Error, Result};
use crate::memory::{align_up, PAGE_SIZE};

/// Byte guard areas around scattered buffers are filled with.
const GUARD_BYTE: u8 = 0xa5;

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
    /// guard area (filled with `GUARD_BYTE`, 0xa5) between segments, so no two
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
    pub(super) fn len_u32(&self) -> u32 {
        self.len.min(u64::from(u32::MAX)) as u32
    }
}

impl Harness {
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
    /// `GUARD_BYTE`, 0xa5 (the device wrote nothing outside the segments).
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
}
