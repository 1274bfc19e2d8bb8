// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The harness as a front end behind a vIOMMU: the guest's IOMMU mappings
//! (a model, as the guest's DMA API would make them), IOTLB updates and
//! invalidations on the main channel, and misses answered from the
//! back-end channel the way QEMU answers them.
//!
//! The frames are encoded here, independently of the daemon's own code, so
//! a test of the daemon's protocol cannot agree with it by construction.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use crate::error::{Error, Result};

/// `struct vhost_iotlb_msg` permissions.
pub const PERM_RO: u8 = 1;
pub const PERM_WO: u8 = 2;
pub const PERM_RW: u8 = 3;
const MISS: u8 = 1;
const UPDATE: u8 = 2;
const INVALIDATE: u8 = 3;
/// VHOST_USER_IOTLB_MSG (front end) and VHOST_USER_BACKEND_IOTLB_MSG.
const FRONTEND_IOTLB_MSG: u32 = 22;
const BACKEND_IOTLB_MSG: u32 = 1;
const VERSION: u32 = 0x1;
const REPLY: u32 = 0x4;
const NEED_REPLY: u32 = 0x8;
const PAGE: u64 = 4096;

/// Where the harness puts the rings' IOVAs: far from their guest-physical
/// addresses, so a device that used a ring address untranslated misses.
pub const RING_IOVA_OFFSET: u64 = 0x7000_0000_0000;

/// One mapping the guest made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub iova: u64,
    pub size: u64,
    pub gpa: u64,
    pub perm: u8,
}

/// A miss the device asked, and whether it was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Miss {
    pub iova: u64,
    pub perm: u8,
    pub granted: bool,
}

/// The front end's side of the IOMMU.
#[derive(Debug)]
pub struct IommuFrontend {
    main: UnixStream,
    channel: UnixStream,
    pending: Vec<u8>,
    /// Guest-physical to the harness's own mapping: (gpa, size, host address).
    host: Vec<(u64, u64, u64)>,
    maps: Vec<Mapping>,
    /// Every miss the device asked, in order.
    pub misses: Vec<Miss>,
    /// Whether misses are answered (false: the device's timeout is tested).
    pub answer_misses: bool,
}

fn frame(request: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + payload.len());
    v.extend_from_slice(&request.to_le_bytes());
    v.extend_from_slice(&(VERSION | flags).to_le_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn iotlb_payload(iova: u64, size: u64, uaddr: u64, perm: u8, kind: u8) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(&iova.to_le_bytes());
    b[8..16].copy_from_slice(&size.to_le_bytes());
    b[16..24].copy_from_slice(&uaddr.to_le_bytes());
    b[24] = perm;
    b[25] = kind;
    b
}

impl IommuFrontend {
    pub(crate) fn new(main: UnixStream, channel: UnixStream, host: Vec<(u64, u64, u64)>) -> Result<Self> {
        channel
            .set_nonblocking(true)
            .map_err(|e| Error::io("back-end channel", e))?;
        Ok(IommuFrontend {
            main,
            channel,
            pending: Vec::new(),
            host,
            maps: Vec::new(),
            misses: Vec::new(),
            answer_misses: true,
        })
    }

    fn host_addr(&self, gpa: u64) -> Option<u64> {
        self.host
            .iter()
            .find(|&&(g, s, _)| gpa >= g && gpa - g < s)
            .map(|&(g, _, h)| h + (gpa - g))
    }

    /// The guest maps `[iova, iova + size)` to `gpa` with `perm` (no message:
    /// the device learns of it by a miss, as with QEMU). A newer mapping
    /// hides an older one where they overlap.
    pub fn map(&mut self, iova: u64, gpa: u64, size: u64, perm: u8) {
        self.maps.push(Mapping {
            iova,
            size,
            gpa,
            perm,
        });
    }

    /// The guest unmaps `[iova, iova + size)`: the mappings inside it are
    /// gone from the model, and the device gets an invalidation, as QEMU's
    /// unmap notifier sends. Returns the device's ack.
    pub fn unmap(&mut self, iova: u64, size: u64) -> Result<u64> {
        self.maps
            .retain(|m| m.iova < iova || m.iova + m.size > iova + size);
        self.invalidate(iova, size)
    }

    /// The mapping the model has for `iova`, newest first.
    pub fn lookup(&self, iova: u64) -> Option<Mapping> {
        self.maps
            .iter()
            .rev()
            .find(|m| iova >= m.iova && iova - m.iova < m.size)
            .copied()
    }

