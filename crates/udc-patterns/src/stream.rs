// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Sequential helpers keeping a running stream offset.

use crate::pattern::Pattern;
use crate::verify::{Mismatch, Verifier};

/// Produces consecutive chunks of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Source {
    /// The stream generated.
    pub pattern: Pattern,
    /// Stream offset of the next byte to produce.
    pub offset: u64,
}

impl Source {
    /// A source producing `pattern` from stream offset `offset`.
    pub fn new(pattern: Pattern, offset: u64) -> Self {
        Source { pattern, offset }
    }

    /// Fill `buf` with the next `buf.len()` stream bytes and advance.
    /// Returns the stream offset `buf` starts at.
    pub fn next_chunk(&mut self, buf: &mut [u8]) -> u64 {
        let start = self.offset;
        self.pattern.fill(start, buf);
        self.offset = start.wrapping_add(buf.len() as u64);
        start
    }

    /// Reserve the next `len` bytes without generating them (for a transfer
    /// filled later or elsewhere, e.g. with [`Pattern::fill`]). Returns the
    /// stream offset of the reserved range.
    pub fn skip(&mut self, len: u64) -> u64 {
        let start = self.offset;
        self.offset = start.wrapping_add(len);
        start
    }
}

/// Consumes consecutive chunks of a stream, optionally checking them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sink {
    /// The stream expected.
    pub pattern: Pattern,
    /// Stream offset of the next byte expected.
    pub offset: u64,
    /// Whether [`accept`](Sink::accept) checks the data (otherwise it only
    /// counts it).
    pub verify: bool,
}

impl Sink {
    /// A sink expecting `pattern` from stream offset `offset`.
    pub fn new(pattern: Pattern, offset: u64, verify: bool) -> Self {
        Sink {
            pattern,
            offset,
            verify,
        }
    }

    /// Take the next `buf.len()` stream bytes, checking them if `verify` is
    /// set. The offset advances past `buf` whether or not it matched, so a
    /// bad chunk does not shift the expectations for the following ones.
    pub fn accept(&mut self, buf: &[u8]) -> Result<(), Mismatch> {
        let start = self.offset;
        self.offset = start.wrapping_add(buf.len() as u64);
        if self.verify {
            Verifier::new(self.pattern).verify(start, buf)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_and_sink_agree() {
        let p = Pattern::Prbs { seed: 5 };
        let mut src = Source::new(p, 3);
        let mut sink = Sink::new(p, 3, true);
        for len in [1usize, 7, 8, 9, 100, 4096, 5000] {
            let mut buf = vec![0u8; len];
            src.next_chunk(&mut buf);
            sink.accept(&buf).unwrap();
        }
        assert_eq!(src.offset, sink.offset);
    }

    #[test]
    fn sink_advances_on_mismatch() {
        let p = Pattern::Counter;
        let mut sink = Sink::new(p, 0, true);
        let m = sink.accept(&[0xff; 16]).unwrap_err();
        assert_eq!(m.offset, 0);
        assert_eq!(sink.offset, 16);
        let mut buf = [0u8; 16];
        p.fill(16, &mut buf);
        sink.accept(&buf).unwrap();
    }

    #[test]
    fn sink_without_verify_only_counts() {
        let mut sink = Sink::new(Pattern::Counter, 10, false);
        sink.accept(&[0xff; 16]).unwrap();
        assert_eq!(sink.offset, 26);
    }

    #[test]
    fn source_skip() {
        let mut src = Source::new(Pattern::Counter, 0);
        assert_eq!(src.skip(100), 0);
        let mut buf = [0u8; 4];
        assert_eq!(src.next_chunk(&mut buf), 100);
        assert_eq!(buf, [25, 0, 0, 0]);
    }
}
