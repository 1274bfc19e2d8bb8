// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! AFL++ entry point of the `device_ops` target; the body is [`udc_fuzz::device_ops::run`].

fn main() {
    afl::fuzz!(|data: &[u8]| {
        udc_fuzz::device_ops::run(data);
    });
}
