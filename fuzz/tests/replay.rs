// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Replays every committed input of every target: the corpus
//! (fuzz/corpus/TARGET/) and the crashes found and fixed
//! (fuzz/regressions/TARGET/). A panic fails the test and names the file,
//! so a crash fixed once stays fixed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::thread;
use std::time::Duration;

/// Longer than any input takes (milliseconds, even unoptimised): an input
/// still running then is a hang, which AFL reports as one too.
const HANG: Duration = Duration::from_secs(60);

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for set in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(set).join(target)) else {
            continue;
        };
        files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

fn replay(target: &str) {
    let run = udc_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, run)| run)
        .expect("a target of udc_fuzz::TARGETS");
    let files = inputs(target);
    // An empty corpus would make this test pass without running anything.
    assert!(
        files.len() >= 5,
        "{target}: only {} inputs in fuzz/corpus/{target}/ (run the seeds: cargo run --manifest-path fuzz/Cargo.toml --bin udc-fuzz-seeds)",
        files.len()
    );
    let mut failed = Vec::new();
    for f in &files {
        let data = fs::read(f).unwrap();
        // On a thread of its own, so a hang fails the test instead of
        // stopping the suite; a panic ends the thread with an error.
        let (tx, rx) = channel();
        let worker = thread::spawn(move || {
            run(&data);
            let _ = tx.send(());
        });
        match rx.recv_timeout(HANG) {
            Ok(()) => {
                let _ = worker.join();
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = worker.join();
                failed.push(f.display().to_string());
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("{target}: {} still runs after {HANG:?}: a hang", f.display())
            }
        }
    }
    assert!(failed.is_empty(), "{target}: panicked on {failed:?}");
    println!("{target}: {} inputs replayed", files.len());
}

#[test]
fn descriptors() {
    replay("descriptors");
}

#[test]
fn device_ops() {
    replay("device_ops");
}

#[test]
fn chain() {
    replay("chain");
}

#[test]
fn control_line() {
    replay("control_line");
}