    /// Sends an UPDATE as given and returns the device's ack (0: taken).
    pub fn update_raw(&mut self, iova: u64, size: u64, uaddr: u64, perm: u8) -> Result<u64> {
        self.send(iotlb_payload(iova, size, uaddr, perm, UPDATE))
    }

    /// Sends an UPDATE for `[iova, iova + size)` to `gpa` with `perm`.
    pub fn update(&mut self, iova: u64, gpa: u64, size: u64, perm: u8) -> Result<u64> {
        let uaddr = self
            .host_addr(gpa)
            .ok_or_else(|| Error::InvalidArgument(format!("gpa {gpa:#x} is not guest memory")))?;
        self.update_raw(iova, size, uaddr, perm)
    }

    /// Sends an INVALIDATE; returns the device's ack.
    pub fn invalidate(&mut self, iova: u64, size: u64) -> Result<u64> {
        self.send(iotlb_payload(iova, size, 0, 0, INVALIDATE))
    }

    fn send(&mut self, payload: [u8; 32]) -> Result<u64> {
        self.main
            .write_all(&frame(FRONTEND_IOTLB_MSG, NEED_REPLY, &payload))
            .map_err(|e| Error::io("IOTLB_MSG", e))?;
        let mut reply = [0u8; 20];
        self.main
            .read_exact(&mut reply)
            .map_err(|e| Error::io("IOTLB_MSG ack", e))?;
        let request = u32::from_le_bytes(reply[0..4].try_into().expect("4 bytes"));
        let flags = u32::from_le_bytes(reply[4..8].try_into().expect("4 bytes"));
        if request != FRONTEND_IOTLB_MSG || flags & REPLY == 0 {
            return Err(Error::InvalidArgument(format!(
                "IOTLB_MSG answered with request {request} flags {flags:#x}"
            )));
        }
        Ok(u64::from_le_bytes(reply[12..20].try_into().expect("8 bytes")))
    }

    /// Answers every miss the device has asked so far, as QEMU does: an
    /// UPDATE of the page (offering RW) and a 0 ack when the mapping allows
    /// the access, a 1 ack and nothing else when it does not.
    pub fn serve_misses(&mut self) -> Result<usize> {
        let mut buf = [0u8; 4096];
        loop {
            match self.channel.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(Error::io("back-end channel", e)),
            }
        }
        let mut served = 0;
        while self.pending.len() >= 12 {
            let size = u32::from_le_bytes(self.pending[8..12].try_into().expect("4 bytes")) as usize;
            if self.pending.len() < 12 + size {
                break;
            }
            let msg: Vec<u8> = self.pending.drain(..12 + size).collect();
            let request = u32::from_le_bytes(msg[0..4].try_into().expect("4 bytes"));
            let flags = u32::from_le_bytes(msg[4..8].try_into().expect("4 bytes"));
            if request != BACKEND_IOTLB_MSG || size < 32 || msg[12 + 25] != MISS {
                return Err(Error::InvalidArgument(format!(
                    "the device sent request {request} ({size} bytes) on the back-end channel"
                )));
            }
            let iova = u64::from_le_bytes(msg[12..20].try_into().expect("8 bytes"));
            let perm = msg[12 + 24];
            if !self.answer_misses {
                self.misses.push(Miss {
                    iova,
                    perm,
                    granted: false,
                });
                continue;
            }
            let page = iova & !(PAGE - 1);
            let found = self.lookup(iova);
            let granted = found.filter(|m| m.perm & perm == perm);
            if let Some(m) = granted {
                let start = page.max(m.iova);
                let end = (page + PAGE).min(m.iova + m.size);
                let gpa = m.gpa + (start - m.iova);
                let ack = self.update(start, gpa, end - start, PERM_RW)?;
                if ack != 0 {
                    return Err(Error::InvalidArgument(format!(
                        "the device refused the update of {start:#x} answering its miss"
                    )));
                }
            }
            self.misses.push(Miss {
                iova,
                perm,
                granted: granted.is_some(),
            });
            if flags & NEED_REPLY != 0 {
                let status = u64::from(granted.is_none());
                self.channel
                    .set_nonblocking(false)
                    .and_then(|()| {
                        (&self.channel).write_all(&frame(BACKEND_IOTLB_MSG, REPLY, &status.to_le_bytes()))
                    })
                    .and_then(|()| self.channel.set_nonblocking(true))
                    .map_err(|e| Error::io("miss reply", e))?;
            }
            served += 1;
        }
        Ok(served)
    }
}
