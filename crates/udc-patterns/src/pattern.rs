// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Pattern definitions and the fast random-access fill.

use std::fmt;
use std::str::FromStr;

/// The splitmix64 increment ("golden gamma").
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Number of 8-byte blocks in the 2^64-byte offset space, minus one: block
/// indices wrap with this mask so that offsets wrap modulo 2^64.
const BLOCK_MASK: u64 = u64::MAX >> 3;

/// A test data stream. See the [crate docs](crate) for the exact
/// definitions, which other implementations must follow byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Pattern {
    /// Consecutive little-endian `u32` words 0, 1, 2, ...
    #[default]
    Counter,
    /// Pseudo-random 8-byte blocks: [`prbs_block`]`(seed, offset / 8)`.
    Prbs {
        /// Seed selecting the stream.
        seed: u64,
    },
    /// All bytes zero.
    Zeros,
}

/// Block `n` (covering stream offsets `8n .. 8n+8`, little-endian) of the
/// `prbs:<seed>` stream: the splitmix64 finaliser of
/// `seed + (n + 1) * 0x9E3779B97F4A7C15` (wrapping). See the crate docs.
#[inline]
pub fn prbs_block(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Block `n` of the counter stream: words `2n` and `2n+1` (mod 2^32),
/// little-endian, so `to_le_bytes` gives the 8 stream bytes at offset `8n`.
#[inline]
fn counter_block(n: u64) -> u64 {
    let lo = (n << 1) as u32;
    let hi = lo.wrapping_add(1);
    u64::from(lo) | (u64::from(hi) << 32)
}

/// Fill `buf` with the stream bytes starting at `offset`, for a stream made
/// of 8-byte little-endian blocks given by `block`.
#[inline(always)]
fn fill_blocks<F: Fn(u64) -> u64>(offset: u64, buf: &mut [u8], block: F) {
    let mut n = offset >> 3;
    let skip = (offset & 7) as usize;
    let mut rest = buf;
    if skip != 0 {
        let bytes = block(n).to_le_bytes();
        let take = rest.len().min(8 - skip);
        let (head, tail) = rest.split_at_mut(take);
        head.copy_from_slice(&bytes[skip..skip + take]);
        rest = tail;
        n = (n + 1) & BLOCK_MASK;
    }
    let mut chunks = rest.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&block(n).to_le_bytes());
        n = (n + 1) & BLOCK_MASK;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let bytes = block(n).to_le_bytes();
        let len = tail.len();
        tail.copy_from_slice(&bytes[..len]);
    }
}

impl Pattern {
    /// The byte at stream offset `offset`, straight from the definition.
    /// Slow; meant as a reference and for spot checks.
    pub fn byte_at(&self, offset: u64) -> u8 {
        match *self {
            Pattern::Counter => ((offset / 4) as u32).to_le_bytes()[(offset % 4) as usize],
            Pattern::Prbs { seed } => prbs_block(seed, offset / 8).to_le_bytes()[(offset % 8) as usize],
            Pattern::Zeros => 0,
        }
    }

    /// Fill `buf` with the stream bytes starting at `stream_offset`
    /// (any alignment). Offsets wrap modulo 2^64.
    pub fn fill(&self, stream_offset: u64, buf: &mut [u8]) {
        match *self {
            Pattern::Counter => fill_blocks(stream_offset, buf, counter_block),
            Pattern::Prbs { seed } => fill_blocks(stream_offset, buf, |n| prbs_block(seed, n)),
            Pattern::Zeros => buf.fill(0),
        }
    }

    /// The pattern's name without parameters: `"counter"`, `"prbs"` or `"zeros"`.
    pub fn name(&self) -> &'static str {
        match self {
            Pattern::Counter => "counter",
            Pattern::Prbs { .. } => "prbs",
            Pattern::Zeros => "zeros",
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Counter => f.write_str("counter"),
            Pattern::Prbs { seed } => write!(f, "prbs:{seed}"),
            Pattern::Zeros => f.write_str("zeros"),
        }
    }
}

/// Why a pattern string did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsePatternError {
    /// The string was empty.
    Empty,
    /// The name is not one of `counter`, `prbs`, `zeros`.
    UnknownPattern(String),
    /// `prbs` was given without a `:<seed>`.
    MissingSeed,
    /// The seed is not a decimal or `0x` hexadecimal `u64`.
    BadSeed(String),
    /// `counter` or `zeros` was given a `:` parameter, which they don't take.
    UnexpectedParameter {
        /// The pattern name.
        pattern: String,
        /// The parameter that was given.
        parameter: String,
    },
}

