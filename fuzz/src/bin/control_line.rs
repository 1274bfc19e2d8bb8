// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! AFL++ entry point of the `control_line` target; the body is [`udc_fuzz::control_line::run`].

fn main() {
    afl::fuzz!(|data: &[u8]| {
        udc_fuzz::control_line::run(data);
    });
}
