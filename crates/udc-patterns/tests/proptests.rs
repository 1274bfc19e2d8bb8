// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Property tests: fast paths agree with the byte-by-byte definitions.

use proptest::prelude::*;
use udc_patterns::{Pattern, Sink, Source, Verifier};

fn any_pattern() -> impl Strategy<Value = Pattern> {
    prop_oneof![
        Just(Pattern::Counter),
        Just(Pattern::Zeros),
        any::<u64>().prop_map(|seed| Pattern::Prbs { seed }),
    ]
}

/// Offsets: mostly small/realistic, sometimes anywhere (including near the
/// 2^64 wrap and the 16 GiB counter wrap).
fn any_offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..1 << 20,
        any::<u64>(),
        ((1u64 << 34) - 64)..((1u64 << 34) + 64),
        (u64::MAX - 64)..=u64::MAX,
    ]
}

proptest! {
    #[test]
    fn fill_equals_definition(p in any_pattern(), off in any_offset(), len in 0usize..10_000) {
        let mut buf = vec![0xa5u8; len];
        p.fill(off, &mut buf);
        for (k, &b) in buf.iter().enumerate() {
            prop_assert_eq!(b, p.byte_at(off.wrapping_add(k as u64)), "byte {}", k);
        }
    }

    #[test]
    fn verify_accepts_own_fill(p in any_pattern(), off in any_offset(), len in 0usize..20_000) {
        let mut buf = vec![0u8; len];
        p.fill(off, &mut buf);
        prop_assert_eq!(Verifier::new(p).verify(off, &buf), Ok(()));
    }

    #[test]
    fn verify_detects_single_flipped_byte(
        p in any_pattern(),
        off in any_offset(),
        len in 1usize..20_000,
        pos in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut buf = vec![0u8; len];
        p.fill(off, &mut buf);
        let k = pos.index(len);
        let expected = buf[k];
        buf[k] ^= flip;
        let m = p.verify(off, &buf).unwrap_err();
        prop_assert_eq!(m.offset, off.wrapping_add(k as u64));
        prop_assert_eq!(m.expected, expected);
        prop_assert_eq!(m.got, expected ^ flip);
        prop_assert_eq!(m.bad_bytes, 1);
    }

    #[test]
    fn verify_counts_all_bad_bytes(
        p in any_pattern(),
        off in 0u64..1 << 40,
        len in 1usize..20_000,
        positions in prop::collection::vec(any::<prop::sample::Index>(), 1..50),
    ) {
        let mut buf = vec![0u8; len];
        p.fill(off, &mut buf);
        let mut bad: Vec<usize> = positions.iter().map(|i| i.index(len)).collect();
        bad.sort_unstable();
        bad.dedup();
        for &k in &bad {
            buf[k] = !buf[k];
        }
        let m = p.verify(off, &buf).unwrap_err();
        prop_assert_eq!(m.offset, off + bad[0] as u64);
        prop_assert_eq!(m.bad_bytes, bad.len() as u64);
    }

    #[test]
    fn chunked_stream_equals_one_fill(
        p in any_pattern(),
        off in any_offset(),
        chunks in prop::collection::vec(0usize..3000, 0..20),
    ) {
        let total: usize = chunks.iter().sum();
        let mut whole = vec![0u8; total];
        p.fill(off, &mut whole);

        let mut src = Source::new(p, off);
        let mut sink = Sink::new(p, off, true);
        let mut joined = Vec::with_capacity(total);
        for &len in &chunks {
            let mut buf = vec![0u8; len];
            let at = src.next_chunk(&mut buf);
            prop_assert_eq!(at, off.wrapping_add(joined.len() as u64));
            prop_assert_eq!(sink.accept(&buf), Ok(()));
            joined.extend_from_slice(&buf);
        }
        prop_assert_eq!(&joined, &whole);
        prop_assert_eq!(src.offset, off.wrapping_add(total as u64));
        prop_assert_eq!(sink.offset, src.offset);
    }

    #[test]
    fn parse_display_round_trip(p in any_pattern()) {
        let text = p.to_string();
        prop_assert_eq!(text.parse::<Pattern>(), Ok(p));
    }

    #[test]
    fn parse_hex_seed(seed in any::<u64>()) {
        prop_assert_eq!(format!("prbs:{seed:#x}").parse::<Pattern>(), Ok(Pattern::Prbs { seed }));
    }

    #[test]
    fn parse_never_panics(s in ".{0,20}") {
        let _ = s.parse::<Pattern>();
    }

    #[test]
    fn histogram_quantiles_bounded(mut samples in prop::collection::vec(0u64..1 << 50, 1..500), q in 0.0f64..=1.0) {
        let mut h = udc_patterns::LatencyHistogram::new();
        for &s in &samples {
            h.record_ns(s);
        }
        samples.sort_unstable();
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        let exact = samples[rank - 1];
        let got = h.quantile(q);
        prop_assert!(got >= exact, "got {} < exact {}", got, exact);
        prop_assert!((got - exact) as f64 <= exact as f64 / 32.0, "got {} exact {}", got, exact);
        prop_assert_eq!(h.min(), samples[0]);
        prop_assert_eq!(h.max(), *samples.last().unwrap());
    }
}
