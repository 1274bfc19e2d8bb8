// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Project chores, run as `cargo xtask ...` (.cargo/config.toml).
//!
//! `cargo xtask docs` writes the daemon's man page and shell completions
//! from its clap definition (vhost_device_udc::cli), so they cannot drift
//! from `--help`; `cargo xtask docs --check` (and this crate's test, which
//! `make test` runs) fails when the committed files are stale.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use vhost_device_udc::cli::Cli;

#[derive(Parser)]
#[command(about = "virtio-udc's project chores")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write docs/man/vhost-device-udc.1 and completions/ from the daemon's
    /// clap definition.
    Docs {
        /// Write nothing; fail if a committed file differs.
        #[arg(long)]
        check: bool,
    },
}

/// The program the files describe.
const BIN: &str = "vhost-device-udc";

/// Every generated file: its path in the tree and its contents.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let cmd = Cli::command().name(BIN);
    let mut man = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut man)
        .expect("rendering to memory");
    out.push((PathBuf::from(format!("docs/man/{BIN}.1")), man));
    for (shell, file) in [
        (Shell::Bash, format!("{BIN}.bash")),
        (Shell::Zsh, format!("_{BIN}")),
        (Shell::Fish, format!("{BIN}.fish")),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), BIN, &mut buf);
        out.push((PathBuf::from("completions").join(file), buf));
    }
    out
}

/// The workspace root (this crate is crates/xtask).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The generated files that differ from what is committed.
fn stale(root: &Path) -> Vec<PathBuf> {
    generated()
        .into_iter()
        .filter(|(p, want)| std::fs::read(root.join(p)).ok().as_ref() != Some(want))
        .map(|(p, _)| p)
        .collect()
}

fn main() -> ExitCode {
    let Task::Docs { check } = Args::parse().task;
    let root = root();
    if check {
        let stale = stale(&root);
        if stale.is_empty() {
            println!("man page and completions are up to date");
            return ExitCode::SUCCESS;
        }
        for p in stale {
            eprintln!("{} is stale: run `cargo xtask docs`", p.display());
        }
        return ExitCode::FAILURE;
    }
    for (p, bytes) in generated() {
        let path = root.join(&p);
        let written = std::fs::create_dir_all(path.parent().expect("a file in a folder"))
            .and_then(|()| std::fs::write(&path, bytes));
        if let Err(e) = written {
            eprintln!("{}: {e}", p.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", p.display());
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed man page and completions are what `--help` says now.
    #[test]
    fn committed_man_page_and_completions_are_current() {
        let stale = stale(&root());
        assert!(stale.is_empty(), "stale, run `cargo xtask docs`: {stale:?}");
    }

    #[test]
    fn the_man_page_documents_every_option() {
        let (_, man) = &generated()[0];
        let man = String::from_utf8_lossy(man);
        for opt in [
            "socket\\-path",
            "socket\\-fd",
            "print\\-capabilities",
            "control\\-socket",
        ] {
            assert!(man.contains(opt), "the man page lacks --{opt}");
        }
    }
}
