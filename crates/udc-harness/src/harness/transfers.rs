// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The xferq: transfer submission (whole buffers, headers and segments,
//! raw and indirect chains) and completion (collected in used-ring order,
//! claimed by handle).

use std::time::{Duration, Instant};

use vhost_device_udc::wire::{self, Status, VirtioUdcSeg, VirtioUdcXferReq, XFER_STATUS_SIZE};
use vm_memory::{ByteValued, Le16, Le32, Le64};

use super::{DmaBuffer, Harness, RawChain, RawDesc, SENTINEL};
use crate::error::{Error, Result};

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

#[derive(Debug)]
pub(super) struct XferInFlight {
    handle: XferHandle,
    tag: u64,
    ep: u8,
    pub(super) allocs: Vec<u64>,
    status_buf: Option<(u64, u32)>,
}

impl Harness {
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

    /// Submits a chain written exactly as `chain` says (see [`RawChain`]):
    /// its tables first, then its ring descriptors. Tag and ep of the
    /// [`Completion`] are 0; the status is read at `chain.status_at`.
    pub fn submit_raw_chain(&mut self, chain: &RawChain) -> Result<XferHandle> {
        self.ensure_connected()?;
        chain.write_tables(&self.mem)?;
        let head = self.xferq.add_raw_chain(&chain.ring, chain.writable_bytes())?;
        let handle = XferHandle {
            id: self.next_xfer_id,
            head,
        };
        self.next_xfer_id += 1;
        self.xfers.insert(
            head,
            XferInFlight {
                handle,
                tag: 0,
                ep: 0,
                allocs: Vec::new(),
                status_buf: chain.status_at.map(|gpa| (gpa, XFER_STATUS_SIZE as u32)),
            },
        );
        if self.auto_kick {
            self.xferq.kick()?;
        }
        Ok(handle)
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
        if let Some(f) = self.iommu.as_mut() {
            f.serve_misses()?;
        }
        let used = self.xferq.poll_used()?;
        self.reap_used_xfers(used)
    }

    fn wait_xfers(&mut self, wait: Duration) -> Result<()> {
        let used = self.wait_used_on(2, wait)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::ctrl_req;

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
