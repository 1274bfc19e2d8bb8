// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Runs one target on one file: `cargo run --release --example one -- TARGET FILE`
//! (to reproduce a crash AFL found, under a debugger if need be).
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, target, file] = &args[..] else {
        eprintln!("usage: one TARGET FILE");
        std::process::exit(2);
    };
    let run = udc_fuzz::TARGETS
        .iter()
        .find(|(t, _)| t == target)
        .unwrap_or_else(|| panic!("no target {target}"))
        .1;
    run(&std::fs::read(file).expect("reading the input"));
    eprintln!("{target}: {file}: ok");
}