impl fmt::Display for ParsePatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const EXPECTED: &str = "expected one of: counter, prbs:<seed>, zeros";
        match self {
            ParsePatternError::Empty => write!(f, "empty pattern; {EXPECTED}"),
            ParsePatternError::UnknownPattern(name) => {
                write!(f, "unknown pattern {name:?}; {EXPECTED}")
            }
            ParsePatternError::MissingSeed => {
                f.write_str("pattern prbs needs a seed: prbs:<seed>, e.g. prbs:42")
            }
            ParsePatternError::BadSeed(seed) => write!(
                f,
                "invalid prbs seed {seed:?}: expected an unsigned 64-bit integer (decimal or 0x hex)"
            ),
            ParsePatternError::UnexpectedParameter { pattern, parameter } => {
                write!(f, "pattern {pattern} takes no parameter, but got {parameter:?}")
            }
        }
    }
}

impl std::error::Error for ParsePatternError {}

fn parse_seed(s: &str) -> Result<u64, ParsePatternError> {
    let t = s.trim();
    let parsed = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else {
        t.parse::<u64>()
    };
    parsed.map_err(|_| ParsePatternError::BadSeed(s.to_string()))
}

impl FromStr for Pattern {
    type Err = ParsePatternError;

    /// Parse `counter`, `prbs:<seed>` or `zeros` (names are case-insensitive,
    /// surrounding whitespace is ignored, the seed is decimal or `0x` hex).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParsePatternError::Empty);
        }
        let (name, param) = match s.split_once(':') {
            Some((name, param)) => (name.trim(), Some(param)),
            None => (s, None),
        };
        let lower = name.to_ascii_lowercase();
        match (lower.as_str(), param) {
            ("prbs", Some(seed)) => Ok(Pattern::Prbs {
                seed: parse_seed(seed)?,
            }),
            ("prbs", None) => Err(ParsePatternError::MissingSeed),
            ("counter", None) => Ok(Pattern::Counter),
            ("zeros", None) => Ok(Pattern::Zeros),
            ("counter" | "zeros", Some(param)) => Err(ParsePatternError::UnexpectedParameter {
                pattern: lower.clone(),
                parameter: param.to_string(),
            }),
            _ => Err(ParsePatternError::UnknownPattern(name.to_string())),
        }
    }
}

