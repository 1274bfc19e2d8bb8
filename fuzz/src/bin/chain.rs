// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! AFL++ entry point of the `chain` target; the body is [`udc_fuzz::chain::run`].

fn main() {
    afl::fuzz!(|data: &[u8]| {
        udc_fuzz::chain::run(data);
    });
}
