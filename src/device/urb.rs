// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The host side's transfer types: URBs, their results and statuses, and a
//! request held for a zero-copy handoff.

use super::*;

/// How a host-side transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UrbStatus {
    Ok,
    /// The endpoint is halted, or the device refused a control request.
    Stall,
    /// Babble: the device sent more than the host buffer had room for.
    Overflow,
    /// The device went away: bus reset, disconnect, pull-up off, endpoint
    /// disabled or never enabled.
    Shutdown,
    /// The host cancelled it (or gave up waiting).
    Cancelled,
    /// The device did not answer in time.
    Timeout,
    /// Guest memory could not be accessed for this transfer.
    DmaFault,
    /// A transfer error on the bus (injected: CRC, timeout, bit stuffing).
    Proto,
}

/// A host-side transfer's result.
#[derive(Debug)]
pub struct UrbResult {
    /// The [`Urb::id`] it is the result of.
    pub id: u64,
    pub status: UrbStatus,
    /// IN: the bytes received. OUT: the data sent, handed back so the
    /// caller can reuse the allocation.
    pub data: Vec<u8>,
    /// Bytes transferred (IN: `data.len()`; OUT: bytes the device accepted).
    pub actual: usize,
    pub submitted: Instant,
    pub completed: Instant,
}

/// Direction-specific state of a host transfer.
#[derive(Debug)]
pub enum UrbKind {
    /// The host reads up to `len` bytes from an IN endpoint.
    In { len: usize },
    /// The host writes `data` to an OUT endpoint, ending with a zero-length
    /// packet when `zlp` is set and the length is a multiple of the packet size.
    Out { data: Vec<u8>, zlp: bool },
}

/// A host-side transfer on a non-control endpoint (a URB, in Linux host terms).
#[derive(Debug)]
pub struct Urb {
    pub id: u64,
    pub kind: UrbKind,
    pub done: Sender<UrbResult>,
    pub(super) submitted: Instant,
    pub(super) buf: Vec<u8>,
    /// Bytes moved so far.
    pub(super) moved: usize,
    on_finish: Option<FinishHook>,
}

/// What the host side wants to see of a transfer's result before it is
/// sent on (the bus capture), whichever of the device's paths ends it.
pub struct FinishHook(Box<dyn FnOnce(&UrbResult) + Send>);

impl std::fmt::Debug for FinishHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FinishHook")
    }
}

impl Urb {
    pub fn new(id: u64, kind: UrbKind, done: Sender<UrbResult>) -> Self {
        Urb {
            id,
            kind,
            done,
            submitted: Instant::now(),
            buf: Vec::new(),
            moved: 0,
            on_finish: None,
        }
    }

    /// Calls `f` with the result when the transfer ends, before the result
    /// is sent (under the device lock: `f` must be short).
    pub fn on_finish(mut self, f: impl FnOnce(&UrbResult) + Send + 'static) -> Self {
        self.on_finish = Some(FinishHook(Box::new(f)));
        self
    }

    /// Gives an IN transfer a buffer to fill (its allocation is reused; its
    /// contents are overwritten), so a stream does not allocate and fault in
    /// fresh pages for every transfer.
    pub fn with_buffer(mut self, buf: Vec<u8>) -> Self {
        self.buf = buf;
        self
    }

    /// Sizes an IN transfer's buffer to its length before data moves into
    /// it: once per transfer (a recycled buffer is already this long).
    pub(super) fn size_in_buffer(&mut self) {
        if let UrbKind::In { len } = self.kind {
            if self.buf.len() < len {
                self.buf.resize(len, 0);
            }
        }
    }

    pub(super) fn finish(self, status: UrbStatus) {
        let actual = self.moved;
        let data = match self.kind {
            UrbKind::In { .. } => {
                let mut d = self.buf;
                d.truncate(actual);
                d
            }
            UrbKind::Out { data, .. } => data,
        };
        let result = UrbResult {
            id: self.id,
            status,
            data,
            actual,
            submitted: self.submitted,
            completed: Instant::now(),
        };
        if let Some(FinishHook(f)) = self.on_finish {
            f(&result);
        }
        // The receiver may have given up; that is its business.
        let _ = self.done.send(result);
    }
}

/// Result of a host control transfer.
pub type ControlResult = Result<Vec<u8>, UrbStatus>;

/// A guest request the host holds: its buffer, for the host to read (IN) or
/// fill (OUT) in place, until it releases it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeldRequest {
    pub handle: u64,
    pub ep: u8,
    pub tag: u64,
    pub length: u32,
    pub segments: Vec<crate::request::Segment>,
}
