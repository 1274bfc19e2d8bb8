// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! KTAP version 1 output, as kselftest prints it: a plan, one result line per
//! case, diagnostics as `# ` lines before the result.

use std::io::Write;

pub struct Ktap {
    next: usize,
    pub passed: usize,
    pub failed: usize,
}

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
        }
    }

    pub fn diag(&self, text: &str) {
        for l in text.lines() {
            println!("# {l}");
        }
        flush();
    }

    pub fn result(&mut self, name: &str, outcome: &Outcome) {
        let n = self.next;
        self.next += 1;
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
        println!("# udc-gadget: {} passed, {} failed", self.passed, self.failed);
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