/// With the `serde` feature a pattern (de)serialises as its textual form,
/// e.g. `"prbs:42"`.
#[cfg(feature = "serde")]
impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table in the crate docs.
    const PRBS_VECTORS: &[(u64, u64, u64)] = &[
        (0, 0, 0xE220_A839_7B1D_CDAF),
        (0, 1, 0x6E78_9E6A_A1B9_65F4),
        (0, 2, 0x06C4_5D18_8009_454F),
        (1, 0, 0x910A_2DEC_8902_5CC1),
        (42, 0, 0xBDD7_3226_2FEB_6E95),
        (42, 1, 0x28EF_E333_B266_F103),
        (42, 1000, 0x5566_DBE8_93F1_B4AE),
        (1_234_567, 0, 0x599E_D017_FB08_FC85),
        (1_234_567, 1, 0x2C73_F084_5854_0FA5),
        (0xDEAD_BEEF, 7, 0xB30A_4CCF_430B_1B5A),
        (u64::MAX, 0, 0xE4D9_7177_1B65_2C20),
        (u64::MAX, (1 << 61) - 1, 0xEA95_6B7E_5408_38EF),
    ];

    #[test]
    fn prbs_test_vectors() {
        for &(seed, n, want) in PRBS_VECTORS {
            assert_eq!(prbs_block(seed, n), want, "seed {seed} block {n}");
        }
    }

    #[test]
    fn prbs_matches_reference_splitmix64_sequence() {
        // Reference splitmix64: state += gamma; return mix(state).
        let mut state: u64 = 1_234_567;
        let mut next = || {
            state = state.wrapping_add(GOLDEN_GAMMA);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for n in 0..100 {
            assert_eq!(prbs_block(1_234_567, n), next());
        }
    }

    #[test]
    fn prbs_first_bytes() {
        let mut buf = [0u8; 16];
        Pattern::Prbs { seed: 42 }.fill(0, &mut buf);
        assert_eq!(
            buf,
            [
                0x95, 0x6e, 0xeb, 0x2f, 0x26, 0x32, 0xd7, 0xbd, 0x03, 0xf1, 0x66, 0xb2, 0x33, 0xe3, 0xef,
                0x28
            ]
        );
    }

    #[test]
    fn counter_first_bytes() {
        let mut buf = [0xaau8; 13];
        Pattern::Counter.fill(0, &mut buf);
        assert_eq!(buf, [0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
        let mut buf = [0u8; 6];
        Pattern::Counter.fill(4 * 0x0102_0304 + 2, &mut buf);
        assert_eq!(buf, [0x02, 0x01, 0x05, 0x03, 0x02, 0x01]);
    }

    #[test]
    fn counter_wraps_at_16_gib() {
        let mut buf = [0u8; 12];
        Pattern::Counter.fill((1 << 34) - 4, &mut buf);
        assert_eq!(buf, [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn fill_wraps_at_end_of_offset_space() {
        for p in [Pattern::Counter, Pattern::Prbs { seed: 9 }, Pattern::Zeros] {
            let start = u64::MAX - 20;
            let mut buf = [0u8; 64];
            p.fill(start, &mut buf);
            for (k, &b) in buf.iter().enumerate() {
                assert_eq!(b, p.byte_at(start.wrapping_add(k as u64)), "{p} byte {k}");
            }
        }
    }

    #[test]
    fn fill_small_and_unaligned() {
        let p = Pattern::Prbs { seed: 3 };
        for off in 0..24u64 {
            for len in 0..40usize {
                let mut buf = vec![0u8; len];
                p.fill(off, &mut buf);
                let want: Vec<u8> = (0..len as u64).map(|k| p.byte_at(off + k)).collect();
                assert_eq!(buf, want, "off {off} len {len}");
            }
        }
    }

    #[test]
    fn parse_and_display() {
        assert_eq!("counter".parse::<Pattern>(), Ok(Pattern::Counter));
        assert_eq!("zeros".parse::<Pattern>(), Ok(Pattern::Zeros));
        assert_eq!("prbs:42".parse::<Pattern>(), Ok(Pattern::Prbs { seed: 42 }));
        assert_eq!(" PRBS:0x2a ".parse::<Pattern>(), Ok(Pattern::Prbs { seed: 42 }));
        assert_eq!(
            format!("{}", Pattern::Prbs { seed: u64::MAX }),
            "prbs:18446744073709551615"
        );
        assert_eq!(Pattern::Counter.to_string(), "counter");
        assert_eq!(Pattern::Zeros.to_string(), "zeros");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_deserialize_from_string() {
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        use serde::Deserialize;
        let de: StrDeserializer<'_, Error> = "prbs:7".into_deserializer();
        assert_eq!(Pattern::deserialize(de), Ok(Pattern::Prbs { seed: 7 }));
        let de: StrDeserializer<'_, Error> = "bogus".into_deserializer();
        assert!(Pattern::deserialize(de).is_err());
    }

    #[test]
    fn parse_errors() {
        assert_eq!("".parse::<Pattern>(), Err(ParsePatternError::Empty));
        assert_eq!("prbs".parse::<Pattern>(), Err(ParsePatternError::MissingSeed));
        assert_eq!(
            "prbs:abc".parse::<Pattern>(),
            Err(ParsePatternError::BadSeed("abc".into()))
        );
        assert_eq!(
            "prbs:".parse::<Pattern>(),
            Err(ParsePatternError::BadSeed("".into()))
        );
        assert_eq!(
            "prbs:-1".parse::<Pattern>(),
            Err(ParsePatternError::BadSeed("-1".into()))
        );
        assert!(matches!(
            "random".parse::<Pattern>(),
            Err(ParsePatternError::UnknownPattern(n)) if n == "random"
        ));
        assert!(matches!(
            "counter:5".parse::<Pattern>(),
            Err(ParsePatternError::UnexpectedParameter { .. })
        ));
        let msg = "prbs:xyz".parse::<Pattern>().unwrap_err().to_string();
        assert!(msg.contains("invalid prbs seed \"xyz\""), "{msg}");
        let msg = "foo".parse::<Pattern>().unwrap_err().to_string();
        assert!(msg.contains("counter, prbs:<seed>, zeros"), "{msg}");
    }
}
