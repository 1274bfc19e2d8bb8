// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The fake guest driver: connects to the daemon as a vhost-user frontend,
//! sets up memory and the three virtqueues, and speaks virtio-udc on them.
//!
//! One [`Harness`], one file per job: `connection` (vhost-user setup,
//! memory, features), `control` (controlq commands), `events` (eventq),
//! `transfers` (xferq submission and completion), `buffers` (data buffers
//! in guest memory). This file holds the state they share and the chains
//! of descriptors that commands and transfers are made of.

mod buffers;
mod connection;
mod control;
mod events;
mod iommu;
mod transfers;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;

use vhost::vhost_user::{Frontend, VhostUserProtocolFeatures};
use vhost_device_udc::wire::{VirtioUdcConfig, VirtioUdcEvent};

pub use self::buffers::{BufferSpec, DmaBuffer};
pub use self::connection::{
    HarnessOptions, VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use self::control::CmdInFlight;
pub use self::control::{ctrl_req, CtrlRespExt, EpEnable, RawCompletion};
pub use self::iommu::{IommuFrontend, Mapping, Miss, PERM_RO, PERM_RW, PERM_WO, RING_IOVA_OFFSET};
use self::transfers::XferInFlight;
pub use self::transfers::{seg, xfer_bytes, xfer_req, Completion, XferHandle};
use crate::error::{Error, Result};
use crate::memory::{Allocator, GuestMemory};
use crate::queue::{ChainPart, DriverQueue, RawRingDesc};

/// Byte the harness pre-fills device-writable buffers with, so a test can
/// tell what the device did not write.
pub const SENTINEL: u8 = 0xff;

/// A descriptor of a hand-made chain (malformed-request tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawDesc {
    /// Device-readable, holding these bytes (allocated by the harness).
    Readable(Vec<u8>),
    /// Device-writable, this many bytes (allocated, pre-filled with
    /// [`SENTINEL`]).
    Writable(u32),
    /// A descriptor at a caller-chosen address, neither allocated nor freed
    /// by the harness (e.g. in a hole, or past the end of memory).
    At { gpa: u64, len: u32, writable: bool },
}

/// A chain with every descriptor field chosen by the test (hostile-guest
/// tests: loops, links past the table, indirect tables of any length or
/// inside other tables, eventq buffers of any size or direction). The test
/// allocates and fills the buffers and tables' memory itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawChain {
    /// The descriptors to put in the ring, the first one the head.
    pub ring: Vec<RawRingDesc>,
    /// Indirect tables written before the head is published, as
    /// `(gpa, entries)`; a ring descriptor names one with
    /// [`RawRingDesc::indirect`].
    pub tables: Vec<(u64, Vec<RawRingDesc>)>,
    /// Where the harness reads the 8-byte transfer status at completion
    /// (none: the completion's status and actual read as 0xffffffff).
    pub status_at: Option<u64>,
}

impl RawChain {
    /// Device-writable bytes the chain names, in the ring and in its
    /// tables: the most a device may report as used length.
    fn writable_bytes(&self) -> u64 {
        self.ring
            .iter()
            .chain(self.tables.iter().flat_map(|(_, t)| t.iter()))
            .filter(|d| d.flags & RawRingDesc::WRITE != 0)
            .map(|d| u64::from(d.len))
            .sum()
    }

    /// Writes the tables into guest memory.
    fn write_tables(&self, mem: &GuestMemory) -> Result<()> {
        for (gpa, entries) in &self.tables {
            crate::queue::write_raw_indirect_table(mem.mmap(), *gpa, entries)?;
        }
        Ok(())
    }
}

/// The fake guest driver, connected to a vhost-device-udc daemon.
///
/// Every wait has a timeout. The three [`DriverQueue`]s are reachable for
/// low-level tests, but consuming their used rings directly bypasses the
/// harness's bookkeeping.
pub struct Harness {
    socket_path: PathBuf,
    frontend: Option<Frontend>,
    opts: HarnessOptions,
    mem: GuestMemory,
    alloc: Allocator,
    device_features: u64,
    acked_features: u64,
    protocol_features: VhostUserProtocolFeatures,
    config: VirtioUdcConfig,
    controlq: DriverQueue,
    eventq: DriverQueue,
    xferq: DriverQueue,
    cmds: HashMap<u16, CmdInFlight>,
    event_bufs: HashMap<u16, u64>,
    /// Eventq heads posted with [`Harness::post_raw_event_chain`], and what
    /// came back for them as `(head, used_len)`.
    raw_event_heads: HashSet<u16>,
    raw_event_returns: VecDeque<(u16, u32)>,
    /// Whether a reaped event's buffer is posted again (default true).
    repost_events: bool,
    events: VecDeque<VirtioUdcEvent>,
    xfers: HashMap<u16, XferInFlight>,
    done: VecDeque<Completion>,
    next_xfer_id: u64,
    next_seq: u64,
    next_tag: u64,
    auto_kick: bool,
    /// The vIOMMU front end ([`HarnessOptions::iommu`]).
    iommu: Option<self::iommu::IommuFrontend>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("socket_path", &self.socket_path)
            .field("connected", &self.frontend.is_some())
            .field("mem", &self.mem)
            .field("device_features", &format_args!("{:#x}", self.device_features))
            .field("acked_features", &format_args!("{:#x}", self.acked_features))
            .field("protocol_features", &self.protocol_features)
            .field("config", &self.config)
            .field("controlq", &self.controlq)
            .field("eventq", &self.eventq)
            .field("xferq", &self.xferq)
            .field("pending_events", &self.events.len())
            .field("xfers_in_flight", &self.xfers.len())
            .field("completions_unclaimed", &self.done.len())
            .finish()
    }
}

impl Harness {
    /// Allocates and fills the harness-owned parts of a raw chain. Returns
    /// the chain, the allocations and the writable buffers it allocated.
    #[allow(clippy::type_complexity)]
    fn build_chain(&mut self, parts: &[RawDesc]) -> Result<(Vec<ChainPart>, Vec<u64>, Vec<(u64, u32)>)> {
        let mut chain = Vec::with_capacity(parts.len());
        let mut allocs = Vec::new();
        let mut writable = Vec::new();
        let res = (|| -> Result<()> {
            for p in parts {
                match p {
                    RawDesc::Readable(bytes) => {
                        let gpa = self.alloc.alloc(bytes.len() as u64, 16)?;
                        allocs.push(gpa);
                        self.mem.write(gpa, bytes)?;
                        let len = u32::try_from(bytes.len())
                            .map_err(|_| Error::InvalidArgument("descriptor above 4 GiB".into()))?;
                        chain.push((gpa, len, false));
                    }
                    RawDesc::Writable(len) => {
                        let gpa = self.alloc.alloc(u64::from(*len), 16)?;
                        allocs.push(gpa);
                        self.mem.fill(gpa, *len as usize, SENTINEL)?;
                        chain.push((gpa, *len, true));
                        writable.push((gpa, *len));
                    }
                    RawDesc::At { gpa, len, writable } => chain.push((*gpa, *len, *writable)),
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            for a in allocs {
                let _ = self.alloc.free(a);
            }
            return Err(e);
        }
        Ok((chain, allocs, writable))
    }

    fn free_all(&mut self, allocs: &[u64]) {
        for &a in allocs {
            if let Err(e) = self.alloc.free(a) {
                log::warn!("udc-harness: {e}");
            }
        }
    }

    // ----- controlq --------------------------------------------------------
}
