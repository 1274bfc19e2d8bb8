// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! KTAP version 1 output, as kselftest prints it: a plan, one result line per
//! case, diagnostics as `# ` lines before the result, `# SKIP reason` for a
//! case that does not apply, and each case's run time as a `# duration:`
//! diagnostic (the runner puts it in its JUnit XML).

use std::io::Write;
use std::time::Duration;

pub struct Ktap {
    next: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// The diagnostic that gives a case's run time: `# duration: 1.234s`.
pub const DURATION_PREFIX: &str = "duration: ";

impl Ktap {
    /// Prints the header and the plan.
    pub fn start(cases: usize) -> Ktap {
        println!("KTAP version 1");
        println!("1..{cases}");
        flush();
        Ktap {
            next: 1,
            passed: 0,
            failed: 0,
            skipped: 0,
        }
    }

    pub fn diag(&self, text: &str) {
        for l in text.lines() {
            println!("# {l}");
        }
        flush();
    }

    /// A case of the plan that does not apply here, and why.
    pub fn skip(&mut self, name: &str, why: &str) {
        let n = self.next;
        self.next += 1;
        self.skipped += 1;
        println!("ok {n} {name} # SKIP {}", why.replace(['#', '\n'], " "));
        flush();
    }

    /// A case's result, after `took` of running.
    pub fn result(&mut self, name: &str, outcome: &Outcome, took: Duration) {
        let n = self.next;
        self.next += 1;
        self.diag(&format!("{DURATION_PREFIX}{:.3}s", took.as_secs_f64()));
        match outcome {
            Outcome::Pass => {
                self.passed += 1;
                println!("ok {n} {name}");
            }
            Outcome::Fail(why) => {
                self.failed += 1;
                self.diag(why);
                println!("not ok {n} {name}");
            }
        }
        flush();
    }

    pub fn finish(&self) {
        println!(
            "# udc-gadget: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        );
        flush();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
}

fn flush() {
    let _ = std::io::stdout().flush();
}
