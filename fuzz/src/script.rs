// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Seed inputs written as the targets read them (see [`Script`]).

/// Bytes for the decoders of [`crate::Input`]: what a target reads with
/// `u8`, `u16` and `pick` written in the same order.
#[derive(Default)]
pub struct Script(pub Vec<u8>);

impl Script {
    pub fn u8(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }

    /// A `pick` of `choice` from `choices`.
    pub fn pick<T: PartialEq>(&mut self, choices: &[T], choice: T) -> &mut Self {
        let i = choices
            .iter()
            .position(|c| *c == choice)
            .expect("a choice of the list");
        self.u8(i as u8)
    }
}
