// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Test data streams for virtio-udc: generation, verification and traffic statistics.
//!
//! The host-side daemon and the guest-side tool both generate and check test
//! traffic. They must agree byte for byte, so the streams are defined here
//! once, precisely enough to be re-implemented in C or Python.
//!
//! # Streams are random-access
//!
//! A stream is an infinite sequence of bytes, and every [`Pattern`] can
//! produce the bytes at any stream offset directly, without generating what
//! comes before ([`Pattern::fill`], [`Pattern::byte_at`]). This matters
//! because:
//!
//! * **Several transfers are in flight at once.** A sender queues many
//!   requests, each covering its own range of the stream; each buffer is
//!   filled independently from its own start offset.
//! * **Checks can happen out of order.** Completions may be reaped in a
//!   different order than they were submitted (several endpoints, several
//!   queues, retries); a receiver verifies each buffer against the offset it
//!   is supposed to hold, with no running generator state to keep in sync.
//! * **Streams are resumable at any offset.** After a reconnect, a reset or a
//!   short transfer, either side continues from the agreed byte offset, and a
//!   mismatch report names a stream offset that the other side can recompute
//!   on its own.
//!
//! Because the content depends on the offset, a chunk that is dropped,
//! repeated or delivered at the wrong place is detected, not just corrupted
//! bytes: [`Pattern::Counter`] and [`Pattern::Prbs`] never repeat an 8-byte
//! block within 16 GiB (counter) or at all in practice (PRBS).
//!
//! Offsets are `u64` and wrap modulo 2^64, which is a multiple of every
//! block size, so the definitions below hold for every offset.
//!
//! # Pattern definitions
//!
//! Let `i` be the stream offset of a byte (counting from 0).
//!
//! ## `counter`
//!
//! Consecutive little-endian `u32` words 0, 1, 2, ...:
//!
//! ```text
//! byte(i) = le_bytes_u32((i / 4) mod 2^32)[i mod 4]
//! ```
//!
//! The first 12 bytes are `00 00 00 00 01 00 00 00 02 00 00 00`.
//! The stream repeats every 16 GiB (2^34 bytes).
//!
//! ## `prbs:<seed>`
//!
//! The stream is a sequence of 8-byte blocks; block `n` covers offsets
//! `8n .. 8n+8` and is the little-endian encoding of a 64-bit value
//! `block(seed, n)`:
//!
//! ```text
//! byte(i) = le_bytes_u64(block(seed, i / 8))[i mod 8]
//! ```
//!
//! `block` is the splitmix64 finaliser (Steele, Lea & Flood; the variant by
//! Sebastiano Vigna) applied to `seed + (n + 1) * 0x9E3779B97F4A7C15`, with
//! all arithmetic modulo 2^64:
//!
//! ```text
//! z = seed + (n + 1) * 0x9E3779B97F4A7C15
//! z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//! z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//! block = z ^ (z >> 31)
//! ```
//!
//! In other words `block(seed, n)` is the `(n+1)`-th output of the reference
//! `splitmix64` generator whose state starts at `seed`, so block 0 of seed 0
//! is the well-known first splitmix64 output `0xE220A8397B1DCDAF`.
//! In Python:
//!
//! ```text
//! M = (1 << 64) - 1
//! def block(seed, n):
//!     z = (seed + (n + 1) * 0x9E3779B97F4A7C15) & M
//!     z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
//!     z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
//!     return z ^ (z >> 31)
//! def byte(seed, i):
//!     return block(seed, i // 8).to_bytes(8, "little")[i % 8]
//! ```
//!
//! In C:
//!
//! ```text
//! uint64_t block(uint64_t seed, uint64_t n) {
//!     uint64_t z = seed + (n + 1) * 0x9E3779B97F4A7C15ull;
//!     z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
//!     z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
//!     return z ^ (z >> 31);
//! }
//! ```
//!
//! Test vectors (checked by a unit test, and cross-checked against the
//! Python code above):
//!
//! | seed                 | n                   | block(seed, n)       |
//! |----------------------|---------------------|----------------------|
//! | 0                    | 0                   | `0xE220A8397B1DCDAF` |
//! | 0                    | 1                   | `0x6E789E6AA1B965F4` |
//! | 0                    | 2                   | `0x06C45D188009454F` |
//! | 1                    | 0                   | `0x910A2DEC89025CC1` |
//! | 42                   | 0                   | `0xBDD732262FEB6E95` |
//! | 42                   | 1                   | `0x28EFE333B266F103` |
//! | 42                   | 1000                | `0x5566DBE893F1B4AE` |
//! | 1234567              | 0                   | `0x599ED017FB08FC85` |
//! | 1234567              | 1                   | `0x2C73F08458540FA5` |
//! | 0xDEADBEEF           | 7                   | `0xB30A4CCF430B1B5A` |
//! | 2^64 - 1             | 0                   | `0xE4D971771B652C20` |
//! | 2^64 - 1             | 2^61 - 1 (last)     | `0xEA956B7E540838EF` |
//!
//! So the first 16 bytes of `prbs:42` are
//! `95 6e eb 2f 26 32 d7 bd 03 f1 66 b2 33 e3 ef 28`.
//!
//! ## `zeros`
//!
//! Every byte is `0x00`. Useful for raw throughput runs where the data does
//! not matter (its "verification" still catches non-zero garbage).
//!
//! # Textual form
//!
//! Patterns parse from and print as `counter`, `prbs:<seed>` (decimal, or
//! hexadecimal with a `0x` prefix when parsing; e.g. `prbs:42`) and `zeros`.
//!
//! # Other pieces
//!
//! * [`Verifier`] checks a received buffer against the stream at a given
//!   offset without allocating, and reports a [`Mismatch`].
//! * [`Source`] and [`Sink`] keep a running offset for sequential use.
//! * [`Stats`] counts traffic and keeps a latency histogram;
//!   [`Stats::snapshot`] gives a plain [`StatsSnapshot`] (serialisable with
//!   the `serde` feature).
//!
//! ```
//! use udc_patterns::{Pattern, Sink, Source};
//!
//! let pattern: Pattern = "prbs:42".parse().unwrap();
//! let mut src = Source::new(pattern, 0);
//! let mut sink = Sink::new(pattern, 0, true);
//! let mut buf = [0u8; 512];
//! for _ in 0..4 {
//!     src.next_chunk(&mut buf);
//!     sink.accept(&buf).unwrap();
//! }
//! buf[17] ^= 0xff;
//! let err = pattern.verify(3 * 512, &buf).unwrap_err();
//! assert_eq!(err.offset, 3 * 512 + 17);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod kernel_log;
mod pattern;
mod stats;
mod stream;
mod units;
mod verify;

pub use pattern::{prbs_block, ParsePatternError, Pattern};
pub use stats::{LatencyHistogram, Stats, StatsSnapshot};
pub use stream::{Sink, Source};
pub use units::{
    fmt_duration, parse_bandwidth, parse_duration, parse_size, HIGH_SPEED_BYTES_PER_SEC,
    SUPER_SPEED_BYTES_PER_SEC,
};
pub use verify::{Mismatch, Verifier};

/// The fill of the daemon's OUT race detector (`out_poison`,
/// docs/injection.md): eight ASCII bytes, easy to spot in a hexdump and
/// unlike any of the patterns above. The daemon writes it and the guest
/// tool looks for it, so it lives here.
pub const POISON: [u8; 8] = *b"UDCPOISN";
