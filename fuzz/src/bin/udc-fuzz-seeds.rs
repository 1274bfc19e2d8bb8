// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Writes the seeds of every target (or of those named) into
//! fuzz/corpus/TARGET/seed-NAME, over any file of the same name.

use std::fs;
use std::path::Path;

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, _) in udc_fuzz::TARGETS {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == target) {
            continue;
        }
        let dir = root.join(target);
        fs::create_dir_all(&dir).expect("creating the corpus directory");
        let seeds = udc_fuzz::seeds::for_target(target);
        for (name, bytes) in &seeds {
            fs::write(dir.join(format!("seed-{name}")), bytes).expect("writing a seed");
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
}
