// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Fuzz targets for vhost-device-udc. Each module is one target with a
//! `run(data)` that panics when the daemon misbehaves; the AFL binaries
//! (src/bin/, feature `afl`) and the corpus replay (tests/replay.rs) both
//! call it, so a crash AFL finds is replayed by `make test` once its input
//! is in fuzz/regressions/.
//!
//! - [`descriptors`]: the USB descriptor parsers and the enumeration
//!   procedure, over bytes a gadget sends;
//! - [`device_ops`]: random interleavings of device operations on the
//!   device model, with every token and URB checked to complete once;
//! - [`chain`]: descriptor chains in guest memory through the vhost-user
//!   backend's queue handling, parsing, queueing and pumping;
//! - [`control_line`]: control-socket request lines through the dispatcher.

pub mod chain;
pub mod control_line;
pub mod descriptors;
pub mod device_ops;
mod input;
pub mod script;
pub mod seeds;

pub use input::Input;

/// A target's body: panics when the daemon misbehaves on `data`.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus directory and AFL binary.
pub const TARGETS: [(&str, Target); 4] = [
    ("descriptors", descriptors::run),
    ("device_ops", device_ops::run),
    ("chain", chain::run),
    ("control_line", control_line::run),
];
