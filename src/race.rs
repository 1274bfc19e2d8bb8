// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Race detectors over a request's buffer in guest memory.
//!
//! IN: [`block_hashes`] at DMA start and again at the end; blocks whose hash
//! changed were written by the guest CPU while the device owned them.
//! OUT: [`poison`] fills the buffer before the real data arrives, so a
//! reader that does not wait for the completion (or the DMABUF fence) reads
//! [`POISON`] instead of data.

use vm_memory::GuestMemory;

use crate::dma::{self, Budget, Cursor, DmaError};
use crate::request::Segment;

/// Granularity of the IN detector: a page, the unit in which CPU writes and
/// cache lines meet DMA on every platform the users care about.
pub const BLOCK: usize = 4096;

/// The OUT detector's fill.
pub use udc_patterns::POISON;

/// The longest request the detectors look at: a guest chooses the length
/// (up to 4 GiB with overlapping segments), and each pass is work the
/// guest makes the daemon do. Longer requests move without detection, with
/// a warning.
pub const MAX_LENGTH: usize = 64 << 20;

/// FNV-1a's starting state.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bit: a stable hash for digests and race-detector checksums.
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A detector's pass over the first `length` bytes of a request's buffer,
/// done a budget at a time: a guest chooses lengths up to [`MAX_LENGTH`],
/// and the device lock is held for each step, so no hold may walk a whole
/// buffer (docs/security.md).
#[derive(Debug)]
pub struct Pass {
    kind: PassKind,
    cursor: Cursor,
    length: usize,
    /// The IN detector's block hashes so far.
    hashes: Vec<u64>,
}

/// What a [`Pass`] does to each block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassKind {
    /// Fills it with [`POISON`] (the OUT detector, before any data arrives).
    Poison,
    /// Hashes it (the IN detector, at DMA start and at the end).
    Hash,
}

/// The poison fill written per step of a poison pass: a multiple of the
/// pattern's period, so the pattern stays aligned to the request's offsets.
static FILL: [u8; BLOCK * 16] = {
    let mut fill = [0u8; BLOCK * 16];
    let mut i = 0;
    while i < fill.len() {
        fill[i] = POISON[i % POISON.len()];
        i += 1;
    }
    fill
};

impl Pass {
    pub fn new(kind: PassKind, length: usize) -> Self {
        Pass {
            kind,
            cursor: Cursor::default(),
            length,
            hashes: Vec::new(),
        }
    }

    pub fn kind(&self) -> PassKind {
        self.kind
    }

    /// Goes on with the pass for about `budget` bytes (whole blocks, so at
    /// most one fill over) and takes them off the budget; true when the
    /// pass is done. An access outside guest memory ends the pass with the
    /// error.
    pub fn step<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        segs: &[Segment],
        budget: &mut Budget,
    ) -> Result<bool, DmaError> {
        let mut buf = [0u8; BLOCK];
        while !budget.spent() {
            let left = self.length - self.cursor.offset as usize;
            if left == 0 {
                return Ok(true);
            }
            let n = match self.kind {
                PassKind::Poison => {
                    let n = left.min(FILL.len());
                    dma::write_to_guest(mem, segs, &mut self.cursor, &FILL[..n])?;
                    n
                }
                PassKind::Hash => {
                    let n = left.min(BLOCK);
                    dma::read_from_guest(mem, segs, &mut self.cursor, &mut buf[..n])?;
                    self.hashes.push(block_hash(&buf[..n]));
                    n
                }
            };
            budget.take(n as u64);
        }
        Ok(self.cursor.offset as usize == self.length)
    }

    /// The block hashes of a finished [`PassKind::Hash`] pass.
    pub fn into_hashes(self) -> Vec<u64> {
        self.hashes
    }

    /// The whole pass at once (tests, and callers that bound `length`).
    fn run<M: GuestMemory + ?Sized>(mut self, mem: &M, segs: &[Segment]) -> Result<Self, DmaError> {
        self.step(mem, segs, &mut Budget::unmetered())?;
        Ok(self)
    }
}

/// A hash of each [`BLOCK`]-sized block of the first `length` bytes of the
/// request's buffer.
pub fn block_hashes<M: GuestMemory + ?Sized>(
    mem: &M,
    segs: &[Segment],
    length: usize,
) -> Result<Vec<u64>, DmaError> {
    Ok(Pass::new(PassKind::Hash, length).run(mem, segs)?.into_hashes())
}

