// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! What the transport takes from the driver's queues, bounded: descriptor
//! chains split into their readable bytes and writable regions (however
//! long or broken the chain), statuses written back across those regions,
//! and the heads the device holds, one bit per entry of the largest queue.
//! No lock, no ring state: crate::vhu_udc calls these with what it took.

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::request::Rejected;
use crate::wire::*;

/// Largest queue the device accepts.
pub const QUEUE_SIZE: usize = 1024;

/// A descriptor chain split into its two parts.
pub(crate) struct ChainParts {
    pub(crate) readable: Vec<u8>,
    pub(crate) writable: Vec<(GuestAddress, usize)>,
    /// Why the readable part could not be read, if it could not. The
    /// writable part is still there to report it in.
    pub(crate) error: Option<Rejected>,
    /// Descriptors walked, for the work a batch may do per lock hold.
    pub(crate) walked: usize,
}

impl ChainParts {
    pub(crate) fn writable_len(&self) -> usize {
        self.writable.iter().map(|&(_, l)| l).sum()
    }
}

/// Reads a chain's driver-readable bytes (at most `max_readable`) and notes
/// its device-writable regions (those that cover the first `max_writable`
/// bytes). The rest is ignored, so a driver cannot make the device keep
/// more than that for a request however long its chain.
///
/// A chain that does not end is refused (INVALID). virtio-queue walks at
/// most a table's worth of descriptors and stops without a word at a loop,
/// a `next` past the table, an indirect table inside another or one whose
/// length is not a multiple of 16; what it yielded up to there would
/// otherwise pass for a whole request (a looping status descriptor after a
/// good header made a request the device served). So is a chain longer
/// than `max_descs` descriptors, which is walked no further.
pub(crate) fn split_chain<M>(
    mem: &M::Target,
    chain: DescriptorChain<M>,
    max_readable: usize,
    max_writable: usize,
    max_descs: usize,
) -> ChainParts
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    let mut parts = ChainParts {
        readable: Vec::new(),
        writable: Vec::new(),
        error: None,
        walked: 0,
    };
    // The walk ended where the chain does only if the last descriptor it
    // yielded has no successor; an empty walk never found the chain at all.
    let mut ended = false;
    for desc in chain.take(max_descs) {
        parts.walked += 1;
        ended = !desc.has_next();
        let len = desc.len() as usize;
        if desc.is_write_only() {
            let room = max_writable.saturating_sub(parts.writable_len());
            if room > 0 && len > 0 {
                parts.writable.push((desc.addr(), len.min(room)));
            } else if parts.writable.is_empty() {
                // Keep a zero-length region so that a later readable
                // descriptor is still seen as out of order.
                parts.writable.push((desc.addr(), 0));
            }
            continue;
        }
        if !parts.writable.is_empty() {
            parts.error.get_or_insert(Rejected::new(
                Status::Invalid,
                "readable descriptor after a writable one",
            ));
            continue;
        }
        let take = len.min(max_readable - parts.readable.len());
        if take == 0 || parts.error.is_some() {
            continue;
        }
        let at = parts.readable.len();
        parts.readable.resize(at + take, 0);
        if mem.read_slice(&mut parts.readable[at..], desc.addr()).is_err() {
            parts.error = Some(Rejected::new(
                Status::DmaFault,
                format!(
                    "descriptor {:#x}+{len:#x} is not inside guest memory",
                    desc.addr().0
                ),
            ));
        }
    }
    if !ended {
        let why = if parts.walked == max_descs {
            format!("the descriptor chain is longer than {max_descs} descriptors")
        } else {
            "the descriptor chain does not end (a loop, a next index past its table, \
             or an indirect table nested or not a multiple of 16 bytes)"
                .to_string()
        };
        parts.error.get_or_insert(Rejected::new(Status::Invalid, why));
    }
    parts
}

/// Writes `bytes` across writable regions; returns how many fit.
pub(crate) fn write_regions<M: GuestMemory + ?Sized>(
    mem: &M,
    regions: &[(GuestAddress, usize)],
    bytes: &[u8],
) -> usize {
    let mut done = 0;
    for &(addr, len) in regions {
        if done == bytes.len() {
            break;
        }
        let n = len.min(bytes.len() - done);
        if mem.write_slice(&bytes[done..done + n], addr).is_err() {
            crate::guest_warn!("status buffer {:#x}+{n:#x} is outside guest memory", addr.0);
            break;
        }
        done += n;
    }
    done
}

