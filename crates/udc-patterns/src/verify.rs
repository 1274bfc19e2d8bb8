// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Chunked, allocation-free verification of received data.

use std::fmt;

use crate::pattern::Pattern;

/// Size of the on-stack buffer the expected data is generated into.
const CHUNK: usize = 4096;

// Here rather than beside the pattern's other methods: verification
// builds on generation, not the other way round.
impl Pattern {
    /// Check `buf` against the stream starting at `stream_offset`.
    /// Shorthand for [`Verifier::new(*self).verify(..)`](Verifier::verify).
    pub fn verify(&self, stream_offset: u64, buf: &[u8]) -> Result<(), Mismatch> {
        Verifier::new(*self).verify(stream_offset, buf)
    }
}

/// Received data differs from the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Mismatch {
    /// Stream offset of the first byte that differs.
    pub offset: u64,
    /// What the pattern has at `offset`.
    pub expected: u8,
    /// What the buffer has at `offset`.
    pub got: u8,
    /// How many bytes of the checked buffer differ (at least 1).
    pub bad_bytes: u64,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "data mismatch at stream offset {}: expected {:#04x}, got {:#04x} ({} {})",
            self.offset,
            self.expected,
            self.got,
            self.bad_bytes,
            if self.bad_bytes == 1 {
                "byte differs"
            } else {
                "bytes differ"
            }
        )
    }
}

impl std::error::Error for Mismatch {}

/// Checks buffers against a [`Pattern`] at given stream offsets.
///
/// The expected data is generated in small on-stack chunks, so checking a
/// buffer of any size allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Verifier {
    pattern: Pattern,
}

impl From<Pattern> for Verifier {
    fn from(pattern: Pattern) -> Self {
        Verifier::new(pattern)
    }
}

impl Verifier {
    /// A verifier for `pattern`.
    pub fn new(pattern: Pattern) -> Self {
        Verifier { pattern }
    }

    /// The pattern checked against.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// Check that `buf` holds the stream bytes starting at `stream_offset`.
    ///
    /// On failure, reports the first differing byte and the number of
    /// differing bytes in the whole of `buf`.
    pub fn verify(&self, stream_offset: u64, buf: &[u8]) -> Result<(), Mismatch> {
        let mut expected = [0u8; CHUNK];
        let mut first: Option<Mismatch> = None;
        let mut off = stream_offset;
        for got in buf.chunks(CHUNK) {
            let want = &mut expected[..got.len()];
            self.pattern.fill(off, want);
            if got != &*want {
                let mut bad = 0u64;
                for (k, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
                    if g != w {
                        bad += 1;
                        if first.is_none() {
                            first = Some(Mismatch {
                                offset: off.wrapping_add(k as u64),
                                expected: w,
                                got: g,
                                bad_bytes: 0,
                            });
                        }
                    }
                }
                if let Some(m) = first.as_mut() {
                    m.bad_bytes += bad;
                }
            }
            off = off.wrapping_add(got.len() as u64);
        }
        match first {
            None => Ok(()),
            Some(m) => Err(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_format() {
        let m = Mismatch {
            offset: 4096,
            expected: 0,
            got: 0xff,
            bad_bytes: 17,
        };
        assert_eq!(
            m.to_string(),
            "data mismatch at stream offset 4096: expected 0x00, got 0xff (17 bytes differ)"
        );
        let m = Mismatch { bad_bytes: 1, ..m };
        assert!(m.to_string().ends_with("(1 byte differs)"));
    }

    #[test]
    fn good_data_passes() {
        for p in [Pattern::Counter, Pattern::Prbs { seed: 1 }, Pattern::Zeros] {
            let mut buf = vec![0u8; 3 * CHUNK + 13];
            p.fill(77, &mut buf);
            assert_eq!(p.verify(77, &buf), Ok(()));
            assert_eq!(p.verify(77, &[]), Ok(()));
        }
    }

    #[test]
    fn counts_bad_bytes_across_chunks() {
        let p = Pattern::Counter;
        let mut buf = vec![0u8; 3 * CHUNK];
        p.fill(5, &mut buf);
        for &k in &[10usize, CHUNK - 1, CHUNK, 2 * CHUNK + 100, 3 * CHUNK - 1] {
            buf[k] ^= 0x5a;
        }
        let m = p.verify(5, &buf).unwrap_err();
        assert_eq!(m.offset, 15);
        assert_eq!(m.got, p.byte_at(15) ^ 0x5a);
        assert_eq!(m.expected, p.byte_at(15));
        assert_eq!(m.bad_bytes, 5);
    }

    #[test]
    fn wrong_offset_is_detected() {
        // A correct chunk delivered at the wrong place.
        for p in [Pattern::Counter, Pattern::Prbs { seed: 7 }] {
            let mut buf = vec![0u8; 512];
            p.fill(512, &mut buf);
            assert!(p.verify(0, &buf).is_err());
            assert!(p.verify(1024, &buf).is_err());
            assert!(p.verify(512 + 4, &buf).is_err());
        }
    }
}