/// FNV-1a over 8-byte words (and the tail bytes): a change of any byte
/// changes it, at several GB/s.
fn block_hash(b: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        h ^= u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    fnv1a(h, words.remainder())
}

/// Offsets of the blocks whose hashes differ.
pub fn changed_blocks(before: &[u64], after: &[u64]) -> Vec<u64> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| (i * BLOCK) as u64)
        .collect()
}

/// Fills the first `length` bytes of the request's buffer with [`POISON`].
pub fn poison<M: GuestMemory + ?Sized>(mem: &M, segs: &[Segment], length: usize) -> Result<(), DmaError> {
    Pass::new(PassKind::Poison, length).run(mem, segs).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    fn setup() -> (GuestMemoryMmap<()>, Vec<Segment>) {
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        // Two segments, the second not block-aligned.
        let segs = vec![
            Segment {
                addr: 0x1000,
                len: 0x1800,
            },
            Segment {
                addr: 0x8100,
                len: 0x2000,
            },
        ];
        (m, segs)
    }

    #[test]
    fn hashes_see_a_change_in_the_block_it_is_in() {
        let (m, segs) = setup();
        let before = block_hashes(&m, &segs, 0x3800).unwrap();
        assert_eq!(before.len(), 4);
        assert_eq!(before, block_hashes(&m, &segs, 0x3800).unwrap());
        // Offset 0x1800 of the request is the start of the second segment.
        m.write_obj(0xffu8, GuestAddress(0x8100 + 0x900)).unwrap();
        let after = block_hashes(&m, &segs, 0x3800).unwrap();
        assert_eq!(changed_blocks(&before, &after), [0x2000]);
    }

    #[test]
    fn poison_covers_the_request_and_nothing_else() {
        let (m, segs) = setup();
        poison(&m, &segs, 0x3000).unwrap();
        let mut first = vec![0u8; 0x1800];
        m.read_slice(&mut first, GuestAddress(0x1000)).unwrap();
        assert!(first.chunks(8).all(|c| c == POISON));
        // The pattern continues at request offset 0x1800 in the second segment.
        let mut second = vec![0u8; 0x1800];
        m.read_slice(&mut second, GuestAddress(0x8100)).unwrap();
        assert!(second.chunks(8).all(|c| c == POISON));
        let mut after: u8 = 1;
        m.read_slice(std::slice::from_mut(&mut after), GuestAddress(0x8100 + 0x1800))
            .unwrap();
        assert_eq!(after, 0, "poison stops at the request's length");
        assert_eq!(m.read_obj::<u8>(GuestAddress(0xfff)).unwrap(), 0);
    }

    #[test]
    fn a_pass_in_steps_does_what_a_whole_pass_does() {
        let (m, segs) = setup();
        let whole = block_hashes(&m, &segs, 0x3800).unwrap();
        let mut pass = Pass::new(PassKind::Hash, 0x3800);
        let mut steps = 0;
        loop {
            // A budget under one block still does one block: a step always
            // goes forward.
            let mut budget = Budget::new(100);
            steps += 1;
            if pass.step(&m, &segs, &mut budget).unwrap() {
                break;
            }
            assert!(budget.spent(), "a step that is not the last spends its budget");
            assert_eq!(budget.done(), BLOCK as u64, "the work done counts all of it");
        }
        assert_eq!(steps, 4, "one block a step");
        assert_eq!(pass.into_hashes(), whole);

        // A poison step writes one fill (64 KiB) at most.
        let segs = [
            Segment {
                addr: 0x10000,
                len: 0x10000,
            },
            Segment {
                addr: 0x40000,
                len: 0x10000,
            },
        ];
        let mut pass = Pass::new(PassKind::Poison, 0x20000);
        assert!(!pass.step(&m, &segs, &mut Budget::new(1)).unwrap());
        let mut b = [0u8; 8];
        m.read_slice(&mut b, GuestAddress(0x1fff8)).unwrap();
        assert_eq!(b, POISON, "the first fill");
        m.read_slice(&mut b, GuestAddress(0x40000)).unwrap();
        assert_eq!(b, [0; 8], "not the second yet");
        assert!(pass.step(&m, &segs, &mut Budget::unmetered()).unwrap());
    }

    #[test]
    fn outside_memory_is_an_error_not_a_touch() {
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        let segs = [Segment {
            addr: 0x1000,
            len: 0x2000,
        }];
        assert!(poison(&m, &segs, 0x2000).is_err());
        assert!(block_hashes(&m, &segs, 0x2000).is_err());
    }
}