/// Why a descriptor head cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadRefused {
    #[error("is already in flight (posted again before the device returned it)")]
    InFlight,
    #[error("is outside the queue")]
    OutOfRange,
}

/// The descriptor heads of one queue that the device holds: one bit per
/// entry of the largest queue. With it, what a guest can make the device
/// keep is bounded by the queue size, whatever it writes into the avail
/// ring.
pub(crate) struct InFlight {
    held: Vec<bool>,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            held: vec![false; QUEUE_SIZE],
        }
    }
}

impl InFlight {
    /// Takes `head` of a queue of `size` entries.
    pub(crate) fn claim(&mut self, head: u16, size: u16) -> Result<(), HeadRefused> {
        let i = usize::from(head);
        if head >= size || i >= self.held.len() {
            return Err(HeadRefused::OutOfRange);
        }
        if self.held[i] {
            return Err(HeadRefused::InFlight);
        }
        self.held[i] = true;
        Ok(())
    }

    /// `head` went back to the driver.
    pub(crate) fn release(&mut self, head: u16) {
        if let Some(h) = self.held.get_mut(usize::from(head)) {
            *h = false;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.held.fill(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request;
    use proptest::prelude::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::ByteValued;
    use vm_memory::GuestMemoryBackend;

    type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

    const HOLE: u64 = 0x10_0000;

    /// Splits `descs` as a chain of `q`, with room for 64 readable bytes
    /// and a status, walking as far as it goes.
    fn split_descs(
        m: &GuestMemoryMmap,
        q: &MockSplitQueue<GuestMemoryMmap>,
        descs: &[RawDescriptor],
    ) -> ChainParts {
        split_chain(
            m,
            q.build_desc_chain(descs).unwrap(),
            64,
            XFER_STATUS_SIZE,
            usize::MAX,
        )
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), HOLE as usize),
            (GuestAddress(0x20_0000), 0x10_0000),
        ])
        .unwrap()
    }

    /// A transfer request with random fields and segments, some of them in
    /// the hole or past the end of memory.
    fn request() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<u8>(),
            0u32..0x4000,
            proptest::collection::vec(
                (prop_oneof![0x1000u64..0x30_0000, any::<u64>()], 0u32..0x2000),
                0..12,
            ),
            any::<bool>(),
        )
            .prop_map(|(ep, length, segs, lie)| {
                let n = if lie {
                    segs.len() as u32 + 3
                } else {
                    segs.len() as u32
                };
                let mut v = VirtioUdcXferReq {
                    opcode: VIRTIO_UDC_XFER_OP_TRANSFER.into(),
                    ep,
                    flags: 0,
                    length: length.into(),
                    num_segs: n.into(),
                    reserved: 0.into(),
                    tag: 1.into(),
                }
                .as_slice()
                .to_vec();
                for (a, l) in segs {
                    v.extend_from_slice(
                        VirtioUdcSeg {
                            addr: a.into(),
                            len: l.into(),
                            reserved: 0.into(),
                        }
                        .as_slice(),
                    );
                }
                v
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever the chain looks like (the request split anywhere over
        /// several descriptors, a descriptor outside memory, any room for the
        /// status), splitting and parsing never panic and never accept a
        /// segment outside guest memory.
        #[test]
        fn random_chains_are_safe(
            req in request(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            stray in proptest::option::of(prop_oneof![HOLE..0x20_0000u64, 0x30_0000u64..u64::MAX / 2]),
            status_room in 0u32..16,
        ) {
            let m = mem();
            let q = MockSplitQueue::new(&m, 16);
            // Place the request bytes after the rings and cut them up.
            let base = 0x8000u64;
            m.write_slice(&req, GuestAddress(base)).unwrap();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(req.len() + 1)).collect();
            points.sort_unstable();
            points.dedup();
            let mut descs = Vec::new();
            let mut prev = 0;
            for p in points.into_iter().chain(std::iter::once(req.len())) {
                if p > prev {
                    descs.push(RawDescriptor::from(SplitDescriptor::new(base + prev as u64, (p - prev) as u32, VRING_DESC_F_NEXT as u16, 0)));
                }
                prev = p;
            }
            if let Some(a) = stray {
                descs.insert(descs.len().min(1), RawDescriptor::from(SplitDescriptor::new(a, 24, VRING_DESC_F_NEXT as u16, 0)));
            }
            descs.push(RawDescriptor::from(SplitDescriptor::new(0x9_0000, status_room, VRING_DESC_F_WRITE as u16, 0)));
            let chain = q.build_desc_chain(&descs).unwrap();
            let parts = split_chain(&m, chain, request::max_xfer_readable(16384), XFER_STATUS_SIZE, usize::MAX);
            prop_assert_eq!(parts.writable_len(), (status_room as usize).min(XFER_STATUS_SIZE));
            if stray.is_some() {
                prop_assert!(parts.error.is_some(), "a descriptor outside memory must be refused");
            }
            if parts.error.is_none() {
                prop_assert_eq!(&parts.readable, &req);
                if let Ok(x) = request::parse_xfer(&parts.readable, 16384, |_| true, Some(&m)) {
                    for s in &x.segments {
                        prop_assert!(GuestMemoryBackend::check_range(&m, GuestAddress(s.addr), s.len as usize));
                    }
                }
            }
        }
    }

    #[test]
    fn readable_part_is_capped() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(
                0x8000,
                0x8_0000,
                VRING_DESC_F_NEXT as u16,
                0,
            )),
            RawDescriptor::from(SplitDescriptor::new(0x9_0000, 8, VRING_DESC_F_WRITE as u16, 0)),
        ];
        let parts = split_descs(&m, &q, &descs);
        assert_eq!(parts.readable.len(), 64);
        assert!(parts.error.is_none());
    }

    /// However many writable descriptors a chain has, the device keeps only
    /// those its status needs; a readable one after them is still refused.
    #[test]
    fn writable_part_is_capped() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 64);
        let mut descs = vec![RawDescriptor::from(SplitDescriptor::new(
            0x8000,
            24,
            VRING_DESC_F_NEXT as u16,
            0,
        ))];
        for i in 0..40u64 {
            let flags = (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16;
            descs.push(RawDescriptor::from(SplitDescriptor::new(
                0x9_0000 + i * 16,
                3,
                flags,
                0,
            )));
        }
        descs.push(RawDescriptor::from(SplitDescriptor::new(0xa_0000, 16, 0, 0)));
        let parts = split_descs(&m, &q, &descs);
        assert_eq!(parts.writable_len(), XFER_STATUS_SIZE);
        assert_eq!(parts.writable.len(), 3, "3 + 3 + 2 bytes");
        assert!(
            parts.error.is_some(),
            "the readable descriptor at the end is out of order"
        );
    }

    /// A chain whose walk stops before a descriptor without NEXT (a loop,
    /// a link past the table) is refused even though a header and room for
    /// the status were seen; the same chain ending properly is accepted.
    #[test]
    fn a_chain_that_does_not_end_is_refused() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        let hdr = RawDescriptor::from(SplitDescriptor::new(0x8000, 24, VRING_DESC_F_NEXT as u16, 0));
        let status = RawDescriptor::from(SplitDescriptor::new(0x9_0000, 8, VRING_DESC_F_WRITE as u16, 0));
        let whole = split_descs(&m, &q, &[hdr, status]);
        assert!(whole.error.is_none());
        let link = (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16;
        for next in [1u16, 0, 16, 999] {
            let chain = q.build_desc_chain(&[hdr, status]).unwrap();
            // The chain is read as it is walked: relink the status now.
            q.desc_table()
                .store(
                    1,
                    RawDescriptor::from(SplitDescriptor::new(0x9_0000, 8, link, next)),
                )
                .unwrap();
            let parts = split_chain(&m, chain, 64, XFER_STATUS_SIZE, usize::MAX);
            let err = parts
                .error
                .as_ref()
                .unwrap_or_else(|| panic!("status linked to {next}: accepted"));
            assert_eq!(err.status, Status::Invalid, "status linked to {next}");
            assert_eq!(
                parts.writable_len(),
                XFER_STATUS_SIZE,
                "the status can still be written"
            );
        }
    }

    #[test]
    fn a_head_is_in_flight_once() {
        let mut heads = InFlight::default();
        assert_eq!(heads.claim(3, 16), Ok(()));
        assert_eq!(heads.claim(3, 16), Err(HeadRefused::InFlight));
        assert_eq!(heads.claim(16, 16), Err(HeadRefused::OutOfRange));
        heads.release(3);
        assert_eq!(heads.claim(3, 16), Ok(()));
        heads.clear();
        assert_eq!(heads.claim(3, 16), Ok(()));
    }
}
