// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Every Rust file of the workspace opens with its SPDX licence line, the
//! licences Cargo.toml declares (LICENSE-APACHE, LICENSE-BSD-3-Clause).

use std::fs;
use std::path::{Path, PathBuf};

const HEADER: &str = "// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "target") {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_rust_file_names_its_licence() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "crates", "fuzz"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            fs::read_to_string(f)
                .map(|t| t.lines().next() != Some(HEADER))
                .unwrap_or(true)
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(missing.is_empty(), "without `{HEADER}` on line 1: {missing:?}");
    for licence in ["LICENSE-APACHE", "LICENSE-BSD-3-Clause"] {
        assert!(root.join(licence).is_file(), "{licence} is missing");
    }
}
