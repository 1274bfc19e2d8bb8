// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The whole run as one KTAP document (`udc-vm test --ktap FILE`), as
//! kselftest and KernelCI parsers read it: each suite (the guest tool of
//! each boot and controller, each guest test binary) a subtest, a case's
//! diagnostics as `#` lines before its result, a skip as `# SKIP reason`,
//! and kselftest's `# Totals:` line at the end. Nothing else is in it: the
//! runner's own messages go to stderr.

use std::fmt::Write as _;

use crate::ktap::{Case, Outcome};

/// kselftest's exit statuses (tools/testing/selftests/kselftest.h).
pub const KSFT_PASS: u8 = 0;
pub const KSFT_FAIL: u8 = 1;
pub const KSFT_SKIP: u8 = 4;

/// The exit status kselftest gives a run of these cases: a failure (or an
/// error of the run itself) fails it; else a run with `holes` (skipped
/// cases it should have run: `suite::holes`) is a skip.
pub fn exit_status(cases: &[Case], errors: &[String], holes: usize) -> u8 {
    if !errors.is_empty() || cases.iter().any(|c| c.outcome == Outcome::Fail) {
        KSFT_FAIL
    } else if holes > 0 {
        KSFT_SKIP
    } else {
        KSFT_PASS
    }
}

/// KTAP's description text: no `#` (it would start a directive) and no
/// line break.
fn description(s: &str) -> String {
    s.replace('#', "_").replace(['\n', '\r'], " ")
}

/// The document: `header` lines as top-level diagnostics, then one subtest
/// per suite in the order the suites first appear, then the run's own
/// errors as a failed `udc-vm` subtest, then the totals.
pub fn document(cases: &[Case], errors: &[String], header: &[String]) -> String {
    let mut suites: Vec<(&str, Vec<&Case>)> = Vec::new();
    for c in cases {
        match suites.iter_mut().find(|(s, _)| *s == c.suite) {
            Some((_, v)) => v.push(c),
            None => suites.push((&c.suite, vec![c])),
        }
    }
    let run_errors: Vec<Case> = errors
        .iter()
        .map(|e| Case {
            suite: "udc-vm".into(),
            name: "run".into(),
            outcome: Outcome::Fail,
            diagnostics: vec![e.clone()],
            seconds: None,
        })
        .collect();
    if !run_errors.is_empty() {
        suites.push(("udc-vm run", run_errors.iter().collect()));
    }
    let mut o = String::from("KTAP version 1\n");
    for h in header {
        let _ = writeln!(o, "# {}", description(h));
    }
    let _ = writeln!(o, "1..{}", suites.len());
    for (n, (suite, cs)) in suites.iter().enumerate() {
        let _ = writeln!(o, "    KTAP version 1");
        let _ = writeln!(o, "    # Subtest: {}", description(suite));
        let _ = writeln!(o, "    1..{}", cs.len());
        for (i, c) in cs.iter().enumerate() {
            for d in c.diagnostics.iter().flat_map(|d| d.lines()) {
                let _ = writeln!(o, "    # {d}");
            }
            let name = description(&c.name);
            let _ = match &c.outcome {
                Outcome::Pass => writeln!(o, "    ok {} {name}", i + 1),
                Outcome::Fail => writeln!(o, "    not ok {} {name}", i + 1),
                Outcome::Skip(why) => writeln!(o, "    ok {} {name} # SKIP {}", i + 1, description(why)),
            };
        }
        let failed = cs.iter().any(|c| c.outcome == Outcome::Fail);
        let all_skipped = cs.iter().all(|c| matches!(c.outcome, Outcome::Skip(_)));
        let _ = match (failed, all_skipped) {
            (true, _) => writeln!(o, "not ok {} {}", n + 1, description(suite)),
            (false, true) => writeln!(o, "ok {} {} # SKIP every case skipped", n + 1, description(suite)),
            (false, false) => writeln!(o, "ok {} {}", n + 1, description(suite)),
        };
    }
    let count = |f: fn(&Outcome) -> bool| cases.iter().filter(|c| f(&c.outcome)).count();
    let _ = writeln!(
        o,
        "# Totals: pass:{} fail:{} xfail:0 xpass:0 skip:{} error:{}",
        count(|x| *x == Outcome::Pass),
        count(|x| *x == Outcome::Fail),
        count(|x| matches!(x, Outcome::Skip(_))),
        errors.len()
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(suite: &str, name: &str, outcome: Outcome, diag: &[&str]) -> Case {
        Case {
            suite: suite.into(),
            name: name.into(),
            outcome,
            diagnostics: diag.iter().map(|d| d.to_string()).collect(),
            seconds: None,
        }
    }

    #[test]
    fn suites_are_subtests_with_their_cases_and_the_totals_last() {
        let cases = [
            case("udc-gadget", "enumeration", Outcome::Pass, &["high speed"]),
            case("guest-tests", "a::b", Outcome::Fail, &["panicked at x\nline 2"]),
            case("udc-gadget", "dmabuf #1", Outcome::Skip("no sg".into()), &[]),
        ];
        let doc = document(&cases, &["run aborted".into()], &["kernel 6.12".into()]);
        let want = "KTAP version 1\n# kernel 6.12\n1..3\n\
            \x20   KTAP version 1\n    # Subtest: udc-gadget\n    1..2\n    # high speed\n    ok 1 enumeration\n\
            \x20   ok 2 dmabuf _1 # SKIP no sg\nok 1 udc-gadget\n\
            \x20   KTAP version 1\n    # Subtest: guest-tests\n    1..1\n    # panicked at x\n    # line 2\n\
            \x20   not ok 1 a::b\nnot ok 2 guest-tests\n\
            \x20   KTAP version 1\n    # Subtest: udc-vm run\n    1..1\n    # run aborted\n    not ok 1 run\n\
            not ok 3 udc-vm run\n\
            # Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:1\n";
        assert_eq!(doc, want);
    }

    #[test]
    fn exit_status_is_kselftest_s() {
        let pass = case("s", "a", Outcome::Pass, &[]);
        let skip = case("s", "b", Outcome::Skip("x".into()), &[]);
        let fail = case("s", "c", Outcome::Fail, &[]);
        assert_eq!(exit_status(std::slice::from_ref(&pass), &[], 0), KSFT_PASS);
        assert_eq!(exit_status(&[pass.clone(), skip.clone()], &[], 1), KSFT_SKIP);
        assert_eq!(
            exit_status(&[pass.clone(), skip.clone()], &[], 0),
            KSFT_PASS,
            "a skip another boot made up for"
        );
        assert_eq!(exit_status(&[skip, fail], &[], 1), KSFT_FAIL);
        assert_eq!(exit_status(&[pass], &["boot failed".into()], 0), KSFT_FAIL);
    }
}
